package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// The peers comparison (issue 18): the same NDJSON workload, interleaved in
// one run, directly against the fake Ollama, through the floor of any
// two-hop relay (two plain Go reverse proxies in a chain, each a process of
// its own) and through the network (the router and the node agents, the
// agents in one process of their own), so that the relay processes' CPU is
// measured on both relayed paths and nothing else is.

// Paths of a peer point.
const (
	PathDirect  = "direct"
	PathFloor   = "floor"
	PathNetwork = "network"
)

// PeerPoint is one workload at one number of streams on the three paths,
// the figures being medians over the rounds.
type PeerPoint struct {
	Workload   string   `json:"workload"` // WorkloadLatency or WorkloadThroughput
	Streams    int      `json:"streams"`
	Nodes      int      `json:"nodes"`
	Tokens     int      `json:"tokens"`
	IntervalMS float64  `json:"interval_ms"`
	Rounds     int      `json:"rounds"`
	Direct     Side     `json:"direct"` // the median round's direct side (by tokens/s)
	Floor      PeerPath `json:"floor"`
	Network    PeerPath `json:"network"`
}

// PeerPath is one relayed path of a peer point: what it adds over direct,
// round by round, and the relay processes' CPU per token. Figures are
// medians over the rounds.
type PeerPath struct {
	AddedTTFTP50MS float64 `json:"added_ttft_p50_ms"`
	AddedTTFTP99MS float64 `json:"added_ttft_p99_ms"`
	AddedITLP99MS  float64 `json:"added_itl_p99_ms"`
	// CPUPerMTokens: CPU seconds of the relay processes (floor: both
	// proxies; network: router and agents) over the window, per million
	// tokens delivered in it.
	CPUPerMTokens float64 `json:"relay_cpu_s_per_m_tokens"`
	TokensPerSec  float64 `json:"tokens_per_s"`
	Errors        int     `json:"errors"`
	Side          Side    `json:"side"` // the median round by tokens/s
}

// relayProc is a child process of the bench other than the router: a
// floor proxy or the agents.
type relayProc = routerProc

// startRelay runs command with "bench-relay" and args, and waits for its
// listening line.
func startRelay(ctx context.Context, command []string, args ...string) (*relayProc, error) {
	return startProc(ctx, "relay "+args[0], command, nil, append([]string{"bench-relay"}, args...))
}

// peerSetup is one point's relay processes.
type peerSetup struct {
	proxies []*relayProc // proxies[0] is the consumers' end
	router  *routerProc
	agents  *relayProc
}

func (s *peerSetup) stop() {
	for _, p := range s.proxies {
		p.stop()
	}
	if s.agents != nil {
		s.agents.stop()
	}
	if s.router != nil {
		s.router.stop()
	}
}

func cpuOf(ps ...*routerProc) time.Duration {
	var t time.Duration
	for _, p := range ps {
		t += p.cpu()
	}
	return t
}

