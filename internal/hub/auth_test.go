package hub_test

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/nodedb"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// registerKeyed registers a node with key k: register, then the proof of
// the router's challenge, signed for host.
func (th *testHub) registerKeyed(t *testing.T, k *identity.Key, ip, host string, models ...wire.Model) (*node, frame) {
	t.Helper()
	n := th.dial(t, ip)
	n.send(map[string]any{"type": "register", "node_id": k.NodeID(), "key": k.Public(), "models": models, "max_concurrent": 2})
	f := n.nextOrEnd()
	if f.Type != wire.TypeChallenge {
		return n, f
	}
	var ch wire.Challenge
	if err := json.Unmarshal([]byte(f.raw), &ch); err != nil {
		t.Fatal(err)
	}
	nonce, err := base64.StdEncoding.DecodeString(ch.Nonce)
	if err != nil || len(nonce) != identity.NonceSize {
		t.Fatalf("challenge %s", f.raw)
	}
	n.send(wire.Proof{Type: wire.TypeProof, Signature: k.Sign(nonce, host, k.NodeID())})
	return n, n.nextOrEnd()
}

// nextOrEnd is next, or an empty frame when the link ends first.
func (n *node) nextOrEnd() frame {
	n.t.Helper()
	select {
	case f := <-n.frames:
		return f
	case <-n.done:
		select {
		case f := <-n.frames:
			return f
		default:
			return frame{}
		}
	case <-time.After(waitFor):
		n.t.Fatal("timed out waiting for a frame")
	}
	return frame{}
}

func (th *testHub) host() string { return th.srv.Listener.Addr().String() }

// TestKeyedRegistration: a node proves its key by signing the router's
// challenge; what cannot prove a key is refused, and keyless nodes cannot
// pose as keyed ones.
func TestKeyedRegistration(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, TakeoverTimeout: 200 * time.Millisecond})
	k, _ := identity.New()
	other, _ := identity.New()

	n, f := th.registerKeyed(t, k, "198.51.100.1", th.host(), m("x:1", 1))
	if f.Type != wire.TypeRegistered || f.NodeID != k.NodeID() {
		t.Fatalf("keyed register: %s", f.raw)
	}
	info := nodeInfo(th.Hub, k.NodeID())
	if info.Key != k.Public() || info.Tiers["x:1"] != hub.TierUnverified {
		t.Errorf("node info %+v: want its key and the unverified tier", info)
	}

	for _, tc := range []struct {
		name   string
		reg    map[string]any
		reason string
	}{
		{"node_id not derived from the key", map[string]any{"node_id": other.NodeID(), "key": k.Public()}, wire.CloseInvalidKey},
		{"a key that is not one", map[string]any{"node_id": k.NodeID(), "key": "ed25519:AAAA"}, wire.CloseInvalidKey},
		{"a keyless node with a key-derived id", map[string]any{"node_id": other.NodeID()}, wire.CloseReservedNodeID},
		{"a keyless node with a connected keyed node's id", map[string]any{"node_id": k.NodeID()}, wire.CloseReservedNodeID},
	} {
		c := th.dial(t, "203.0.113.50")
		reg := map[string]any{"type": "register", "models": []wire.Model{m("x:1", 1)}}
		for key, v := range tc.reg {
			reg[key] = v
		}
		c.send(reg)
		if code, reason := c.closeStatus(); code != websocket.StatusPolicyViolation || reason != tc.reason {
			t.Errorf("%s: %v %q, want 1008 %q", tc.name, code, reason, tc.reason)
		}
	}

	// Someone with the public key but not the private one: the proof fails.
	imp := th.dial(t, "203.0.113.51")
	imp.send(map[string]any{"type": "register", "node_id": k.NodeID(), "key": k.Public(), "models": []wire.Model{m("x:1", 1)}})
	if f := imp.next(); f.Type != wire.TypeChallenge {
		t.Fatalf("got %s, want a challenge", f.raw)
	}
	imp.send(wire.Proof{Type: wire.TypeProof, Signature: other.Sign(make([]byte, identity.NonceSize), th.host(), k.NodeID())})
	if code, reason := imp.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseProofFailed {
		t.Errorf("forged proof: %v %q, want 1008 %q", code, reason, wire.CloseProofFailed)
	}
	// A proof signed for another router (a relayed challenge) fails too.
	relay := th.dial(t, "203.0.113.52")
	relay.send(map[string]any{"type": "register", "node_id": k.NodeID(), "key": k.Public(), "models": []wire.Model{m("x:1", 1)}})
	ch := relay.next()
	var c wire.Challenge
	_ = json.Unmarshal([]byte(ch.raw), &c)
	nonce, _ := base64.StdEncoding.DecodeString(c.Nonce)
	relay.send(wire.Proof{Type: wire.TypeProof, Signature: k.Sign(nonce, "evil.example:443", k.NodeID())})
	if code, reason := relay.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseProofFailed {
		t.Errorf("proof for another host: %v %q", code, reason)
	}
	// The key's holder with a second live link: refused while the first answers.
	dup, f := th.registerKeyed(t, k, "198.51.100.2", th.host(), m("x:1", 1))
	if f.Type == wire.TypeRegistered {
		t.Fatalf("a second link took a live identity")
	}
	if code, reason := dup.closeStatus(); reason != wire.CloseNodeIDInUse {
		t.Errorf("second link: %v %q, want %q", code, reason, wire.CloseNodeIDInUse)
	}
	_ = n
}

