package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestNodeRegistrationRefused: every refusal of protocol §2.3 closes the
// link with its exact code and reason.
func TestNodeRegistrationRefused(t *testing.T) {
	models := func(n int) []wire.Model {
		out := make([]wire.Model, n)
		for i := range out {
			out[i] = model(fmt.Sprintf("m%d:latest", i), 1)
		}
		return out
	}
	reg := func(id string, ms []wire.Model) string {
		b, _ := json.Marshal(map[string]any{"type": "register", "node_id": id, "models": ms})
		return string(b)
	}
	tests := []struct {
		name   string
		cfg    func(*harnessConfig)
		setup  func(t *testing.T, h *harness)
		first  string // the first frame; "" sends nothing
		binary bool
		code   websocket.StatusCode
		reason string
	}{
		{name: "no frame in time", cfg: func(c *harnessConfig) { c.hub.RegistrationTimeout = 100 * time.Millisecond },
			code: 1008, reason: "registration timeout"},
		{name: "heartbeat first", first: `{"type":"heartbeat","node_id":"n","active_requests":0,"available":true}`,
			code: 1008, reason: "expected register message"},
		{name: "not JSON", first: `register me`, code: 1008, reason: "expected register message"},
		{name: "binary frame", first: reg("n", models(1)), binary: true, code: 1008, reason: "expected register message"},
		{name: "empty node_id", first: reg("", models(1)), code: 1008, reason: "invalid node_id"},
		{name: "65-character node_id", first: reg(strings.Repeat("n", 65), models(1)), code: 1008, reason: "invalid node_id"},
		{name: "no models", first: reg("n", nil), code: 1008, reason: "no models provided"},
		{name: "empty models", first: reg("n", []wire.Model{}), code: 1008, reason: "no models provided"},
		{name: "21 models", first: reg("n", models(21)), code: 1008, reason: "too many models"},
		{name: "empty model name", first: reg("n", []wire.Model{model("", 1)}), code: 1008, reason: "invalid model name"},
		{name: "65-character model name", first: reg("n", []wire.Model{model(strings.Repeat("m", 65), 1)}),
			code: 1008, reason: "invalid model name"},
		{name: "model name outside the pattern", first: reg("n", []wire.Model{model("m1:latest", 1), model("bad name", 1)}),
			code: 1008, reason: "invalid model name"},
		{
			name: "fourth node from one IP",
			cfg:  func(c *harnessConfig) { c.hub.MaxNodesPerIP = 3 },
			setup: func(t *testing.T, h *harness) {
				for i := range 3 {
					h.registerNode(t, fmt.Sprintf("n%d", i), 1, model("m:latest", 1))
				}
			},
			first: reg("n3", models(1)), code: 1008, reason: "too many nodes from this IP",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*harnessConfig)
			if tc.cfg != nil {
				opts = append(opts, tc.cfg)
			}
			h := newHarness(t, opts...)
			if tc.setup != nil {
				tc.setup(t, h)
			}
			n := h.dialNode(t)
			if tc.first != "" {
				typ := websocket.MessageText
				if tc.binary {
					typ = websocket.MessageBinary
				}
				if err := n.conn.Write(context.Background(), typ, []byte(tc.first)); err != nil {
					t.Fatal(err)
				}
			}
			code, reason := n.closed()
			if code != tc.code || reason != tc.reason {
				t.Errorf("closed with %d %q, want %d %q", code, reason, tc.code, tc.reason)
			}
			if want := 0; tc.setup == nil && h.hub.NodeCount() != want {
				t.Errorf("NodeCount %d, want %d", h.hub.NodeCount(), want)
			}
		})
	}
}

