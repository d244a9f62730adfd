package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

func TestNodeURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"https://api.idleclaw.com", "wss://api.idleclaw.com/ws/node", false},
		{"https://api.idleclaw.com/", "wss://api.idleclaw.com/ws/node", false},
		{"http://localhost:8000", "ws://localhost:8000/ws/node", false},
		{"HTTP://Router:8000", "ws://Router:8000/ws/node", false},
		{"https://example.com/idleclaw", "wss://example.com/idleclaw/ws/node", false},
		{"https://example.com/ws/node", "wss://example.com/ws/node", false},
		{"ws://localhost:8000/ws/node", "ws://localhost:8000/ws/node", false},
		{"wss://example.com/ws/node/", "wss://example.com/ws/node", false},
		{"wss://example.com", "wss://example.com/ws/node", false},
		{"wss://example.com/custom/link", "wss://example.com/custom/link", false},
		{"http://[::1]:8000", "ws://[::1]:8000/ws/node", false},
		{"  https://api.idleclaw.com  ", "wss://api.idleclaw.com/ws/node", false},
		{"", "", true},
		{"api.idleclaw.com", "", true},
		{"localhost:8000", "", true},
		{"ftp://example.com", "", true},
		{"https://", "", true},
		{"https:///path", "", true},
		{"https://user:pw@example.com", "", true},
		{"http://exa mple.com", "", true},
	}
	for _, tt := range tests {
		got, err := NodeURL(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NodeURL(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	seq := func(b Backoff, rnd float64, n int) []time.Duration {
		var out []time.Duration
		for i := range n {
			out = append(out, b.Delay(i, func() float64 { return rnd }))
		}
		return out
	}
	s := time.Second
	// No jitter: 1 s doubling to 60 s.
	if got, want := seq(Backoff{Jitter: NoJitter}, 0.5, 9), []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s, 60 * s}; !slices.Equal(got, want) {
		t.Errorf("no jitter = %v, want %v", got, want)
	}
	// Equal jitter (the default): half plus rnd times the other half.
	if got, want := seq(Backoff{}, 0, 4), []time.Duration{s / 2, s, 2 * s, 4 * s}; !slices.Equal(got, want) {
		t.Errorf("equal jitter rnd=0 = %v, want %v", got, want)
	}
	if got, want := seq(Backoff{}, 0.5, 8), []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * s, 6 * s, 12 * s, 24 * s, 45 * s, 45 * s}; !slices.Equal(got, want) {
		t.Errorf("equal jitter rnd=0.5 = %v, want %v", got, want)
	}
	// After the router went away: a uniform part of Restart, 10 × Initial by default.
	half := func() float64 { return 0.5 }
	if got := (Backoff{}).RestartDelay(half); got != 5*s {
		t.Errorf("restart delay (default) = %v, want 5s", got)
	}
	if got := (Backoff{Initial: 10 * time.Millisecond}).RestartDelay(half); got != 50*time.Millisecond {
		t.Errorf("restart delay (Initial 10ms) = %v, want 50ms", got)
	}
	if got := (Backoff{Restart: 4 * s}).RestartDelay(half); got != 2*s {
		t.Errorf("restart delay (Restart 4s) = %v, want 2s", got)
	}
	// Full jitter: rnd times the delay.
	if got, want := seq(Backoff{Jitter: FullJitter}, 0.25, 8), []time.Duration{s / 4, s / 2, s, 2 * s, 4 * s, 8 * s, 15 * s, 15 * s}; !slices.Equal(got, want) {
		t.Errorf("full jitter = %v, want %v", got, want)
	}
	// Custom bounds; a huge attempt number does not overflow.
	b := Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond, Jitter: NoJitter}
	if got, want := seq(b, 0, 4), []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("custom = %v, want %v", got, want)
	}
	if d := (Backoff{}).Delay(1<<30, func() float64 { return 0.999 }); d <= 0 || d > time.Minute {
		t.Errorf("Delay(huge) = %v", d)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "1 KB", 1185376: "1.2 MB", 2019393189: "2.0 GB",
		19_000_000_000: "19 GB", 42_500_000_000: "42 GB", 1_500_000_000_000: "1.5 TB",
	} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAgentRegisterAndHeartbeat(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Version: "0.9.6",
		Models: []ollamatest.Model{
			storiesModel,
			{Name: "qwen3:0.6b", Size: 522_000_000, Capabilities: []string{"completion", "tools", "thinking"},
				Family: "qwen3", ParameterSize: "751.63M", Quantization: "Q4_K_M", ContextLength: 40960, Digest: strings.Repeat("ab", 32)},
		},
		Loaded: []string{"qwen3:0.6b"},
	}, func(c *Config) {
		c.HeartbeatInterval = 30 * time.Millisecond
		c.MaxConcurrent = 3
	})
	rc, reg := h.connect(t)

	if ua := rc.header.Get("User-Agent"); ua != "idleclaw-go/test" {
		t.Errorf("User-Agent = %q", ua)
	}
	if p := rc.header.Get("Sec-WebSocket-Protocol"); p != "" {
		t.Errorf("the agent asked for subprotocol %q", p)
	}
	var r wire.Register
	if err := json.Unmarshal(reg.raw, &r); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^node-[0-9a-f]{16}$`).MatchString(r.NodeID) || r.NodeID != h.agent.NodeID() {
		t.Errorf("node_id = %q (agent %q)", r.NodeID, h.agent.NodeID())
	}
	if r.MaxConcurrent != 3 || r.OllamaVersion != "0.9.6" || r.Protocol != wire.ProtocolVersion || r.Agent != "idleclaw-go/test" {
		t.Errorf("register = %+v", r)
	}
	// v1 fields are present under their exact names.
	for _, k := range []string{"type", "node_id", "models", "max_concurrent", "ollama_version"} {
		if _, ok := reg.m[k]; !ok {
			t.Errorf("register lacks %q: %s", k, reg.raw)
		}
	}
	want := []wire.Model{
		{Name: "qwen3:0.6b", Size: 522_000_000, Digest: strings.Repeat("ab", 32), Capabilities: []string{"completion", "tools", "thinking"},
			Quantization: "Q4_K_M", ParameterSize: "751.63M", ContextLength: 40960, Family: "qwen3"},
		{Name: "stories:latest", Size: 1185376, Capabilities: []string{"completion"}, Quantization: "F32", ParameterSize: "260K", ContextLength: 512, Family: "llama"},
	}
	if len(r.Models) != 2 {
		t.Fatalf("models = %+v", r.Models)
	}
	want[1].Digest = r.Models[1].Digest // derived by the fake
	for i := range want {
		g := r.Models[i]
		if fmt.Sprint(g) != fmt.Sprint(want[i]) || g.Digest == "" {
			t.Errorf("model %d = %+v, want %+v", i, g, want[i])
		}
	}

	hb := rc.expect(t, wire.TypeHeartbeat)
	var got wire.Heartbeat
	if err := json.Unmarshal(hb.raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.NodeID != r.NodeID || got.ActiveRequests != 0 || !got.Available || !slices.Equal(got.LoadedModels, []string{"qwen3:0.6b"}) {
		t.Errorf("heartbeat = %s", hb.raw)
	}
	if _, ok := hb.m["available"]; !ok {
		t.Errorf("heartbeat lacks available: %s", hb.raw)
	}
	// More heartbeats follow at the interval.
	rc.expect(t, wire.TypeHeartbeat)
	rc.expect(t, wire.TypeHeartbeat)

	out := h.out.String()
	for _, s := range []string{h.router.srv.URL[len("http://"):] + "/ws/node", h.fake.URL, "stories:latest  1.2 MB", "qwen3:0.6b      522 MB", "connected"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestAgentTooManyModels(t *testing.T) {
	var models []ollamatest.Model
	for i := range 25 {
		models = append(models, ollamatest.Model{Name: fmt.Sprintf("m%02d:latest", i), Size: int64(1000 + i)})
	}
	h := newHarness(t, ollamatest.Config{Models: models}, nil)
	_, reg := h.connect(t)
	var r wire.Register
	if err := json.Unmarshal(reg.raw, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Models) != wire.MaxModelsPerNode || r.Models[0].Name != "m24:latest" || r.Models[19].Name != "m05:latest" {
		var names []string
		for _, m := range r.Models {
			names = append(names, m.Name)
		}
		t.Errorf("offered %d models: %v", len(r.Models), names)
	}
}

func TestAgentWaitsForRegistered(t *testing.T) {
	fr := newFakeRouter(t)
	fr.silent.Store(true)
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	t.Cleanup(fake.Close)
	a, err := New(Config{
		Server: fr.srv.URL, Ollama: &ollama.Client{BaseURL: fake.URL},
		HeartbeatInterval: 10 * time.Millisecond, RegisterTimeout: 200 * time.Millisecond,
		Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	rc := fr.next(t)
	rc.expect(t, wire.TypeRegister)
	// Without "registered" the agent sends nothing more, gives up and
	// reconnects with the same node id.
	code, _ := rc.waitClosed(t)
	if code != websocket.StatusPolicyViolation {
		t.Errorf("close code = %d", code)
	}
	for len(rc.frames) > 0 {
		if f := <-rc.frames; f.typ() != wire.TypeRegister {
			t.Errorf("frame before registered: %s", f.raw)
		}
	}
	rc2 := fr.next(t)
	reg := rc2.expect(t, wire.TypeRegister)
	if reg.str("node_id") != a.NodeID() {
		t.Errorf("node id changed: %q vs %q", reg.str("node_id"), a.NodeID())
	}
	// Once registered, heartbeats flow.
	fr.silent.Store(false)
	rc2.send(t, wire.Registered{Type: wire.TypeRegistered, NodeID: a.NodeID()})
	rc2.expect(t, wire.TypeHeartbeat)
}

// allowed lists the keys a node frame may carry, per object.
var allowed = map[string][]string{
	"frame":   {"type", "request_id", "chunk", "error"},
	"chunk":   {"message", "done", "done_reason", "eval_count", "eval_duration", "prompt_eval_count", "prompt_eval_duration", "load_duration", "total_duration"},
	"message": {"role", "content", "thinking", "tool_calls"},
}

func checkKeys(t *testing.T, what string, m map[string]any) {
	t.Helper()
	for k := range m {
		if !slices.Contains(allowed[what], k) {
			t.Errorf("%s carries key %q", what, k)
		}
	}
}

func TestAgentRelay(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{
				Thinking: []string{"SECRET-THOUGHT"},
				Tokens:   []string{"SECRET-", "ANSWER"},
				ToolCalls: [][]ollamatest.ToolCall{{{ID: "call_1", Function: ollamatest.ToolCallFunction{
					Name: "web_search", Arguments: json.RawMessage(`{"query":"go"}`)}}}},
			}
		},
	}, nil)
	rc, _ := h.connect(t)
	params := map[string]any{
		"model":      "stories", // lenient: means stories:latest
		"messages":   []map[string]string{{"role": "system", "content": "be brief"}, {"role": "user", "content": "SECRET-PROMPT"}},
		"think":      true,
		"keep_alive": "5m",
		"options":    map[string]any{"temperature": 0.2},
		"raw":        true,
		"template":   "{{ .Prompt }}",
		"images":     []string{},
	}
	rc.request(t, "r1", params)

	var content, thinking strings.Builder
	var tools []any
	var last frame
	for {
		f := rc.expectFor(t, "r1")
		if f.typ() != wire.TypeInferenceChunk {
			t.Fatalf("unexpected frame %s", f.raw)
		}
		checkKeys(t, "frame", f.m)
		chunk := f.m["chunk"].(map[string]any)
		checkKeys(t, "chunk", chunk)
		msg := chunk["message"].(map[string]any)
		checkKeys(t, "message", msg)
		if msg["role"] != "assistant" {
			t.Errorf("role = %v", msg["role"])
		}
		c, _ := msg["content"].(string)
		th, _ := msg["thinking"].(string)
		content.WriteString(c)
		thinking.WriteString(th)
		if tc, ok := msg["tool_calls"].([]any); ok {
			tools = append(tools, tc...)
		}
		if chunk["done"] == true {
			last = f
			break
		}
		if _, ok := chunk["eval_count"]; ok {
			t.Errorf("metrics on a non-final chunk: %s", f.raw)
		}
	}
	if content.String() != "SECRET-ANSWER" || thinking.String() != "SECRET-THOUGHT" {
		t.Errorf("content %q thinking %q", content.String(), thinking.String())
	}
	if len(tools) != 1 {
		t.Fatalf("tool calls = %v", tools)
	}
	fn := tools[0].(map[string]any)["function"].(map[string]any)
	if fn["name"] != "web_search" || fn["arguments"].(map[string]any)["query"] != "go" {
		t.Errorf("tool call = %v", tools[0])
	}
	var fin wire.InferenceChunk
	if err := json.Unmarshal(last.raw, &fin); err != nil {
		t.Fatal(err)
	}
	if fin.Chunk.DoneReason != "stop" || fin.Chunk.EvalCount != 3 || fin.Chunk.EvalDuration <= 0 || fin.Chunk.PromptEvalCount <= 0 {
		t.Errorf("final chunk = %s", last.raw)
	}
	// The router's frame is accepted by the router-side decoder.
	if _, err := wire.DecodeNodeFrame(last.raw); err != nil {
		t.Errorf("router would refuse the final chunk: %v", err)
	}

	// Only whitelisted keys reached Ollama, stream forced on.
	reqs := h.fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("ollama got %d requests", len(reqs))
	}
	for k := range reqs[0].Raw {
		if !slices.Contains([]string{"model", "messages", "stream", "think", "keep_alive", "options", "tools", "format"}, k) {
			t.Errorf("ollama received key %q", k)
		}
	}
	if reqs[0].Stream == nil || !*reqs[0].Stream || string(reqs[0].Think) != "true" || string(reqs[0].KeepAlive) != `"4m57s"` {
		t.Errorf("ollama request = %+v", reqs[0])
	}

	h.out.waitFor(t, "ok\n")
	line := h.out.String()
	if !regexp.MustCompile(`\d\d:\d\d:\d\d  stories  3 tokens in [0-9.]+ s(  [0-9.]+ tok/s)?  ok\n`).MatchString(line) {
		t.Errorf("output:\n%s", line)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"output": h.out.String(), "logs": h.logs.String()} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("%s contain prompt or answer text:\n%s", name, s)
		}
	}
}

func TestWhitelist(t *testing.T) {
	a, err := New(Config{Server: "http://x", Ollama: &ollama.Client{BaseURL: "http://o"}})
	if err != nil {
		t.Fatal(err)
	}
	cr := ollama.ChatResponse{
		Model: "m", Error: "",
		Message: ollama.Message{Role: "tool", Content: "c", Images: []string{"aGk="}, ToolName: "x",
			ToolCalls: []ollama.ToolCall{
				{Function: ollama.ToolFunction{Name: "a", Arguments: json.RawMessage(`{"k":1}`)}},
				{Function: ollama.ToolFunction{Name: "b", Arguments: json.RawMessage(`"str"`)}},
				{Function: ollama.ToolFunction{Name: "c"}},
			}},
		Done: false, DoneReason: "stop", Metrics: ollama.Metrics{EvalCount: 3},
	}
	b, err := json.Marshal(whitelist(cr, a, new(wire.ChunkMessage)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"message":{"role":"assistant","content":"c","tool_calls":[{"function":{"name":"a","arguments":{"k":1}}},{"function":{"name":"c","arguments":{}}}]},"done":false}`
	if string(b) != want {
		t.Errorf("chunk = %s\nwant    %s", b, want)
	}
	cr = ollama.ChatResponse{Message: ollama.Message{Role: "assistant"}, Done: true, DoneReason: "length", Metrics: ollama.Metrics{EvalCount: 3, EvalDuration: 9}}
	b, _ = json.Marshal(whitelist(cr, a, new(wire.ChunkMessage)))
	if want := `{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","eval_count":3,"eval_duration":9}`; string(b) != want {
		t.Errorf("final chunk = %s\nwant          %s", b, want)
	}
}

