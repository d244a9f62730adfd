package server

// The router test harness: hub + dispatch + server behind a real loopback
// httptest.Server, a scripted fake node speaking the node protocol over a
// real WebSocket, and an SSE reader for consumers. Every wait has a deadline;
// nothing sleeps to synchronise.

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
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// waitFor bounds every wait for something that should happen promptly.
const waitFor = 10 * time.Second

// harnessConfig is what a test may change before the router starts.
type harnessConfig struct {
	hub      hub.Config
	dispatch dispatch.Config
	server   Config
	// sockBuf, if set, caps the kernel buffers of the router's accepted
	// sockets and of the fake nodes' sockets, so that a consumer that
	// stops reading stalls the router's writes after little data, and a
	// node cannot run far ahead of the router's read loop.
	sockBuf int
	// closers run at shutdown, after the router stopped and before the
	// leak check (fixtures the router talks to, such as a fake SearXNG).
	closers []func()
}

// harness is one router on a loopback port.
type harness struct {
	hub    *hub.Hub
	disp   *dispatch.Dispatcher
	api    *Server
	srv    *httptest.Server
	client *http.Client
	wsURL  string

	baseline int // goroutines before the router started
	closers  []func()
	sockBuf  int
	stopOnce sync.Once
}

// newHarness starts a router. By default every rate limit is off, the
// per-IP node limit is off (all test nodes share 127.0.0.1), the v1 size
// limits and the default filters are on. On cleanup the router is shut
// down as `idleclaw serve` does and goroutine leaks are checked.
func newHarness(t *testing.T, opts ...func(*harnessConfig)) *harness {
	t.Helper()
	in, err := filter.NewInbound(filter.DefaultInboundPatterns())
	if err != nil {
		t.Fatal(err)
	}
	out, err := filter.NewOutbound(filter.DefaultOutboundPatterns())
	if err != nil {
		t.Fatal(err)
	}
	cfg := harnessConfig{
		hub:      hub.Config{MaxNodesPerIP: -1},
		dispatch: dispatch.Config{Outbound: out},
		server: Config{
			MaxMessages:      wire.MaxMessages,
			MaxMessageLength: wire.MaxMessageChars,
			MaxTotalChars:    wire.MaxTotalChars,
			MaxBodyBytes:     wire.MaxFrameBytes,
			Inbound:          in,
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	h := &harness{baseline: runtime.NumGoroutine(), closers: cfg.closers, sockBuf: cfg.sockBuf}
	h.hub = hub.New(cfg.hub)
	h.disp = dispatch.New(cfg.dispatch, h.hub)
	h.api = New(cfg.server, h.hub, h.disp, nil)
	h.srv = httptest.NewUnstartedServer(h.api)
	if cfg.sockBuf > 0 {
		h.srv.Listener = bufListener{h.srv.Listener, cfg.sockBuf}
	}
	h.srv.Start()
	h.client = h.srv.Client()
	h.wsURL = "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/ws/node"
	t.Cleanup(func() {
		h.shutdown()
		checkNoLeaks(t, h.baseline)
	})
	return h
}

// queueOff turns the wait queue off: a request for a model whose nodes are
// all busy or unavailable is refused at once (503 with Retry-After).
func queueOff(c *harnessConfig) { c.hub.Queue.MaxWaiting = -1 }

// expectBusy posts a v1 chat that must be refused because every node that
// serves its model is busy: 503 with Retry-After, before any stream began.
func expectBusy(t testing.TB, h *harness, body chatReq) {
	t.Helper()
	st, got, hdr := h.chatStatus(t, body)
	want := `{"detail":"All nodes with model ` + body.Model + ` are busy; retry shortly"}` + "\n"
	if st != http.StatusServiceUnavailable || got != want || hdr.Get("Retry-After") != "10" {
		t.Errorf("chat for busy model %s: %d %q Retry-After %q; want 503 %q Retry-After 10", body.Model, st, got, hdr.Get("Retry-After"), want)
	}
}

// shutdown stops the router the way `idleclaw serve` does: drain, close
// the hub (nodes get 1001), then the HTTP server. Idempotent.
func (h *harness) shutdown() {
	h.stopOnce.Do(func() {
		h.api.Drain()
		h.hub.Close()
		h.srv.Close()
		for _, c := range h.closers {
			c()
		}
	})
}

// bufListener sets the kernel buffer sizes of accepted TCP connections.
type bufListener struct {
	net.Listener
	size int
}

func (l bufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(l.size)
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// checkNoLeaks waits until the number of goroutines is back to baseline.
func checkNoLeaks(t testing.TB, baseline int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Errorf("goroutine leak: %d goroutines, want at most %d\n%s", n, baseline, buf.String())
			return
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ---- HTTP helpers ----

// do sends a request to the router and returns the response with its body
// read (for non-streaming answers).
func (h *harness) get(t testing.TB, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return h.do(t, req)
}

func (h *harness) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", req.URL.Path, err)
	}
	return resp, b
}

// postChat posts body (a string or a value to marshal) to /api/chat and
// returns the response with its body unread.
func (h *harness) postChat(t testing.TB, ctx context.Context, body any, header ...string) *http.Response {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/api/chat", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("POST /api/chat: %v", err)
	}
	return resp
}

// chatStatus posts a chat and returns its status, body and headers (for
// refused requests).
func (h *harness) chatStatus(t testing.TB, body any, header ...string) (int, string, http.Header) {
	t.Helper()
	resp := h.postChat(t, context.Background(), body, header...)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// chatReq is the v1 chat body.
type chatReq struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	Think    bool          `json:"think,omitempty"`
	Options  any           `json:"options,omitempty"`
	Trust    string        `json:"trust,omitempty"`
}

func userChat(model, text string) chatReq {
	return chatReq{Model: model, Messages: []ChatMessage{{Role: "user", Content: text}}}
}

// ---- SSE consumer ----

// sseEvent is one event block of the stream.
type sseEvent struct {
	Comment string // ": ping" comments, without the colon and space
	Data    string // the payload after "data: "
	Bad     string // a block that is neither: reported by the test
}

// sseStream reads a chat response in the background.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent // closed at the end of the body
	cancel context.CancelFunc

	mu  sync.Mutex
	raw bytes.Buffer
}

