package cluster_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	natsgo "github.com/nats-io/nats.go"

	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestNoRespondersAskAgain: a router whose summary is fresh but whose
// subject nothing listens on (it is moving to another NATS server, and
// its subscriptions have not reached this one yet) is asked again after
// a pause. One that starts listening during the first pause answers the
// request; one that never does is asked after each pause, and then the
// consumer gets the 503 of a network with no node for the model.
func TestNoRespondersAskAgain(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	nc, js := natsJS(t, nats.URL)
	for i, r := range []struct{ id, model string }{{"late", "m:latest"}, {"gone", "g:latest"}} {
		m := hub.ModelInfo{Model: wire.Model{Name: r.model}, Nodes: 1, Origins: 1, FreeSlots: 1}
		announce(t, js, a, cluster.Summary{Router: r.id, Nodes: 1, All: []hub.ModelInfo{m}, Now: []hub.ModelInfo{m}}, i+1)
	}

	var mu sync.Mutex
	var pauses []time.Duration
	listen := false // the next pause makes "late" listen
	cluster.SetPause(a.c, func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		pauses = append(pauses, d)
		if !listen {
			return nil
		}
		listen = false
		sub, err := nc.Subscribe("idleclaw.dispatch.late", func(m *natsgo.Msg) {
			var r struct {
				Events string `json:"events"`
			}
			_ = json.Unmarshal(m.Data, &r)
			_ = m.Respond([]byte(`{"ok":true}`))
			_ = nc.Publish(r.Events, []byte(`{"s":1,"e":{"k":1,"t":"late"}}`))
			_ = nc.Publish(r.Events, []byte(`{"s":2,"e":{"k":7,"fr":"stop","u":{}}}`))
		})
		if err != nil {
			t.Error(err)
			return nil
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		// The server has the interest once the subscription is flushed.
		if err := nc.Flush(); err != nil {
			t.Error(err)
		}
		return nil
	})
	took := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		p := pauses
		pauses = nil
		return p
	}

	mu.Lock()
	listen = true
	mu.Unlock()
	if _, _, text := chatTimes(t, a.url, "m"); text != "late" {
		t.Fatalf("the router heard after a pause did not answer: %q", text)
	}
	if p := took(); !slices.Equal(p, cluster.NoResponderWaits[:1]) {
		t.Fatalf("pauses before the answer: %v, want %v", p, cluster.NoResponderWaits[:1])
	}

	resp, err := http.Post(a.url+"/api/chat", "application/json",
		strings.NewReader(`{"model":"g","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a router never heard: status %d, want 503: %s", resp.StatusCode, body)
	}
	if p := took(); !slices.Equal(p, cluster.NoResponderWaits) {
		t.Fatalf("pauses for a router never heard: %v, want %v", p, cluster.NoResponderWaits)
	}
}

// TestSummaryOfRealHubCrosses: what a router's hub lists is what the
// others take from its summary. A node may register an untagged name of
// the full 64 bytes (as a v1 node may; our agent sends Ollama's tagged
// names), which the hub lists with ":latest", 71 bytes. The other router
// must keep the summary and the model, with the capabilities the router
// knows and the node's digest.
func TestSummaryOfRealHubCrosses(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	b := newRouter(t, nats.URL, "b")
	long := strings.Repeat("l", wire.MaxModelName)
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(b.url, "http")+"/ws/node", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	reg, _ := json.Marshal(wire.Register{Type: wire.TypeRegister, NodeID: "long-name-node", MaxConcurrent: 1,
		Models: []wire.Model{{Name: long, Size: 1, Digest: "sha256:" + strings.Repeat("A", 64), Capabilities: []string{"completion", "tools"}}}})
	if err := conn.Write(t.Context(), websocket.MessageText, reg); err != nil {
		t.Fatal(err)
	}
	if _, data, err := conn.Read(t.Context()); err != nil || !strings.Contains(string(data), `"registered"`) {
		t.Fatalf("registration: %s, %v", data, err)
	}
	go func() { // keep reading (pings), until the connection closes
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	eventually(t, "router a never took b's summary", func() bool { return a.c.NodeCount() == 1 })
	var found *hub.ModelInfo
	for _, m := range a.c.Models(true) {
		if m.Name == long+":latest" {
			found = &m
		}
	}
	if found == nil || !slices.Contains(found.Capabilities, "tools") || len(found.Digests) != 1 {
		t.Fatalf("router a's view of b's model: %+v", found)
	}
}
