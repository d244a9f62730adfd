package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/testutil"
)

// syncBuffer is a buffer safe for one writer and many readers.
type syncBuffer = testutil.SyncBuffer

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func noEnv(string) string { return "" }

type proc struct {
	out, errOut *syncBuffer
	done        chan int
	cancel      context.CancelFunc
}

// start runs one subcommand through the real CLI entry point.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, noEnv, args...)
}

// startEnv is start with the environment env.
func startEnv(t *testing.T, env Env, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan int, 1), cancel: cancel}
	go func() {
		p.done <- Run(ctx, args, env, Streams{Stdin: strings.NewReader(""), Stdout: p.out, Stderr: p.errOut})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not stop", args[0])
		}
	})
	return p
}

// stop cancels the command (as Ctrl+C does) and returns its exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("command did not stop")
		return -1
	}
}

func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, noEnv, Streams{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

var listenRE = regexp.MustCompile(`listening on (http://[0-9.:]+)`)

// routerBase waits until a started router prints the address it listens
// on, and returns its base URL.
func routerBase(t *testing.T, p *proc) string {
	t.Helper()
	var base string
	waitFor(t, "router address", 10*time.Second, func() bool {
		m := listenRE.FindStringSubmatch(p.out.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})
	return base
}

// startNetwork starts a router (serve on a free port, with serveArgs) and
// one node relaying to ollamaURL (contribute, with contributeArgs), waits
// until the router lists stories:latest, and returns the router's base URL.
func startNetwork(t *testing.T, ollamaURL string, serveArgs, contributeArgs []string) string {
	t.Helper()
	// The registration is polled through status every 5 ms: with the read
	// limit on (60 a minute), the bucket would run dry and each poll then
	// get one of its three reads answered, never all.
	base := routerBase(t, start(t, append([]string{"serve", "--listen", "127.0.0.1:0", "--rate-limit-default-rpm", "0"}, serveArgs...)...))
	start(t, append([]string{"contribute", "--server", base, "--ollama", ollamaURL}, contributeArgs...)...)
	waitFor(t, "node registration", 30*time.Second, func() bool {
		code, out, _ := run(t, "", "status", "--server", base, "--json")
		return code == 0 && strings.Contains(out, "stories:latest")
	})
	return base
}

// TestEndToEnd runs router, node agent and consumer tools through the real
// CLI entry points over loopback sockets, against a fake Ollama.
func TestEndToEnd(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{
			{Name: "stories:latest", Size: 1_185_376, Capabilities: []string{"completion"}},
			{Name: "qwen3:0.6b", Size: 522_000_000, Capabilities: []string{"completion", "tools", "thinking"}},
		},
		Respond: func(req ollamatest.ChatRequest) ollamatest.Reply {
			r := ollamatest.Reply{Tokens: []string{"Once", " upon", " a", " time", "."}}
			if string(req.Think) == "true" {
				r.Thinking = []string{"Let me", " think."}
			}
			return r
		},
	})
	defer ollama.Close()

	router := start(t, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit-default-rpm", "0") // polled below
	base := routerBase(t, router)

	code, _, stderr := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "hi")
	if code != 1 || !strings.Contains(stderr, "stories") {
		t.Fatalf("consume with no node: code %d, stderr %q", code, stderr)
	}

	node := start(t, "contribute", "--server", base, "--ollama", ollama.URL, "--log-format", "json")
	var status struct {
		Reachable bool `json:"reachable"`
		NodeCount int  `json:"node_count"`
		Models    []struct {
			Name      string `json:"name"`
			Thinking  bool   `json:"thinking"`
			ToolCalls bool   `json:"tool_calls"`
		} `json:"models"`
	}
	waitFor(t, "node registration", 10*time.Second, func() bool {
		code, out, _ := run(t, "", "status", "--server", base, "--json")
		return code == 0 && json.Unmarshal([]byte(out), &status) == nil && status.NodeCount == 1 && len(status.Models) == 2
	})
	if !status.Reachable || status.Models[0].Name != "qwen3:0.6b" || !status.Models[0].Thinking || !status.Models[0].ToolCalls ||
		status.Models[1].Name != "stories:latest" || status.Models[1].Thinking {
		t.Fatalf("status: %+v", status)
	}
	if !strings.Contains(node.out.String(), "stories:latest") {
		t.Errorf("contribute output lacks its models: %q", node.out.String())
	}

	code, out, stderr := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "tell me a story")
	if code != 0 || out != "Once upon a time.\n" {
		t.Fatalf("consume: code %d, stdout %q, stderr %q", code, out, stderr)
	}
	// Default model is models[0]; thinking goes to stderr.
	code, out, stderr = run(t, "what is 2+2", "consume", "--server", base, "--prompt", "-", "--think")
	if code != 0 || out != "Once upon a time.\n" || !strings.Contains(stderr, "Let me think.") {
		t.Fatalf("consume default model: code %d, stdout %q, stderr %q", code, out, stderr)
	}
	reqs := ollama.Requests()
	last := reqs[len(reqs)-1]
	if last.Model != "qwen3:0.6b" || string(last.Think) != "true" || last.Messages[0].Role != "system" ||
		last.Messages[len(last.Messages)-1].Content != "what is 2+2" {
		t.Fatalf("Ollama got %+v", last)
	}
	for _, r := range reqs {
		for k := range r.Raw {
			switch k {
			case "model", "messages", "stream", "think", "keep_alive", "options", "tools", "format":
			default:
				t.Errorf("node forwarded key %q to Ollama", k)
			}
		}
	}

	code, _, stderr = run(t, "", "consume", "--server", base, "--model", "nosuch", "--prompt", "hi")
	if code != 1 || !strings.Contains(stderr, "stories:latest") {
		t.Fatalf("consume unknown model: code %d, stderr %q", code, stderr)
	}

	// Ctrl+C: the node drains and exits 0; so does the router.
	if code := node.stop(t); code != 0 {
		t.Fatalf("contribute exit code %d; stderr %s", code, node.errOut.String())
	}
	if code := router.stop(t); code != 0 {
		t.Fatalf("serve exit code %d; stderr %s", code, router.errOut.String())
	}
	code, _, _ = run(t, "", "status", "--server", base)
	if code != 1 {
		t.Fatalf("status with router down: code %d", code)
	}
	for _, logs := range []string{router.errOut.String(), node.errOut.String(), node.out.String()} {
		if strings.Contains(logs, "tell me a story") || strings.Contains(logs, "Once upon") {
			t.Fatalf("prompt or answer text in logs: %s", logs)
		}
	}
}

