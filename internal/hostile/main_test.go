package hostile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binary is the idleclaw binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	if spec := os.Getenv(probeEnv); spec != "" {
		os.Exit(probeChild(spec))
	}
	dir, err := os.MkdirTemp("", "idleclaw-hostile-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "idleclaw")
	if err := build(binary); err != nil {
		fmt.Fprintln(os.Stderr, "hostile: build idleclaw:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if err := writeReport(); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		if code == 0 {
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles cmd/idleclaw (without the race detector: the router is
// measured as it ships; the suite's own code runs under -race).
func build(out string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(gobin, "build", "-o", out, "github.com/idleclaw/idleclaw/cmd/idleclaw")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, stderr.String())
	}
	return nil
}

// observation is one row of the suite's closing table.
type observation struct {
	attack, bound, did string
}

var (
	obsMu        sync.Mutex
	observations []observation
)

// observe records what the router did against an attack, in the test log
// and in the report (IDLECLAW_HOSTILE_REPORT).
func observe(t *testing.T, attack, bound, format string, args ...any) {
	t.Helper()
	did := fmt.Sprintf(format, args...)
	t.Logf("OBSERVED | %s | %s | %s", attack, bound, did)
	obsMu.Lock()
	observations = append(observations, observation{attack, bound, did})
	obsMu.Unlock()
}

func writeReport() error {
	path := os.Getenv("IDLECLAW_HOSTILE_REPORT")
	if path == "" {
		return nil
	}
	obsMu.Lock()
	defer obsMu.Unlock()
	var b strings.Builder
	b.WriteString("| attack | bound | what the router did |\n|---|---|---|\n")
	for _, o := range observations {
		esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
		fmt.Fprintf(&b, "| %s | %s | %s |\n", esc(o.attack), esc(o.bound), esc(o.did))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// adminToken is every test router's admin token.
const adminToken = "hostile-suite-admin"

// baseFlags are every test router's flags before the test's own (a later
// flag wins): a free loopback port, no record file, JSON logs, no canaries
// (they would send requests the tests do not expect), a short shutdown.
var baseFlags = []string{
	"--listen", "127.0.0.1:0",
	"--records", "none",
	"--log-format", "json",
	"--canary-share", "0",
	"--shutdown-grace", "1s",
	"--drain-window", "0s",
	"--admin-token", adminToken,
}

// router is `idleclaw serve` running as a child process.
type router struct {
	t      *testing.T
	cmd    *exec.Cmd
	pid    int
	base   string // http://127.0.0.1:port
	host   string // 127.0.0.1:port
	log    *lineLog
	exited chan struct{}
}

// startRouter runs the router with baseFlags and flags, waits for its
// listening line, and stops it when the test ends. A router that exits
// before that, or that logs a panic, fails the test.
func startRouter(t *testing.T, flags ...string) *router {
	t.Helper()
	args := append(append([]string{"serve"}, baseFlags...), flags...)
	cmd := exec.Command(binary, args...)
	cmd.Env = childEnv(t)
	addr := make(chan string, 1)
	cmd.Stdout = &addrWatcher{found: addr}
	logs := newLineLog()
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start router: %v", err)
	}
	r := &router{t: t, cmd: cmd, pid: cmd.Process.Pid, log: logs, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(r.stop)
	select {
	case a := <-addr:
		r.host = a
		r.base = "http://" + a
	case <-r.exited:
		t.Fatalf("router exited at start: %s", logs.tail(4096))
	case <-time.After(20 * time.Second):
		t.Fatalf("router printed no listening line in 20s: %s", logs.tail(4096))
	}
	return r
}

// childEnv is the environment of child processes: the test's, without
// IDLECLAW_ settings, with a HOME of its own.
func childEnv(t *testing.T) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IDLECLAW_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+t.TempDir())
}

// stop ends the router (SIGTERM, then SIGKILL after 15 s) and fails the
// test if it had exited on its own or logged a panic.
func (r *router) stop() {
	select {
	case <-r.exited:
		r.t.Errorf("the router exited during the test: %s", r.log.tail(4096))
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
		r.t.Errorf("the router did not stop within 15s of SIGTERM")
	}
	if n := r.log.count("panic"); n > 0 || r.log.count("fatal error") > 0 {
		r.t.Errorf("the router logged a panic: %s", r.log.tail(8192))
	}
}

// status reads a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n << 10 // kB
		}
	}
	return 0
}

func (r *router) rss() int64 { return procStatus(r.pid, "VmRSS") }
func (r *router) hwm() int64 { return procStatus(r.pid, "VmHWM") }

