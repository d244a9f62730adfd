package server

// Scheduling and failure handling through the whole router (issue 4):
// the fair queue, capacity-honest warm-aware selection, the circuit
// breaker, failover before the first token, the first-token and stall
// timeouts, and what a consumer sees when a node dies. Scripted nodes on
// real WebSockets, consumers on real HTTP; every wait has a deadline.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// lastUser is the text of the last message of a request the node got.
func lastUser(t testing.TB, f routerFrame) string {
	t.Helper()
	if f.Type != wire.TypeInferenceReq || len(f.Params.Messages) == 0 {
		t.Fatalf("not an inference request: %s", f.Raw)
	}
	return f.Params.Messages[len(f.Params.Messages)-1].Content
}

// anyRequest waits for the next inference_request at any of nodes.
func anyRequest(t testing.TB, nodes ...*fakeNode) (*fakeNode, routerFrame) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		for _, n := range nodes {
			select {
			case f := <-n.frames:
				if f.Type != wire.TypeInferenceReq {
					t.Fatalf("node %s: got %s, want an inference_request", n.id, f.Raw)
				}
				return n, f
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node got a request")
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// queued reads the next event, which must be a queue position comment.
func (s *sseStream) queued(t testing.TB) int {
	t.Helper()
	ev := s.next(t)
	p, ok := queuedPosition(ev.Comment)
	if !ok {
		t.Fatalf("event %+v, want a \": queued position=N\" comment", ev)
	}
	return p
}

// answer sends a short answer and the final chunk.
func (n *fakeNode) answer(f routerFrame, text string) {
	n.t.Helper()
	n.content(f.RequestID, text)
	n.finish(f.RequestID, 3, 1)
}

// post sends a JSON body to path and reads the whole answer.
func (h *harness) post(t testing.TB, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return h.do(t, req)
}

// promCount reads one idleclaw_chat_requests_total sample (0 if absent).
func (h *harness) promCount(t testing.TB, dialect, outcome string) string {
	t.Helper()
	_, b := h.get(t, "/metrics/prometheus")
	prefix := fmt.Sprintf(`idleclaw_chat_requests_total{dialect=%q,outcome=%q} `, dialect, outcome)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0"
}

func decreasing(ps []int) bool {
	for i := range ps {
		if ps[i] < 1 || (i > 0 && ps[i] >= ps[i-1]) {
			return false
		}
	}
	return true
}

// autoNode is a scripted node that holds every request until its gate
// opens, then answers each at once, and records how many requests it had
// in flight at the same time.
type autoNode struct {
	*fakeNode
	capacity int
	gate     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	total    *atomic.Int32 // in flight over all nodes
	peakAll  *atomic.Int32

	mu       sync.Mutex
	inflight int
	peak     int
	served   []string
	errs     []string
}

func (h *harness) autoNode(t *testing.T, id string, capacity int, gate chan struct{}, total, peakAll *atomic.Int32) *autoNode {
	t.Helper()
	a := &autoNode{fakeNode: h.registerNode(t, id, capacity, model("m:latest", 1)), capacity: capacity,
		gate: gate, stop: make(chan struct{}), done: make(chan struct{}), total: total, peakAll: peakAll}
	go a.run()
	t.Cleanup(func() {
		close(a.stop)
		<-a.done
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, e := range a.errs {
			t.Error(e)
		}
	})
	return a
}

func (a *autoNode) fail(format string, args ...any) {
	a.mu.Lock()
	a.errs = append(a.errs, fmt.Sprintf("node %s: ", a.id)+fmt.Sprintf(format, args...))
	a.mu.Unlock()
}

func (a *autoNode) write(v any) bool {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.conn.Write(ctx, websocket.MessageText, b); err != nil {
		a.fail("write: %v", err)
		return false
	}
	return true
}

func (a *autoNode) run() {
	defer close(a.done)
	gate := a.gate
	var held []routerFrame
	for {
		select {
		case <-a.stop:
			return
		case <-gate:
			gate = nil
		case f := <-a.frames:
			if f.Type != wire.TypeInferenceReq {
				a.fail("unexpected frame %s", f.Raw)
				continue
			}
			a.mu.Lock()
			a.inflight++
			a.peak = max(a.peak, a.inflight)
			if a.inflight > a.capacity {
				a.errs = append(a.errs, fmt.Sprintf("node %s: %d requests in flight, max_concurrent %d", a.id, a.inflight, a.capacity))
			}
			a.served = append(a.served, f.Params.Messages[len(f.Params.Messages)-1].Content)
			a.mu.Unlock()
			all := a.total.Add(1)
			for p := a.peakAll.Load(); all > p && !a.peakAll.CompareAndSwap(p, all); p = a.peakAll.Load() {
			}
			held = append(held, f)
		}
		if gate != nil {
			continue
		}
		for _, f := range held {
			text := "answer to " + f.Params.Messages[len(f.Params.Messages)-1].Content
			if !a.write(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: f.RequestID,
				Chunk: wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: text}}}) {
				return
			}
			// The slot is free before the router can learn it: the next
			// request may arrive as soon as the final chunk is read.
			a.mu.Lock()
			a.inflight--
			a.mu.Unlock()
			a.total.Add(-1)
			c := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"}
			c.EvalCount = 4
			if !a.write(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: f.RequestID, Chunk: c}) {
				return
			}
		}
		held = held[:0]
	}
}

