package hostile

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestClaimsDoNotWinTheTraffic: a node that claims the model loaded in
// every heartbeat, registers it at 4.4 TB with ten slots, answers garbage
// at once and reports a million tokens in a nanosecond does not take the
// traffic from an honest node (the real agent) beside it: the router's
// choice follows what it measured, and it does not believe the claimed
// rate.
func TestClaimsDoNotWinTheTraffic(t *testing.T) {
	r := startRouter(t)
	startContributor(t, r, ollamatest.Config{Models: []ollamatest.Model{{Name: "shared:1", Size: 2e9}}}, "", "honest-agent")
	liar := mustDialNode(t, r, freshIP())
	liar.serve(func(req request) {
		_ = liar.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: "garbage"}})
		_ = liar.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: ollama.Metrics{EvalCount: 1_000_000, EvalDuration: 1, PromptEvalCount: 5, PromptEvalDuration: 1}})
	})
	if err := liar.register("liar", 10, model("shared:1", wire.MaxModelBytes, "completion", "tools", "thinking")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(time.Second) // the heartbeat budget is 1/s
		defer tick.Stop()
		for {
			if liar.heartbeat("shared:1") != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	const requests = 20
	won := map[string]int{}
	var c *http.Client
	for i := range requests {
		if i%10 == 0 {
			c = clientFrom(freshIP())
		}
		q := fmt.Sprintf("honest question %d", i)
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "shared:1", q, nil), nil)
		switch {
		case err != nil || !a.Done:
			t.Fatalf("chat %d: %+v %v", i, a, err)
		case a.Content == "Echo: "+q:
			won["honest"]++
		case a.Content == "garbage":
			won["liar"]++
		default:
			t.Fatalf("chat %d: unexpected answer %q", i, a.Content)
		}
	}
	if won["honest"] < requests*2/5 {
		t.Errorf("the honest node served %d of %d requests (the liar %d): claims steered the choice", won["honest"], requests, won["liar"])
	}
	nodes, err := r.adminNodes(c)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := findNode(nodes, "liar")
	hn, _ := findNode(nodes, "honest-agent")
	if ln.Record.TokensPerSec > 1e5 {
		t.Errorf("the liar's claimed rate was believed: %.0f tokens/s", ln.Record.TokensPerSec)
	}
	observe(t, "a node claims the model loaded, 4.4 TB, 10 slots, 10^6 tokens in 1 ns, and answers garbage at once",
		"choice by router-measured facts", "of %d sequential chats the honest agent served %d, the liar %d; the router's rate for the liar %.0f tokens/s (honest %.0f)",
		requests, won["honest"], won["liar"], ln.Record.TokensPerSec, hn.Record.TokensPerSec)
}

