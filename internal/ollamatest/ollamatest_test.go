package ollamatest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var testModels = []Model{
	{Name: "stories:latest", Size: 1185376},
	{Name: "qwen3:0.6b", Size: 522653767, Family: "qwen3", ParameterSize: "751.63M", Quantization: "Q4_K_M",
		ContextLength: 40960, Capabilities: []string{"completion", "tools", "thinking"}},
	{Name: "tagless"},
}

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Models == nil {
		cfg.Models = testModels
	}
	s := NewServer(cfg)
	t.Cleanup(s.Close)
	return s
}

// waitCtx bounds every wait of a test so a bug fails the test instead of
// hanging it.
func waitCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func do(t testing.TB, ctx context.Context, method, url, body string) *http.Response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// streamLine is the union of Ollama's chat and generate stream objects; it is
// decoded with DisallowUnknownFields, so any extra key fails the test.
type streamLine struct {
	Model     string `json:"model"`
	CreatedAt string `json:"created_at"`
	Message   *struct {
		Role      string     `json:"role"`
		Content   *string    `json:"content"`
		Thinking  string     `json:"thinking"`
		ToolCalls []ToolCall `json:"tool_calls"`
	} `json:"message"`
	Response           *string `json:"response"`
	Thinking           string  `json:"thinking"`
	Done               *bool   `json:"done"`
	DoneReason         string  `json:"done_reason"`
	TotalDuration      int64   `json:"total_duration"`
	LoadDuration       int64   `json:"load_duration"`
	PromptEvalCount    int64   `json:"prompt_eval_count"`
	PromptEvalDuration int64   `json:"prompt_eval_duration"`
	EvalCount          int64   `json:"eval_count"`
	EvalDuration       int64   `json:"eval_duration"`
	Error              string  `json:"error"`
}

func decodeLine(t testing.TB, b []byte) streamLine {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l streamLine
	if err := dec.Decode(&l); err != nil {
		t.Fatalf("line %q: %v", b, err)
	}
	if dec.More() {
		t.Fatalf("line %q holds more than one JSON value", b)
	}
	return l
}

// readLines reads an NDJSON body line by line as a client must.
func readLines(t testing.TB, body io.Reader) []streamLine {
	t.Helper()
	br := bufio.NewReader(body)
	var out []streamLine
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			if b[len(b)-1] != '\n' {
				t.Fatalf("last line %q does not end with a newline", b)
			}
			out = append(out, decodeLine(t, b))
		}
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func checkCreatedAt(t testing.TB, s string) {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("created_at %q: %v", s, err)
	}
	if !strings.HasSuffix(s, "Z") {
		t.Errorf("created_at %q is not UTC", s)
	}
	if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Errorf("created_at %q is not now", s)
	}
}

func checkMetrics(t testing.TB, l streamLine, evalCount int) {
	t.Helper()
	if l.EvalCount != int64(evalCount) {
		t.Errorf("eval_count = %d, want %d", l.EvalCount, evalCount)
	}
	for name, v := range map[string]int64{
		"total_duration": l.TotalDuration, "load_duration": l.LoadDuration,
		"prompt_eval_count": l.PromptEvalCount, "prompt_eval_duration": l.PromptEvalDuration,
		"eval_duration": l.EvalDuration,
	} {
		if v <= 0 {
			t.Errorf("%s = %d, want > 0", name, v)
		}
	}
	if l.TotalDuration < l.LoadDuration+l.PromptEvalDuration+l.EvalDuration {
		t.Errorf("total_duration %d < load+prompt_eval+eval", l.TotalDuration)
	}
}

