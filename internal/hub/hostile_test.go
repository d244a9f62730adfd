package hub_test

// Each test here plays a hostile node against a real hub over loopback
// WebSockets and asserts the bound that stops it.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/testutil"
	"github.com/idleclaw/idleclaw/internal/wire"
)

func wireMetrics(evalCount int, evalNanos int64) ollama.Metrics {
	return ollama.Metrics{EvalCount: evalCount, EvalDuration: evalNanos}
}

// lockedBuffer is a log sink safe for the hub's goroutines.
type lockedBuffer struct{ testutil.SyncBuffer }

func (l *lockedBuffer) lines(sub string) int { return strings.Count(l.String(), sub) }

// TestInvalidFrameFloodIsCutAndQuiet: a node that sends garbage as fast
// as it can is disconnected once it spends its invalid-frame budget, and
// the log gets a handful of lines, not one per frame.
func TestInvalidFrameFloodIsCutAndQuiet(t *testing.T) {
	var logs lockedBuffer
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Budget: hub.FrameBudget{InvalidPerSecond: 1, InvalidBurst: 100}})
	honest := th.register(t, "honest", "198.51.100.1", 1, m("x:1", 1))
	n := th.register(t, "flooder", "198.51.100.2", 1, m("x:1", 1))
	sent := 0
	for ; sent < 5000; sent++ {
		b := []byte(`{"type":"inference_chunk","request_id":"nope","chunk":{"done":false,"message":{"tool_calls":"x"}}}`)
		if sent%2 == 1 {
			b = []byte(`not json at all`)
		}
		if err := n.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
			break // the router closed the link
		}
	}
	if code, reason := n.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseTooManyInvalid {
		t.Fatalf("flooder closed with %v %q, want 1008 %q", code, reason, wire.CloseTooManyInvalid)
	}
	if l := logs.lines("node frame refused"); l > 10 {
		t.Errorf("%d log lines for the refused frames, want a few (rate-limited)", l)
	}
	// The honest node is untouched.
	eventually(t, "the flooder unregistered", func() bool { return th.NodeCount() == 1 })
	s := open(t, th.Hub, "x:1")
	honest.expect(wire.TypeInferenceReq, s.ID())
}

// TestControlFrameFloodIsRefusedBeforeTheLock: heartbeats and
// models_update beyond their rates change nothing; the node's state
// follows only the frames within budget.
func TestControlFrameFloodIsRefusedBeforeTheLock(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Budget: hub.FrameBudget{InvalidBurst: 1 << 20, InvalidPerSecond: 1e6}})
	n := th.register(t, "n", "", 1, m("x:1", 1))
	for i := range 2000 {
		n.send(map[string]any{"type": "models_update", "models": []wire.Model{m("x:1", 1), m(fmt.Sprintf("m%d:1", i), 1)}})
	}
	// A marker that is handled whatever the budgets: a chunk for a request.
	s := open(t, th.Hub, "x:1")
	n.expect(wire.TypeInferenceReq, s.ID())
	n.chunk(s.ID(), "marker", false)
	next(t, s)
	// Five updates pass in a burst (the budget), the rest are refused.
	names := 0
	for _, mi := range th.Models(true) {
		if strings.HasPrefix(mi.Name, "m") {
			names++
		}
	}
	if names > 1 {
		t.Errorf("%d models from the flood are indexed, want at most the last accepted one", names)
	}
	if _, ok := th.Model("m5:1"); ok {
		t.Errorf("the 6th models_update of a burst was accepted")
	}
}

// TestConnectionsPerIP: one address cannot hold more than MaxConnsPerIP
// open node links, registered or not (each would pin a goroutine and a
// registration timer).
func TestConnectionsPerIP(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: 3, MaxConnsPerIP: 4, RegistrationTimeout: time.Minute})
	var idle []*node
	for range 4 {
		idle = append(idle, th.dial(t, "203.0.113.7"))
	}
	// A dial returns on the 101, which may come before ServeNode counted
	// the connection.
	eventually(t, "four connections counted", func() bool { return th.Hub.ConnsFrom("203.0.113.7") == 4 })
	extra := th.dial(t, "203.0.113.7")
	if code, reason := extra.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseTooManyConnections {
		t.Fatalf("fifth link: %v %q, want 1008 %q", code, reason, wire.CloseTooManyConnections)
	}
	th.register(t, "elsewhere", "203.0.113.8", 1, m("x:1", 1)) // other addresses are not affected
	_ = idle[0].conn.CloseNow()
	eventually(t, "a slot freed", func() bool {
		c := th.dial(t, "203.0.113.7")
		c.send(map[string]any{"type": "register", "node_id": "late", "models": []wire.Model{m("x:1", 1)}})
		select {
		case f := <-c.frames:
			return f.Type == wire.TypeRegistered
		case <-c.done:
			return false
		case <-time.After(waitFor):
			return false
		}
	})
}

