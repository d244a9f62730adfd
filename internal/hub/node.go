package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// Node is one node connection. Its read loop runs in Hub.ServeNode.
type Node struct {
	hub       *Hub
	conn      *websocket.Conn
	ip        string
	send      chan []byte   // bounded queue of frames to the node
	gone      chan struct{} // closed when the read loop has ended
	cancelRun context.CancelFunc
	lastSeen  atomic.Int64 // unix nanoseconds of the last frame, as the watchdog noted it
	seen      atomic.Bool  // a frame arrived since the watchdog last looked
	active    atomic.Int32 // requests in flight

	closeOnce sync.Once
	shutdownF atomic.Bool // closed by router shutdown

	// Set once at registration, before the node is visible to others.
	id          string
	connectedAt time.Time

	// Guarded by hub.mu.
	registered    bool
	models        []wire.Model // normalized names; set with hub.setModelsLocked, which keeps the hub's index
	available     bool
	loaded        []string
	maxConcurrent int
	ollamaVersion string
	agent         string

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
		n.hub.log.Warn("node send queue full; disconnecting", "node_id", n.id)
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
		_ = n.conn.Close(websocket.StatusPolicyViolation, reason)
		return
	}
	if reason := h.register(n, reg); reason != "" {
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
			continue
		}
		f, err := wire.DecodeNodeFrame(data)
		if err != nil {
			h.log.Debug("node frame refused", "node_id", n.id, "err", err)
			continue
		}
		n.handle(f)
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

// registeredAck is the "registered" frame answering a node's register.
func registeredAck(id string) []byte {
	b, _ := json.Marshal(wire.Registered{Type: wire.TypeRegistered, NodeID: id})
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
			h.record(s, outcomeFailure, 0)
			s.fail(&NodeError{Code: f.Error})
		}
	case wire.TypeHeartbeat:
		hb := f.HeartbeatFrame()
		h.mu.Lock()
		n.available = hb.Available
		n.loaded = normalizeAll(hb.LoadedModels)
		h.kickNodeLocked(n)
		h.mu.Unlock()
	case wire.TypeModelsUpdate:
		if reason := wire.ValidateModels(f.Models); reason != "" {
			h.log.Warn("models_update refused", "node_id", n.id, "reason", reason)
			return
		}
		h.mu.Lock()
		h.setModelsLocked(n, f.Models)
		h.kickNodeLocked(n)
		h.mu.Unlock()
		h.log.Info("node models updated", "node_id", n.id, "models", len(f.Models))
	}
	// register again and unknown types are ignored, as v1 peers do.
}

// deliver hands a chunk to its request without blocking. A chunk for a
// request this node was not given is dropped.
func (n *Node) deliver(id string, c *wire.Chunk) {
	var s *Stream
	if c.Done {
		if s = n.take(id); s != nil {
			n.hub.record(s, outcomeSuccess, c.TokensPerSecond())
		}
	} else {
		n.mu.Lock()
		s = n.pending[id]
		n.mu.Unlock()
	}
	if s == nil {
		return
	}
	if s.push(c, n.hub.cfg.StreamOverflowBytes) {
		return
	}
	// The consumer is not keeping up: fail this request only (a done
	// chunk was taken already).
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
		n.hub.record(s, o, 0)
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
	return out
}

// capabilities says whether a model thinks and calls tools: from what its
// nodes reported (Ollama's /api/show), or for v1 nodes that report nothing,
// from the name, as v1 routers did.
func capabilities(name string, reported []string) (thinking, tools bool) {
	if len(reported) > 0 {
		return slices.Contains(reported, "thinking"), slices.Contains(reported, "tools")
	}
	lower := strings.ToLower(name)
	for _, s := range []string{"qwen3", "deepseek-r1", "gpt-oss", "magistral", "phi4-reasoning"} {
		if strings.Contains(lower, s) {
			thinking = true
		}
	}
	for _, s := range []string{"qwen3", "qwen2.5", "llama3.1", "llama3.2", "llama3.3", "mistral", "mixtral", "command-r", "granite", "gpt-oss", "firefunction"} {
		if strings.Contains(lower, s) {
			tools = true
		}
	}
	return thinking, tools
}