func TestAgentRefusals(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, nil)
	rc, _ := h.connect(t)
	many := make([]string, wire.MaxMessages+1)
	for i := range many {
		many[i] = "x"
	}
	long := strings.Repeat("é", wire.MaxMessageChars+1)
	var total []string
	for range 11 {
		total = append(total, strings.Repeat("y", 9_999))
	}
	tests := map[string]any{
		"unregistered model": chat("llama3.2:3b", "hi"),
		"too many messages":  chat("stories:latest", many...),
		"no messages":        chat("stories:latest"),
		"message too long":   chat("stories:latest", long),
		"total too long":     chat("stories:latest", total...),
		"bad role": map[string]any{"model": "stories:latest", "messages": []map[string]string{
			{"role": "user", "content": "hi"}, {"role": "developer", "content": "x"}}},
		"not an object":  []int{1, 2},
		"options array":  map[string]any{"model": "stories:latest", "messages": []map[string]string{{"role": "user", "content": "hi"}}, "options": []int{1}},
		"missing model":  map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}},
		"messages wrong": map[string]any{"model": "stories:latest", "messages": "hi"},
	}
	for name, params := range tests {
		id := "bad-" + strings.ReplaceAll(name, " ", "-")
		rc.request(t, id, params)
		f := rc.expectFor(t, id)
		if f.typ() != wire.TypeInferenceError || f.str("error") != wire.ErrInvalidRequest {
			t.Errorf("%s: frame %s", name, f.raw)
		}
		checkKeys(t, "frame", f.m)
	}
	if n := len(h.fake.Requests()); n != 0 {
		t.Errorf("ollama got %d requests", n)
	}
	// A malformed frame and an unknown type are ignored; the link lives on.
	rc.send(t, map[string]any{"type": "future_message", "x": 1})
	if err := rc.c.Write(context.Background(), websocket.MessageText, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	rc.request(t, "good", chat("stories:latest", "hi"))
	if f := rc.expectFor(t, "good"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("frame %s", f.raw)
	}
	h.out.waitFor(t, "error invalid_request")
}

