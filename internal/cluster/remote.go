package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// A forwarded request, router A (the consumer's) to router B (the node's):
//
//  1. A subscribes to an inbox for the events, then publishes a request
//     on idleclaw.dispatch.<B> with that inbox as its reply subject.
//  2. B validates it as a consumer's and answers an acceptance on the
//     reply subject (ok, or the reason it cannot: no_node, busy,
//     refused). With no router listening, NATS answers "no responders"
//     there at once.
//  3. B runs it through its dispatch path and publishes each event, in
//     order (numbered), to A's inbox, with a heartbeat whenever it has
//     sent nothing for Silence/4. (A router of the earlier version, which
//     asked with request-reply on a reply subject of its own, gets its
//     acceptance there and the events on the inbox the request names.)
//  4. A sends "a" (alive) on idleclaw.ctl.<B>.<id> every aliveEvery, and
//     "c" (cancel) when its consumer goes away; B cancels the request on
//     "c" or when A is silent for deadPeer.
//
// A takes B for gone when its inbox is silent for Silence: before the
// first token it tries another router; after it, it ends the consumer's
// stream with an error.

// Bounds of the messages between routers.
const (
	maxRequestBytes = wire.MaxFrameBytes + 64<<10
	maxReplyBytes   = 4 << 10
	maxFrameBytes   = 1 << 20  // one event
	maxAnswerBytes  = 32 << 20 // one request's events together
	maxIDLen        = 32
	maxInboxLen     = 128
	aliveEvery      = 500 * time.Millisecond
	eventQueue      = 1024 // events waiting for A's relay, per request
	deadPeer        = 3 * time.Second
)

// Acceptance reasons.
const (
	reasonNoNode  = "no_node"
	reasonBusy    = "busy"
	reasonRefused = "refused"
)

// Consumer-safe messages for failures of the hop between routers.
const (
	msgRouterGone = "the router serving this request stopped answering"
	msgRelayLost  = "part of the answer was lost between routers"
	msgNoRouter   = "no node available to continue"
)

type request struct {
	ID     string      `json:"id"`
	From   string      `json:"from"`
	Events string      `json:"events"`
	Wait   bool        `json:"wait"`
	Req    requestBody `json:"req"`
}

// requestBody is dispatch.Request as it travels (Node never does).
type requestBody struct {
	Model      string           `json:"model"`
	ClientIP   string           `json:"client_ip,omitempty"`
	Messages   []ollama.Message `json:"messages"`
	Think      bool             `json:"think,omitempty"`
	ThinkLevel string           `json:"think_level,omitempty"`
	Options    json.RawMessage  `json:"options,omitempty"`
	Format     json.RawMessage  `json:"format,omitempty"`
	Tools      json.RawMessage  `json:"tools,omitempty"`
	MinTier    string           `json:"min_tier,omitempty"`
	Digest     string           `json:"digest,omitempty"`
}

type reply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// frame is one message on A's inbox.
type frame struct {
	Seq  uint64 `json:"s,omitempty"` // events count from 1; heartbeats have none
	Beat bool   `json:"b,omitempty"`
	End  string `json:"end,omitempty"` // dispatch found no node (a reason), nothing was emitted
	Ev   *event `json:"e,omitempty"`
}

// event is dispatch.Event as it travels.
type event struct {
	Kind         dispatch.Kind     `json:"k"`
	Text         string            `json:"t,omitempty"`
	Tool         string            `json:"tool,omitempty"`
	Status       string            `json:"st,omitempty"`
	FinishReason string            `json:"fr,omitempty"`
	Usage        *dispatch.Usage   `json:"u,omitempty"`
	Calls        []ollama.ToolCall `json:"calls,omitempty"`
	Position     int               `json:"pos,omitempty"`
	Failure      dispatch.Failure  `json:"f,omitempty"`
	Tier         string            `json:"tier,omitempty"`
	More         bool              `json:"more,omitempty"`
}

func toWire(ev dispatch.Event) *event {
	e := &event{Kind: ev.Kind, Text: ev.Text, Tool: ev.Tool, Status: ev.Status, FinishReason: ev.FinishReason,
		Calls: ev.Calls, Position: ev.Position, Failure: ev.Failure, Tier: ev.Tier, More: ev.More}
	if ev.Kind == dispatch.Done {
		u := ev.Usage
		e.Usage = &u
	}
	return e
}