func (a *autoNode) stats() (inflight, peak int, served []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight, a.peak, slices.Clone(a.served)
}

// TestQueueAllComplete: N requests for a model with total capacity C < N.
// All N complete (no 503), the nodes never have more than C in flight
// (nor any node more than its max_concurrent), and every waiting consumer
// is told positions that only go down.
func TestQueueAllComplete(t *testing.T) {
	const n = 12
	h := newHarness(t)
	gate := make(chan struct{})
	var total, peak atomic.Int32
	a := h.autoNode(t, "a", 2, gate, &total, &peak)
	b := h.autoNode(t, "b", 1, gate, &total, &peak)
	const capacity = 3

	pending := make([]pendingChat, n)
	for i := range pending {
		pending[i] = h.openChatAsync(t, userChat("m", fmt.Sprintf("q%02d", i)))
	}
	// C requests reach the nodes, which hold them; the other N-C wait in
	// the queue, and only their streams have begun (with their position).
	streams := make([]*sseStream, n)
	got := 0
	eventually(t, "C requests on the nodes and N-C streams queued", func() bool {
		for i, p := range pending {
			if streams[i] != nil {
				continue
			}
			select {
			case s := <-p:
				if s == nil || s.resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %+v", i, s)
				}
				streams[i] = s
				got++
			default:
			}
		}
		return got == n-capacity && total.Load() == capacity
	})
	var first []int
	firstPos := map[int]int{}
	for i, s := range streams {
		if s != nil {
			firstPos[i] = s.queued(t)
			first = append(first, firstPos[i])
		}
	}
	slices.Sort(first)
	for i, p := range first {
		if p != i+1 {
			t.Fatalf("initial queue positions %v, want 1..%d once each", first, n-capacity)
		}
	}

	close(gate) // the nodes answer everything, as it comes
	for i, p := range pending {
		if streams[i] == nil {
			streams[i] = p.wait(t)
		}
	}
	for i, s := range streams {
		tr := s.all(t)
		want := fmt.Sprintf("answer to q%02d", i)
		if tr.Content != want || len(tr.Errors) != 0 || tr.Finish != "stop" {
			t.Errorf("request %d: %+v, want %q", i, tr, want)
		}
		// The first position was read above for the queued ones.
		if p, ok := firstPos[i]; ok {
			if ps := append([]int{p}, tr.Queued...); !decreasing(ps) {
				t.Errorf("request %d: queue positions %v do not go down", i, ps)
			}
		} else if len(tr.Queued) != 0 {
			t.Errorf("request %d was placed at once but got positions %v", i, tr.Queued)
		}
	}
	_, peakA, servedA := a.stats()
	_, peakB, servedB := b.stats()
	t.Logf("in flight at most: all %d (capacity %d), a %d/2, b %d/1; served a %d, b %d",
		peak.Load(), capacity, peakA, peakB, len(servedA), len(servedB))
	if peak.Load() > capacity || peakA > 2 || peakB > 1 {
		t.Errorf("in flight: all %d, a %d, b %d; want at most %d, 2, 1", peak.Load(), peakA, peakB, capacity)
	}
	if len(servedA)+len(servedB) != n {
		t.Errorf("nodes served %d requests, want %d", len(servedA)+len(servedB), n)
	}
}

