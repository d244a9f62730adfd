package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// ownerChat is the owner using their own Ollama directly. Its keep_alive
// (10m, where the node sends 5m) makes the expiry it leaves unlike any the
// node's own requests leave, whenever it ends.
func ownerChat(t *testing.T, base string) {
	t.Helper()
	resp, err := http.Post(base+"/api/chat", "application/json",
		strings.NewReader(`{"model":"stories:latest","messages":[{"role":"user","content":"my own question"}],"stream":false,"keep_alive":"10m"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the owner's request: %d %s", resp.StatusCode, b)
	}
}

// waitForExpiry polls Ollama's /api/ps until a model's expiry is about
// ka from now: the request that set it has ended on Ollama's side.
func waitForExpiry(t *testing.T, base string, ka time.Duration) {
	t.Helper()
	c := &ollama.Client{BaseURL: base}
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if ps, err := c.PS(t.Context()); err == nil {
			for _, m := range ps.Models {
				if d := time.Until(m.ExpiresAt) - ka; d > -time.Second && d < time.Second {
					return
				}
			}
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("no model's expiry became %s from now", ka)
}

// nextAvailability waits for a heartbeat and returns its available.
func nextAvailability(t *testing.T, rc *routerConn) bool {
	t.Helper()
	f := rc.expect(t, wire.TypeHeartbeat)
	return f.m["available"] == true
}

func TestOwnerUsePausesTheNode(t *testing.T) {
	h := newHarness(t, ollamatest.Config{Loaded: []string{"stories:latest"}}, func(c *Config) {
		c.HeartbeatInterval = time.Hour // heartbeats only when the state changes
		c.Owner = Owner{Poll: 20 * time.Millisecond, Quiet: 300 * time.Millisecond}
	})
	rc, _ := h.connect(t)
	if !nextAvailability(t, rc) {
		t.Fatal("not available at registration")
	}
	// The node's own request moves the model's expiry too: that is not the owner.
	rc.request(t, "r1", chat("stories:latest", "hi"))
	for f := rc.expectFor(t, "r1"); f.m["chunk"].(map[string]any)["done"] != true; f = rc.expectFor(t, "r1") {
	}
	// Ollama sets the expiry once the request's handler is done, which is
	// after the last chunk went out: wait for it, or the owner's request
	// could end first and have its expiry overwritten by the node's.
	waitForExpiry(t, h.fake.URL, 4*time.Minute+57*time.Second)
	// The owner asks their Ollama something: the node pauses and says so.
	start := time.Now()
	ownerChat(t, h.fake.URL)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("out:\n%s\nlogs:\n%s", h.out.String(), h.logs.String())
		}
	})
	if nextAvailability(t, rc) {
		t.Fatal("a heartbeat after the owner's request says available")
	}
	paused := time.Since(start)
	h.out.waitFor(t, "paused: the owner is using Ollama")
	if strings.Count(h.out.String(), "paused:") != 1 {
		t.Errorf("the node's own request counted as the owner's:\n%s", h.out.String())
	}
	// A request the router sends meanwhile (a race) is refused, not run.
	rc.request(t, "r2", chat("stories:latest", "hi"))
	if f := rc.expectFor(t, "r2"); f.typ() != wire.TypeInferenceError {
		t.Errorf("paused node ran a request: %s", f.raw)
	}
	// The quiet period over, it serves again.
	if !nextAvailability(t, rc) {
		t.Fatal("not available again after the quiet period")
	}
	h.out.waitFor(t, "serving the network again")
	t.Logf("paused %s after the owner's request ended (poll every 20ms)", paused.Round(time.Millisecond))
}

// TestOwnerCancelMovesRequests: the owner starts `ollama run` while the
// network's request is in flight (Ollama's /api/ps shows nothing while a
// request runs: its expiry moves only when the model goes idle); with
// Cancel the node ends the request at once, and the router is told
// ollama_unavailable, so it moves a request that had no token yet.
func TestOwnerCancelMovesRequests(t *testing.T) {
	proc := t.TempDir()
	h := newHarness(t, ollamatest.Config{Loaded: []string{"stories:latest"}, Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
		return ollamatest.Reply{Hang: true}
	}}, func(c *Config) {
		c.HeartbeatInterval = time.Hour
		c.Owner = Owner{Poll: 20 * time.Millisecond, Quiet: time.Hour, Cancel: true, Processes: true, ProcRoot: proc}
	})
	rc, _ := h.connect(t)
	nextAvailability(t, rc)
	rc.request(t, "r1", chat("stories:latest", "network request"))
	select {
	case <-h.fake.Started():
	case <-time.After(waitTimeout):
		t.Fatal("the request did not reach Ollama")
	}
	if err := os.MkdirAll(filepath.Join(proc, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "4242", "cmdline"), []byte("ollama\x00run\x00stories\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		f := rc.expect(t, wire.TypeInferenceError, wire.TypeHeartbeat)
		if f.typ() == wire.TypeInferenceError {
			if f.str("request_id") != "r1" || f.str("error") != wire.ErrOllamaUnavailable {
				t.Fatalf("frame %s", f.raw)
			}
			break
		}
		if f.m["available"] != false {
			t.Fatalf("heartbeat %s", f.raw)
		}
	}
	h.out.waitFor(t, "paused: the owner is using Ollama")
}

func TestScheduleOnAFakeClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.Local) // a Wednesday noon
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	sched, err := ParseSchedule("Mon-Fri 22:00-08:00, Sat-Sun")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.HeartbeatInterval = time.Hour
		c.Now = clock
		c.Schedule = sched
		c.Owner = Owner{Poll: -1}
	})
	rc, _ := h.connect(t)
	// Wednesday noon is outside the windows: unavailable, connected.
	if nextAvailability(t, rc) {
		// The schedule's first look may come just after the first heartbeat.
		if nextAvailability(t, rc) {
			t.Fatal("available outside the schedule")
		}
	}
	h.out.waitFor(t, "paused: outside the sharing schedule")
	mu.Lock()
	now = time.Date(2026, 12, 2, 23, 0, 0, 0, time.Local) // Wednesday 23:00
	mu.Unlock()
	h.agent.checkSchedule()
	// A heartbeat of the pause may still be on its way (registration, the
	// schedule's first look and its kick each send one): the next
	// available one must come within a few.
	for i := 0; !nextAvailability(t, rc); i++ {
		if i == 2 {
			t.Fatal("not available inside the schedule")
		}
	}
	select {
	case <-rc.done:
		t.Fatal("the link closed")
	default:
	}
}

func TestParseSchedule(t *testing.T) {
	at := func(day time.Weekday, hh, mm int) time.Time {
		// 2026-11-29 is a Sunday.
		return time.Date(2026, 11, 29+int(day), hh, mm, 0, 0, time.UTC)
	}
	sc, err := ParseSchedule("Mon-Fri 22:00-08:00, Sat-Sun")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		t    time.Time
		want bool
	}{
		{at(time.Wednesday, 12, 0), false},
		{at(time.Wednesday, 22, 0), true},
		{at(time.Wednesday, 23, 59), true},
		{at(time.Thursday, 7, 59), true}, // Wednesday's night
		{at(time.Thursday, 8, 0), false},
		{at(time.Monday, 3, 0), false},  // Sunday night is not in Mon-Fri 22-08 ...
		{at(time.Sunday, 3, 0), true},   // ... but Sunday is a whole day
		{at(time.Saturday, 7, 0), true}, // Friday's night, and a Saturday
		{at(time.Monday, 22, 30), true},
	} {
		if got := sc.Open(tc.t); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.t.Weekday(), tc.t.Format("15:04"), got, tc.want)
		}
	}
	if sc, _ := ParseSchedule(""); !sc.Open(at(time.Monday, 3, 0)) || !sc.Always() {
		t.Error("an empty schedule is always open")
	}
	if sc, _ := ParseSchedule("09:00-17:00"); !sc.Open(at(time.Sunday, 9, 0)) || sc.Open(at(time.Sunday, 17, 0)) {
		t.Error("hours without days are every day")
	}
	if sc, _ := ParseSchedule("Fri-Mon"); !sc.Open(at(time.Sunday, 1, 0)) || sc.Open(at(time.Tuesday, 1, 0)) {
		t.Error("a wrapping day range")
	}
	for _, bad := range []string{"Funday", "Mon 25:00-26:00", "Mon 10:00", "Mon 10:00-10:00", "Mon 9:7-10:00", "Mon Tue Wed", strings.Repeat("Mon,", 400)} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"Mon-Fri 22:00-08:00, Sat-Sun", "", "09:00-17:00", "Fri-Mon", "Mon+Wed 1:00-2:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseSchedule(s)
		if err != nil {
			return
		}
		_ = sc.Open(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	})
}

func TestHysteresis(t *testing.T) {
	h := &hysteresis{span: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		after time.Duration
		above bool
		want  bool
	}{
		{0, true, false}, {30 * time.Second, true, false}, {45 * time.Second, false, false}, // a dip resets it
		{50 * time.Second, true, false}, {110 * time.Second, true, true}, // a full minute above
		{120 * time.Second, false, true}, {150 * time.Second, true, true}, // a short dip does not clear it
		{160 * time.Second, false, true}, {220 * time.Second, false, false},
	}
	for _, s := range steps {
		if got, _ := h.add(s.above, t0.Add(s.after)); got != s.want {
			t.Errorf("at %s above=%v: %v, want %v", s.after, s.above, got, s.want)
		}
	}
}

func TestCPUOfOthers(t *testing.T) {
	root := t.TempDir()
	write := func(path, s string) {
		p := filepath.Join(root, path)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 1,000 ticks elapse, 200 of them idle; ollama used 500: others 300 (30%).
	write("stat", "cpu  100 0 100 800 0 0 0 0 0 0\n")
	write("42/comm", "ollama\n")
	write("42/stat", "42 (ollama) S 1 1 1 0 -1 0 0 0 0 0 100 0 0 0\n")
	a, ok := readCPU(root)
	write("stat", "cpu  500 0 500 1000 0 0 0 0 0 0\n")
	write("42/stat", "42 (ollama) S 1 1 1 0 -1 0 0 0 0 0 400 200 0 0\n")
	b, ok2 := readCPU(root)
	if !ok || !ok2 {
		t.Fatal("cannot read the fake /proc")
	}
	if got := othersPercent(a, b); got < 29.9 || got > 30.1 {
		t.Errorf("others' CPU %.1f%%, want 30%%", got)
	}
	if ownerProcess(root) {
		t.Error("no ollama run process, yet one was seen")
	}
	write("77/cmdline", "/usr/local/bin/ollama\x00run\x00llama3.2\x00")
	if !ownerProcess(root) {
		t.Error("an `ollama run` process was not seen")
	}
}

func TestControlSocket(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.HeartbeatInterval = time.Hour
		c.Owner = Owner{Poll: -1}
	})
	rc, _ := h.connect(t)
	nextAvailability(t, rc)
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.agent.ServeControl(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	call := func(method, path string) Status {
		t.Helper()
		req, _ := http.NewRequest(method, "http://idleclaw"+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st Status
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		if err := json.Unmarshal(buf.Bytes(), &st); err != nil {
			t.Fatalf("%s %s: %s", method, path, buf.String())
		}
		return st
	}
	if st := call(http.MethodGet, "/status"); st.State != "serving" || !st.Connected || st.Limits.MaxContext != DefaultMaxContext {
		t.Errorf("status %+v", st)
	}
	st := call(http.MethodPost, "/pause?for=1h")
	if st.State != "paused" || len(st.Why) != 1 || st.Why[0] != PauseManual || st.PausedUntil.IsZero() {
		t.Errorf("after pause: %+v", st)
	}
	if nextAvailability(t, rc) {
		t.Error("the router was not told of the pause")
	}
	if st := call(http.MethodPost, "/resume"); st.State != "serving" {
		t.Errorf("after resume: %+v", st)
	}
	if !nextAvailability(t, rc) {
		t.Error("the router was not told of the resume")
	}
}

// TestBusyGPUPausesTheNode: a GPU busier than the threshold for the span
// pauses the node (one line, a heartbeat saying unavailable); back under
// it for the span, the node serves again.
func TestBusyGPUPausesTheNode(t *testing.T) {
	var gpu atomic.Int64
	gpu.Store(95)
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.HeartbeatInterval = time.Hour
		c.Owner = Owner{Poll: -1}
		c.Busy = Busy{GPU: 50, For: 30 * time.Millisecond, Interval: 5 * time.Millisecond,
			GPUCommand: func(context.Context) (float64, error) { return float64(gpu.Load()), nil }}
	})
	rc, _ := h.connect(t)
	for nextAvailability(t, rc) {
	}
	h.out.waitFor(t, "paused: the machine is busy")
	gpu.Store(10)
	for !nextAvailability(t, rc) {
	}
	h.out.waitFor(t, "serving the network again")
}