func TestChatStream(t *testing.T) {
	args := json.RawMessage(`{"city":"Paris","unit":"c"}`)
	calls := [][]ToolCall{
		{{Function: ToolCallFunction{Name: "weather", Arguments: args}}},
		{{ID: "call_1", Function: ToolCallFunction{Index: 1, Name: "time", Arguments: json.RawMessage(`{}`)}},
			{Function: ToolCallFunction{Index: 2, Name: "noargs"}}},
	}
	tests := []struct {
		name         string
		model        string
		user         string
		reply        *Reply // nil: default responder
		wantThinking []string
		wantContent  []string
		wantCalls    [][]ToolCall
		wantReason   string
		wantError    string
	}{
		{name: "default responder", model: "stories", user: "hello big  world",
			wantContent: []string{"Echo: ", "hello", " big", " world"}, wantReason: "stop"},
		{name: "scripted tokens", model: "stories:latest",
			reply:       &Reply{Tokens: []string{"Once", " upon", " a", " time"}},
			wantContent: []string{"Once", " upon", " a", " time"}, wantReason: "stop"},
		{name: "escaping", model: "stories",
			reply:       &Reply{Tokens: []string{"\"q\"\n", "<b>&</b>", "\x00\x1f\t", "é\u2028ü", "\\"}},
			wantContent: []string{"\"q\"\n", "<b>&</b>", "\x00\x1f\t", "é\u2028ü", "\\"}, wantReason: "stop"},
		{name: "thinking", model: "qwen3:0.6b",
			reply:        &Reply{Thinking: []string{"Let me", " think."}, Tokens: []string{"Yes", "."}},
			wantThinking: []string{"Let me", " think."}, wantContent: []string{"Yes", "."}, wantReason: "stop"},
		{name: "tool calls", model: "qwen3:0.6b",
			reply:       &Reply{Tokens: []string{"Checking"}, ToolCalls: calls},
			wantContent: []string{"Checking"}, wantCalls: calls, wantReason: "stop"},
		{name: "length", model: "stories",
			reply:       &Reply{Tokens: []string{"a", "b"}, DoneReason: "length"},
			wantContent: []string{"a", "b"}, wantReason: "length"},
		{name: "delay", model: "stories",
			reply:       &Reply{Tokens: []string{"slow", "ly"}, Delay: 5 * time.Millisecond},
			wantContent: []string{"slow", "ly"}, wantReason: "stop"},
		{name: "no tokens", model: "stories", reply: &Reply{}, wantReason: "stop"},
		{name: "mid-stream error", model: "stories",
			reply:       &Reply{Tokens: []string{"par", "tial"}, Error: "runner crashed"},
			wantContent: []string{"par", "tial"}, wantError: "runner crashed"},
		{name: "status 200 with error is mid-stream", model: "stories",
			reply:     &Reply{Status: 200, Error: "oops"},
			wantError: "oops"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{}
			if tc.reply != nil {
				rep := *tc.reply
				cfg.Respond = func(ChatRequest) Reply { return rep }
			}
			s := newTestServer(t, cfg)
			user := tc.user
			if user == "" {
				user = "hi"
			}
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, tc.model, user)
			resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat", body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type %q", ct)
			}
			lines := readLines(t, resp.Body)
			var gotThinking, gotContent []string
			var gotCalls [][]ToolCall
			n := len(tc.wantThinking) + len(tc.wantContent) + len(tc.wantCalls)
			if len(lines) != n+1 {
				t.Fatalf("got %d lines, want %d", len(lines), n+1)
			}
			for i, l := range lines[:n] {
				if l.Model != tc.model || l.Done == nil || *l.Done || l.Message == nil ||
					l.Message.Role != "assistant" || l.Message.Content == nil || l.Response != nil || l.DoneReason != "" || l.EvalCount != 0 {
					t.Fatalf("line %d malformed: %+v", i, l)
				}
				checkCreatedAt(t, l.CreatedAt)
				switch {
				case l.Message.Thinking != "":
					if *l.Message.Content != "" {
						t.Errorf("thinking line %d has content %q", i, *l.Message.Content)
					}
					gotThinking = append(gotThinking, l.Message.Thinking)
				case l.Message.ToolCalls != nil:
					gotCalls = append(gotCalls, l.Message.ToolCalls)
				default:
					gotContent = append(gotContent, *l.Message.Content)
				}
			}
			if !slices.Equal(gotThinking, tc.wantThinking) || !slices.Equal(gotContent, tc.wantContent) {
				t.Errorf("thinking %q content %q, want %q %q", gotThinking, gotContent, tc.wantThinking, tc.wantContent)
			}
			checkCalls(t, gotCalls, tc.wantCalls)
			last := lines[n]
			if tc.wantError != "" {
				if last.Error != tc.wantError || last.Model != "" || last.Done != nil {
					t.Errorf("last line %+v, want only error %q", last, tc.wantError)
				}
				return
			}
			if last.Done == nil || !*last.Done || last.DoneReason != tc.wantReason || last.Model != tc.model ||
				last.Message == nil || last.Message.Role != "assistant" || last.Message.Content == nil || *last.Message.Content != "" {
				t.Fatalf("final line malformed: %+v", last)
			}
			checkCreatedAt(t, last.CreatedAt)
			checkMetrics(t, last, len(tc.wantThinking)+len(tc.wantContent))
			if tc.reply != nil && tc.reply.Delay > 0 {
				// n chunks each preceded by Delay; eval spans all but the first.
				if min := int64(n) * int64(tc.reply.Delay); last.TotalDuration < min {
					t.Errorf("total_duration %d < %d", last.TotalDuration, min)
				}
				if min := int64(n-1) * int64(tc.reply.Delay); last.EvalDuration < min {
					t.Errorf("eval_duration %d < %d", last.EvalDuration, min)
				}
			}
		})
	}
}