// TestQueueFIFO: waiting requests are served first come first served, and
// each is told its position every time it moves up.
func TestQueueFIFO(t *testing.T) {
	h := newHarness(t)
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "q0"))
	cur := node.expect(wire.TypeInferenceReq)
	const waiting = 4
	streams := []*sseStream{nil}
	for i := 1; i <= waiting; i++ {
		s := h.openChatAsync(t, userChat("m", fmt.Sprintf("q%d", i))).wait(t)
		if p := s.queued(t); p != i {
			t.Fatalf("request %d queued at %d", i, p)
		}
		streams = append(streams, s)
	}
	for i := 1; i <= waiting; i++ {
		node.answer(cur, fmt.Sprintf("a%d", i-1))
		cur = node.expect(wire.TypeInferenceReq)
		if got := lastUser(t, cur); got != fmt.Sprintf("q%d", i) {
			t.Fatalf("the freed slot went to %q, want q%d (first come first served)", got, i)
		}
		for j := i + 1; j <= waiting; j++ {
			if p := streams[j].queued(t); p != j-i {
				t.Fatalf("request %d moved to position %d, want %d", j, p, j-i)
			}
		}
		node.noFrame()
	}
	node.answer(cur, fmt.Sprintf("a%d", waiting))
	streams[0] = streamc.wait(t)
	for i, s := range streams {
		tr := s.all(t)
		if tr.Content != fmt.Sprintf("a%d", i) || tr.Finish != "stop" || len(tr.Errors) != 0 {
			t.Errorf("request %d: %+v", i, tr)
		}
	}
}

// TestQueueFull: a full queue, or more than a client IP's fair share of it,
// is refused at once with 503 and Retry-After, in every dialect.
func TestQueueFull(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.hub.Queue.MaxWaiting = 4
		c.server.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "busy"))
	req := node.expect(wire.TypeInferenceReq)

	enqueue := func(ip string, pos int) *sseStream {
		t.Helper()
		s := h.startChat(t, userChat("m", "from "+ip), true, "X-Forwarded-For", ip).wait(t)
		if p := s.queued(t); p != pos {
			t.Fatalf("%s queued at %d, want %d", ip, p, pos)
		}
		return s
	}
	refused := func(ip string) {
		t.Helper()
		st, body, hdr := h.chatStatus(t, userChat("m", "from "+ip), "X-Forwarded-For", ip)
		if st != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "10" ||
			body != `{"detail":"All nodes with model m are busy; retry shortly"}`+"\n" {
			t.Fatalf("%s: %d %s Retry-After %q; want 503 busy with Retry-After 10", ip, st, body, hdr.Get("Retry-After"))
		}
	}
	const a, b, c, d = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
	var waiting []*sseStream
	waiting = append(waiting, enqueue(b, 1))
	waiting = append(waiting, enqueue(a, 2), enqueue(a, 3)) // two IPs: 2 places each
	refused(a)                                              // over a's fair share, the queue has room
	waiting = append(waiting, enqueue(c, 4))
	refused(d) // the queue is full
	// Every dialect refuses a full queue the same way.
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "No node is free to serve model m now"},
		{"/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "No node is free to serve model m now"},
		{"/ollama/api/chat", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "server busy, please try again"},
		{"/ollama/api/generate", `{"model":"m","prompt":"hi","stream":false}`, "server busy, please try again"},
	} {
		resp, body := h.post(t, tc.path, tc.body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "10" || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d %s Retry-After %q", tc.path, tc.body, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	if got := h.promCount(t, "v1", "busy"); got != "2" {
		t.Errorf("busy refusals counted %s, want 2", got)
	}

	// The waiting ones are served in order once the node is free.
	node.answer(req, "done")
	streamc.wait(t).all(t)
	for i, s := range waiting {
		f := node.expect(wire.TypeInferenceReq)
		node.answer(f, "ok")
		if tr := s.all(t); tr.Content != "ok" || tr.Finish != "stop" {
			t.Errorf("waiter %d: %+v", i, tr)
		}
	}
}

