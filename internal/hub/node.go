package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// FrameBudget bounds, per node connection, the frames that cost the
// router more than a chunk does. A node sends a heartbeat every 15 s and a
// models_update when its Ollama changes; frames past these rates are
// refused before they take the registry lock. Refused and unknown frames,
// and chunks for requests the node was not given, draw on the invalid
// budget; a node that spends it is disconnected (1008 too many invalid
// frames). Zero fields take the defaults noted.
type FrameBudget struct {
	HeartbeatsPerSecond float64 // default 1, burst 5
	ModelUpdatesPerMin  float64 // default 6, burst 5
	InvalidPerSecond    float64 // default 10
	InvalidBurst        int     // default 200
}

func (b *FrameBudget) setDefaults() {
	if b.HeartbeatsPerSecond <= 0 {
		b.HeartbeatsPerSecond = 1
	}
	if b.ModelUpdatesPerMin <= 0 {
		b.ModelUpdatesPerMin = 6
	}
	if b.InvalidPerSecond <= 0 {
		b.InvalidPerSecond = 10
	}
	if b.InvalidBurst <= 0 {
		b.InvalidBurst = 200
	}
}

// Node is one node connection. Its read loop runs in Hub.ServeNode.
type Node struct {
	hub       *Hub
	conn      *websocket.Conn
	ip        string
	host      string        // the Host the node dialed
	send      chan []byte   // bounded queue of frames to the node
	gone      chan struct{} // closed when the read loop has ended
	cancelRun context.CancelFunc
	lastSeen  atomic.Int64 // unix nanoseconds of the last frame, as the watchdog noted it
	seen      atomic.Bool  // a frame arrived since the watchdog last looked
	active    atomic.Int32 // requests in flight

	closeOnce sync.Once
	shutdownF atomic.Bool // closed by router shutdown

	// Read loop only.
	hbLimit, modelsLimit, invalidLimit *rate.Limiter

	// Set once at registration, before the node is visible to others.
	id            string
	connectedAt   time.Time
	maxConcurrent int
	key           string  // the public key it proved, "" for a keyless node
	rec           *record // its record (guarded by hub.mu like every record)

	// Guarded by hub.mu.
	registered    bool
	models        []nodeModel // set with hub.setModelsLocked, which keeps the hub's index
	available     bool
	loaded        []string // normalized names the node claims Ollama has loaded
	ollamaVersion string
	agent         string
	protocol      int

	mu      sync.Mutex // guards the following fields
	pending map[string]*Stream
	dead    bool // the read loop ended: no new requests
}

// hasCapacity reports whether the node takes new requests; hub.mu must be held.
func (n *Node) hasCapacity() bool {
	return n.registered && n.available && int(n.active.Load()) < n.maxConcurrent
}

// closeWith closes the connection with a status and reason, once, without
// blocking the caller: the close handshake needs the read loop running.
func (n *Node) closeWith(code websocket.StatusCode, reason string) {
	n.closeOnce.Do(func() {
		h := n.hub
		h.mu.Lock()
		h.wg.Add(1)
		h.mu.Unlock()
		go func() {
			defer h.wg.Done()
			_ = n.conn.Close(code, reason)
		}()
	})
}

func (n *Node) shutdown() {
	n.shutdownF.Store(true)
	n.closeWith(websocket.StatusGoingAway, "router shutting down")
}

// source names the node in rate-limited log lines.
func (n *Node) source() string {
	if n.id != "" {
		return n.id
	}
	return "ip:" + n.ip
}

// enqueue queues a frame for the node's writer without blocking. A node
// whose queue is full is not reading its socket; it is disconnected.
func (n *Node) enqueue(frame []byte) error {
	select {
	case <-n.gone:
		return ErrNodeGone
	default:
	}
	select {
	case n.send <- frame:
		return nil
	default:
		n.hub.quiet.Warn(n.source(), "send_queue_full", "node send queue full; disconnecting", "node_id", n.id)
		n.closeWith(websocket.StatusPolicyViolation, "send queue full")
		return ErrNodeBusy
	}
}

