package hub_test

// Scheduling: the selection policy (table-driven), the per-node circuit
// breaker driven by an injected clock, and the fair bounded queue, through
// the hub's public API and scripted nodes on real loopback WebSockets.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

func TestWarmFirstPolicy(t *testing.T) {
	type c = hub.Candidate
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Second)
	tests := []struct {
		name  string
		cands []c
		want  int
	}{
		{"no candidate", nil, -1},
		{"one candidate", []c{{NodeID: "a", MaxConcurrent: 2}}, 0},
		{"fewer requests in flight first",
			[]c{{NodeID: "busy", Active: 1, MaxConcurrent: 2}, {NodeID: "idle", MaxConcurrent: 2}}, 1},
		{"a claimed large capacity gains nothing",
			[]c{{NodeID: "claims-10", Active: 1, MaxConcurrent: 10}, {NodeID: "honest-2", Active: 0, MaxConcurrent: 2}}, 1},
		{"warm beats known cold at equal load",
			[]c{{NodeID: "cold", Active: 1, MaxConcurrent: 2, Measured: true}, {NodeID: "warm", Active: 1, MaxConcurrent: 2, Measured: true, Warm: true}}, 1},
		{"a newcomer is not known cold: it takes its turn",
			[]c{{NodeID: "warm", MaxConcurrent: 2, Measured: true, Warm: true, LastPicked: t1}, {NodeID: "new", MaxConcurrent: 2}}, 1},
		{"load beats warmth, reputation and speed",
			[]c{{NodeID: "busy-good", Active: 1, MaxConcurrent: 2, Reputation: 1, TokensPerSec: 100, Warm: true, Measured: true}, {NodeID: "idle", MaxConcurrent: 2, Reputation: 0.5}}, 1},
		{"a failing node comes last even when idle",
			[]c{{NodeID: "fails-fast", MaxConcurrent: 10, Failing: true, Warm: true, Measured: true}, {NodeID: "busy", Active: 9, MaxConcurrent: 10}}, 1},
		{"among failing nodes the usual order holds",
			[]c{{NodeID: "f1", Active: 1, MaxConcurrent: 2, Failing: true}, {NodeID: "f2", MaxConcurrent: 2, Failing: true}}, 1},
		{"the breaker trial goes first",
			[]c{{NodeID: "healthy", MaxConcurrent: 2, Warm: true, Measured: true, Reputation: 1, History: true}, {NodeID: "trial", Active: 1, MaxConcurrent: 2, Failing: true, Trial: true}}, 1},
		{"reputation beyond one step wins",
			[]c{{NodeID: "fast", MaxConcurrent: 2, Reputation: 0.80, History: true, TokensPerSec: 90}, {NodeID: "reliable", MaxConcurrent: 2, Reputation: 0.90, History: true, TokensPerSec: 10}}, 1},
		{"reputation within one step: turns decide",
			[]c{{NodeID: "recent", MaxConcurrent: 2, Reputation: 0.90, History: true, LastPicked: t1}, {NodeID: "earlier", MaxConcurrent: 2, Reputation: 0.86, History: true, LastPicked: t0}}, 1},
		{"a newcomer is not held back by others' records",
			[]c{{NodeID: "proven", MaxConcurrent: 2, Reputation: 1, History: true, LastPicked: t1}, {NodeID: "new", MaxConcurrent: 2, Reputation: 0.5}}, 1},
		{"a much slower node (measured) loses",
			[]c{{NodeID: "slow", MaxConcurrent: 2, Reputation: 0.5, TokensPerSec: 10, LastPicked: t0}, {NodeID: "fast", MaxConcurrent: 2, Reputation: 0.5, TokensPerSec: 50, LastPicked: t1}}, 1},
		{"speed within the factor: turns decide",
			[]c{{NodeID: "faster", MaxConcurrent: 2, Reputation: 0.5, TokensPerSec: 50, LastPicked: t1}, {NodeID: "slower", MaxConcurrent: 2, Reputation: 0.5, TokensPerSec: 20, LastPicked: t0}}, 1},
		{"equals take turns: the longest waiting first",
			[]c{{NodeID: "recent", MaxConcurrent: 2, Reputation: 0.5, LastPicked: t1}, {NodeID: "earlier", MaxConcurrent: 2, Reputation: 0.5, LastPicked: t0}}, 1},
		{"a claim of a loaded model is only the last tie-break",
			[]c{{NodeID: "plain", MaxConcurrent: 2, Reputation: 0.5}, {NodeID: "claims", MaxConcurrent: 2, Reputation: 0.5, Claimed: true}}, 1},
		{"a claim does not beat taking turns",
			[]c{{NodeID: "claims", MaxConcurrent: 2, Reputation: 0.5, Claimed: true, LastPicked: t1}, {NodeID: "plain", MaxConcurrent: 2, Reputation: 0.5, LastPicked: t0}}, 1},
		{"ties go to the first",
			[]c{{NodeID: "a", MaxConcurrent: 2, Reputation: 0.5}, {NodeID: "b", MaxConcurrent: 2, Reputation: 0.5}, {NodeID: "c", MaxConcurrent: 2, Reputation: 0.5}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := hub.WarmFirst{}.Pick(tc.cands)
			if got != tc.want {
				name := "none"
				if got >= 0 {
					name = tc.cands[got].NodeID
				}
				t.Errorf("Pick = %d (%s), want %d", got, name, tc.want)
			}
		})
	}
}