// TestImpostorCannotTakeALiveID: another address registering a connected
// node's id is refused while the node answers, so it can neither evict the
// node nor get its record.
func TestImpostorCannotTakeALiveID(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour,
		TakeoverTimeout: 200 * time.Millisecond, Breaker: hub.BreakerConfig{Threshold: 1, Cooldown: time.Minute}})
	honest := th.register(t, "honest", "198.51.100.1", 2, m("x:1", 1))
	for range 3 {
		imp := th.dial(t, "203.0.113.66")
		imp.send(map[string]any{"type": "register", "node_id": "honest", "models": []wire.Model{m("x:1", 1)}, "max_concurrent": 10})
		if code, reason := imp.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseNodeIDInUse {
			t.Fatalf("impostor: %v %q, want 1008 %q", code, reason, wire.CloseNodeIDInUse)
		}
	}
	if n := nodeInfo(th.Hub, "honest"); n.IP != "198.51.100.1" || n.MaxConcurrent != 2 {
		t.Fatalf("the honest node was replaced: %+v", n)
	}
	s := open(t, th.Hub, "x:1")
	honest.expect(wire.TypeInferenceReq, s.ID())

	// Once the honest node is gone, an impostor may use the id, but it
	// gets a record of its own (keyed by address and id): the honest
	// node's failures or successes are not its.
	failWith(honest, s.ID(), wire.ErrOllamaError) // opens the honest node's breaker (threshold 1)
	waitDone(t, s)
	_ = honest.conn.CloseNow()
	eventually(t, "honest gone", func() bool { return th.NodeCount() == 0 })
	th.register(t, "honest", "203.0.113.66", 2, m("x:1", 1))
	if b := nodeInfo(th.Hub, "honest").Breaker; b != "closed" {
		t.Errorf("the newcomer from another address has breaker %q: it got the honest node's record", b)
	}
}

// TestFreshIDKeepsTheAddressRecord: a node that fails, disconnects and
// comes back from the same address under a new id does not start clean.
func TestFreshIDKeepsTheAddressRecord(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour,
		Breaker: hub.BreakerConfig{Threshold: 2, Cooldown: time.Minute}})
	bad := th.register(t, "bad-1", "203.0.113.5", 1, m("x:1", 1))
	failOnce(t, th.Hub, bad, wire.ErrOllamaError)
	failOnce(t, th.Hub, bad, wire.ErrOllamaError) // open
	_ = bad.conn.CloseNow()
	eventually(t, "bad gone", func() bool { return th.NodeCount() == 0 })
	again := th.register(t, "bad-2", "203.0.113.5", 1, m("x:1", 1))
	info := nodeInfo(th.Hub, "bad-2")
	if info.Breaker != "open" || info.Reputation >= 0.5 {
		t.Fatalf("a fresh id from the same address starts with breaker %q, reputation %.2f; want the address's open breaker and bad reputation", info.Breaker, info.Reputation)
	}
	refused(t, th.Hub, "x:1", again)
	// Another machine is not tainted.
	other := th.register(t, "other", "198.51.100.20", 1, m("x:1", 1))
	s := open(t, th.Hub, "x:1")
	other.expect(wire.TypeInferenceReq, s.ID())
}

// TestClaimsDoNotWinTheTraffic plays a node that claims the model loaded
// in every heartbeat, reports a huge eval rate and answers at once, beside
// an honest node that claims nothing: sequential requests must not all go
// to the liar.
func TestClaimsDoNotWinTheTraffic(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	liar := th.register(t, "liar", "203.0.113.9", 2, m("x:1", 1))
	honest := th.register(t, "honest", "198.51.100.3", 2, m("x:1", 1))
	liar.send(map[string]any{"type": "heartbeat", "node_id": "liar", "available": true, "loaded_models": []string{"x:1"}})
	eventually(t, "claim noted", func() bool { mi, _ := th.Model("x:1"); return mi.Loaded })
	won := map[string]int{}
	for range 10 {
		s := open(t, th.Hub, "x:1")
		won[s.NodeID()]++
		n := honest
		if s.NodeID() == "liar" {
			n = liar
		}
		n.expect(wire.TypeInferenceReq, s.ID())
		n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: s.ID(), Chunk: wire.Chunk{
			Message: &wire.ChunkMessage{Role: "assistant", Content: "x"}, Done: true, DoneReason: "stop",
			Metrics: wireMetrics(1_000_000, 1)}})
		if c := next(t, s); !c.Done {
			t.Fatalf("got %+v", c)
		}
		s.Close()
	}
	if won["honest"] < 4 {
		t.Errorf("the honest node served %d of 10 requests (liar %d): claims steered the choice", won["honest"], won["liar"])
	}
	if tps := nodeInfo(th.Hub, "liar").TokensPerSec; tps > 1e5 {
		t.Errorf("the liar's claimed rate was believed: %.0f tokens/s", tps)
	}
}