// TestQueueWaitExceeded: a request that waited the whole --queue-wait in
// vain. Where the response has not begun (non-streamed OpenAI and Ollama
// requests) it is a 503 with Retry-After. Where it has (every streamed
// dialect sends its first keep-alive or, for v1, the queue position at
// once, so that proxies and clients see the stream alive), the stream
// ends with an in-stream error and the dialect's end marker.
func TestQueueWaitExceeded(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.Queue.MaxWait = 100 * time.Millisecond })
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "busy"))
	req := node.expect(wire.TypeInferenceReq)

	const msg = "no node became free in time; please retry"
	tests := []struct {
		name, path, body string
		status           int
		retryAfter       string
		want             string // the whole body
	}{
		{"v1 (stream begun)", "/api/chat", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 200, "",
			": queued position=1\n\n" +
				`data: {"id":"ID","object":"chat.completion.chunk","model":"m","choices":[{"delta":{"content":"\n\n[Error: ` + msg + `]"},"index":0}]}` + "\n\n" +
				`data: {"id":"ID","object":"chat.completion.chunk","model":"m","choices":[{"delta":{},"index":0,"finish_reason":"error"}],"usage":{"completion_tokens":0}}` + "\n\n" +
				"data: [DONE]\n\n"},
		{"openai streamed", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 200, "",
			": queued position=1\n\n" + `data: {"error":{"message":"` + msg + `","type":"api_error","param":null,"code":null}}` + "\n\ndata: [DONE]\n\n"},
		{"openai", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 503, "10",
			`{"error":{"message":"` + msg + `","type":"api_error","param":null,"code":null}}` + "\n"},
		{"ollama", "/ollama/api/chat", `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}`, 503, "10",
			`{"error":"` + msg + `"}` + "\n"},
		{"ollama streamed", "/ollama/api/chat", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 200, "",
			`{"model":"m","created_at":"TS","message":{"role":"assistant","content":""},"done":false,"queue_position":1}` + "\n" + `{"error":"` + msg + `"}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := h.post(t, tc.path, tc.body)
			body := sseChatID.ReplaceAllString(string(b), "ID")
			body = createdAt.ReplaceAllString(body, `"created_at":"TS"`)
			if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") != tc.retryAfter || body != tc.want {
				t.Errorf("got %d Retry-After %q\n%s\nwant %d Retry-After %q\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body,
					tc.status, tc.retryAfter, tc.want)
			}
		})
	}
	node.noFrame()
	node.answer(req, "done")
	if tr := streamc.wait(t).all(t); tr.Content != "done" {
		t.Errorf("the request in flight: %+v", tr)
	}
}

var (
	sseChatID = regexp.MustCompile(`chatcmpl-[0-9a-f]{12}\b`)
	createdAt = regexp.MustCompile(`"created_at":"[^"]*"`)
)

// TestFailoverBeforeFirstToken: a node that dies, errors or is refused
// before any token reached the consumer is replaced by another node; the
// consumer gets one whole answer and no error.
func TestFailoverBeforeFirstToken(t *testing.T) {
	tests := []struct {
		name string
		fail func(n *fakeNode, f routerFrame)
	}{
		{"node killed", func(n *fakeNode, f routerFrame) { _ = n.conn.CloseNow() }},
		{"inference_error", func(n *fakeNode, f routerFrame) {
			n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaError})
		}},
		{"Ollama 503 (ollama_busy)", func(n *fakeNode, f routerFrame) {
			n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaBusy})
		}},
		{"empty chunk, then killed", func(n *fakeNode, f routerFrame) {
			// An empty chunk is not an answer: the consumer saw nothing.
			n.chunk(f.RequestID, wire.ChunkMessage{})
			_ = n.conn.CloseNow()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.registerNode(t, "a", 1, model("m:latest", 1))
			b := h.registerNode(t, "b", 1, model("m:latest", 1))
			streamc := h.openChatAsync(t, userChat("m", "tell me"))
			first, f1 := anyRequest(t, a, b)
			tc.fail(first, f1)
			other := a
			if first == a {
				other = b
			}
			f2 := other.expect(wire.TypeInferenceReq)
			if lastUser(t, f2) != "tell me" || f2.RequestID == f1.RequestID {
				t.Fatalf("retried request %s", f2.Raw)
			}
			other.content(f2.RequestID, "whole ")
			other.content(f2.RequestID, "answer")
			other.finish(f2.RequestID, 3, 2)
			tr := streamc.wait(t).all(t)
			if tr.Content != "whole answer" || len(tr.Errors) != 0 || tr.Finish != "stop" || tr.Usage != [3]int{3, 2, 5} {
				t.Errorf("consumer saw %+v, want the whole answer from the second node", tr)
			}
		})
	}
}

// TestFailoverLimits: at most two retries, never the same node twice;
// when every try failed the consumer gets the last node's error.
func TestFailoverLimits(t *testing.T) {
	h := newHarness(t)
	var nodes []*fakeNode
	for i := range 4 {
		nodes = append(nodes, h.registerNode(t, fmt.Sprintf("n%d", i), 2, model("m:latest", 1)))
	}
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	tried := map[string]bool{}
	for range 3 {
		n, f := anyRequest(t, nodes...)
		if tried[n.id] {
			t.Fatalf("request retried on %s twice", n.id)
		}
		tried[n.id] = true
		n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaError})
	}
	tr := streamc.wait(t).all(t)
	if fmt.Sprint(tr.Errors) != "[\n\n[Error: the node could not complete the request]]" || tr.Finish != "error" || tr.Content != "" {
		t.Errorf("after three failures: %+v", tr)
	}
	for _, n := range nodes {
		n.noFrame() // no fourth try
	}
}