func TestCandidateLoad(t *testing.T) {
	for _, tc := range []struct {
		active, max int
		want        float64
	}{{0, 2, 0}, {1, 2, 0.5}, {1, 4, 0.25}, {2, 2, 1}, {0, 0, 1}} {
		if got := (hub.Candidate{Active: tc.active, MaxConcurrent: tc.max}).Load(); got != tc.want {
			t.Errorf("Load(%d/%d) = %v, want %v", tc.active, tc.max, got, tc.want)
		}
	}
}

// recordingPolicy wraps WarmFirst and keeps what each Pick saw.
type recordingPolicy struct {
	mu   sync.Mutex
	seen [][]hub.Candidate
}

func (p *recordingPolicy) Pick(cands []hub.Candidate) int {
	p.mu.Lock()
	p.seen = append(p.seen, slices.Clone(cands))
	p.mu.Unlock()
	return hub.WarmFirst{}.Pick(cands)
}

func (p *recordingPolicy) last() []hub.Candidate {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return nil
	}
	return p.seen[len(p.seen)-1]
}

// TestPolicyCandidates: the hub hands the policy only nodes that can take
// the request now, with the router's record of each filled in, and
// honours a swapped-in policy.
func TestPolicyCandidates(t *testing.T) {
	pol := &recordingPolicy{}
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Policy: pol, Queue: hub.QueueConfig{MaxWaiting: -1}})
	warm := th.register(t, "warm", "", 2, m("x:1", 1))
	cold := th.register(t, "cold", "", 2, m("x:1", 1))
	off := th.register(t, "off", "", 2, m("x:1", 1))
	th.register(t, "other", "", 2, m("y:1", 1))
	warm.send(map[string]any{"type": "heartbeat", "node_id": "warm", "available": true, "loaded_models": []string{"x:1"}})
	off.send(map[string]any{"type": "heartbeat", "node_id": "off", "available": false})
	eventually(t, "heartbeats handled", func() bool {
		mi, _ := th.Model("x:1")
		return mi.Loaded && len(th.Models(false)) == 2 && !nodeInfo(th.Hub, "off").Available
	})
	// Nothing measured yet: the claim breaks the tie.
	s := open(t, th.Hub, "x:1")
	if s.NodeID() != "warm" {
		t.Fatalf("request went to %s, want warm", s.NodeID())
	}
	warm.expect(wire.TypeInferenceReq, s.ID())
	got := map[string]hub.Candidate{}
	for _, c := range pol.last() {
		got[c.NodeID] = c
	}
	if len(got) != 2 || !got["warm"].Claimed || got["cold"].Claimed || got["warm"].Warm || got["warm"].Measured ||
		got["warm"].MaxConcurrent != 2 || got["warm"].Active != 0 || got["warm"].Reputation != 0.5 || got["warm"].Failing || got["warm"].Trial {
		t.Errorf("candidates %+v, want warm and cold (off is unavailable, other lacks the model)", pol.last())
	}
	// The claim does not outweigh load: the second goes to the idle node.
	s2 := open(t, th.Hub, "x:1")
	if s2.NodeID() != "cold" {
		t.Errorf("second request went to %s, want cold (fewer in flight)", s2.NodeID())
	}
	cold.expect(wire.TypeInferenceReq, s2.ID())
	// Equal load: the node that waited longest takes the third.
	s3 := open(t, th.Hub, "x:1")
	if s3.NodeID() != "warm" {
		t.Errorf("third request went to %s, want warm (picked longest ago)", s3.NodeID())
	}
	if s4 := open(t, th.Hub, "x:1"); s4.NodeID() != "cold" {
		t.Errorf("fourth request went to %s, want cold (warm is full)", s4.NodeID())
	}
	if c := pol.last(); len(c) != 1 || c[0].NodeID != "cold" {
		t.Errorf("a full node was offered to the policy: %+v", c)
	}
}

// sortingPolicy sorts the candidates in place, by node id from the last,
// and takes the first: the hub must grant the node the policy saw there.
type sortingPolicy struct{}

