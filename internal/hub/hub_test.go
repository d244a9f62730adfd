package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

const waitFor = 5 * time.Second

// testHub is a Hub behind a loopback WebSocket endpoint. The node's IP is
// taken from the X-Test-IP header so that tests can play several machines.
type testHub struct {
	*hub.Hub
	srv *httptest.Server
	url string
}

func newTestHub(t *testing.T, cfg hub.Config) *testHub {
	t.Helper()
	baseline := runtime.NumGoroutine()
	h := hub.New(cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ip := r.Header.Get("X-Test-IP")
		if ip == "" {
			ip = "192.0.2.1"
		}
		h.ServeNode(r.Context(), conn, ip, r.Host)
	}))
	th := &testHub{Hub: h, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() {
		h.Close()
		srv.Close()
		deadline := time.Now().Add(waitFor)
		for runtime.NumGoroutine() > baseline {
			if time.Now().After(deadline) {
				t.Errorf("goroutine leak: %d goroutines, want at most %d", runtime.NumGoroutine(), baseline)
				return
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	})
	return th
}

type frame struct {
	Type      string `json:"type"`
	NodeID    string `json:"node_id"`
	RequestID string `json:"request_id"`
	raw       string
}

// node is a scripted node agent.
type node struct {
	t      *testing.T
	conn   *websocket.Conn
	net    *freezable
	frames chan frame
	done   chan struct{}
	err    error
}

// freezable is a network connection a test can freeze: while frozen,
// nothing it receives is read, so the node answers no ping — a link gone
// half-open.
type freezable struct {
	net.Conn
	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
}

func (f *freezable) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	// What arrives while frozen is held back until the thaw: a read
	// already waiting on the socket must not answer a ping either.
	f.mu.Lock()
	for f.frozen {
		f.cond.Wait()
	}
	f.mu.Unlock()
	return n, err
}

func (f *freezable) set(frozen bool) {
	f.mu.Lock()
	f.frozen = frozen
	f.mu.Unlock()
	f.cond.Broadcast()
}

// freeze stops the node from reading its link (and so from answering
// pings); thaw lets it read again.
func (n *node) freeze() { n.net.set(true) }
func (n *node) thaw()   { n.net.set(false) }

func (th *testHub) dial(t *testing.T, ip string) *node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	hdr := http.Header{}
	if ip != "" {
		hdr.Set("X-Test-IP", ip)
	}
	var fz *freezable
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fz = &freezable{Conn: c}
		fz.cond = sync.NewCond(&fz.mu)
		return fz, nil
	}}
	c, _, err := websocket.Dial(ctx, th.url, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	n := &node{t: t, conn: c, net: fz, frames: make(chan frame, 1024), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				n.err = err
				return
			}
			var f frame
			_ = json.Unmarshal(b, &f)
			f.raw = string(b)
			n.frames <- f
		}
	}()
	t.Cleanup(func() {
		n.thaw()
		_ = c.CloseNow()
		<-n.done
	})
	return n
}

func (th *testHub) register(t *testing.T, id, ip string, maxConcurrent any, models ...wire.Model) *node {
	t.Helper()
	n := th.dial(t, ip)
	reg := map[string]any{"type": "register", "node_id": id, "models": models}
	if maxConcurrent != nil {
		reg["max_concurrent"] = maxConcurrent
	}
	n.send(reg)
	if f := n.next(); f.Type != wire.TypeRegistered || f.NodeID != id {
		t.Fatalf("got %s, want registered", f.raw)
	}
	return n
}

func (n *node) send(v any) {
	n.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
		n.t.Fatalf("write: %v", err)
	}
}

func (n *node) chunk(id, content string, done bool) {
	n.t.Helper()
	n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: id,
		Chunk: wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: content}, Done: done}})
}

func (n *node) next() frame {
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
		n.t.Fatalf("the link ended while a frame was awaited: %v", n.err)
	case <-time.After(waitFor):
		n.t.Fatal("timed out waiting for a frame")
	}
	return frame{}
}

func (n *node) expect(typ, requestID string) {
	n.t.Helper()
	f := n.next()
	if f.Type != typ || (requestID != "" && f.RequestID != requestID) {
		n.t.Fatalf("got frame %s, want %s for %q", f.raw, typ, requestID)
	}
}

func (n *node) closeStatus() (websocket.StatusCode, string) {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(waitFor):
		n.t.Fatal("link still open")
	}
	var ce websocket.CloseError
	if !errors.As(n.err, &ce) {
		n.t.Fatalf("link ended without a close frame: %v", n.err)
	}
	return ce.Code, ce.Reason
}