// TestKeyedRecordFollowsTheKey: a keyed node's record is its key's,
// whatever address it comes back from; a fresh key from an address whose
// node failed inherits that address's record.
func TestKeyedRecordFollowsTheKey(t *testing.T) {
	clock := newTestClock()
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour,
		Breaker: hub.BreakerConfig{Threshold: 2, Cooldown: time.Minute}})
	k, _ := identity.New()
	n, f := th.registerKeyed(t, k, "198.51.100.1", th.host(), m("x:1", 1))
	if f.Type != wire.TypeRegistered {
		t.Fatal(f.raw)
	}
	failOnce(t, th.Hub, n, wire.ErrOllamaError)
	failOnce(t, th.Hub, n, wire.ErrOllamaError) // open
	_ = n.conn.CloseNow()
	eventually(t, "gone", func() bool { return th.NodeCount() == 0 })
	// Back from elsewhere: still open.
	if _, f := th.registerKeyed(t, k, "203.0.113.9", th.host(), m("x:1", 1)); f.Type != wire.TypeRegistered {
		t.Fatal(f.raw)
	}
	if b := nodeInfo(th.Hub, k.NodeID()).Breaker; b != "open" {
		t.Errorf("breaker %q after reconnecting from another address, want open", b)
	}
	// A brand-new key from the first address starts from what that
	// address's last node left behind.
	fresh, _ := identity.New()
	if _, f := th.registerKeyed(t, fresh, "198.51.100.1", th.host(), m("x:1", 1)); f.Type != wire.TypeRegistered {
		t.Fatal(f.raw)
	}
	if b := nodeInfo(th.Hub, fresh.NodeID()).Breaker; b != "open" {
		t.Errorf("a fresh key from the failing address starts with breaker %q, want open", b)
	}
}

// TestBan: a banned key is disconnected and refused when it returns.
func TestBan(t *testing.T) {
	th := newTestHub(t, hub.Config{MaxNodesPerIP: -1})
	k, _ := identity.New()
	n, _ := th.registerKeyed(t, k, "198.51.100.1", th.host(), m("x:1", 1))
	th.Ban(k.NodeID())
	if code, reason := n.closeStatus(); code != websocket.StatusPolicyViolation || reason != wire.CloseBanned {
		t.Errorf("banned node closed with %v %q", code, reason)
	}
	eventually(t, "gone", func() bool { return th.NodeCount() == 0 })
	again, f := th.registerKeyed(t, k, "203.0.113.1", th.host(), m("x:1", 1))
	if f.Type == wire.TypeChallenge || f.Type == wire.TypeRegistered {
		t.Fatalf("a banned key got %s", f.raw)
	}
	if _, reason := again.closeStatus(); reason != wire.CloseBanned {
		t.Errorf("banned key came back: %q", reason)
	}
	th.Unban(k.NodeID())
	if _, f := th.registerKeyed(t, k, "203.0.113.1", th.host(), m("x:1", 1)); f.Type != wire.TypeRegistered {
		t.Errorf("after the ban was lifted: %s", f.raw)
	}
}

// TestRecordsSurviveRestart: a router restarted on the same record file
// keeps every node's record (the breaker of a failing key) and the bans.
func TestRecordsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "router.db")
	clock := newTestClock()
	cfg := func(st hub.RecordStore) hub.Config {
		return hub.Config{MaxNodesPerIP: -1, Now: clock.Now, HeartbeatTimeout: time.Hour, Store: st,
			FlushInterval: 10 * time.Millisecond, Breaker: hub.BreakerConfig{Threshold: 2, Cooldown: time.Hour}}
	}
	db, err := nodedb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	th := newTestHub(t, cfg(db))
	bad, _ := identity.New()
	banned, _ := identity.New()
	n, _ := th.registerKeyed(t, bad, "198.51.100.1", th.host(), m("x:1", 1))
	failOnce(t, th.Hub, n, wire.ErrOllamaError)
	failOnce(t, th.Hub, n, wire.ErrOllamaError)
	th.Ban(banned.NodeID())
	th.Close() // saves what changed
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = nodedb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	th2 := newTestHub(t, cfg(db))
	if _, f := th2.registerKeyed(t, bad, "203.0.113.4", th2.host(), m("x:1", 1)); f.Type != wire.TypeRegistered {
		t.Fatal(f.raw)
	}
	if info := nodeInfo(th2.Hub, bad.NodeID()); info.Breaker != "open" || info.Reputation >= 0.5 {
		t.Errorf("after a restart the failing key has breaker %q reputation %.2f; want its record back", info.Breaker, info.Reputation)
	}
	c, f := th2.registerKeyed(t, banned, "203.0.113.5", th2.host(), m("x:1", 1))
	if f.Type == wire.TypeRegistered {
		t.Fatal("a banned key registered after a restart")
	}
	if _, reason := c.closeStatus(); reason != wire.CloseBanned {
		t.Errorf("banned key: %q", reason)
	}
}