func (sortingPolicy) Pick(c []hub.Candidate) int {
	slices.SortFunc(c, func(a, b hub.Candidate) int { return strings.Compare(b.NodeID, a.NodeID) })
	return 0
}

// TestPolicyMayReorder: a policy that reorders its candidates still gets
// the node it chose.
func TestPolicyMayReorder(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Policy: sortingPolicy{}, Queue: hub.QueueConfig{MaxWaiting: -1}})
	for _, id := range []string{"a", "b", "c", "d"} {
		th.register(t, id, "", 1, m("x:1", 1))
	}
	for _, want := range []string{"d", "c", "b", "a"} { // each node takes one request
		if s := open(t, th.Hub, "x:1"); s.NodeID() != want {
			t.Fatalf("request went to %s, want %s", s.NodeID(), want)
		}
	}
}

// nodeInfo returns the admin view of one node.
func nodeInfo(h *hub.Hub, id string) hub.NodeInfo {
	for _, n := range h.Nodes() {
		if n.NodeID == id {
			return n
		}
	}
	return hub.NodeInfo{}
}

// testClock is an injectable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// tryOpen is Open with a trivial request; it returns the error.
func tryOpen(ctx context.Context, h *hub.Hub, model string, exclude ...string) (*hub.Stream, error) {
	return h.Open(ctx, hub.OpenRequest{Model: model, Exclude: exclude, Build: buildFor(model)})
}

func buildFor(model string) func(string, string) ([]byte, error) {
	return func(id, spelling string) ([]byte, error) {
		return json.Marshal(map[string]any{"type": wire.TypeInferenceReq, "request_id": id,
			"ollama_params": map[string]any{"model": spelling}})
	}
}

// refused asserts that no node can take a request for model now — every
// node that serves it is held out, so Open says so at once, with nothing
// to wait for — and that the node got nothing.
func refused(t *testing.T, h *hub.Hub, model string, n *node) {
	t.Helper()
	refusedWith(t, h, model, n, hub.ErrUnavailable)
}

// refusedWith is refused with the error Open must return.
func refusedWith(t *testing.T, h *hub.Hub, model string, n *node, want error) {
	t.Helper()
	s, err := tryOpen(context.Background(), h, model)
	if err == nil {
		s.Close()
		t.Fatalf("Open(%s) placed the request on %s, want no node", model, s.NodeID())
	}
	if !errors.Is(err, want) {
		t.Fatalf("Open(%s): %v, want %v", model, err, want)
	}
	if n != nil {
		select {
		case f := <-n.frames:
			t.Fatalf("isolated node got %s", f.raw)
		default:
		}
	}
}

func failWith(n *node, id, code string) {
	n.t.Helper()
	n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: id, Error: code})
}

