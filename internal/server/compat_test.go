package server

// The fixture of the compat dialect tests: a router (hub, dispatch, API)
// on a loopback httptest server, a real node agent (internal/agent) dialing
// it over a real WebSocket, and a fake Ollama (ollamatest) behind the
// agent. Every wait has a deadline; nothing sleeps to synchronise.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/jsonscan"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// compatNodeID must never reach a consumer.
const compatNodeID = "node-compat-secret-7f3a"

// compatSetup is what a test may change before the router starts.
type compatSetup struct {
	hub      hub.Config
	server   Config
	dispatch dispatch.Config
	node     agent.Config
	ollama   ollamatest.Config
}

type compatEnv struct {
	t      *testing.T
	url    string
	client *http.Client
	api    *Server
	hub    *hub.Hub
	ollama *ollamatest.Server
}

// compatClock is a clock that stands still, so that answers carry fixed
// timestamps and durations (goldens).
func compatClock() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC) }

func compatModels() []ollamatest.Model {
	return []ollamatest.Model{
		{Name: "stories:latest", Size: 1_185_376, Family: "llama", ParameterSize: "260K", Quantization: "F32", ContextLength: 512,
			Capabilities: []string{"completion"}},
		{Name: "qwen3:0.6b", Size: 522_000_000, Family: "qwen3", ParameterSize: "751.63M", Quantization: "Q4_K_M", ContextLength: 40960,
			Capabilities: []string{"completion", "tools", "thinking"}},
	}
}

// newCompatEnv starts Ollama (fake), router and node and waits until the
// node has registered. Rate limits are off unless a test sets them.
func newCompatEnv(t *testing.T, opts ...func(*compatSetup)) *compatEnv {
	t.Helper()
	in, err := filter.NewInbound(filter.DefaultInboundPatterns())
	if err != nil {
		t.Fatal(err)
	}
	out, err := filter.NewOutbound(filter.DefaultOutboundPatterns())
	if err != nil {
		t.Fatal(err)
	}
	cfg := compatSetup{
		server: Config{
			MaxMessages: wire.MaxMessages, MaxMessageLength: wire.MaxMessageChars, MaxTotalChars: wire.MaxTotalChars,
			MaxBodyBytes: wire.MaxFrameBytes, MaxConcurrentChatPerIP: 0, Inbound: in,
		},
		hub:      hub.Config{MaxNodesPerIP: -1},
		dispatch: dispatch.Config{Outbound: out, SystemPrompt: "SAFETY"},
		node:     agent.Config{NodeID: compatNodeID, MaxConcurrent: 4},
		// A modern Ollama: think levels reach it as sent (an older one gets true).
		ollama: ollamatest.Config{Models: compatModels(), Version: "0.12.0"},
	}
	for _, o := range opts {
		o(&cfg)
	}
	e := &compatEnv{t: t}
	e.ollama = ollamatest.NewServer(cfg.ollama)
	t.Cleanup(e.ollama.Close)
	h := hub.New(cfg.hub)
	d := dispatch.New(cfg.dispatch, h)
	e.api, e.hub = New(cfg.server, h, d, nil), h
	srv := httptest.NewServer(e.api)
	e.url, e.client = srv.URL, srv.Client()

	ncfg := cfg.node
	ncfg.Server = srv.URL
	ncfg.Ollama = &ollama.Client{BaseURL: e.ollama.URL}
	a, err := agent.New(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("node agent did not stop")
		}
		e.api.Drain()
		h.Close()
		srv.Close()
	})
	compatEventually(t, "node registration", func() bool { return h.NodeCount() == 1 })
	return e
}

// compatEventually polls cond until it holds or 5 s passed.
func compatEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// do sends a request and reads the whole answer.
func (e *compatEnv) do(method, path string, body any, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp, b
}

func (e *compatEnv) post(path string, body any, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(http.MethodPost, path, body, header...)
}

// lastRequest is the last request the fake Ollama received.
func (e *compatEnv) lastRequest() ollamatest.ChatRequest {
	e.t.Helper()
	reqs := e.ollama.Requests()
	if len(reqs) == 0 {
		e.t.Fatal("Ollama received no request")
	}
	return reqs[len(reqs)-1]
}

var (
	compatChatID = regexp.MustCompile(`chatcmpl-[0-9a-f]{24}`)
	compatCallID = regexp.MustCompile(`call_[0-9a-f]{24}`)
)

// normalizeCompat replaces the random ids. (Timestamps and durations are
// fixed by compatClock.)
func normalizeCompat(b []byte) []byte {
	b = compatChatID.ReplaceAll(b, []byte("chatcmpl-ID"))
	return compatCallID.ReplaceAll(b, []byte("call_ID"))
}

