// Package bench owns the router's benchmark harness (`idleclaw bench`) and
// its performance budget.
//
// On one machine it starts a router as a child process (so that its CPU
// time and memory are its own), node agents speaking the real WebSocket
// protocol to a fake Ollama (internal/ollamatest) that emits tokens of a
// chosen size at a chosen rate, and consumers on loopback sockets. It runs
// each workload twice in the same run, through the network and directly
// against the fake Ollama, so that what the network adds to time to first
// token and inter-token delay is the difference of the two. It samples the
// router's CPU time, resident memory and goroutines, sweeps the number of
// idle nodes and of concurrent streams, can repeat the overhead comparison
// against a real Ollama, and reports a table, JSON and a PNG chart, each
// figure against the budget. Timing targets are reported, never enforced.
//
// The harness reads /proc: Linux only. Run it alone on the machine.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Config configures a bench run. Zero fields take the defaults noted.
type Config struct {
	// Router is the command that runs a router: the program and the
	// arguments that come before "serve" (usually just this binary).
	// Required.
	Router []string
	// RouterEnv is added to the router's environment.
	RouterEnv []string

	Nodes      []int // idle-node counts to sweep; none: skipped
	Streams    []int // concurrent streams of the latency workload; none: skipped
	Throughput []int // concurrent streams of the no-delay throughput workload; none: skipped
	// Peers and PeersMax: concurrent streams of the peers comparison
	// (direct, the two-proxy floor and the network interleaved; see
	// PeerPoint) at the latency workload's rate and with no delay; none:
	// skipped.
	Peers    []int
	PeersMax []int
	// PeerRounds is how many times each peer point runs its three paths,
	// in a different order each time; figures are medians. Default 1.
	PeerRounds int
	// Relay is the command that runs the peers comparison's other relay
	// processes (floor proxies, node agents): the program and the
	// arguments before "bench-relay". Default: Router.
	Relay []string

	Duration   time.Duration // measured window of each phase, default 10s
	Warmup     time.Duration // unmeasured time after the consumers started, default 1s
	Settle     time.Duration // wait before sampling idle nodes, default 2s
	Interval   time.Duration // between tokens in the latency workload, default 20ms
	Tokens     int           // tokens per answer in the latency workload, default 50
	TokenBytes int           // bytes per token, default 4
	// MaxRate caps the tokens/s of the latency workload over all streams:
	// past it the interval grows with the streams. Default 10,000 (1,000
	// streams at 100 ms, 5,000 at 500 ms): on 2 cores the load generator
	// alone (fake Ollama, node agents, consumers) needs more than a core
	// for 50,000 tokens/s of separate flushes, so a higher rate measures
	// the machine's saturation instead of the router. Negative: no cap.
	MaxRate int
	// ThroughputTokens is the answer length of the no-delay workloads,
	// default 200 (the length BENCHMARKS.md was measured with; a node with
	// no delay sends a whole answer faster than any consumer reads it, and
	// the hub holds at most 256 chunks plus 1 MiB per request).
	ThroughputTokens int
	PerNode          int // max_concurrent of each streaming node agent, default 10
	// LoadGenProcs is the GOMAXPROCS of the bench process (consumers,
	// node agents, fake Ollama) during the latency workload; 0 leaves it
	// alone. The router process is never affected.
	LoadGenProcs int

	// OllamaURL, when set, adds the overhead comparison against a real
	// Ollama serving Model (default "stories").
	OllamaURL      string
	Model          string
	OllamaStreams  int // concurrent consumers, default 2
	OllamaRequests int // requests per round on each path, default 16
	OllamaRounds   int // rounds, alternating which path goes first, default 4
	OllamaPredict  int // num_predict of each request, default 384

	// Command is recorded in the report as the command line that ran.
	Command string
	// Progress receives one line per phase (default: discarded).
	Progress io.Writer
}

// DefaultConfig is the full sweep of the budget.
func DefaultConfig() Config {
	return Config{
		Nodes:      []int{10, 100, 1000, 10000},
		Streams:    []int{10, 100, 1000, 5000},
		Throughput: []int{16, 64, 256},
		Peers:      []int{10, 100, 300},
		PeersMax:   []int{64},
	}
}

