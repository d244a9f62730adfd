package tools

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// feed pushes parts in order, then flushes, and returns the concatenated text
// and all calls. It checks the parser's memory bound after every step.
func feed(t testing.TB, parts ...string) (string, []Call) {
	t.Helper()
	var p TagParser
	var out strings.Builder
	var calls []Call
	for _, part := range parts {
		text, c := p.Push(part)
		out.WriteString(text)
		calls = append(calls, c...)
		checkBounds(t, &p)
	}
	text, c := p.Flush()
	out.WriteString(text)
	calls = append(calls, c...)
	checkBounds(t, &p)
	return out.String(), calls
}

func checkBounds(t testing.TB, p *TagParser) {
	t.Helper()
	if len(p.held) > maxHeld || len(p.shown) > maxHeld {
		t.Fatalf("held text %d bytes, shown tail %d, max %d", len(p.held), len(p.shown), maxHeld)
	}
	if len(p.body) > MaxTagBody+maxHeld || cap(p.body) > 4*MaxTagBody {
		t.Fatalf("tag body len %d cap %d exceeds bound", len(p.body), cap(p.body))
	}
	if p.overflow && len(p.body) > maxHeld {
		t.Fatalf("overflowed body keeps %d bytes", len(p.body))
	}
}

func bytewise(s string) []string {
	parts := make([]string, len(s))
	for i := 0; i < len(s); i++ {
		parts[i] = s[i : i+1]
	}
	return parts
}

func callsEqual(a, b []Call) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// checkSplitInvariant asserts that feeding s split at the given positions
// (and byte by byte) gives the same result as feeding it whole.
func checkSplitInvariant(t testing.TB, s string, wantText string, wantCalls []Call, positions []int) {
	t.Helper()
	check := func(how string, parts ...string) {
		t.Helper()
		text, calls := feed(t, parts...)
		if text != wantText || !callsEqual(calls, wantCalls) {
			t.Fatalf("%s: input %q\ngot  text %q calls %v\nwant text %q calls %v", how, s, text, calls, wantText, wantCalls)
		}
	}
	check("bytewise", bytewise(s)...)
	for _, i := range positions {
		check("split at "+strconv.Itoa(i), s[:i], s[i:])
	}
}

func ws(q string) Call {
	b, _ := json.Marshal(map[string]string{"query": q})
	return Call{Name: WebSearchName, Arguments: b}
}

// bodyOfLen returns a valid web_search call body of exactly n bytes.
func bodyOfLen(n int) string {
	const head, tail = `{"name":"web_search","arguments":{"query":"`, `"}}`
	return head + strings.Repeat("a", n-len(head)-len(tail)) + tail
}