// failOnce sends a request to n, which fails it with code.
func failOnce(t *testing.T, h *hub.Hub, n *node, code string) {
	t.Helper()
	s := open(t, h, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	failWith(n, s.ID(), code)
	var ne *hub.NodeError
	if err := waitDone(t, s); !errors.As(err, &ne) || ne.Code != code {
		t.Fatalf("stream ended with %v, want NodeError %s", err, code)
	}
}

// succeed answers one request in full.
func succeed(t *testing.T, n *node, s *hub.Stream) {
	t.Helper()
	n.chunk(s.ID(), "ok", true)
	timeout := time.After(waitFor)
	for {
		if c, _, ok := s.TryNext(); ok {
			if !c.Done {
				t.Fatalf("got %+v, want the final chunk", c)
			}
			return
		}
		select {
		case <-s.Wake():
		case <-s.Done():
			t.Fatalf("stream failed: %v", s.Err())
		case <-timeout:
			t.Fatal("no final chunk")
		}
	}
}

// TestBreakerStateMachine walks one node's breaker through closed, open,
// half-open with its single trial, open again, and closed, with the
// cool-down driven by an injected clock.
func TestBreakerStateMachine(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now,
		Breaker: hub.BreakerConfig{Threshold: 3, Cooldown: 10 * time.Second},
		Queue:   hub.QueueConfig{MaxWaiting: -1}})
	bad := th.register(t, "bad", "", 2, m("x:1", 1))

	// Below the threshold the node stays in rotation; a success in between
	// resets the count of consecutive failures.
	failOnce(t, th.Hub, bad, wire.ErrOllamaError)
	failOnce(t, th.Hub, bad, wire.ErrOllamaBusy)
	s := open(t, th.Hub, "x:1")
	bad.expect(wire.TypeInferenceReq, s.ID())
	succeed(t, bad, s)
	failOnce(t, th.Hub, bad, wire.ErrOllamaError)
	failOnce(t, th.Hub, bad, wire.ErrOllamaUnavailable)
	// The third failure in a row opens the breaker: out of rotation.
	failOnce(t, th.Hub, bad, wire.ErrOllamaBusy)
	refused(t, th.Hub, "x:1", bad)
	if len(th.Models(true)) != 1 {
		t.Errorf("an isolated node's models are still known: %v", th.Models(true))
	}

	// Cool-down not over yet.
	clock.Advance(10*time.Second - time.Millisecond)
	refused(t, th.Hub, "x:1", bad)

	// Half-open: exactly one trial request.
	clock.Advance(time.Millisecond)
	trial := open(t, th.Hub, "x:1")
	bad.expect(wire.TypeInferenceReq, trial.ID())
	refused(t, th.Hub, "x:1", bad)

	// A failed trial opens it again for a whole cool-down.
	failWith(bad, trial.ID(), wire.ErrOllamaError)
	waitDone(t, trial)
	refused(t, th.Hub, "x:1", bad)
	clock.Advance(9 * time.Second)
	refused(t, th.Hub, "x:1", bad)
	clock.Advance(time.Second)

	// A trial the consumer abandons proves nothing: it is given back.
	trial = open(t, th.Hub, "x:1")
	bad.expect(wire.TypeInferenceReq, trial.ID())
	trial.Close()
	bad.expect(wire.TypeCancelRequest, trial.ID())

	// A successful trial closes the breaker: full capacity again. (The
	// consumer may read the final chunk before the hub has recorded it.)
	trial = open(t, th.Hub, "x:1")
	bad.expect(wire.TypeInferenceReq, trial.ID())
	succeed(t, bad, trial)
	deadline := time.Now().Add(waitFor)
	for breakerOf(th.Hub, "bad") != "closed" {
		if time.Now().After(deadline) {
			t.Fatalf("breaker %q after a successful trial", breakerOf(th.Hub, "bad"))
		}
		runtime.Gosched()
	}
	for range 2 {
		s := open(t, th.Hub, "x:1")
		bad.expect(wire.TypeInferenceReq, s.ID())
	}
}

// TestBreakerOutcomes: which endings count against a node. Errors, Abort
// (a timeout decided by the dispatcher) and a disconnect do; a consumer
// closing its stream does not.
func TestBreakerOutcomes(t *testing.T) {
	tests := []struct {
		name  string
		end   func(t *testing.T, th *testHub, n *node, s *hub.Stream)
		opens bool
	}{
		{"inference_error", func(t *testing.T, th *testHub, n *node, s *hub.Stream) {
			failWith(n, s.ID(), wire.ErrOllamaError)
			waitDone(t, s)
		}, true},
		{"ollama_busy (Ollama's 503)", func(t *testing.T, th *testHub, n *node, s *hub.Stream) {
			failWith(n, s.ID(), wire.ErrOllamaBusy)
			waitDone(t, s)
		}, true},
		{"abort (first-token or stall timeout)", func(t *testing.T, th *testHub, n *node, s *hub.Stream) {
			s.Abort()
			n.expect(wire.TypeCancelRequest, s.ID())
		}, true},
		{"consumer closed", func(t *testing.T, th *testHub, n *node, s *hub.Stream) {
			s.Close()
			n.expect(wire.TypeCancelRequest, s.ID())
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := newTestHub(t, hub.Config{MaxNodesPerIP: -1,
				Breaker: hub.BreakerConfig{Threshold: 2, Cooldown: time.Hour},
				Queue:   hub.QueueConfig{MaxWaiting: -1}})
			n := th.register(t, "n", "", 1, m("x:1", 1))
			for range 2 {
				s := open(t, th.Hub, "x:1")
				n.expect(wire.TypeInferenceReq, s.ID())
				tc.end(t, th, n, s)
				eventually(t, "slot released", func() bool { return activeOf(th.Hub, "n") == 0 })
			}
			if tc.opens {
				refused(t, th.Hub, "x:1", n)
				return
			}
			s := open(t, th.Hub, "x:1")
			n.expect(wire.TypeInferenceReq, s.ID())
		})
	}
}

// TestBreakerDisconnectAndReconnect: a node that drops its requests by
// disconnecting fails them; its breaker is kept by node id, so connecting
// again does not put it back in rotation before the cool-down.
func TestBreakerDisconnectAndReconnect(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now,
		Breaker: hub.BreakerConfig{Threshold: 2, Cooldown: 10 * time.Second},
		Queue:   hub.QueueConfig{MaxWaiting: -1}})
	for i := range 2 {
		n := th.register(t, "flaky", "", 1, m("x:1", 1))
		s := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, s.ID())
		_ = n.conn.CloseNow()
		if err := waitDone(t, s); !errors.Is(err, hub.ErrNodeGone) {
			t.Fatalf("connection %d: stream ended with %v, want ErrNodeGone", i, err)
		}
		eventually(t, "unregistered", func() bool { return th.NodeCount() == 0 })
	}
	again := th.register(t, "flaky", "", 1, m("x:1", 1))
	refused(t, th.Hub, "x:1", again)
	clock.Advance(10 * time.Second)
	s := open(t, th.Hub, "x:1")
	again.expect(wire.TypeInferenceReq, s.ID())
}

