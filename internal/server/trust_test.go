package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// registerKeyedNode registers a node that proves key k.
func (h *harness) registerKeyedNode(t *testing.T, k *identity.Key, models ...wire.Model) *fakeNode {
	t.Helper()
	n := h.dialNode(t)
	n.id = k.NodeID()
	n.send(map[string]any{"type": "register", "node_id": k.NodeID(), "key": k.Public(), "models": models, "max_concurrent": 2})
	f := n.expect(wire.TypeChallenge)
	var ch wire.Challenge
	if err := json.Unmarshal([]byte(f.Raw), &ch); err != nil {
		t.Fatal(err)
	}
	nonce, _ := base64.StdEncoding.DecodeString(ch.Nonce)
	u, _ := url.Parse(h.wsURL)
	n.send(wire.Proof{Type: wire.TypeProof, Signature: k.Sign(nonce, u.Host, k.NodeID())})
	n.expect(wire.TypeRegistered)
	return n
}

// TestTrustRequirements: a consumer can ask for a trust tier or pin a
// digest on every dialect (header) and in the v1 body; the answer names
// the tier that served it and nothing of the node.
func TestTrustRequirements(t *testing.T) {
	h := newHarness(t, queueOff)
	k, _ := identity.New()
	keyed := h.registerKeyedNode(t, k, wire.Model{Name: "m:latest", Size: 1, Digest: strings.Repeat("a", 64)})
	anon := h.registerNode(t, "anon", 2, wire.Model{Name: "m:latest", Size: 1, Digest: strings.Repeat("b", 64)})

	answer := func(n *fakeNode, text string) {
		req := n.expect(wire.TypeInferenceReq)
		n.content(req.RequestID, text)
		n.finish(req.RequestID, 1, 1)
	}
	// The v1 body asks for unverified or better: only the keyed node.
	streamc := h.openChatAsync(t, chatReq{Model: "m", Messages: []ChatMessage{{Role: "user", Content: "hi"}}, Trust: "unverified"})
	answer(keyed, "keyed")
	s := streamc.wait(t)
	if got := s.resp.Header.Get("X-IdleClaw-Tier"); got != hub.TierUnverified {
		t.Errorf("X-IdleClaw-Tier %q, want unverified", got)
	}
	tr := s.all(t)
	if tr.Content != "keyed" || !strings.Contains(s.rawText(), `"trust_tier":"unverified"`) {
		t.Errorf("answer %+v\n%s", tr, s.rawText())
	}
	if strings.Contains(s.rawText(), k.NodeID()) || strings.Contains(s.rawText(), "ed25519") {
		t.Error("the answer names the node or its key")
	}
	// A digest pin, by header, on the OpenAI dialect: only the keyless node.
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-IdleClaw-Digest", "sha256:"+strings.Repeat("b", 64))
	done := make(chan struct{})
	go func() {
		defer close(done)
		answer(anon, "anon")
	}()
	resp, body := h.do(t, req)
	<-done
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-IdleClaw-Tier") != hub.TierAnonymous ||
		!strings.Contains(string(body), `"trust_tier":"anonymous"`) || !strings.Contains(string(body), "anon") {
		t.Errorf("digest pin: %d %s tier %q", resp.StatusCode, body, resp.Header.Get("X-IdleClaw-Tier"))
	}
	// Nothing verified yet: a verified-only request is refused at once,
	// saying why.
	st, b, _ := h.chatStatus(t, chatReq{Model: "m", Messages: []ChatMessage{{Role: "user", Content: "hi"}}, Trust: "verified"})
	if st != http.StatusServiceUnavailable || !strings.Contains(b, "of trust tier verified or better") {
		t.Errorf("verified only: %d %s", st, b)
	}
	st, b, _ = h.chatStatus(t, userChat("m", "hi"), "X-IdleClaw-Trust", "best")
	if st != http.StatusBadRequest {
		t.Errorf("unknown trust value: %d %s", st, b)
	}
	keyed.noFrame()
	anon.noFrame()

	// The network view counts them and their digests.
	_, nb := h.get(t, "/api/network")
	var nv struct {
		Models []struct {
			Name       string                    `json:"name"`
			Unverified int                       `json:"unverified"`
			Digests    map[string]map[string]int `json:"digests"`
		} `json:"models"`
	}
	if err := json.Unmarshal(nb, &nv); err != nil || len(nv.Models) != 1 || nv.Models[0].Unverified != 2 || len(nv.Models[0].Digests) != 2 {
		t.Errorf("/api/network %s", nb)
	}
}