func TestAgentConcurrencyLimit(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a"}, Hang: true}
		},
	}, func(c *Config) { c.MaxConcurrent = 2 })
	rc, _ := h.connect(t)
	for _, id := range []string{"r1", "r2"} {
		rc.request(t, id, chat("stories:latest", "hi"))
		if f := rc.expectFor(t, id); f.typ() != wire.TypeInferenceChunk {
			t.Fatalf("frame %s", f.raw)
		}
	}
	rc.request(t, "r3", chat("stories:latest", "hi"))
	f := rc.expectFor(t, "r3")
	if f.typ() != wire.TypeInferenceError || f.str("error") != wire.ErrOllamaUnavailable {
		t.Errorf("third request: %s", f.raw)
	}
	if n := h.fake.Active(); n != 2 {
		t.Errorf("ollama active = %d", n)
	}
	// Canceling one frees a slot.
	rc.send(t, wire.CancelRequest{Type: wire.TypeCancelRequest, RequestID: "r1"})
	select {
	case <-h.fake.CanceledCh():
	case <-time.After(waitTimeout):
		t.Fatal("cancel did not reach Ollama")
	}
	h.out.waitFor(t, "canceled")
	rc.request(t, "r4", chat("stories:latest", "hi"))
	if f := rc.expectFor(t, "r4"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("fourth request: %s", f.raw)
	}
}