// QuickConfig is a run of a few seconds with tiny sweeps: the CI smoke test.
func QuickConfig() Config {
	return Config{
		Nodes:            []int{5, 20},
		Streams:          []int{2, 8},
		Throughput:       []int{4},
		Peers:            []int{2},
		PeersMax:         []int{2},
		Duration:         time.Second,
		Warmup:           200 * time.Millisecond,
		Settle:           200 * time.Millisecond,
		Interval:         10 * time.Millisecond,
		Tokens:           10,
		ThroughputTokens: 100,
		OllamaRequests:   4,
		OllamaRounds:     1,
		OllamaPredict:    32,
	}
}

func (c *Config) setDefaults() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Duration, 10*time.Second)
	def(&c.Warmup, time.Second)
	def(&c.Settle, 2*time.Second)
	def(&c.Interval, 20*time.Millisecond)
	defInt(&c.Tokens, 50)
	defInt(&c.TokenBytes, 4)
	defInt(&c.MaxRate, 10_000)
	defInt(&c.ThroughputTokens, 200)
	defInt(&c.PerNode, 10)
	defInt(&c.PeerRounds, 1)
	if len(c.Relay) == 0 {
		c.Relay = c.Router
	}
	defInt(&c.OllamaStreams, 2)
	defInt(&c.OllamaRequests, 16)
	defInt(&c.OllamaRounds, 4)
	defInt(&c.OllamaPredict, 384)
	if c.Model == "" {
		c.Model = "stories"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Report is everything a run measured. Its JSON form is stable.
type Report struct {
	Command    string        `json:"command"`
	Started    time.Time     `json:"started"`
	Seconds    float64       `json:"seconds"`
	Machine    Machine       `json:"machine"`
	Settings   Settings      `json:"settings"`
	Nodes      *NodeSweep    `json:"nodes,omitempty"`
	Streams    []StreamPoint `json:"streams,omitempty"`
	Throughput []StreamPoint `json:"throughput,omitempty"`
	Peers      []PeerPoint   `json:"peers,omitempty"`
	Ollama     *OllamaPoint  `json:"ollama,omitempty"`
	Budget     []Check       `json:"budget"`
}

// Machine describes where the run took place.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	LoadStart float64 `json:"load1_start"`
	LoadEnd   float64 `json:"load1_end"`
	FileLimit uint64  `json:"file_limit"`
	Hop       Hop     `json:"loopback_hop"`
}

// Settings are the workload parameters in force.
type Settings struct {
	DurationS        float64 `json:"duration_s"`
	WarmupS          float64 `json:"warmup_s"`
	IntervalMS       float64 `json:"interval_ms"`
	Tokens           int     `json:"tokens"`
	TokenBytes       int     `json:"token_bytes"`
	MaxRate          int     `json:"max_rate"`
	ThroughputTokens int     `json:"throughput_tokens"`
	PerNode          int     `json:"per_node"`
	LoadGenProcs     int     `json:"loadgen_procs,omitempty"`
}

// NodeSweep is the idle-node sweep: one router, nodes added level by level.
type NodeSweep struct {
	BaseRSSMB      float64     `json:"base_rss_mb"`
	BaseGoroutines int         `json:"base_goroutines"`
	Points         []NodePoint `json:"points"`
}

// NodePoint is the router with Nodes idle nodes connected.
type NodePoint struct {
	Nodes             int     `json:"nodes"`
	RSSMB             float64 `json:"rss_mb"`
	RSSPerNodeKB      float64 `json:"rss_per_node_kb"`
	Goroutines        int     `json:"goroutines"`
	GoroutinesPerNode float64 `json:"goroutines_per_node"`
	ConnectSeconds    float64 `json:"connect_s"` // time to connect and register the nodes added at this level
	ConnectCPUS       float64 `json:"connect_router_cpu_s"`
}

