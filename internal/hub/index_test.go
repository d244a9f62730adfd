package hub_test

// The hub's per-model index (the registered nodes by model, which Model,
// Open and the queue use instead of visiting every node) stays consistent
// with the registry through real node connections: registration, models
// updates, re-registration under the same id, disconnection.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// checkIndex fails the test if the hub's index differs from the one its
// registered nodes imply. It holds at any instant, whatever frames are
// still on their way.
func checkIndex(t *testing.T, h *hub.Hub) {
	t.Helper()
	if err := hub.CheckIndex(h); err != nil {
		t.Fatalf("index: %v", err)
	}
}

// modelNodes is Model(name).Nodes, 0 if no node has it.
func modelNodes(h *hub.Hub, name string) int {
	mi, _ := h.Model(name)
	return mi.Nodes
}

func modelsUpdate(models ...wire.Model) map[string]any {
	return map[string]any{"type": wire.TypeModelsUpdate, "models": models}
}

func TestIndexFollowsRegistry(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, TakeoverTimeout: 50 * time.Millisecond})
	a := th.register(t, "a", "", 2, m("x:1", 1), m("y:1", 2))
	checkIndex(t, th.Hub)
	b := th.register(t, "b", "", 2, m("y:1", 3), m("v", 1)) // "v" is "v:latest"
	checkIndex(t, th.Hub)
	if mi, ok := th.Model("y:1"); !ok || mi.Nodes != 2 || mi.Size != 3 {
		t.Fatalf("Model(y:1) = %+v, %v; want 2 nodes, size 3", mi, ok)
	}
	if modelNodes(th.Hub, "v:latest") != 1 || modelNodes(th.Hub, "x:1") != 1 {
		t.Fatalf("models %+v", th.Models(true))
	}

	// A models update moves the node between models: x gone, z new.
	a.send(modelsUpdate(m("y:1", 2), m("z:1", 1)))
	eventually(t, "a's models update", func() bool {
		return modelNodes(th.Hub, "x:1") == 0 && modelNodes(th.Hub, "z:1") == 1
	})
	checkIndex(t, th.Hub)
	if _, err := tryOpen(context.Background(), th.Hub, "x:1"); !errors.Is(err, hub.ErrNoNode) {
		t.Fatalf("Open(x:1) after a dropped it: %v, want ErrNoNode", err)
	}
	s := open(t, th.Hub, "z:1")
	a.expect(wire.TypeInferenceReq, s.ID())
	s.Close()

	// b reconnects with other models: the new connection's models replace
	// the old one's.
	b.freeze() // the old link no longer answers: the new one may take the id
	b2 := th.register(t, "b", "", 2, m("w:1", 1))
	b.thaw()
	checkIndex(t, th.Hub)
	if modelNodes(th.Hub, "y:1") != 1 || modelNodes(th.Hub, "v:latest") != 0 || modelNodes(th.Hub, "w:1") != 1 {
		t.Fatalf("after b re-registered: %+v", th.Models(true))
	}
	// (A models update from the replaced connection changes nothing:
	// TestIndexRandomBare sends them deterministically.)
	if code, reason := b.closeStatus(); code != websocket.StatusNormalClosure || reason != wire.CloseReRegistered {
		t.Fatalf("old b closed with %v %q", code, reason)
	}
	s = open(t, th.Hub, "w:1")
	b2.expect(wire.TypeInferenceReq, s.ID())
	s.Close()

	// Disconnecting takes the node off every model it had.
	_ = a.conn.CloseNow()
	eventually(t, "a unregistered", func() bool { return th.NodeCount() == 1 })
	checkIndex(t, th.Hub)
	if got := th.Models(true); len(got) != 1 || got[0].Name != "w:1" {
		t.Fatalf("after a left: %+v, want w:1 only", got)
	}
	_ = b2.conn.CloseNow()
	eventually(t, "b unregistered", func() bool { return th.NodeCount() == 0 })
	checkIndex(t, th.Hub)
	if got := th.Models(true); len(got) != 0 {
		t.Fatalf("no node left, yet models %+v", got)
	}
}

// TestIndexRandomized connects, updates and disconnects many nodes in
// random order (ids reused, so connections replace each other and
// updates race their connection's replacement), with readers calling
// Model and Models meanwhile, checking the index after every step and
// the final registry against what the nodes last said.
func TestIndexRandomized(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, TakeoverTimeout: 50 * time.Millisecond, Budget: hub.FrameBudget{ModelUpdatesPerMin: 1e6}})
	pool := []string{"a:1", "b:1", "c", "c:latest", "d/e:7b", "f:2"} // "c" is "c:latest"
	rng := rand.New(rand.NewPCG(1, 2))
	randomModels := func() []wire.Model {
		ms := make([]wire.Model, 1+rng.IntN(3))
		for i := range ms {
			ms[i] = m(pool[rng.IntN(len(pool))], rng.Int64N(10))
		}
		return ms
	}

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, name := range pool {
					th.Model(wire.NormalizeModel(name))
				}
				th.Models(false)
			}
		})
	}
	defer readers.Wait()
	defer close(stop)

	conns := map[string]*node{}       // each id's latest connection
	want := map[string][]wire.Model{} // what it last said
	for step := range 250 {
		id := fmt.Sprint("n", rng.IntN(15))
		switch op := rng.IntN(5); {
		case op < 2 || conns[id] == nil: // connect, replacing any connection of id
			ms := randomModels()
			old := conns[id]
			if old != nil {
				old.freeze() // half-open: the router must ping it out
			}
			conns[id] = th.register(t, id, "", 2, ms...)
			if old != nil {
				old.thaw()
			}
			want[id] = ms
		case op < 4:
			ms := randomModels()
			conns[id].send(modelsUpdate(ms...))
			want[id] = ms
		default:
			_ = conns[id].conn.CloseNow()
			delete(conns, id)
			delete(want, id)
		}
		if err := hub.CheckIndex(th.Hub); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}

	// Once the hub has read every frame, the registry is what the nodes
	// said last, and Model counts the nodes that list the model (a node
	// listing "c" and "c:latest", or a name twice, lists one model).
	wantNames := map[string][]string{}
	counts := map[string]int{}
	for id, ms := range want {
		for _, m := range ms {
			name := wire.NormalizeModel(m.Name)
			if slices.Contains(wantNames[id], name) {
				continue
			}
			wantNames[id] = append(wantNames[id], name)
			counts[name]++
		}
	}
	eventually(t, "the registry to settle", func() bool {
		got := map[string][]string{}
		for _, n := range th.Nodes() {
			got[n.NodeID] = n.Models
		}
		return maps.EqualFunc(got, wantNames, slices.Equal)
	})
	checkIndex(t, th.Hub)
	for _, name := range pool {
		name = wire.NormalizeModel(name)
		if got := modelNodes(th.Hub, name); got != counts[name] {
			t.Errorf("Model(%s).Nodes = %d, want %d", name, got, counts[name])
		}
	}
}
