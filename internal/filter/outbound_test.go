package filter

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func newOutbound(t testing.TB, patterns []string) *Outbound {
	t.Helper()
	o, err := NewOutbound(patterns)
	if err != nil {
		t.Fatalf("NewOutbound(%q): %v", patterns, err)
	}
	return o
}

// reference is the one-shot semantics spelled with package regexp.
func reference(t testing.TB, patterns []string) func(string) string {
	t.Helper()
	re := regexp.MustCompile("(?i:(?:" + strings.Join(patterns, ")|(?:") + "))")
	return func(s string) string { return re.ReplaceAllLiteralString(s, Replacement) }
}

// streamAll pushes chunks through a fresh stream and returns the output and
// the pieces returned by each call (the last one from Flush).
func streamAll(o *Outbound, chunks []string) (string, []string) {
	s := o.Stream()
	var b strings.Builder
	pieces := make([]string, 0, len(chunks)+1)
	for _, c := range chunks {
		p := s.Push(c)
		pieces = append(pieces, p)
		b.WriteString(p)
	}
	p := s.Flush()
	pieces = append(pieces, p)
	b.WriteString(p)
	return b.String(), pieces
}

const F = Replacement

func TestReplaceDefaults(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	tests := []struct{ in, want string }{
		{"", ""},
		{"Hello world", "Hello world"},
		{"<script>alert(1)</script>", F + "alert(1)</script>"},
		{"<SCRIPT src=x>", F + "src=x>"},
		{"<script\tsrc=x>", F + "src=x>"},
		{"<scripts> <script", "<scripts> <script"},
		{`<a href="javascript:alert(1)">`, `<a href="` + F + `alert(1)">`},
		{"JavaScript:void(0)", F + "void(0)"},
		{"Learn JavaScript: closures", "Learn " + F + " closures"},
		{"xjavascript: nojavascript:", "xjavascript: nojavascript:"},
		{"data:text/html,<b>hi</b>", F + ",<b>hi</b>"},
		{"src=DATA:TEXT/HTML;base64,", "src=" + F + ";base64,"},
		{"metadata:text/html", "metadata:text/html"},
		{"<script><script>javascript:data:text/html", F + F + F + F},
		{"日本語<script>テキスト", "日本語" + F + "テキスト"},
		{"é" + "javascript:", "é" + F}, // é is not an ASCII word character
		{F, F},
	}
	ref := reference(t, DefaultOutboundPatterns())
	for _, tc := range tests {
		if got := o.Replace(tc.in); got != tc.want {
			t.Errorf("Replace(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := ref(tc.in); got != tc.want {
			t.Errorf("reference(%q) = %q, want %q (test table is wrong)", tc.in, got, tc.want)
		}
	}
}

func TestStreamDefaults(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	type step struct {
		push string // "" with flush set means Flush
		want string
	}
	tests := []struct {
		name  string
		steps []step
		flush string
	}{
		{"plain text is emitted at once", []step{{"Hello world", "Hello world"}, {", and", ", and"}, {" more", " more"}}, ""},
		{"script split", []step{{"see <scr", "see "}, {"ipt>x", F + "x"}}, ""},
		{"javascript split", []step{{"a java", "a "}, {"script:", F}, {"go", "go"}}, ""},
		{"one byte at a time", []step{{"d", ""}, {"a", ""}, {"t", ""}, {"a", ""}, {":", ""}, {"text/htm", ""}, {"l", F}, {",", ","}}, ""},
		{"false start is released", []step{{"<scr", ""}, {"oll>", "<scroll>"}}, ""},
		{"script needs the next char", []step{{"<script", ""}, {" src", F + "src"}}, ""},
		{"held at end is flushed", []step{{"x <scri", "x "}}, "<scri"},
		{"held match decided by flush", []step{{"tail data:text/htm", "tail "}}, "data:text/htm"},
		{"word inside word is not a start", []step{{"old", "old"}, {"ata:text/html", "ata:text/html"}}, ""},
		{"word start is held", []step{{"the d", "the "}, {"ata:text/html!", F + "!"}}, ""},
		{"utf8 split is held", []step{{"caf\xc3", "caf"}, {"\xa9 <", "é "}, {"b>", "<b>"}}, ""},
		{"utf8 4-byte split", []step{{"\xf0\x9f", ""}, {"\x99", ""}, {"\x82!", "🙂!"}}, ""},
		{"invalid utf8 flushed as is", []step{{"ok\xe2\x82", "ok"}}, "\xe2\x82"},
		{"empty chunks", []step{{"", ""}, {"<", ""}, {"", ""}, {"script>", F}}, ""},
		{"replacement text is not rescanned", []step{{F, F}, {"javascript", ""}, {":" + F, F + F}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := o.Stream()
			var in, out strings.Builder
			for i, st := range tc.steps {
				in.WriteString(st.push)
				got := s.Push(st.push)
				out.WriteString(got)
				if got != st.want {
					t.Fatalf("step %d: Push(%q) = %q, want %q", i, st.push, got, st.want)
				}
			}
			got := s.Flush()
			out.WriteString(got)
			if got != tc.flush {
				t.Fatalf("Flush() = %q, want %q", got, tc.flush)
			}
			if want := o.Replace(in.String()); out.String() != want {
				t.Fatalf("stream output %q != Replace %q", out.String(), want)
			}
			if got := s.Flush(); got != "" {
				t.Fatalf("second Flush() = %q", got)
			}
		})
	}
}

// The examples from the brief: ordinary text goes out at once, and only a
// possible start of a match is held.
func TestStreamHoldsOnlyTheStart(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	s := o.Stream()
	if got := s.Push("Hello world"); got != "Hello world" || s.held != "" {
		t.Fatalf("Push(Hello world) = %q, holds %q", got, s.held)
	}
	if got := s.Push(" see <scr"); got != " see " || s.held != "<scr" {
		t.Fatalf("Push(see <scr) = %q, holds %q", got, s.held)
	}
	if got := s.Push("ipt>alert(1)"); got != F+"alert(1)" || s.held != "" {
		t.Fatalf("Push(ipt>...) = %q, holds %q", got, s.held)
	}
}

// A stream is reset by Flush and starts a new text: ^ and \b see the start.
func TestStreamReuseAfterFlush(t *testing.T) {
	o := newOutbound(t, []string{`^secret`, `\bjavascript:`})
	s := o.Stream()
	if got := s.Push("secret x"); got != F+" x" {
		t.Fatalf("first text: %q", got)
	}
	if got := s.Push("secret"); got != "secret" {
		t.Fatalf("mid text: %q", got)
	}
	s.Flush()
	if got := s.Push("secret x") + s.Flush(); got != F+" x" {
		t.Fatalf("after Flush: %q", got)
	}
}

func TestNilAndEmptyOutbound(t *testing.T) {
	var nilO *Outbound
	empty := newOutbound(t, nil)
	for _, o := range []*Outbound{nilO, empty} {
		in := "<script>javascript:"
		if got := o.Replace(in); got != in {
			t.Errorf("Replace = %q", got)
		}
		s := o.Stream()
		if got := s.Push("<scr") + s.Push("ipt>") + s.Flush(); got != "<script>" {
			t.Errorf("stream = %q", got)
		}
	}
	var nilS *Stream
	if got := nilS.Push("x") + nilS.Flush(); got != "x" {
		t.Errorf("nil stream = %q", got)
	}
}

// customPatterns exercise the engine beyond the defaults: assertions,
// leftmost-first preference, alternation order, case folding beyond ASCII,
// non-ASCII literals, bounded repetition. All matches are short, so the
// hold-back bound is never reached.
var customPatterns = []string{
	`\bfoo\b`,
	`(?m)^ab+c`,
	`xy$`,
	`qqqq|qq`,        // leftmost-first: prefers qqqq when present
	`z(a|ab)(c|bcd)`, // preference between overlapping alternatives
	`k`,              // (?i)k also matches U+212A KELVIN SIGN
	`é{1,3}`,
	`<tool_call>[^<]{0,20}</tool_call>`,
	`\Bmid\B`,
	`[^\x00-\x7f]q`, // a non-ASCII rune (or an invalid byte) followed by q
	`filtered`,      // matches inside Replacement: must not loop
	`(?s)a.{2}b`,
}

func TestReplaceCustom(t *testing.T) {
	o := newOutbound(t, customPatterns)
	ref := reference(t, customPatterns)
	tests := []struct{ in, want string }{
		{"foo food foo.", F + " food " + F + "."},
		{"abbc\nabc xabc", F + "\n" + F + " xabc"},
		{"xy xy", "xy " + F},
		{"qqqqq", F + "q"},
		{"qqq", F + "q"},
		{"zabcd zacx", F + " " + F + "x"},
		{"K \u212a", F + " " + F},
		{"éééé!", F + F + "!"},
		{"<TOOL_CALL>{}</tool_call>", F},
		{"amidst mid", "a" + F + "st mid"},
		{"日q \xffq aq", F + " " + F + " aq"},
		{"filtered", F},
		{"a\n\nb", F},
	}
	for _, tc := range tests {
		if got := o.Replace(tc.in); got != tc.want {
			t.Errorf("Replace(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := ref(tc.in); got != tc.want {
			t.Errorf("reference(%q) = %q, want %q (test table is wrong)", tc.in, got, tc.want)
		}
	}
}

// propertyInputs are texts for the split property; they include every
// pattern in pieces, near misses, UTF-8 and invalid bytes.
var propertyInputs = []string{
	"",
	"Hello world, this is an ordinary answer with no markup at all.",
	"see <script>alert(1)</script> and <SCRIPT\nsrc=x> and <scripts>",
	`<a href="javascript:alert(1)">x</a> <a href='JAVASCRIPT:void(0)'>`,
	"data:text/html,<b>hi</b> metadata:text/html data:text/htm data:text/html",
	"jjjjavascript: javajavascript: <<<script> ddddata:text/html d a t a",
	"日本語<script>テキスト javascript:🙂 data:text/html é",
	"caf\xc3\xa9 \xff\xfe <scr\xe2\x82ipt> javascript\xc0: ok",
	strings.Repeat("<scrip", 20) + "t>",
	"foo food foo. abbc\nabc xabc xy xy qqqqq qqq zabcd zacx K \u212a éééé!",
	"<TOOL_CALL>{}</tool_call> amidst mid 日q \xffq aq filtered a\n\nb",
	"[content filtered] [content <script> filtered]",
	strings.Repeat("a", 300) + "<script>" + strings.Repeat("d", 300) + "data:text/html",
}

func randomSplit(rng *rand.Rand, s string) []string {
	var chunks []string
	for len(s) > 0 {
		n := rng.IntN(min(len(s), 12) + 1) // 0..12 bytes, empty chunks included
		if rng.IntN(10) == 0 {
			n = rng.IntN(len(s) + 1)
		}
		chunks = append(chunks, s[:n])
		s = s[n:]
	}
	return chunks
}

func TestStreamMatchesReplaceProperty(t *testing.T) {
	sets := map[string][]string{
		"defaults": DefaultOutboundPatterns(),
		"v1":       {`<script[\s>]`, `javascript:`, `data:text/html`},
		"custom":   customPatterns,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, pats := range sets {
		o := newOutbound(t, pats)
		ref := reference(t, pats)
		for _, in := range propertyInputs {
			want := o.Replace(in)
			if r := ref(in); want != r {
				t.Fatalf("%s: Replace(%q) = %q, regexp gives %q", name, in, want, r)
			}
			for range 300 {
				chunks := randomSplit(rng, in)
				got, pieces := streamAll(o, chunks)
				if got != want {
					t.Fatalf("%s: split %q: stream %q != Replace %q", name, chunks, got, want)
				}
				if utf8.ValidString(in) {
					for _, p := range pieces {
						if !utf8.ValidString(p) {
							t.Fatalf("%s: split %q: emitted invalid UTF-8 %q", name, chunks, p)
						}
					}
				}
			}
		}
	}
}

// With the defaults, whatever a stream holds back must be the start of a
// possible match (or an incomplete UTF-8 sequence), never more.
func TestStreamHoldsOnlyPossiblePrefix(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	starts := []string{"<script ", "<script>", "javascript:", "data:text/html"}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, in := range propertyInputs {
		if !utf8.ValidString(in) {
			continue
		}
		for range 100 {
			s := o.Stream()
			for _, c := range randomSplit(rng, in) {
				s.Push(c)
				h := s.held
				if h == "" {
					continue
				}
				if decodableEnd(h) == 0 {
					continue // an incomplete UTF-8 sequence
				}
				h = h[:decodableEnd(h)]
				ok := false
				for _, st := range starts {
					if len(h) < len(st) && strings.EqualFold(st[:len(h)], h) {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("input %q: holds %q, which cannot begin a match", in, s.held)
				}
				if h[0] != '<' && isWordByte(byte(s.prev)) && s.prev < utf8.RuneSelf && s.prev >= 0 {
					t.Fatalf("input %q: holds %q after word character %q", in, s.held, s.prev)
				}
			}
			s.Flush()
		}
	}
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// An undecided candidate longer than maxHold is given up and emitted.
func TestStreamHoldBound(t *testing.T) {
	o := newOutbound(t, []string{`<tool_call>.*?</tool_call>`})
	s := o.Stream()
	var out strings.Builder
	in := "x <tool_call>" + strings.Repeat("y", 1000) + "</tool_call> z"
	for i := 0; i < len(in); i++ {
		out.WriteString(s.Push(in[i : i+1]))
		if len(s.held) > maxHold {
			t.Fatalf("after %d bytes: holds %d bytes", i+1, len(s.held))
		}
	}
	out.WriteString(s.Flush())
	if out.String() != in {
		t.Fatalf("output differs from input:\n%q", out.String())
	}
	// Short matches are still caught on the same stream type.
	if got, _ := streamAll(o, []string{"a <tool_", "call>x</tool", "_call>b"}); got != "a "+F+"b" {
		t.Fatalf("short match: %q", got)
	}
}

func TestOutboundConcurrent(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	in := "a <script>b javascript:c data:text/html d"
	want := o.Replace(in)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for range 200 {
				got, _ := streamAll(o, randomSplit(rng, in))
				if got != want || o.Replace(in) != want {
					t.Errorf("got %q, want %q", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestFirstSet(t *testing.T) {
	o := newOutbound(t, DefaultOutboundPatterns())
	var got []byte
	for c := range o.p.first {
		if o.p.first[c] {
			got = append(got, byte(c))
		}
	}
	if string(got) != "<DJdj" || o.p.firstNonASCII {
		t.Errorf("first set = %q, nonASCII = %v", got, o.p.firstNonASCII)
	}
	k := newOutbound(t, []string{`k`})
	if !k.p.first['k'] || !k.p.first['K'] || !k.p.firstNonASCII {
		t.Errorf("(?i)k: first['k']=%v first['K']=%v nonASCII=%v", k.p.first['k'], k.p.first['K'], k.p.firstNonASCII)
	}
}

// asciiMask must agree with syntax.Inst.MatchRune on every ASCII rune.
func TestASCIIMask(t *testing.T) {
	pats := append(append(DefaultInboundPatterns(), customPatterns...),
		`[a-fK-Z0-9_]`, `[^\n]`, `(?s).`, `.`, `[[:punct:]]`, `\pL`, `[^a]`, `ſ`, `\x{212a}`)
	for _, pat := range pats {
		o := newOutbound(t, []string{pat})
		for pc := range o.p.prog.Inst {
			inst := &o.p.prog.Inst[pc]
			m := asciiMask(inst)
			for c := range rune(utf8.RuneSelf) {
				if got, want := m[c>>6]&(1<<(c&63)) != 0, instMatches(inst, c); got != want {
					t.Errorf("%q inst %d (%v) rune %q: mask %v, MatchRune %v", pat, pc, inst, c, got, want)
				}
			}
		}
	}
}