func TestAgentCancel(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(r ollamatest.ChatRequest) ollamatest.Reply {
			if r.Messages[0].Content == "hang" {
				return ollamatest.Reply{Tokens: []string{"a"}, Hang: true}
			}
			return ollamatest.Reply{Tokens: []string{"b"}}
		},
	}, nil)
	rc, _ := h.connect(t)
	rc.request(t, "r1", chat("stories:latest", "hang"))
	rc.expectFor(t, "r1") // the first token
	rc.send(t, wire.CancelRequest{Type: wire.TypeCancelRequest, RequestID: "r1"})
	select {
	case <-h.fake.CanceledCh():
	case <-time.After(time.Second):
		t.Fatal("the Ollama request was not closed within 1 s of cancel_request")
	}
	h.out.waitFor(t, "canceled")
	// Nothing more is sent for r1: the next frames belong to r2.
	rc.request(t, "r2", chat("stories:latest", "go"))
	for {
		f := rc.expect(t, wire.TypeInferenceChunk, wire.TypeInferenceError)
		if f.str("request_id") == "r1" {
			t.Fatalf("frame for a canceled request: %s", f.raw)
		}
		if f.m["chunk"].(map[string]any)["done"] == true {
			break
		}
	}
	// A cancel for an unknown request is harmless.
	rc.send(t, wire.CancelRequest{Type: wire.TypeCancelRequest, RequestID: "nope"})
}