// TestNodeReRegister: the same node_id again, while the old link answers
// pings, is refused with 1008 "node_id in use" and the old link keeps
// serving; once the old link is gone, the id registers anew and serves.
// (A half-open old link that stops answering is replaced with 1000
// "re-registered": internal/hub's TestNodesPerIPAndReRegister.)
func TestNodeReRegister(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.MaxNodesPerIP = 3 })
	old := h.registerNode(t, "same", 1, model("m:latest", 1))
	h.registerNode(t, "other1", 1, model("x:latest", 1))
	h.registerNode(t, "other2", 1, model("x:latest", 1))
	dup := h.dialNode(t)
	dup.send(map[string]any{"type": "register", "node_id": "same", "models": []wire.Model{model("m:latest", 1)}})
	if code, reason := dup.closed(); code != websocket.StatusPolicyViolation || reason != wire.CloseNodeIDInUse {
		t.Errorf("second link for a live id closed with %d %q, want 1008 %q", code, reason, wire.CloseNodeIDInUse)
	}
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := old.expect(wire.TypeInferenceReq)
	old.content(req.RequestID, "from the old link")
	old.finish(req.RequestID, 1, 1)
	if tr := streamc.wait(t).all(t); tr.Content != "from the old link" {
		t.Errorf("got %+v", tr)
	}

	_ = old.conn.CloseNow()
	eventually(t, "the old link unregistered", func() bool { return h.hub.NodeCount() == 2 })
	fresh := h.registerNode(t, "same", 1, model("m:latest", 1))
	if n := h.hub.NodeCount(); n != 3 {
		t.Errorf("NodeCount %d, want 3", n)
	}
	streamc = h.openChatAsync(t, userChat("m", "hi"))
	req = fresh.expect(wire.TypeInferenceReq)
	fresh.content(req.RequestID, "from the new link")
	fresh.finish(req.RequestID, 1, 1)
	if tr := streamc.wait(t).all(t); tr.Content != "from the new link" {
		t.Errorf("got %+v", tr)
	}
}

// TestNodeHeartbeatTimeout: a node silent for HeartbeatTimeout is dropped
// with 1000 "heartbeat timeout"; one that keeps sending stays.
func TestNodeHeartbeatTimeout(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.HeartbeatTimeout = 400 * time.Millisecond })
	quiet := h.registerNode(t, "quiet", 1, model("m:latest", 1))
	alive := h.registerNode(t, "alive", 1, model("m:latest", 1))

	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		tick := time.NewTicker(20 * time.Millisecond) // the node's heartbeat period, not synchronisation
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				b, _ := json.Marshal(map[string]any{"type": "heartbeat", "node_id": "alive", "active_requests": 0, "available": true})
				if alive.conn.Write(context.Background(), websocket.MessageText, b) != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-beating }()

	if code, reason := quiet.closed(); code != 1000 || reason != "heartbeat timeout" {
		t.Errorf("quiet node closed with %d %q, want 1000 heartbeat timeout", code, reason)
	}
	eventually(t, "the quiet node unregistered", func() bool { return h.hub.NodeCount() == 1 })
	nodes := h.hub.Nodes()
	if len(nodes) != 1 || nodes[0].NodeID != "alive" {
		t.Errorf("registered nodes %+v, want alive only", nodes)
	}
}

// TestNodeHeartbeatOnlyUpdatesItsOwnLink: a heartbeat naming another
// node_id changes the link it arrived on, never the named node.
func TestNodeHeartbeatOnlyUpdatesItsOwnLink(t *testing.T) {
	h := newHarness(t, queueOff)
	a := h.registerNode(t, "a", 1, model("ma:latest", 2))
	h.registerNode(t, "b", 1, model("mb:latest", 1))
	a.heartbeat("b", false) // names b
	eventually(t, "a unavailable", func() bool { return len(h.models(t).Models) == 1 })
	if got := h.models(t).Models; got[0] != "mb:latest" {
		t.Errorf("/api/models %v, want [mb:latest]: b must stay available", got)
	}
	// a still serves ma but takes nothing new: a 503 at once that says
	// so (nothing to wait for).
	if st, body, _ := h.chatStatus(t, userChat("ma", "hi")); st != http.StatusServiceUnavailable ||
		!strings.Contains(body, "No nodes available with model ma: the nodes that serve it are not taking requests now") {
		t.Errorf("chat for the unavailable model: %d %s", st, body)
	}
	a.noFrame()
}

type modelsBody struct {
	Models       []string                   `json:"models"`
	Capabilities map[string]map[string]bool `json:"capabilities"`
}

func (h *harness) models(t testing.TB) modelsBody {
	t.Helper()
	resp, b := h.get(t, "/api/models")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/models: %d %s", resp.StatusCode, b)
	}
	var m modelsBody
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("/api/models %s: %v", b, err)
	}
	return m
}