// finishReasons and tiers are the values a relayed event may carry; any
// other is not passed on to the consumer.
var (
	finishReasons = map[string]bool{"": true, "stop": true, "length": true, "error": true, "tool_calls": true}
	tiers         = map[string]bool{"": true, hub.TierTrusted: true, hub.TierVerified: true, hub.TierUnverified: true,
		hub.TierAnonymous: true}
)

// maxFailedText bounds a relayed failure's text (the other router's
// consumer-safe message).
const maxFailedText = 256

// maxCallID bounds the id of a relayed tool call.
const maxCallID = 64

// decodeFrame decodes one message of a forwarded answer, refusing one
// over maxFrameBytes; its event is checked by event.dispatch.
func decodeFrame(data []byte) (frame, bool) {
	var f frame
	if len(data) > maxFrameBytes || json.Unmarshal(data, &f) != nil {
		return frame{}, false
	}
	return f, true
}

func (e *event) dispatch() (dispatch.Event, bool) {
	if e.Kind < dispatch.Content || e.Kind > dispatch.Done || e.Position < 0 || len(e.Calls) > 64 ||
		!finishReasons[e.FinishReason] || e.Failure < dispatch.FailNode || e.Failure > dispatch.FailTimeout {
		return dispatch.Event{}, false
	}
	for _, c := range e.Calls {
		if !wire.ValidToolName(c.Function.Name) || len(c.ID) > maxCallID {
			return dispatch.Event{}, false
		}
	}
	if !tiers[e.Tier] {
		e.Tier = "" // a tier this router does not know says nothing
	}
	if e.Kind == dispatch.Failed && (len(e.Text) > maxFailedText || e.Text == "") {
		e.Text = msgRelayLost
	}
	ev := dispatch.Event{Kind: e.Kind, Text: e.Text, Tool: e.Tool, Status: e.Status, FinishReason: e.FinishReason,
		Calls: e.Calls, Position: e.Position, Failure: e.Failure, Tier: e.Tier, More: e.More}
	if e.Usage != nil {
		ev.Usage = *e.Usage
	}
	return ev, true
}

// ---- router A: the consumer's ----

// noResponderWaits are the pauses before asking a router again when NATS
// answered that nothing listens on its subject. A router that has just
// moved to another server of a NATS cluster is heard there again once
// its subscriptions have spread, milliseconds later, while its summary
// is still fresh; a router that is gone costs each request sent its way
// their sum (150 ms) until its summary expires.
var noResponderWaits = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond}

// ask publishes the request b to router and waits for its acceptance,
// the first message on inbox (sub). The request's reply subject is the
// events inbox: B's acceptance is its first message there, the events
// follow it, and with no router listening NATS answers there at once (no
// responders). Then nothing received the request, and it is asked again
// as it is after each of noResponderWaits.
func (c *Cluster) ask(ctx context.Context, router, inbox string, sub *nats.Subscription, b []byte) (*nats.Msg, error) {
	for i := 0; ; i++ {
		if err := c.nc.PublishMsg(&nats.Msg{Subject: dispatchSubject(router), Reply: inbox, Data: b}); err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.AcceptTimeout)
		m, err := sub.NextMsgWithContext(actx)
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) || i == len(noResponderWaits) {
			return m, err
		}
		if err := c.pause(ctx, noResponderWaits[i]); err != nil {
			return nil, err
		}
	}
}

// sleep waits d or until ctx ends: a Cluster's pause between asks.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Chat implements server.Peers: it runs req on another router's nodes.
func (c *Cluster) Chat(ctx context.Context, req dispatch.Request, wait bool, emit func(dispatch.Event) error) (dispatch.Result, error) {
	if !c.nc.IsConnected() || req.Node != "" {
		return dispatch.Result{Outcome: "no_node"}, dispatch.ErrNoNode
	}
	body := requestBody{Model: req.Model, ClientIP: req.ClientIP, Messages: req.Messages, Think: req.Think,
		ThinkLevel: req.ThinkLevel, Options: req.Options, Format: req.Format, Tools: req.Tools,
		MinTier: req.MinTier, Digest: req.Digest}
	// However the other routers behave (heartbeats for ever, keep-alives
	// without an answer), the request ends by this router's own limit.
	ctx, cancel := context.WithTimeout(ctx, c.cfg.MaxRequest)
	defer cancel()
	st := &relay{emit: emit, start: time.Now()}
	for i, r := range c.candidates(req.Model, wait) {
		if i >= c.cfg.MaxTries {
			break
		}
		res, err, again := c.try(ctx, r, body, wait, st)
		if !again || st.answered {
			// Once part of an answer (or its failure) went out, no other
			// router may add to it: try ends such a stream itself.
			return res, err
		}
		if ctx.Err() != nil {
			return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, ctx.Err()
		}
	}
	if st.emitted {
		// Something (a keep-alive, a queue position) went out: the
		// stream has begun and must end as streams do.
		if err := st.emit(dispatch.Event{Kind: dispatch.Failed, Text: msgNoRouter, Failure: dispatch.FailRetry}); err != nil {
			return dispatch.Result{Outcome: "canceled"}, err
		}
		if err := st.emit(dispatch.Event{Kind: dispatch.Done, FinishReason: "error"}); err != nil {
			return dispatch.Result{Outcome: "canceled"}, err
		}
		return dispatch.Result{Outcome: "error", ErrorMessage: msgNoRouter}, nil
	}
	return dispatch.Result{Outcome: "no_node"}, dispatch.ErrNoNode
}