// StreamPoint is one workload at one number of concurrent streams, run
// directly against Ollama and through the network.
type StreamPoint struct {
	Workload   string  `json:"workload"` // WorkloadLatency, WorkloadThroughput or WorkloadRelay
	Streams    int     `json:"streams"`
	Nodes      int     `json:"nodes"`
	Tokens     int     `json:"tokens"`
	TokenBytes int     `json:"token_bytes"`
	IntervalMS float64 `json:"interval_ms"`
	Direct     Side    `json:"direct"`
	Network    Side    `json:"network"`

	AddedTTFTP50MS float64 `json:"added_ttft_p50_ms"`
	AddedTTFTP99MS float64 `json:"added_ttft_p99_ms"`
	AddedITLP50MS  float64 `json:"added_itl_p50_ms"`
	AddedITLP99MS  float64 `json:"added_itl_p99_ms"`

	RouterCPUS          float64 `json:"router_cpu_s"`
	RouterCPUPerMTokens float64 `json:"router_cpu_s_per_m_tokens"`
	RouterRSSIdleMB     float64 `json:"router_rss_idle_mb"`
	RouterRSSPeakMB     float64 `json:"router_rss_peak_mb"`
	RSSPerStreamKB      float64 `json:"rss_per_stream_kb"`
	GoroutinesIdle      int     `json:"goroutines_idle"`
	GoroutinesActive    int     `json:"goroutines_active"`
	GoroutinesPerStream float64 `json:"goroutines_per_stream"`
}

// OllamaPoint compares a real Ollama directly and through the network.
type OllamaPoint struct {
	URL      string `json:"url"`
	Model    string `json:"model"`
	Streams  int    `json:"streams"`
	Requests int    `json:"requests_per_round"`
	Rounds   int    `json:"rounds"`
	Predict  int    `json:"num_predict"`
	Direct   Side   `json:"direct"`
	Network  Side   `json:"network"`
	// Ratio is network ÷ direct model tokens per second (eval_count over
	// wall time).
	Ratio float64 `json:"ratio"`
}

// Run runs every configured sweep and returns the report. It returns an
// error when the harness itself fails (a router that does not start,
// nodes that do not register), never because a target was missed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if len(cfg.Router) == 0 {
		return nil, fmt.Errorf("bench: no router command")
	}
	start := time.Now()
	rep := &Report{
		Command: cfg.Command,
		Started: start.UTC().Truncate(time.Second),
		Machine: machine(),
		Settings: Settings{
			DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), IntervalMS: ms(cfg.Interval),
			Tokens: cfg.Tokens, TokenBytes: cfg.TokenBytes, MaxRate: cfg.MaxRate,
			ThroughputTokens: cfg.ThroughputTokens, PerNode: cfg.PerNode, LoadGenProcs: cfg.LoadGenProcs,
		},
	}
	rep.Machine.FileLimit = raiseFileLimit()
	var err error
	if rep.Machine.Hop, err = measureHop(); err != nil {
		return nil, fmt.Errorf("bench: loopback round trip: %w", err)
	}
	b := &bencher{cfg: cfg, nk: &netKit{}}
	fake, err := startFake()
	if err != nil {
		return nil, err
	}
	defer fake.close()
	b.fake = fake

	if len(cfg.Nodes) > 0 {
		if rep.Nodes, err = b.nodeSweep(ctx); err != nil {
			return nil, err
		}
	}
	for _, w := range []struct {
		workload string
		streams  []int
	}{{WorkloadLatency, cfg.Peers}, {WorkloadThroughput, cfg.PeersMax}} {
		for _, m := range w.streams {
			p, err := b.peerPoint(ctx, w.workload, m)
			if err != nil {
				return nil, err
			}
			rep.Peers = append(rep.Peers, p)
		}
	}
	for _, m := range cfg.Streams {
		p, err := b.streamPoint(ctx, WorkloadLatency, m, nil)
		if err != nil {
			return nil, err
		}
		rep.Streams = append(rep.Streams, p)
	}
	for _, m := range cfg.Throughput {
		p, err := b.streamPoint(ctx, WorkloadThroughput, m, nil)
		if err != nil {
			return nil, err
		}
		q, err := b.streamPoint(ctx, WorkloadRelay, m, &p.Direct)
		if err != nil {
			return nil, err
		}
		rep.Throughput = append(rep.Throughput, p, q)
	}
	if cfg.OllamaURL != "" {
		if rep.Ollama, err = b.ollama(ctx); err != nil {
			return nil, err
		}
	}
	rep.Machine.LoadEnd = loadAvg()
	rep.Seconds = time.Since(start).Seconds()
	rep.Budget = Evaluate(rep)
	return rep, nil
}

type bencher struct {
	cfg  Config
	nk   *netKit
	fake *fakeOllama
	seq  int // distinguishes node ids between phases
}

