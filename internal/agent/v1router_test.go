package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Against a v1 router (its "registered" carries no protocol version), which
// ignores models_update and available:false, the node registers again when
// its models change and leaves while it cannot serve, instead of being sent
// work it would have to refuse.

func TestAgentV1RouterModelsChangeReregisters(t *testing.T) {
	h := newV1Harness(t, ollamatest.Config{}, func(c *Config) {
		c.ModelsPollInterval = 20 * time.Millisecond
		c.HeartbeatInterval = time.Hour
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	h.fake.SetModels([]ollamatest.Model{storiesModel, {Name: "tiny:1m", Size: 5_000_000}})
	// No models_update: the link closes normally and a new one registers
	// with both models.
	if code, reason := rc.waitClosed(t); code != 1000 || reason != "node leaving: models changed" {
		t.Errorf("old link closed with %d %q", code, reason)
	}
	for drained := false; !drained; {
		select {
		case f := <-rc.frames:
			if f.typ() == wire.TypeModelsUpdate {
				t.Errorf("sent a models_update to a v1 router: %s", f.raw)
			}
		default:
			drained = true
		}
	}
	rc2, reg := h.connect(t)
	if ms, _ := reg.m["models"].([]any); len(ms) != 2 {
		t.Fatalf("register after the change: %s", reg.raw)
	}
	rc2.request(t, "r1", chat("tiny:1m", "hi"))
	if f := rc2.expectFor(t, "r1"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("frame %s", f.raw)
	}
	h.out.waitFor(t, "registering again with the v1 router")
}

func TestAgentV1RouterLeavesWhileUnavailable(t *testing.T) {
	h := newV1Harness(t, ollamatest.Config{}, func(c *Config) {
		c.ModelsPollInterval = 20 * time.Millisecond
		c.HeartbeatInterval = time.Hour
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	h.fake.SetModels(nil) // Ollama has nothing to serve
	if code, reason := rc.waitClosed(t); code != 1000 || reason != "node leaving: cannot serve now" {
		t.Errorf("link closed with %d %q", code, reason)
	}
	h.out.waitFor(t, "left the v1 router until it can")
	// It comes back once it can, and not before: nothing connected
	// between leaving and Ollama's return.
	h.fake.SetModels([]ollamatest.Model{storiesModel})
	rc2, reg := h.connect(t)
	if ms, _ := reg.m["models"].([]any); len(ms) != 1 {
		t.Fatalf("register when back: %s", reg.raw)
	}
	rc2.request(t, "r1", chat("stories:latest", "hi"))
	if f := rc2.expectFor(t, "r1"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("frame %s", f.raw)
	}
	out := h.out.String()
	left := strings.Index(out, "left the v1 router")
	back := strings.Index(out, "Ollama is back: connecting again")
	if left < 0 || back < left || strings.Contains(out[left:back], "connected to the router") {
		t.Errorf("output:\n%s", out)
	}
}

// TestAgentV2RouterKeepsTheLink: the same changes against our router are
// announced on the link that is up.
func TestAgentV2RouterKeepsTheLink(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.ModelsPollInterval = 20 * time.Millisecond
		c.HeartbeatInterval = time.Hour
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	h.fake.SetModels(nil)
	if f := rc.expect(t, wire.TypeHeartbeat); f.m["available"] != false {
		t.Fatalf("heartbeat %s", f.raw)
	}
	h.fake.SetModels([]ollamatest.Model{storiesModel, {Name: "tiny:1m", Size: 5_000_000}})
	rc.expect(t, wire.TypeModelsUpdate)
	select {
	case <-rc.done:
		t.Fatalf("the link to a v2 router closed: %d %q", rc.closeCode, rc.closeReason)
	default:
	}
}

// TestAgentV1RouterLeavesWhilePaused: the owner's pause, like Ollama's
// absence, makes the node leave a v1 router (which would keep sending
// work); it comes back when resumed, not before, and without waiting for
// the next models poll.
func TestAgentV1RouterLeavesWhilePaused(t *testing.T) {
	h := newV1Harness(t, ollamatest.Config{}, func(c *Config) {
		c.ModelsPollInterval = time.Hour // only the resume can bring it back in time
		c.HeartbeatInterval = time.Hour
		c.Owner = Owner{Poll: -1}
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	h.agent.Pause(time.Time{})
	if code, reason := rc.waitClosed(t); code != 1000 || reason != "node leaving: cannot serve now" {
		t.Errorf("link closed with %d %q", code, reason)
	}
	h.out.waitFor(t, "cannot serve now (paused): left the v1 router until it can")
	h.agent.Resume()
	rc2, _ := h.connect(t)
	rc2.request(t, "r1", chat("stories:latest", "hi"))
	if f := rc2.expectFor(t, "r1"); f.typ() != wire.TypeInferenceChunk {
		t.Errorf("frame %s", f.raw)
	}
	// The link is up again (the request was answered); its line may be
	// printed after the answer's.
	h.out.waitAfter(t, "left the v1 router", "connected to the router")
}