func m(name string, size int64, caps ...string) wire.Model {
	return wire.Model{Name: name, Size: size, Capabilities: caps}
}

// open sends a request for model and returns its stream.
func open(t *testing.T, h *hub.Hub, model string, exclude ...string) *hub.Stream {
	t.Helper()
	s, err := h.Open(context.Background(), hub.OpenRequest{Model: model, Exclude: exclude, Build: func(id, spelling string) ([]byte, error) {
		return json.Marshal(map[string]any{"type": wire.TypeInferenceReq, "request_id": id,
			"ollama_params": map[string]any{"model": spelling}})
	}})
	if err != nil {
		t.Fatalf("Open(%s): %v", model, err)
	}
	t.Cleanup(s.Close)
	return s
}

// next waits for the stream's next chunk, as a reader does: TryNext, then
// Wake or Done.
func next(t *testing.T, s *hub.Stream) *wire.Chunk {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		if c, _, ok := s.TryNext(); ok {
			return c
		}
		select {
		case <-s.Wake():
		case <-s.Done():
			if c, _, ok := s.TryNext(); ok {
				return c
			}
			t.Fatalf("stream failed: %v", s.Err())
		case <-timeout:
			t.Fatal("no chunk in time")
		}
	}
}

func waitDone(t *testing.T, s *hub.Stream) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(waitFor):
		t.Fatal("stream still open")
	}
	return nil
}

func activeOf(h *hub.Hub, id string) int {
	for _, n := range h.Nodes() {
		if n.NodeID == id {
			return n.ActiveRequests
		}
	}
	return -1
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
}

func TestRegisterMaxConcurrentClamp(t *testing.T) {
	tests := []struct {
		give any // max_concurrent as sent; nil: absent
		want int
	}{
		{nil, 2}, {0, 1}, {-3, 1}, {1, 1}, {4, 4}, {10, 10}, {11, 10}, {1000, 10},
	}
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	for i, tc := range tests {
		id := fmt.Sprintf("n%d", i)
		th.register(t, id, "", tc.give, m("a:1b", 1))
		for _, n := range th.Nodes() {
			if n.NodeID == id && n.MaxConcurrent != tc.want {
				t.Errorf("max_concurrent %v: got %d, want %d", tc.give, n.MaxConcurrent, tc.want)
			}
		}
	}
	if th.NodeCount() != len(tests) || th.RegisteredTotal() != int64(len(tests)) {
		t.Errorf("NodeCount %d, RegisteredTotal %d; want %d", th.NodeCount(), th.RegisteredTotal(), len(tests))
	}
}

func TestModels(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	th.register(t, "a", "", 2,
		m("small:1b", 1e9),
		m("qwen3:8b", 5e9),                          // v1 node: name heuristic
		m("llama3.2", 2e9),                          // no tag: normalized
		m("qwen3-custom:latest", 3e9, "completion"), // reported caps win over the name
	)
	th.register(t, "b", "", 2,
		m("big:70b", 4e10, "completion", "tools", "thinking"),
		m("small:1b", 1e9),
	)
	got := th.Models(false)
	// The most servable first (both nodes share an address, so free slots
	// decide), then by name: sizes are the nodes' words and order nothing.
	want := []struct {
		name            string
		nodes           int
		thinking, tools bool
	}{
		{"small:1b", 2, false, false},
		{"big:70b", 1, true, true},
		{"llama3.2:latest", 1, false, true},
		{"qwen3-custom:latest", 1, false, false},
		{"qwen3:8b", 1, true, true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d models, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Nodes != w.nodes || g.Thinking != w.thinking || g.Tools != w.tools {
			t.Errorf("model %d = %s nodes=%d thinking=%v tools=%v; want %+v", i, g.Name, g.Nodes, g.Thinking, g.Tools, w)
		}
	}
}

func TestOpenPicksLeastLoaded(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	a := th.register(t, "a", "", 2, m("x:1", 1))
	b := th.register(t, "b", "", 4, m("x:1", 1))

	s1 := open(t, th.Hub, "x:1", "b") // excluded b: a takes it (load 1/2)
	a.expect(wire.TypeInferenceReq, s1.ID())
	if s1.NodeID() != "a" {
		t.Fatalf("excluding b, the request went to %s", s1.NodeID())
	}
	// b has fewer requests in flight (0 against 1): b. Then both have one,
	// and a, which waited longer since its last request, takes its turn.
	s2 := open(t, th.Hub, "x:1")
	if s2.NodeID() != "b" {
		t.Fatalf("request went to %s, want the idle b", s2.NodeID())
	}
	b.expect(wire.TypeInferenceReq, s2.ID())
	s3 := open(t, th.Hub, "x:1")
	if s3.NodeID() != "a" {
		t.Fatalf("request went to %s, want a (equal load, picked longer ago)", s3.NodeID())
	}
	a.expect(wire.TypeInferenceReq, s3.ID())
	// Fill every slot: a is full, 3 more on b; then nothing is free.
	for range 3 {
		s := open(t, th.Hub, "x:1")
		if s.NodeID() == "a" {
			a.expect(wire.TypeInferenceReq, s.ID())
		} else {
			b.expect(wire.TypeInferenceReq, s.ID())
		}
	}
	if activeOf(th.Hub, "a") != 2 || activeOf(th.Hub, "b") != 4 {
		t.Fatalf("active a=%d b=%d, want 2 and 4", activeOf(th.Hub, "a"), activeOf(th.Hub, "b"))
	}
	// Every node full: the request waits in the queue until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := th.Open(ctx, hub.OpenRequest{Model: "x:1", Build: func(string, string) ([]byte, error) { return []byte("{}"), nil }})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open with every node full: %v, want to wait until the deadline", err)
	}
	if len(th.Models(false)) != 0 || len(th.Models(true)) != 1 {
		t.Errorf("full nodes: Models(false) %v, Models(true) %v", th.Models(false), th.Models(true))
	}
	if _, err := th.Open(context.Background(), hub.OpenRequest{Model: "nosuch:1"}); !errors.Is(err, hub.ErrNoNode) {
		t.Errorf("unknown model: %v, want ErrNoNode", err)
	}
}

