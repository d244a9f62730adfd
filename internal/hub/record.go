package hub

import (
	"time"
)

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

// record is what the router knows of a node from its own observation: the
// circuit breaker, the reputation and the measured speed, and when each of
// its models last served. It outlives connections. A keyless node's
// record is keyed by its address and announced id, and a record made for
// a new id inherits the breaker and reputation of the node that last left
// the same address (Hub.recordLocked), so that reconnecting under a fresh
// id does not wipe a bad history. Not safe for concurrent use: the hub
// guards it with its mutex.
type record struct {
	key string // address and announced id
	ip  string

	state    int
	failures int       // consecutive
	openedAt time.Time // when it last opened
	trial    bool      // the half-open trial is in flight

	// Reputation: successes and failures over the node's life, decayed.
	ok, bad float64

	// Measured on the router's clock from the chunks it relayed.
	tps      float64 // tokens per second, exponentially weighted; 0 unknown
	lastPick time.Time
	seen     map[string]served // by normalized model, at most wire.MaxModelsPerNode
	updated  time.Time
	live     int // connections that hold this record now
}

// served is the router's last observation of one model on one node.
type served struct {
	at         time.Time     // when its last answer started
	firstToken time.Duration // how long the node took to its first chunk
	claimed    bool          // the node claimed the model loaded when it was sent the request
}

// inherit copies what must survive a change of announced id.
func (r *record) inherit(from *record) {
	r.state, r.failures, r.openedAt = from.state, from.failures, from.openedAt
	if r.state == breakerHalfOpen {
		r.state = breakerOpen // the trial belongs to the old record
	}
	r.ok, r.bad = from.ok, from.bad
}

// allow reports whether a new request may go to the node now, and whether
// it is the half-open trial.
func (r *record) allow(cfg BreakerConfig, now time.Time) (ok, trial bool) {
	switch r.state {
	case breakerOpen:
		if now.Sub(r.openedAt) < cfg.Cooldown {
			return false, false
		}
		r.state = breakerHalfOpen
		fallthrough
	case breakerHalfOpen:
		if r.trial {
			return false, false
		}
		return true, true
	}
	return true, false
}

// blocked reports, without changing the state, whether the breaker keeps
// every request away from the node now.
func (r *record) blocked(cfg BreakerConfig, now time.Time) bool {
	switch r.state {
	case breakerOpen:
		return now.Sub(r.openedAt) < cfg.Cooldown
	case breakerHalfOpen:
		return r.trial
	}
	return false
}

// started records that a request was sent (the half-open trial, if so).
func (r *record) started(trial bool, now time.Time) {
	if trial {
		r.trial = true
	}
	r.lastPick = now
}

// success records a request the node answered in full, with what the
// router measured of it.
func (r *record) success(m measure) {
	r.failures = 0
	r.state = breakerClosed
	r.trial = false
	r.ok = r.ok*0.98 + 1
	r.bad *= 0.98
	if m.tps > 0 {
		if r.tps == 0 {
			r.tps = m.tps
		} else {
			r.tps = 0.8*r.tps + 0.2*m.tps
		}
	}
}

// observe notes when a model served and how fast its first chunk came.
func (r *record) observe(model string, m measure) {
	if m.firstToken <= 0 {
		return
	}
	if r.seen == nil {
		r.seen = map[string]served{}
	}
	if _, ok := r.seen[model]; !ok && len(r.seen) >= maxSeenModels {
		var oldest string
		var at time.Time
		for k, v := range r.seen {
			if oldest == "" || v.at.Before(at) {
				oldest, at = k, v.at
			}
		}
		delete(r.seen, oldest)
	}
	r.seen[model] = served{at: m.sent, firstToken: m.firstToken, claimed: m.claimedWarm}
}

// maxSeenModels bounds a record's per-model observations.
const maxSeenModels = 20

// failure records a request the node failed; it reports whether the
// breaker opened.
func (r *record) failure(cfg BreakerConfig, now time.Time) (opened bool) {
	r.failures++
	r.ok *= 0.98
	r.bad = r.bad*0.98 + 1
	r.trial = false
	if r.state == breakerHalfOpen || (cfg.Threshold > 0 && r.failures >= cfg.Threshold && r.state == breakerClosed) {
		r.state = breakerOpen
		r.openedAt = now
		return true
	}
	return false
}

// neutral records a request that ended for reasons not the node's (the
// consumer left): a half-open trial is given back.
func (r *record) neutral() {
	r.trial = false
}

// reputation is the decayed success ratio; 0.5 for a node never seen.
func (r *record) reputation() float64 {
	if r.ok+r.bad == 0 {
		return 0.5
	}
	return r.ok / (r.ok + r.bad)
}

// warm reports what the router itself saw of model on the node: whether
// it answered for it within window (Ollama keeps a model loaded for the
// keep_alive after its last request), and whether it ever did (measured).
func (r *record) warm(model string, now time.Time, window time.Duration) (warm, measured bool) {
	s, ok := r.seen[model]
	return ok && now.Sub(s.at) <= window, ok
}

// claimHolds reports whether a node's claim that model is loaded may still
// count as a hint: not when the last request sent on the strength of such
// a claim took longer than cold to its first chunk.
func (r *record) claimHolds(model string, cold time.Duration) bool {
	s, ok := r.seen[model]
	return !(ok && s.claimed && s.firstToken > cold)
}

// measure is what the router measured of one answer.
type measure struct {
	sent        time.Time     // when the request was queued for the node
	firstToken  time.Duration // to the first chunk with content; 0 none
	tps         float64       // tokens per second over the answer; 0 unknown
	claimedWarm bool
}
