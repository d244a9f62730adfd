package hub

import (
	"context"
	"slices"
	"strings"
	"time"
)

// OpenRequest describes one request to place on a node.
type OpenRequest struct {
	Model    string   // normalized model name
	ClientIP string   // the consumer, for the queue's fair share
	Exclude  []string // node ids not to use (nodes that already failed this request)
	// MinTier is the least trusted tier the consumer accepts (TierVerified,
	// say); "" accepts any tier but quarantined. Digest, if set, pins the
	// model's digest: only nodes that registered the model with it serve.
	MinTier string
	Digest  string
	// Only, if set, places the request on that node alone, whatever its
	// tier, and never waits for it (the router's own canaries).
	Only string
	// Build returns the inference_request frame for the request id, naming
	// the model as the chosen node registered it (a v1 node matches names
	// exactly: "stories" is not "stories:latest" there).
	Build func(requestID, model string) ([]byte, error)
	// Queued, if set, is called from Open's goroutine with the request's
	// 1-based queue position whenever it changes. An error abandons the wait.
	Queued func(position int) error
	// Front puts the request at the head of the model's queue if it must
	// wait: it waited before, was sent to another router's free node and
	// lost that node to another request.
	Front bool
	// Stay keeps the request here: Offload never sends it elsewhere.
	Stay bool
}

// Open places a request on a node and returns the stream of its answer.
// Among the nodes that serve the model, are available, have free capacity
// and whose circuit breaker lets a request through, the Policy chooses.
// When none can take it now but some available node is only busy, the
// request waits in the model's bounded, fair queue for up to the
// configured time. It returns ErrNoNode when no node (outside Exclude)
// serves the model at all, ErrUnavailable at once when the nodes that do
// are all unavailable or held out by their breakers (nothing to wait for),
// ErrQueueFull or ErrQueueTimeout when it could not get a node in time,
// ErrShutdown once the hub is closing (waiting requests too),
// ErrElsewhere when Offload sent the waiting request to a free node of
// another router, or the context's error.
func (h *Hub) Open(ctx context.Context, req OpenRequest) (*Stream, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrShutdown
	}
	wt := want{exclude: req.Exclude, minTier: req.MinTier, digest: normDigest(req.Digest), only: req.Only}
	if err := h.canServeLocked(req.Model, wt); err != nil {
		h.mu.Unlock()
		return nil, err
	}
	g := h.pickLocked(req.Model, wt)
	if g == nil {
		if h.cfg.Queue.MaxWaiting < 0 || wt.only != "" {
			h.mu.Unlock()
			return nil, ErrQueueFull
		}
		w := &waiter{model: req.Model, ip: req.ClientIP, want: wt, stay: req.Stay,
			ch: make(chan *grant, 1), pos: make(chan int, 1)}
		q := h.queues[req.Model]
		if q == nil {
			q = &modelQueue{perIP: map[string]int{}}
			h.queues[req.Model] = q
		}
		if err := q.add(w, h.cfg.Queue.MaxWaiting, req.Front); err != nil {
			h.mu.Unlock()
			return nil, err
		}
		h.waiting.Add(1)
		h.mu.Unlock()
		var err error
		if g, err = h.wait(ctx, w, req.Queued); err != nil {
			return nil, err
		}
	} else {
		h.mu.Unlock()
	}
	return h.start(g, req)
}

// wait blocks until the hub grants w a node, the wait times out, or ctx ends.
func (h *Hub) wait(ctx context.Context, w *waiter, queued func(int) error) (*grant, error) {
	timer := time.NewTimer(h.cfg.Queue.MaxWait)
	defer timer.Stop()
	for {
		select {
		case g := <-w.ch:
			h.waiting.Add(-1)
			if g.node == nil {
				return nil, g.err
			}
			return g, nil
		case p := <-w.pos:
			if queued != nil {
				if err := queued(p); err != nil {
					h.abandon(w)
					return nil, err
				}
			}
		case <-timer.C:
			h.abandon(w)
			return nil, ErrQueueTimeout
		case <-ctx.Done():
			h.abandon(w)
			return nil, ctx.Err()
		}
	}
}

