package hub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"slices"
	"strings"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Trust tiers, from the most trusted. A node's tier is per model:
// quarantined nodes are out of rotation for that model.
const (
	TierTrusted     = "trusted"     // the operator vouches for the key (Config.TrustedNodes)
	TierVerified    = "verified"    // a proven key whose answers agreed with others' (canaries)
	TierUnverified  = "unverified"  // a proven key without that evidence yet
	TierAnonymous   = "anonymous"   // no key: a v1 node, or one that chose none
	TierQuarantined = "quarantined" // its answers disagreed with the others': not sent the model
)

// tierRank orders tiers for a consumer's minimum: higher is more trusted.
func tierRank(t string) int {
	switch t {
	case TierTrusted:
		return 4
	case TierVerified:
		return 3
	case TierUnverified:
		return 2
	case TierAnonymous:
		return 1
	}
	return 0
}

// AtLeast reports whether tier t meets the minimum min ("" accepts any
// tier that serves).
func AtLeast(t, min string) bool {
	if t == TierQuarantined {
		return false
	}
	return min == "" || tierRank(t) >= tierRank(min)
}

// authenticate checks a registration's identity before the node is known
// to anyone. A keyless node may not announce a key-derived id. A node
// with a key must announce the id derived from it, is sent a challenge,
// and must answer with the challenge signed for this router (the Host it
// dialed, or one of Config.PublicHosts) and its id, within the
// registration timeout. It returns the proven key ("" for a keyless node)
// or the close reason.
func (h *Hub) authenticate(ctx context.Context, n *Node, reg wire.Register) (key, reason string) {
	if reg.Key == "" {
		if strings.HasPrefix(reg.NodeID, identity.IDPrefix) {
			return "", wire.CloseReservedNodeID
		}
		if h.Banned(reg.NodeID) {
			return "", wire.CloseBanned
		}
		return "", ""
	}
	pub, err := identity.ParsePublic(reg.Key)
	if err != nil || identity.IDOf(pub) != reg.NodeID {
		return "", wire.CloseInvalidKey
	}
	if h.Banned(reg.NodeID) {
		return "", wire.CloseBanned
	}
	nonce, err := identity.NewNonce()
	if err != nil {
		return "", "router error"
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.RegistrationTimeout)
	defer cancel()
	ch, _ := json.Marshal(wire.Challenge{Type: wire.TypeChallenge, Nonce: base64.StdEncoding.EncodeToString(nonce)})
	if err := n.conn.Write(ctx, websocket.MessageText, ch); err != nil {
		return "", wire.CloseProofFailed
	}
	typ, data, err := n.conn.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		return "", wire.CloseProofFailed
	}
	f, err := wire.DecodeNodeFrame(data)
	if err != nil || f.Type != wire.TypeProof {
		return "", wire.CloseProofFailed
	}
	var hosts []string
	for _, host := range append([]string{n.host}, h.cfg.PublicHosts...) {
		hosts = append(hosts, hostForms(host)...)
	}
	if !slices.ContainsFunc(hosts, func(host string) bool {
		return identity.Verify(pub, nonce, host, reg.NodeID, f.Signature)
	}) {
		return "", wire.CloseProofFailed
	}
	return reg.Key, ""
}

// hostForms lists the spellings of a host a node may have dialed: as
// given, and with or without the default ports (a client may send Host
// with or without them, and a proxy may rewrite it).
func hostForms(host string) []string {
	if host == "" {
		return nil
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return []string{host, net.JoinHostPort(host, "80"), net.JoinHostPort(host, "443")}
	}
	if port == "80" || port == "443" {
		return []string{host, h}
	}
	return []string{host}
}

// Banned reports whether the operator banned a node id.
func (h *Hub) Banned(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bans[id]
}

// Ban bars a node id (for a keyed node, its key) from the network: it is
// disconnected now and refused when it comes back. With a Store, bans are
// kept across restarts.
func (h *Hub) Ban(id string) {
	h.mu.Lock()
	h.bans[id] = true
	n := h.nodes[id]
	h.mu.Unlock()
	if h.cfg.Store != nil {
		if err := h.cfg.Store.PutBan(id, true); err != nil {
			h.log.Warn("cannot save the ban; it holds until the router restarts", "node_id", id, "err", err)
		}
	}
	if n != nil {
		n.closeWith(websocket.StatusPolicyViolation, wire.CloseBanned)
	}
	h.log.Info("node banned", "node_id", id)
}

// Unban lifts a ban.
func (h *Hub) Unban(id string) {
	h.mu.Lock()
	delete(h.bans, id)
	h.mu.Unlock()
	if h.cfg.Store != nil {
		if err := h.cfg.Store.PutBan(id, false); err != nil {
			h.log.Warn("cannot save the lifted ban", "node_id", id, "err", err)
		}
	}
	h.log.Info("node ban lifted", "node_id", id)
}

// Bans lists the banned node ids.
func (h *Hub) Bans() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.bans))
	for id := range h.bans {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// tierLocked is n's tier for model. h.mu must be held.
func (h *Hub) tierLocked(n *Node, model string) string {
	if n.key == "" {
		if n.rec.quarantined(model) {
			return TierQuarantined
		}
		return TierAnonymous
	}
	if h.trusted[n.id] {
		return TierTrusted
	}
	switch {
	case n.rec.quarantined(model):
		return TierQuarantined
	case n.rec.verified(model):
		return TierVerified
	}
	return TierUnverified
}

// Judge records a canary's verdict on a node's answer for model: whether
// it agreed with the reference answers. It reports whether the node's
// tier for the model changed (to verified, out of it, into or out of
// quarantine).
func (h *Hub) Judge(nodeID, model string, agree bool) (changed bool) {
	h.mu.Lock()
	n := h.nodes[nodeID]
	if n == nil {
		h.mu.Unlock()
		return false
	}
	before := h.tierLocked(n, model)
	now := h.cfg.Now()
	n.rec.updated = now
	n.rec.judge(model, agree, now)
	after := h.tierLocked(n, model)
	if before != after {
		h.gen++
	}
	h.mu.Unlock()
	if before != after {
		h.log.Info("node trust changed", "node_id", nodeID, "model", model, "from", before, "to", after)
	}
	return before != after
}