// pendingChat is a chat request whose response headers have not arrived
// yet: the router writes them with the first event, when the node answers.
type pendingChat <-chan *sseStream

// wait returns the stream once its headers are in; it must be a 200.
func (p pendingChat) wait(t testing.TB) *sseStream {
	t.Helper()
	select {
	case s := <-p:
		if s == nil {
			t.Fatal("chat request failed")
		}
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("chat status %d, want 200", s.resp.StatusCode)
		}
		return s
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for the chat response headers")
	}
	return nil
}

// openChatAsync posts a chat and reads its event stream in the background.
func (h *harness) openChatAsync(t testing.TB, body any) pendingChat {
	t.Helper()
	return h.startChat(t, body, true)
}

// startChat is openChatAsync; with read false nobody reads the body.
// header holds extra request headers as name, value pairs.
func (h *harness) startChat(t testing.TB, body any, read bool, header ...string) pendingChat {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/api/chat", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ch := make(chan *sseStream, 1)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := h.client.Do(req)
		if err != nil {
			done <- nil
			ch <- nil
			return
		}
		done <- resp
		s := &sseStream{resp: resp, events: make(chan sseEvent, 4096), cancel: cancel}
		if read && resp.StatusCode == http.StatusOK {
			go s.read()
		}
		ch <- s
	}()
	t.Cleanup(func() {
		cancel()
		if resp := <-done; resp != nil {
			resp.Body.Close()
		}
	})
	return ch
}