// TestFailingNodeAttractsNoTraffic: a node that fails fast has the lowest
// load; it must still come after every node whose last request went well.
func TestFailingNodeAttractsNoTraffic(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Breaker: hub.BreakerConfig{Threshold: 100}})
	fast := th.register(t, "fails-fast", "", 4, m("x:1", 1))
	failOnce(t, th.Hub, fast, wire.ErrOllamaError)
	good := th.register(t, "good", "198.51.100.9", 4, m("x:1", 1)) // another machine: a record of its own
	for i := range 4 {                                             // good fills up (4/4) while fails-fast sits at 0/4
		s := open(t, th.Hub, "x:1")
		if s.NodeID() != "good" {
			t.Fatalf("request %d went to %s, want good", i, s.NodeID())
		}
		good.expect(wire.TypeInferenceReq, s.ID())
	}
	// Only when the healthy node is full does the failing one get work.
	s := open(t, th.Hub, "x:1")
	if s.NodeID() != "fails-fast" {
		t.Fatalf("overflow went to %s", s.NodeID())
	}
	fast.expect(wire.TypeInferenceReq, s.ID())
}

// waiterRun is one Open call that may wait in the queue.
type waiterRun struct {
	mu        sync.Mutex
	positions []int
	posCh     chan int
	done      chan struct{}
	s         *hub.Stream
	err       error
}

// openAsync calls Open in a goroutine, recording queue positions.
func openAsync(t *testing.T, ctx context.Context, h *hub.Hub, model, ip string, exclude ...string) *waiterRun {
	t.Helper()
	return openReqAsync(t, ctx, h, hub.OpenRequest{Model: model, ClientIP: ip, Exclude: exclude})
}

// openReqAsync is openAsync with the whole request (Build and Queued are
// set here).
func openReqAsync(t *testing.T, ctx context.Context, h *hub.Hub, req hub.OpenRequest) *waiterRun {
	t.Helper()
	w := &waiterRun{posCh: make(chan int, 64), done: make(chan struct{})}
	req.Build = buildFor(req.Model)
	req.Queued = func(p int) error {
		w.mu.Lock()
		w.positions = append(w.positions, p)
		w.mu.Unlock()
		w.posCh <- p
		return nil
	}
	go func() {
		defer close(w.done)
		w.s, w.err = h.Open(ctx, req)
	}()
	t.Cleanup(func() {
		<-w.done
		if w.s != nil {
			w.s.Close()
		}
	})
	return w
}

// position waits for the waiter to report position p next.
func (w *waiterRun) position(t *testing.T, p int) {
	t.Helper()
	select {
	case got := <-w.posCh:
		if got != p {
			t.Fatalf("queue position %d, want %d", got, p)
		}
	case <-w.done:
		t.Fatalf("Open returned (%v) while waiting for position %d", w.err, p)
	case <-time.After(waitFor):
		t.Fatalf("no queue position %d", p)
	}
}

// reaches waits until the waiter reports position p, whatever positions
// it passes on the way (a queue that lost several waiters at once).
func (w *waiterRun) reaches(t *testing.T, p int) {
	t.Helper()
	for {
		select {
		case got := <-w.posCh:
			if got == p {
				return
			}
			if got < p {
				t.Fatalf("queue position %d, want %d", got, p)
			}
		case <-w.done:
			t.Fatalf("Open returned (%v) while waiting for position %d", w.err, p)
		case <-time.After(waitFor):
			t.Fatalf("no queue position %d", p)
		}
	}
}

// result waits for Open to return.
func (w *waiterRun) result(t *testing.T) (*hub.Stream, error) {
	t.Helper()
	select {
	case <-w.done:
		return w.s, w.err
	case <-time.After(waitFor):
		t.Fatal("Open still waiting")
	}
	return nil, nil
}

func (w *waiterRun) waiting() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *waiterRun) seen() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.positions)
}