func TestStreamDeliversInOrder(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 1, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	for i := range 5 {
		n.chunk(s.ID(), fmt.Sprint(i), false)
	}
	n.chunk(s.ID(), "", true)
	for i := range 6 {
		c := next(t, s)
		if i < 5 && (c.Message == nil || c.Message.Content != fmt.Sprint(i) || c.Done) {
			t.Fatalf("chunk %d = %+v", i, c)
		}
		if i == 5 && !c.Done {
			t.Fatalf("last chunk not done")
		}
	}
	eventually(t, "capacity released after done", func() bool { return activeOf(th.Hub, "a") == 0 })
	// Closing a finished stream tells the node nothing: the next frame the
	// node sees is the next request.
	s.Close()
	s2 := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s2.ID())
}

func TestStreamCloseCancels(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 1, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	s.Close()
	s.Close() // idempotent
	n.expect(wire.TypeCancelRequest, s.ID())
	if activeOf(th.Hub, "a") != 0 {
		t.Fatalf("capacity not released")
	}
	// A chunk after the cancel is dropped, and the slot is usable.
	n.chunk(s.ID(), "late", true)
	s2 := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s2.ID())
	if c, _, ok := s.TryNext(); ok {
		t.Fatalf("closed stream got %+v", c)
	}
}

func TestStreamSlowConsumer(t *testing.T) {
	// The stream holds 200 bytes: three one-character chunks (65 bytes
	// each as the hub counts them) fit, the fourth does not.
	th := newTestHub(t, hub.Config{StreamBufferBytes: 200})
	n := th.register(t, "a", "", 2, m("x:1", 1))
	slow := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, slow.ID())
	other := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, other.ID())

	for i := range 4 {
		n.chunk(slow.ID(), fmt.Sprint(i), false)
	}
	if err := waitDone(t, slow); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("slow stream ended with %v, want ErrSlowConsumer", err)
	}
	n.expect(wire.TypeCancelRequest, slow.ID())
	if q := hub.Queued(slow); q != 3 {
		t.Errorf("%d chunks buffered, want the 3 that fit", q)
	}
	// The other request on the same node is unaffected.
	n.chunk(other.ID(), "fine", false)
	n.chunk(other.ID(), "", true)
	next(t, other)
	next(t, other)
	if other.Err() != nil {
		t.Errorf("other stream failed: %v", other.Err())
	}
	eventually(t, "capacity released", func() bool { return activeOf(th.Hub, "a") == 0 })
	slow.Close()
	if b := th.Buffered(); b != 0 {
		t.Errorf("%d bytes still counted as buffered after both streams ended", b)
	}
}