// TestNodeKilledMidStream: when a node dies, its consumers that already
// got tokens see an error event and [DONE] within a second (never another
// node's answer spliced on), and those that got nothing yet are moved to
// another node.
func TestNodeKilledMidStream(t *testing.T) {
	h := newHarness(t)
	x := h.registerNode(t, "x", 4, model("m:latest", 1))
	var pend []pendingChat
	var reqs []routerFrame
	for i := range 4 {
		pend = append(pend, h.openChatAsync(t, userChat("m", fmt.Sprintf("q%d", i))))
		reqs = append(reqs, x.expect(wire.TypeInferenceReq))
	}
	byText := map[string]routerFrame{}
	for _, f := range reqs {
		byText[lastUser(t, f)] = f
	}
	// q0 and q1 are answering; q2 and q3 have not started.
	var streams []*sseStream
	for i := range 2 {
		x.content(byText[fmt.Sprintf("q%d", i)].RequestID, fmt.Sprintf("partial %d", i))
		s := pend[i].wait(t)
		if got, _ := s.nextChunk(t).content(); got != fmt.Sprintf("partial %d", i) {
			t.Fatalf("q%d: first token %q", i, got)
		}
		streams = append(streams, s)
	}
	y := h.registerNode(t, "y", 4, model("m:latest", 1))

	killed := time.Now()
	_ = x.conn.CloseNow()
	for i, s := range streams {
		p := s.nextChunk(t)
		d := time.Since(killed)
		if got, _ := p.content(); got != "\n\n[Error: the node serving this request disconnected]" {
			t.Errorf("q%d: after the kill got %s", i, p.Raw)
		}
		if d > time.Second {
			t.Errorf("q%d: error event %v after the node died, want within 1s", i, d)
		}
		t.Logf("q%d: error event %v after the node died", i, d.Round(time.Millisecond))
		tr := s.all(t)
		if tr.Finish != "error" || tr.Content != "" || len(tr.Errors) != 0 {
			t.Errorf("q%d: rest of the stream %+v", i, tr)
		}
	}
	moved := map[string]bool{}
	for range 2 {
		f := y.expect(wire.TypeInferenceReq)
		moved[lastUser(t, f)] = true
		y.answer(f, "from y to "+lastUser(t, f))
	}
	if !moved["q2"] || !moved["q3"] {
		t.Errorf("moved to y: %v, want q2 and q3", moved)
	}
	for i := 2; i < 4; i++ {
		tr := pend[i].wait(t).all(t)
		if want := fmt.Sprintf("from y to q%d", i); tr.Content != want || len(tr.Errors) != 0 || tr.Finish != "stop" {
			t.Errorf("q%d: %+v, want %q", i, tr, want)
		}
	}
	y.noFrame()
}

// TestBreakerIsolatesProbesRestores: a node answering every request with
// an error is taken out of rotation after the threshold, gets one trial
// after the cool-down (the injected clock), is isolated again while it
// still fails, and back in full rotation once a trial succeeds. The
// consumers whose requests it failed while others could serve them only
// notice a delay.
func TestBreakerIsolatesProbesRestores(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *harnessConfig) {
		c.hub.Now = clock.Now
		c.hub.Breaker.Threshold = 3
		c.hub.Breaker.Cooldown = 10 * time.Second
	})
	bad := h.registerNode(t, "bad", 2, model("m:latest", 1))
	failNext := func(n *fakeNode) routerFrame {
		t.Helper()
		f := n.expect(wire.TypeInferenceReq)
		n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaError})
		return f
	}
	// Alone, it fails three requests in a row; each consumer sees the error.
	for i := range 3 {
		streamc := h.openChatAsync(t, userChat("m", "hi"))
		failNext(bad)
		tr := streamc.wait(t).all(t)
		if fmt.Sprint(tr.Errors) != "[\n\n[Error: the node could not complete the request]]" {
			t.Fatalf("request %d: %+v", i, tr)
		}
	}
	good := h.registerNode(t, "good", 1, model("m:latest", 1))
	// Isolated: everything goes to good, even when good is full and bad
	// has room; the overflow waits in the queue.
	r4 := h.openChatAsync(t, userChat("m", "r4"))
	f4 := good.expect(wire.TypeInferenceReq)
	r5 := h.startChat(t, userChat("m", "r5"), true).wait(t)
	if p := r5.queued(t); p != 1 {
		t.Fatalf("r5 queued at %d", p)
	}
	bad.noFrame()

	// Cool-down over: the hub notices by itself and sends r5 to bad as
	// the trial. It fails again: isolated for another cool-down; r5 goes
	// back to waiting for good, excluding bad.
	clock.Advance(10 * time.Second)
	failNext(bad)
	if p := r5.queued(t); p != 1 {
		t.Fatalf("r5 queued again at %d", p)
	}
	good.answer(f4, "r4 done")
	r4.wait(t).all(t)
	f5 := good.expect(wire.TypeInferenceReq)
	good.answer(f5, "r5 done")
	if tr := r5.all(t); tr.Content != "r5 done" || len(tr.Errors) != 0 || len(tr.Queued) != 0 {
		t.Errorf("r5 (failed over after the trial): %+v", tr)
	}
	r6 := h.openChatAsync(t, userChat("m", "r6"))
	good.answer(good.expect(wire.TypeInferenceReq), "r6 done")
	r6.wait(t).all(t)
	bad.noFrame()

	// Next cool-down over: the trial goes to bad although good is idle;
	// bad has recovered and answers.
	clock.Advance(10 * time.Second)
	r7 := h.openChatAsync(t, userChat("m", "r7"))
	bad.answer(bad.expect(wire.TypeInferenceReq), "r7 from bad")
	if tr := r7.wait(t).all(t); tr.Content != "r7 from bad" || len(tr.Errors) != 0 {
		t.Errorf("r7 (the successful trial): %+v", tr)
	}
	good.noFrame()

	// Back in full rotation: three requests fill good (1) and bad (2).
	var rs []pendingChat
	for i := range 3 {
		rs = append(rs, h.openChatAsync(t, userChat("m", fmt.Sprintf("r%d", 8+i))))
	}
	fb1 := bad.expect(wire.TypeInferenceReq)
	fb2 := bad.expect(wire.TypeInferenceReq)
	fg := good.expect(wire.TypeInferenceReq)
	for _, x := range []struct {
		n *fakeNode
		f routerFrame
	}{{bad, fb1}, {bad, fb2}, {good, fg}} {
		x.n.answer(x.f, "ok")
	}
	for _, r := range rs {
		if tr := r.wait(t).all(t); tr.Content != "ok" || len(tr.Queued) != 0 {
			t.Errorf("back in rotation: %+v", tr)
		}
	}
}

