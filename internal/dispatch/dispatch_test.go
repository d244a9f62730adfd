package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/tools"
	"github.com/idleclaw/idleclaw/internal/wire"
)

const waitFor = 5 * time.Second

// fakeNode is a node agent on a real loopback WebSocket to a hub.
type fakeNode struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan wire.RouterFrame
	done   chan struct{}
}

// newNodeHub starts a hub behind a loopback WebSocket endpoint and
// registers one node with the given model.
func newNodeHub(t *testing.T, models ...wire.Model) (*hub.Hub, *fakeNode) {
	t.Helper()
	h := hub.New(hub.Config{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		h.ServeNode(r.Context(), conn, "192.0.2.1", r.Host)
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(4 << 20)
	n := &fakeNode{t: t, conn: c, frames: make(chan wire.RouterFrame, 256), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			f, err := wire.DecodeRouterFrame(b)
			if err != nil {
				t.Errorf("router frame %s: %v", b, err)
				return
			}
			n.frames <- f
		}
	}()
	t.Cleanup(func() {
		_ = c.CloseNow()
		<-n.done
	})
	n.send(wire.Register{Type: wire.TypeRegister, NodeID: "node-1", Models: models, MaxConcurrent: 2})
	if f := n.next(); f.Type != wire.TypeRegistered {
		t.Fatalf("got %s, want registered", f.Type)
	}
	return h, n
}

func (n *fakeNode) send(v any) {
	n.t.Helper()
	b, _ := json.Marshal(v)
	if err := n.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
		n.t.Fatalf("node write: %v", err)
	}
}

func (n *fakeNode) next() wire.RouterFrame {
	n.t.Helper()
	select {
	case f := <-n.frames:
		return f
	case <-time.After(waitFor):
		n.t.Fatal("timed out waiting for a router frame")
	}
	return wire.RouterFrame{}
}

func (n *fakeNode) chunk(id string, c wire.Chunk) {
	n.t.Helper()
	n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: id, Chunk: c})
}

func text(s string) wire.Chunk {
	return wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: s}}
}

// run starts Chat in the background and returns its events and result.
type run struct {
	events chan Event
	result chan error
}

func startChat(t *testing.T, d *Dispatcher, req Request) *run {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{events: make(chan Event, 1024), result: make(chan error, 1)}
	go func() {
		_, err := d.Chat(ctx, req, func(ev Event) error { r.events <- ev; return nil })
		close(r.events)
		r.result <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-r.result
	})
	return r
}

func (r *run) collect(t *testing.T) []Event {
	t.Helper()
	var out []Event
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-r.events:
			if !ok {
				err := <-r.result
				r.result <- err // for the cleanup
				if err != nil {
					t.Fatalf("Chat: %v", err)
				}
				return out
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("Chat did not end; events so far %+v", out)
		}
	}
}

func userReq(model, text string) Request {
	return Request{Model: model, Messages: []ollama.Message{{Role: "user", Content: text}}}
}

func TestChatNoNodeEmitsNothing(t *testing.T) {
	h := hub.New(hub.Config{})
	defer h.Close()
	d := New(Config{}, h)
	_, err := d.Chat(context.Background(), userReq("x:latest", "hi"), func(ev Event) error {
		t.Errorf("emitted %+v", ev)
		return nil
	})
	if !errors.Is(err, ErrNoNode) {
		t.Fatalf("Chat = %v, want ErrNoNode", err)
	}
}