// TestDefaultModelFollowsWhatServes: a model a node claims to be the
// largest there is does not become the network's default; the model the
// network can serve from more places does.
func TestDefaultModelFollowsWhatServes(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	th.register(t, "boaster", "203.0.113.10", 10, m("boast:1", wire.MaxModelBytes))
	th.register(t, "a", "198.51.100.4", 2, m("real:1", 2e9))
	th.register(t, "b", "198.51.100.5", 2, m("real:1", 2e9))
	got := th.Models(false)
	if len(got) != 2 || got[0].Name != "real:1" || got[0].Origins != 2 {
		t.Fatalf("Models = %+v; want real:1 (two addresses) first", got)
	}
	// And a boaster cannot even register a size past any real model.
	n := th.dial(t, "203.0.113.11")
	n.send(map[string]any{"type": "register", "node_id": "max", "models": []map[string]any{{"name": "boast:2", "size": int64(1<<63 - 1)}}})
	if code, reason := n.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseInvalidModel {
		t.Errorf("size 2^63-1: %v %q, want 1008 %q", code, reason, wire.CloseInvalidModel)
	}
}

// TestCapabilityFloodIsRefused: tens of thousands of capability strings
// are refused at registration; the registry lock is never held for them.
func TestCapabilityFloodIsRefused(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	caps := make([]string, 20_000)
	for i := range caps {
		caps[i] = fmt.Sprintf("c%d", i)
	}
	n := th.dial(t, "203.0.113.12")
	start := time.Now()
	n.send(map[string]any{"type": "register", "node_id": "caps", "models": []map[string]any{{"name": "x:1", "size": 1, "capabilities": caps}}})
	code, reason := n.closeStatus()
	if code != websocket.StatusPolicyViolation || reason != wire.CloseInvalidModel {
		t.Fatalf("capability flood: %v %q, want 1008 %q", code, reason, wire.CloseInvalidModel)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing took %v", d)
	}
	if th.NodeCount() != 0 {
		t.Errorf("the node registered")
	}
}

// TestChunkingDoesNotChangeMeasuredSpeed plays a node that cuts its answer
// into one-byte chunks beside one that sends the same answer in four-byte
// chunks, both over one second of the router's clock: the router must
// measure them about as fast. Counting chunks, it measured the splitter
// more than four times faster (past slowFactor, enough to win the choice),
// and a node whose agent joined lines that had waited several times slower.
func TestChunkingDoesNotChangeMeasuredSpeed(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour})
	const answer = "The quick brown fox jumps over the lazy dog."
	nodes := map[string]*node{
		"splitter": th.register(t, "splitter", "203.0.113.30", 1, m("x:1", 1)),
		"honest":   th.register(t, "honest", "198.51.100.30", 1, m("x:1", 1)),
	}
	sizes := map[string]int{"splitter": 1, "honest": 4}
	for id, n := range nodes {
		other := "honest"
		if id == other {
			other = "splitter"
		}
		s := open(t, th.Hub, "x:1", other)
		n.expect(wire.TypeInferenceReq, s.ID())
		size := sizes[id]
		send := func(text string, done bool) {
			c := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: text}, Done: done}
			if done {
				c.DoneReason = "stop"
			}
			n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: s.ID(), Chunk: c})
			if got := next(t, s); got.Message == nil || got.Message.Content != text {
				t.Fatalf("%s: got %+v, want %q", id, got, text)
			}
		}
		send(answer[:size], false)
		clock.Advance(time.Second)
		for i := size; i < len(answer); i += size {
			send(answer[i:min(i+size, len(answer))], false)
		}
		send("", true)
		s.Close()
	}
	split, honest := nodeInfo(th.Hub, "splitter").TokensPerSec, nodeInfo(th.Hub, "honest").TokensPerSec
	if split <= 0 || honest <= 0 {
		t.Fatalf("measured %.2f and %.2f tokens/s; want both measured", split, honest)
	}
	if r := split / honest; r > 1.25 || r < 0.8 {
		t.Errorf("the splitter measured %.2f tokens/s, the honest node %.2f (%.2fx) for the same answer in the same time", split, honest, r)
	}
}
