package gateway

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestStateQuotaCooldownAndProbes(t *testing.T) {
	s := NewState(Cooldowns{Quota: time.Hour, ProbeEvery: 10 * time.Minute})
	if d := s.Decide(t0); !d.Provider || d.Probe {
		t.Fatalf("a healthy provider: %+v", d)
	}
	s.Report(t0, Outcome{Kind: Quota, Why: "429 insufficient_quota"}, false)
	for _, at := range []time.Duration{0, time.Second, 9*time.Minute + 59*time.Second} {
		if d := s.Decide(t0.Add(at)); d.Provider || !strings.Contains(d.Why, "quota exhausted (429 insufficient_quota)") {
			t.Fatalf("+%s in the cooldown: %+v", at, d)
		}
	}
	// At 10 minutes exactly one request probes; the others go on to the
	// network while it is out.
	p := s.Decide(t0.Add(10 * time.Minute))
	if !p.Provider || !p.Probe {
		t.Fatalf("+10m: %+v, want a probe", p)
	}
	if d := s.Decide(t0.Add(10*time.Minute + time.Second)); d.Provider {
		t.Fatalf("a second probe while one is out: %+v", d)
	}
	// The probe finds the credit still gone: the next probe is 10 minutes
	// after it started, and the cooldown runs an hour from it.
	s.Report(t0.Add(10*time.Minute), Outcome{Kind: Quota, Why: "429 insufficient_quota"}, true)
	if d := s.Decide(t0.Add(19 * time.Minute)); d.Provider {
		t.Fatalf("+19m: %+v", d)
	}
	p = s.Decide(t0.Add(20 * time.Minute))
	if !p.Probe {
		t.Fatalf("+20m: %+v, want the second probe", p)
	}
	// This one gets a 5xx: still a quota cooldown, probes go on.
	s.Report(t0.Add(20*time.Minute), Outcome{Kind: Unavailable, Why: "503"}, true)
	if snap := s.Snapshot(t0.Add(21 * time.Minute)); !snap.Quota || !snap.Until.Equal(t0.Add(70*time.Minute)) || !snap.NextProbe.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("after a 5xx probe: %+v", snap)
	}
	p = s.Decide(t0.Add(30 * time.Minute))
	if !p.Probe {
		t.Fatalf("+30m: %+v, want the third probe", p)
	}
	// The credit is back: the provider is healthy at once.
	s.Report(t0.Add(30*time.Minute), Outcome{Kind: OK}, true)
	if d := s.Decide(t0.Add(30*time.Minute + time.Second)); !d.Provider || d.Probe {
		t.Fatalf("after a good probe: %+v", d)
	}
	if snap := s.Snapshot(t0.Add(31 * time.Minute)); snap.Cooling {
		t.Fatalf("snapshot after a good probe: %+v", snap)
	}
}

func TestStateQuotaCooldownEnds(t *testing.T) {
	s := NewState(Cooldowns{Quota: time.Hour, ProbeEvery: 2 * time.Hour}) // no probe within the hour
	s.Report(t0, Outcome{Kind: Quota, Why: "402"}, false)
	if d := s.Decide(t0.Add(59 * time.Minute)); d.Provider {
		t.Fatalf("+59m: %+v", d)
	}
	if d := s.Decide(t0.Add(time.Hour)); !d.Provider || d.Probe {
		t.Fatalf("+1h: the cooldown is over: %+v", d)
	}
}

func TestStateProbeGivenBack(t *testing.T) {
	s := NewState(Cooldowns{})
	s.Report(t0, Outcome{Kind: Quota}, false)
	p := s.Decide(t0.Add(10 * time.Minute))
	if !p.Probe {
		t.Fatalf("want a probe: %+v", p)
	}
	// The probing client left (or its request was the client's own
	// error): the credit is unknown, the cooldown stays, the next probe
	// is a period on.
	s.Report(t0.Add(10*time.Minute), Outcome{Kind: ClientError}, true)
	if snap := s.Snapshot(t0.Add(11 * time.Minute)); !snap.Quota {
		t.Fatalf("after a probe that taught nothing: %+v", snap)
	}
	if d := s.Decide(t0.Add(19 * time.Minute)); d.Provider {
		t.Fatalf("+19m: %+v", d)
	}
	if d := s.Decide(t0.Add(20 * time.Minute)); !d.Probe {
		t.Fatalf("+20m: %+v, want a probe", d)
	}
}

