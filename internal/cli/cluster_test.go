package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	natstest.Cleanup()
	if idleclawDir != "" {
		_ = os.RemoveAll(idleclawDir)
	}
	os.Exit(code)
}

var (
	idleclawOnce sync.Once
	idleclawDir  string
	idleclawBin  string
	idleclawErr  error
)

// buildIdleclaw builds the idleclaw binary once, so that a router can run
// as a process of its own and be killed with SIGKILL.
func buildIdleclaw(t *testing.T) string {
	t.Helper()
	idleclawOnce.Do(func() {
		idleclawDir, idleclawErr = os.MkdirTemp("", "idleclaw-bin-")
		if idleclawErr != nil {
			return
		}
		idleclawBin = filepath.Join(idleclawDir, "idleclaw")
		out, err := exec.Command("go", "build", "-o", idleclawBin, "github.com/idleclaw/idleclaw/cmd/idleclaw").CombinedOutput()
		if err != nil {
			idleclawErr = fmt.Errorf("build idleclaw: %v: %s", err, out)
		}
	})
	if idleclawErr != nil {
		t.Fatal(idleclawErr)
	}
	return idleclawBin
}

// routerProc is `idleclaw serve --nats …` as a process.
type routerProc struct {
	id   string
	base string
	cmd  *exec.Cmd
	done chan struct{}
	logs *syncBuffer
}

// startRouterProc starts a router process in the network of natsURL.
func startRouterProc(t *testing.T, natsURL, id string, extra ...string) *routerProc {
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--nats", natsURL, "--router-id", id,
		"--records", "none", "--canary-share", "0", "--max-nodes-per-ip", "0", "--log-format", "json",
		"--rate-limit-chat-rpm", "0", "--rate-limit-default-rpm", "0", "--max-concurrent-chat-per-ip", "0",
		"--max-concurrent-per-ip", "0", "--shutdown-grace", "1s", "--drain-window", "100ms"}, extra...)
	cmd := exec.Command(buildIdleclaw(t), args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &routerProc{id: id, cmd: cmd, done: make(chan struct{}), logs: &syncBuffer{}}
	cmd.Stderr = r.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.kill)
	base := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case base <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case r.base = <-base:
	case <-r.done:
		t.Fatalf("router %s exited: %s", id, r.logs.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("router %s did not listen: %s", id, r.logs.String())
	}
	return r
}

// kill ends the router with SIGKILL: no goodbye to its nodes, its
// consumers or NATS.
func (r *routerProc) kill() {
	_ = r.cmd.Process.Kill()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
	}
}

type netView struct {
	NodeCount int `json:"node_count"`
	Models    []struct {
		Name      string `json:"name"`
		Nodes     int    `json:"nodes"`
		FreeSlots int    `json:"free_slots"`
	} `json:"models"`
	Routers []struct {
		ID        string `json:"id"`
		NodeCount int    `json:"node_count"`
	} `json:"routers"`
}

func getJSON(t *testing.T, url string, v any) bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode == http.StatusOK && json.Unmarshal(b, v) == nil
}

func (r *routerProc) network(t *testing.T) (netView, bool) {
	var v netView
	ok := getJSON(t, r.base+"/api/network", &v)
	return v, ok
}

func (v netView) routerIDs() []string {
	var ids []string
	for _, r := range v.Routers {
		ids = append(ids, r.ID)
	}
	return ids
}

func (v netView) has(model string) bool {
	for _, m := range v.Models {
		if m.Name == model && m.Nodes > 0 {
			return true
		}
	}
	return false
}

// fakeOllama is a fake Ollama serving one model, answering "<tokens...>".
func fakeOllama(t *testing.T, model string, reply ollamatest.Reply) *ollamatest.Server {
	t.Helper()
	o := ollamatest.NewServer(ollamatest.Config{
		Models:  []ollamatest.Model{{Name: model, Size: 1_000_000}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply { return reply },
	})
	t.Cleanup(o.Close)
	return o
}

// streamChat posts a streamed chat (v1 SSE) and returns the lines
// as they come, closed at the end of the body.
func streamChat(t *testing.T, ctx context.Context, base, model string) (<-chan string, error) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream":true}`, model)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, nil
}

