package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// contribBuffer is a writer safe for concurrent use that can be waited on.
type contribBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newContribBuffer() *contribBuffer { return &contribBuffer{changed: make(chan struct{}, 1)} }

func (c *contribBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return c.b.Write(p)
}

func (c *contribBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func (c *contribBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(c.String(), sub) {
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("never saw %q in:\n%s", sub, c.String())
		}
	}
}

func contribEnv(kv map[string]string) Env { return func(k string) string { return kv[k] } }

func deadOllama(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func runContributeTest(ctx context.Context, args []string, env map[string]string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(ctx, append([]string{"contribute"}, args...), contribEnv(env), Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestContributeUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad scheme", []string{"--server", "ftp://example.com"}, nil, "invalid --server"},
		{"port out of range", []string{"--server", "localhost:65536"}, nil, "port 65536 is out of range (1..65535)"},
		{"no host", []string{"--server", "https://"}, nil, "missing host"},
		{"bad env server", nil, map[string]string{"IDLECLAW_SERVER": "example.com:http"}, "invalid --server"},
		{"bad ollama", []string{"--ollama", "ftp://box"}, nil, "invalid --ollama"},
		{"bad OLLAMA_HOST", nil, map[string]string{"OLLAMA_HOST": "box:99999"}, "invalid --ollama"},
		{"concurrency 0", []string{"--max-concurrent", "0"}, nil, "--max-concurrent"},
		{"concurrency 11", nil, map[string]string{"IDLECLAW_MAX_CONCURRENT": "11"}, "--max-concurrent"},
		{"concurrency not a number", nil, map[string]string{"IDLECLAW_MAX_CONCURRENT": "two"}, "IDLECLAW_MAX_CONCURRENT"},
		{"long node id", []string{"--node-id", strings.Repeat("n", 65)}, nil, "--node-id"},
		{"drain grace", []string{"--drain-grace", "0s"}, nil, "--drain-grace"},
		{"models poll", nil, map[string]string{"IDLECLAW_MODELS_POLL": "-1s"}, "--models-poll"},
		{"log level", []string{"--log-level", "loud"}, nil, "log level"},
		{"log format", nil, map[string]string{"IDLECLAW_LOG_FORMAT": "xml"}, "log format"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runContributeTest(context.Background(), tt.args, tt.env)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
	if code, _, stderr := runContributeTest(context.Background(), []string{"-h"}, nil); code != 0 || !strings.Contains(stderr, "IDLECLAW_DRAIN_GRACE") || !strings.Contains(stderr, "OLLAMA_HOST") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}
}

func TestContributeStartupErrors(t *testing.T) {
	dead := deadOllama(t)
	code, _, stderr := runContributeTest(context.Background(), []string{"--ollama", dead}, nil)
	want := "cannot reach Ollama at " + dead + ": is it running? (`ollama serve`)"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("unreachable: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}

	empty := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{}})
	defer empty.Close()
	code, _, stderr = runContributeTest(context.Background(), nil, map[string]string{"OLLAMA_HOST": strings.TrimPrefix(empty.URL, "http://")})
	want = "Ollama has no models: pull a model first: `ollama pull llama3.2:3b`"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("no models: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
}

func TestContributeServesAndShutsDown(t *testing.T) {
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1185376, Capabilities: []string{"completion"}}}})
	defer fake.Close()

	type result struct {
		reg         wire.Register
		code        websocket.StatusCode
		reason      string
		chunksSeen  int
		errorFrames int
	}
	results := make(chan result, 1)
	var handlers sync.WaitGroup
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws/node" {
			http.NotFound(w, r)
			return
		}
		handlers.Add(1)
		defer handlers.Done()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		var res result
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					res.code, res.reason = ce.Code, ce.Reason
				}
				results <- res
				return
			}
			var f wire.NodeFrame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Errorf("bad frame %s", data)
				continue
			}
			switch f.Type {
			case wire.TypeRegister:
				res.reg = f.RegisterFrame()
				b, _ := json.Marshal(wire.Registered{Type: wire.TypeRegistered, NodeID: f.NodeID})
				c.Write(ctx, websocket.MessageText, b)
				b, _ = json.Marshal(map[string]any{"type": wire.TypeInferenceReq, "request_id": "q1",
					"ollama_params": map[string]any{"model": "stories:latest", "messages": []map[string]string{{"role": "user", "content": "hello world"}}}})
				c.Write(ctx, websocket.MessageText, b)
			case wire.TypeInferenceChunk:
				res.chunksSeen++
			case wire.TypeInferenceError:
				res.errorFrames++
			}
		}
	}))
	defer router.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := newContribBuffer(), newContribBuffer()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"contribute", "--node-id", "node-test", "--log-format", "json"}, contribEnv(map[string]string{
			"IDLECLAW_SERVER": router.URL,
			"OLLAMA_HOST":     strings.TrimPrefix(fake.URL, "http://"), // host:port form
		}), Streams{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: stderr})
	}()
	stdout.waitFor(t, "stories:latest  1.2 MB")
	stdout.waitFor(t, "  ok\n")
	cancel() // Ctrl+C
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("contribute did not exit after cancel")
	}
	res := <-results
	handlers.Wait()
	if res.reg.NodeID != "node-test" || res.reg.MaxConcurrent != 2 || res.reg.Agent != "idleclaw-go/"+Version || len(res.reg.Models) != 1 {
		t.Errorf("register = %+v", res.reg)
	}
	if res.code != websocket.StatusNormalClosure || res.reason != "node shutting down" {
		t.Errorf("close %d %q", res.code, res.reason)
	}
	if res.chunksSeen == 0 || res.errorFrames != 0 {
		t.Errorf("chunks %d, errors %d", res.chunksSeen, res.errorFrames)
	}
	out := stdout.String()
	if !strings.Contains(out, router.URL[len("http://"):]+"/ws/node") || !strings.Contains(out, fake.URL) {
		t.Errorf("stdout lacks the router or Ollama address:\n%s", out)
	}
	if strings.Contains(out, "hello") || strings.Contains(out, "Echo") || strings.Contains(stderr.String(), "hello") || strings.Contains(stderr.String(), "Echo") {
		t.Errorf("prompt or answer text printed:\n%s\n%s", out, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"registered with the router"`) {
		t.Errorf("json logs missing on stderr:\n%s", stderr.String())
	}
}
