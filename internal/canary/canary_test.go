package canary

import (
	"context"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// network is a hub with a WebSocket endpoint and a dispatcher.
type network struct {
	hub *hub.Hub
	d   *dispatch.Dispatcher
	url string
}

func newNetwork(t *testing.T, cfg hub.Config) *network {
	t.Helper()
	cfg.MaxNodesPerIP = -1
	h := hub.New(cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		h.ServeNode(r.Context(), c, "198.51.100."+r.Header.Get("X-Test-Octet"), r.Host)
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &network{hub: h, d: dispatch.New(dispatch.Config{MaxResponseChars: -1}, h), url: srv.URL}
}

// story is a deterministic answer for a prompt: the same model gives the
// same story; variant makes a differently configured model part after
// the tenth word; a liar tells another story altogether.
func story(prompt string, variant, liar bool) []string {
	h := fnv.New32a()
	h.Write([]byte(prompt))
	names := []string{"Lily", "Tim", "Sue", "Ben", "Max"}
	name := names[h.Sum32()%uint32(len(names))]
	s := "Once upon a time there was a little child named " + name + " who liked to play in the park every day."
	if variant {
		s = strings.Replace(s, "who liked to play", "who loved running", 1)
	}
	if liar {
		s = "Buy the best watches online today, free shipping for everyone who asks."
	}
	var out []string
	for i, w := range strings.Fields(s) {
		if i > 0 {
			w = " " + w
		}
		out = append(out, w)
	}
	return out
}

// startNode runs a keyed agent over a fake Ollama that answers with story.
func (nw *network) startNode(t *testing.T, octet string, variant, liar bool) string {
	t.Helper()
	fake := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest", Size: 1185376, Digest: strings.Repeat("d", 64)}},
		Respond: func(r ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: story(r.Messages[len(r.Messages)-1].Content, variant, liar)}
		},
	})
	t.Cleanup(fake.Close)
	k, _ := identity.New()
	a, err := agent.New(agent.Config{
		Server: nw.url, Ollama: &ollama.Client{BaseURL: fake.URL}, Identity: k,
		HTTPClient: &http.Client{Transport: &headerTransport{octet: octet}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return k.NodeID()
}

// headerTransport sets X-Test-Octet, which the test endpoint turns into
// the node's address.
type headerTransport struct{ octet string }

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-Octet", h.octet)
	return http.DefaultTransport.RoundTrip(r)
}

func tierOf(nw *network, id string) string {
	for _, n := range nw.hub.Nodes() {
		if n.NodeID == id {
			return n.Tiers["stories:latest"]
		}
	}
	return ""
}

// TestCanariesFindTheLiar: two honest nodes (one configured differently,
// so that their answers part after a while) and a liar under the same
// model and digest. Round after round, the honest ones become verified
// and the liar quarantined; its consumers' requests then go elsewhere.
func TestCanariesFindTheLiar(t *testing.T) {
	nw := newNetwork(t, hub.Config{})
	a := nw.startNode(t, "1", false, false)
	b := nw.startNode(t, "2", true, false)
	liar := nw.startNode(t, "3", false, true)
	deadline := time.Now().Add(10 * time.Second)
	for len(nw.hub.Nodes()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("nodes did not register")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	r := New(Config{Share: 1}, nw.hub, nw.d) // no budget limit: the test drives rounds
	quarantinedAt := 0
	for round := 1; round <= 12; round++ {
		r.Round(context.Background())
		if quarantinedAt == 0 && tierOf(nw, liar) == hub.TierQuarantined {
			quarantinedAt = round
		}
		for _, id := range []string{a, b} {
			if tierOf(nw, id) == hub.TierQuarantined {
				t.Fatalf("round %d: honest node %s quarantined", round, id)
			}
		}
	}
	if quarantinedAt == 0 || quarantinedAt > 4 {
		t.Errorf("the liar was quarantined at round %d, want within 4", quarantinedAt)
	}
	if tierOf(nw, a) != hub.TierVerified || tierOf(nw, b) != hub.TierVerified {
		t.Errorf("honest tiers %s %s, want verified", tierOf(nw, a), tierOf(nw, b))
	}
	st := r.Stats()
	t.Logf("canaries: %s", st)
	// The liar gets no consumer request for the model any more.
	for range 6 {
		var got []string
		_, err := nw.d.Chat(context.Background(), dispatch.Request{Model: "stories:latest",
			Messages: []ollama.Message{{Role: "user", Content: "Once upon a time"}}}, func(ev dispatch.Event) error {
			if ev.Kind == dispatch.Content {
				got = append(got, ev.Text)
			}
			return nil
		})
		if err != nil || strings.Contains(strings.Join(got, ""), "watches") {
			t.Fatalf("a consumer got %q (%v)", got, err)
		}
	}
}

// TestCanaryBudget: with the default share, canaries take no more of a
// node's capacity than 1% of its slots over the time it is connected.
func TestCanaryBudget(t *testing.T) {
	var offset atomic.Int64 // the hub's clock: start plus offset
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nw := newNetwork(t, hub.Config{Now: func() time.Time { return start.Add(time.Duration(offset.Load())) }, HeartbeatTimeout: time.Hour})
	nw.startNode(t, "1", false, false)
	nw.startNode(t, "2", false, false)
	for len(nw.hub.Nodes()) < 2 {
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	// Canaries measure their slot time on this clock: it moves 1 s at
	// every reading, so each canary "takes" 1 s or more, and the nodes
	// have been connected for an hour (7,200 slot-seconds at 2 slots:
	// 72 s of budget each).
	var step atomic.Int64
	r := New(Config{Now: func() time.Time {
		return start.Add(time.Duration(step.Add(1)) * time.Second)
	}}, nw.hub, nw.d)
	offset.Store(int64(time.Hour))
	for range 100 {
		r.Round(context.Background())
	}
	for _, n := range nw.hub.Nodes() {
		budget := time.Duration(0.01 * float64(n.MaxConcurrent) * float64(n.ConnectedFor))
		spent := r.Spent(n.NodeID)
		if spent == 0 || spent > budget+2*time.Second {
			t.Errorf("node %s: canaries took %s of a %s budget", n.NodeID, spent, budget)
		}
		t.Logf("node %s: canaries took %s of its %s budget (1%% of %d slots × %s)", n.NodeID, spent, budget, n.MaxConcurrent, n.ConnectedFor)
	}
}