// TestOllamaBusyOpensBreaker: Ollama's own 503 (ollama_busy) counts as a
// failure: the consumer is told to retry, and after the threshold the node
// is out of rotation.
func TestOllamaBusyOpensBreaker(t *testing.T) {
	h := newHarness(t, queueOff, func(c *harnessConfig) { c.hub.Breaker.Threshold = 2 })
	n := h.registerNode(t, "n", 2, model("m:latest", 1))
	for i := range 2 {
		streamc := h.openChatAsync(t, userChat("m", "hi"))
		f := n.expect(wire.TypeInferenceReq)
		n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaBusy})
		tr := streamc.wait(t).all(t)
		if fmt.Sprint(tr.Errors) != "[\n\n[Error: the node is overloaded; please retry]]" || tr.Finish != "error" {
			t.Fatalf("request %d: %+v", i, tr)
		}
	}
	// Out of rotation: refused at once, with the reason and a retry hint.
	st, body, hdr := h.chatStatus(t, userChat("m", "hi"))
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "not taking requests now") || hdr.Get("Retry-After") != "10" {
		t.Errorf("chat with the only node out of rotation: %d %s Retry-After %q", st, body, hdr.Get("Retry-After"))
	}
	n.noFrame()
}

// TestFastFailingNodeAttractsNoTraffic: a node that fails at once has the
// lowest load, yet requests go to the node that works until it is full.
func TestFastFailingNodeAttractsNoTraffic(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.Breaker.Threshold = 100 })
	fast := h.registerNode(t, "fast", 4, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	f := fast.expect(wire.TypeInferenceReq)
	fast.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: f.RequestID, Error: wire.ErrOllamaError})
	streamc.wait(t).all(t)

	good := h.registerNode(t, "good", 3, model("m:latest", 1))
	var pend []pendingChat
	var held []routerFrame
	for i := range 3 { // good fills up to 3/3 while fast sits at 0/4
		pend = append(pend, h.openChatAsync(t, userChat("m", fmt.Sprintf("r%d", i))))
		held = append(held, good.expect(wire.TypeInferenceReq))
	}
	fast.noFrame()
	// The overflow goes to the failing node, which still has room.
	over := h.openChatAsync(t, userChat("m", "overflow"))
	f = fast.expect(wire.TypeInferenceReq)
	fast.answer(f, "fine now")
	if tr := over.wait(t).all(t); tr.Content != "fine now" {
		t.Errorf("overflow: %+v", tr)
	}
	for i, f := range held {
		good.answer(f, "ok")
		pend[i].wait(t).all(t)
	}
}

