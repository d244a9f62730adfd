package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/server"
)

func TestMain(m *testing.M) {
	code := m.Run()
	natstest.Cleanup()
	os.Exit(code)
}

// adminToken is the routers' /admin bearer token in these tests.
const adminToken = "test-admin-token"

// router is an in-process router in the network of natsURL (none: alone).
type router struct {
	url string
	c   *cluster.Cluster
	h   *hub.Hub
}

func newRouter(tb testing.TB, natsURL, id string) *router {
	tb.Helper()
	return newRouterWith(tb, cluster.Config{URL: natsURL, RouterID: id})
}

// newRouterWith is newRouter with the whole cluster configuration.
func newRouterWith(tb testing.TB, cc cluster.Config) *router {
	tb.Helper()
	return routerOf(tb, hub.Config{}, cc)
}

// routerOf is a router with hub configuration hc (nodes per address
// unbounded) and cluster configuration cc (no URL: a router alone).
func routerOf(tb testing.TB, hc hub.Config, cc cluster.Config) *router {
	tb.Helper()
	hc.MaxNodesPerIP = -1
	h := hub.New(hc)
	d := dispatch.New(dispatch.Config{}, h)
	cfg := server.DefaultConfig()
	cfg.RateChatRPM, cfg.RateDefaultRPM, cfg.RateWSRPM, cfg.MaxConcurrentChatPerIP, cfg.MaxConcurrentPerIP = 0, 0, 0, 0, 0
	cfg.AdminToken = adminToken
	api := server.New(cfg, h, d, nil)
	srv := httptest.NewServer(api)
	if cc.URL == "" { // a router alone
		tb.Cleanup(func() {
			h.Close()
			srv.Close()
		})
		return &router{url: srv.URL, h: h}
	}
	c, err := cluster.New(cc, h, api)
	if err != nil {
		tb.Fatal(err)
	}
	api.SetPeers(c)
	tb.Cleanup(func() {
		c.Close()
		h.Close()
		srv.Close()
	})
	return &router{url: srv.URL, c: c, h: h}
}

// eventually polls ok until it holds, bounded by a deadline.
func eventually(tb testing.TB, what string, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatal(what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// natsJS connects a client of its own (a scripted router, an attacker)
// to the NATS server at url.
func natsJS(tb testing.TB, url string) (*natsgo.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// announce puts a scripted router's summary into the view until a
// counts others nodes of other routers.
func announce(tb testing.TB, js jetstream.JetStream, a *router, sum cluster.Summary, others int) {
	tb.Helper()
	b, err := json.Marshal(sum)
	if err != nil {
		tb.Fatal(err)
	}
	eventually(tb, "router a never saw the scripted router "+sum.Router, func() bool {
		if kv, err := js.KeyValue(context.Background(), "idleclaw_routers"); err == nil {
			_, _ = kv.Put(context.Background(), sum.Router, b)
		}
		return a.c.NodeCount() == others
	})
}

// node links a real agent, relaying to o, to r.
// serve starts a fake Ollama with the one model and a node agent for it
// on r.
func serve(tb testing.TB, r *router, model string, slots int) {
	tb.Helper()
	o := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: model}}})
	tb.Cleanup(o.Close)
	node(tb, r, o, slots)
}

func node(tb testing.TB, r *router, o *ollamatest.Server, slots int) {
	tb.Helper()
	a, err := agent.New(agent.Config{Server: r.url, Ollama: &ollama.Client{BaseURL: o.URL}, MaxConcurrent: slots})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
}

// timing is one streamed answer's time to first token and its gaps.
func chatTimes(tb testing.TB, base, model string) (ttft time.Duration, gaps []time.Duration, text string) {
	tb.Helper()
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	start := time.Now()
	resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	var last time.Time
	var b strings.Builder
	for sc.Scan() {
		l := sc.Text()
		i := strings.Index(l, `"content":"`)
		if i < 0 {
			continue
		}
		now := time.Now()
		if last.IsZero() {
			ttft = now.Sub(start)
		} else {
			gaps = append(gaps, now.Sub(last))
		}
		last = now
		rest := l[i+len(`"content":"`):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			b.WriteString(rest[:j])
		}
	}
	return ttft, gaps, b.String()
}

