package hub

// Candidate is what a selection policy knows of one node that could take a
// request now: it serves the model, is available, has free capacity and its
// circuit breaker lets a request through.
type Candidate struct {
	NodeID        string
	Active        int     // requests in flight
	MaxConcurrent int     // capacity the node registered
	Warm          bool    // the node reported the model loaded (/api/ps)
	Failing       bool    // its last request failed (the breaker is not yet open)
	Trial         bool    // its breaker's cool-down is over: this would be its one trial request
	Reputation    float64 // 0..1, success ratio remembered across reconnects
	TokensPerSec  float64 // recent generation speed measured from the node's metrics; 0 unknown

	node *Node // the node it describes, whatever the policy does with the slice
}

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

// WarmFirst is the default policy: a node whose breaker cool-down is over
// gets its one trial request first (otherwise a node that once failed would
// never be probed while healthy nodes have room); then it prefers a node
// whose last request did not fail (so a node that fails fast does not
// attract traffic because its load looks low), then one with the model
// already loaded, then the least loaded relative to its capacity, then the
// better reputation, then the faster node. Ties go to the first candidate.
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
// that noise in the ratio does not override speed.
const reputationStep = 0.05

func better(a, b Candidate) bool {
	if a.Trial != b.Trial {
		return a.Trial
	}
	if a.Failing != b.Failing {
		return !a.Failing
	}
	if a.Warm != b.Warm {
		return a.Warm
	}
	if la, lb := a.Load(), b.Load(); la != lb {
		return la < lb
	}
	if d := a.Reputation - b.Reputation; d > reputationStep || d < -reputationStep {
		return d > 0
	}
	return a.TokensPerSec > b.TokensPerSec
}