// candidates lists the routers to try for a model: those with a free
// slot for it, the most free first; with wait, then those whose nodes
// serve it at all, the most nodes first.
func (c *Cluster) candidates(model string, wait bool) []string {
	type cand struct {
		id   string
		n    int
		free bool
	}
	var cs []cand
	for _, r := range c.fresh() {
		for _, m := range r.sum.Now {
			if m.Name == model && m.FreeSlots > 0 {
				cs = append(cs, cand{r.sum.Router, m.FreeSlots, true})
				break
			}
		}
		if !wait || (len(cs) > 0 && cs[len(cs)-1].id == r.sum.Router) {
			continue
		}
		for _, m := range r.sum.All {
			if m.Name == model && m.Nodes > 0 {
				cs = append(cs, cand{r.sum.Router, m.Nodes, false})
				break
			}
		}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].free != cs[j].free {
			return cs[i].free
		}
		return cs[i].n > cs[j].n
	})
	out := make([]string, len(cs))
	for i, x := range cs {
		out[i] = x.id
	}
	return out
}

// relay is what one request has sent its consumer, over its tries.
type relay struct {
	emit     func(dispatch.Event) error
	start    time.Time
	first    time.Duration
	emitted  bool // some event went out
	answered bool // some of the answer went out: no other router may take over
	failed   bool // a failure went out: only Done may follow
	bytes    int
}