func (n *Node) run(ctx context.Context) {
	h := n.hub
	defer close(n.gone)
	timer := time.AfterFunc(h.cfg.RegistrationTimeout, func() {
		n.closeWith(websocket.StatusPolicyViolation, wire.CloseRegistrationTimeout)
	})
	typ, data, err := n.conn.Read(ctx)
	if !timer.Stop() {
		// The timeout fired: its close is under way; wait for it through
		// the read loop below returning at once.
		_ = n.conn.CloseNow()
		return
	}
	if err != nil {
		_ = n.conn.CloseNow()
		return
	}
	var f wire.NodeFrame
	if typ == websocket.MessageText {
		f, err = wire.DecodeNodeFrame(data)
	}
	if typ != websocket.MessageText || err != nil || f.Type != wire.TypeRegister {
		_ = n.conn.Close(websocket.StatusPolicyViolation, wire.CloseExpectedRegister)
		return
	}
	reg := f.RegisterFrame()
	if reason := wire.ValidateRegister(reg); reason != "" {
		h.quiet.Info("ip:"+n.ip, "register_refused", "node registration refused", "reason", reason)
		_ = n.conn.Close(websocket.StatusPolicyViolation, reason)
		return
	}
	key, reason := h.authenticate(ctx, n, reg)
	if reason == "" {
		reason = h.register(ctx, n, reg, key)
	}
	if reason != "" {
		h.quiet.Info("ip:"+n.ip, "register_refused", "node registration refused", "node_id", reg.NodeID, "reason", reason)
		_ = n.conn.Close(websocket.StatusPolicyViolation, reason)
		return
	}
	h.log.Info("node registered", "node_id", n.id, "models", len(reg.Models), "max_concurrent", reg.MaxConcurrent, "agent", reg.Agent)

	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		n.writeLoop(ctx)
	}()
	defer func() {
		h.unregister(n)
		n.failAll()
		n.cancelRun()
		writer.Wait()
		_ = n.conn.CloseNow()
		h.log.Info("node disconnected", "node_id", n.id)
	}()

	b := h.cfg.Budget
	n.hbLimit = rate.NewLimiter(rate.Limit(b.HeartbeatsPerSecond), 5)
	n.modelsLimit = rate.NewLimiter(rate.Limit(b.ModelUpdatesPerMin/60), 5)
	n.invalidLimit = rate.NewLimiter(rate.Limit(b.InvalidPerSecond), b.InvalidBurst)

	// "registered" is already in the send queue (see Hub.register).
	// Canceling ctx closes the connection, which ends the read below. One
	// AfterFunc for the connection replaces the one coder/websocket
	// registers on every read of a cancelable context (13% of the
	// router's CPU when relaying 160,000 tokens/s).
	stopWatch := context.AfterFunc(ctx, func() { _ = n.conn.CloseNow() })
	defer stopWatch()
	rctx := context.WithoutCancel(ctx)
	var buf bytes.Buffer
	for {
		typ, data, err := n.readFrame(rctx, &buf)
		if err != nil {
			return
		}
		n.seen.Store(true) // the watchdog stamps the time: no clock read per frame
		if typ != websocket.MessageText {
			n.invalid("binary_frame", nil)
			continue
		}
		f, err := wire.DecodeNodeFrame(data)
		if err != nil {
			n.invalid("frame_refused", err)
			continue
		}
		n.handle(f)
	}
}

// invalid counts a frame the router refused or ignored, logs it within the
// node's log budget, and disconnects a node that keeps sending them.
func (n *Node) invalid(kind string, err error) {
	h := n.hub
	if err != nil {
		h.quiet.Info(n.source(), kind, "node frame refused", "node_id", n.id, "err", err)
	} else {
		h.quiet.Info(n.source(), kind, "node frame ignored", "node_id", n.id)
	}
	if !n.invalidLimit.Allow() {
		h.quiet.Warn(n.source(), "too_many_invalid", "node sends too many invalid frames; disconnecting", "node_id", n.id)
		n.closeWith(websocket.StatusPolicyViolation, wire.CloseTooManyInvalid)
	}
}

// readFrame reads the next message into buf, which is reused from frame to
// frame: conn.Read allocates every message anew, which was most of the
// router's garbage per relayed token (and so of its GC pauses). data is
// valid until the next call; the frame decoders copy what they keep. The
// connection's read limit bounds the message, and a buffer grown by a rare
// large frame is given back rather than kept for the connection's life.
func (n *Node) readFrame(ctx context.Context, buf *bytes.Buffer) (websocket.MessageType, []byte, error) {
	typ, r, err := n.conn.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	if buf.Cap() > maxKeptReadBuffer {
		*buf = bytes.Buffer{}
	}
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return 0, nil, err
	}
	return typ, buf.Bytes(), nil
}

// maxKeptReadBuffer is the largest read buffer a node connection keeps
// between frames.
const maxKeptReadBuffer = 16 << 10

// registeredAck is the "registered" frame answering a node's register. It
// carries the protocol version (ext), so that a node can tell this router
// from a v1 one, which acknowledges with the node id only.
func registeredAck(id string) []byte {
	b, _ := json.Marshal(wire.Registered{Type: wire.TypeRegistered, NodeID: id, Protocol: wire.ProtocolVersion})
	return b
}