// Stream is one request's answer from one node. Chunks arrive on a bounded
// buffer; when the request fails, Done is closed and Err says why. Its
// methods are safe for concurrent use; one goroutine should read it.
type Stream struct {
	id    string
	node  *Node
	model string
	trial bool // the node's half-open breaker trial
	ch    chan *wire.Chunk
	done  chan struct{}

	failOnce sync.Once
	err      error // set before done is closed
	closed   atomic.Bool

	// Chunks that did not fit in ch wait here, in order, up to
	// StreamOverflowBytes; the reader moves them into ch (Refill). A burst
	// from a fast node is absorbed; a consumer that stays behind by more
	// than the bound fails its own request.
	overflowLen   atomic.Int32
	omu           sync.Mutex // guards the following fields
	overflow      []*wire.Chunk
	overflowBytes int
}

// chunkBytes estimates what a chunk holds in memory.
func chunkBytes(c *wire.Chunk) int {
	n := 64
	if m := c.Message; m != nil {
		n += len(m.Content) + len(m.Thinking)
		for _, tc := range m.ToolCalls {
			n += len(tc.Function.Name) + len(tc.Function.Arguments)
		}
	}
	return n
}

// push hands a chunk to the reader without blocking, in order. It reports
// false when the request's buffers are full: the reader is too slow.
func (s *Stream) push(c *wire.Chunk, limit int) bool {
	if s.overflowLen.Load() == 0 {
		select {
		case s.ch <- c:
			return true
		default:
		}
	}
	s.omu.Lock()
	defer s.omu.Unlock()
	if len(s.overflow) == 0 {
		// The reader may have made room since the check above.
		select {
		case s.ch <- c:
			return true
		default:
		}
	}
	size := chunkBytes(c)
	if s.overflowBytes+size > limit {
		s.overflow, s.overflowBytes = nil, 0
		s.overflowLen.Store(0)
		return false
	}
	s.overflow = append(s.overflow, c)
	s.overflowBytes += size
	s.overflowLen.Store(int32(len(s.overflow)))
	// The reader may have emptied ch after the failed send above but before
	// the Store, seeing nothing to refill: move what fits now, so that no
	// chunk is left behind with nobody to wake.
	s.refillLocked()
	return true
}

// Refill moves waiting chunks into Chunks; the reader calls it after each
// receive from Chunks, so that chunks held back by a burst keep flowing.
// It costs one atomic load when nothing waits.
func (s *Stream) Refill() {
	if s.overflowLen.Load() == 0 {
		return
	}
	s.omu.Lock()
	defer s.omu.Unlock()
	s.refillLocked()
}

// refillLocked moves overflow chunks into ch while it has room. s.omu must
// be held.
func (s *Stream) refillLocked() {
	i := 0
	for ; i < len(s.overflow); i++ {
		select {
		case s.ch <- s.overflow[i]:
			s.overflowBytes -= chunkBytes(s.overflow[i])
			s.overflow[i] = nil
			continue
		default:
		}
		break
	}
	s.overflow = s.overflow[i:]
	if len(s.overflow) == 0 {
		s.overflow = nil
	}
	s.overflowLen.Store(int32(len(s.overflow)))
}

// ID is the request id the node knows the request by.
func (s *Stream) ID() string { return s.id }

// NodeID names the node serving the stream (never shown to consumers).
func (s *Stream) NodeID() string { return s.node.id }

// Chunks delivers the node's chunks in order; the last one has Done set.
// Call Refill after each receive.
func (s *Stream) Chunks() <-chan *wire.Chunk { return s.ch }

// Done is closed when the request failed; Err then tells why.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is the reason the stream failed, once Done is closed.
func (s *Stream) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Stream) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Close ends the consumer's interest in the stream: if the node is still
// working on it, the node is told to cancel. Close is idempotent.
func (s *Stream) Close() {
	s.end(outcomeNeutral, errClosed)
}

// Abort ends the stream because the node misbehaved (it did not answer in
// time, or stalled): the node is told to cancel and the failure counts
// against it, as an error would.
func (s *Stream) Abort() {
	s.end(outcomeFailure, errClosed)
}

// end takes the request from its node if the node still has it (telling
// the node to cancel, and recording o), then fails the stream with err.
func (s *Stream) end(o outcome, err error) {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	if s.node.take(s.id) != nil {
		// The node hears of the cancel before the request that record
		// may hand the freed slot to: a node at capacity would refuse it.
		s.node.cancel(s.id)
		s.node.hub.record(s, o, 0)
	}
	s.fail(err)
}

var errClosed = errors.New("stream closed")