// TestClusterEveryRouterServesEveryOther: three routers on one
// nats-server, one node on each with a model of its own. Every router
// sees all three nodes and models, and a consumer on every router is
// served by the node on every other.
func TestClusterEveryRouterServesEveryOther(t *testing.T) {
	nats := natstest.Start(t)
	var routers []*routerProc
	for i := range 3 {
		r := startRouterProc(t, nats.URL, fmt.Sprintf("r%d", i))
		routers = append(routers, r)
		o := fakeOllama(t, fmt.Sprintf("m%d:latest", i), ollamatest.Reply{Tokens: []string{"from", " node", fmt.Sprintf(" %d", i)}})
		start(t, "contribute", "--server", r.base, "--ollama", o.URL, "--identity", "none", "--log-format", "json")
	}
	for _, r := range routers {
		waitFor(t, "every router seeing three nodes", 15*time.Second, func() bool {
			v, ok := r.network(t)
			return ok && v.NodeCount == 3 && v.has("m0:latest") && v.has("m1:latest") && v.has("m2:latest") && len(v.Routers) == 3
		})
		var health struct {
			NodeCount int `json:"node_count"`
		}
		var models struct {
			Models []string `json:"models"`
		}
		if !getJSON(t, r.base+"/health", &health) || health.NodeCount != 3 {
			t.Errorf("%s /health node_count %d, want 3", r.id, health.NodeCount)
		}
		if !getJSON(t, r.base+"/api/models", &models) || len(models.Models) != 3 {
			t.Errorf("%s /api/models %v, want three", r.id, models.Models)
		}
	}
	for i, r := range routers {
		for j := range routers {
			if i == j {
				continue
			}
			code, out, stderr := run(t, "", "consume", "--server", r.base, "--model", fmt.Sprintf("m%d", j), "--prompt", "hi")
			if want := fmt.Sprintf("from node %d\n", j); code != 0 || out != want {
				t.Errorf("consume m%d at r%d: code %d, stdout %q, want %q; stderr %q", j, i, code, out, want, stderr)
			}
		}
	}
}

