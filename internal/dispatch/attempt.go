package dispatch

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Errors of one attempt that the dispatcher decides on.
var (
	errFirstToken = errors.New("first-token timeout")
	errStall      = errors.New("stall timeout")
)

// attempt is one try of a request on one node: it hides the hub stream's
// queue behind one Next and owns the first-token and stall timers and the
// keep-alive tick. One goroutine uses it; stop releases its timers.
//
// The timers and the request's cancellation only set a flag and nudge the
// stream, so that Next waits on the stream's one wake channel instead of
// a select over the stream, the context and two timer channels at every
// token.
type attempt struct {
	s       *hub.Stream
	stall   time.Duration
	idle    time.Duration // between keep-alive ticks
	tick    *time.Timer   // the keep-alive tick
	silence *time.Timer   // the first-token timeout, then the stall timeout
	unwatch func() bool   // stops watching the request's context
	got     bool          // a chunk arrived
	last    time.Time     // when the last chunk arrived (only with a stall timeout)

	ticked, silent, canceled atomic.Bool // set by the timers and the context
}

func (d *Dispatcher) newAttempt(ctx context.Context, s *hub.Stream) *attempt {
	a := &attempt{s: s, stall: d.cfg.StallTimeout, idle: d.cfg.PingInterval / 2}
	a.tick = time.AfterFunc(a.idle, func() { a.ticked.Store(true); s.Nudge() })
	if t := d.cfg.FirstTokenTimeout; t > 0 {
		a.silence = time.AfterFunc(t, a.fellSilent)
	}
	a.unwatch = context.AfterFunc(ctx, func() { a.canceled.Store(true); s.Nudge() })
	return a
}

// fellSilent is the silence timer's: the first token or the next is late.
func (a *attempt) fellSilent() {
	a.silent.Store(true)
	a.s.Nudge()
}

func (a *attempt) stop() {
	a.tick.Stop()
	if a.silence != nil {
		a.silence.Stop()
	}
	a.unwatch()
}

// Next returns the node's next chunk, and whether another is already
// waiting behind it. It returns a nil chunk and no error when a keep-alive
// interval passed with nothing to relay. It fails with errFirstToken when
// the node sent nothing in time, errStall when it fell silent, the
// stream's error (the node failed or left: chunks that arrived before are
// delivered first), or the context's, which must be the one the attempt
// was made with.
func (a *attempt) Next(ctx context.Context) (c *wire.Chunk, more bool, err error) {
	for {
		if c, more, ok := a.s.TryNext(); ok {
			a.arrived()
			return c, more, nil
		}
		if err := a.s.Err(); err != nil {
			// A chunk pushed just before the failure, after the look
			// above, still comes first.
			if c, more, ok := a.s.TryNext(); ok {
				a.arrived()
				return c, more, nil
			}
			return nil, false, err
		}
		if a.canceled.Load() {
			return nil, false, ctx.Err()
		}
		if a.silent.Swap(false) && a.silence != nil {
			if !a.got {
				return nil, false, errFirstToken
			}
			// The stall timer is not moved per chunk (that costs more
			// than reading the clock): re-arm it for what is left.
			if rest := a.stall - time.Since(a.last); rest > 0 {
				a.silence.Reset(rest)
				continue
			}
			return nil, false, errStall
		}
		if a.ticked.Swap(false) {
			a.tick.Reset(a.idle)
			return nil, false, nil
		}
		<-a.s.Wake()
	}
}

// arrived notes a chunk: from the first one on, the stall timeout applies.
func (a *attempt) arrived() {
	if !a.got {
		a.got = true
		switch {
		case a.stall > 0 && a.silence != nil:
			a.silence.Reset(a.stall)
		case a.stall > 0:
			a.silence = time.AfterFunc(a.stall, a.fellSilent)
		case a.silence != nil:
			a.silence.Stop()
			a.silence = nil
		}
	}
	if a.stall > 0 {
		a.last = time.Now()
	}
}