func TestBuildRequest(t *testing.T) {
	many := make([]ollama.Message, 25)
	for i := range many {
		many[i] = ollama.Message{Role: []string{"user", "assistant"}[i%2], Content: fmt.Sprint(i)}
	}
	search := &tools.WebSearch{BaseURL: "http://127.0.0.1:1"}
	tests := []struct {
		name       string
		cfg        Config
		req        Request
		info       hub.ModelInfo
		native     bool
		tagMode    bool
		wantFirst  string // role:content-prefix of the first message
		wantLen    int
		wantThink  string
		wantTools  bool
		wantPrompt bool // the tag prompt is in the system message
	}{
		{name: "defaults: system prompt, capped history", req: Request{Model: "m", Messages: many},
			wantFirst: "system:" + DefaultSystemPrompt, wantLen: 21},
		{name: "custom cap", cfg: Config{MaxHistory: 3}, req: Request{Model: "m", Messages: many},
			wantFirst: "system:", wantLen: 4},
		{name: "no system prompt", cfg: Config{SystemPrompt: "-"}, req: Request{Model: "m", Messages: many[:2]},
			wantFirst: "user:0", wantLen: 2},
		{name: "think only for thinking models", req: Request{Model: "m", Messages: many[:1], Think: true},
			wantFirst: "system:", wantLen: 2},
		{name: "think for a thinking model", req: Request{Model: "m", Messages: many[:1], Think: true},
			info: hub.ModelInfo{Thinking: true}, wantFirst: "system:", wantLen: 2, wantThink: "true"},
		{name: "native tools", cfg: Config{Search: search}, req: Request{Model: "m", Messages: many[:1]},
			native: true, wantFirst: "system:", wantLen: 2, wantTools: true},
		{name: "tag prompt", cfg: Config{Search: search}, req: Request{Model: "m", Messages: many[:1]},
			tagMode: true, wantFirst: "system:", wantLen: 2, wantPrompt: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := hub.New(hub.Config{})
			defer h.Close()
			d := New(tc.cfg, h)
			got := d.buildRequest(tc.req, tc.info, tc.native, tc.tagMode)
			if len(got.Messages) != tc.wantLen {
				t.Fatalf("%d messages, want %d", len(got.Messages), tc.wantLen)
			}
			first := got.Messages[0].Role + ":" + got.Messages[0].Content
			if !strings.HasPrefix(first, tc.wantFirst) {
				t.Errorf("first message %q, want prefix %q", first, tc.wantFirst)
			}
			if last, want := got.Messages[len(got.Messages)-1], tc.req.Messages[len(tc.req.Messages)-1]; last.Content != want.Content {
				t.Errorf("last message %q, want the consumer's last %q", last.Content, want.Content)
			}
			if string(got.Think) != tc.wantThink {
				t.Errorf("think %s, want %q", got.Think, tc.wantThink)
			}
			if (len(got.Tools) > 0) != tc.wantTools {
				t.Errorf("tools %s, want present=%v", got.Tools, tc.wantTools)
			}
			if hasPrompt := strings.Contains(got.Messages[0].Content, "<tool_call>"); hasPrompt != tc.wantPrompt {
				t.Errorf("tag prompt present=%v, want %v", hasPrompt, tc.wantPrompt)
			}
			if got.Stream == nil || !*got.Stream || string(got.KeepAlive) != `"5m"` || got.Model != "m" {
				t.Errorf("stream %v keep_alive %s model %q", got.Stream, got.KeepAlive, got.Model)
			}
		})
	}
}

// TestFailureOf: whatever went wrong, consumers read a fixed text with
// nothing of the node in it, and the right kind of failure.
func TestFailureOf(t *testing.T) {
	tests := []struct {
		err  error
		want string
		kind Failure
	}{
		{&hub.NodeError{Code: wire.ErrInvalidRequest}, msgInvalidParam, FailNode},
		{&hub.NodeError{Code: wire.ErrOllamaBusy}, msgNodeBusy, FailRetry},
		{&hub.NodeError{Code: wire.ErrOllamaError}, msgNodeFailed, FailNode},
		{&hub.NodeError{Code: "node 10.1.2.3 says <script>"}, msgNodeFailed, FailNode},
		{hub.ErrNodeGone, msgNodeGone, FailNode},
		{fmt.Errorf("wrapped: %w", hub.ErrNodeBusy), msgNodeGone, FailNode},
		{hub.ErrShutdown, msgShutdown, FailRetry},
		{fmt.Errorf("wrapped: %w", hub.ErrShutdown), msgShutdown, FailRetry},
		{hub.ErrSlowConsumer, msgTooSlow, FailNode},
		{errors.New("dial tcp 10.1.2.3:11434: refused"), msgNodeFailed, FailNode},
	}
	for _, tc := range tests {
		if msg, kind := failureOf(tc.err); msg != tc.want || kind != tc.kind {
			t.Errorf("failureOf(%v) = %q, %d; want %q, %d", tc.err, msg, kind, tc.want, tc.kind)
		}
	}
}

