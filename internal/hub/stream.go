package hub

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// Stream is one request's answer from one node. The node's read loop
// pushes chunks into a queue bounded in bytes (Config.StreamBufferBytes,
// and the hub-wide Config.MaxBufferedBytes over every stream), never
// blocking; the consumer's side takes them with TryNext after each Wake. A
// consumer that falls further behind than the bound fails its own request,
// never the node's read loop. When the request fails, Done is closed and
// Err says why; chunks queued before the failure are still delivered
// first. Its methods are safe for concurrent use; one goroutine should
// read it.
//
// The stream also measures, on the router's clock, what the selection
// policy may believe: the time from sending the request to the first
// chunk that carries an answer, and the tokens per second over the
// answer, counted from its text (bytesPerToken), not from its chunks: how
// a node cuts its answer into chunks (one byte each, or lines its agent
// joined) does not change its speed. Nothing the node reports about its
// speed is used.
type Stream struct {
	id      string
	node    *Node
	rec     *record
	model   string // normalized
	trial   bool   // the node's half-open breaker trial
	claimed bool   // the node claimed the model loaded when it was chosen
	tier    string // the node's trust tier for the model when it was chosen
	sent    time.Time
	wake    chan struct{} // capacity 1: a chunk arrived, or the stream failed
	done    chan struct{}

	failOnce sync.Once
	err      error // set before done is closed
	closed   atomic.Bool

	mu      sync.Mutex // guards the following fields
	q       []*wire.Chunk
	head    int // q[head:] waits
	bytes   int // what q[head:] holds, as chunkBytes counts
	firstAt time.Time
	doneAt  time.Time
	tokens  int // chunks that carried answer text, thinking or tool calls
	text    int // bytes of answer in them
	first   int // bytes of answer in the first of them
	chunks  int // every chunk pushed
}

// chunkBytes estimates what a chunk holds in memory.
func chunkBytes(c *wire.Chunk) int {
	n := 64
	if m := c.Message; m != nil {
		n += len(m.Content) + len(m.Thinking)
		for _, tc := range m.ToolCalls {
			n += 64 + len(tc.ID) + len(tc.Function.Name) + len(tc.Function.Arguments)
		}
	}
	return n
}

// answerBytes is how much answer a chunk carries: its text, thinking and
// tool calls.
func answerBytes(c *wire.Chunk) int {
	m := c.Message
	if m == nil {
		return 0
	}
	n := len(m.Content) + len(m.Thinking)
	for _, tc := range m.ToolCalls {
		n += 1 + len(tc.Function.Name) + len(tc.Function.Arguments)
	}
	return n
}

// bytesPerToken is what the router counts a token of answer as when it
// measures a node's speed: about what the tokenizers of the common models
// make of English text. Only the ratio between nodes of one model steers
// the choice, which any constant keeps.
const bytesPerToken = 4

// push queues a chunk for the reader without blocking, in order. It
// reports false when the stream's bound or the hub's would be passed: the
// reader is too slow (or too many are).
func (s *Stream) push(c *wire.Chunk) bool {
	h := s.node.hub
	size := chunkBytes(c)
	s.mu.Lock()
	if s.closed.Load() {
		// The consumer is gone (Close drops the queue under s.mu after
		// setting closed): nothing to keep.
		s.mu.Unlock()
		return true
	}
	if s.bytes+size > h.cfg.StreamBufferBytes || !h.reserve(size) {
		s.mu.Unlock()
		return false
	}
	if s.head > 0 && s.head == len(s.q) {
		clear(s.q)
		s.q, s.head = s.q[:0], 0
	}
	s.q = append(s.q, c)
	s.bytes += size
	s.chunks++
	if n := answerBytes(c); n > 0 {
		s.tokens++
		s.text += n
		if s.firstAt.IsZero() {
			s.firstAt = h.cfg.Now()
			s.first = n
		}
	}
	if c.Done {
		s.doneAt = h.cfg.Now()
	}
	s.mu.Unlock()
	s.Nudge()
	return true
}

// TryNext takes the oldest waiting chunk, if any; more reports whether
// another waits behind it.
func (s *Stream) TryNext() (c *wire.Chunk, more, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head == len(s.q) {
		return nil, false, false
	}
	c = s.q[s.head]
	s.q[s.head] = nil
	s.head++
	size := chunkBytes(c)
	s.bytes -= size
	s.node.hub.unreserve(size)
	return c, s.head < len(s.q), true
}

// Wake receives when a chunk may be waiting, the stream failed, or Nudge
// was called; call TryNext until it reports none, then wait on Wake again.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// Nudge makes Wake receive (once, however often it is called before), so
// that the stream's reader can wait on that one channel for its own
// timers and cancellation too.
func (s *Stream) Nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ID is the request id the node knows the request by.
func (s *Stream) ID() string { return s.id }

// Tier is the trust tier of the node serving the stream, for the model
// (shown to consumers: it names no node).
func (s *Stream) Tier() string { return s.tier }

// NodeID names the node serving the stream (never shown to consumers).
func (s *Stream) NodeID() string { return s.node.id }

// Origin is an opaque key for budgets that must not reset when a node
// reconnects under another id: the address it connects from.
func (s *Stream) Origin() string { return "ip:" + s.node.ip }

// Relayed is how many chunks the node sent for this request and how many
// of them carried an answer (text, thinking or tool calls), as the router
// counted them.
func (s *Stream) Relayed() (chunks, tokens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chunks, s.tokens
}

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
		s.Nudge()
	})
}

// measured is what the router measured of the answer so far.
func (s *Stream) measured() measure {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := measure{sent: s.sent, claimedWarm: s.claimed}
	if !s.firstAt.IsZero() {
		m.firstToken = max(s.firstAt.Sub(s.sent), time.Nanosecond)
		if span := s.doneAt.Sub(s.firstAt); s.tokens >= 2 && span > 0 {
			m.tps = float64(s.text-s.first) / bytesPerToken / span.Seconds()
		}
	}
	return m
}

// Close ends the consumer's interest in the stream: if the node is still
// working on it, the node is told to cancel; what was still queued is
// dropped. Close is idempotent.
func (s *Stream) Close() {
	s.end(outcomeNeutral, errClosed)
	s.drop()
}

// Abort ends the stream because the node misbehaved (it did not answer in
// time, or stalled): the node is told to cancel and the failure counts
// against it, as an error would.
func (s *Stream) Abort() {
	s.end(outcomeFailure, errClosed)
	s.drop()
}

// drop releases what the queue holds.
func (s *Stream) drop() {
	s.mu.Lock()
	s.node.hub.unreserve(s.bytes)
	clear(s.q)
	s.q, s.head, s.bytes = nil, 0, 0
	s.mu.Unlock()
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
		s.node.hub.record(s, o)
	}
	s.fail(err)
}

var errClosed = errors.New("stream closed")