func TestAgentOllamaErrors(t *testing.T) {
	tests := []struct {
		name  string
		reply ollamatest.Reply
		code  string
	}{
		{"busy", ollamatest.Reply{Status: 503, Error: "server busy, please try again.  maximum pending requests exceeded"}, wire.ErrOllamaBusy},
		{"status 500", ollamatest.Reply{Status: 500, Error: "SECRET-LOCAL-PATH /home/me"}, wire.ErrOllamaError},
		{"bad request", ollamatest.Reply{Status: 400, Error: "invalid options"}, wire.ErrOllamaError},
		{"mid-stream", ollamatest.Reply{Tokens: []string{"a"}, Error: "SECRET-LOCAL-PATH broke"}, wire.ErrOllamaError},
	}
	h := newHarness(t, ollamatest.Config{}, nil)
	rc, _ := h.connect(t)
	for _, tt := range tests {
		h.fake.SetRespond(func(ollamatest.ChatRequest) ollamatest.Reply { return tt.reply })
		rc.request(t, tt.name, chat("stories:latest", "hi"))
		var f frame
		for f = rc.expectFor(t, tt.name); f.typ() == wire.TypeInferenceChunk; f = rc.expectFor(t, tt.name) {
		}
		if f.typ() != wire.TypeInferenceError || f.str("error") != tt.code {
			t.Errorf("%s: %s", tt.name, f.raw)
		}
		if strings.Contains(string(f.raw), "SECRET") {
			t.Errorf("%s: Ollama's error text reached the router: %s", tt.name, f.raw)
		}
		checkKeys(t, "frame", f.m)
	}
	h.out.waitFor(t, "error ollama_busy")
}

func TestAgentOllamaUnreachable(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, nil)
	rc, _ := h.connect(t)
	h.fake.Close() // Ollama goes away after the node registered
	rc.request(t, "r1", chat("stories:latest", "hi"))
	f := rc.expectFor(t, "r1")
	if f.typ() != wire.TypeInferenceError || f.str("error") != wire.ErrOllamaUnavailable {
		t.Errorf("frame %s", f.raw)
	}
}