// TestQueueFIFOAndPositions: waiters are served first come first served and
// each is told its position as it moves up.
func TestQueueFIFOAndPositions(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	n := th.register(t, "n", "", 1, m("x:1", 1))
	busy := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, busy.ID())

	var ws []*waiterRun
	for i := range 4 {
		w := openAsync(t, context.Background(), th.Hub, "x:1", fmt.Sprintf("198.51.100.%d", i))
		w.position(t, i+1)
		ws = append(ws, w)
	}
	prev := busy
	for i, w := range ws {
		n.chunk(prev.ID(), "", true) // the node finishes: its slot goes to the head
		s, err := w.result(t)
		if err != nil {
			t.Fatalf("waiter %d: %v", i, err)
		}
		n.expect(wire.TypeInferenceReq, s.ID())
		for j, behind := range ws[i+1:] {
			behind.position(t, j+1)
		}
		prev = s
	}
	for i, w := range ws {
		want := []int{}
		for p := i + 1; p >= 1; p-- {
			want = append(want, p)
		}
		if got := w.seen(); !slices.Equal(got, want) {
			t.Errorf("waiter %d saw positions %v, want %v", i, got, want)
		}
	}
}

// TestQueueFairShare: one client IP may hold only an equal share of a
// model's queue among the IPs waiting; a lone IP may use all of it.
func TestQueueFairShare(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Queue: hub.QueueConfig{MaxWaiting: 6}})
	n := th.register(t, "n", "", 1, m("x:1", 1), m("y:1", 1))
	busy := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, busy.ID())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	enqueue := func(ip string, pos int) *waiterRun {
		t.Helper()
		w := openAsync(t, ctx, th.Hub, "x:1", ip)
		w.position(t, pos)
		return w
	}
	full := func(ip string) {
		t.Helper()
		fctx, fcancel := context.WithTimeout(ctx, waitFor)
		defer fcancel()
		_, err := th.Open(fctx, hub.OpenRequest{Model: "x:1", ClientIP: ip, Build: buildFor("x:1")})
		if !errors.Is(err, hub.ErrQueueFull) {
			t.Fatalf("Open from %s: %v, want ErrQueueFull", ip, err)
		}
	}
	const a, b, c = "192.0.2.1", "192.0.2.2", "192.0.2.3"
	enqueue(a, 1)
	enqueue(a, 2)
	enqueue(a, 3)
	enqueue(b, 4) // two IPs: a share is 3 places each
	full(a)       // a holds its 3 although the queue has room
	enqueue(b, 5)
	enqueue(b, 6)
	full(c) // the queue is full (6)
	full(b)

	// A lone IP may fill a whole queue (of another model) by itself.
	for p := 1; p <= 6; p++ {
		w := openAsync(t, ctx, th.Hub, "y:1", a)
		w.position(t, p)
	}
	yctx, ycancel := context.WithTimeout(ctx, waitFor)
	defer ycancel()
	_, err := th.Open(yctx, hub.OpenRequest{Model: "y:1", ClientIP: a, Build: buildFor("y:1")})
	if !errors.Is(err, hub.ErrQueueFull) {
		t.Fatalf("seventh waiter for y:1: %v, want ErrQueueFull", err)
	}
	cancel()
}

// TestQueueEndings: how a wait ends other than with a node.
func TestQueueEndings(t *testing.T) {
	t.Run("wait exceeded", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Queue: hub.QueueConfig{MaxWait: 50 * time.Millisecond}})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		if _, err := w.result(t); !errors.Is(err, hub.ErrQueueTimeout) {
			t.Fatalf("Open: %v, want ErrQueueTimeout", err)
		}
		// The slot freed later goes to the next request, not to the one
		// that gave up.
		n.chunk(busy.ID(), "", true)
		s := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("queue off", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Queue: hub.QueueConfig{MaxWaiting: -1}})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		refusedWith(t, th.Hub, "x:1", n, hub.ErrQueueFull) // busy, and the queue is off
	})
	t.Run("consumer leaves", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		ctx, cancel := context.WithCancel(context.Background())
		first := openAsync(t, ctx, th.Hub, "x:1", "")
		first.position(t, 1)
		second := openAsync(t, context.Background(), th.Hub, "x:1", "")
		second.position(t, 2)
		cancel()
		if _, err := first.result(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Open: %v, want context.Canceled", err)
		}
		second.position(t, 1) // moves up
		n.chunk(busy.ID(), "", true)
		s, err := second.result(t)
		if err != nil {
			t.Fatal(err)
		}
		n.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("Queued error abandons", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		gone := errors.New("consumer gone")
		_, err := th.Open(context.Background(), hub.OpenRequest{Model: "x:1", Build: buildFor("x:1"),
			Queued: func(int) error { return gone }})
		if !errors.Is(err, gone) {
			t.Fatalf("Open: %v, want the Queued error", err)
		}
		n.chunk(busy.ID(), "", true)
		s := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("router shutdown", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		th.Close()
		if _, err := w.result(t); !errors.Is(err, hub.ErrShutdown) {
			t.Fatalf("Open: %v, want ErrShutdown", err)
		}
		if _, err := tryOpen(context.Background(), th.Hub, "x:1"); !errors.Is(err, hub.ErrShutdown) {
			t.Fatalf("Open after Close: %v, want ErrShutdown", err)
		}
	})
	t.Run("last node leaves", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		start := time.Now()
		_ = n.conn.CloseNow()
		if _, err := w.result(t); !errors.Is(err, hub.ErrNoNode) {
			t.Fatalf("Open: %v, want ErrNoNode", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("waiter learned after %v that no node serves the model any more", d)
		}
	})
	t.Run("the last available node becomes unavailable", func(t *testing.T) {
		// Waiting is for a busy node: once the nodes that serve the model
		// all say they take nothing, the waiter learns it at once.
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		n.send(map[string]any{"type": "heartbeat", "node_id": "n", "available": false})
		n.chunk(busy.ID(), "", true) // the freed slot wakes the queue
		if _, err := w.result(t); !errors.Is(err, hub.ErrUnavailable) {
			t.Fatalf("Open: %v, want ErrUnavailable", err)
		}
	})
}

