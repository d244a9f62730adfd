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

// streamChat posts an Ollama-dialect streamed chat and returns the lines
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