func (s *sseStream) read() {
	defer close(s.events)
	br := bufio.NewReader(s.resp.Body)
	var block []string
	for {
		line, err := br.ReadString('\n')
		s.mu.Lock()
		s.raw.WriteString(line)
		s.mu.Unlock()
		if err != nil {
			if line != "" || len(block) > 0 {
				s.events <- sseEvent{Bad: "unterminated: " + strings.Join(append(block, line), "|")}
			}
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line != "" {
			block = append(block, line)
			continue
		}
		var ev sseEvent
		switch {
		case len(block) != 1:
			ev.Bad = fmt.Sprintf("block of %d lines: %q", len(block), block)
		case strings.HasPrefix(block[0], "data: "):
			ev.Data = strings.TrimPrefix(block[0], "data: ")
		case strings.HasPrefix(block[0], ": "):
			ev.Comment = strings.TrimPrefix(block[0], ": ")
		default:
			ev.Bad = block[0]
		}
		block = block[:0]
		s.events <- ev
	}
}

// rawText is everything read so far.
func (s *sseStream) rawText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// next returns the next event, failing on timeout or end of stream.
func (s *sseStream) next(t testing.TB) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("event stream ended early")
		}
		if ev.Bad != "" {
			t.Fatalf("malformed SSE block: %s", ev.Bad)
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for an SSE event")
	}
	return sseEvent{}
}

// nextChunk returns the next data event, decoded; pings are skipped.
func (s *sseStream) nextChunk(t testing.TB) chunkPayload {
	t.Helper()
	for {
		ev := s.next(t)
		if ev.Comment != "" {
			continue
		}
		return decodeChunk(t, ev.Data)
	}
}

// rest reads every remaining event until the body ends.
func (s *sseStream) rest(t testing.TB) []sseEvent {
	t.Helper()
	var out []sseEvent
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return out
			}
			if ev.Bad != "" {
				t.Fatalf("malformed SSE block: %s", ev.Bad)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("timed out waiting for the end of the stream; got %d events", len(out))
		}
	}
}

// chunkPayload is one JSON event of the v1 stream.
type chunkPayload struct {
	Raw     string
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Delta        delta   `json:"delta"`
		Index        *int    `json:"index"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	TrustTier string `json:"trust_tier"` // ext, on the final payload
}

type delta struct {
	Content   *string `json:"content"`
	Reasoning bool    `json:"reasoning"`
	ToolCall  *struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"tool_call"`
}

func decodeChunk(t testing.TB, data string) chunkPayload {
	t.Helper()
	if data == "[DONE]" {
		return chunkPayload{Raw: data}
	}
	var p chunkPayload
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("event %s: %v", data, err)
	}
	if len(p.Choices) != 1 || p.Choices[0].Index == nil || *p.Choices[0].Index != 0 {
		t.Fatalf("event %s: want exactly one choice with index 0", data)
	}
	p.Raw = data
	return p
}

func (p chunkPayload) done() bool { return p.Raw == "[DONE]" }

func (p chunkPayload) content() (string, bool) {
	if p.done() || p.Choices[0].Delta.Content == nil {
		return "", false
	}
	return *p.Choices[0].Delta.Content, true
}

// transcript sums up a whole stream.
type transcript struct {
	IDs       map[string]bool
	Content   string   // answer text, concatenated
	Reasoning string   // thinking text, concatenated
	Tools     []string // "name:status"
	Errors    []string // error deltas
	Finish    string
	Usage     [3]int
	Pings     int
	Queued    []int // positions of ": queued position=N" comments, in order
	Ended     bool  // the literal [DONE] was the last event
	Payloads  []chunkPayload
}