func TestAgentModelsUpdate(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.ModelsPollInterval = 20 * time.Millisecond
		c.HeartbeatInterval = time.Hour
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat) // the one sent at registration

	h.fake.SetModels([]ollamatest.Model{storiesModel, {Name: "tiny:1m", Size: 5_000_000}})
	f := rc.expect(t, wire.TypeModelsUpdate)
	var mu wire.ModelsUpdate
	if err := json.Unmarshal(f.raw, &mu); err != nil {
		t.Fatal(err)
	}
	if len(mu.Models) != 2 || mu.Models[0].Name != "tiny:1m" || mu.Models[0].Size != 5_000_000 || len(mu.Models[0].Capabilities) == 0 {
		t.Errorf("models_update = %s", f.raw)
	}
	// The new model is served at once.
	rc.request(t, "r1", chat("tiny:1m", "hi"))
	if f := rc.expectFor(t, "r1"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("frame %s", f.raw)
	}

	// Every model removed: no empty models_update, but available:false.
	h.fake.SetModels(nil)
	f = rc.expect(t, wire.TypeHeartbeat, wire.TypeModelsUpdate)
	if f.typ() != wire.TypeHeartbeat || f.m["available"] != false {
		t.Fatalf("after removing every model: %s", f.raw)
	}
	// Models return: models_update, then available again.
	h.fake.SetModels([]ollamatest.Model{storiesModel})
	f = rc.expect(t, wire.TypeModelsUpdate, wire.TypeHeartbeat)
	if f.typ() != wire.TypeModelsUpdate || len(f.m["models"].([]any)) != 1 {
		t.Fatalf("after models returned: %s", f.raw)
	}
	f = rc.expect(t, wire.TypeHeartbeat)
	if f.m["available"] != true {
		t.Errorf("heartbeat %s", f.raw)
	}
	h.out.waitFor(t, "models changed")
}

func TestAgentReconnect(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a"}, Hang: true}
		},
	}, nil)
	rc, reg := h.connect(t)
	rc.request(t, "r1", chat("stories:latest", "hi"))
	rc.expectFor(t, "r1")

	// The router goes away with a reason: the in-flight request is
	// canceled, the reason logged, and the agent comes back as the same node.
	if err := rc.c.Close(websocket.StatusPolicyViolation, wire.CloseTooManyNodesFromIP); err != nil {
		t.Logf("close: %v", err)
	}
	select {
	case <-h.fake.CanceledCh():
	case <-time.After(waitTimeout):
		t.Fatal("the in-flight Ollama request was not canceled when the link was lost")
	}
	rc2, reg2 := h.connect(t)
	if reg2.str("node_id") != reg.str("node_id") {
		t.Errorf("node id changed across reconnect: %q → %q", reg.str("node_id"), reg2.str("node_id"))
	}
	h.logs.waitFor(t, "too many nodes from this IP")
	if !strings.Contains(h.logs.String(), "level=WARN") {
		t.Errorf("close reason not logged at warn:\n%s", h.logs.String())
	}

	// An abrupt drop (no close frame) also reconnects.
	rc2.c.CloseNow()
	rc3, reg3 := h.connect(t)
	if reg3.str("node_id") != reg.str("node_id") {
		t.Errorf("node id changed across reconnect")
	}
	rc3.request(t, "r2", chat("stories:latest", "hi"))
	rc3.expectFor(t, "r2")
}

func TestAgentDrain(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a", "b", "c", "d"}, Delay: 50 * time.Millisecond}
		},
	}, func(c *Config) { c.DrainGrace = waitTimeout })
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat) // registered and serving
	rc.request(t, "r1", chat("stories:latest", "hi"))
	<-h.fake.Started()

	h.cancel() // first Ctrl+C
	var content strings.Builder
	drainSeen, gotR2 := false, false
	handle := func(f frame) (done bool) {
		switch {
		case f.typ() == wire.TypeHeartbeat:
			if f.m["available"] == false && !drainSeen {
				drainSeen = true
				if f.m["active_requests"] != 1.0 {
					t.Errorf("drain heartbeat = %s", f.raw)
				}
				// New requests are refused while draining.
				rc.request(t, "r2", chat("stories:latest", "hi"))
			}
		case f.str("request_id") == "r2":
			if f.str("error") != wire.ErrOllamaUnavailable {
				t.Errorf("r2 during drain: %s", f.raw)
			}
			gotR2 = true
		case f.typ() == wire.TypeInferenceChunk:
			chunk := f.m["chunk"].(map[string]any)
			content.WriteString(chunk["message"].(map[string]any)["content"].(string))
			return chunk["done"] == true
		default:
			t.Errorf("unexpected frame during drain: %s", f.raw)
		}
		return false
	}
	// The in-flight request completes.
	for !handle(rc.expect(t, wire.TypeHeartbeat, wire.TypeInferenceChunk, wire.TypeInferenceError)) {
	}
	if !drainSeen {
		t.Error("no heartbeat with available:false before the request completed")
	}
	if content.String() != "abcd" {
		t.Errorf("content = %q", content.String())
	}
	code, reason := rc.waitClosed(t)
	if code != websocket.StatusNormalClosure || reason != "node shutting down" {
		t.Errorf("close = %d %q", code, reason)
	}
	if err := h.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	for len(rc.frames) > 0 {
		handle(<-rc.frames)
	}
	if !gotR2 {
		t.Error("r2 was not refused during drain")
	}
	if n := h.fake.Canceled(); n != 0 {
		t.Errorf("%d requests canceled during a graceful drain", n)
	}
}