// TestNothingToWaitFor: a request for a model whose nodes are all
// unavailable, or all held out by their breakers, fails at once with
// ErrUnavailable instead of waiting in the queue for a node that is not
// busy, only gone.
func TestNothingToWaitFor(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour,
		Breaker: hub.BreakerConfig{Threshold: 1, Cooldown: 10 * time.Second}})
	off := th.register(t, "off", "", 1, m("x:1", 1))
	off.send(map[string]any{"type": "heartbeat", "node_id": "off", "available": false})
	eventually(t, "unavailable", func() bool { return len(th.Models(false)) == 0 })
	start := time.Now()
	if _, err := tryOpen(context.Background(), th.Hub, "x:1"); !errors.Is(err, hub.ErrUnavailable) {
		t.Fatalf("Open with the only node unavailable: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v to say so", d)
	}

	clock2 := newTestClock()
	th2 := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock2.Now, HeartbeatTimeout: time.Hour,
		Breaker: hub.BreakerConfig{Threshold: 1, Cooldown: 10 * time.Second}})
	failing := th2.register(t, "failing", "", 1, m("x:1", 1))
	failOnce(t, th2.Hub, failing, wire.ErrOllamaError) // threshold 1: open
	if _, err := tryOpen(context.Background(), th2.Hub, "x:1"); !errors.Is(err, hub.ErrUnavailable) {
		t.Fatalf("Open with the only node's breaker open: %v, want ErrUnavailable", err)
	}
	clock2.Advance(10 * time.Second) // cool-down over: the trial goes through
	s := open(t, th2.Hub, "x:1")
	failing.expect(wire.TypeInferenceReq, s.ID())
}

