package hub

import (
	"context"
	"errors"
	"testing"
)

// TestStartOnVanishedNode covers a node that goes away, or stops reading its
// socket, between being chosen and being sent the request: the request is
// not left pending on it, its slot comes back, nothing is sent, and the
// caller gets the error the dispatcher chooses again on.
func TestStartOnVanishedNode(t *testing.T) {
	h := newBareHub(t)
	a := registerBare(t, h, "a", 1, "x:1")
	b := registerBare(t, h, "b", 1, "x:1")
	build := func(id, _ string) ([]byte, error) { return []byte(`{"request_id":"` + id + `"}`), nil }
	check := func(n *Node) {
		t.Helper()
		n.mu.Lock()
		pending := len(n.pending)
		n.mu.Unlock()
		if got := n.active.Load(); got != 0 || pending != 0 {
			t.Errorf("node %s: %d active, %d pending after the failed start, want 0 and 0", n.id, got, pending)
		}
	}

	// a is chosen, then its read loop ends before the request is sent.
	h.mu.Lock()
	g := h.pickLocked("x:1", want{exclude: []string{"b"}})
	h.mu.Unlock()
	if g == nil || g.node != a {
		t.Fatalf("picked %+v, want node a", g)
	}
	a.mu.Lock()
	a.dead = true
	a.mu.Unlock()
	if _, err := h.start(g, OpenRequest{Model: "x:1", Build: build}); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("start on a dead node: %v, want ErrNodeGone", err)
	}
	check(a)
	if len(a.send) != 0 {
		t.Errorf("%d frames queued for the dead node", len(a.send))
	}

	// a is chosen again and passes the dead check, but its read loop ends
	// before the frame is queued (gone is closed as the loop returns).
	a.mu.Lock()
	a.dead = false
	a.mu.Unlock()
	h.mu.Lock()
	g = h.pickLocked("x:1", want{exclude: []string{"b"}})
	h.mu.Unlock()
	if g == nil || g.node != a {
		t.Fatalf("picked %+v, want node a", g)
	}
	close(a.gone)
	if _, err := h.start(g, OpenRequest{Model: "x:1", Build: build}); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("start on a node whose read loop ended: %v, want ErrNodeGone", err)
	}
	check(a)
	if len(a.send) != 0 {
		t.Errorf("%d frames queued for the gone node", len(a.send))
	}

	// b's send queue is full (it stopped reading): Open fails with
	// ErrNodeBusy instead of blocking. The bare node has no connection for
	// the hub to close, so that enqueue also disconnects such a node is not
	// checked here.
	b.closeOnce.Do(func() {})
	b.send <- []byte(`{}`)
	if _, err := h.Open(context.Background(), OpenRequest{Model: "x:1", Exclude: []string{"a"}, Build: build}); !errors.Is(err, ErrNodeBusy) {
		t.Fatalf("Open on a node with a full queue: %v, want ErrNodeBusy", err)
	}
	check(b)
	if len(b.send) != 1 {
		t.Errorf("%d frames queued for the stuck node, want only the one that filled it", len(b.send))
	}
}
