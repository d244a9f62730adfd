package agent

import (
	"sort"
	"sync"
	"time"
)

// Why the owner's machine is not lent now. The gate holds every reason
// that applies; the node takes network work only when none does.
const (
	PauseManual   = "paused by the owner"          // contribute pause
	PauseOwner    = "the owner is using Ollama"    // requests the node did not send
	PauseBusy     = "the machine is busy"          // CPU or GPU above the owner's threshold
	PauseSchedule = "outside the sharing schedule" // --schedule
)

// gate is the owner's say over the node: the reasons it is paused, and
// until when each holds (zero: until lifted). Safe for concurrent use.
// Every change is reported once through onChange (from the caller's
// goroutine, without the lock), which prints the line and tells the router.
type gate struct {
	now      func() time.Time
	onChange func(paused bool, why string)

	mu      sync.Mutex // guards the following fields
	reasons map[string]time.Time
	last    string // the state last reported ("" serving)
}

func newGate(now func() time.Time, onChange func(bool, string)) *gate {
	return &gate{now: now, onChange: onChange, reasons: map[string]time.Time{}}
}

// set makes reason hold until until (zero: until cleared).
func (g *gate) set(reason string, until time.Time) {
	g.mu.Lock()
	g.reasons[reason] = until
	g.mu.Unlock()
	g.report()
}

// clear lifts reason.
func (g *gate) clear(reason string) {
	g.mu.Lock()
	delete(g.reasons, reason)
	g.mu.Unlock()
	g.report()
}

// expire lifts the reasons whose time is over; the owner monitor calls it.
func (g *gate) expire() { g.report() }

// why lists the reasons that hold now, in a fixed order ("" none).
func (g *gate) why() []string {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.whyLocked(now)
}

func (g *gate) whyLocked(now time.Time) []string {
	var out []string
	for r, until := range g.reasons {
		if !until.IsZero() && !now.Before(until) {
			delete(g.reasons, r)
			continue
		}
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// until is when reason ends (zero: not set, or until cleared).
func (g *gate) until(reason string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reasons[reason]
}

// paused reports whether some reason holds.
func (g *gate) paused() bool { return len(g.why()) > 0 }

// report calls onChange when the state (serving, or the set of reasons)
// changed since the last report.
func (g *gate) report() {
	now := g.now()
	g.mu.Lock()
	why := g.whyLocked(now)
	state := ""
	for i, r := range why {
		if i > 0 {
			state += "; "
		}
		state += r
	}
	changed := state != g.last
	g.last = state
	g.mu.Unlock()
	if changed && g.onChange != nil {
		g.onChange(state != "", state)
	}
}