// TestStreamBoundedInBytes plays the node that feeds a consumer who never
// reads with the largest chunks a frame can carry: the stream fails once
// it holds StreamBufferBytes, not after a number of chunks, and the
// hub-wide budget bounds several such streams together.
func TestStreamBoundedInBytes(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, StreamBufferBytes: 1 << 20, MaxBufferedBytes: 3 << 20})
	n := th.register(t, "a", "", 10, m("x:1", 1))
	big := strings.Repeat("x", 200<<10) // 200 KiB of text in one chunk
	var streams []*hub.Stream
	for range 6 {
		s := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, s.ID())
		streams = append(streams, s)
	}
	for _, s := range streams {
		for range 8 { // 1.6 MiB offered to each
			n.chunk(s.ID(), big, false)
		}
	}
	failed := 0
	for _, s := range streams {
		if err := waitDone(t, s); !errors.Is(err, hub.ErrSlowConsumer) {
			t.Fatalf("stream ended with %v, want ErrSlowConsumer", err)
		}
		failed++
	}
	if b := th.Buffered(); b > 3<<20 {
		t.Errorf("%d bytes buffered, hub bound 3 MiB", b)
	}
	for _, s := range streams {
		if q := hub.Queued(s); q*len(big) > 1<<20 {
			t.Errorf("a stream holds %d chunks of 200 KiB, bound 1 MiB", q)
		}
		s.Close()
	}
	if b := th.Buffered(); b != 0 {
		t.Errorf("%d bytes still counted after every stream closed", b)
	}
}

// TestStreamAbsorbsBurst: a node that sends a burst of chunks before the
// consumer reads any does not fail the request while the burst fits the
// byte bound; every chunk arrives, in order.
func TestStreamAbsorbsBurst(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 2, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	marker := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, marker.ID())
	const total = 500
	for i := range total {
		n.chunk(s.ID(), fmt.Sprint(i), false)
	}
	n.chunk(s.ID(), "", true)
	// A node's frames are handled in order: once the marker stream has its
	// chunk, the whole burst reached the hub before anything was read.
	n.chunk(marker.ID(), "m", false)
	next(t, marker)
	if q := hub.Queued(s); q != total+1 || s.Err() != nil {
		t.Fatalf("after the burst: %d chunks queued, err %v; want %d and no failure", q, s.Err(), total+1)
	}
	for i := 0; ; i++ {
		c := next(t, s)
		if c.Done {
			if i != total {
				t.Fatalf("done after %d chunks, want %d", i, total)
			}
			return
		}
		if got := c.Message.Content; got != fmt.Sprint(i) {
			t.Fatalf("chunk %d is %q: out of order", i, got)
		}
	}
}

func TestStreamNodeError(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 1, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: s.ID(), Error: wire.ErrOllamaUnavailable})
	var ne *hub.NodeError
	if err := waitDone(t, s); !errors.As(err, &ne) || ne.Code != wire.ErrOllamaUnavailable {
		t.Fatalf("stream ended with %v, want NodeError ollama_unavailable", err)
	}
	if activeOf(th.Hub, "a") != 0 {
		t.Error("capacity not released")
	}
}

func TestForeignChunkDropped(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	victim := th.register(t, "victim", "", 2, m("x:1", 1))
	attacker := th.register(t, "attacker", "", 2, m("y:1", 1))
	s := open(t, th.Hub, "x:1")
	victim.expect(wire.TypeInferenceReq, s.ID())

	attacker.chunk(s.ID(), "INJECTED", false)
	attacker.chunk(s.ID(), "", true)
	attacker.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: s.ID(), Error: "ollama_error"})
	attacker.send(map[string]any{"type": "models_update", "models": []wire.Model{m("marker:1", 1)}})
	eventually(t, "the attacker's frames were handled", func() bool {
		_, ok := th.Model("marker:1")
		return ok
	})
	if c, _, ok := s.TryNext(); ok {
		t.Fatalf("victim's stream got %+v from another node", c)
	}
	if s.Err() != nil {
		t.Fatalf("victim's stream ended: %v", s.Err())
	}
	victim.chunk(s.ID(), "legit", true)
	if c := next(t, s); c.Message.Content != "legit" {
		t.Fatalf("got %q", c.Message.Content)
	}
}

func TestNodeGoneEndsItsStreams(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 3, m("x:1", 1))
	var streams []*hub.Stream
	for range 3 {
		s := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, s.ID())
		streams = append(streams, s)
	}
	_ = n.conn.CloseNow()
	for _, s := range streams {
		if err := waitDone(t, s); !errors.Is(err, hub.ErrNodeGone) {
			t.Errorf("stream ended with %v, want ErrNodeGone", err)
		}
	}
	eventually(t, "node unregistered", func() bool { return th.NodeCount() == 0 })
}