func summarize(t testing.TB, events []sseEvent) transcript {
	t.Helper()
	tr := transcript{IDs: map[string]bool{}}
	for i, ev := range events {
		if ev.Comment != "" {
			if p, ok := queuedPosition(ev.Comment); ok {
				if tr.Finish != "" || len(tr.Payloads) > 0 {
					t.Errorf("queue position after the answer began: %q", ev.Comment)
				}
				tr.Queued = append(tr.Queued, p)
				continue
			}
			if ev.Comment != "ping" {
				t.Errorf("unexpected comment %q", ev.Comment)
			}
			tr.Pings++
			continue
		}
		p := decodeChunk(t, ev.Data)
		if p.done() {
			if i != len(events)-1 {
				t.Errorf("[DONE] is not the last event")
			}
			tr.Ended = true
			continue
		}
		if tr.Finish != "" {
			t.Errorf("event after the final payload: %s", ev.Data)
		}
		tr.Payloads = append(tr.Payloads, p)
		tr.IDs[p.ID] = true
		d := p.Choices[0].Delta
		switch {
		case p.Choices[0].FinishReason != nil:
			tr.Finish = *p.Choices[0].FinishReason
			if p.Usage != nil {
				tr.Usage = [3]int{p.Usage.PromptTokens, p.Usage.CompletionTokens, p.Usage.TotalTokens}
			}
		case d.ToolCall != nil:
			tr.Tools = append(tr.Tools, d.ToolCall.Name+":"+d.ToolCall.Status)
		case d.Content != nil && d.Reasoning:
			tr.Reasoning += *d.Content
		case d.Content != nil && strings.HasPrefix(*d.Content, "\n\n[Error: "):
			tr.Errors = append(tr.Errors, *d.Content)
		case d.Content != nil:
			tr.Content += *d.Content
		default:
			t.Errorf("event with an empty delta and no finish_reason: %s", ev.Data)
		}
	}
	return tr
}

// queuedPosition parses a "queued position=N" comment (N >= 1).
func queuedPosition(comment string) (int, bool) {
	v, ok := strings.CutPrefix(comment, "queued position=")
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || strconv.Itoa(p) != v {
		return 0, false
	}
	return p, true
}

// all reads the whole remaining stream and sums it up; the stream must end
// with [DONE].
func (s *sseStream) all(t testing.TB) transcript {
	t.Helper()
	tr := summarize(t, s.rest(t))
	if !tr.Ended {
		t.Fatalf("stream did not end with data: [DONE]; raw:\n%s", s.rawText())
	}
	return tr
}

// ---- fake node ----

// routerFrame is one frame the router sent to a fake node.
type routerFrame struct {
	Type      string
	NodeID    string
	RequestID string
	Params    ollama.ChatRequest         // ollama_params, decoded
	ParamKeys map[string]json.RawMessage // ollama_params, key by key
	Raw       string
}

// fakeNode is a scripted node agent on a real WebSocket.
type fakeNode struct {
	t      testing.TB
	id     string
	conn   *websocket.Conn
	frames chan routerFrame
	done   chan struct{} // closed when the read loop ended
	err    error         // why it ended; set before done is closed
}

// dialNode opens a node link without registering.
func (h *harness) dialNode(t testing.TB) *fakeNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	client := h.client
	if h.sockBuf > 0 {
		size := h.sockBuf
		client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(size)
				_ = tc.SetWriteBuffer(size)
			}
			return c, err
		}}}
	}
	c, resp, err := websocket.Dial(ctx, h.wsURL, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", h.wsURL, err, status)
	}
	c.SetReadLimit(8 << 20)
	n := &fakeNode{t: t, conn: c, frames: make(chan routerFrame, 4096), done: make(chan struct{})}
	go n.readLoop()
	t.Cleanup(func() {
		_ = c.CloseNow()
		<-n.done
	})
	return n
}