func (b *bencher) logf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench: "+format+"\n", args...)
}

// nodeSweep connects idle nodes level by level to one router and samples
// its memory and goroutines at each level.
func (b *bencher) nodeSweep(ctx context.Context) (*NodeSweep, error) {
	levels := slices.Clone(b.cfg.Nodes)
	slices.Sort(levels)
	r, err := startRouter(ctx, b.cfg.Router, b.cfg.RouterEnv)
	if err != nil {
		return nil, err
	}
	defer r.stop()
	pool := newProtoPool(b.nk, r.url, false, wire.DefaultConcurrent)
	defer pool.close()
	if !sleepUntil(ctx, time.Now().Add(b.cfg.Settle)) {
		return nil, ctx.Err()
	}
	sw := &NodeSweep{BaseRSSMB: mb(r.rss())}
	if sw.BaseGoroutines, err = r.goroutines(ctx); err != nil {
		return nil, err
	}
	b.logf("idle nodes: router at rest: %.1f MB, %d goroutines", sw.BaseRSSMB, sw.BaseGoroutines)
	for _, n := range levels {
		more := n - pool.size()
		if more <= 0 {
			continue
		}
		t0, cpu0 := time.Now(), r.cpu()
		if err := pool.add(ctx, "idle", more, 32); err != nil {
			return nil, fmt.Errorf("idle nodes: %w", err)
		}
		if err := r.waitNodes(ctx, n, time.Minute); err != nil {
			return nil, err
		}
		p := NodePoint{Nodes: n, ConnectSeconds: time.Since(t0).Seconds(), ConnectCPUS: (r.cpu() - cpu0).Seconds()}
		if !sleepUntil(ctx, time.Now().Add(b.cfg.Settle)) {
			return nil, ctx.Err()
		}
		p.RSSMB = mb(r.rss())
		if p.Goroutines, err = r.goroutines(ctx); err != nil {
			return nil, err
		}
		p.RSSPerNodeKB = perUnit(p.RSSMB, sw.BaseRSSMB, n) * 1024
		p.GoroutinesPerNode = perUnit(float64(p.Goroutines), float64(sw.BaseGoroutines), n)
		sw.Points = append(sw.Points, p)
		b.logf("idle nodes: %d: %.1f MB (%.1f KB/node), %d goroutines, connected in %.1fs",
			n, p.RSSMB, p.RSSPerNodeKB, p.Goroutines, p.ConnectSeconds)
	}
	return sw, nil
}

// Workloads of a StreamPoint.
const (
	// WorkloadLatency: tokens at a steady rate, real node agents relaying
	// to the fake Ollama.
	WorkloadLatency = "latency"
	// WorkloadThroughput: tokens with no delay, real node agents relaying
	// to the fake Ollama.
	WorkloadThroughput = "throughput"
	// WorkloadRelay: tokens with no delay from protocol nodes that make
	// them themselves (see protoPool): the router's relay capacity.
	WorkloadRelay = "relay"
)