func TestCloseShutsDown(t *testing.T) {
	th := newTestHub(t, hub.Config{})
	n := th.register(t, "a", "", 1, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	th.Close()
	if err := waitDone(t, s); !errors.Is(err, hub.ErrShutdown) {
		t.Errorf("stream ended with %v, want ErrShutdown", err)
	}
	if code, _ := n.closeStatus(); code != websocket.StatusGoingAway {
		t.Errorf("node closed with %v, want 1001", code)
	}
	// A node arriving after Close is turned away with 1001.
	late := th.dial(t, "")
	if code, _ := late.closeStatus(); code != websocket.StatusGoingAway {
		t.Errorf("late node closed with %v, want 1001", code)
	}
	th.Close() // idempotent
}

func TestNodesPerIPAndReRegister(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: 2, MaxConnsPerIP: 10, TakeoverTimeout: 200 * time.Millisecond})
	a := th.register(t, "a", "198.51.100.1", 1, m("x:1", 1))
	th.register(t, "b", "198.51.100.1", 1, m("x:1", 1))

	// A third node from that IP is refused...
	c := th.dial(t, "198.51.100.1")
	c.send(map[string]any{"type": "register", "node_id": "c", "models": []wire.Model{m("x:1", 1)}})
	if code, reason := c.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseTooManyNodesFromIP {
		t.Errorf("third node: %v %q", code, reason)
	}
	// ...from another IP it is welcome.
	th.register(t, "c", "198.51.100.2", 1, m("x:1", 1))

	// Another connection registering "a" while a's link answers pings is
	// refused: a live node's id cannot be taken over.
	imp := th.dial(t, "198.51.100.1")
	imp.send(map[string]any{"type": "register", "node_id": "a", "models": []wire.Model{m("x:1", 1)}})
	if code, reason := imp.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseNodeIDInUse {
		t.Errorf("impostor: %v %q, want 1008 %q", code, reason, wire.CloseNodeIDInUse)
	}
	s := open(t, th.Hub, "x:1", "b", "c")
	a.expect(wire.TypeInferenceReq, s.ID())
	s.Close()
	a.expect(wire.TypeCancelRequest, s.ID())

	// Once a's link stops answering (half-open), "a" reconnecting from the
	// same IP replaces it (not a third node).
	a.freeze()
	a2 := th.register(t, "a", "198.51.100.1", 1, m("x:1", 1))
	a.thaw()
	if code, reason := a.closeStatus(); code != websocket.StatusNormalClosure || reason != wire.CloseReRegistered {
		t.Errorf("old connection closed with %v %q, want 1000 re-registered", code, reason)
	}
	if th.NodeCount() != 3 {
		t.Errorf("NodeCount %d, want 3", th.NodeCount())
	}
	s = open(t, th.Hub, "x:1", "b", "c")
	a2.expect(wire.TypeInferenceReq, s.ID())

	// The replaced connection ending does not unregister the new one.
	eventually(t, "old link gone", func() bool {
		select {
		case <-a.done:
			return true
		default:
			return false
		}
	})
	if th.NodeCount() != 3 {
		t.Errorf("after the old link ended NodeCount %d, want 3", th.NodeCount())
	}
}

func TestHeartbeatTimeoutWithInjectedClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	th := newTestHub(t, hub.Config{HeartbeatTimeout: 40 * time.Millisecond, Now: clock, MaxNodesPerIP: -1})
	quiet := th.register(t, "quiet", "", 1, m("x:1", 1))
	chatty := th.register(t, "chatty", "", 1, m("x:1", 1))

	advance(30 * time.Millisecond)
	chatty.send(map[string]any{"type": "heartbeat", "node_id": "chatty", "available": true})
	// Make sure the heartbeat was read before time moves on.
	chatty.send(map[string]any{"type": "models_update", "models": []wire.Model{m("x:1", 1), m("hb:1", 1)}})
	eventually(t, "heartbeat handled", func() bool { _, ok := th.Model("hb:1"); return ok })
	advance(20 * time.Millisecond) // quiet: 50ms of silence; chatty: 20ms

	if code, reason := quiet.closeStatus(); code != websocket.StatusNormalClosure || reason != wire.CloseHeartbeatTimeout {
		t.Errorf("quiet node closed with %v %q, want 1000 heartbeat timeout", code, reason)
	}
	eventually(t, "quiet node unregistered", func() bool { return th.NodeCount() == 1 })
	if n := th.Nodes(); len(n) != 1 || n[0].NodeID != "chatty" {
		t.Errorf("nodes %+v, want chatty only", n)
	}
}