// TestQueueWakeups: every event that frees capacity hands it to a waiter.
func TestQueueWakeups(t *testing.T) {
	t.Run("available again", func(t *testing.T) {
		// Two nodes: one busy, one unavailable; the unavailable one coming
		// back takes the waiter.
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		off := th.register(t, "off", "", 1, m("x:1", 1))
		off.send(map[string]any{"type": "heartbeat", "node_id": "off", "available": false})
		eventually(t, "unavailable", func() bool { return !nodeInfo(th.Hub, "off").Available })
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		off.send(map[string]any{"type": "heartbeat", "node_id": "off", "available": true})
		s, err := w.result(t)
		if err != nil {
			t.Fatal(err)
		}
		off.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("new node", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		fresh := th.register(t, "fresh", "", 1, m("x:1", 1))
		s, err := w.result(t)
		if err != nil {
			t.Fatal(err)
		}
		fresh.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("consumer closes", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		busy := open(t, th.Hub, "x:1")
		n.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		busy.Close()
		s, err := w.result(t)
		if err != nil {
			t.Fatal(err)
		}
		n.expect(wire.TypeCancelRequest, busy.ID())
		n.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("cool-down over", func(t *testing.T) {
		// One node busy, one in its breaker's cool-down: the end of the
		// cool-down (no event; the watchdog looks) hands the waiter the
		// trial.
		clock := newTestClock()
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour,
			Breaker: hub.BreakerConfig{Threshold: 1, Cooldown: 10 * time.Second}})
		n := th.register(t, "n", "", 1, m("x:1", 1))
		failOnce(t, th.Hub, n, wire.ErrOllamaError)
		other := th.register(t, "other", "198.51.100.9", 1, m("x:1", 1)) // another machine: a record of its own
		busy := open(t, th.Hub, "x:1")
		other.expect(wire.TypeInferenceReq, busy.ID())
		w := openAsync(t, context.Background(), th.Hub, "x:1", "")
		w.position(t, 1)
		clock.Advance(10 * time.Second)
		s, err := w.result(t)
		if err != nil {
			t.Fatal(err)
		}
		n.expect(wire.TypeInferenceReq, s.ID())
	})
	t.Run("exclusions do not block the queue", func(t *testing.T) {
		th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
		a := th.register(t, "a", "", 1, m("x:1", 1))
		b := th.register(t, "b", "", 1, m("x:1", 1))
		sa := open(t, th.Hub, "x:1", "b")
		a.expect(wire.TypeInferenceReq, sa.ID())
		sb := open(t, th.Hub, "x:1", "a")
		b.expect(wire.TypeInferenceReq, sb.ID())
		notA := openAsync(t, context.Background(), th.Hub, "x:1", "", "a") // already failed on a
		notA.position(t, 1)
		anyNode := openAsync(t, context.Background(), th.Hub, "x:1", "")
		anyNode.position(t, 2)
		a.chunk(sa.ID(), "", true) // a frees: the head cannot use it, the next can
		s, err := anyNode.result(t)
		if err != nil || s.NodeID() != "a" {
			t.Fatalf("second waiter: %v on %v, want a", err, s)
		}
		a.expect(wire.TypeInferenceReq, s.ID())
		if !notA.waiting() {
			t.Fatal("the waiter excluding a stopped waiting")
		}
		b.chunk(sb.ID(), "", true)
		s, err = notA.result(t)
		if err != nil || s.NodeID() != "b" {
			t.Fatalf("first waiter: %v on %v, want b", err, s)
		}
		b.expect(wire.TypeInferenceReq, s.ID())
	})
}

// TestOffload: a network of routers sends waiters from the head of a
// model's queue to another router's free slots; those that asked to stay,
// or that do not take just any node, keep their turn. A request back
// from a taken slot waits first in line, and a slot that comes free with
// nobody waiting is signalled.
func TestOffload(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	n := th.register(t, "n", "", 1, m("x:1", 1))
	busy := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, busy.ID())
	select {
	case <-th.Freed():
		t.Fatal("Freed before any slot came free")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if got := th.Offload("x:1", 5); got != 0 {
		t.Fatalf("Offload with nobody waiting moved %d", got)
	}
	w1 := openAsync(t, ctx, th.Hub, "x:1", "192.0.2.1")
	w1.position(t, 1)
	w2 := openReqAsync(t, ctx, th.Hub, hub.OpenRequest{Model: "x:1", ClientIP: "192.0.2.2", Stay: true})
	w2.position(t, 2)
	w3 := openAsync(t, ctx, th.Hub, "x:1", "192.0.2.3", "some-other-node")
	w3.position(t, 3)
	w4 := openAsync(t, ctx, th.Hub, "x:1", "192.0.2.4")
	w4.position(t, 4)
	w5 := openAsync(t, ctx, th.Hub, "x:1", "192.0.2.5")
	w5.position(t, 5)

	if got := th.Offload("x:1", 2); got != 2 {
		t.Fatalf("Offload(2) moved %d", got)
	}
	for i, w := range []*waiterRun{w1, w4} {
		if _, err := w.result(t); !errors.Is(err, hub.ErrElsewhere) {
			t.Fatalf("moved waiter %d: %v, want ErrElsewhere", i, err)
		}
	}
	w2.reaches(t, 1)
	w3.reaches(t, 2)
	w5.reaches(t, 3)
	if th.Waiting() != 3 {
		t.Fatalf("Waiting() = %d after moving 2 of 5", th.Waiting())
	}

	// w1 comes back: its slot elsewhere was taken.
	back := openReqAsync(t, ctx, th.Hub, hub.OpenRequest{Model: "x:1", ClientIP: "192.0.2.1", Front: true})
	back.position(t, 1)
	w2.position(t, 2)
	w3.position(t, 3)
	w5.position(t, 4)
	n.chunk(busy.ID(), "", true) // the slot goes to the head: the one back
	s, err := back.result(t)
	if err != nil {
		t.Fatalf("the request back in line: %v", err)
	}
	n.expect(wire.TypeInferenceReq, s.ID())
	select {
	case <-th.Freed():
		t.Fatal("Freed while requests wait here")
	default:
	}
	cancel() // the others leave
	for _, w := range []*waiterRun{w2, w3, w5} {
		if _, err := w.result(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter left: %v", err)
		}
	}
	n.chunk(s.ID(), "", true)
	select {
	case <-th.Freed():
	case <-time.After(waitFor):
		t.Fatal("no Freed signal for a slot free with nobody waiting")
	}
}

// breakerOf is the breaker state of node id as the hub lists it.
func breakerOf(h *hub.Hub, id string) string {
	for _, n := range h.Nodes() {
		if n.NodeID == id {
			return n.Breaker
		}
	}
	return ""
}
