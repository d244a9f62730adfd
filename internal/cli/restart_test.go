package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// registrations reads the "node registered" lines of a router's JSON log:
// node id → when.
func registrations(t *testing.T, log string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			NodeID string    `json:"node_id"`
		}
		if !strings.Contains(sc.Text(), `"node registered"`) {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if line.Msg == "node registered" {
			if _, dup := out[line.NodeID]; !dup {
				out[line.NodeID] = line.Time
			}
		}
	}
	return out
}

// TestRouterRestartReregistration: 100 real node agents (default backoff,
// so the jitter is real) are connected to a router started through the CLI
// entry point. The router is stopped as on SIGTERM and a new one started
// on the same port: every node must come back on its own within 90 s, and
// the re-registrations must be spread over time, not all in one second.
// The measured spread is logged.
func TestRouterRestartReregistration(t *testing.T) {
	if testing.Short() {
		t.Skip("100 agents and a router restart")
	}
	const nodes = 100
	const drainWindow = 2 * time.Second // short for the test (the default is 5s)
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer fake.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a fixed port both routers listen on, one after the other
	args := []string{"serve", "--listen", addr, "--log-format", "json",
		"--max-nodes-per-ip", "0", "--rate-limit-ws-rpm", "0", "--rate-limit-default-rpm", "0",
		"--shutdown-grace", "1s", "--drain-window", drainWindow.String()}
	first := start(t, args...)
	waitFor(t, "first router listening", 10*time.Second, func() bool { return strings.Contains(first.out.String(), "listening on") })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, nodes)
	for i := range nodes {
		a, err := agent.New(agent.Config{
			Server:     "http://" + addr,
			Ollama:     &ollama.Client{BaseURL: fake.URL, HTTP: &http.Client{}},
			NodeID:     fmt.Sprintf("node-%03d", i),
			HTTPClient: &http.Client{},
			// Backoff: the default (1 s doubling to 60 s, equal jitter).
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- a.Run(ctx) }()
	}
	defer func() {
		cancel()
		for range nodes {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("an agent did not stop")
			}
		}
	}()
	waitFor(t, "100 nodes registered", 30*time.Second, func() bool {
		return len(registrations(t, first.errOut.String())) == nodes
	})

	// Stop the router as SIGTERM does (drain, nodes told 1001 spread over
	// the drain window), then start a new one on the same port at once.
	stopAt := time.Now()
	if code := first.stop(t); code != 0 {
		t.Fatalf("first router exit code %d", code)
	}
	stopped := time.Since(stopAt)
	second := start(t, args...)
	restartAt := time.Now()
	waitFor(t, "second router listening", 10*time.Second, func() bool { return strings.Contains(second.out.String(), "listening on") })
	var regs map[string]time.Time
	waitFor(t, "every node back", 90*time.Second, func() bool {
		regs = registrations(t, second.errOut.String())
		return len(regs) == nodes
	})
	back := time.Since(stopAt)

	var offs []time.Duration // since the stop began
	for _, at := range regs {
		offs = append(offs, at.Sub(stopAt))
	}
	slices.Sort(offs)
	lo, med, hi := offs[0], offs[len(offs)/2], offs[len(offs)-1]
	hist := map[int]int{}
	maxInOneSecond := 0 // the most registrations within any 1 s window
	for i, o := range offs {
		hist[int(o/time.Second)]++
		j, _ := slices.BinarySearch(offs, o+time.Second)
		maxInOneSecond = max(maxInOneSecond, j-i)
	}
	var b strings.Builder
	for s := int(lo / time.Second); s <= int(hi/time.Second); s++ {
		fmt.Fprintf(&b, "\n  %2d-%2ds %3d %s", s, s+1, hist[s], strings.Repeat("#", hist[s]))
	}
	t.Logf("router 1 stopped in %v (drain window %v); router 2 listening %v after the stop began; all %d nodes back %v after it",
		stopped.Round(time.Millisecond), drainWindow, restartAt.Sub(stopAt).Round(time.Millisecond), nodes, back.Round(time.Millisecond))
	t.Logf("re-registration times since the stop began: min %v, median %v, max %v (spread %v); at most %d in any 1 s window; per second:%s",
		lo.Round(time.Millisecond), med.Round(time.Millisecond), hi.Round(time.Millisecond), (hi - lo).Round(time.Millisecond), maxInOneSecond, b.String())

	if hi > 90*time.Second {
		t.Errorf("last node back after %v, want within 90s", hi)
	}
	// The nodes hear 1001 over the drain window and come back over the
	// agents' restart spread (10 s by default): far from all at once.
	if maxInOneSecond > nodes/2 || hi-lo < time.Second {
		t.Errorf("%d of %d nodes re-registered within one second (spread %v): not spread", maxInOneSecond, nodes, hi-lo)
	}
	for id, at := range regs {
		if at.Before(restartAt.Add(-time.Second)) {
			t.Errorf("%s registered at %v, before the second router started", id, at)
		}
	}
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		NodeCount int `json:"node_count"`
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil || health.NodeCount != nodes {
		t.Errorf("/health node_count %d (%v), want %d", health.NodeCount, err, nodes)
	}
}