func (n *fakeNode) readLoop() {
	defer close(n.done)
	for {
		typ, data, err := n.conn.Read(context.Background())
		if err != nil {
			n.err = err
			return
		}
		if typ != websocket.MessageText {
			n.err = fmt.Errorf("router sent a %v frame", typ)
			return
		}
		var f struct {
			Type         string          `json:"type"`
			NodeID       string          `json:"node_id"`
			RequestID    string          `json:"request_id"`
			OllamaParams json.RawMessage `json:"ollama_params"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			n.err = fmt.Errorf("router sent invalid JSON %q: %v", data, err)
			return
		}
		rf := routerFrame{Type: f.Type, NodeID: f.NodeID, RequestID: f.RequestID, Raw: string(data)}
		if len(f.OllamaParams) > 0 {
			if err := json.Unmarshal(f.OllamaParams, &rf.Params); err != nil {
				n.err = fmt.Errorf("ollama_params: %v", err)
				return
			}
			_ = json.Unmarshal(f.OllamaParams, &rf.ParamKeys)
		}
		select {
		case n.frames <- rf:
		default:
			n.err = errors.New("fake node frame buffer full")
			return
		}
	}
}

// model is a shorthand for a registered model.
func model(name string, size int64, caps ...string) wire.Model {
	return wire.Model{Name: name, Size: size, Capabilities: caps}
}

// registerNode dials and registers a node, and waits for "registered".
func (h *harness) registerNode(t testing.TB, id string, maxConcurrent int, models ...wire.Model) *fakeNode {
	t.Helper()
	n := h.dialNode(t)
	n.id = id
	n.send(map[string]any{"type": "register", "node_id": id, "models": models,
		"max_concurrent": maxConcurrent, "ollama_version": "0.6.2"})
	f := n.expect(wire.TypeRegistered)
	if f.NodeID != id {
		t.Fatalf("registered node_id %q, want %q", f.NodeID, id)
	}
	return n
}

func (n *fakeNode) send(v any) {
	n.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			n.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := n.conn.Write(ctx, websocket.MessageText, b); err != nil {
		n.t.Fatalf("node %s write: %v", n.id, err)
	}
}

func (n *fakeNode) chunk(reqID string, msg wire.ChunkMessage) {
	n.t.Helper()
	msg.Role = "assistant"
	n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: reqID, Chunk: wire.Chunk{Message: &msg}})
}

func (n *fakeNode) content(reqID, text string) {
	n.t.Helper()
	n.chunk(reqID, wire.ChunkMessage{Content: text})
}

func (n *fakeNode) thinking(reqID, text string) {
	n.t.Helper()
	n.chunk(reqID, wire.ChunkMessage{Thinking: text})
}

// finish sends the final chunk with Ollama's counters.
func (n *fakeNode) finish(reqID string, promptTokens, evalCount int) {
	n.t.Helper()
	c := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"}
	c.PromptEvalCount, c.EvalCount = promptTokens, evalCount
	n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: reqID, Chunk: c})
}

func (n *fakeNode) heartbeat(nodeID string, available bool) {
	n.t.Helper()
	n.send(map[string]any{"type": "heartbeat", "node_id": nodeID, "active_requests": 0, "available": available})
}

// next returns the next frame from the router.
func (n *fakeNode) next() routerFrame {
	n.t.Helper()
	select {
	case f := <-n.frames:
		return f
	case <-n.done:
		select {
		case f := <-n.frames:
			return f
		default:
		}
		n.t.Fatalf("node %s: link ended while waiting for a frame: %v", n.id, n.err)
	case <-time.After(waitFor):
		n.t.Fatalf("node %s: timed out waiting for a frame", n.id)
	}
	return routerFrame{}
}

// expect returns the next frame, which must be of type typ.
func (n *fakeNode) expect(typ string) routerFrame {
	n.t.Helper()
	f := n.next()
	if f.Type != typ {
		n.t.Fatalf("node %s: got frame %s, want type %q", n.id, f.Raw, typ)
	}
	return f
}

// expectWithin is expect with a tighter deadline.
func (n *fakeNode) expectWithin(d time.Duration, typ string) routerFrame {
	n.t.Helper()
	select {
	case f := <-n.frames:
		if f.Type != typ {
			n.t.Fatalf("node %s: got frame %s, want type %q", n.id, f.Raw, typ)
		}
		return f
	case <-time.After(d):
		n.t.Fatalf("node %s: no %s frame within %v", n.id, typ, d)
	}
	return routerFrame{}
}

// noFrame asserts that no frame is queued for the node now.
func (n *fakeNode) noFrame() {
	n.t.Helper()
	select {
	case f := <-n.frames:
		n.t.Fatalf("node %s: unexpected frame %s", n.id, f.Raw)
	default:
	}
}

// closed waits for the router to close the link and returns the close
// status and reason.
func (n *fakeNode) closed() (websocket.StatusCode, string) {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(waitFor):
		n.t.Fatalf("node %s: link still open", n.id)
	}
	var ce websocket.CloseError
	if !errors.As(n.err, &ce) {
		n.t.Fatalf("node %s: link ended without a close frame: %v", n.id, n.err)
	}
	return ce.Code, ce.Reason
}