// checkGolden compares got with testdata/compat/name.golden; with
// IDLECLAW_UPDATE_GOLDEN=1 it rewrites the file.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	got = normalizeCompat(got)
	path := filepath.Join("testdata", "compat", name+".golden")
	if os.Getenv("IDLECLAW_UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with IDLECLAW_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: wire bytes differ from the golden file\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// sseData returns the payloads of a server-sent event stream's data lines
// (comments dropped), checking the framing on the way.
func sseData(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	blank := true
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			blank = true
		case strings.HasPrefix(line, ": "):
		case strings.HasPrefix(line, "data: "):
			if !blank {
				t.Fatalf("two data lines in one event: %q", body)
			}
			blank = false
			out = append(out, strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return out
}

// ndjsonLines decodes every line of an NDJSON body.
func ndjsonLines(t *testing.T, body []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.SplitAfter(string(body), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("NDJSON line without newline: %q", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("NDJSON line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// noSecrets fails if an answer shows the node's id, an address or the fake
// Ollama's internal error text.
func noSecrets(t *testing.T, body []byte) {
	t.Helper()
	for _, s := range []string{compatNodeID, "127.0.0.1", "internal-boom", "ollama_error"} {
		if bytes.Contains(body, []byte(s)) {
			t.Errorf("answer shows %q: %s", s, body)
		}
	}
}

// toolRespond answers like a model with one tool: it calls get_weather
// while no tool result is in the conversation, then answers with the
// result it was given.
func toolRespond(req ollamatest.ChatRequest) ollamatest.Reply {
	var last *ollamatest.Message
	if n := len(req.Messages); n > 0 {
		last = &req.Messages[n-1]
	}
	if len(req.Tools) > 0 && (last == nil || last.Role != "tool") {
		return ollamatest.Reply{ToolCalls: [][]ollamatest.ToolCall{{{Function: ollamatest.ToolCallFunction{
			Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris",
 "unit": "celsius"}`)}}}}}
	}
	if last != nil && last.Role == "tool" {
		return ollamatest.Reply{Tokens: []string{"It is ", last.Content, " in Paris."}}
	}
	return ollamatest.DefaultRespond(req)
}

// TestCompatWorstCaseFitsOneFrame: the largest requests the decoders
// accept (every character escaped to six bytes, the extras budget full)
// still fit in one node frame; a little more is refused.
func TestCompatWorstCaseFitsOneFrame(t *testing.T) {
	t.Parallel()
	lim := Limits{MaxMessages: wire.MaxMessages, MaxMessageLength: wire.MaxMessageChars, MaxTotalChars: wire.MaxTotalChars}
	worst := func(descLen int, openAI bool) []byte {
		var msgs []any
		for range wire.MaxTotalChars / wire.MaxMessageChars {
			msgs = append(msgs, map[string]any{"role": "user", "content": strings.Repeat("<", wire.MaxMessageChars)})
		}
		args := any(map[string]any{"a": "&&&&"})
		if openAI {
			args = `{"a":"&&&&"}`
		}
		var calls []any
		for range 100 {
			calls = append(calls, map[string]any{"type": "function", "function": map[string]any{"name": strings.Repeat("f", 64), "arguments": args}})
		}
		msgs = append(msgs, map[string]any{"role": "assistant", "content": "", "tool_calls": calls})
		tools := []any{map[string]any{"type": "function", "function": map[string]any{"name": "f", "description": strings.Repeat(">", descLen)}}}
		b, err := json.Marshal(map[string]any{"model": "m", "messages": msgs, "tools": tools})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Six bytes per '>' once escaped: this fills the extras budget.
	fits := (maxCompatExtraBytes - 100*(2*msgOverhead+64+30) - 200) / 6
	for _, openAI := range []bool{true, false} {
		dec := func(b []byte) (dispatch.Request, *RequestError) {
			if openAI {
				r, rerr := DecodeOpenAIRequest(b, lim)
				return r.Chat, rerr
			}
			r, rerr := DecodeOllamaChatRequest(b, lim)
			return r.Chat, rerr
		}
		r, rerr := dec(worst(fits, openAI))
		if rerr != nil {
			t.Fatalf("openAI=%v: refused: %s", openAI, rerr.Detail)
		}
		checkAccepted(t, r, lim)
		if _, rerr := dec(worst(fits+1000, openAI)); rerr == nil || !strings.Contains(rerr.Detail, "exceed") {
			t.Fatalf("openAI=%v: over the budget accepted: %v", openAI, rerr)
		}
	}
}

// discardWriter is a ResponseWriter that drops what it is given and can be
// flushed.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkCompatWriters measures the per-token cost of each dialect's
// event writer: it must not allocate.
func BenchmarkCompatWriters(b *testing.B) {
	ev := dispatch.Event{Kind: dispatch.Content, Text: ` a token with "quotes"`}
	b.Run("openai", func(b *testing.B) {
		st := newOpenAIStream(&discardWriter{h: http.Header{}}, "chatcmpl-0123456789abcdef01234567", 1700000000, "llama3.2:3b", true)
		b.ReportAllocs()
		for b.Loop() {
			if err := st.event(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ollama", func(b *testing.B) {
		w := &discardWriter{h: http.Header{}}
		e := &ollamaWriter{w: w, out: newStreamOut(w, "application/x-ndjson"), stream: true, now: time.Now, start: time.Now(), buf: make([]byte, 0, 512)}
		e.head = append(jsonscan.AppendString([]byte(`{"model":`), "llama3.2:3b", false), `,"created_at":"`...)
		b.ReportAllocs()
		for b.Loop() {
			if err := e.event(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