// chatText posts a v1 chat and returns the answer text and error deltas of
// the whole SSE stream.
func chatText(base, model, prompt string) (status int, text, errs string, err error) {
	body, _ := json.Marshal(map[string]any{"model": model, "messages": []any{map[string]any{"role": "user", "content": prompt}}})
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(base+"/api/chat", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return resp.StatusCode, text, errs, err
		}
		for _, c := range ev.Choices {
			if strings.HasPrefix(c.Delta.Content, "\n\n[Error: ") {
				errs += c.Delta.Content
			} else {
				text += c.Delta.Content
			}
		}
	}
	return resp.StatusCode, text, errs, sc.Err()
}

// TestNodeDrainThroughRouter: a node agent told to stop (SIGTERM) while it
// serves a request reports itself unavailable, so the router sends new
// requests elsewhere although the draining node is warm and has room; the
// request in flight is answered in full, and the node then leaves normally.
func TestNodeDrainThroughRouter(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	models := []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}
	warm := ollamatest.NewServer(ollamatest.Config{Models: models, Loaded: []string{"stories:latest"},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			<-release // the answer starts when the test says so
			return ollamatest.Reply{Tokens: []string{"from", " the", " draining", " node"}}
		}})
	defer warm.Close()
	cold := ollamatest.NewServer(ollamatest.Config{Models: models,
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"from", " the", " other", " node"}}
		}})
	defer cold.Close()

	router := start(t, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--admin-token", "secret",
		"--max-nodes-per-ip", "0", "--rate-limit-default-rpm", "0")
	base := routerBase(t, router)
	runAgent := func(id string, ol *ollamatest.Server) (cancel func(), done chan error) {
		a, err := agent.New(agent.Config{Server: base, Ollama: &ollama.Client{BaseURL: ol.URL}, NodeID: id, MaxConcurrent: 2})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done = make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Error("agent did not stop")
			}
		})
		return cancel, done
	}
	type nodeView struct {
		NodeID         string `json:"node_id"`
		Available      bool   `json:"available"`
		ActiveRequests int    `json:"active_requests"`
	}
	nodes := func() map[string]nodeView {
		req, _ := http.NewRequest(http.MethodGet, base+"/admin/nodes", nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ Nodes []nodeView }
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		out := map[string]nodeView{}
		for _, n := range v.Nodes {
			out[n.NodeID] = n
		}
		return out
	}
	stopWarm, warmDone := runAgent("node-warm", warm)
	waitFor(t, "warm node registered", 10*time.Second, func() bool { return len(nodes()) == 1 })

	type result struct {
		status     int
		text, errs string
		err        error
	}
	first := make(chan result, 1)
	go func() {
		st, text, errs, err := chatText(base, "stories", "one")
		first <- result{st, text, errs, err}
	}()
	select {
	case <-warm.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("the first request did not reach the warm node's Ollama")
	}
	runAgent("node-cold", cold)
	waitFor(t, "cold node registered", 10*time.Second, func() bool { return len(nodes()) == 2 })

	stopWarm() // SIGTERM to the warm node, its request still in flight
	waitFor(t, "the draining node unavailable", 10*time.Second, func() bool {
		n := nodes()["node-warm"]
		return !n.Available && n.ActiveRequests == 1
	})
	// The warm node has room (1 of 2) and the model loaded, but drains:
	// the next request goes to the other node.
	if st, text, errs, err := chatText(base, "stories", "two"); err != nil || st != 200 || text != "from the other node" || errs != "" {
		t.Fatalf("request during the drain: %d %q %q %v", st, text, errs, err)
	}
	releaseOnce.Do(func() { close(release) })
	select {
	case r := <-first:
		if r.err != nil || r.status != 200 || r.text != "from the draining node" || r.errs != "" {
			t.Fatalf("request in flight at SIGTERM: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight did not finish")
	}
	select {
	case err := <-warmDone:
		if err != nil {
			t.Fatalf("draining agent: %v", err)
		}
		warmDone <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the draining agent did not exit")
	}
	waitFor(t, "the drained node gone", 10*time.Second, func() bool { _, ok := nodes()["node-warm"]; return !ok })
	if strings.Contains(router.errOut.String(), "failing over") {
		t.Errorf("a request was failed over during a clean drain:\n%s", router.errOut.String())
	}
}