func checkCalls(t testing.TB, got, want [][]ToolCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tool-call chunks, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("chunk %d: %d calls, want %d", i, len(got[i]), len(want[i]))
		}
		for j, w := range want[i] {
			g := got[i][j]
			wantArgs := w.Function.Arguments
			if len(wantArgs) == 0 {
				wantArgs = json.RawMessage(`{}`)
			}
			if g.ID != w.ID || g.Function.Name != w.Function.Name || g.Function.Index != w.Function.Index ||
				!jsonEqual(t, g.Function.Arguments, wantArgs) {
				t.Errorf("call %d.%d = %+v (args %s), want %+v", i, j, g, g.Function.Arguments, w)
			}
		}
	}
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// TestStreamExactBytes pins the byte layout (key order, escaping) to what
// Ollama's json.Marshal of api.ChatResponse / api.GenerateResponse produces.
func TestStreamExactBytes(t *testing.T) {
	s := newTestServer(t, Config{Respond: func(r ChatRequest) Reply {
		return Reply{Thinking: []string{"hm"}, Tokens: []string{"a<b"},
			ToolCalls: [][]ToolCall{{{Function: ToolCallFunction{Name: "f", Arguments: json.RawMessage(`{"x": 1}`)}}}}}
	}})
	norm := regexp.MustCompile(`"created_at":"[^"]+"|(_duration|_count)":\d+`)
	get := func(path, body string) string {
		resp := do(t, waitCtx(t), "POST", s.URL+path, body)
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return norm.ReplaceAllStringFunc(string(b), func(m string) string {
			if strings.HasPrefix(m, `"created_at"`) {
				return `"created_at":"T"`
			}
			return m[:strings.Index(m, ":")+1] + "N"
		})
	}
	wantChat := `{"model":"stories","created_at":"T","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}
{"model":"stories","created_at":"T","message":{"role":"assistant","content":"a\u003cb"},"done":false}
{"model":"stories","created_at":"T","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]},"done":false}
{"model":"stories","created_at":"T","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":N,"load_duration":N,"prompt_eval_count":N,"prompt_eval_duration":N,"eval_count":N,"eval_duration":N}
`
	if got := get("/api/chat", `{"model":"stories","messages":[{"role":"user","content":"x"}]}`); got != wantChat {
		t.Errorf("chat stream:\n%s\nwant:\n%s", got, wantChat)
	}
	wantGen := `{"model":"stories","created_at":"T","response":"","thinking":"hm","done":false}
{"model":"stories","created_at":"T","response":"a\u003cb","done":false}
{"model":"stories","created_at":"T","response":"","done":true,"done_reason":"stop","total_duration":N,"load_duration":N,"prompt_eval_count":N,"prompt_eval_duration":N,"eval_count":N,"eval_duration":N}
`
	if got := get("/api/generate", `{"model":"stories","prompt":"x"}`); got != wantGen {
		t.Errorf("generate stream:\n%s\nwant:\n%s", got, wantGen)
	}
	wantChatWhole := `{"model":"stories","created_at":"T","message":{"role":"assistant","content":"a\u003cb","thinking":"hm","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]},"done_reason":"stop","done":true,"total_duration":N,"load_duration":N,"prompt_eval_count":N,"prompt_eval_duration":N,"eval_count":N,"eval_duration":N}`
	if got := get("/api/chat", `{"model":"stories","stream":false,"messages":[{"role":"user","content":"x"}]}`); got != wantChatWhole {
		t.Errorf("chat stream:false:\n%s\nwant:\n%s", got, wantChatWhole)
	}
	wantGenWhole := `{"model":"stories","created_at":"T","response":"a\u003cb","thinking":"hm","done":true,"done_reason":"stop","total_duration":N,"load_duration":N,"prompt_eval_count":N,"prompt_eval_duration":N,"eval_count":N,"eval_duration":N}`
	if got := get("/api/generate", `{"model":"stories","stream":false,"prompt":"x"}`); got != wantGenWhole {
		t.Errorf("generate stream:false:\n%s\nwant:\n%s", got, wantGenWhole)
	}
}

// TestEachLineIsItsOwnFlush reads the raw HTTP/1.1 chunked framing: every
// flush becomes one chunk, so every chunk must hold exactly one whole line.
func TestEachLineIsItsOwnFlush(t *testing.T) {
	s := newTestServer(t, Config{Respond: func(ChatRequest) Reply {
		return Reply{Thinking: []string{"t1", "t2"}, Tokens: strings.Fields("one two three four five six seven eight nine ten"),
			ToolCalls: [][]ToolCall{{{Function: ToolCallFunction{Name: "f"}}}}}
	}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"model":"stories","messages":[{"role":"user","content":"x"}]}`
	fmt.Fprintf(conn, "POST /api/chat HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Fatalf("status %d, transfer encoding %q", resp.StatusCode, resp.TransferEncoding)
	}
	// http.ReadResponse would de-chunk the body; read the framing ourselves.
	var chunks []string
	for {
		sizeLine, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		size, err := strconv.ParseInt(strings.TrimSpace(sizeLine), 16, 64)
		if err != nil {
			t.Fatalf("chunk size %q: %v", sizeLine, err)
		}
		if size == 0 {
			break
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(br, data); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, string(data[:size]))
	}
	if len(chunks) != 2+10+1+1 {
		t.Fatalf("got %d chunks, want 14: %q", len(chunks), chunks)
	}
	for i, c := range chunks {
		if strings.Count(c, "\n") != 1 || !strings.HasSuffix(c, "\n") {
			t.Errorf("chunk %d is not exactly one line: %q", i, c)
		}
		decodeLine(t, []byte(c))
	}
}

func TestChatNoStream(t *testing.T) {
	calls := [][]ToolCall{
		{{Function: ToolCallFunction{Name: "a", Arguments: json.RawMessage(`{"n":1}`)}}},
		{{Function: ToolCallFunction{Index: 1, Name: "b", Arguments: json.RawMessage(`{"n":2}`)}}},
	}
	tests := []struct {
		name         string
		reply        Reply
		wantContent  string
		wantThinking string
		wantCalls    int
		wantReason   string
	}{
		{name: "tokens", reply: Reply{Tokens: []string{"Hel", "lo", "!"}}, wantContent: "Hello!", wantReason: "stop"},
		{name: "thinking", reply: Reply{Thinking: []string{"a", "b"}, Tokens: []string{"c"}, DoneReason: "length"},
			wantContent: "c", wantThinking: "ab", wantReason: "length"},
		{name: "tool calls", reply: Reply{ToolCalls: calls}, wantCalls: 2, wantReason: "stop"},
		{name: "delay", reply: Reply{Tokens: []string{"x", "y"}, Delay: time.Millisecond}, wantContent: "xy", wantReason: "stop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{Respond: func(ChatRequest) Reply { return tc.reply }})
			resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat",
				`{"model":"qwen3:0.6b","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			b, _ := io.ReadAll(resp.Body)
			if bytes.Count(b, []byte("\n")) != 0 {
				t.Errorf("stream:false body has several lines: %q", b)
			}
			l := decodeLine(t, b)
			if l.Done == nil || !*l.Done || l.DoneReason != tc.wantReason || l.Model != "qwen3:0.6b" || l.Message == nil ||
				*l.Message.Content != tc.wantContent || l.Message.Thinking != tc.wantThinking || len(l.Message.ToolCalls) != tc.wantCalls {
				t.Fatalf("got %+v %+v", l, l.Message)
			}
			checkCreatedAt(t, l.CreatedAt)
			checkMetrics(t, l, len(tc.reply.Thinking)+len(tc.reply.Tokens))
		})
	}
}

