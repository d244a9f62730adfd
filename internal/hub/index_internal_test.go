package hub

// In-package tests of the per-model index that need nodes built without a
// WebSocket (10,000 of them for the benchmark), and the consistency check
// the external tests call through CheckIndex (export_test.go).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// checkIndexLocked rebuilds the per-model index from h.nodes (from each
// node's model list, the source of its model set) and compares it with
// the hub's, set by set; it returns the first difference. h.mu must be
// held.
func (h *Hub) checkIndexLocked() error {
	want := map[string]map[*Node]struct{}{}
	wantCaps := map[string][capBits]int{}
	for id, n := range h.nodes {
		if n.id != id {
			return fmt.Errorf("node %q registered under id %q", n.id, id)
		}
		for _, m := range n.models {
			if want[m.Name] == nil {
				want[m.Name] = map[*Node]struct{}{}
			}
			want[m.Name][n] = struct{}{}
			c := wantCaps[m.Name]
			for i := range capBits {
				if m.caps&(1<<i) != 0 {
					c[i]++
				}
			}
			wantCaps[m.Name] = c
		}
	}
	for name, e := range h.byModel {
		set := e.nodes
		if len(set) == 0 {
			return fmt.Errorf("index keeps an empty set for %s", name)
		}
		for n := range set {
			if _, ok := want[name][n]; !ok {
				return fmt.Errorf("index lists node %q (registered: %v) under %s, which it does not advertise or is not registered", n.id, h.nodes[n.id] == n, name)
			}
		}
		if len(set) != len(want[name]) {
			return fmt.Errorf("index lists %d nodes under %s, want %d", len(set), name, len(want[name]))
		}
		if e.caps != wantCaps[name] {
			return fmt.Errorf("index counts capabilities %v under %s, want %v", e.caps, name, wantCaps[name])
		}
	}
	for name, set := range want {
		if h.byModel[name] == nil {
			return fmt.Errorf("index lacks %s (%d nodes)", name, len(set))
		}
	}
	return nil
}

// newBareHub is a hub for nodes registered in-package, without connections:
// no per-IP limit, and a heartbeat timeout no test reaches (the watchdog
// would close a node's nil connection).
func newBareHub(tb testing.TB) *Hub {
	tb.Helper()
	h := New(Config{MaxNodesPerIP: -1, HeartbeatTimeout: time.Hour})
	tb.Cleanup(h.Close)
	return h
}

// registerBare registers a node that has no connection, through the same
// Hub.register a connected node goes through. It must not replace a node
// (closing the old one would need its connection).
func registerBare(tb testing.TB, h *Hub, id string, maxConcurrent int, models ...string) *Node {
	tb.Helper()
	n := &Node{hub: h, ip: "192.0.2.1", send: make(chan []byte, 1), gone: make(chan struct{}), pending: map[string]*Stream{}}
	reg := wire.Register{Type: wire.TypeRegister, NodeID: id, MaxConcurrent: maxConcurrent}
	for _, name := range models {
		reg.Models = append(reg.Models, wire.Model{Name: name, Size: 1})
	}
	if reason := h.register(context.Background(), n, reg, ""); reason != "" {
		tb.Fatalf("register %s: %s", id, reason)
	}
	<-n.send // the "registered" ack
	return n
}

// BenchmarkPickManyNodes measures what one request costs the router with
// 10,000 idle nodes registered, 10 models over them (2,000 nodes each): the
// Model lookup every request makes, then Open's locked part (serves, pick).
func BenchmarkPickManyNodes(b *testing.B) {
	const nodes, models = 10_000, 10
	h := newBareHub(b)
	names := make([]string, models)
	for i := range names {
		names[i] = fmt.Sprintf("model%d:7b", i)
	}
	for i := range nodes {
		registerBare(b, h, fmt.Sprintf("node-%05d", i), 4, names[i%models], names[(i+1)%models])
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		name := names[i%models]
		if mi, ok := h.Model(name); !ok || mi.Nodes != 2*nodes/models {
			b.Fatalf("Model(%s) = %+v, %v", name, mi, ok)
		}
		h.mu.Lock()
		serves := h.canServeLocked(name, want{})
		g := h.pickLocked(name, want{})
		h.mu.Unlock()
		if serves != nil || g == nil {
			b.Fatalf("no node for %s", name)
		}
		g.node.active.Add(-1) // give the slot back: every request sees idle nodes
	}
}