func TestAgentDrainGraceOver(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a"}, Hang: true}
		},
	}, func(c *Config) { c.DrainGrace = 100 * time.Millisecond })
	rc, _ := h.connect(t)
	rc.request(t, "r1", chat("stories:latest", "hi"))
	rc.expectFor(t, "r1")
	h.cancel()
	select {
	case <-h.fake.CanceledCh():
	case <-time.After(waitTimeout):
		t.Fatal("the hanging request was not canceled after the grace")
	}
	f := rc.expect(t, wire.TypeInferenceError)
	if f.str("request_id") != "r1" || f.str("error") != wire.ErrOllamaUnavailable {
		t.Errorf("frame %s", f.raw)
	}
	if code, _ := rc.waitClosed(t); code != websocket.StatusNormalClosure {
		t.Errorf("close code %d", code)
	}
	if err := h.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestAgentStartupErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	a, err := New(Config{Server: "http://127.0.0.1:1", Ollama: &ollama.Client{BaseURL: dead}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrOllamaUnreachable) {
		t.Errorf("Run = %v, want ErrOllamaUnreachable", err)
	}

	empty := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{}})
	defer empty.Close()
	a, err = New(Config{Server: "http://127.0.0.1:1", Ollama: &ollama.Client{BaseURL: empty.URL, HTTP: &http.Client{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrNoModels) {
		t.Errorf("Run = %v, want ErrNoModels", err)
	}
}

func TestNewConfig(t *testing.T) {
	oc := &ollama.Client{BaseURL: "http://o"}
	if _, err := New(Config{Server: "ftp://x", Ollama: oc}); err == nil {
		t.Error("bad server accepted")
	}
	if _, err := New(Config{Server: "http://x"}); err == nil {
		t.Error("missing Ollama accepted")
	}
	if _, err := New(Config{Server: "http://x", Ollama: oc, NodeID: strings.Repeat("n", 65)}); err == nil {
		t.Error("long node id accepted")
	}
	for in, want := range map[int]int{0: 2, -3: 1, 1: 1, 7: 7, 99: 10} {
		a, err := New(Config{Server: "http://x", Ollama: oc, MaxConcurrent: in, NodeID: "n1"})
		if err != nil || a.cfg.MaxConcurrent != want || a.NodeID() != "n1" {
			t.Errorf("MaxConcurrent %d → %d (%v), want %d", in, a.cfg.MaxConcurrent, err, want)
		}
	}
	a, _ := New(Config{Server: "http://x", Ollama: oc})
	b, _ := New(Config{Server: "http://x", Ollama: oc})
	if a.NodeID() == b.NodeID() {
		t.Error("two random node ids are equal")
	}
}

// TestAgentWriteTimeoutClosesStuckLink: a router that stops reading fills
// the socket; the writes block, and after WriteTimeout without progress the
// agent closes the link, ends the request and dials again.
func TestAgentWriteTimeoutClosesStuckLink(t *testing.T) {
	tokens := make([]string, 4000) // 4000 × 32 KB: far beyond any socket buffer
	x := strings.Repeat("x", 32<<10)
	for i := range tokens {
		tokens[i] = x // one string shared: the bytes on the wire are what fill the socket
	}
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply { return ollamatest.Reply{Tokens: tokens} },
	}, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond })
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	rc.paused.Store(true)
	began := time.Now()
	rc.request(t, "r1", chat("stories:latest", "hi"))
	h.router.next(t) // the agent gave up on the stuck link and dialed again
	if el := time.Since(began); el > 5*time.Second {
		t.Errorf("the stuck link was closed after %v", el)
	}
	h.logs.waitFor(t, "the router takes no frames")
	h.out.waitFor(t, "canceled")
}

