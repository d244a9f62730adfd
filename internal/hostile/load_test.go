package hostile

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// loadSeconds is the length of the load scenario: IDLECLAW_HOSTILE_SECONDS,
// default 20.
func loadSeconds() time.Duration {
	if v := os.Getenv("IDLECLAW_HOSTILE_SECONDS"); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
			return time.Duration(n * float64(time.Second))
		}
	}
	return 20 * time.Second
}

// counters counts outcomes by name, for the report.
type counters struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counters) add(k string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
	c.mu.Unlock()
}

func (c *counters) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, _ := json.Marshal(c.m)
	return string(b)
}

// TestLoad is the load scenario: three hostile nodes of one
// address (the per-IP maximum) that register the honest model and a bait
// model, claim them loaded, answer garbage with absurd metrics, flood
// 200 KB chunks, trickle invalid frames and keep trying to register more
// and to take the honest node's id; hostile consumers that never read,
// hold bodies back, send huge and deep bodies, hammer the read endpoints
// and hold hundreds of idle connections; beside them the real agent as the
// honest node (trusted) and an honest consumer that asks for trusted
// nodes. For IDLECLAW_HOSTILE_SECONDS (20 s): every honest request gets
// the honest answer, /health answers within 100 ms at p99, the router's
// VmHWM stays under 256 MiB, and the honest node is never dropped.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("the load scenario runs for IDLECLAW_HOSTILE_SECONDS (20 s)")
	}
	length := loadSeconds()
	keyPath, honestID := keyFile(t)
	r := startRouter(t, "--trusted-node", honestID, "--canary-share", "0.01")
	honest := startContributor(t, r, ollamatest.Config{
		Models: []ollamatest.Model{{Name: "honest:1", Size: 2e9}},
		Respond: func(req ollamatest.ChatRequest) ollamatest.Reply {
			rep := ollamatest.DefaultRespond(req)
			rep.Delay = 2 * time.Millisecond
			return rep
		},
	}, keyPath, honestID, "--max-concurrent", "4")
	base := r.rss()
	mark := r.log.mark()

	ctx, cancel := context.WithTimeout(context.Background(), length)
	defer cancel()
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	attacks := &counters{}

	// Three hostile nodes, the per-IP maximum.
	hostileIP := freshIP()
	for i := range 3 {
		f := startFlooder(t, r, hostileIP, fmt.Sprintf("hostile-%d", i), 10, 64<<20)
		// Its honest:1 requests get garbage at once with absurd metrics;
		// bait:1 requests get 200 KB chunks until they are canceled.
		flood := *f.onRequest.Load()
		f.serve(func(req request) {
			if req.Params.Model != "honest:1" {
				flood(req)
				return
			}
			_ = f.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: "garbage", Thinking: strings.Repeat("t", 5000)}})
			_ = f.sendRaw([]byte(`{"type":"inference_chunk","request_id":` + jsonQuote(req.ID) +
				`,"chunk":{"done":true,"done_reason":"stop","eval_count":-1,"eval_duration":1e30,"prompt_eval_count":16777216}}`))
		})
		_ = f.send(map[string]any{"type": "models_update", "models": []wire.Model{
			model("honest:1", wire.MaxModelBytes, "completion", "thinking", "tools"), model("flood:1", 1e9)}})
		run(func() {
			tick := time.NewTicker(125 * time.Millisecond)
			defer tick.Stop()
			var bad [][]byte // every bad frame but models_update, which within its budget would be a real update
			for _, b := range badFrames() {
				if !strings.Contains(string(b), `"models_update"`) {
					bad = append(bad, b)
				}
			}
			for k := 0; ctx.Err() == nil; k++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				var err error
				if k%8 == 0 {
					err = f.heartbeat("honest:1", "flood:1") // within the 1/s budget
				} else {
					err = f.sendRaw(bad[k%len(bad)]) // 7/s: under the invalid budget
				}
				if err != nil {
					attacks.add("hostile node link lost")
					return
				}
				attacks.add("invalid frames trickled")
			}
		})
	}
	// The same address keeps trying to add nodes, to squat the honest
	// node's id and to register floods.
	run(func() {
		frames := [][]byte{
			registerFrame(honestID, []map[string]any{{"name": "honest:1", "size": 1}}, nil),
			registerFrame("hostile-4", []map[string]any{{"name": "honest:1", "size": 1}}, nil),
			registerAttacks()[0].frame,
		}
		for k := 0; ctx.Err() == nil; k++ {
			n, err := dialNode(t, r, hostileIP, true)
			if err != nil {
				attacks.add("extra node upgrade refused")
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond): // pacing the attacker
				}
				continue
			}
			_ = n.sendRaw(frames[k%len(frames)])
			_, reason, _ := n.closeStatus(15 * time.Second)
			attacks.add("extra node closed: " + reason)
			_ = n.conn.CloseNow()
		}
	})

	// Hostile consumers.
	for range 2 { // never-reading streams of bait:1, three per address
		run(func() {
			for ctx.Err() == nil {
				c := stalledClient(freshIP())
				var held []*http.Response
				for i := range 3 {
					resp, err := r.post(ctx, c, "/api/chat", chatBody("v1", "flood:1", fmt.Sprintf("stall %d", i), nil), nil)
					if err != nil {
						continue
					}
					attacks.add(fmt.Sprintf("stalled stream %d", resp.StatusCode))

					held = append(held, resp)
				}
				select {
				case <-ctx.Done():
				case <-time.After(3 * time.Second): // how long the attacker holds them
				}
				for _, resp := range held {
					_ = resp.Body.Close()
				}
			}
		})
	}
	for range 3 { // slowloris bodies
		run(func() {
			for ctx.Err() == nil {
				s, _, err := slowPost(r, freshIP(), "/api/chat", 100_000, 500*time.Millisecond, "")
				if err == nil && s != "" {
					attacks.add("slowloris: " + s)
				}
			}
		})
	}
	run(func() { // huge and deep bodies, untrusted chats, 20 per address a minute
		deep := `{"model":"honest:1","messages":` + strings.Repeat("[", 400_000) + strings.Repeat("]", 400_000) + `}`
		huge := chatBody("v1", "honest:1", strings.Repeat("a", 2<<20), nil)
		var c *http.Client
		for k := 0; ctx.Err() == nil; k++ {
			if k%15 == 0 {
				c = clientFrom(freshIP())
			}
			var a answer
			var err error
			switch k % 3 {
			case 0:
				a, err = r.chat(ctx, c, "v1", huge, nil)
			case 1:
				a, err = r.chat(ctx, c, "openai", deep, nil)
			default: // no trust asked: a hostile node may answer
				a, err = r.chat(ctx, c, "v1", chatBody("v1", "honest:1", "untrusted question", nil), nil)
			}
			if err == nil {
				attacks.add(fmt.Sprintf("bad body %d: %d", k%3, a.Status))
			}
		}
	})
	run(func() { // the read endpoints, as fast as one address may
		c := clientFrom(freshIP())
		paths := []string{"/api/models", "/api/network", "/metrics/prometheus", "/v1/models", "/metrics"}
		for k := 0; ctx.Err() == nil; k++ {
			code, err := r.get(c, paths[k%len(paths)], nil)
			if err == nil {
				attacks.add(fmt.Sprintf("reads %d", code))
			}
		}
	})
	type idle struct {
		conn   net.Conn
		opened time.Time
		closed atomic.Int64 // unix nanoseconds when the router closed it
	}
	var idles []*idle
	var idleMu sync.Mutex
	run(func() { // hundreds of idle connections; half send part of their headers
		for i := range 300 {
			conn, err := dialerFrom(fmt.Sprintf("127.9.%d.%d", i/50, i%50+1)).Dial("tcp", r.host)
			if err != nil {
				attacks.add("idle connection refused")
				continue
			}
			if i%2 == 1 {
				_, _ = fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: %s\r\nX-Slow: ", r.host)
			}
			c := &idle{conn: conn, opened: time.Now()}
			idleMu.Lock()
			idles = append(idles, c)
			idleMu.Unlock()
			go func() {
				_, _ = bufio.NewReader(conn).ReadString('\n')
				c.closed.Store(time.Now().UnixNano())
			}()
		}
	})

	// The honest side.
	probe := r.probe(50*time.Millisecond, "/health")
	var honestOK, honestBad atomic.Int64
	var firstBad atomic.Value
	run(func() {
		dialects := []string{"v1", "openai", "ollama"}
		var c *http.Client
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if k%15 == 0 {
				c = clientFrom(freshIP())
			}
			d := dialects[k%3]
			q := fmt.Sprintf("honest question %d", k)
			extra := map[string]any{}
			if d == "ollama" {
				extra["stream"] = false
			}
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			a, err := r.chat(rctx, c, d, chatBody(d, "honest:1", q, extra), map[string]string{"X-IdleClaw-Trust": "trusted"})
			rcancel()
			if err == nil && a.Status == http.StatusOK && a.Content == "Echo: "+q && a.Done && len(a.Errors) == 0 {
				honestOK.Add(1)
				continue
			}
			honestBad.Add(1)
			firstBad.CompareAndSwap(nil, fmt.Sprintf("%s %q: %d %q errors %q %v %.200s", d, q, a.Status, a.Content, a.Errors, err, a.Body))
		}
	})
	var adminSamples, adminMissing atomic.Int64
	var peakRSS atomic.Int64
	run(func() {
		admin := clientFrom(freshIP())
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if v := r.rss(); v > peakRSS.Load() {
				peakRSS.Store(v)
			}
			if k%10 == 0 {
				if k%400 == 390 {
					admin = clientFrom(freshIP()) // the default bucket: 60/min
				}
				nodes, err := r.adminNodes(admin)
				adminSamples.Add(1)
				if _, ok := findNode(nodes, honestID); err != nil || !ok {
					adminMissing.Add(1)
				}
			}
		}
	})
	wg.Wait()
	probe.stop()
	hwm := r.hwm()
	lines := r.log.since(mark)

	// Every honest request got the honest answer.
	if honestBad.Load() > 0 || honestOK.Load() < int64(length/(time.Second))*2 {
		t.Errorf("honest requests: %d answered right, %d not (first: %v)", honestOK.Load(), honestBad.Load(), firstBad.Load())
	}
	// /health within 100 ms at p99, every answer 200.
	p99, mx, nprobe := probe.lat["/health"].pct(99)
	if probe.bad.Load() > 0 {
		t.Errorf("%d /health probes failed (last %v)", probe.bad.Load(), probe.lastBad.Load())
	}
	if p99 > 100*time.Millisecond {
		t.Errorf("/health p99 %s over %d probes (max %s); want under 100 ms", ms(p99), nprobe, ms(mx))
	}
	// The router's memory.
	if hwm > 256<<20 {
		t.Errorf("router VmHWM %s; want under 256 MiB", mib(hwm))
	}
	// The honest node was never dropped.
	nodes, err := r.adminNodes(clientFrom(freshIP()))
	hn, ok := findNode(nodes, honestID)
	if err != nil || !ok || adminMissing.Load() > 0 || float64(hn.ConnectedSeconds) < length.Seconds()-1 {
		t.Errorf("the honest node: missing from %d of %d views, at the end %+v %v", adminMissing.Load(), adminSamples.Load(), hn, err)
	}
	reg, lost := honest.log.count("registered with the router"), honest.log.count("router link lost")
	if reg != 1 || lost != 0 {
		t.Errorf("the honest node's own log: %d registrations, %d links lost; want 1 and 0", reg, lost)
	}
	dropped := 0
	for _, l := range lines {
		if strings.Contains(l, "node disconnected") && strings.Contains(l, honestID) {
			dropped++
		}
	}
	if dropped > 0 {
		t.Errorf("the router logged the honest node's disconnection %d times", dropped)
	}
	// Idle connections are closed by the router (ReadHeaderTimeout 10 s).
	idleMu.Lock()
	var idleClosed, idleOld int
	var idleWorst time.Duration
	for _, c := range idles {
		if time.Since(c.opened) < 12*time.Second {
			continue
		}
		idleOld++
		if at := c.closed.Load(); at != 0 {
			idleClosed++
			idleWorst = max(idleWorst, time.Unix(0, at).Sub(c.opened))
		}
	}
	for _, c := range idles {
		_ = c.conn.Close()
	}
	idleMu.Unlock()
	if idleClosed != idleOld {
		t.Errorf("%d of %d idle connections older than 12 s were not closed by the router", idleOld-idleClosed, idleOld)
	}
	t.Logf("attacks: %s", attacks)
	observe(t, fmt.Sprintf("load: 3 hostile nodes + hostile consumers + 300 idle connections for %s, beside the real agent (trusted) and an honest consumer", length),
		"honest answers; /health p99 < 100 ms; VmHWM < 256 MiB; honest node kept",
		"%d/%d honest answers right; /health %s; VmRSS %s before, peak sampled %s, VmHWM %s; honest node in %d/%d admin views, connected %d s, its log 1 registration 0 lost; %d router log lines (%.1f/s); idle connections closed by the router after %s at most",
		honestOK.Load(), honestOK.Load()+honestBad.Load(), probe.summary("/health"), mib(base), mib(peakRSS.Load()), mib(hwm),
		adminSamples.Load()-adminMissing.Load(), adminSamples.Load(), hn.ConnectedSeconds, len(lines), float64(len(lines))/length.Seconds(), ms(idleWorst))
	observe(t, "load: what the attackers got", "", "%s", attacks)
}