// fds counts the router's open file descriptors.
func (r *router) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// freezeP99 is the p99 latency of a read endpoint past which a test that
// attacks something else says the attack froze the router. TestLoad
// holds /health to the 100 ms; the shorter attacks, whose
// samples are fewer (50-250) and whose load generator is heavier for the
// two cores, are held to not freezing it.
const freezeP99 = 250 * time.Millisecond

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// addrWatcher is the router's stdout: it finds the listening line.
type addrWatcher struct {
	mu    sync.Mutex
	buf   []byte
	found chan string
	done  bool
}

var listenRE = regexp.MustCompile(`listening on http://([0-9.:]+)`)

func (w *addrWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if m := listenRE.FindSubmatch(w.buf); m != nil {
		w.found <- string(m[1])
		w.done, w.buf = true, nil
	} else if len(w.buf) > 64<<10 {
		w.buf = w.buf[len(w.buf)-4<<10:]
	}
	return len(p), nil
}

// lineLog is a child's stderr: every line is counted; the lines are kept
// up to a bound (the suite reads them back), past which only the count
// grows.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	kept    int // bytes in lines
	total   int // lines written
}

const maxKeptLog = 32 << 20

func newLineLog() *lineLog { return &lineLog{} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.total++
		if l.kept+len(line) <= maxKeptLog {
			l.lines = append(l.lines, line)
			l.kept += len(line)
		}
	}
	if len(l.partial) > 1<<20 { // a line this long is a finding of its own
		l.total++
		l.partial = l.partial[:0]
	}
	return len(p), nil
}

// mark is the number of lines so far, for since.
func (l *lineLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// since returns the kept lines after mark.
func (l *lineLog) since(mark int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mark >= len(l.lines) {
		return nil
	}
	return slices.Clone(l.lines[mark:])
}

// count counts the kept lines containing sub.
func (l *lineLog) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i := len(l.lines) - 1; i >= 0 && b.Len() < n; i-- {
		b.WriteString(l.lines[i])
		b.WriteByte('\n')
	}
	return b.String()
}

// ipSeq hands out source addresses: every client of the suite that should
// count as a client of its own for the router's per-IP limits dials from a
// fresh one.
var ipSeq atomic.Uint32

// freshIP returns a loopback address no other client of the run used.
func freshIP() string {
	n := ipSeq.Add(1)
	return fmt.Sprintf("127.%d.%d.%d", 10+n/(250*250), n/250%250, n%250+1)
}

// dialerFrom dials from the source address ip.
func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// clientFrom is an HTTP client whose connections come from ip.
func clientFrom(ip string) *http.Client {
	tr := &http.Transport{DialContext: dialerFrom(ip).DialContext, MaxIdleConnsPerHost: 16, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// get fetches path and decodes a JSON answer into v (if not nil).
func (r *router) get(c *http.Client, path string, v any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, r.base+path, nil)
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(path, "/admin/") {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("get %s: %w", path, err)
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, fmt.Errorf("get %s: %w: %.200s", path, err, b)
		}
	}
	return resp.StatusCode, nil
}

// adminNode is an entry of /admin/nodes, as the suite reads it.
type adminNode struct {
	NodeID           string   `json:"node_id"`
	IP               string   `json:"ip"`
	Models           []string `json:"models"`
	ConnectedSeconds int      `json:"connected_seconds"`
	MaxConcurrent    int      `json:"max_concurrent"`
	Available        bool     `json:"available"`
	Record           struct {
		Reputation   float64 `json:"reputation"`
		Breaker      string  `json:"breaker"`
		TokensPerSec float64 `json:"tokens_per_second"`
	} `json:"record"`
}

// adminNodes reads /admin/nodes.
func (r *router) adminNodes(c *http.Client) ([]adminNode, error) {
	var v struct {
		Nodes []adminNode `json:"nodes"`
	}
	code, err := r.get(c, "/admin/nodes", &v)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/admin/nodes: status %d", code)
	}
	return v.Nodes, err
}

// node finds a node of /admin/nodes by id.
func findNode(nodes []adminNode, id string) (adminNode, bool) {
	for _, n := range nodes {
		if n.NodeID == id {
			return n, true
		}
	}
	return adminNode{}, false
}

// models reads the model list of /api/models, in order.
func (r *router) models(c *http.Client) ([]string, error) {
	var v struct {
		Models []string `json:"models"`
	}
	code, err := r.get(c, "/api/models", &v)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/api/models: status %d", code)
	}
	return v.Models, err
}

// eventually polls cond (external state: the router's views) every 20 ms
// until it holds, or fails the test after d.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling another process, not synchronising goroutines
	}
}

// latencies collects durations for percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// pct returns the p-th percentile (nearest rank), the maximum and the
// number of samples.
func (l *latencies) pct(p float64) (v, maxv time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	i = min(max(i, 0), len(s)-1)
	return s[i], s[len(s)-1], len(s)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