func TestGenerate(t *testing.T) {
	s := newTestServer(t, Config{})
	t.Run("stream", func(t *testing.T) {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/generate", `{"model":"stories","prompt":"Once upon a time"}`)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		lines := readLines(t, resp.Body)
		var sb strings.Builder
		for _, l := range lines[:len(lines)-1] {
			if l.Message != nil || l.Response == nil || *l.Done {
				t.Fatalf("bad line %+v", l)
			}
			checkCreatedAt(t, l.CreatedAt)
			sb.WriteString(*l.Response)
		}
		if sb.String() != "Echo: Once upon a time" {
			t.Errorf("response %q", sb.String())
		}
		last := lines[len(lines)-1]
		if !*last.Done || last.DoneReason != "stop" || *last.Response != "" {
			t.Errorf("final %+v", last)
		}
		checkMetrics(t, last, 5)
	})
	t.Run("no stream", func(t *testing.T) {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/generate", `{"model":"stories","prompt":"a b","stream":false}`)
		b, _ := io.ReadAll(resp.Body)
		l := decodeLine(t, b)
		if resp.StatusCode != 200 || *l.Response != "Echo: a b" || !*l.Done || l.DoneReason != "stop" {
			t.Fatalf("status %d body %s", resp.StatusCode, b)
		}
		checkMetrics(t, l, 3)
	})
}

func TestLoadUnload(t *testing.T) {
	s := newTestServer(t, Config{Respond: func(ChatRequest) Reply {
		t.Error("responder called for a load/unload request")
		return Reply{}
	}})
	tests := []struct{ path, body, reason string }{
		{"/api/chat", `{"model":"stories"}`, "load"},
		{"/api/chat", `{"model":"stories","messages":[],"keep_alive":0}`, "unload"},
		{"/api/chat", `{"model":"stories","keep_alive":"0s"}`, "unload"},
		{"/api/chat", `{"model":"stories","keep_alive":"5m"}`, "load"},
		{"/api/generate", `{"model":"stories"}`, "load"},
		{"/api/generate", `{"model":"stories","keep_alive":0}`, "unload"},
	}
	for _, tc := range tests {
		resp := do(t, waitCtx(t), "POST", s.URL+tc.path, tc.body)
		b, _ := io.ReadAll(resp.Body)
		l := decodeLine(t, b)
		if resp.StatusCode != 200 || l.Done == nil || !*l.Done || l.DoneReason != tc.reason {
			t.Errorf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, b)
		}
	}
}

