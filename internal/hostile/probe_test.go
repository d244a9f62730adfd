package hostile

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The prober measures the router's read endpoints from a process of its
// own (this test binary, re-executed): the suite's attackers share its
// process, and a poll that waited for the suite's own goroutines would
// count the suite's scheduling delays as the router's latency. The child
// shares the machine's two cores with the router and the attackers, as a
// client on the same host would.

// probeEnv carries a child prober's spec: base URL, interval, source
// prefix and paths, separated by spaces.
const probeEnv = "IDLECLAW_HOSTILE_PROBE"

// probesPerIP is how many requests a poller sends from one address
// before it moves to the next: the default per-IP bucket (60/min, burst
// 60) is not what the prober measures.
const probesPerIP = 40

// prober polls paths of the router every interval until stop is called,
// and keeps each answer's latency and status.
type prober struct {
	cmd      *exec.Cmd
	stdin    io.Closer
	lat      map[string]*latencies
	bad      atomic.Int64 // answers other than 200, and errors
	lastBad  atomic.Value // string
	read     sync.WaitGroup
	stopOnce sync.Once
}

// probePrefix numbers the source prefixes of child probers (127.P.x.y,
// P from 200 up), apart from freshIP's.
var probePrefix atomic.Int32

// probe starts a child prober of paths.
func (r *router) probe(interval time.Duration, paths ...string) *prober {
	r.t.Helper()
	prefix := 200 + probePrefix.Add(1)%50
	spec := strings.Join(append([]string{r.base, interval.String(), strconv.Itoa(int(prefix))}, paths...), " ")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"="+spec)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start prober: %v", err)
	}
	p := &prober{cmd: cmd, stdin: stdin, lat: map[string]*latencies{}}
	for _, path := range paths {
		p.lat[path] = &latencies{}
	}
	p.read.Add(1)
	go func() {
		defer p.read.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text()) // path nanoseconds status [error]
			if len(f) < 3 || p.lat[f[0]] == nil {
				continue
			}
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			p.lat[f[0]].add(time.Duration(ns))
			if f[2] != "200" {
				p.bad.Add(1)
				p.lastBad.Store(sc.Text())
			}
		}
	}()
	r.t.Cleanup(p.stop)
	return p
}

// stop ends the child (it stops at the end of its stdin) and waits for
// its last answers.
func (p *prober) stop() {
	p.stopOnce.Do(func() {
		_ = p.stdin.Close()
		p.read.Wait()
		_ = p.cmd.Wait()
	})
}

// summary is "p50 x, p99 y, max z over n" for one path.
func (p *prober) summary(path string) string {
	p50, _, _ := p.lat[path].pct(50)
	p99, mx, n := p.lat[path].pct(99)
	return fmt.Sprintf("p50 %s, p99 %s, max %s over %d", ms(p50), ms(p99), ms(mx), n)
}

// probeChild is the child prober: it polls until its stdin ends and
// writes "path nanoseconds status" per answer.
func probeChild(spec string) int {
	f := strings.Fields(spec)
	if len(f) < 4 {
		fmt.Fprintln(os.Stderr, "prober: bad spec", spec)
		return 2
	}
	base, prefix, paths := f[0], f[2], f[3:]
	interval, err := time.ParseDuration(f[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "prober:", err)
		return 2
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var seq atomic.Int32
	var wg sync.WaitGroup
	for _, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			var c *http.Client
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if k%probesPerIP == 0 {
					n := seq.Add(1)
					c = clientFrom(fmt.Sprintf("127.%s.%d.%d", prefix, n/250%250, n%250+1))
					c.Timeout = 10 * time.Second
				}
				start := time.Now()
				status := 0
				resp, err := c.Get(base + path)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				took := time.Since(start)
				mu.Lock()
				fmt.Fprintf(out, "%s %d %d %v\n", path, took.Nanoseconds(), status, err != nil)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if err := out.Flush(); err != nil {
		return 1
	}
	return 0
}