// TestNodeModelsUpdate: models_update replaces the model list; an invalid
// one is ignored.
func TestNodeModelsUpdate(t *testing.T) {
	h := newHarness(t)
	n := h.registerNode(t, "n", 2, model("old:latest", 1))
	n.send(map[string]any{"type": "models_update", "models": []wire.Model{model("new:7b", 2, "completion", "thinking")}})
	eventually(t, "new model listed", func() bool {
		m := h.models(t).Models
		return len(m) == 1 && m[0] == "new:7b"
	})
	if caps := h.models(t).Capabilities["new:7b"]; !caps["thinking"] || caps["tool_calls"] {
		t.Errorf("capabilities %v, want thinking only", caps)
	}
	if st, body, _ := h.chatStatus(t, userChat("old", "hi")); st != http.StatusServiceUnavailable ||
		!strings.Contains(body, "No nodes available with model old") {
		t.Errorf("chat for the dropped model: %d %s", st, body)
	}
	// An invalid update (no models) is refused and changes nothing; the
	// link stays up.
	n.send(map[string]any{"type": "models_update", "models": []wire.Model{}})
	n.send(map[string]any{"type": "models_update", "models": []wire.Model{model("bad name", 1)}})
	n.send(map[string]any{"type": "models_update", "models": []wire.Model{model("new:7b", 2, "completion", "thinking"), model("marker:1b", 1)}})
	eventually(t, "marker listed", func() bool { return len(h.models(t).Models) == 2 })

	streamc := h.openChatAsync(t, chatReq{Model: "new:7b", Messages: []ChatMessage{{Role: "user", Content: "hi"}}, Think: true})
	req := n.expect(wire.TypeInferenceReq)
	if string(req.ParamKeys["think"]) != "true" {
		t.Errorf("think %s: the updated capabilities should apply", req.ParamKeys["think"])
	}
	n.finish(req.RequestID, 1, 1)
	streamc.wait(t)
}

// TestNodeAvailability: available:false takes a node out of rotation and
// out of /api/models; available:true brings it back.
func TestNodeAvailability(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.hub.Queue.MaxWait = 100 * time.Millisecond })
	n := h.registerNode(t, "n", 2, model("m:latest", 1))
	n.heartbeat("n", false)
	eventually(t, "node unavailable", func() bool { return len(h.models(t).Models) == 0 })
	// The node still serves m but takes nothing: there is nothing to wait
	// for, so the request fails at once with the reason; the node is sent
	// nothing.
	start := time.Now()
	if st, body, _ := h.chatStatus(t, userChat("m", "hi")); st != http.StatusServiceUnavailable ||
		!strings.Contains(body, "not taking requests now") {
		t.Errorf("chat to an unavailable node: %d %s", st, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %v", d)
	}
	n.noFrame()
	// A v1 heartbeat (no "available" key) means available.
	n.send(`{"type":"heartbeat","node_id":"n","active_requests":0}`)
	eventually(t, "node available", func() bool { return len(h.models(t).Models) == 1 })
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := n.expect(wire.TypeInferenceReq)
	n.finish(req.RequestID, 1, 1)
	streamc.wait(t)
}

// TestNodeMaxConcurrent: a node with max_concurrent 1 takes one request;
// with the queue off, the second gets 503 until the first ends.
func TestNodeMaxConcurrent(t *testing.T) {
	h := newHarness(t, queueOff)
	n := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "one"))
	req := n.expect(wire.TypeInferenceReq)
	expectBusy(t, h, userChat("m", "two"))
	n.noFrame()
	if m := h.models(t).Models; len(m) != 0 {
		t.Errorf("/api/models lists %v while the only node is full", m)
	}
	n.content(req.RequestID, "done")
	n.finish(req.RequestID, 1, 1)
	if tr := streamc.wait(t).all(t); tr.Content != "done" {
		t.Errorf("first request: %+v", tr)
	}
	streamc = h.openChatAsync(t, userChat("m", "three"))
	req = n.expect(wire.TypeInferenceReq)
	n.finish(req.RequestID, 1, 1)
	streamc.wait(t)
}

// TestNodeWSRateLimit: the /ws/node bucket refuses with plain HTTP 429.
func TestNodeWSRateLimit(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *harnessConfig) { c.server.RateWSRPM = 2; c.server.Now = clock.Now })
	h.registerNode(t, "a", 1, model("m:latest", 1))
	h.registerNode(t, "b", 1, model("m:latest", 1))

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.wsURL, &websocket.DialOptions{HTTPClient: h.client})
	if err == nil {
		c.CloseNow()
		t.Fatal("third upgrade within the minute accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third upgrade: %v, %+v; want HTTP 429", err, resp)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	// The chat and default buckets are separate.
	if r, _ := h.get(t, "/health"); r.StatusCode != http.StatusOK {
		t.Errorf("/health: %d", r.StatusCode)
	}
	clock.Advance(30 * time.Second)
	h.registerNode(t, "c", 1, model("m:latest", 1))
}
