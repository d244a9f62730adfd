package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// badFrames are what a flooding node sends, in turn: every kind of frame
// the router refuses or ignores once a node is registered.
func badFrames() [][]byte {
	calls := make([]map[string]any, 17)
	for i := range calls {
		calls[i] = map[string]any{"function": map[string]any{"name": "web_search", "arguments": map[string]any{"query": "q"}}}
	}
	seventeen, _ := json.Marshal(map[string]any{"type": "inference_chunk", "request_id": "nope",
		"chunk": map[string]any{"message": map[string]any{"role": "assistant", "tool_calls": calls}}})
	return [][]byte{
		[]byte(`not json at all`),
		[]byte(`{"type":"inference_chunk","request_id":"nope","chunk":{"message":{"role":"assistant","content":"x"}}}`),
		[]byte(`{"type":"inference_error","request_id":"nope","error":"ollama_error"}`),
		[]byte(`{"type":"no_such_type","x":1}`),
		[]byte(`{"type":"register","node_id":"again","models":[{"name":"x:1","size":1}]}`),
		[]byte(`{"type":"heartbeat","node_id":"x","loaded_models":["` + strings.Repeat("m", 100) + `"]}`),
		[]byte(`{"type":"heartbeat","node_id":"x"}`),
		[]byte(`{"type":"models_update","models":[{"name":"x:1","size":1}]}`),
		[]byte(`{"type":"inference_chunk"}`),
		seventeen,
	}
}

// TestBadFrameFloodIsCutAndQuiet: three registered nodes from one
// address (the per-IP maximum) send every kind of bad frame as fast as
// they can, then come back under fresh ids until the router refuses their
// upgrades: each link is closed once it spends its invalid-frame budget,
// the router's log grows by a bounded number of lines, not one per frame,
// and an honest node and /health are untouched.
func TestBadFrameFloodIsCutAndQuiet(t *testing.T) {
	r := startRouter(t)
	honestNode(t, r, freshIP(), "honest-logs", model("honest:1", 1e9))
	probe := r.probe(50*time.Millisecond, "/health")
	mark := r.log.mark()
	frames := badFrames()
	ip := freshIP()
	var sent, links, refusedUpgrades atomic.Int64
	var mu sync.Mutex
	closes := map[string]int{}
	start := time.Now()
	stop := start.Add(3 * time.Second)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gen := 0; time.Now().Before(stop); gen++ {
				n, err := dialNode(t, r, ip, true)
				if err != nil {
					if !strings.Contains(err.Error(), "status 429") {
						t.Errorf("dial: %v", err)
						return
					}
					refusedUpgrades.Add(1)
					time.Sleep(50 * time.Millisecond) // pacing the retries of a refused attacker
					continue
				}
				if err := n.register(fmt.Sprintf("flood-%d-%d", w, gen), 2, model("flood:1", 1)); err != nil {
					// Past the per-IP node limit while an earlier link of
					// this address is still being closed: try again.
					_ = n.conn.CloseNow()
					continue
				}
				links.Add(1)
				for i := 0; n.isOpen(); i++ {
					typ := websocket.MessageText
					if i%11 == 10 {
						typ = websocket.MessageBinary
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err := n.conn.Write(ctx, typ, frames[i%len(frames)])
					cancel()
					if err != nil {
						break
					}
					sent.Add(1)
				}
				code, reason, err := n.closeStatus(10 * time.Second)
				mu.Lock()
				closes[fmt.Sprintf("%d %q %v", code, reason, err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	probe.stop()
	lines := r.log.since(mark)
	// The honest node is still there and serves.
	a, err := r.chat(context.Background(), clientFrom(freshIP()), "v1", chatBody("v1", "honest:1", "after the flood", nil), nil)
	if err != nil || a.Content != "honest: after the flood" {
		t.Errorf("honest chat after the flood: %+v %v", a, err)
	}
	want := fmt.Sprintf("%d %q <nil>", websocket.StatusPolicyViolation, wire.CloseTooManyInvalid)
	if len(closes) != 1 || closes[want] == 0 {
		t.Errorf("the flooders' links ended with %v; want all %s", closes, want)
	}
	if refusedUpgrades.Load() == 0 {
		t.Errorf("no upgrade was refused: the node-connection bucket (5/min) did not hold")
	}
	perLink := float64(sent.Load()) / float64(links.Load())
	// Each link may log a few lines per kind of refusal (lograte: burst 3
	// per node and kind), and the router logs its registration and end.
	maxLines := int(links.Load()) * (3*len(frames) + 6)
	if len(lines) > maxLines {
		t.Errorf("%d log lines for %d refused frames over %d links; want at most %d", len(lines), sent.Load(), links.Load(), maxLines)
	}
	p99, _, _ := probe.lat["/health"].pct(99)
	if probe.bad.Load() > 0 || p99 > freezeP99 {
		t.Errorf("/health during the flood: %s, %d failed (%v)", probe.summary("/health"), probe.bad.Load(), probe.lastBad.Load())
	}
	kinds := map[string]int{}
	for _, l := range lines {
		var v struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &v) == nil {
			kinds[v.Msg]++
		}
	}
	t.Logf("log lines by message: %v", kinds)
	observe(t, "3 registered nodes of one address flood 10 kinds of bad frames, then return under fresh ids", "invalid-frame budget 10/s, burst 200; lograte burst 3 per node and kind; 5 node upgrades/min per IP",
		"%d links (%d more upgrades refused 429), each closed 1008 %q after %.0f frames on average; %d frames in %s gave %d router log lines; /health %s",
		links.Load(), refusedUpgrades.Load(), wire.CloseTooManyInvalid, perLink, sent.Load(), ms(took), len(lines), probe.summary("/health"))
}

// TestRegisterFloodIsQuiet: connections that send a bad registration as
// fast as they can (the upgrade bucket off, so that only the log bound
// is tested) give a bounded number of log lines.
func TestRegisterFloodIsQuiet(t *testing.T) {
	r := startRouter(t, "--rate-limit-ws-rpm", "0")
	mark := r.log.mark()
	frame := registerFrame("bad", []map[string]any{{"name": "x:1", "size": -1}}, nil)
	ip := freshIP()
	var sent atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				n, err := dialNode(t, r, ip, true)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				_ = n.sendRaw(frame)
				if code, reason, err := n.closeStatus(10 * time.Second); err != nil || reason != wire.CloseInvalidModel {
					t.Errorf("bad register: %d %q %v", code, reason, err)
					return
				}
				sent.Add(1)
				_ = n.conn.CloseNow()
			}
		}()
	}
	wg.Wait()
	lines := r.log.since(mark)
	if len(lines) > 10 {
		t.Errorf("%d log lines for %d refused registrations from one address; want a few", len(lines), sent.Load())
	}
	code, err := r.get(clientFrom(freshIP()), "/health", nil)
	if err != nil || code != http.StatusOK {
		t.Errorf("/health after the flood: %d %v", code, err)
	}
	observe(t, "one address opens links and sends a bad register, as fast as it can, for 3 s (upgrade bucket off)", "lograte per address and kind",
		"%d registrations refused 1008 %q, %d router log lines", sent.Load(), wire.CloseInvalidModel, len(lines))
}