func TestErrors(t *testing.T) {
	s := newTestServer(t, Config{Respond: func(r ChatRequest) Reply {
		switch r.Messages[0].Content {
		case "busy":
			return Reply{Status: 503, Error: "server busy, please try again.  maximum pending requests exceeded"}
		case "late":
			return Reply{Tokens: []string{"a"}, Error: "late failure"}
		case "bare":
			return Reply{Status: 502}
		}
		return Reply{Tokens: []string{"ok"}}
	}})
	chat := func(model, content string, extra string) string {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]%s}`, model, content, extra)
	}
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantError                string // JSON {"error":...}
		wantPlain                string // plain-text body
	}{
		{"unknown model", "POST", "/api/chat", chat("nope", "x", ""), 404, `model "nope" not found, try pulling it first`, ""},
		{"unknown tag", "POST", "/api/chat", chat("stories:7b", "x", ""), 404, `model "stories:7b" not found, try pulling it first`, ""},
		{"unknown model generate", "POST", "/api/generate", `{"model":"nope","prompt":"x"}`, 404, `model 'nope' not found`, ""},
		{"missing model", "POST", "/api/chat", chat("", "x", ""), 400, "model is required", ""},
		{"bad json", "POST", "/api/chat", `{"model":`, 400, "unexpected EOF", ""},
		{"bad json syntax", "POST", "/api/chat", `{"model" "x"}`, 400, "invalid character '\"' after object key", ""},
		{"empty body", "POST", "/api/chat", "", 400, "missing request body", ""},
		{"wrong type", "POST", "/api/chat", chat("stories", "x", `,"stream":"yes"`), 400,
			"json: cannot unmarshal string into Go struct field wireRequest.stream of type bool", ""},
		{"string tool arguments", "POST", "/api/chat",
			`{"model":"stories","messages":[{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}]}`, 400,
			"json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments", ""},
		{"bad keep_alive", "POST", "/api/chat", chat("stories", "x", `,"keep_alive":"forever"`), 400, `time: invalid duration "forever"`, ""},
		{"bad think", "POST", "/api/chat", chat("stories", "x", `,"think":"max"`), 400,
			`invalid think value: "max" (must be "high", "medium", "low", true, or false)`, ""},
		{"reply status", "POST", "/api/chat", chat("stories", "busy", ""), 503,
			"server busy, please try again.  maximum pending requests exceeded", ""},
		{"reply status no text", "POST", "/api/chat", chat("stories", "bare", ""), 502, "bad gateway", ""},
		{"reply status no stream", "POST", "/api/chat", chat("stories", "busy", `,"stream":false`), 503,
			"server busy, please try again.  maximum pending requests exceeded", ""},
		{"mid-stream error no stream", "POST", "/api/chat", chat("stories", "late", `,"stream":false`), 500, "late failure", ""},
		{"show unknown", "POST", "/api/show", `{"model":"nope"}`, 404, "model 'nope' not found", ""},
		{"show missing", "POST", "/api/show", `{}`, 400, "model is required", ""},
		{"show empty body", "POST", "/api/show", ``, 400, "missing request body", ""},
		{"unknown path", "GET", "/api/nope", "", 404, "", "404 page not found"},
		{"chat with GET", "GET", "/api/chat", "", 405, "", "405 method not allowed"},
		{"tags with POST", "POST", "/api/tags", "{}", 405, "", "405 method not allowed"},
		{"show with GET", "GET", "/api/show", "", 405, "", "405 method not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, waitCtx(t), tc.method, s.URL+tc.path, tc.body)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, b)
			}
			ct := resp.Header.Get("Content-Type")
			if tc.wantPlain != "" {
				if string(b) != tc.wantPlain || ct != "text/plain" {
					t.Errorf("body %q (%s), want %q", b, ct, tc.wantPlain)
				}
				if tc.wantStatus == 405 && resp.Header.Get("Allow") == "" {
					t.Error("405 without Allow header")
				}
				return
			}
			if ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			var e map[string]string
			if err := json.Unmarshal(b, &e); err != nil || len(e) != 1 || e["error"] != tc.wantError {
				t.Errorf("body %s, want {\"error\":%q}", b, tc.wantError)
			}
		})
	}
}

func TestModelNames(t *testing.T) {
	s := newTestServer(t, Config{})
	tests := []struct {
		model string
		found bool
	}{
		{"stories", true},
		{"stories:latest", true},
		{"Stories:Latest", true},
		{"library/stories", true},
		{"registry.ollama.ai/library/stories:latest", true},
		{"stories:other", false},
		{"storie", false},
		{"qwen3:0.6b", true},
		{"qwen3", false}, // only qwen3:0.6b is pulled
		{"tagless", true},
		{"tagless:latest", true},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat",
				fmt.Sprintf(`{"model":%q,"stream":false,"messages":[{"role":"user","content":"x"}]}`, tc.model))
			b, _ := io.ReadAll(resp.Body)
			if got := resp.StatusCode == 200; got != tc.found {
				t.Fatalf("status %d body %s", resp.StatusCode, b)
			}
			if tc.found {
				// Ollama echoes the model name as the client wrote it.
				if l := decodeLine(t, b); l.Model != tc.model {
					t.Errorf("model %q, want %q", l.Model, tc.model)
				}
			}
			resp = do(t, waitCtx(t), "POST", s.URL+"/api/show", fmt.Sprintf(`{"name":%q}`, tc.model))
			if got := resp.StatusCode == 200; got != tc.found {
				t.Errorf("show status %d", resp.StatusCode)
			}
		})
	}
}

func getJSON(t testing.TB, url string) map[string]any {
	t.Helper()
	resp := do(t, waitCtx(t), "GET", url, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func checkKeys(t testing.TB, what string, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := keys(m); !slices.Equal(got, want) {
		t.Errorf("%s keys %q, want %q", what, got, want)
	}
}

var detailKeys = []string{"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}

func TestTagsShowPsVersion(t *testing.T) {
	s := newTestServer(t, Config{Loaded: []string{"qwen3:0.6b"}})

	t.Run("version", func(t *testing.T) {
		v := getJSON(t, s.URL+"/api/version")
		checkKeys(t, "version", v, "version")
		if v["version"] != "0.9.6" {
			t.Errorf("version %v", v["version"])
		}
		s2 := newTestServer(t, Config{Version: "0.12.0"})
		if v := getJSON(t, s2.URL+"/api/version"); v["version"] != "0.12.0" {
			t.Errorf("configured version %v", v["version"])
		}
	})

	t.Run("root", func(t *testing.T) {
		resp := do(t, waitCtx(t), "GET", s.URL+"/", "")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "Ollama is running" {
			t.Errorf("GET /: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("tags", func(t *testing.T) {
		v := getJSON(t, s.URL+"/api/tags")
		checkKeys(t, "tags", v, "models")
		models := v["models"].([]any)
		if len(models) != 3 {
			t.Fatalf("%d models", len(models))
		}
		var names []string
		for _, x := range models {
			m := x.(map[string]any)
			checkKeys(t, "tags model", m, "name", "model", "modified_at", "size", "digest", "details")
			checkKeys(t, "tags details", m["details"].(map[string]any), detailKeys...)
			if m["name"] != m["model"] {
				t.Errorf("name %v model %v", m["name"], m["model"])
			}
			if d := m["digest"].(string); len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "" {
				t.Errorf("digest %q", d)
			}
			if _, err := time.Parse(time.RFC3339Nano, m["modified_at"].(string)); err != nil {
				t.Error(err)
			}
			names = append(names, m["name"].(string))
		}
		if !slices.Equal(names, []string{"stories:latest", "qwen3:0.6b", "tagless:latest"}) {
			t.Errorf("names %q", names)
		}
		st := models[0].(map[string]any)
		if st["size"].(float64) != 1185376 {
			t.Errorf("size %v", st["size"])
		}
		d := st["details"].(map[string]any)
		if d["family"] != "llama" || d["format"] != "gguf" || d["parameter_size"] != "260K" ||
			d["quantization_level"] != "F32" || d["parent_model"] != "" || fmt.Sprint(d["families"]) != "[llama]" {
			t.Errorf("default details %v", d)
		}
		// Digest is stable across servers for the same name.
		if d2 := getJSON(t, newTestServer(t, Config{}).URL+"/api/tags")["models"].([]any)[0].(map[string]any)["digest"]; d2 != st["digest"] {
			t.Errorf("digest not stable: %v vs %v", d2, st["digest"])
		}
	})

	t.Run("show", func(t *testing.T) {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/show", `{"model":"qwen3:0.6b"}`)
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		checkKeys(t, "show", v, "modelfile", "parameters", "template", "details", "model_info", "capabilities", "modified_at")
		checkKeys(t, "show details", v["details"].(map[string]any), detailKeys...)
		mi := v["model_info"].(map[string]any)
		if mi["general.architecture"] != "qwen3" || mi["qwen3.context_length"].(float64) != 40960 ||
			mi["general.parameter_count"].(float64) != 751630000 {
			t.Errorf("model_info %v", mi)
		}
		if fmt.Sprint(v["capabilities"]) != "[completion tools thinking]" {
			t.Errorf("capabilities %v", v["capabilities"])
		}
		if !strings.Contains(v["modelfile"].(string), "FROM ") {
			t.Errorf("modelfile %q", v["modelfile"])
		}
		resp = do(t, waitCtx(t), "POST", s.URL+"/api/show", `{"name":"stories"}`)
		v = nil
		json.NewDecoder(resp.Body).Decode(&v)
		mi = v["model_info"].(map[string]any)
		if mi["llama.context_length"].(float64) != 512 || mi["general.parameter_count"].(float64) != 260000 ||
			fmt.Sprint(v["capabilities"]) != "[completion]" {
			t.Errorf("defaults: model_info %v capabilities %v", mi, v["capabilities"])
		}
	})

	t.Run("ps", func(t *testing.T) {
		v := getJSON(t, s.URL+"/api/ps")
		checkKeys(t, "ps", v, "models")
		models := v["models"].([]any)
		if len(models) != 1 {
			t.Fatalf("ps %v", v)
		}
		m := models[0].(map[string]any)
		checkKeys(t, "ps model", m, "name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length")
		checkKeys(t, "ps details", m["details"].(map[string]any), detailKeys...)
		if m["name"] != "qwen3:0.6b" || m["context_length"].(float64) != 40960 || m["size"].(float64) != 522653767 {
			t.Errorf("ps model %v", m)
		}
		exp, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
		if err != nil || !exp.After(time.Now()) {
			t.Errorf("expires_at %v %v", m["expires_at"], err)
		}
		s.SetLoaded([]string{"stories", "tagless"})
		v = getJSON(t, s.URL+"/api/ps")
		var names []string
		for _, x := range v["models"].([]any) {
			names = append(names, x.(map[string]any)["name"].(string))
		}
		if !slices.Equal(names, []string{"stories:latest", "tagless:latest"}) {
			t.Errorf("after SetLoaded: %q", names)
		}
		s.SetLoaded(nil)
		if v := getJSON(t, s.URL+"/api/ps"); len(v["models"].([]any)) != 0 {
			t.Errorf("after SetLoaded(nil): %v", v)
		}
	})
}

func TestSetModels(t *testing.T) {
	s := newTestServer(t, Config{Models: []Model{{Name: "stories"}}})
	tagNames := func() []string {
		var names []string
		for _, x := range getJSON(t, s.URL+"/api/tags")["models"].([]any) {
			names = append(names, x.(map[string]any)["name"].(string))
		}
		return names
	}
	status := func(model string) int {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat",
			fmt.Sprintf(`{"model":%q,"stream":false,"messages":[{"role":"user","content":"x"}]}`, model))
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if got := tagNames(); !slices.Equal(got, []string{"stories:latest"}) {
		t.Fatalf("tags %q", got)
	}
	if status("llama3.2:3b") != 404 {
		t.Fatal("llama3.2:3b found before pull")
	}
	s.SetModels([]Model{{Name: "stories"}, {Name: "llama3.2:3b", Size: 2019393189}})
	if got := tagNames(); !slices.Equal(got, []string{"stories:latest", "llama3.2:3b"}) {
		t.Fatalf("tags after pull %q", got)
	}
	if status("llama3.2:3b") != 200 {
		t.Fatal("pulled model not served")
	}
	s.SetModels([]Model{{Name: "llama3.2:3b"}})
	if got := tagNames(); !slices.Equal(got, []string{"llama3.2:3b"}) {
		t.Fatalf("tags after remove %q", got)
	}
	if status("stories") != 404 {
		t.Fatal("removed model still served")
	}
	s.SetModels(nil)
	if got := getJSON(t, s.URL+"/api/tags")["models"].([]any); len(got) != 0 {
		t.Fatalf("tags after removing all %v (must be [] not null)", got)
	}
}

func TestRequestsRecorded(t *testing.T) {
	s := newTestServer(t, Config{})
	body := `{"model":"qwen3:0.6b","messages":[{"role":"System","content":"be brief"},` +
		`{"role":"user","content":"look","images":["aGVsbG8="]},` +
		`{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get","arguments":{"q":1}}}]},` +
		`{"role":"tool","content":"42","tool_name":"get"}],` +
		`"stream":false,"think":true,"keep_alive":"10m","options":{"temperature":0.2,"num_ctx":4096,"stop":["x"]},` +
		`"tools":[{"type":"function","function":{"name":"get"}}],"format":"json","x_extra":null}`
	resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat", body)
	io.Copy(io.Discard, resp.Body)
	do(t, waitCtx(t), "POST", s.URL+"/api/generate", `{"model":"stories","prompt":"p","raw":true}`).Body.Close()
	do(t, waitCtx(t), "POST", s.URL+"/api/chat", `{"model":"nope","messages":[]}`).Body.Close()

	reqs := s.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests recorded", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/api/chat" || r.Model != "qwen3:0.6b" || r.Stream == nil || *r.Stream || string(r.Think) != "true" ||
		string(r.KeepAlive) != `"10m"` || r.Options["temperature"] != 0.2 || r.Options["num_ctx"] != float64(4096) ||
		string(r.Format) != `"json"` || !strings.Contains(string(r.Tools), `"name":"get"`) {
		t.Errorf("request %+v", r)
	}
	wantKeys := []string{"format", "keep_alive", "messages", "model", "options", "stream", "think", "tools", "x_extra"}
	var gotKeys []string
	for k := range r.Raw {
		gotKeys = append(gotKeys, k)
	}
	sort.Strings(gotKeys)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("raw keys %q", gotKeys)
	}
	if len(r.Messages) != 4 || r.Messages[0].Role != "system" || r.Messages[1].Images[0] != "aGVsbG8=" ||
		r.Messages[2].ToolCalls[0].Function.Name != "get" || string(r.Messages[2].ToolCalls[0].Function.Arguments) != `{"q":1}` ||
		r.Messages[3].ToolName != "get" {
		t.Errorf("messages %+v", r.Messages)
	}
	g := reqs[1]
	if g.Path != "/api/generate" || g.Prompt != "p" || g.Stream != nil || string(g.Raw["raw"]) != "true" {
		t.Errorf("generate request %+v", g)
	}
	if reqs[2].Model != "nope" {
		t.Errorf("unknown-model request not recorded: %+v", reqs[2])
	}

	// Requests returns a copy.
	reqs[0].Model = "changed"
	if s.Requests()[0].Model != "qwen3:0.6b" {
		t.Error("Requests did not return a copy")
	}
}

func TestNoRecord(t *testing.T) {
	s := newTestServer(t, Config{NoRecord: true})
	resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat", `{"model":"stories","messages":[{"role":"user","content":"x"}]}`)
	io.Copy(io.Discard, resp.Body)
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests recorded with NoRecord", n)
	}
	select {
	case r := <-s.Started():
		if r.Model != "stories" {
			t.Errorf("started %+v", r)
		}
	default:
		t.Error("Started not signalled with NoRecord")
	}
}

func TestSetRespond(t *testing.T) {
	s := newTestServer(t, Config{})
	content := func() string {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat", `{"model":"stories","stream":false,"messages":[{"role":"user","content":"a"}]}`)
		b, _ := io.ReadAll(resp.Body)
		return *decodeLine(t, b).Message.Content
	}
	if got := content(); got != "Echo: a" {
		t.Errorf("default %q", got)
	}
	s.SetRespond(func(r ChatRequest) Reply { return Reply{Tokens: []string{"custom"}} })
	if got := content(); got != "custom" {
		t.Errorf("custom %q", got)
	}
	s.SetRespond(nil)
	if got := content(); got != "Echo: a" {
		t.Errorf("restored %q", got)
	}
}

func TestDefaultRespond(t *testing.T) {
	tests := []struct {
		req  ChatRequest
		want []string
	}{
		{ChatRequest{Path: "/api/chat", Messages: []Message{{Role: "user", Content: "first"}, {Role: "assistant", Content: "no"},
			{Role: "user", Content: " hello \n big\tworld "}, {Role: "tool", Content: "ignored"}}},
			[]string{"Echo: ", "hello", " big", " world"}},
		{ChatRequest{Path: "/api/chat"}, []string{"Echo: "}},
		{ChatRequest{Path: "/api/generate", Prompt: "one two"}, []string{"Echo: ", "one", " two"}},
	}
	for _, tc := range tests {
		got := DefaultRespond(tc.req)
		if !slices.Equal(got.Tokens, tc.want) || got.DoneReason != "stop" || got.Status != 0 {
			t.Errorf("DefaultRespond(%+v) = %+v, want tokens %q", tc.req, got, tc.want)
		}
	}
}

// waitFor waits for one value on ch, failing the test after a deadline.
func waitFor[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestCancellation(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		reply Reply
		// readFirst: the client reads this many lines before canceling
		// (proving they were flushed while the server still works).
		readFirst int
	}{
		{name: "hang after tokens", reply: Reply{Thinking: []string{"t"}, Tokens: []string{"a", "b"}, Hang: true}, readFirst: 3},
		{name: "hang before first token", reply: Reply{Hang: true}},
		{name: "long delay", reply: Reply{Tokens: []string{"a", "b"}, Delay: time.Hour}},
		{name: "hang after one token", reply: Reply{Tokens: []string{"a"}, Hang: true}, readFirst: 1},
		{name: "hang no stream", body: `"stream":false,`, reply: Reply{Tokens: []string{"a"}, Hang: true}},
		{name: "delay no stream", body: `"stream":false,`, reply: Reply{Tokens: []string{"a"}, Delay: time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.reply
			s := newTestServer(t, Config{Respond: func(ChatRequest) Reply { return rep }})
			ctx, cancel := context.WithCancel(waitCtx(t))
			defer cancel()
			body := fmt.Sprintf(`{"model":"stories",%s"messages":[{"role":"user","content":"x"}]}`, tc.body)
			errc := make(chan error, 1)
			lines := make(chan []byte, 16)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/api/chat", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errc <- err
					return
				}
				defer resp.Body.Close()
				br := bufio.NewReader(resp.Body)
				for {
					b, err := br.ReadBytes('\n')
					if err != nil {
						errc <- err
						return
					}
					lines <- b
				}
			}()
			waitFor(t, s.Started(), "request start")
			for i := 0; i < tc.readFirst; i++ {
				decodeLine(t, waitFor(t, lines, "a flushed line"))
			}
			if s.Active() != 1 {
				t.Errorf("Active() = %d while serving", s.Active())
			}
			cancel()
			waitFor(t, s.CanceledCh(), "cancellation")
			if s.Canceled() != 1 || s.Active() != 0 {
				t.Errorf("Canceled() = %d, Active() = %d", s.Canceled(), s.Active())
			}
			if err := waitFor(t, errc, "client error"); !errors.Is(err, context.Canceled) {
				t.Errorf("client error %v", err)
			}
		})
	}
}