// streamPoint runs one workload at m concurrent streams directly against
// the fake Ollama (unless direct is given: the same workload measured
// before) and through a fresh router with enough nodes.
func (b *bencher) streamPoint(ctx context.Context, workload string, m int, direct *Side) (StreamPoint, error) {
	cfg := b.cfg
	p := StreamPoint{Workload: workload, Streams: m, TokenBytes: cfg.TokenBytes}
	var spec loadSpec
	switch workload {
	case WorkloadLatency:
		interval := cfg.Interval
		if cfg.MaxRate > 0 {
			interval = max(interval, time.Duration(float64(m)/float64(cfg.MaxRate)*float64(time.Second)))
		}
		p.Tokens, p.IntervalMS = cfg.Tokens, ms(interval)
		answer := time.Duration(cfg.Tokens) * interval
		spec = loadSpec{streams: m, stagger: answer, warmup: cfg.Warmup, duration: cfg.Duration, tail: 2*answer + 30*time.Second}
	default:
		p.Tokens = cfg.ThroughputTokens
		spec = loadSpec{streams: m, warmup: cfg.Warmup, duration: cfg.Duration, tail: time.Minute}
	}
	prompt := fakePrompt(p.Tokens, cfg.TokenBytes, time.Duration(p.IntervalMS*float64(time.Millisecond)))
	var arr *arrivals
	if workload == WorkloadLatency {
		// Tag the latency workload's requests to split their time to first
		// token (see arrivals); the no-delay workloads skip the cost.
		prompt += tagPlaceholder
		arr = &b.fake.arrivals
	}
	p.Nodes = (m+cfg.PerNode-1)/cfg.PerNode + 1

	if workload == WorkloadLatency && cfg.LoadGenProcs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(cfg.LoadGenProcs))
	}
	r, err := startRouter(ctx, cfg.Router, cfg.RouterEnv)
	if err != nil {
		return p, err
	}
	defer r.stop()
	b.seq++
	prefix := fmt.Sprintf("node%d", b.seq)
	if workload == WorkloadRelay {
		pool := newProtoPool(b.nk, r.url, true, cfg.PerNode)
		defer pool.close()
		if err := pool.add(ctx, prefix, p.Nodes, 32); err != nil {
			return p, err
		}
	} else {
		pool, err := startAgents(ctx, b.nk, r.url, b.fake.url, prefix, p.Nodes, cfg.PerNode)
		if err != nil {
			return p, err
		}
		defer pool.stop()
		if err := r.waitNodes(ctx, p.Nodes, 2*time.Minute); err != nil {
			return p, fmt.Errorf("%w (agents: %v)", err, pool.err())
		}
	}
	if err := r.waitNodes(ctx, p.Nodes, 2*time.Minute); err != nil {
		return p, err
	}
	if !sleepUntil(ctx, time.Now().Add(b.cfg.Settle)) {
		return p, ctx.Err()
	}
	p.RouterRSSIdleMB = mb(r.rss())
	if p.GoroutinesIdle, err = r.goroutines(ctx); err != nil {
		return p, err
	}

	if direct != nil {
		p.Direct = *direct
	} else {
		res, err := runLoad(ctx, b.nk, target{url: b.fake.url + "/api/chat", body: directBody(benchModel, prompt, nil), tokenBytes: cfg.TokenBytes, arrivals: arr}, spec, nil, nil)
		if err != nil {
			return p, err
		}
		p.Direct = res.side()
	}

	var cpu0, cpu1 time.Duration
	var stopPeak func() int64
	var peak int64
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	gDone := make(chan int, 1)
	open := func() {
		cpu0 = r.cpu()
		stopPeak = r.peakRSS()
		go func() {
			// Goroutines in the middle of the window.
			g := 0
			if sleepUntil(gctx, time.Now().Add(spec.duration/2)) {
				g, _ = r.goroutines(gctx)
			}
			gDone <- g
		}()
	}
	closeW := func() {
		cpu1 = r.cpu()
		peak = stopPeak()
	}
	network, err := runLoad(ctx, b.nk, target{url: r.url + "/api/chat", body: networkBody(benchModel, prompt, nil), sse: true, tokenBytes: cfg.TokenBytes, arrivals: arr}, spec, open, closeW)
	if err != nil {
		return p, err
	}
	p.Network = network.side()
	p.GoroutinesActive = <-gDone
	p.AddedTTFTP50MS = p.Network.TTFTP50MS - p.Direct.TTFTP50MS
	p.AddedTTFTP99MS = p.Network.TTFTP99MS - p.Direct.TTFTP99MS
	p.AddedITLP50MS = p.Network.ITLP50MS - p.Direct.ITLP50MS
	p.AddedITLP99MS = p.Network.ITLP99MS - p.Direct.ITLP99MS
	p.RouterCPUS = (cpu1 - cpu0).Seconds()
	if p.Network.Tokens > 0 {
		p.RouterCPUPerMTokens = p.RouterCPUS / float64(p.Network.Tokens) * 1e6
	}
	p.RouterRSSPeakMB = mb(peak)
	p.RSSPerStreamKB = perUnit(p.RouterRSSPeakMB, p.RouterRSSIdleMB, m) * 1024
	p.GoroutinesPerStream = perUnit(float64(p.GoroutinesActive), float64(p.GoroutinesIdle), m)
	b.logf("%s %d streams (%d nodes): TTFT p50 %.2f/%.2f ms, ITL p99 %.2f/%.2f ms, %.0f/%.0f tokens/s (direct/network), %d/%d errors, router %.2f CPU s/M tokens, %.0f MB",
		workload, m, p.Nodes, p.Direct.TTFTP50MS, p.Network.TTFTP50MS, p.Direct.ITLP99MS, p.Network.ITLP99MS,
		p.Direct.TokensPerSec, p.Network.TokensPerSec, p.Direct.Errors, p.Network.Errors, p.RouterCPUPerMTokens, p.RouterRSSPeakMB)
	return p, nil
}