// nodesPolicy records the node ids of the candidates it is offered and
// chooses none, so that picking reserves nothing.
type nodesPolicy struct{ ids []string }

func (p *nodesPolicy) Pick(cands []Candidate) int {
	p.ids = p.ids[:0]
	for _, c := range cands {
		p.ids = append(p.ids, c.NodeID)
	}
	return -1
}

// bruteModelLocked is what Model computed before the index: every
// registered node visited. h.mu must be held.
func bruteModelLocked(h *Hub, model string) (nodes int, size int64, loaded bool, caps []string) {
	for _, n := range h.nodes {
		for _, m := range n.models {
			if m.Name != model {
				continue
			}
			nodes++
			size = max(size, m.Size)
			loaded = loaded || slices.Contains(n.loaded, model)
			for _, c := range m.caps.Names() {
				if !slices.Contains(caps, c) {
					caps = append(caps, c)
				}
			}
		}
	}
	slices.Sort(caps)
	return nodes, size, loaded, caps
}

// TestIndexRandomBare drives register, models updates (of the registered
// connection and of a replaced one), heartbeats and unregister in random
// order on nodes without connections, checking after every step that the
// index matches h.nodes and that Model, serves and the pick's candidates
// are what visiting every node gives.
func TestIndexRandomBare(t *testing.T) {
	pool := []string{"a:1", "b:1", "c", "c:latest", "d/e:7b", "f:2", "g:3"} // "c" is "c:latest"
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			pol := &nodesPolicy{}
			h := New(Config{MaxNodesPerIP: -1, HeartbeatTimeout: time.Hour, Policy: pol})
			t.Cleanup(h.Close)
			randomModels := func() []wire.Model {
				var ms []wire.Model
				for range 1 + rng.IntN(4) {
					name := pool[rng.IntN(len(pool))]
					ms = append(ms, wire.Model{Name: name, Size: rng.Int64N(5), Capabilities: []string{[]string{"completion", "tools", "thinking"}[rng.IntN(3)]}})
				}
				return ms
			}
			registered := map[string]*Node{}
			for step := range 3000 {
				id := fmt.Sprintf("n%d", rng.IntN(40))
				n := registered[id]
				switch op := rng.IntN(7); {
				case op == 6:
					// A connection that registered under id and was
					// replaced (or never got that far) updates its
					// models, then ends.
					stale := &Node{hub: h, id: id}
					h.mu.Lock()
					h.setModelsLocked(stale, nodeModels(randomModels()))
					h.mu.Unlock()
					h.unregister(stale)
				case n == nil && op < 3:
					n = registerBare(t, h, id, 1+rng.IntN(2))
					h.mu.Lock()
					h.setModelsLocked(n, nodeModels(randomModels()))
					h.mu.Unlock()
					registered[id] = n
				case n == nil:
				case op < 2:
					h.mu.Lock()
					h.setModelsLocked(n, nodeModels(randomModels()))
					h.mu.Unlock()
				case op < 3:
					h.mu.Lock()
					n.available = rng.IntN(4) > 0
					n.loaded = normalizeAll([]string{pool[rng.IntN(len(pool))]})
					h.mu.Unlock()
				case op < 4:
					n.active.Store(int32(rng.IntN(3)))
				default:
					h.unregister(n)
					delete(registered, id)
				}
				h.mu.Lock()
				if err := h.checkIndexLocked(); err != nil {
					h.mu.Unlock()
					t.Fatalf("step %d: %v", step, err)
				}
				h.mu.Unlock()
				compareWithBrute(t, h, pol, wire.NormalizeModel(pool[rng.IntN(len(pool))]), id)
			}
			for _, n := range registered {
				h.unregister(n)
			}
			if err := CheckIndex(h); err != nil || len(h.byModel) != 0 {
				t.Fatalf("all gone: %v; index %v", err, h.byModel)
			}
		})
	}
}