// peerPoint runs one workload at m streams on the three paths, rounds
// times, each round in a different order.
func (b *bencher) peerPoint(ctx context.Context, workload string, m int) (PeerPoint, error) {
	cfg := b.cfg
	p := PeerPoint{Workload: workload, Streams: m, Rounds: cfg.PeerRounds}
	var spec loadSpec
	if workload == WorkloadLatency {
		interval := cfg.Interval
		if cfg.MaxRate > 0 {
			interval = max(interval, time.Duration(float64(m)/float64(cfg.MaxRate)*float64(time.Second)))
		}
		p.Tokens, p.IntervalMS = cfg.Tokens, ms(interval)
		answer := time.Duration(cfg.Tokens) * interval
		spec = loadSpec{streams: m, stagger: answer, warmup: cfg.Warmup, duration: cfg.Duration, tail: 2*answer + 30*time.Second}
	} else {
		p.Tokens = cfg.ThroughputTokens
		spec = loadSpec{streams: m, warmup: cfg.Warmup, duration: cfg.Duration, tail: time.Minute}
	}
	prompt := fakePrompt(p.Tokens, cfg.TokenBytes, time.Duration(p.IntervalMS*float64(time.Millisecond)))
	p.Nodes = (m+cfg.PerNode-1)/cfg.PerNode + 1

	s := &peerSetup{}
	defer s.stop()
	upstream := b.fake.url
	for range 2 {
		px, err := startRelay(ctx, cfg.Relay, "proxy", upstream)
		if err != nil {
			return p, err
		}
		s.proxies = append([]*relayProc{px}, s.proxies...)
		upstream = px.url
	}
	r, err := startRouter(ctx, cfg.Router, cfg.RouterEnv)
	if err != nil {
		return p, err
	}
	s.router = r
	b.seq++
	if s.agents, err = startRelay(ctx, cfg.Relay, "agents", r.url, b.fake.url, fmt.Sprintf("peer%d", b.seq),
		strconv.Itoa(p.Nodes), strconv.Itoa(cfg.PerNode)); err != nil {
		return p, err
	}
	if err := r.waitNodes(ctx, p.Nodes, 2*time.Minute); err != nil {
		return p, err
	}
	if !sleepUntil(ctx, time.Now().Add(cfg.Settle)) {
		return p, ctx.Err()
	}

	ollamaBody := func(model, prompt string) []byte {
		b, _ := json.Marshal(map[string]any{"model": model, "stream": true,
			"messages": []map[string]string{{"role": "user", "content": prompt}}})
		return b
	}
	paths := []struct {
		name  string
		tgt   target
		procs []*routerProc
	}{
		{PathDirect, target{url: b.fake.url + "/api/chat", body: directBody(benchModel, prompt, nil), tokenBytes: cfg.TokenBytes}, nil},
		{PathFloor, target{url: s.proxies[0].url + "/api/chat", body: directBody(benchModel, prompt, nil), tokenBytes: cfg.TokenBytes}, s.proxies},
		// The router's Ollama-compatible endpoint: NDJSON to the consumer,
		// as on the two other paths.
		{PathNetwork, target{url: r.url + "/ollama/api/chat", body: ollamaBody(benchModel, prompt), tokenBytes: cfg.TokenBytes}, []*routerProc{r, s.agents}},
	}
	type run struct {
		side Side
		cpu  float64 // s per M tokens
	}
	runs := map[string][]run{}
	for round := range cfg.PeerRounds {
		for k := range paths {
			pa := paths[(k+round)%len(paths)]
			var c0, c1 time.Duration
			res, err := runLoad(ctx, b.nk, pa.tgt, spec, func() { c0 = cpuOf(pa.procs...) }, func() { c1 = cpuOf(pa.procs...) })
			if err != nil {
				return p, fmt.Errorf("peers %s %d streams, %s: %w", workload, m, pa.name, err)
			}
			ru := run{side: res.side()}
			if ru.side.Tokens > 0 {
				ru.cpu = (c1 - c0).Seconds() / float64(ru.side.Tokens) * 1e6
			}
			runs[pa.name] = append(runs[pa.name], ru)
		}
	}
	med := func(f func(i int) float64) float64 {
		v := make([]float64, cfg.PeerRounds)
		for i := range v {
			v[i] = f(i)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	medianSide := func(rs []run) Side {
		sides := make([]Side, len(rs))
		for i, r := range rs {
			sides[i] = r.side
		}
		slices.SortFunc(sides, func(a, b Side) int {
			switch {
			case a.TokensPerSec < b.TokensPerSec:
				return -1
			case a.TokensPerSec > b.TokensPerSec:
				return 1
			}
			return 0
		})
		return sides[len(sides)/2]
	}
	d := runs[PathDirect]
	p.Direct = medianSide(d)
	path := func(name string) PeerPath {
		rs := runs[name]
		pp := PeerPath{
			AddedTTFTP50MS: med(func(i int) float64 { return rs[i].side.TTFTP50MS - d[i].side.TTFTP50MS }),
			AddedTTFTP99MS: med(func(i int) float64 { return rs[i].side.TTFTP99MS - d[i].side.TTFTP99MS }),
			AddedITLP99MS:  med(func(i int) float64 { return rs[i].side.ITLP99MS - d[i].side.ITLP99MS }),
			CPUPerMTokens:  med(func(i int) float64 { return rs[i].cpu }),
			TokensPerSec:   med(func(i int) float64 { return rs[i].side.TokensPerSec }),
			Side:           medianSide(rs),
		}
		for _, r := range rs {
			pp.Errors += r.side.Errors
		}
		return pp
	}
	p.Floor, p.Network = path(PathFloor), path(PathNetwork)
	if p.Floor.Errors > 0 {
		for _, px := range s.proxies {
			b.logf("peers: floor proxy's last words: %s", px.stderr.String())
		}
	}
	b.logf("peers %s %d streams: added TTFT p50 %+.2f/%+.2f, p99 %+.2f/%+.2f, ITL p99 %+.2f/%+.2f ms, relay CPU %.1f/%.1f s/M tokens, %.0f/%.0f tokens/s (floor/network; direct %.0f)",
		workload, m, p.Floor.AddedTTFTP50MS, p.Network.AddedTTFTP50MS, p.Floor.AddedTTFTP99MS, p.Network.AddedTTFTP99MS,
		p.Floor.AddedITLP99MS, p.Network.AddedITLP99MS, p.Floor.CPUPerMTokens, p.Network.CPUPerMTokens,
		p.Floor.TokensPerSec, p.Network.TokensPerSec, p.Direct.TokensPerSec)
	return p, nil
}

// RunRelay is the child side of the peers comparison (`idleclaw
// bench-relay`, not a user command):
//
//	proxy TARGET                          a plain reverse proxy to TARGET
//	agents ROUTER OLLAMA PREFIX N PER     N node agents (max_concurrent PER)
//
// Each prints a line with "listening on http://ADDR" when ready (agents:
// the router's address) and runs until ctx ends.
func RunRelay(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("bench-relay: no mode")
	}
	switch args[0] {
	case "proxy":
		if len(args) != 2 {
			return errors.New("bench-relay proxy: want TARGET")
		}
		u, err := url.Parse(args[1])
		if err != nil {
			return fmt.Errorf("bench-relay proxy: %w", err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.FlushInterval = -1
		rp.Transport = &http.Transport{MaxIdleConnsPerHost: 4096, MaxIdleConns: 4096, DisableCompression: true}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("bench-relay proxy: %w", err)
		}
		srv := &http.Server{Handler: rp, ReadHeaderTimeout: time.Minute}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		fmt.Fprintf(stdout, "bench proxy listening on http://%s\n", ln.Addr())
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("bench-relay proxy: %w", err)
		}
		return nil
	case "agents":
		if len(args) != 6 {
			return errors.New("bench-relay agents: want ROUTER OLLAMA PREFIX N PER")
		}
		n, err1 := strconv.Atoi(args[4])
		per, err2 := strconv.Atoi(args[5])
		if err := errors.Join(err1, err2); err != nil || n < 1 || per < 1 {
			return fmt.Errorf("bench-relay agents: bad N or PER: %v", err)
		}
		pool, err := startAgents(ctx, &netKit{}, args[1], args[2], args[3], n, per)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bench agents listening on %s\n", args[1])
		<-ctx.Done()
		pool.stop()
		return nil
	}
	return fmt.Errorf("bench-relay: unknown mode %q", args[0])
}

// peersTable writes the peers comparison: what floor and network add over
// direct, the relay processes' CPU per token, throughput, and network ÷
// floor for each.
func peersTable(w io.Writer, ps []PeerPoint) {
	ratio := func(n, f float64) string {
		if f == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", n/f)
	}
	fmt.Fprintln(w, "workload\tstreams\tms/token\tpath\tTTFT p50 +ms\tTTFT p99 +ms\tITL p99 +ms\trelay CPU s/M tokens\ttokens/s\terrors\t")
	for _, p := range ps {
		fmt.Fprintf(w, "%s\t%d\t%.0f\tdirect\t%.2f\t%.2f\t%.2f\t-\t%s\t%d\t\n", p.Workload, p.Streams, p.IntervalMS,
			p.Direct.TTFTP50MS, p.Direct.TTFTP99MS, p.Direct.ITLP99MS, thousands(p.Direct.TokensPerSec), p.Direct.Errors)
		for _, x := range []struct {
			name string
			pp   PeerPath
		}{{PathFloor, p.Floor}, {PathNetwork, p.Network}} {
			fmt.Fprintf(w, "\t\t\t%s\t%+.2f\t%+.2f\t%+.2f\t%.1f\t%s\t%d\t\n", x.name,
				x.pp.AddedTTFTP50MS, x.pp.AddedTTFTP99MS, x.pp.AddedITLP99MS, x.pp.CPUPerMTokens, thousands(x.pp.TokensPerSec), x.pp.Errors)
		}
		f, n := p.Floor, p.Network
		fmt.Fprintf(w, "\t\t\tnetwork ÷ floor\t%s\t%s\t%s\t%s\t%s\t\t\n",
			ratio(n.AddedTTFTP50MS, f.AddedTTFTP50MS), ratio(n.AddedTTFTP99MS, f.AddedTTFTP99MS), ratio(n.AddedITLP99MS, f.AddedITLP99MS),
			ratio(n.CPUPerMTokens, f.CPUPerMTokens), ratio(n.TokensPerSec, f.TokensPerSec))
	}
}