func p50(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkHop compares, side by side in one run, a consumer served by a
// node on the same router with one served by a node on another router
// through NATS (loopback, one nats-server). Each iteration streams one
// answer of 32 tokens sent 2ms apart on each path, in turn (which path
// goes first alternates), so that both see the same machine; the
// reported metrics are each path's p50 time to first token and p50
// inter-token gap, and what the cross-router path adds to them.
//
//	go test -run '^$' -bench BenchmarkHop -benchtime 300x ./internal/cluster/
func BenchmarkHop(b *testing.B) {
	nats := natstest.Start(b)
	a := newRouter(b, nats.URL, "a")
	r := newRouter(b, nats.URL, "b")
	tokens := make([]string, 32)
	for i := range tokens {
		tokens[i] = "t"
	}
	o := ollamatest.NewServer(ollamatest.Config{NoRecord: true, Models: []ollamatest.Model{{Name: "bench:latest"}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: tokens, Delay: 2 * time.Millisecond}
		}})
	b.Cleanup(o.Close)
	node(b, r, o, 4)
	eventually(b, "router a never saw b's node", func() bool { return a.c.NodeCount() == 1 && r.h.NodeCount() == 1 })
	type side struct{ ttfts, gaps []time.Duration }
	var same, cross side
	once := func(base string, into *side) {
		ttft, g, text := chatTimes(b, base, "bench")
		if text != strings.Join(tokens, "") {
			b.Fatalf("answer %q", text)
		}
		into.ttfts = append(into.ttfts, ttft)
		into.gaps = append(into.gaps, g...)
	}
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			once(r.url, &same)
			once(a.url, &cross)
		} else {
			once(a.url, &cross)
			once(r.url, &same)
		}
		i++
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
	b.ReportMetric(us(p50(same.ttfts)), "same-ttft-p50-µs")
	b.ReportMetric(us(p50(cross.ttfts)), "cross-ttft-p50-µs")
	b.ReportMetric(us(p50(cross.ttfts)-p50(same.ttfts)), "added-ttft-p50-µs")
	b.ReportMetric(us(p50(same.gaps)), "same-itl-p50-µs")
	b.ReportMetric(us(p50(cross.gaps)), "cross-itl-p50-µs")
	b.ReportMetric(us(p50(cross.gaps)-p50(same.gaps)), "added-itl-p50-µs")
}

// BenchmarkRouters is the relay throughput of three routers on one
// machine: every router with one node of a model of its own (16 slots,
// 200 tokens an answer with no delay) and 16 consumers at each router.
// "local": each consumer asks for its router's model; "cross": for the
// next router's, so every token crosses NATS; "one-router": the same
// three nodes and 48 consumers on a single router, for comparison. All
// of it (routers, nats-server aside, agents, fake Ollama, consumers)
// shares this machine's cores, so the figure is the machine's, not one
// router's.
//
//	go test -run '^$' -bench BenchmarkRouters -benchtime 600x ./internal/cluster/
func BenchmarkRouters(b *testing.B) {
	const perRouter, slots, answer = 16, 16, 200
	tokens := make([]string, answer)
	for i := range tokens {
		tokens[i] = "t"
	}
	want := strings.Join(tokens, "")
	fake := func(model string) *ollamatest.Server {
		o := ollamatest.NewServer(ollamatest.Config{NoRecord: true, Models: []ollamatest.Model{{Name: model + ":latest"}},
			Respond: func(ollamatest.ChatRequest) ollamatest.Reply { return ollamatest.Reply{Tokens: tokens} }})
		b.Cleanup(o.Close)
		return o
	}
	run := func(b *testing.B, bases, models []string) {
		var next atomic.Int64
		b.SetParallelism(3 * perRouter / max(1, runtime.GOMAXPROCS(0)))
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := int(next.Add(1)) % len(bases)
				if _, _, text := chatTimes(b, bases[k], models[k]); text != want {
					b.Errorf("answer of %d bytes", len(text))
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*answer)/time.Since(start).Seconds(), "tokens/s")
	}
	b.Run("one-router", func(b *testing.B) {
		r := newRouter(b, "", "")
		for _, m := range []string{"m0", "m1", "m2"} {
			node(b, r, fake(m), slots)
		}
		eventually(b, "the router never saw its three nodes", func() bool { return r.h.NodeCount() == 3 })
		run(b, []string{r.url, r.url, r.url}, []string{"m0", "m1", "m2"})
	})
	nats := natstest.Start(b)
	var rs []*router
	for i, m := range []string{"m0", "m1", "m2"} {
		r := newRouter(b, nats.URL, fmt.Sprint("r", i))
		node(b, r, fake(m), slots)
		rs = append(rs, r)
	}
	eventually(b, "the routers never saw each other's nodes", func() bool {
		for _, r := range rs {
			if r.h.NodeCount() != 1 || r.c.NodeCount() != 2 {
				return false
			}
		}
		return true
	})
	bases := []string{rs[0].url, rs[1].url, rs[2].url}
	b.Run("local", func(b *testing.B) { run(b, bases, []string{"m0", "m1", "m2"}) })
	b.Run("cross", func(b *testing.B) { run(b, bases, []string{"m1", "m2", "m0"}) })
}

