package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestServerAddressForms: --server takes host:port forms (http assumed),
// refuses ports past 65535 with a clear message, and a node pointed at
// .../ws or .../ws/node dials /ws/node, not /ws/ws/node.
func TestServerAddressForms(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}}
	url := f.start(t)
	hostPort := strings.TrimPrefix(url, "http://")
	port := hostPort[strings.LastIndexByte(hostPort, ':')+1:]
	for _, server := range []string{hostPort, "localhost:" + port, url + "/", url + "/ws", url + "/ws/node"} {
		code, out, stderr := run(t, "", "consume", "--server", server, "--model", "m", "--prompt", "hi")
		if code != 0 || out != "Hello world\n" {
			t.Errorf("consume --server %s: exit %d, stdout %q, stderr %q", server, code, out, stderr)
		}
		code, out, stderr = run(t, "", "status", "--server", server, "--json")
		if code != 0 || !strings.Contains(out, `"server":"http://`) || !strings.Contains(out, `"reachable":true`) {
			t.Errorf("status --server %s: exit %d, stdout %q, stderr %q", server, code, out, stderr)
		}
	}
	for _, cmd := range []string{"consume", "status", "contribute"} {
		code, _, stderr := run(t, "", cmd, "--server", "127.0.0.1:99999")
		if code != 2 || !strings.Contains(stderr, "invalid --server") || !strings.Contains(stderr, "port 99999 is out of range (1..65535)") {
			t.Errorf("%s with port 99999: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	code, _, stderr := run(t, "", "consume", "--server", "ws://h/ws/node", "--prompt", "hi")
	if code != 2 || !strings.Contains(stderr, "use http:// or https://") {
		t.Errorf("consume --server ws://: exit %d, stderr %q", code, stderr)
	}

	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	var mu sync.Mutex
	var paths []string
	dialed := make(chan struct{}, 16)
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/ws/node" {
			if c, err := websocket.Accept(w, r, nil); err == nil {
				c.Close(websocket.StatusNormalClosure, "")
			}
			dialed <- struct{}{}
			return
		}
		if r.URL.Path == "/health" {
			routerJSON(w, http.StatusOK, `{"status":"healthy","uptime_seconds":1,"node_count":0}`)
			return
		}
		http.NotFound(w, r)
	}))
	defer router.Close()
	for _, server := range []string{router.URL + "/ws", router.URL + "/ws/node", strings.Replace(router.URL, "http", "ws", 1) + "/ws"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- Run(ctx, []string{"contribute", "--server", server, "--ollama", ollama.URL, "--identity", "none", "--control", "none", "--owner-poll", "0"},
				noEnv, Streams{Stdin: strings.NewReader(""), Stdout: &syncBuffer{}, Stderr: &syncBuffer{}})
		}()
		select {
		case <-dialed:
		case <-time.After(10 * time.Second):
			t.Fatalf("contribute --server %s never dialed /ws/node", server)
		}
		cancel()
		<-done
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range paths {
		if p != "/ws/node" && p != "/health" {
			t.Errorf("contribute asked for %s", p)
		}
	}
}

// TestDefaultRouterNote: with no --server and no IDLECLAW_SERVER, consume,
// status and contribute say on stderr that they talk to the public router
// and how to choose another; with either, they do not.
func TestDefaultRouterNote(t *testing.T) {
	t.Parallel()
	dead := deadOllama(t)
	cases := [][]string{
		{"consume", "--model", "m", "--prompt", "hi", "--timeout", "1ms"},
		{"status", "--timeout", "1ms"},
		{"contribute", "--ollama", dead, "--identity", "none", "--control", "none"},
	}
	for _, args := range cases {
		var out, errOut syncBuffer
		Run(context.Background(), args, noEnv, Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
		lines := strings.Split(errOut.String(), "\n")
		if !strings.Contains(lines[0], "the public router "+DefaultServer) || !strings.Contains(lines[0], "--server URL or IDLECLAW_SERVER chooses another") {
			t.Errorf("%s: first stderr line %q, want the public router note", args[0], lines[0])
		}
		if args[0] == "consume" && !strings.Contains(lines[0], "your prompt goes to") {
			t.Errorf("consume note %q does not say where the prompt goes", lines[0])
		}
		var errEnv syncBuffer
		Run(context.Background(), args, envOf("IDLECLAW_SERVER", closedServer(t)), Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errEnv})
		if strings.Contains(errEnv.String(), "public router") {
			t.Errorf("%s with IDLECLAW_SERVER: %q", args[0], errEnv.String())
		}
	}
}