func TestCompletedRequestsAreNotCanceled(t *testing.T) {
	s := newTestServer(t, Config{})
	for i := 0; i < 5; i++ {
		resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat", `{"model":"stories","messages":[{"role":"user","content":"a b c"}]}`)
		readLines(t, resp.Body)
	}
	if s.Canceled() != 0 || s.Active() != 0 {
		t.Errorf("Canceled() = %d, Active() = %d", s.Canceled(), s.Active())
	}
	select {
	case <-s.CanceledCh():
		t.Error("CanceledCh signalled for completed requests")
	default:
	}
}

func TestCloseWhileHanging(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			s := NewServer(Config{Models: testModels, Respond: func(ChatRequest) Reply {
				return Reply{Tokens: []string{"a"}, Hang: true}
			}})
			defer s.Close()
			const n = 3
			errc := make(chan error, n)
			for i := 0; i < n; i++ {
				go func() {
					resp, err := http.Post(s.URL+"/api/chat", "application/json",
						strings.NewReader(fmt.Sprintf(`{"model":"stories","stream":%v,"messages":[{"role":"user","content":"x"}]}`, stream)))
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					errc <- err
				}()
			}
			for i := 0; i < n; i++ {
				waitFor(t, s.Started(), "request start")
			}
			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			waitFor(t, closed, "Close to return")
			for i := 0; i < n; i++ {
				waitFor(t, errc, "client to finish")
			}
			if s.Active() != 0 || s.Canceled() != 0 {
				t.Errorf("after Close: Active() = %d, Canceled() = %d", s.Active(), s.Canceled())
			}
			s.Close() // idempotent
		})
	}
}

