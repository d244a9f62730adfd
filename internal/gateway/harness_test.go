package gateway

// The test harness: a real IdleClaw network (router: hub + dispatch +
// server on a loopback port; one node: the agent relaying to a fake
// Ollama), a fake provider, and a gateway between them on its own
// loopback port, with an injected clock and rate-limit wait. Waits poll
// with a deadline; nothing sleeps to synchronise.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/providertest"
	"github.com/idleclaw/idleclaw/internal/server"
	"github.com/idleclaw/idleclaw/internal/testutil"
)

// networkTokens is every answer of the network's fake Ollama.
var networkTokens = []string{"Once", " upon", " a", " time", "."}

const networkText = "Once upon a time."

// network is a router with one node over a fake Ollama.
type network struct {
	url    string
	ollama *ollamatest.Server

	mu      sync.Mutex
	headers []http.Header // of every chat request the router got
}

func (n *network) chatHeaders() []http.Header {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]http.Header(nil), n.headers...)
}

// chats is the number of chat requests the network's Ollama got.
func (n *network) chats() int { return len(n.ollama.Requests()) }

// startNetwork starts a router and one node over a fake Ollama serving
// stories:latest and qwen3:0.6b, waits until the router lists both, and
// stops them at the end of the test.
func startNetwork(t *testing.T) *network {
	t.Helper()
	fake := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{
			{Name: "stories:latest", Size: 1_185_376},
			{Name: "qwen3:0.6b", Size: 522_000_000, Capabilities: []string{"completion", "tools"}},
		},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply { return ollamatest.Reply{Tokens: networkTokens} },
	})
	nw := &network{ollama: fake}
	h := hub.New(hub.Config{MaxNodesPerIP: -1})
	d := dispatch.New(dispatch.Config{MaxResponseChars: -1}, h)
	api := server.New(server.Config{MaxBodyBytes: 8 << 20}, h, d, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/chat/completions" {
			nw.mu.Lock()
			nw.headers = append(nw.headers, r.Header.Clone())
			nw.mu.Unlock()
		}
		api.ServeHTTP(w, r)
	}))
	nw.url = srv.URL
	a, err := agent.New(agent.Config{Server: srv.URL, Ollama: &ollama.Client{BaseURL: fake.URL}, NodeID: "gateway-test-node",
		Owner: agent.Owner{Poll: -1}, HTTPClient: &http.Client{}})
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
		h.Close()
		srv.Close()
		fake.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(nw.url + "/api/models")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(b, []byte("stories:latest")) && bytes.Contains(b, []byte("qwen3:0.6b")) {
				return nw
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not register with the router")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// clock is an injected clock; its Sleep records the wait and moves time
// on at once.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// syncBuffer collects the request lines.
type syncBuffer = testutil.SyncBuffer

const testKey = "sk-test-0123456789abcdef"

// rig is one gateway in front of a fake provider and the shared network.
type rig struct {
	gw       *Gateway
	url      string
	provider *providertest.Server
	net      *network
	clock    *clock
	out      *syncBuffer
}

func newRig(t *testing.T, nw *network, respond func(providertest.Request) providertest.Reply, opts ...func(*Config)) *rig {
	t.Helper()
	p := providertest.NewServer(providertest.Config{Key: testKey, Respond: respond})
	t.Cleanup(p.Close)
	ck := newClock()
	out := &syncBuffer{}
	cfg := Config{
		ProviderURL: p.URL, ProviderKey: testKey, NetworkURL: nw.url,
		Models:        map[string]string{"gpt-4o-mini": "stories"},
		HeaderTimeout: 2 * time.Second, StallTimeout: time.Second,
		Now: ck.Now, Sleep: ck.Sleep, Out: out,
	}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &rig{gw: gw, url: srv.URL, provider: p, net: nw, clock: ck, out: out}
}

// result is what a client got.
type result struct {
	status int
	header http.Header
	body   string
	text   string   // the answer's content (streamed: the deltas joined)
	events []string // streamed: the data of every event
}

func (r *rig) chat(t *testing.T, model string, stream bool) result {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": model, "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": "tell me a story"}}})
	return r.post(t, body)
}

func (r *rig) post(t *testing.T, body []byte) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer the-clients-own-placeholder")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/chat/completions: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				res.events = append(res.events, d)
				var c struct {
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
					} `json:"choices"`
				}
				if json.Unmarshal([]byte(d), &c) == nil && len(c.Choices) > 0 {
					res.text += c.Choices[0].Delta.Content
				}
			}
		}
		return res
	}
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(b, &c) == nil && len(c.Choices) > 0 {
		res.text = c.Choices[0].Message.Content
	}
	return res
}

// lastLine is the gateway's last request line.
func (r *rig) lastLine(t *testing.T) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.out.String()), "\n")
	return lines[len(lines)-1]
}

// sequence answers with the replies in turn, then the last one forever.
func sequence(replies ...providertest.Reply) func(providertest.Request) providertest.Reply {
	var mu sync.Mutex
	i := 0
	return func(providertest.Request) providertest.Reply {
		mu.Lock()
		defer mu.Unlock()
		r := replies[min(i, len(replies)-1)]
		i++
		return r
	}
}

// providerSays is the fake provider's healthy answer.
var providerTokens = []string{"Provider", " says", " hello", "."}

const providerText = "Provider says hello."

func providerOK(providertest.Request) providertest.Reply {
	return providertest.Reply{Tokens: providerTokens}
}