func (n *Node) writeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-n.send:
			if err := n.conn.Write(ctx, websocket.MessageText, b); err != nil {
				n.cancelRun()
				return
			}
		}
	}
}

func (n *Node) handle(f wire.NodeFrame) {
	h := n.hub
	switch f.Type {
	case wire.TypeInferenceChunk:
		n.deliver(f.RequestID, f.Chunk)
	case wire.TypeInferenceError:
		if s := n.take(f.RequestID); s != nil {
			h.record(s, outcomeFailure)
			s.fail(&NodeError{Code: nodeErrorCode(f.Error)})
		} else {
			n.invalid("unknown_request", nil)
		}
	case wire.TypeHeartbeat:
		if !n.hbLimit.Allow() {
			n.invalid("heartbeat_flood", nil)
			return
		}
		hb := f.HeartbeatFrame()
		loaded := normalizeAll(hb.LoadedModels) // bounded at decode; outside the lock
		h.mu.Lock()
		was := n.available
		n.available = hb.Available
		n.loaded = loaded
		if was != n.available {
			h.gen++
		}
		if !was && n.available {
			h.kickNodeLocked(n)
		}
		h.mu.Unlock()
	case wire.TypeModelsUpdate:
		if !n.modelsLimit.Allow() {
			n.invalid("models_update_flood", nil)
			return
		}
		if reason := wire.ValidateModels(f.Models); reason != "" {
			n.invalid("models_update_refused", nil)
			h.quiet.Warn(n.source(), "models_update_refused", "models_update refused", "node_id", n.id, "reason", reason)
			return
		}
		models := nodeModels(f.Models)
		h.mu.Lock()
		h.setModelsLocked(n, models)
		h.kickNodeLocked(n)
		h.mu.Unlock()
		h.quiet.Info(n.source(), "models_updated", "node models updated", "node_id", n.id, "models", len(models))
	default:
		// register again and unknown types are ignored, as v1 peers do,
		// but they draw on the invalid budget.
		n.invalid("ignored_"+frameKind(f.Type), nil)
	}
}

// frameKind names an ignored frame type for a log key: known ones by
// name, anything else as "unknown" (the type is the node's text).
func frameKind(t string) string {
	if t == wire.TypeRegister {
		return "register"
	}
	return "unknown"
}

// nodeErrorCode keeps a node's error code only if it is one the protocol
// defines: a node's own text never travels further.
func nodeErrorCode(code string) string {
	switch code {
	case wire.ErrInvalidRequest, wire.ErrOllamaUnavailable, wire.ErrOllamaError, wire.ErrOllamaBusy:
		return code
	}
	return wire.ErrOllamaError
}

// deliver hands a chunk to its request without blocking. A chunk for a
// request this node was not given is dropped.
func (n *Node) deliver(id string, c *wire.Chunk) {
	var s *Stream
	if c.Done {
		s = n.take(id)
	} else {
		n.mu.Lock()
		s = n.pending[id]
		n.mu.Unlock()
	}
	if s == nil {
		n.invalid("unknown_request", nil)
		return
	}
	ok := s.push(c)
	if c.Done {
		// Taken above: record it now that the final chunk is measured.
		n.hub.record(s, outcomeSuccess)
	}
	if ok {
		return
	}
	// The consumer is not keeping up: fail this request only.
	if c.Done {
		s.closed.Store(true)
		s.fail(ErrSlowConsumer)
		return
	}
	s.end(outcomeNeutral, ErrSlowConsumer)
}

// take removes a pending request and releases its capacity; it returns nil
// if the request was already finished. Whoever takes a request records its
// outcome.
func (n *Node) take(id string) *Stream {
	n.mu.Lock()
	s := n.pending[id]
	delete(n.pending, id)
	n.mu.Unlock()
	if s != nil {
		n.active.Add(-1)
	}
	return s
}

func (n *Node) cancel(id string) {
	b, _ := json.Marshal(wire.CancelRequest{Type: wire.TypeCancelRequest, RequestID: id})
	_ = n.enqueue(b)
}

// failAll ends every pending request when the connection is gone. A node
// that drops requests counts as failing them, unless the router is the one
// shutting it down.
func (n *Node) failAll() {
	err, o := ErrNodeGone, outcomeFailure
	if n.shutdownF.Load() {
		err, o = ErrShutdown, outcomeNeutral
	}
	n.mu.Lock()
	n.dead = true
	streams := n.pending
	n.pending = map[string]*Stream{}
	n.mu.Unlock()
	for _, s := range streams {
		n.active.Add(-1)
		n.hub.record(s, o)
		s.fail(err)
	}
}

func normalizeAll(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	out := make([]string, len(names))
	for i, s := range names {
		out[i] = wire.NormalizeModel(s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
