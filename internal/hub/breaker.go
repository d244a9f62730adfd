package hub

import "time"

// Breaker states.
const (
	breakerClosed   = iota // requests flow
	breakerOpen            // out of rotation until the cool-down ends
	breakerHalfOpen        // one trial request in flight
)

// BreakerConfig tunes the per-node circuit breaker.
type BreakerConfig struct {
	Threshold int           // consecutive failures that open it (default 3; negative: never)
	Cooldown  time.Duration // time out of rotation before a trial (default 30s)
}

// breaker is a per-node circuit breaker. It is kept by node id in the hub,
// so reconnecting does not reset it. Not safe for concurrent use: the hub
// guards it with its mutex.
type breaker struct {
	state    int
	failures int       // consecutive
	openedAt time.Time // when it last opened
	trial    bool      // the half-open trial is in flight

	// Reputation: successes and failures over the node's life, decayed.
	ok, bad float64
	// Speed: exponentially weighted tokens/s from the node's own metrics.
	tps float64
}

// allow reports whether a new request may go to the node now, and whether
// it is the half-open trial.
func (b *breaker) allow(cfg BreakerConfig, now time.Time) (ok, trial bool) {
	switch b.state {
	case breakerOpen:
		if now.Sub(b.openedAt) < cfg.Cooldown {
			return false, false
		}
		b.state = breakerHalfOpen
		fallthrough
	case breakerHalfOpen:
		if b.trial {
			return false, false
		}
		return true, true
	}
	return true, false
}

// started records that a request was sent (the half-open trial, if so).
func (b *breaker) started(trial bool) {
	if trial {
		b.trial = true
	}
}

// success records a request the node answered in full.
func (b *breaker) success(tps float64) {
	b.failures = 0
	b.state = breakerClosed
	b.trial = false
	b.ok = b.ok*0.98 + 1
	b.bad *= 0.98
	if tps > 0 {
		if b.tps == 0 {
			b.tps = tps
		} else {
			b.tps = 0.8*b.tps + 0.2*tps
		}
	}
}

// failure records a request the node failed; it reports whether the
// breaker opened.
func (b *breaker) failure(cfg BreakerConfig, now time.Time) (opened bool) {
	b.failures++
	b.ok *= 0.98
	b.bad = b.bad*0.98 + 1
	b.trial = false
	if b.state == breakerHalfOpen || (cfg.Threshold > 0 && b.failures >= cfg.Threshold && b.state == breakerClosed) {
		b.state = breakerOpen
		b.openedAt = now
		return true
	}
	return false
}

// neutral records a request that ended for reasons not the node's (the
// consumer left): a half-open trial is given back.
func (b *breaker) neutral() {
	b.trial = false
}

// reputation is the decayed success ratio; 0.5 for a node never seen.
func (b *breaker) reputation() float64 {
	if b.ok+b.bad == 0 {
		return 0.5
	}
	return b.ok / (b.ok + b.bad)
}
