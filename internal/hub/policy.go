package hub

import "time"

// Candidate is what a selection policy knows of one node that could take a
// request now: it serves the model, is available, has free capacity and its
// circuit breaker lets a request through. Every field is the router's own
// observation, except MaxConcurrent (the node's, clamped to 1..10 at
// registration) and Claimed (the node's word, kept only while the
// router's measurements do not contradict it).
type Candidate struct {
	NodeID        string
	Active        int       // requests in flight, counted by the router
	MaxConcurrent int       // capacity the node registered
	Warm          bool      // the router saw it answer for the model within the warm window
	Measured      bool      // the router has seen it answer for the model at all
	Claimed       bool      // it claims the model loaded (heartbeat), and no measurement contradicts it
	Failing       bool      // its last request failed (the breaker is not yet open)
	Trial         bool      // its breaker's cool-down is over: this would be its one trial request
	Reputation    float64   // decayed success ratio of its requests; 0.5 without History
	History       bool      // the router has seen it finish or fail requests
	TokensPerSec  float64   // measured by the router over its answers; 0 unknown
	LastPicked    time.Time // when the router last gave it a request

	node *Node // the node it describes, whatever the policy does with the slice
}

// Cold reports whether the router knows the model is not loaded there: it
// answered for it once, but not recently.
func (c Candidate) Cold() bool { return c.Measured && !c.Warm }

// Load is the fraction of the candidate's capacity in use.
func (c Candidate) Load() float64 {
	if c.MaxConcurrent <= 0 {
		return 1
	}
	return float64(c.Active) / float64(c.MaxConcurrent)
}

// Policy chooses a node among candidates. It returns an index into cands
// (which it may reorder), or -1 to choose none. Implementations must be
// safe for concurrent use and must not block: the hub calls Pick with its
// registry locked. Pick must not keep cands (the hub reuses it) nor change
// a candidate's fields: the hub reads the chosen one's Trial after it.
type Policy interface {
	Pick(cands []Candidate) int
}

// WarmFirst is the default policy. A node whose breaker cool-down is over
// gets its one trial request first (otherwise a node that once failed would
// never be probed while healthy nodes have room); then it prefers a node
// whose last request did not fail (so a node that fails fast does not
// attract traffic because its load looks low); then the fewest requests in
// flight (counted by the router, so that claiming a large capacity gains a
// node nothing); then a node not known to be cold (one the router saw
// answer for the model recently, or never saw try: a newcomer gets its
// chance to prove itself); then, between nodes that both have a history,
// a better reputation (a newcomer is not held back by the record others
// earned while it had no turn); then a node not
// measured to be much slower than the other; then the node that waited
// longest since its last request, so that equals take turns; and only
// then, as a hint, a node that claims the model loaded. Nothing a node
// merely says about itself (speed, size, a loaded model) can win it the
// traffic: a node that answers fast takes its turn with the others.
type WarmFirst struct{}

// Pick implements Policy.
func (WarmFirst) Pick(cands []Candidate) int {
	best := -1
	for i := range cands {
		if best < 0 || better(cands[i], cands[best]) {
			best = i
		}
	}
	return best
}

// reputationStep is the smallest reputation difference that matters, so
// that noise in the ratio does not override the rest.
const reputationStep = 0.05

// slowFactor is how many times slower (measured tokens/s) a node must be
// than another before it loses the tie.
const slowFactor = 4

func better(a, b Candidate) bool {
	if a.Trial != b.Trial {
		return a.Trial
	}
	if a.Failing != b.Failing {
		return !a.Failing
	}
	if a.Active != b.Active {
		return a.Active < b.Active
	}
	if a.Cold() != b.Cold() {
		return !a.Cold()
	}
	if a.History && b.History {
		if d := a.Reputation - b.Reputation; d > reputationStep || d < -reputationStep {
			return d > 0
		}
	}
	if a.TokensPerSec > 0 && b.TokensPerSec > 0 {
		switch {
		case a.TokensPerSec*slowFactor < b.TokensPerSec:
			return false
		case b.TokensPerSec*slowFactor < a.TokensPerSec:
			return true
		}
	}
	if !a.LastPicked.Equal(b.LastPicked) {
		return a.LastPicked.Before(b.LastPicked)
	}
	return a.Claimed && !b.Claimed
}