// TestNodeIDTakeover: registering a connected node's id from elsewhere
// is refused while the node answers pings, so nobody can evict it; a
// keyless node cannot take a key-derived id; a link that stopped
// answering gives its id up within the takeover timeout.
func TestNodeIDTakeover(t *testing.T) {
	r := startRouter(t)
	victim := startContributor(t, r, ollamatest.Config{Models: []ollamatest.Model{{Name: "vict:1", Size: 2e9}}}, "", "victim")
	admin := clientFrom(freshIP())
	var worst time.Duration
	for range 3 {
		imp := mustDialNode(t, r, freshIP())
		start := time.Now()
		_ = imp.send(map[string]any{"type": "register", "node_id": "victim", "models": []wire.Model{model("vict:1", 1)}, "max_concurrent": 10})
		code, reason, err := imp.closeStatus(15 * time.Second)
		worst = max(worst, time.Since(start))
		if err != nil || code != websocket.StatusPolicyViolation || reason != wire.CloseNodeIDInUse {
			t.Fatalf("impostor: %d %q %v; want 1008 %q", code, reason, err, wire.CloseNodeIDInUse)
		}
	}
	nodes, err := r.adminNodes(admin)
	v, ok := findNode(nodes, "victim")
	if err != nil || !ok || v.IP != "127.0.x.x" || v.MaxConcurrent != 2 {
		t.Fatalf("the victim was replaced: %+v %v", v, err)
	}
	a, err := r.chat(context.Background(), clientFrom(freshIP()), "v1", chatBody("v1", "vict:1", "still you", nil), nil)
	if err != nil || a.Content != "Echo: still you" {
		t.Errorf("a chat after the impostors: %+v %v", a, err)
	}
	if reg, lost := victim.log.count("registered with the router"), victim.log.count("router link lost"); reg != 1 || lost != 0 {
		t.Errorf("the victim's own log: %d registrations, %d links lost; want 1 and 0", reg, lost)
	}
	observe(t, "3 impostors register a connected node's node_id", "the old link is pinged; the newcomer is refused",
		"each closed 1008 %q within %s; the victim (the real agent) kept its link (its log: 1 registration, 0 links lost) and answered", wire.CloseNodeIDInUse, ms(worst))

	key, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	squat := mustDialNode(t, r, freshIP())
	_ = squat.send(map[string]any{"type": "register", "node_id": key.NodeID(), "models": []wire.Model{model("vict:1", 1)}})
	if code, reason, err := squat.closeStatus(10 * time.Second); err != nil || reason != wire.CloseReservedNodeID {
		t.Errorf("a keyless node with a key's id: %d %q %v; want 1008 %q", code, reason, err, wire.CloseReservedNodeID)
	} else {
		observe(t, "a keyless node announces a key-derived node_id", "key- ids are the keys'", "closed %d %q", code, reason)
	}

	// A link that stopped reading answers no ping: its id goes to the
	// newcomer after the takeover timeout (5 s).
	stale, err := dialNode(t, r, freshIP(), false)
	if err != nil {
		t.Fatal(err)
	}
	_ = stale.send(map[string]any{"type": "register", "node_id": "stale", "models": []wire.Model{model("vict:1", 1)}, "max_concurrent": 1})
	if _, _, err := stale.conn.Read(context.Background()); err != nil { // "registered"; then it reads no more
		t.Fatal(err)
	}
	fresh := mustDialNode(t, r, freshIP())
	start := time.Now()
	if err := fresh.register("stale", 3, model("vict:1", 1)); err != nil {
		t.Fatalf("the newcomer for a dead link's id: %v", err)
	}
	took := time.Since(start)
	nodes, _ = r.adminNodes(admin)
	if s, _ := findNode(nodes, "stale"); s.MaxConcurrent != 3 || took < 4*time.Second {
		t.Errorf("takeover of a dead link: %+v after %s", s, took)
	}
	// The old link, read at last, finds the router's close.
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var oldErr error
	for oldErr == nil {
		_, _, oldErr = stale.conn.Read(rctx)
	}
	var ce websocket.CloseError
	if !errors.As(oldErr, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != wire.CloseReRegistered {
		t.Errorf("the dead link was closed with %v; want 1000 %q", oldErr, wire.CloseReRegistered)
	}
	observe(t, "a node's link stops reading; another registers its id", "takeover after 5 s without a pong",
		"the newcomer was registered after %s; the old link closed %d %q", ms(took), ce.Code, ce.Reason)
}

// TestFreshIDKeepsTheRecord: a node that failed until its breaker opened,
// and comes back from the same address under a fresh id, gets its
// address's record (breaker open, bad reputation) and no request; an
// honest node serves them.
func TestFreshIDKeepsTheRecord(t *testing.T) {
	r := startRouter(t, "--breaker-cooldown", "5m")
	ip := freshIP()
	failer := func(id string) *wsNode {
		n := mustDialNode(t, r, ip)
		n.serve(func(req request) {
			_ = n.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: req.ID, Error: wire.ErrOllamaError})
		})
		if err := n.register(id, 2, model("rec:1", 1e9)); err != nil {
			t.Fatal(err)
		}
		return n
	}
	bad := failer("bad-1")
	c := clientFrom(freshIP())
	for i := range 3 {
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "rec:1", fmt.Sprintf("fail %d", i), nil), nil)
		if err != nil || len(a.Errors) != 1 {
			t.Fatalf("failing chat %d: %+v %v", i, a, err)
		}
	}
	admin := clientFrom(freshIP())
	nodes, _ := r.adminNodes(admin)
	if b, _ := findNode(nodes, "bad-1"); b.Record.Breaker != "open" {
		t.Fatalf("bad-1 after 3 failures: %+v", b)
	}
	_ = bad.conn.Close(websocket.StatusNormalClosure, "bye")
	eventually(t, "bad-1 to leave", 10*time.Second, func() bool {
		nodes, err := r.adminNodes(admin)
		_, ok := findNode(nodes, "bad-1")
		return err == nil && !ok
	})
	again := failer("bad-2")
	nodes, _ = r.adminNodes(admin)
	b2, _ := findNode(nodes, "bad-2")
	if b2.Record.Breaker != "open" || b2.Record.Reputation >= 0.5 {
		t.Errorf("a fresh id from the failing address starts clean: %+v", b2.Record)
	}
	honestNode(t, r, freshIP(), "honest-rec", model("rec:1", 1e9))
	for i := range 5 {
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "rec:1", fmt.Sprintf("q %d", i), nil), nil)
		if err != nil || a.Content != fmt.Sprintf("honest: q %d", i) {
			t.Errorf("chat %d: %+v %v", i, a, err)
		}
	}
	if got := again.requests.Load(); got != 0 {
		t.Errorf("bad-2 was given %d requests with its address's breaker open", got)
	}
	other := mustDialNode(t, r, freshIP())
	if err := other.register("bad-3", 2, model("rec:1", 1e9)); err != nil {
		t.Fatal(err)
	}
	nodes, _ = r.adminNodes(admin)
	b3, _ := findNode(nodes, "bad-3")
	if b3.Record.Breaker != "closed" {
		t.Errorf("a node at another address inherited a record: %+v", b3.Record)
	}
	observe(t, "a node fails 3 requests, leaves, comes back from the same address as a fresh id", "records inherit per address",
		"bad-2 starts with breaker %q, reputation %.2f, and got %d of 5 requests (the honest node served them); a new id from another address starts %q",
		b2.Record.Breaker, b2.Record.Reputation, again.requests.Load(), b3.Record.Breaker)
}