func TestStateShortCooldowns(t *testing.T) {
	s := NewState(Cooldowns{Error: 30 * time.Second, MaxRate: time.Minute})
	s.Report(t0, Outcome{Kind: Unavailable, Why: "503"}, false)
	if d := s.Decide(t0.Add(29 * time.Second)); d.Provider || !strings.Contains(d.Why, "provider failing (503)") {
		t.Fatalf("+29s after a 503: %+v", d)
	}
	if d := s.Decide(t0.Add(30 * time.Second)); !d.Provider {
		t.Fatalf("+30s after a 503: %+v", d)
	}
	// A rate limit cools down for its Retry-After, capped.
	s.Report(t0.Add(time.Minute), Outcome{Kind: RateLimit, Wait: 20 * time.Second, Why: "429"}, false)
	if d := s.Decide(t0.Add(time.Minute + 19*time.Second)); d.Provider {
		t.Fatalf("within the Retry-After: %+v", d)
	}
	if d := s.Decide(t0.Add(time.Minute + 20*time.Second)); !d.Provider {
		t.Fatalf("after the Retry-After: %+v", d)
	}
	s.Report(t0.Add(2*time.Minute), Outcome{Kind: RateLimit, Wait: time.Hour}, false)
	if d := s.Decide(t0.Add(3 * time.Minute)); !d.Provider {
		t.Fatalf("a rate-limit cooldown past its cap: %+v", d)
	}
	// A quota cooldown is not shortened by a later 5xx or rate limit.
	s.Report(t0.Add(4*time.Minute), Outcome{Kind: Quota}, false)
	s.Report(t0.Add(5*time.Minute), Outcome{Kind: Unavailable}, false)
	s.Report(t0.Add(5*time.Minute), Outcome{Kind: RateLimit, Wait: time.Second}, false)
	if snap := s.Snapshot(t0.Add(6 * time.Minute)); !snap.Quota || !snap.Until.Equal(t0.Add(64*time.Minute)) {
		t.Fatalf("a quota cooldown after later failures: %+v", snap)
	}
	// No error cooldown when it is off.
	off := NewState(Cooldowns{Error: -1})
	off.Report(t0, Outcome{Kind: Unavailable}, false)
	if d := off.Decide(t0); !d.Provider {
		t.Fatalf("error cooldown off: %+v", d)
	}
}

// TestStateStaleSuccess: a request that started before the quota answer
// and succeeded after it does not end the cooldown.
func TestStateStaleSuccess(t *testing.T) {
	s := NewState(Cooldowns{})
	s.Report(t0.Add(time.Second), Outcome{Kind: Quota}, false)
	s.Report(t0, Outcome{Kind: OK}, false)
	if snap := s.Snapshot(t0.Add(2 * time.Second)); !snap.Quota {
		t.Fatalf("a stale success ended the cooldown: %+v", snap)
	}
}

// TestStateOneProbeAtATime: of many requests at once in a probe period,
// exactly one probes.
func TestStateOneProbeAtATime(t *testing.T) {
	s := NewState(Cooldowns{})
	s.Report(t0, Outcome{Kind: Quota}, false)
	var mu sync.Mutex
	probes := 0
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := s.Decide(t0.Add(10 * time.Minute)); d.Probe {
				mu.Lock()
				probes++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if probes != 1 {
		t.Fatalf("%d probes, want 1", probes)
	}
}

// TestCooldownThroughTheGateway: the provider runs out of credit; the
// next requests go straight to the network without asking it; after ten
// minutes (on the injected clock) one request probes it; when the credit
// is back, a probe finds it and the provider serves again.
func TestCooldownThroughTheGateway(t *testing.T) {
	nw := startNetwork(t)
	r := newRig(t, nw, sequence(providertest.InsufficientQuota()))
	route := func(want string, calls int, why string) {
		t.Helper()
		res := r.chat(t, "gpt-4o-mini", true)
		if res.status != 200 || res.header.Get(HeaderRoute) != want {
			t.Fatalf("route %q (%q), want %s: %s", res.header.Get(HeaderRoute), res.header.Get(HeaderReason), want, res.body)
		}
		if n := r.provider.Count(); n != calls {
			t.Fatalf("the provider got %d requests, want %d", n, calls)
		}
		if got := res.header.Get(HeaderReason); !strings.Contains(got, why) {
			t.Fatalf("reason %q, want %q", got, why)
		}
	}
	route("network", 1, "out of credit (429 insufficient_quota), cooling down 1h0m0s")
	for range 3 {
		r.clock.Advance(time.Minute)
		route("network", 1, "cooling down until 06:06:07Z: quota exhausted (429 insufficient_quota)")
	}
	r.clock.Advance(7 * time.Minute) // +10m: a probe
	route("network", 2, "probe: provider still out of credit")
	route("network", 2, "cooling down")
	r.provider.SetRespond(providerOK) // the user bought credit
	r.clock.Advance(9 * time.Minute)
	route("network", 2, "cooling down")
	r.clock.Advance(time.Minute) // the next probe
	route("provider", 3, "probe: the provider answers again; cooldown over")
	route("provider", 4, "provider answered")
	if !strings.Contains(r.out.String(), `route=network why="cooling down until`) {
		t.Errorf("the request lines do not show the cooldown:\n%s", r.out.String())
	}
}