func TestTruncateRunes(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"hello", 3, "hel"}, {"hello", 5, "hello"}, {"hello", 9, "hello"}, {"hello", 0, ""}, {"hello", -1, ""},
		{"héllo", 2, "hé"}, {"日本語", 1, "日"}, {"", 3, ""},
	}
	for _, tc := range tests {
		if got := truncateRunes(tc.s, tc.n); got != tc.want {
			t.Errorf("truncateRunes(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

// TestLengthLimit: the answer stops at exactly MaxResponseChars, nothing
// of the answer follows the notice, and the node is told to stop.
func TestLengthLimit(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"plain", []string{"01234567", "89abcdef"}, "0123456789"},
		{"multibyte", []string{"ééééééé", "éééé"}, "éééééééééé"},
		// The limit counts what the node sent: ten characters of
		// "012345 <scr" reach the filter, which holds "<sc" back as a
		// possible match; the cut drops it rather than emit half a tag.
		{"text held back by the outbound filter", []string{"012345 <scr", "ipt> more"}, "012345 "},
		{"held back text at the limit", []string{"0123456789 <scr"}, "0123456789"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1})
			out, _ := filter.NewOutbound(filter.DefaultOutboundPatterns())
			d := New(Config{MaxResponseChars: 10, Outbound: out}, h)
			r := startChat(t, d, userReq("m:latest", "hi"))
			req := node.next()
			for _, c := range tc.chunks {
				node.chunk(req.RequestID, text(c))
			}
			evs := r.collect(t)
			if f := node.next(); f.Type != wire.TypeCancelRequest || f.RequestID != req.RequestID {
				t.Errorf("node got %s %s, want cancel_request", f.Type, f.RequestID)
			}
			content, notice := answerAndNotice(t, evs)
			if content != tc.want {
				t.Errorf("content %q, want %q", content, tc.want)
			}
			last := evs[len(evs)-1]
			if notice != msgLength || last.Kind != Done || last.FinishReason != "length" {
				t.Errorf("events %+v: want the notice then Done with length", evs)
			}
		})
	}
}

// TestKeepAlive: a silent node makes the dispatcher emit KeepAlive events.
func TestKeepAlive(t *testing.T) {
	h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1})
	d := New(Config{PingInterval: 20 * time.Millisecond}, h)
	r := startChat(t, d, userReq("m:latest", "hi"))
	req := node.next()
	for i := 0; i < 2; {
		select {
		case ev := <-r.events:
			if ev.Kind != KeepAlive {
				t.Fatalf("event %+v, want KeepAlive", ev)
			}
			i++
		case <-time.After(waitFor):
			t.Fatal("no keep-alive")
		}
	}
	node.chunk(req.RequestID, wire.Chunk{Message: &wire.ChunkMessage{Content: "ok"}, Done: true})
	evs := r.collect(t)
	if last := evs[len(evs)-1]; last.Kind != Done || last.FinishReason != "stop" {
		t.Errorf("last event %+v", last)
	}
}