func TestNewHandler(t *testing.T) {
	s := NewHandler(Config{Models: testModels})
	if s.URL != "" {
		t.Errorf("URL %q", s.URL)
	}
	var h http.Handler = s
	ts := httptest.NewServer(h)
	defer ts.Close()
	resp := do(t, waitCtx(t), "POST", ts.URL+"/api/chat", `{"model":"stories","messages":[{"role":"user","content":"hi there"}]}`)
	lines := readLines(t, resp.Body)
	if len(lines) != 4 || !*lines[3].Done {
		t.Fatalf("lines %+v", lines)
	}

	// Close ends hanging requests of a handler served elsewhere, so the
	// caller's own server can shut down.
	s.SetRespond(func(ChatRequest) Reply { return Reply{Hang: true} })
	go func() {
		resp, err := http.Post(ts.URL+"/api/chat", "application/json",
			strings.NewReader(`{"model":"stories","messages":[{"role":"user","content":"x"}]}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, s.Started(), "start")
	waitFor(t, s.Started(), "start")
	s.Close()
	done := make(chan struct{})
	go func() { ts.Close(); close(done) }()
	waitFor(t, done, "httptest server to close")
}

func TestConcurrent(t *testing.T) {
	s := newTestServer(t, Config{Respond: func(r ChatRequest) Reply {
		return Reply{Tokens: strings.Fields(r.Messages[0].Content), Delay: time.Millisecond}
	}})
	const n = 32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("w%d x%d y%d", i, i, i)
			resp := do(t, waitCtx(t), "POST", s.URL+"/api/chat",
				fmt.Sprintf(`{"model":"stories","messages":[{"role":"user","content":%q}]}`, want))
			lines := readLines(t, resp.Body)
			var got []string
			for _, l := range lines[:len(lines)-1] {
				got = append(got, *l.Message.Content)
			}
			if strings.Join(got, " ") != want {
				t.Errorf("got %q want %q", got, want)
			}
		}()
	}
	// Exercise setters concurrently with serving (for the race detector).
	for i := 0; i < 10; i++ {
		s.SetLoaded([]string{"stories"})
		s.SetModels(testModels)
		_ = s.Requests()
		_ = s.Active()
	}
	wg.Wait()
	if len(s.Requests()) != n || s.Active() != 0 || s.Canceled() != 0 {
		t.Errorf("requests %d active %d canceled %d", len(s.Requests()), s.Active(), s.Canceled())
	}
}

func TestParseParamCount(t *testing.T) {
	for in, want := range map[string]int64{"260K": 260000, "3.2B": 3200000000, "751.63M": 751630000, "7b": 7000000000, "12": 12, "x": 0} {
		if got := parseParamCount(in); got != want {
			t.Errorf("parseParamCount(%q) = %d, want %d", in, got, want)
		}
	}
}