// TestClusterFailoverBeforeFirstToken: the router that took a request
// dies (SIGKILL) before its node sent a token; the consumer's router
// tries another router, and the consumer notices only the delay.
func TestClusterFailoverBeforeFirstToken(t *testing.T) {
	nats := natstest.Start(t)
	a := startRouterProc(t, nats.URL, "a")
	b := startRouterProc(t, nats.URL, "b")
	c := startRouterProc(t, nats.URL, "c")
	stuck := fakeOllama(t, "shared:latest", ollamatest.Reply{Tokens: []string{"never"}, Delay: time.Minute})
	good := fakeOllama(t, "shared:latest", ollamatest.Reply{Tokens: []string{"from", " c"}})
	start(t, "contribute", "--server", b.base, "--ollama", stuck.URL, "--identity", "none", "--log-format", "json")
	start(t, "contribute", "--server", c.base, "--ollama", good.URL, "--identity", "none", "--log-format", "json")
	waitFor(t, "router a seeing both nodes", 15*time.Second, func() bool {
		v, ok := a.network(t)
		return ok && v.NodeCount == 2
	})
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, stderr := run(t, "", "consume", "--server", a.base, "--model", "shared", "--prompt", "hi")
		done <- result{code, out, stderr}
	}()
	// Both routers have a free slot; b comes first (ties go by id).
	select {
	case <-stuck.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached b's node")
	}
	killed := time.Now()
	b.kill()
	select {
	case r := <-done:
		took := time.Since(killed)
		if r.code != 0 || r.out != "from c\n" {
			t.Fatalf("consume after b died: code %d, stdout %q, stderr %q", r.code, r.out, r.err)
		}
		t.Logf("answered through c %v after b was killed", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("failover took %v", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("consume did not end after b died")
	}
}

// TestClusterRouterKilledMidStream: the router serving a stream dies
// (SIGKILL) after the first token: the consumer's stream at another
// router ends with an error within a second; the node moves to the next
// router of its --server list; the dead router's entry expires.
func TestClusterRouterKilledMidStream(t *testing.T) {
	nats := natstest.Start(t)
	a := startRouterProc(t, nats.URL, "a")
	startRouterProc(t, nats.URL, "b")
	k := startRouterProc(t, nats.URL, "k")
	tokens := make([]string, 100)
	for i := range tokens {
		tokens[i] = " t"
	}
	slow := fakeOllama(t, "slow:latest", ollamatest.Reply{Tokens: tokens, Delay: 50 * time.Millisecond})
	start(t, "contribute", "--server", k.base+","+a.base, "--ollama", slow.URL, "--identity", "none", "--log-format", "json")
	waitFor(t, "router a seeing k's node", 15*time.Second, func() bool {
		v, ok := a.network(t)
		return ok && v.has("slow:latest") && len(v.Routers) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lines, err := streamChat(t, ctx, a.base, "slow")
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 3; {
		l, ok := <-lines
		switch {
		case !ok:
			t.Fatal("the stream ended before three tokens")
		case strings.Contains(l, `"content":" t"`):
			got++
		case strings.TrimSpace(l) != "": // blank lines are keep-alives
			t.Fatalf("unexpected line %q", l)
		}
	}
	killed := time.Now()
	k.kill()
	var after []string
	for l := range lines {
		if strings.TrimSpace(l) != "" {
			after = append(after, l)
		}
	}
	ended := time.Since(killed)
	rest := strings.Join(after, "\n")
	if !strings.Contains(rest, "stopped answering") || !strings.HasSuffix(rest, "data: [DONE]") {
		t.Fatalf("stream after k died:\n%s", rest)
	}
	t.Logf("stream ended with an error %v after k was killed", ended.Round(time.Millisecond))
	if ended > 1200*time.Millisecond {
		t.Errorf("stream ended %v after k was killed, want about 1s at most", ended)
	}

	// The node moves to a.
	waitFor(t, "k's node linking to a", 20*time.Second, func() bool {
		v, ok := a.network(t)
		return ok && len(v.Routers) > 0 && v.Routers[0].ID == "a" && v.Routers[0].NodeCount == 1
	})
	t.Logf("node back on router a %v after k was killed", time.Since(killed).Round(100*time.Millisecond))

	// No stale entry: k leaves every view by expiry.
	waitFor(t, "k's entry expiring", 10*time.Second, func() bool {
		v, ok := a.network(t)
		return ok && !strings.Contains(strings.Join(v.routerIDs(), ","), "k")
	})
	t.Logf("k's entry gone %v after k was killed", time.Since(killed).Round(100*time.Millisecond))
	code, out, stderr := run(t, "", "consume", "--server", a.base, "--model", "slow", "--prompt", "hi")
	if code != 0 || !strings.HasPrefix(out, " t t t") {
		t.Fatalf("consume at a after the node moved: code %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestClusterNATSRestart: with NATS gone, each router keeps serving its
// own nodes; when NATS is back (without its state), they find each
// other again.
func TestClusterNATSRestart(t *testing.T) {
	nats := natstest.Start(t)
	a := startRouterProc(t, nats.URL, "a")
	b := startRouterProc(t, nats.URL, "b")
	oa := fakeOllama(t, "ma:latest", ollamatest.Reply{Tokens: []string{"from", " a"}})
	ob := fakeOllama(t, "mb:latest", ollamatest.Reply{Tokens: []string{"from", " b"}})
	start(t, "contribute", "--server", a.base, "--ollama", oa.URL, "--identity", "none", "--log-format", "json")
	start(t, "contribute", "--server", b.base, "--ollama", ob.URL, "--identity", "none", "--log-format", "json")
	waitFor(t, "both nodes in both views", 15*time.Second, func() bool {
		va, ok1 := a.network(t)
		vb, ok2 := b.network(t)
		return ok1 && ok2 && va.has("ma:latest") && va.has("mb:latest") && vb.has("ma:latest") && vb.has("mb:latest")
	})
	// status at either router shows the network: both nodes, both routers.
	for _, r := range []struct{ at, first, other string }{{a.base, "a", "b"}, {b.base, "b", "a"}} {
		code, out, _ := run(t, "", "status", "--server", r.at)
		want := "routers (2): " + r.first + " (1 node), " + r.other + " (1 node)"
		if code != 0 || !strings.Contains(out, "nodes online: 2") || !strings.Contains(out, want) {
			t.Fatalf("status at %s: code %d, want %q in:\n%s", r.first, code, want, out)
		}
	}
	nats.Kill()
	code, out, stderr := run(t, "", "consume", "--server", a.base, "--model", "ma", "--prompt", "hi")
	if code != 0 || out != "from a\n" {
		t.Fatalf("local consume with NATS down: code %d, stdout %q, stderr %q", code, out, stderr)
	}
	waitFor(t, "b's entry expiring at a while NATS is down", 10*time.Second, func() bool {
		v, ok := a.network(t)
		return ok && !v.has("mb:latest") && v.NodeCount == 1
	})
	code, out, _ = run(t, "", "consume", "--server", b.base, "--model", "mb", "--prompt", "hi")
	if code != 0 || out != "from b\n" {
		t.Fatalf("local consume at b with NATS down: code %d, stdout %q", code, out)
	}
	back := time.Now()
	nats.Restart()
	waitFor(t, "a and b seeing each other again", 15*time.Second, func() bool {
		va, ok1 := a.network(t)
		vb, ok2 := b.network(t)
		return ok1 && ok2 && va.has("mb:latest") && vb.has("ma:latest")
	})
	t.Logf("views resynced %v after NATS came back", time.Since(back).Round(100*time.Millisecond))
	code, out, stderr = run(t, "", "consume", "--server", a.base, "--model", "mb", "--prompt", "hi")
	if code != 0 || out != "from b\n" {
		t.Fatalf("cross-router consume after NATS came back: code %d, stdout %q, stderr %q", code, out, stderr)
	}
}