// try asks one router to run the request and relays its events. again
// says the router did not take it, or went away before any of the answer
// went out, so another may be tried.
func (c *Cluster) try(ctx context.Context, router string, body requestBody, wait bool, st *relay) (res dispatch.Result, err error, again bool) {
	id := NewRouterID()[2:]
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return dispatch.Result{}, nil, true
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(eventQueue, 2*maxFrameBytes)
	b, err := json.Marshal(request{ID: id, From: c.cfg.RouterID, Events: inbox, Wait: wait, Req: body})
	if err != nil || len(b) > maxRequestBytes {
		return dispatch.Result{Outcome: "no_node"}, dispatch.ErrNoNode, false
	}
	m, err := c.ask(ctx, router, inbox, sub, b)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Info("router did not accept", "router", router, "err", err)
		}
		return dispatch.Result{}, nil, true
	}
	var rep reply
	if len(m.Data) > maxReplyBytes || json.Unmarshal(m.Data, &rep) != nil || !rep.OK {
		c.log.Debug("router refused", "router", router, "reason", rep.Reason)
		return dispatch.Result{}, nil, true
	}

	// Accepted: tell B we are here until the request ends.
	ctl := controlSubject(router, id)
	finished := make(chan struct{})
	aliveDone := make(chan struct{})
	go func() {
		defer close(aliveDone)
		t := time.NewTicker(aliveEvery)
		defer t.Stop()
		for {
			select {
			case <-finished:
				return
			case <-t.C:
				_ = c.nc.Publish(ctl, []byte("a"))
			}
		}
	}()
	complete := false
	defer func() {
		close(finished)
		<-aliveDone
		if !complete {
			_ = c.nc.Publish(ctl, []byte("c"))
		}
	}()

	var next uint64 = 1
	held := false // the last event went out unflushed: another was already here
	fail := func(text string) (dispatch.Result, error, bool) {
		// After the first token: end the consumer's stream here (with
		// the failure, unless the other router sent one already).
		if !st.failed {
			st.failed = true
			if err := st.emit(dispatch.Event{Kind: dispatch.Failed, Text: text, Failure: dispatch.FailNode}); err != nil {
				return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, err, false
			}
		}
		if err := st.emit(dispatch.Event{Kind: dispatch.Done, FinishReason: "error"}); err != nil {
			return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, err, false
		}
		return dispatch.Result{Outcome: "error", FirstToken: st.first, ErrorMessage: text}, nil, false
	}
	for {
		rctx, rcancel := context.WithTimeout(ctx, c.cfg.Silence)
		m, err := sub.NextMsgWithContext(rctx)
		rcancel()
		if err != nil {
			if ctx.Err() != nil {
				return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, ctx.Err(), false
			}
			msg := msgRouterGone
			if errors.Is(err, nats.ErrSlowConsumer) {
				msg = msgRelayLost
			}
			c.log.Warn("router went silent", "router", router, "answered", st.answered, "err", err)
			if !st.answered {
				return dispatch.Result{}, nil, true
			}
			return fail(msg)
		}
		f, ok := decodeFrame(m.Data)
		if !ok {
			if !st.answered {
				return dispatch.Result{}, nil, true
			}
			return fail(msgRelayLost)
		}
		switch {
		case f.Beat:
			if held {
				// What waited was only a heartbeat: the held event goes
				// out now, with a keep-alive behind it.
				held = false
				if err := st.emit(dispatch.Event{Kind: dispatch.KeepAlive}); err != nil {
					return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, err, false
				}
			}
			continue
		case f.End != "":
			// B's dispatch found no node after all: nothing should have
			// been emitted; if something was, the stream ends here.
			complete = true
			if st.answered {
				return fail(msgRelayLost)
			}
			return dispatch.Result{}, nil, true
		case f.Ev == nil || f.Seq != next:
			if !st.answered {
				return dispatch.Result{}, nil, true
			}
			return fail(msgRelayLost)
		}
		next++
		ev, ok := f.Ev.dispatch()
		st.bytes += len(m.Data)
		if !ok || st.bytes > maxAnswerBytes {
			if !st.answered {
				return dispatch.Result{}, nil, true
			}
			return fail(msgRelayLost)
		}
		switch ev.Kind {
		case dispatch.Content, dispatch.Thinking, dispatch.ToolCalls, dispatch.ToolState, dispatch.Failed:
			// A failure is part of the answer too: after it only Done may
			// come, from this router if not from that one.
			if !st.answered {
				st.answered = true
				st.first = time.Since(st.start)
			}
			if ev.Kind == dispatch.Failed {
				st.failed = true
			}
		}
		st.emitted = true
		// The consumer's writes are joined while events wait here, as
		// the serving router's are while chunks wait there: an event is
		// flushed at once unless another has already arrived.
		held = false
		if !ev.More && ev.Kind != dispatch.Done {
			if n, _, err := sub.Pending(); err == nil && n > 0 {
				ev.More, held = true, true
			}
		}
		if err := st.emit(ev); err != nil {
			return dispatch.Result{Outcome: "canceled", FirstToken: st.first}, err, false
		}
		if ev.Kind == dispatch.Done {
			complete = true
			return dispatch.Result{Outcome: outcomeOf(ev), Tokens: ev.Usage.CompletionTokens, FirstToken: st.first, Tier: ev.Tier}, nil, false
		}
	}
}

func outcomeOf(ev dispatch.Event) string {
	switch ev.FinishReason {
	case "length":
		return "length"
	case "error":
		return "error"
	}
	return "ok"
}

// ---- router B: the node's ----

// decodeRequest decodes a request another router forwards, refusing one
// over maxRequestBytes, or whose id, sender or events inbox could not
// name what they name (the id and the inbox become parts of subjects).
// The request itself is checked as a consumer's by Local.CheckRemote.
func decodeRequest(data []byte) (request, bool) {
	var r request
	if len(data) > maxRequestBytes || json.Unmarshal(data, &r) != nil || r.ID == "" || len(r.ID) > maxIDLen ||
		strings.ContainsAny(r.ID, ".*> ") || !ValidRouterID(r.From) || len(r.Events) > maxInboxLen ||
		!strings.HasPrefix(r.Events, "_INBOX.") || strings.ContainsAny(r.Events, "*> ") {
		return request{}, false
	}
	return r, true
}

// errEventTooLarge ends a forwarded answer with an event too large to cross.
var errEventTooLarge = errors.New("event too large to forward")