// TestAgentSpreadsReturnAfterRestart: after the router closes with 1001
// (going away) or 1012 (service restart), the next dial waits a random part
// of Backoff.Restart; after another close it waits only the backoff.
func TestAgentSpreadsReturnAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		code    websocket.StatusCode
		atLeast time.Duration
		below   time.Duration
	}{
		// Below the whole of Restart (2 s): the wait is the random part.
		{websocket.StatusGoingAway, 500 * time.Millisecond, 1500 * time.Millisecond},
		{websocket.StatusServiceRestart, 500 * time.Millisecond, 1500 * time.Millisecond},
		{websocket.StatusNormalClosure, 0, 400 * time.Millisecond},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			h := newHarness(t, ollamatest.Config{}, func(c *Config) {
				c.Backoff = Backoff{Initial: 10 * time.Millisecond, Restart: 2 * time.Second, Jitter: NoJitter}
				c.Rand = func() float64 { return 0.25 } // restart delay 500 ms
			})
			rc, _ := h.connect(t)
			rc.expect(t, wire.TypeHeartbeat)
			closed := time.Now()
			if err := rc.c.Close(tc.code, "bye"); err != nil {
				t.Logf("close: %v", err)
			}
			h.router.next(t)
			if el := time.Since(closed); el < tc.atLeast || el >= tc.below {
				t.Errorf("after %v the node dialed again after %v, want [%v, %v)", tc.code, el, tc.atLeast, tc.below)
			}
		})
	}
}

// TestRequestLine: a request's line is stamped when it ends (so lines are
// in order), says how long it took, and gives a rate only when one means
// something.
func TestRequestLine(t *testing.T) {
	for _, tc := range []struct {
		tokens int
		m      ollama.Metrics
		wall   time.Duration
		want   float64
	}{
		{1, ollama.Metrics{EvalCount: 1, EvalDuration: 20_000}, time.Millisecond, 0}, // 50,000 tok/s before
		{3, ollama.Metrics{EvalCount: 3, EvalDuration: 30_000}, time.Second, 0},      // eval too short to time
		{64, ollama.Metrics{EvalCount: 64, EvalDuration: int64(250 * time.Millisecond)}, time.Second, 256},
		{10, ollama.Metrics{}, 500 * time.Millisecond, 20}, // a node's Ollama without counts: wall time
		{10, ollama.Metrics{}, 10 * time.Millisecond, 0},
	} {
		if got := requestRate(tc.tokens, tc.m, tc.wall); got != tc.want {
			t.Errorf("%d tokens, %+v, wall %s: rate %v, want %v", tc.tokens, tc.m, tc.wall, got, tc.want)
		}
	}
	end := time.Date(2026, 12, 3, 10, 0, 12, 0, time.UTC)
	var out strings.Builder
	a := &Agent{cfg: Config{Now: func() time.Time { return end }, Out: &out}}
	a.reportLine(end.Add(-12*time.Second), "stories:latest", 1, 0, "ok")
	a.reportLine(end.Add(-300*time.Millisecond), "stories:latest", 64, 256, "ok")
	want := "2026-12-03 10:00:12  stories:latest  1 token in 12 s  ok\n" +
		"2026-12-03 10:00:12  stories:latest  64 tokens in 0.3 s  256.0 tok/s  ok\n"
	if out.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestHeartbeatNamesOnlyServedModels: the heartbeat's loaded_models names
// only the models this node serves. The owner's other models are the
// owner's business (which they load, and when, tells the router when
// the owner is at work), and a name the router refuses would make it
// drop the whole heartbeat.
func TestHeartbeatNamesOnlyServedModels(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Models: []ollamatest.Model{storiesModel, {Name: "private:latest", Size: 1000}},
		Loaded: []string{"private:latest", "stories:latest", "not a model name", "unlisted:7b"},
	}, func(c *Config) {
		c.HeartbeatInterval = 30 * time.Millisecond
		c.Models = []string{"stories"}
	})
	rc, _ := h.connect(t)
	hb := rc.expect(t, wire.TypeHeartbeat)
	var got wire.Heartbeat
	if err := json.Unmarshal(hb.raw, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.LoadedModels, []string{"stories:latest"}) {
		t.Errorf("loaded_models = %q, want only the served stories:latest", got.LoadedModels)
	}
}

// TestModelsLookClearsOllamaDown: when a heartbeat found Ollama gone (or
// frozen), the next successful look at its models says it is back, so a
// node whose Ollama restarted takes requests again at the next models
// poll, not only at the next heartbeat (15 s by default).
func TestModelsLookClearsOllamaDown(t *testing.T) {
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	defer fake.Close()
	a, err := New(Config{Server: "http://x", Ollama: &ollama.Client{BaseURL: fake.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.refreshModels(t.Context()); err != nil || !a.available() {
		t.Fatalf("first look: %v, available %v", err, a.available())
	}
	a.setPSDown(true) // what a heartbeat does when /api/ps is unreachable
	if a.available() {
		t.Fatal("available with Ollama found down")
	}
	if _, err := a.refreshModels(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !a.available() {
		t.Fatal("Ollama answered the models look, and the node still takes no requests")
	}
}