// ollama compares a real Ollama directly and through the network: the same
// requests, alternating which path goes first in each round.
func (b *bencher) ollama(ctx context.Context) (*OllamaPoint, error) {
	cfg := b.cfg
	p := &OllamaPoint{URL: cfg.OllamaURL, Model: cfg.Model, Streams: cfg.OllamaStreams,
		Requests: cfg.OllamaRequests, Rounds: cfg.OllamaRounds, Predict: cfg.OllamaPredict}
	r, err := startRouter(ctx, cfg.Router, cfg.RouterEnv)
	if err != nil {
		return nil, err
	}
	defer r.stop()
	b.seq++
	pool, err := startAgents(ctx, b.nk, r.url, cfg.OllamaURL, fmt.Sprintf("ollama%d", b.seq), 1, cfg.OllamaStreams)
	if err != nil {
		return nil, err
	}
	defer pool.stop()
	if err := r.waitNodes(ctx, 1, time.Minute); err != nil {
		return nil, fmt.Errorf("%w (agent: %v)", err, pool.err())
	}
	opts := map[string]any{"temperature": 0, "seed": 42, "num_predict": cfg.OllamaPredict}
	const prompt = "Tell me a story about a little dog who finds a red ball in the park."
	direct := target{url: strings.TrimRight(cfg.OllamaURL, "/") + "/api/chat", body: directBody(cfg.Model, prompt, opts)}
	network := target{url: r.url + "/api/chat", body: networkBody(cfg.Model, prompt, opts), sse: true}

	// Load the model on both paths before measuring.
	warm := loadSpec{streams: 1, requests: 1, tail: 2 * time.Minute}
	for _, t := range []target{direct, network} {
		if _, err := runLoad(ctx, b.nk, t, warm, nil, nil); err != nil {
			return nil, err
		}
	}
	spec := loadSpec{streams: cfg.OllamaStreams, requests: cfg.OllamaRequests, tail: 10 * time.Minute}
	var d, n loadResult
	for round := range cfg.OllamaRounds {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, viaNetwork := range order {
			t, acc := direct, &d
			if viaNetwork {
				t, acc = network, &n
			}
			res, err := runLoad(ctx, b.nk, t, spec, nil, nil)
			if err != nil {
				return nil, err
			}
			acc.add(res)
		}
	}
	p.Direct, p.Network = d.side(), n.side()
	if p.Direct.Seconds > 0 && p.Network.Seconds > 0 && p.Direct.ModelTokens > 0 {
		p.Ratio = (float64(p.Network.ModelTokens) / p.Network.Seconds) / (float64(p.Direct.ModelTokens) / p.Direct.Seconds)
	}
	b.logf("real ollama (%s): %.0f model tokens/s direct, %.0f through the network (%.1f%%)",
		cfg.Model, float64(p.Direct.ModelTokens)/p.Direct.Seconds, float64(p.Network.ModelTokens)/p.Network.Seconds, 100*p.Ratio)
	return p, nil
}

// networkBody is a consumer's v1 chat request.
func networkBody(model, prompt string, options map[string]any) []byte {
	body := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": prompt}}}
	if options != nil {
		body["options"] = options
	}
	b, _ := json.Marshal(body)
	return b
}

// directBody is the Ollama request the router would have a node run for
// networkBody: the same safety prompt, keep_alive and options.
func directBody(model, prompt string, options map[string]any) []byte {
	body := map[string]any{
		"model": model,
		"messages": []map[string]string{
			{"role": "system", "content": dispatch.DefaultSystemPrompt},
			{"role": "user", "content": prompt},
		},
		"stream":     true,
		"keep_alive": "5m",
	}
	if options != nil {
		body["options"] = options
	}
	b, _ := json.Marshal(body)
	return b
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// machine describes this machine from /proc and the runtime.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGiB = float64(kb) / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
