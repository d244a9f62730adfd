package agent

import (
	"encoding/json"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"0.11.0", true}, {"0.12.3", true}, {"1.0.0", true}, {"v0.11.4", true},
		{"0.10.9", false}, {"0.9.6", false}, {"0.0.0", false}, {"", false}, {"dev", false},
	} {
		if got := versionAtLeast(tc.v, 0, 11); got != tc.want {
			t.Errorf("versionAtLeast(%q, 0, 11) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

// TestThinkLevelForOldOllama: an Ollama older than 0.11 (the fake says
// 0.9.6) refuses think:"high"; the node asks it to think with true instead,
// and passes a bool through unchanged.
func TestThinkLevelForOldOllama(t *testing.T) {
	for _, tc := range []struct{ version, sent, want string }{
		{"0.9.6", `"high"`, "true"},
		{"0.9.6", "false", "false"},
		{"0.12.0", `"high"`, `"high"`},
	} {
		t.Run(tc.version+" "+tc.sent, func(t *testing.T) {
			h := newHarness(t, ollamatest.Config{Version: tc.version}, nil)
			rc, _ := h.connect(t)
			p := chat("stories:latest", "hi")
			p["think"] = json.RawMessage(tc.sent)
			rc.request(t, "r1", p)
			for f := rc.expectFor(t, "r1"); f.m["chunk"].(map[string]any)["done"] != true; f = rc.expectFor(t, "r1") {
			}
			reqs := h.fake.Requests()
			if got := string(reqs[len(reqs)-1].Think); got != tc.want {
				t.Fatalf("Ollama got think %s, want %s", got, tc.want)
			}
		})
	}
}