func TestTagParser(t *testing.T) {
	call := `{"name":"web_search","arguments":{"query":"go 1.26"}}`
	exact := bodyOfLen(MaxTagBody)
	tests := []struct {
		name      string
		in        string
		wantText  string
		wantCalls []Call
	}{
		{"plain", "Hello, world!", "Hello, world!", nil},
		{"empty", "", "", nil},
		{"lone lt", "a < b <", "a < b <", nil},
		{"html", "<b>bold</b> <tool>x</tool> </b>", "<b>bold</b> <tool>x</tool> </b>", nil},
		{"near miss", "<tool_calls> <top <tool_cal> </tool_calx>", "<tool_calls> <top <tool_cal> </tool_calx>", nil},
		{"one call", "Let me search. <tool_call>" + call + "</tool_call> Done.", "Let me search.  Done.", []Call{ws("go 1.26")}},
		{"upper", "<TOOL_CALL>" + call + "</TOOL_CALL>", "", []Call{ws("go 1.26")}},
		{"mixed case", "x<Tool_Call>" + call + "</tOOL_cALL>y", "xy", []Call{ws("go 1.26")}},
		{"whitespace", "<tool_call>\n  " + `{ "name" : "web_search" , "arguments" : { "query" : "a b" } }` + "\n</tool_call>\n", "\n", []Call{ws("a b")}},
		{"fenced", "<tool_call>```json\n" + call + "\n```</tool_call>", "", []Call{ws("go 1.26")}},
		{"string arguments", `<tool_call>{"name":"web_search","arguments":"{\"query\": \"x\"}"}</tool_call>`, "", []Call{ws("x")}},
		{"parameters alias", `<tool_call>{"name":"web_search","parameters":{"query":"x"}}</tool_call>`, "", []Call{ws("x")}},
		{"extra keys kept out", `<tool_call>{"id":"c1","name":"web_search","arguments":{"query":"x"}}</tool_call>`, "", []Call{ws("x")}},
		{"other tool name", `<tool_call>{"name":"rm_rf","arguments":{}}</tool_call>`, "", []Call{{Name: "rm_rf", Arguments: json.RawMessage(`{}`)}}},
		{"unicode", "héllo <tool_call>" + `{"name":"web_search","arguments":{"query":"日本 🎌"}}` + "</tool_call> wörld", "héllo  wörld", []Call{ws("日本 🎌")}},
		{"two calls", "a<tool_call>" + call + "</tool_call>b<tool_call>" + `{"name":"web_search","arguments":{"query":"q2"}}` + "</tool_call>c", "abc", []Call{ws("go 1.26"), ws("q2")}},
		{"adjacent", "<tool_call>" + call + "</tool_call><tool_call>" + call + "</tool_call>", "", []Call{ws("go 1.26"), ws("go 1.26")}},
		{"malformed json", "a<tool_call>not json</tool_call>b", "ab", nil},
		{"empty body", "a<tool_call></tool_call>b", "ab", nil},
		{"array body", `<tool_call>[` + call + `]</tool_call>`, "", nil},
		{"missing name", `<tool_call>{"arguments":{"query":"x"}}</tool_call>`, "", nil},
		{"empty name", `<tool_call>{"name":" ","arguments":{"query":"x"}}</tool_call>`, "", nil},
		{"name not string", `<tool_call>{"name":1,"arguments":{"query":"x"}}</tool_call>`, "", nil},
		{"missing arguments", `<tool_call>{"name":"web_search"}</tool_call>`, "", nil},
		{"null arguments", `<tool_call>{"name":"web_search","arguments":null}</tool_call>`, "", nil},
		{"array arguments", `<tool_call>{"name":"web_search","arguments":[1]}</tool_call>`, "", nil},
		{"string arguments not object", `<tool_call>{"name":"web_search","arguments":"query"}</tool_call>`, "", nil},
		{"trailing garbage", `<tool_call>` + call + `}}</tool_call>`, "", nil},
		{"nested", "<tool_call><tool_call>" + call + "</tool_call></tool_call>after", "after", nil},
		{"stray close", "a</tool_call>b</TOOL_CALL>c", "abc", nil},
		{"lt before tag", "<<tool_call>" + call + "</tool_call>>", "<>", []Call{ws("go 1.26")}},
		// "<tool" is shown before the tag; "_call>" after it completes a tag in the output, so it is taken as one.
		{"no tag reassembly", "<tool<tool_call>x</tool_call>_call>" + call + "</tool_call>y", "<tooly", []Call{ws("go 1.26")}},
		{"no close reassembly", "a</tool</tool_call>_call>b", "a</toolb", nil},
		{"no reassembly after held", "<to<tool_call>x</tool_call>ol_call>", "<to", nil},
		{"shown prefix not completed", "<to<tool_call>x</tool_call>oX", "<tooX", nil},
		{"unterminated", "before <tool_call>" + call, "before ", nil},
		{"unterminated partial close", "before <tool_call>" + call + "</tool_ca", "before ", nil},
		{"held at end", "text <tool_ca", "text <tool_ca", nil},
		{"held close at end", "text </tool_cal", "text </tool_cal", nil},
		{"exact max body", "<tool_call>" + exact + "</tool_call>ok", "ok", []Call{ws(strings.Repeat("a", MaxTagBody-len(`{"name":"web_search","arguments":{"query":""}}`)))}},
		{"over-long body", "a<tool_call>" + bodyOfLen(MaxTagBody+1) + "</tool_call>b", "ab", nil},
		{"huge body", "a<tool_call>" + strings.Repeat("x<", MaxTagBody+7) + "</tool_call>b<tool_call>" + call + "</tool_call>", "ab", []Call{ws("go 1.26")}},
		{"huge unterminated", "a<tool_call>" + strings.Repeat("x", 3*MaxTagBody), "a", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, calls := feed(t, tt.in)
			if text != tt.wantText || !callsEqual(calls, tt.wantCalls) {
				t.Fatalf("got text %q calls %v\nwant text %q calls %v", text, calls, tt.wantText, tt.wantCalls)
			}
			var positions []int
			if len(tt.in) <= 512 {
				for i := 0; i <= len(tt.in); i++ {
					positions = append(positions, i)
				}
			} else {
				// Every position near the tags and the size bound, and a sample elsewhere.
				for i := 0; i <= len(tt.in); i++ {
					if i < 64 || len(tt.in)-i < 64 || i%997 == 0 || (i > MaxTagBody-24 && i < MaxTagBody+48) {
						positions = append(positions, i)
					}
				}
			}
			checkSplitInvariant(t, tt.in, text, calls, positions)
			// Three-way splits of short inputs.
			if len(tt.in) <= 80 {
				for i := 0; i <= len(tt.in); i++ {
					for j := i; j <= len(tt.in); j++ {
						got, gotCalls := feed(t, tt.in[:i], tt.in[i:j], tt.in[j:])
						if got != text || !callsEqual(gotCalls, calls) {
							t.Fatalf("split %d,%d: got %q %v, want %q %v", i, j, got, gotCalls, text, calls)
						}
					}
				}
			}
		})
	}
}