// TestNodesTakeTurns: among nodes with room, a node's claim that it has
// the model loaded breaks only the first tie; after that equals take
// turns, and a node with a request in flight waits for the idle one.
func TestNodesTakeTurns(t *testing.T) {
	h := newHarness(t)
	cold := h.registerNode(t, "cold", 2, model("m:latest", 1))
	warm := h.registerNode(t, "warm", 2, model("m:latest", 1))
	warm.send(map[string]any{"type": "heartbeat", "node_id": "warm", "active_requests": 0, "available": true, "loaded_models": []string{"m:latest"}})
	eventually(t, "warm reported", func() bool { mi, _ := h.hub.Model("m:latest"); return mi.Loaded })
	// One at a time: warm first (its claim breaks the tie), then they
	// alternate.
	for i, n := range []*fakeNode{warm, cold, warm, cold} {
		streamc := h.openChatAsync(t, userChat("m", "hi"))
		n.answer(n.expect(wire.TypeInferenceReq), "x")
		if tr := streamc.wait(t).all(t); tr.Content != "x" {
			t.Fatalf("request %d: %+v", i, tr)
		}
	}
	// Concurrent: one each, then one each again (2/2 both).
	var pend []pendingChat
	for i := range 4 {
		pend = append(pend, h.openChatAsync(t, userChat("m", fmt.Sprint(i))))
	}
	fs := []routerFrame{warm.expect(wire.TypeInferenceReq), warm.expect(wire.TypeInferenceReq)}
	gs := []routerFrame{cold.expect(wire.TypeInferenceReq), cold.expect(wire.TypeInferenceReq)}
	for _, f := range fs {
		warm.answer(f, "x")
	}
	for _, f := range gs {
		cold.answer(f, "x")
	}
	for _, p := range pend {
		p.wait(t).all(t)
	}
}

// TestFirstTokenTimeout: a node that does not start answering in time is
// told to cancel and the request moves to another node; when every node
// is that slow the consumer gets the specific message, and it is counted.
func TestFirstTokenTimeout(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.dispatch.FirstTokenTimeout = 150 * time.Millisecond
		c.dispatch.PingInterval = time.Hour
	})
	a := h.registerNode(t, "a", 1, model("m:latest", 1))
	b := h.registerNode(t, "b", 1, model("m:latest", 1))

	// One slow node: the other answers.
	streamc := h.openChatAsync(t, userChat("m", "one"))
	slow, f1 := anyRequest(t, a, b)
	other := a
	if slow == a {
		other = b
	}
	f2 := other.expect(wire.TypeInferenceReq)
	if c := slow.expect(wire.TypeCancelRequest); c.RequestID != f1.RequestID {
		t.Errorf("cancel for %s, want %s", c.RequestID, f1.RequestID)
	}
	other.answer(f2, "from the other node")
	if tr := streamc.wait(t).all(t); tr.Content != "from the other node" || len(tr.Errors) != 0 {
		t.Errorf("one slow node: %+v", tr)
	}

	// Both slow: the specific message.
	start := time.Now()
	streamc = h.openChatAsync(t, userChat("m", "two"))
	n1, g1 := anyRequest(t, a, b)
	n2 := a
	if n1 == a {
		n2 = b
	}
	g2 := n2.expect(wire.TypeInferenceReq)
	tr := streamc.wait(t).all(t)
	if fmt.Sprint(tr.Errors) != "[\n\n[Error: the node did not start answering in time]]" || tr.Finish != "error" || tr.Content != "" {
		t.Errorf("every node slow: %+v", tr)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("ended after %v, before two first-token timeouts", d)
	}
	for _, x := range []struct {
		n *fakeNode
		f routerFrame
	}{{n1, g1}, {n2, g2}} {
		if c := x.n.expect(wire.TypeCancelRequest); c.RequestID != x.f.RequestID {
			t.Errorf("node %s: cancel for %s, want %s", x.n.id, c.RequestID, x.f.RequestID)
		}
	}
	if got := h.promCount(t, "v1", "first_token_timeout"); got != "1" {
		t.Errorf("first-token timeouts counted %s, want 1", got)
	}
}

// TestStallTimeout: a node that goes silent after its first tokens ends
// the stream with the specific message; the answer is not continued on
// another node (no splicing).
func TestStallTimeout(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.dispatch.StallTimeout = 150 * time.Millisecond
		c.dispatch.PingInterval = time.Hour
	})
	a := h.registerNode(t, "a", 1, model("m:latest", 1))
	b := h.registerNode(t, "b", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	n, f := anyRequest(t, a, b)
	n.content(f.RequestID, "Hel")
	tr := streamc.wait(t).all(t)
	if tr.Content != "Hel" || fmt.Sprint(tr.Errors) != "[\n\n[Error: the node stopped answering]]" || tr.Finish != "error" {
		t.Errorf("stalled: %+v", tr)
	}
	if c := n.expect(wire.TypeCancelRequest); c.RequestID != f.RequestID {
		t.Errorf("cancel for %s", c.RequestID)
	}
	a.noFrame()
	b.noFrame()
	if got := h.promCount(t, "v1", "stall_timeout"); got != "1" {
		t.Errorf("stall timeouts counted %s, want 1", got)
	}
}