// TestUsageSumsRounds: usage is the sum over tool rounds.
func TestUsageSumsRounds(t *testing.T) {
	searx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"results":[{"url":"https://go.dev","title":"Go","content":"Go"}]}`))
	}))
	defer searx.Close()
	h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1, Capabilities: []string{"completion", "tools"}})
	d := New(Config{Search: &tools.WebSearch{BaseURL: searx.URL, Client: searx.Client()}}, h)
	r := startChat(t, d, userReq("m:latest", "hi"))

	req := node.next()
	call := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", ToolCalls: []ollama.ToolCall{
		{Function: ollama.ToolFunction{Name: "web_search", Arguments: json.RawMessage(`{"query":"go"}`)}}}}, Done: true}
	call.PromptEvalCount, call.EvalCount = 10, 3
	node.chunk(req.RequestID, call)
	req2 := node.next()
	if req2.Type != wire.TypeInferenceReq {
		t.Fatalf("got %s, want a second inference_request", req2.Type)
	}
	fin := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: "Go."}, Done: true}
	fin.PromptEvalCount, fin.EvalCount = 30, 4
	node.chunk(req2.RequestID, fin)
	evs := r.collect(t)
	last := evs[len(evs)-1]
	if last.Kind != Done || last.Usage != (Usage{PromptTokens: 40, CompletionTokens: 7, PromptKnown: true}) {
		t.Errorf("final event %+v, want usage 40/7", last)
	}
}

// TestLengthLimitAtTheEnd: text the tag parser or the outbound filter held
// back when the node's last chunk arrives counts against the limit too.
func TestLengthLimitAtTheEnd(t *testing.T) {
	for _, held := range []string{"<tool", " <scr", " data"} {
		t.Run(held, func(t *testing.T) {
			h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1})
			out, _ := filter.NewOutbound(filter.DefaultOutboundPatterns())
			d := New(Config{MaxResponseChars: 10, Outbound: out}, h)
			r := startChat(t, d, userReq("m:latest", "hi"))
			req := node.next()
			node.chunk(req.RequestID, text("0123456789"+held))
			node.chunk(req.RequestID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"})
			evs := r.collect(t)
			content, notice := answerAndNotice(t, evs)
			last := evs[len(evs)-1]
			if content != "0123456789" || notice != msgLength || last.Kind != Done || last.FinishReason != "length" {
				t.Fatalf("content %q, notice %q, last %+v; want 10 characters, the notice and finish length", content, notice, last)
			}
		})
	}
}

// answerAndNotice folds a stream's events into the answer text and the
// failure notice ("" if none); answer text after a notice is an error.
func answerAndNotice(t *testing.T, evs []Event) (content, notice string) {
	t.Helper()
	failed := false
	for _, ev := range evs {
		switch ev.Kind {
		case Content:
			if failed {
				t.Errorf("answer text %q after the notice %q", ev.Text, notice)
			}
			content += ev.Text
		case Failed:
			failed, notice = true, ev.Text
		}
	}
	return content, notice
}

// TestRenderSafe: a node's answer and thinking reach the consumer safe to
// render, however the node splits them, while its tool-call arguments
// (not HTML) pass as they are; RawText turns the render filter off.
func TestRenderSafe(t *testing.T) {
	const args = `{"html":"<img src=x onerror=alert(1)>"}`
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("RawText=%v", raw), func(t *testing.T) {
			h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1, Capabilities: []string{"completion", "thinking", "tools"}})
			out, _ := filter.NewOutbound(filter.DefaultOutboundPatterns())
			d := New(Config{Outbound: out, RawText: raw}, h)
			req := userReq("m:latest", "hi")
			req.Think = true
			req.Tools = json.RawMessage(`[{"type":"function","function":{"name":"show","parameters":{"type":"object"}}}]`)
			r := startChat(t, d, req)
			ir := node.next()
			node.chunk(ir.RequestID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Thinking: "maybe <sv"}})
			node.chunk(ir.RequestID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Thinking: "g onload=go()>"}})
			node.chunk(ir.RequestID, text("Here: <im"))
			node.chunk(ir.RequestID, text("g src=x onerror=alert(1)> and ![x](http://evil.example/?c=1)"))
			node.chunk(ir.RequestID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", ToolCalls: []ollama.ToolCall{
				{Function: ollama.ToolFunction{Name: "show", Arguments: json.RawMessage(args)}}}}, Done: true})
			var content, thinking string
			var calls []ollama.ToolCall
			for _, ev := range r.collect(t) {
				switch ev.Kind {
				case Content:
					content += ev.Text
				case Thinking:
					thinking += ev.Text
				case ToolCalls:
					calls = append(calls, ev.Calls...)
				}
			}
			wantContent := "Here: &lt;img src=x onerror=alert(1)> and !&#91;x](http://evil.example/?c=1)"
			wantThinking := "maybe &lt;svg onload=go()>"
			if raw {
				wantContent = "Here: <img src=x onerror=alert(1)> and ![x](http://evil.example/?c=1)"
				wantThinking = "maybe <svg onload=go()>"
			}
			if content != wantContent {
				t.Errorf("content %q, want %q", content, wantContent)
			}
			if thinking != wantThinking {
				t.Errorf("thinking %q, want %q", thinking, wantThinking)
			}
			var got struct{ HTML string }
			if len(calls) != 1 || json.Unmarshal(calls[0].Function.Arguments, &got) != nil || got.HTML != "<img src=x onerror=alert(1)>" {
				t.Errorf("tool calls %+v, want the arguments %s as sent", calls, args)
			}
		})
	}
}

// TestDeadlineKeepsTheFirstBound: a request given a deadline (one that
// moved between routers) ends by it with the timeout failure, however
// long the response time limit is.
func TestDeadlineKeepsTheFirstBound(t *testing.T) {
	h, n := newNodeHub(t, wire.Model{Name: "x:latest"})
	d := New(Config{ResponseTimeout: time.Hour, FirstTokenTimeout: time.Hour}, h)
	req := userReq("x:latest", "hi")
	req.Deadline = time.Now().Add(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []Event
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = d.Chat(ctx, req, func(ev Event) error {
			got = append(got, ev)
			return nil
		})
	}()
	if f := n.next(); f.Type != wire.TypeInferenceReq {
		t.Fatalf("node got %s", f.Type)
	}
	<-done // the node never answers
	if err != nil || res.Outcome != "timeout" {
		t.Fatalf("Chat = %+v, %v; want the timeout outcome", res, err)
	}
	if len(got) < 2 || got[len(got)-2].Kind != Failed || got[len(got)-2].Failure != FailTimeout {
		t.Fatalf("events %+v, want the timeout failure then Done", got)
	}
}
