package dispatch

import (
	"context"
	"errors"
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
type attempt struct {
	s       *hub.Stream
	stall   time.Duration
	tick    *time.Ticker // idle ticks, for keep-alives
	silence *time.Timer  // the first-token timeout, then the stall timeout
	got     bool         // a chunk arrived
	last    time.Time    // when the last chunk arrived (only with a stall timeout)
}

func (d *Dispatcher) newAttempt(s *hub.Stream) *attempt {
	a := &attempt{s: s, stall: d.cfg.StallTimeout, tick: time.NewTicker(d.cfg.PingInterval / 2)}
	if t := d.cfg.FirstTokenTimeout; t > 0 {
		a.silence = time.NewTimer(t)
	}
	return a
}

func (a *attempt) stop() {
	a.tick.Stop()
	if a.silence != nil {
		a.silence.Stop()
	}
}

// Next returns the node's next chunk, and whether another is already
// waiting behind it. It returns a nil chunk and no error when a keep-alive
// interval passed with nothing to relay. It fails with errFirstToken when
// the node sent nothing in time, errStall when it fell silent, the
// stream's error (the node failed or left: chunks that arrived before are
// delivered first), or the context's.
func (a *attempt) Next(ctx context.Context) (c *wire.Chunk, more bool, err error) {
	for {
		if c, more, ok := a.s.TryNext(); ok {
			a.arrived()
			return c, more, nil
		}
		var silence <-chan time.Time
		if a.silence != nil {
			silence = a.silence.C
		}
		select {
		case <-a.s.Wake():
		case <-a.s.Done():
			if c, more, ok := a.s.TryNext(); ok {
				a.arrived()
				return c, more, nil
			}
			return nil, false, a.s.Err()
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-silence:
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
		case <-a.tick.C:
			return nil, false, nil
		}
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
			a.silence = time.NewTimer(a.stall)
		case a.silence != nil:
			a.silence.Stop()
			a.silence = nil
		}
	}
	if a.stall > 0 {
		a.last = time.Now()
	}
}