// TestEndToEndCancel: a consumer who disconnects mid-answer cancels the
// Ollama call on the node within a second, through router and node agent.
func TestEndToEndCancel(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"Once", " upon"}, Hang: true}
		},
	})
	defer ollama.Close()
	base := startNetwork(t, ollama.URL, nil, nil)

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"consume", "--server", base, "--model", "stories", "--prompt", "hi"}, noEnv,
			Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &syncBuffer{}})
	}()
	waitFor(t, "the first tokens", 10*time.Second, func() bool { return strings.Contains(out.String(), "Once upon") })
	cancel() // the consumer goes away mid-answer
	canceledAt := time.Now()
	select {
	case <-ollama.CanceledCh():
		if d := time.Since(canceledAt); d > time.Second {
			t.Fatalf("Ollama call canceled after %v, want within 1s", d)
		}
		t.Logf("Ollama call canceled %v after the consumer left", time.Since(canceledAt).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the Ollama call was not canceled")
	}
	<-done
}

// TestContributeReusesOllamaConnections: a node running as many requests
// as its --max-concurrent allows keeps one connection to Ollama per slot
// instead of dialing Ollama anew for every request past the second.
func TestContributeReusesOllamaConnections(t *testing.T) {
	const slots = 4
	fake := ollamatest.NewHandler(ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"Once", " upon"}, Delay: 100 * time.Millisecond}
		},
	})
	// Peak chat requests at Ollama at once: the check means something only
	// if a batch really needs a connection per slot.
	var inflight, peak atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		}
		fake.ServeHTTP(w, r)
	})
	var dials atomic.Int64
	ollama := httptest.NewUnstartedServer(handler)
	ollama.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	ollama.Start()
	defer ollama.Close()
	base := startNetwork(t, ollama.URL, []string{"--max-concurrent-chat-per-ip", "0", "--rate-limit-chat-rpm", "0"},
		[]string{"--max-concurrent", fmt.Sprint(slots)})
	batch := func() {
		var wg sync.WaitGroup
		for range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, out, errOut := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "hi"); code != 0 || out != "Once upon\n" {
					t.Errorf("consume: exit %d, %q, %q", code, out, errOut)
				}
			}()
		}
		wg.Wait()
	}
	batch()
	time.Sleep(300 * time.Millisecond) // the node puts its connections back in its pool
	before := dials.Load()
	peak.Store(0)
	batch()
	if p := peak.Load(); p != slots {
		t.Fatalf("the second batch reached Ollama %d at a time, want %d: it does not need a connection per slot", p, slots)
	}
	if n := dials.Load() - before; n != 0 {
		t.Errorf("%d new connections to Ollama for a second batch of %d requests, want 0 (all reused)", n, slots)
	}
}

// TestServeClassifierURL: --classifier-url plugs an HTTP classifier into
// serve; a prompt it refuses is refused as the patterns' are, others pass.
func TestServeClassifierURL(t *testing.T) {
	var asked atomic.Int64
	classifier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Kind, Text string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		asked.Add(1)
		allowed := !strings.Contains(in.Text, "forbidden")
		_ = json.NewEncoder(w).Encode(map[string]bool{"allowed": allowed})
	}))
	defer classifier.Close()
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	if code, _, errOut := run(t, "", "serve", "--classifier-url", "ftp://x"); code != 2 || !strings.Contains(errOut, "--classifier-url") {
		t.Errorf("a bad --classifier-url: exit %d, %q", code, errOut)
	}
	base := startNetwork(t, ollama.URL, []string{"--classifier-url", classifier.URL}, nil)
	if code, out, errOut := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "a forbidden topic"); code != 1 || out != "" || !strings.Contains(errOut, "not allowed") {
		t.Errorf("refused prompt: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, errOut := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "hello there"); code != 0 || out != "Echo: hello there\n" {
		t.Errorf("allowed prompt: exit %d, %q, %q", code, out, errOut)
	}
	if asked.Load() < 2 {
		t.Errorf("the classifier was asked %d times", asked.Load())
	}
}