// handleRequest takes a request another router forwards. It runs on the
// subscription's goroutine: the work goes to a goroutine of its own.
func (c *Cluster) handleRequest(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	r, ok := decodeRequest(m.Data)
	if !ok {
		respond(m, reply{Reason: reasonRefused})
		return
	}
	select {
	case c.slots <- struct{}{}:
	default:
		respond(m, reply{Reason: reasonBusy})
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.slots
		respond(m, reply{Reason: reasonBusy})
		return
	}
	c.streams.Add(1) // under c.mu, so that Close's Wait cannot start between
	c.mu.Unlock()
	go func() {
		defer c.streams.Done()
		defer func() { <-c.slots }()
		c.serve(m, r)
	}()
}

// running is a forwarded request running here, as its control messages
// find it.
type running struct {
	cancel context.CancelFunc
	alive  atomic.Int64 // when A last said it is there (unix ns)
}

// handleControl takes A's "a" (alive) and "c" (cancel) for the requests
// running here, on one subscription for them all.
func (c *Cluster) handleControl(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c.mu.Lock()
	run := c.running[id]
	c.mu.Unlock()
	if run == nil {
		return
	}
	if string(m.Data) == "c" {
		run.cancel()
		return
	}
	run.alive.Store(time.Now().UnixNano())
}

func respond(m *nats.Msg, r reply) {
	b, _ := json.Marshal(r)
	_ = m.Respond(b)
}

func (c *Cluster) serve(m *nats.Msg, r request) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	b := r.Req
	req := dispatch.Request{Model: b.Model, ClientIP: b.ClientIP, Messages: b.Messages, Think: b.Think,
		ThinkLevel: b.ThinkLevel, Options: b.Options, Format: b.Format, Tools: b.Tools, MinTier: b.MinTier, Digest: b.Digest}
	if err := c.local.CheckRemote(ctx, &req, r.Wait); err != nil {
		reason := reasonRefused
		if errors.Is(err, dispatch.ErrBusy) {
			reason = reasonBusy
		} else if errors.Is(err, dispatch.ErrNoNode) {
			reason = reasonNoNode
		}
		respond(m, reply{Reason: reason})
		return
	}
	run := &running{cancel: cancel}
	run.alive.Store(time.Now().UnixNano())
	c.mu.Lock()
	if _, dup := c.running[r.ID]; dup {
		c.mu.Unlock()
		respond(m, reply{Reason: reasonRefused})
		return
	}
	c.running[r.ID] = run
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.running, r.ID)
		c.mu.Unlock()
	}()
	respond(m, reply{OK: true})

	// Heartbeats while nothing else goes out; A's silence cancels.
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	beat, _ := json.Marshal(frame{Beat: true})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		every := c.cfg.Silence / 4
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now().UnixNano()
			if time.Duration(now-run.alive.Load()) > deadPeer {
				c.log.Info("the consumer's router went silent; canceling", "router", r.From)
				cancel()
				return
			}
			if time.Duration(now-last.Load()) >= every {
				_ = c.nc.Publish(r.Events, beat)
			}
		}
	}()
	defer func() {
		cancel()
		<-hbDone
	}()

	var seq uint64
	emit := func(ev dispatch.Event) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("forwarded request: %w", err)
		}
		seq++
		fb, err := json.Marshal(frame{Seq: seq, Ev: toWire(ev)})
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		if len(fb) > maxFrameBytes {
			// One event this large cannot cross: the answer ends here.
			f1, _ := json.Marshal(frame{Seq: seq, Ev: &event{Kind: dispatch.Failed, Text: msgRelayLost, Failure: dispatch.FailNode}})
			f2, _ := json.Marshal(frame{Seq: seq + 1, Ev: &event{Kind: dispatch.Done, FinishReason: "error", Usage: &dispatch.Usage{}}})
			_ = c.nc.Publish(r.Events, f1)
			_ = c.nc.Publish(r.Events, f2)
			return errEventTooLarge
		}
		if err := c.nc.Publish(r.Events, fb); err != nil {
			return fmt.Errorf("publish event: %w", err)
		}
		last.Store(time.Now().UnixNano())
		return nil
	}
	_, err := c.local.RunRemote(ctx, req, emit)
	if errors.Is(err, dispatch.ErrNoNode) {
		end, _ := json.Marshal(frame{End: reasonNoNode})
		_ = c.nc.Publish(r.Events, end)
	}
}
