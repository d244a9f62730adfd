package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// Owner settings: how the node notices that the machine's owner uses
// their own Ollama, and what it does then.
type Owner struct {
	// Poll is how often /api/ps is read for signs of the owner (default
	// 2s; negative: the node does not watch).
	Poll time.Duration
	// Quiet is how long after the owner's last sign the node waits before
	// serving again (default 3m).
	Quiet time.Duration
	// Cancel makes the node cancel the network's requests in flight when
	// the owner shows up (the router moves those that had no token yet to
	// another node); by default they finish.
	Cancel bool
	// Processes also counts an `ollama run` (or `ollama chat`) process on
	// this machine as the owner's use (Linux: /proc).
	Processes bool
	// Connections also counts a new connection to a local Ollama that is
	// not the node's (Linux: /proc/net/tcp), which shows the owner's
	// requests that overlap the network's.
	Connections bool
	// ProcRoot is where processes are read ("/proc"; tests set another).
	ProcRoot string
}

func (o Owner) withDefaults() Owner {
	if o.Poll == 0 {
		o.Poll = 2 * time.Second
	}
	if o.Quiet <= 0 {
		o.Quiet = 3 * time.Minute
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	return o
}

// ownEnd is one of the node's own requests as Ollama will have seen it
// end: when, and with which keep_alive (Ollama then sets the model's
// expiry to end + keep_alive).
type ownEnd struct {
	at        time.Time
	keepAlive time.Duration
}

// maxOwnEnds bounds the ends remembered per model.
const maxOwnEnds = 16

// noteStart and noteEnd keep the node's own use of each model, which the
// owner monitor tells apart from the owner's.
func (a *Agent) noteStart(model string) {
	a.mu.Lock()
	a.active[model]++
	a.mu.Unlock()
}

func (a *Agent) noteEnd(model string, keepAlive time.Duration) {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active[model]--; a.active[model] <= 0 {
		delete(a.active, model)
	}
	ends := append(a.ends[model], ownEnd{at: now, keepAlive: keepAlive})
	if len(ends) > maxOwnEnds {
		ends = ends[len(ends)-maxOwnEnds:]
	}
	a.ends[model] = ends
}

// expiryTolerance is how far a model's new expiry may be from one the
// node's own request explains (end + keep_alive): the node notes a
// request's end a little after Ollama does. An owner's request that ends
// this close to one of the node's, with the same keep_alive, goes unseen.
const expiryTolerance = 500 * time.Millisecond

// ownKeepAliveMark is what the node takes off the keep_alive it sends
// (Limits.keepAlive): an owner's request with Ollama's default (5m) that
// ends within expiryTolerance of one of the node's still moves the
// model's expiry to one no request of the node's explains.
const ownKeepAliveMark = 3 * time.Second

// ownerSeen is what the owner monitor remembers between looks.
type ownerSeen struct {
	expires map[string]time.Time // by model, from the last /api/ps
	primed  bool                 // the first look only learns what is loaded
	conns   *connWatch           // nil: connections are not watched
}

// lookForOwner reads /api/ps once and reports whether it shows the
// owner's use: a model newly loaded, or its expiry moved, while the node
// had no request of it in flight and no request of its own explains the
// new expiry.
func (a *Agent) lookForOwner(ctx context.Context, seen *ownerSeen) (owner bool, model string) {
	ps, err := a.ol.PS(ctx)
	if err != nil {
		return false, ""
	}
	now := a.cfg.Now()
	current := make(map[string]time.Time, len(ps.Models))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ps.Models {
		name := wire.NormalizeModel(m.Name)
		prev, had := seen.expires[name]
		if a.active[name] > 0 && seen.primed {
			// The node's request in flight will move the expiry when it
			// ends; judge the expiry then, against the last one judged.
			if had {
				current[name] = prev
			}
			continue
		}
		current[name] = m.ExpiresAt
		if owner || !seen.primed {
			continue
		}
		// Loaded since the last look, or its expiry moved on: unless one
		// of the node's own requests explains it, the owner's did.
		if had && m.ExpiresAt.Equal(prev) {
			continue
		}
		explained := a.explainsLocked(name, m.ExpiresAt, now)
		a.log.Debug("model expiry moved", "model", name, "from", prev, "to", m.ExpiresAt, "node_explains", explained)
		if (!had || m.ExpiresAt.After(prev)) && !explained {
			owner, model = true, name
		}
	}
	seen.expires = current
	seen.primed = true
	return owner, model
}

// explainsLocked reports whether one of the node's own requests of model
// accounts for its expiry at exp. a.mu must be held.
func (a *Agent) explainsLocked(model string, exp, now time.Time) bool {
	for _, e := range a.ends[model] {
		want := e.at.Add(e.keepAlive)
		if d := exp.Sub(want); d < expiryTolerance && d > -expiryTolerance {
			return true
		}
	}
	return false
}

// ownerProcess reports whether an interactive `ollama run`/`ollama chat`
// runs on this machine (a process the owner started: the node never runs
// one).
func ownerProcess(root string) bool {
	dirs, err := os.ReadDir(root)
	if err != nil {
		return false
	}
	for _, d := range dirs {
		if !d.IsDir() || d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, d.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 2 && filepath.Base(args[0]) == "ollama" && (args[1] == "run" || args[1] == "chat") {
			return true
		}
	}
	return false
}

// primeOwner takes the owner monitor's first look at Ollama, which only
// learns what is loaded; Run takes it before the node connects, so that
// anything after counts.
func (a *Agent) primeOwner(ctx context.Context) *ownerSeen {
	seen := &ownerSeen{}
	if a.cfg.Owner.Poll >= 0 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a.lookForOwner(pctx, seen)
		cancel()
		seen.primed = true
		if a.cfg.Owner.Connections {
			if seen.conns = newConnWatch(a.ol.BaseURL, a.dials); seen.conns != nil {
				seen.conns.look(a.cfg.Owner.ProcRoot)
			}
		}
	}
	return seen
}

// watchOwner is the owner monitor: it runs until ctx ends.
func (a *Agent) watchOwner(ctx context.Context, seen *ownerSeen) {
	o := a.cfg.Owner
	if o.Poll < 0 {
		return
	}
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, max(o.Poll, time.Second))
		owner, model := a.lookForOwner(pctx, seen)
		cancel()
		why := "a request the node did not send (" + model + ")"
		if !owner && o.Processes && ownerProcess(o.ProcRoot) {
			owner, why = true, "an `ollama run` on this machine"
		}
		if seen.conns != nil && seen.conns.look(o.ProcRoot) && !owner {
			owner, why = true, "a connection to Ollama that is not the node's"
		}
		if owner {
			a.ownerActive(why)
		}
		a.gate.expire() // the quiet period may be over
	}
}

// ownerActive pauses the node for the quiet period (again, if it already
// was), and cancels the network's requests in flight when the owner said
// so.
func (a *Agent) ownerActive(why string) {
	already := a.gate.until(PauseOwner)
	a.gate.set(PauseOwner, a.cfg.Now().Add(a.cfg.Owner.Quiet))
	if already.IsZero() {
		a.log.Info("owner activity", "sign", why)
		if a.cfg.Owner.Cancel {
			a.cancelInFlight()
		}
	}
}

// cancelInFlight ends the network's requests in flight: the router is
// told ollama_unavailable and moves those without a token to another node.
func (a *Agent) cancelInFlight() {
	a.mu.Lock()
	s := a.current
	a.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	for _, r := range s.inflight {
		r.cancel()
	}
	s.mu.Unlock()
}