// TestTagParserStreaming checks what each Push returns at once.
func TestTagParserStreaming(t *testing.T) {
	call := `{"name":"web_search","arguments":{"query":"x"}}`
	type step struct {
		push      string // "" with flush=true means Flush
		flush     bool
		wantText  string
		wantCalls []Call
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"plain text at once", []step{{push: "Hello", wantText: "Hello"}, {push: " world", wantText: " world"}, {flush: true}}},
		{"hold possible tag", []step{{push: "a <to", wantText: "a "}, {push: "p", wantText: "<top"}, {flush: true}}},
		{"hold lone lt", []step{{push: "a <", wantText: "a "}, {push: "b", wantText: "<b"}}},
		{"hold close prefix", []step{{push: "a </tool_c", wantText: "a "}, {push: "x", wantText: "</tool_cx"}}},
		{"split tags", []step{
			{push: "Hi <tool_", wantText: "Hi "},
			{push: "call>" + call + "</tool", wantText: ""},
			{push: "_call> bye", wantText: " bye", wantCalls: []Call{ws("x")}},
		}},
		{"text before a tag is shown", []step{
			{push: "a <to", wantText: "a "},
			{push: "<tool_call>" + call + "</tool_call>", wantText: "<to", wantCalls: []Call{ws("x")}},
			{push: "p", wantText: "p"},
		}},
		{"continuation of shown prefix held", []step{
			{push: "<to<tool_call>" + call + "</tool_call>", wantText: "<to", wantCalls: []Call{ws("x")}},
			{push: "o", wantText: ""},
			{push: "l_", wantText: ""},
			{push: "x", wantText: "ol_x"},
		}},
		{"flush releases held text", []step{{push: "x <TOOL_CALL", wantText: "x "}, {flush: true, wantText: "<TOOL_CALL"}}},
		{"flush drops unterminated tag", []step{{push: "x <tool_call>{\"name\":", wantText: "x "}, {flush: true}}},
		{"reusable after flush", []step{
			{push: "<tool_call>junk"}, {flush: true},
			{push: "again", wantText: "again"},
			{push: "<tool_call>" + call + "</tool_call>", wantCalls: []Call{ws("x")}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p TagParser
			for i, s := range tt.steps {
				var text string
				var calls []Call
				if s.flush {
					text, calls = p.Flush()
				} else {
					text, calls = p.Push(s.push)
				}
				if text != s.wantText || !callsEqual(calls, s.wantCalls) {
					t.Fatalf("step %d: got %q %v, want %q %v", i, text, calls, s.wantText, s.wantCalls)
				}
			}
		})
	}
}

