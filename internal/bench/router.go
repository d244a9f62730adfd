package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// routerFlags turn every per-IP and response limit of `idleclaw serve` off,
// so that the bench measures the relay and not the rate limiter (0 is off).
// Logging is at warn: the per-request info line is not part of the relay.
var routerFlags = []string{
	"--listen", "127.0.0.1:0",
	"--rate-limit-chat-rpm", "0",
	"--rate-limit-ws-rpm", "0",
	"--rate-limit-default-rpm", "0",
	"--max-concurrent-chat-per-ip", "0",
	"--max-nodes-per-ip", "0",
	"--max-response-chars", "0",
	"--response-timeout", "0",
	"--shutdown-grace", "2s",
	"--log-level", "warn",
	"--records", "none", // the bench measures the relay, not a record file
}

// routerProc is a router running as a child process, so that its CPU time
// and memory are its own.
type routerProc struct {
	cmd    *exec.Cmd
	pid    int
	url    string // http://127.0.0.1:port
	exited chan struct{}
	stderr *tail
	client *http.Client
}

// startRouter runs command (program and leading arguments) with "serve"
// and routerFlags, and waits for its "listening on http://ADDR" line.
func startRouter(ctx context.Context, command, env []string, extra ...string) (*routerProc, error) {
	return startProc(ctx, "router", command, env, append(append([]string{"serve"}, routerFlags...), extra...))
}

// startProc runs command (program and leading arguments) with args, and
// waits for its "listening on http://ADDR" line; what names it in errors.
func startProc(ctx context.Context, what string, command, env, args []string) (*routerProc, error) {
	if len(command) == 0 {
		return nil, fmt.Errorf("start %s: no command", what)
	}
	cmd := exec.Command(command[0], append(append([]string{}, command[1:]...), args...)...)
	// The router gets the machine's default GOMAXPROCS whatever the
	// bench runs with, unless env says otherwise.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = childAttr()
	addr := make(chan string, 1)
	cmd.Stdout = &addrWatcher{found: addr}
	errTail := &tail{max: 8 << 10}
	cmd.Stderr = errTail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	r := &routerProc{
		cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{}), stderr: errTail,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
	go func() {
		_ = cmd.Wait()
		close(r.exited)
	}()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case a := <-addr:
		r.url = "http://" + a
		return r, nil
	case <-r.exited:
		return nil, fmt.Errorf("start %s: it exited: %s", what, errTail.String())
	case <-timer.C:
		r.stop()
		return nil, fmt.Errorf("start %s: no listening line in 30s: %s", what, errTail.String())
	case <-ctx.Done():
		r.stop()
		return nil, ctx.Err()
	}
}

// stop ends the router: SIGTERM (it drains, closes nodes and exits), then
// SIGKILL if it has not exited within 15 s.
func (r *routerProc) stop() {
	r.client.CloseIdleConnections()
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

func (r *routerProc) cpu() time.Duration {
	d, _ := procCPU(r.pid)
	return d
}

func (r *routerProc) rss() int64 {
	n, _ := procRSS(r.pid)
	return n
}

// goroutines reads go_goroutines from the router's Prometheus exposition.
func (r *routerProc) goroutines(ctx context.Context) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/metrics/prometheus", nil)
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read goroutines: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("read goroutines: %w", err)
			}
			return int(f), nil
		}
	}
	return 0, errors.New("read goroutines: no go_goroutines in /metrics/prometheus")
}

// nodeCount reads node_count from /health.
func (r *routerProc) nodeCount(ctx context.Context) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/health", nil)
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read node count: %w", err)
	}
	defer resp.Body.Close()
	var h struct {
		NodeCount int `json:"node_count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return 0, fmt.Errorf("read node count: %w", err)
	}
	return h.NodeCount, nil
}

// waitNodes polls /health until n nodes are registered.
func (r *routerProc) waitNodes(ctx context.Context, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	got := -1
	for {
		c, err := r.nodeCount(ctx)
		if err == nil {
			got = c
			if c >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %d nodes: %d registered after %s", n, got, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.exited:
			return fmt.Errorf("wait for %d nodes: the router exited: %s", n, r.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// peakRSS samples the router's RSS every 100 ms until the returned stop
// function is called, which returns the largest value seen.
func (r *routerProc) peakRSS() (stop func() int64) {
	var mu sync.Mutex
	peak := r.rss()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := r.rss()
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		v := r.rss()
		mu.Lock()
		defer mu.Unlock()
		return max(peak, v)
	}
}

// addrWatcher is the router's stdout: it finds the listening line.
type addrWatcher struct {
	mu    sync.Mutex
	buf   []byte
	found chan string // receives the address once
	done  bool
}

func (w *addrWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	const marker = "listening on http://"
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if _, after, ok := strings.Cut(line, marker); ok {
			w.found <- strings.TrimSpace(after)
			w.done, w.buf = true, nil
			break
		}
	}
	if len(w.buf) > 64<<10 {
		w.buf = w.buf[len(w.buf)-4<<10:]
	}
	return len(p), nil
}

// tail keeps the last max bytes written, for error reports.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