// abandon takes a waiter out of its queue; a node granted to it meanwhile
// goes back.
func (h *Hub) abandon(w *waiter) {
	h.mu.Lock()
	removed := false
	if q := h.queues[w.model]; q != nil {
		removed = q.remove(w)
		if len(q.waiters) == 0 {
			delete(h.queues, w.model)
		}
	}
	h.mu.Unlock()
	h.waiting.Add(-1)
	if !removed {
		if g := <-w.ch; g.node != nil {
			h.release(g)
		}
	}
}

// release returns a reserved slot that was never used.
func (h *Hub) release(g *grant) {
	g.node.active.Add(-1)
	if g.trial {
		h.mu.Lock()
		g.node.rec.neutral()
		h.mu.Unlock()
	}
	h.kick(g.model)
}

// start sends the request to the granted node.
func (h *Hub) start(g *grant, req OpenRequest) (*Stream, error) {
	n := g.node
	s := &Stream{
		id:      newRequestID(),
		node:    n,
		rec:     n.rec,
		model:   req.Model,
		trial:   g.trial,
		claimed: g.claimed,
		tier:    g.tier,
		sent:    h.cfg.Now(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	n.mu.Lock()
	if n.dead {
		n.mu.Unlock()
		h.release(g)
		return nil, ErrNodeGone
	}
	n.pending[s.id] = s
	n.mu.Unlock()
	frame, err := req.Build(s.id, g.spelling)
	if err == nil {
		err = n.enqueue(frame)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// want is what a request asks of a node beyond its model.
type want struct {
	exclude []string
	minTier string
	digest  string // normalized (normDigest)
	only    string // one node, whatever its tier
}

// open reports whether the request takes any node that serves the model.
func (w want) open() bool {
	return len(w.exclude) == 0 && w.minTier == "" && w.digest == "" && w.only == ""
}

// allowsLocked reports whether n may serve the request for model: not
// excluded, not quarantined for it, trusted enough, with the pinned
// digest. h.mu must be held.
func (w want) allowsLocked(h *Hub, n *Node, model string) bool {
	if w.only != "" {
		return n.id == w.only
	}
	if slices.Contains(w.exclude, n.id) || !AtLeast(h.tierLocked(n, model), w.minTier) {
		return false
	}
	return w.digest == "" || normDigest(n.digestFor(model)) == w.digest
}

// normDigest is a digest without its "sha256:" prefix, in lower case.
func normDigest(d string) string {
	return strings.ToLower(strings.TrimPrefix(d, "sha256:"))
}

// canServeLocked reports whether waiting for model can succeed: nil when
// some registered node that w allows serves it and is available (busy or
// not) with a breaker that will let a request through; ErrNoNode when no
// node w allows serves it; ErrUnavailable when those that do are all
// unavailable or held out by their breakers. h.mu must be held.
func (h *Hub) canServeLocked(model string, w want) error {
	now := h.cfg.Now()
	any := false
	for n := range h.nodesWithLocked(model) {
		if !w.allowsLocked(h, n, model) {
			continue
		}
		any = true
		if n.registered && n.available && !n.rec.blocked(h.cfg.Breaker, now) {
			return nil
		}
	}
	if any {
		return ErrUnavailable
	}
	return ErrNoNode
}

// pickLocked chooses a node for model and reserves a slot on it, or returns
// nil. h.mu must be held.
func (h *Hub) pickLocked(model string, w want) *grant {
	now := h.cfg.Now()
	set := h.nodesWithLocked(model) // all have the model
	// One candidate list for every pick, under h.mu: a fresh one cost a
	// request one 6.8 KB allocation with 101 nodes serving the model.
	cands := h.cands[:0]
	defer func() {
		clear(cands) // no node stays reachable from the scratch
		h.cands = cands[:0]
	}()
	for n := range set {
		if !n.hasCapacity() || !w.allowsLocked(h, n, model) {
			continue
		}
		r := n.rec
		ok, trial := r.allow(h.cfg.Breaker, now)
		if !ok {
			continue
		}
		claimed := slices.Contains(n.loaded, model)
		warm, measured := r.warm(model, now, h.cfg.WarmWindow)
		cands = append(cands, Candidate{
			NodeID: n.id, Active: int(n.active.Load()), MaxConcurrent: n.maxConcurrent,
			Warm: warm, Measured: measured, Claimed: claimed && r.claimHolds(model, h.cfg.ColdFirstToken),
			Failing: r.failures > 0, Trial: trial,
			Reputation: r.reputation(), History: r.ok+r.bad > 0, TokensPerSec: r.tps, LastPicked: r.lastPick, node: n,
		})
	}
	// Capacity capped at the length: a policy that appends gets a copy, and
	// writes nothing into the scratch beyond what the clear below covers.
	i := h.cfg.Policy.Pick(cands[:len(cands):len(cands)])
	if i < 0 || i >= len(cands) {
		return nil
	}
	c := cands[i]
	n := c.node
	n.active.Add(1)
	n.rec.started(c.Trial, now)
	return &grant{node: n, trial: c.Trial, model: model, spelling: n.spellingFor(model), claimed: claimedRaw(n, model),
		tier: h.tierLocked(n, model)}
}

// endWaitsLocked ends every wait in every queue with err. h.mu must be held.
func (h *Hub) endWaitsLocked(err error) {
	for model, q := range h.queues {
		for _, w := range q.waiters {
			w.ch <- &grant{err: err}
		}
		delete(h.queues, model)
	}
}

// kick hands free capacity of model to its waiters, first come first
// served (a waiter that cannot use any free node — it excluded them — does
// not hold up those behind it).
func (h *Hub) kick(model string) {
	if h.waiting.Load() == 0 {
		return
	}
	h.mu.Lock()
	h.kickLocked(model)
	h.mu.Unlock()
}

// kickNodeLocked offers a node's capacity to the waiters of its models.
// h.mu must be held.
func (h *Hub) kickNodeLocked(n *Node) {
	if h.waiting.Load() == 0 {
		return
	}
	for _, m := range n.models {
		h.kickLocked(m.Name)
	}
}

func (h *Hub) kickAll() {
	if h.waiting.Load() == 0 {
		return
	}
	h.mu.Lock()
	for model := range h.queues {
		h.kickLocked(model)
	}
	h.mu.Unlock()
}

func (h *Hub) kickLocked(model string) {
	q := h.queues[model]
	if q == nil {
		return
	}
	for i := 0; i < len(q.waiters); {
		w := q.waiters[i]
		if err := h.canServeLocked(model, w.want); err != nil {
			q.remove(w)
			w.ch <- &grant{err: err} // nothing left to wait for
			continue
		}
		g := h.pickLocked(model, w.want)
		if g == nil {
			if w.want.open() {
				break // nobody behind can do better
			}
			i++
			continue
		}
		q.remove(w)
		w.ch <- g
	}
	if len(q.waiters) == 0 {
		delete(h.queues, model)
	}
}

// Outcome of a request, for the node's breaker and reputation.
type outcome int

const (
	outcomeNeutral outcome = iota // the consumer left, or the router ended it
	outcomeSuccess
	outcomeFailure
)

// record updates the node's record with a finished request (breaker,
// reputation, and what the router measured of the answer), then gives its
// slot to a waiter.
func (h *Hub) record(s *Stream, o outcome) {
	m := s.measured()
	opened := false
	h.mu.Lock()
	r := s.rec
	r.updated = h.cfg.Now()
	switch o {
	case outcomeSuccess:
		r.success(m)
		r.observe(s.model, m)
	case outcomeFailure:
		opened = r.failure(h.cfg.Breaker, r.updated)
		r.observe(s.model, m)
	default:
		if s.trial {
			r.neutral()
		}
	}
	if opened {
		h.gen++ // the node leaves the servable list
	}
	h.kickLocked(s.model)
	free := h.queues[s.model] == nil && !opened
	h.mu.Unlock()
	if free {
		select {
		case h.freed <- struct{}{}:
		default:
		}
	}
	if opened {
		h.quiet.Warn(s.node.source(), "circuit_open", "node circuit open", "node_id", s.node.id, "cooldown", h.cfg.Breaker.Cooldown.String())
	}
}

// claimedRaw is whether n claims model loaded now, whatever its record
// says of such claims (what the record's observation keeps). h.mu must
// be held.
func claimedRaw(n *Node, model string) bool { return slices.Contains(n.loaded, model) }