// TestCrossRouterAnswer: a consumer at router a gets the answer of the
// only node, on router b, in-process (the CLI tests run routers as
// processes).
func TestCrossRouterAnswer(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	r := newRouter(t, nats.URL, "b")
	serve(t, r, "m:latest", 2)
	eventually(t, "router a never saw b's node", func() bool { return a.c.NodeCount() == 1 })
	_, _, text := chatTimes(t, a.url, "m")
	if text != "Echo: hi" {
		t.Fatalf("answer through a: %q", text)
	}
	if a.h.NodeCount() != 0 {
		t.Fatal("router a has a node of its own")
	}
}

// TestForwardedRequestValidatedAgain: the serving router validates what
// another router forwards as a consumer's request, whatever the sender.
func TestForwardedRequestValidatedAgain(t *testing.T) {
	nats := natstest.Start(t)
	r := newRouter(t, nats.URL, "b")
	serve(t, r, "m:latest", 2)
	eventually(t, "no node", func() bool { return r.h.NodeCount() == 1 })
	nc, err := natsgo.Connect(nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	long := strings.Repeat("x", 100_001)
	for name, body := range map[string]string{
		"not json":         `{`,
		"no events":        `{"id":"1","from":"a","req":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`,
		"bad events":       `{"id":"1","from":"a","events":"idleclaw.dispatch.b","req":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`,
		"bad role":         `{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"m","messages":[{"role":"root","content":"hi"}]}}`,
		"no messages":      `{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"m","messages":[]}}`,
		"message too long": `{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"m","messages":[{"role":"user","content":"` + long + `"}]}}`,
		"bad tier":         `{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"m","min_tier":"gold","messages":[{"role":"user","content":"hi"}]}}`,
		"bad model":        `{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"m m","messages":[{"role":"user","content":"hi"}]}}`,
	} {
		m, err := nc.Request("idleclaw.dispatch.b", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := string(m.Data); got != `{"ok":false,"reason":"refused"}` {
			t.Errorf("%s: reply %s", name, got)
		}
	}
	m, err := nc.Request("idleclaw.dispatch.b", []byte(`{"id":"1","from":"a","events":"_INBOX.x","req":{"model":"none","messages":[{"role":"user","content":"hi"}]}}`), 5*time.Second)
	if err != nil || string(m.Data) != `{"ok":false,"reason":"no_node"}` {
		t.Errorf("unknown model: %v %s", err, m.Data)
	}
}

// TestBansAreShared: a ban made at one router holds at every router of
// the network, one that joins later included, and lifting it lifts it
// everywhere.
func TestBansAreShared(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	b := newRouter(t, nats.URL, "b")
	banned := func(r *router, id string) bool { return slices.Contains(r.h.Bans(), id) }
	admin := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, a.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	const id = "node-bad_ü" // not a valid bucket key as it is
	admin(http.MethodPost, "/admin/bans", `{"node_id":"`+id+`"}`)
	eventually(t, "router b never applied a's ban", func() bool { return banned(b, id) })
	c := newRouter(t, nats.URL, "c")
	eventually(t, "router c, joining later, never got the ban", func() bool { return banned(c, id) })
	admin(http.MethodDelete, "/admin/bans/"+url.PathEscape(id), "")
	eventually(t, "the lifted ban stayed at b or c", func() bool { return !banned(b, id) && !banned(c, id) })
}

// TestOllamaReadsAcrossRouters: Ollama's /api/show and /api/ps at a
// router describe the network's models, those of other routers' nodes
// too (`ollama run` asks /api/show before it chats).
func TestOllamaReadsAcrossRouters(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	b := newRouter(t, nats.URL, "b")
	o := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "m:latest", Size: 1234}},
		Loaded: []string{"m:latest"}})
	t.Cleanup(o.Close)
	node(t, b, o, 2)
	eventually(t, "router a never saw b's node", func() bool { return a.c.NodeCount() == 1 })
	resp, err := http.Post(a.url+"/ollama/api/show", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"capabilities"`) {
		t.Fatalf("/api/show at a for b's model: %d %s", resp.StatusCode, body)
	}
	// The node reports loaded models with its heartbeats.
	eventually(t, "/api/ps at a never listed b's loaded model", func() bool {
		resp, err := http.Get(a.url + "/ollama/api/ps")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"name":"m:latest"`)
	})
}
