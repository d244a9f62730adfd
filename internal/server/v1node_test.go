package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestV1NodeInterop plays an upstream (v1) node: it registers an untagged
// model name without any extension field, matches model names exactly,
// and strips Ollama's counts from its final chunk. The router must send it
// its own spelling, acknowledge with its protocol version, and count the
// answer it relayed instead of reporting zero tokens.
func TestV1NodeInterop(t *testing.T) {
	h := newHarness(t)
	n := h.dialNode(t)
	n.id = "upstream"
	n.send(`{"type":"register","node_id":"upstream","models":[{"name":"stories","size":1185376}],"max_concurrent":2,"ollama_version":"0.6.2"}`)
	ack := n.expect(wire.TypeRegistered)
	var a struct {
		NodeID   string `json:"node_id"`
		Protocol int    `json:"protocol"`
	}
	if err := json.Unmarshal([]byte(ack.Raw), &a); err != nil || a.NodeID != "upstream" || a.Protocol != wire.ProtocolVersion {
		t.Fatalf("registered %s: want the node id and protocol %d", ack.Raw, wire.ProtocolVersion)
	}

	for _, asked := range []string{"stories", "stories:latest"} {
		streamc := h.openChatAsync(t, userChat(asked, "Once"))
		req := n.expect(wire.TypeInferenceReq)
		if req.Params.Model != "stories" {
			t.Fatalf("asked for %q, the v1 node was sent %q: it matches names exactly and would refuse", asked, req.Params.Model)
		}
		for _, tok := range []string{" upon", " a", " time"} {
			n.content(req.RequestID, tok)
		}
		// A v1 final chunk: done, no counts.
		n.send(`{"type":"inference_chunk","request_id":"` + req.RequestID + `","chunk":{"message":{"role":"assistant","content":""},"done":true}}`)
		s := streamc.wait(t)
		tr := s.all(t)
		raw := s.rawText()
		if tr.Content != " upon a time" || tr.Finish != "stop" {
			t.Fatalf("answer %+v", tr)
		}
		if !strings.Contains(raw, `"usage":{"completion_tokens":3}`) {
			t.Errorf("usage: want the 3 relayed tokens and no prompt count (unknown), got:\n%s", raw)
		}
	}
}