// TestTagParserPromptExample checks that the answer WebSearch.Prompt asks for
// is parsed into a call ParseArgs accepts.
func TestTagParserPromptExample(t *testing.T) {
	var w WebSearch
	prompt := w.Prompt()
	start := strings.Index(prompt, openTag)
	end := strings.Index(prompt, closeTag)
	if start < 0 || end < start {
		t.Fatalf("prompt has no tool_call example: %q", prompt)
	}
	text, calls := feed(t, prompt[start:end+len(closeTag)])
	if text != "" || len(calls) != 1 || calls[0].Name != WebSearchName {
		t.Fatalf("got %q %v", text, calls)
	}
	if q, err := w.ParseArgs(calls[0].Arguments); err != nil || q == "" {
		t.Fatalf("ParseArgs(%s) = %q, %v", calls[0].Arguments, q, err)
	}
}

// asciiLowerContains is an ASCII-only case fold, matching the parser's rule
// even where strings.ToLower maps non-ASCII runes to ASCII (e.g. K, U+212A).
func asciiLowerContains(s string) bool {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return strings.Contains(string(b), openTag) || strings.Contains(string(b), closeTag)
}

func FuzzTagParser(f *testing.F) {
	call := `{"name":"web_search","arguments":{"query":"x"}}`
	for _, s := range []string{
		"Hello",
		"a <to" + "p",
		"<tool_call>" + call + "</tool_call>",
		"x<TOOL_CALL>" + call + "</Tool_Call>y",
		"<tool<tool_call>x</tool_call>_call>" + call + "</tool_call>y",
		"a</tool</tool_call>_call>b",
		"<tool_call><tool_call>" + call + "</tool_call></tool_call>",
		`<tool_call>{"name":"web_search","arguments":"{\"query\":\"x\"}"}</tool_call>`,
		"<tool_call>```json\n" + call + "\n```</tool_call>",
		"<tool_call>" + strings.Repeat("a", 100),
	} {
		f.Add(s, uint16(3), uint16(17))
	}
	f.Fuzz(func(t *testing.T, s string, a, b uint16) {
		checkParserProperties(t, s, a, b)
		// The same bytes read as a sequence of tag fragments, which random
		// mutation alone rarely assembles.
		var sb strings.Builder
		for i := 0; i < len(s) && i < 256; i++ {
			sb.WriteString(fuzzTokens[int(s[i])%len(fuzzTokens)])
		}
		checkParserProperties(t, sb.String(), a, b)
	})
}

var fuzzTokens = []string{
	"<tool_call>", "</tool_call>", "<TOOL_CALL>", "</Tool_Call>", "<", "</", "<t", "<tool", "<tool_", "_call>",
	"call>", "ool_call>", "l>", ">", "x", " ", "\n", "é", "日",
	`{"name":"web_search","arguments":{"query":"q"}}`, `{"name":"a","arguments":"{\"k\":1}"}`, `{"name":`, `"web_search"`,
	`,"arguments":{`, `}`, `"`, "```json\n", "```",
}

func checkParserProperties(t *testing.T, s string, a, b uint16) {
	t.Helper()
	text, calls := feed(t, s)
	if len(text) > len(s) {
		t.Fatalf("output longer than input: %q -> %q", s, text)
	}
	if !strings.Contains(s, "<") && text != s {
		t.Fatalf("text without tags changed: %q -> %q", s, text)
	}
	if asciiLowerContains(text) {
		t.Fatalf("output contains a tag: %q -> %q", s, text)
	}
	for _, c := range calls {
		var m map[string]any
		if c.Name == "" || json.Unmarshal(c.Arguments, &m) != nil || m == nil {
			t.Fatalf("bad call %+v from %q", c, s)
		}
	}
	i, j := 0, 0
	if len(s) > 0 {
		i, j = int(a)%(len(s)+1), int(b)%(len(s)+1)
	}
	if i > j {
		i, j = j, i
	}
	for _, parts := range [][]string{{s[:i], s[i:j], s[j:]}, bytewise(s)} {
		got, gotCalls := feed(t, parts...)
		if got != text || !callsEqual(gotCalls, calls) {
			t.Fatalf("split changes result for %q at %d,%d:\n got %q %v\nwant %q %v", s, i, j, got, gotCalls, text, calls)
		}
	}
}