// compareWithBrute checks Model, canServeLocked and pickLocked's candidates
// for model, excluding exclude, against a visit of every node.
func compareWithBrute(t *testing.T, h *Hub, pol *nodesPolicy, model, exclude string) {
	t.Helper()
	mi, ok := h.Model(model)
	h.mu.Lock()
	defer h.mu.Unlock()
	nodes, size, loaded, caps := bruteModelLocked(h, model)
	gotCaps := slices.Sorted(slices.Values(mi.Capabilities))
	if ok != (nodes > 0) || mi.Nodes != nodes || mi.Size != size || mi.Loaded != loaded || !slices.Equal(gotCaps, caps) {
		t.Fatalf("Model(%s) = %+v, %v; want nodes %d size %d loaded %v caps %v", model, mi, ok, nodes, size, loaded, caps)
	}
	var serves error = ErrNoNode
	var cands []string
	for _, n := range h.nodes {
		has := slices.ContainsFunc(n.models, func(m nodeModel) bool { return m.Name == model })
		if !has || n.id == exclude {
			continue
		}
		if serves == ErrNoNode {
			serves = ErrUnavailable
		}
		if n.available {
			serves = nil
		}
		if n.hasCapacity() {
			cands = append(cands, n.id)
		}
	}
	if got := h.canServeLocked(model, want{exclude: []string{exclude}}); got != serves {
		t.Fatalf("canServeLocked(%s, %s) = %v, want %v", model, exclude, got, serves)
	}
	if g := h.pickLocked(model, want{exclude: []string{exclude}}); g != nil {
		t.Fatalf("pickLocked reserved %s although the policy chose none", g.node.id)
	}
	slices.Sort(cands)
	if got := slices.Sorted(slices.Values(pol.ids)); !slices.Equal(got, cands) {
		t.Fatalf("pick candidates for %s = %v, want %v", model, got, cands)
	}
}

// TestPickReusesCandidates checks that choosing a node costs no candidate
// list per request (the grant is its only allocation) and that the reused
// list keeps no node reachable between picks.
func TestPickReusesCandidates(t *testing.T) {
	h := newBareHub(t)
	for i := range 100 {
		registerBare(t, h, fmt.Sprintf("node-%03d", i), 4, "m:7b")
	}
	pick := func() {
		h.mu.Lock()
		g := h.pickLocked("m:7b", want{})
		h.mu.Unlock()
		if g == nil {
			t.Fatal("no node chosen")
		}
		g.node.active.Add(-1)
	}
	scratchEmpty := func(after string) {
		t.Helper()
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.cands) != 0 || cap(h.cands) < 100 {
			t.Errorf("after %s: scratch len %d cap %d, want 0 and at least 100", after, len(h.cands), cap(h.cands))
		}
		for i, c := range h.cands[:cap(h.cands)] {
			if c.node != nil || c.NodeID != "" {
				t.Fatalf("after %s: scratch entry %d still holds node %q", after, i, c.NodeID)
			}
		}
	}
	pick() // grows the list and creates the breakers
	if n := testing.AllocsPerRun(100, pick); n > 1 {
		t.Errorf("a pick allocates %.0f times, want 1 (the grant)", n)
	}
	scratchEmpty("the default policy")
	// A policy that appends to its candidates writes into a copy, not into
	// the scratch past what the pick clears.
	h.mu.Lock()
	h.cfg.Policy = appendingPolicy{}
	h.mu.Unlock()
	pick()
	appended = nil
	scratchEmpty("a policy that appends")
}

// appended keeps what appendingPolicy appended, as a policy may.
var appended []Candidate

// appendingPolicy picks the first candidate after appending to the list.
type appendingPolicy struct{}

func (appendingPolicy) Pick(c []Candidate) int {
	appended = append(c, c[0])
	return 0
}