// TestShutdownEndsQueuedRequests: at router shutdown (after the grace
// period, when the nodes are told to go away) a request still waiting in
// the queue ends at once with the same error event and [DONE] as the
// streams in flight, instead of waiting out --queue-wait.
func TestShutdownEndsQueuedRequests(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.Queue.MaxWait = time.Minute })
	busy := h.registerNode(t, "busy", 1, model("m:latest", 1))
	off := h.registerNode(t, "off", 1, model("m:latest", 1), model("o:latest", 1))
	off.heartbeat("off", false)
	eventually(t, "off unavailable", func() bool { return !h.hub.Nodes()[1].Available })
	inflight := h.openChatAsync(t, userChat("m", "in flight"))
	f := busy.expect(wire.TypeInferenceReq)
	busy.content(f.RequestID, "partial")
	streams := map[string]*sseStream{"in flight": inflight.wait(t)}
	s := h.openChatAsync(t, userChat("m", "waiting")).wait(t)
	if p := s.queued(t); p != 1 {
		t.Fatalf("m queued at %d", p)
	}
	streams["queued for m"] = s
	start := time.Now()
	h.api.Drain()
	done := make(chan struct{})
	go func() { defer close(done); h.hub.Close() }()
	for name, s := range streams {
		tr := s.all(t)
		if fmt.Sprint(tr.Errors) != "[\n\n[Error: the router is shutting down; please retry]]" || tr.Finish != "error" {
			t.Errorf("%s: errors %q finish %q", name, tr.Errors, tr.Finish)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("streams ended %v after shutdown began", d)
	}
	<-done
}

// TestQueueSlotFreedByCancel: with a real node agent at capacity, a
// consumer that leaves frees the slot for the request waiting in the
// queue, and the node takes it (the router tells the node to cancel before
// it hands the slot on, and the node frees the slot when told), instead of
// refusing it as over capacity and being blamed for it.
func TestQueueSlotFreedByCancel(t *testing.T) {
	t.Parallel()
	e := newCompatEnv(t, func(c *compatSetup) {
		c.node.MaxConcurrent = 1
		c.ollama.Respond = func(req ollamatest.ChatRequest) ollamatest.Reply {
			if req.Messages[len(req.Messages)-1].Content == "hang" {
				return ollamatest.Reply{Tokens: []string{"x"}, Hang: true}
			}
			return ollamatest.Reply{Tokens: []string{"second", " answer"}}
		}
	})
	chat := func(text string) []byte {
		b, _ := json.Marshal(map[string]any{"model": "stories", "messages": []any{map[string]any{"role": "user", "content": text}}})
		return b
	}
	for i := range 3 {
		stop := e.openStream("/api/chat", map[string]any{"model": "stories", "messages": []any{map[string]any{"role": "user", "content": "hang"}}}, "data: ")
		// The node's one slot is taken: the next request waits.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/api/chat", bytes.NewReader(chat("next")))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != ": queued position=1\n" {
			t.Fatalf("round %d: first line %q %v, want the queue position", i, line, err)
		}
		stop() // the first consumer leaves
		rest, err := io.ReadAll(br)
		resp.Body.Close()
		cancel()
		if err != nil || !strings.Contains(string(rest), `"second"`) || strings.Contains(string(rest), "[Error") {
			t.Fatalf("round %d: the waiting request got %q %v", i, rest, err)
		}
	}
	compatEventually(t, "three canceled Ollama calls", func() bool { return e.ollama.Canceled() == 3 })
}

// TestQueuePositionEveryDialect: a request that waits for a node says its
// place in the queue on every interface: the OpenAI stream as an SSE
// comment, the Ollama stream as queue_position on an empty chunk (both
// ignored by those clients), as the v1 stream does.
func TestQueuePositionEveryDialect(t *testing.T) {
	h := newHarness(t)
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	busy := h.openChatAsync(t, userChat("m", "busy"))
	req := node.expect(wire.TypeInferenceReq)
	read := func(path, body, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		r, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.Contains(line, want) {
			t.Fatalf("%s: first line %q (%v), want %q", path, line, err, want)
		}
	}
	// The first may not have left the queue when the second joins it:
	// any place will do.
	read("/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, ": queued position=")
	read("/ollama/api/chat", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, `"queue_position":`)
	node.answer(req, "ok")
	<-busy
}
