package gateway

import (
	"sync"
	"time"
)

// Decision is where one request goes first.
type Decision struct {
	Provider bool // try the provider (else straight to the network)
	Probe    bool // the provider is cooling down; this request tests it
	Why      string
}

// Outcome is what a provider attempt taught about the provider.
type Outcome struct {
	Kind Kind
	Why  string        // log-safe, as Verdict.Why
	Wait time.Duration // RateLimit: how long the provider asked to wait
}

// Cooldowns are the state's timing.
type Cooldowns struct {
	Quota      time.Duration // after a quota answer (default 1h)
	ProbeEvery time.Duration // one request per this period tests the provider in a quota cooldown (default 10m)
	Error      time.Duration // after a 5xx, a timeout or a refused connection (default 30s; <0: none)
	MaxRate    time.Duration // longest cooldown a rate limit's Retry-After sets (default 5m)
}

// State is the provider's health as the gateway sees it: healthy, or
// cooling down until a time, with probes in a quota cooldown. Time comes
// from the caller (an injected clock). Safe for concurrent use.
type State struct {
	cd Cooldowns

	mu        sync.Mutex // guards the following fields
	until     time.Time  // cooling down while now < until
	since     time.Time  // when the cooldown began
	quota     bool       // the cooldown is a quota one (probes allowed)
	nextProbe time.Time
	probing   bool // a probe is in flight
	why       string
}

// NewState returns a healthy provider state.
func NewState(cd Cooldowns) *State {
	if cd.Quota <= 0 {
		cd.Quota = time.Hour
	}
	if cd.ProbeEvery <= 0 {
		cd.ProbeEvery = 10 * time.Minute
	}
	if cd.Error == 0 {
		cd.Error = 30 * time.Second
	}
	if cd.MaxRate <= 0 {
		cd.MaxRate = 5 * time.Minute
	}
	return &State{cd: cd}
}

// Decide says where a request arriving at now goes. A Decision with
// Probe set must be followed by Report(..., true), whatever happens.
func (s *State) Decide(now time.Time) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.Before(s.until) {
		return Decision{Provider: true, Why: "provider first"}
	}
	if s.quota && !s.probing && !now.Before(s.nextProbe) {
		s.probing = true
		s.nextProbe = now.Add(s.cd.ProbeEvery)
		return Decision{Provider: true, Probe: true, Why: "probe: is the credit back? (" + s.why + ")"}
	}
	return Decision{Why: "cooling down until " + s.until.UTC().Format(time.TimeOnly) + "Z: " + s.why}
}

// Report records what a provider attempt that started at now found.
// probe is the Decision's Probe. A success of an attempt that started
// before the cooldown began does not end it.
func (s *State) Report(now time.Time, o Outcome, probe bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if probe {
		s.probing = false
	}
	switch o.Kind {
	case OK:
		if now.Before(s.since) {
			return
		}
		s.until, s.quota, s.why = time.Time{}, false, ""
	case Quota:
		s.until, s.since = now.Add(s.cd.Quota), now
		if !s.quota || !probe {
			s.nextProbe = now.Add(s.cd.ProbeEvery)
		}
		s.quota, s.why = true, "quota exhausted ("+o.Why+")"
	case RateLimit:
		if s.quota && now.Before(s.until) {
			return // a quota cooldown outranks a rate limit
		}
		d := o.Wait
		if d <= 0 {
			d = s.cd.Error
		}
		if u := now.Add(min(d, s.cd.MaxRate)); u.After(s.until) {
			s.until, s.since, s.quota, s.why = u, now, false, "rate limited ("+o.Why+")"
		}
	case Unavailable:
		if s.quota && now.Before(s.until) || s.cd.Error < 0 {
			return
		}
		if u := now.Add(s.cd.Error); u.After(s.until) {
			s.until, s.since, s.quota, s.why = u, now, false, "provider failing ("+o.Why+")"
		}
	}
	// ClientError: the provider works; it says nothing about the credit.
}

// Snapshot is the state for /health.
type Snapshot struct {
	Cooling   bool      `json:"cooling_down"`
	Quota     bool      `json:"quota_exhausted"`
	Until     time.Time `json:"until,omitzero"`
	NextProbe time.Time `json:"next_probe,omitzero"` // a quota cooldown's next probe (a request at or after it tries the provider)
	Why       string    `json:"why,omitempty"`
}

// Snapshot returns the state at now.
func (s *State) Snapshot(now time.Time) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.Before(s.until) {
		return Snapshot{}
	}
	snap := Snapshot{Cooling: true, Quota: s.quota, Until: s.until.UTC(), Why: s.why}
	if s.quota {
		snap.NextProbe = s.nextProbe.UTC()
	}
	return snap
}
