package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/bench"
)

// startCPUProfile profiles this process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runBench measures the router's overhead, throughput and memory on this
// machine (internal/bench): the tables go to stdout, progress to stderr,
// JSON and PNG to the files named. Exit codes: 0 when the bench ran (a
// missed target is a figure, not a failure), 1 when the harness failed, 2
// for bad usage.
func runBench(ctx context.Context, args []string, env Env, s Streams) (code int) {
	def := bench.DefaultConfig()
	f := newFlags("bench", env, s.Stderr)
	quick := f.Bool("quick", "", false, "a run of a few seconds with tiny sweeps (the CI smoke test); the lists below still override")
	nodes := f.String("nodes", "", joinInts(def.Nodes), "idle-node counts to sweep, comma-separated (empty: skip)")
	streams := f.String("streams", "", joinInts(def.Streams), "concurrent streams of the latency workload (empty: skip)")
	through := f.String("throughput", "", joinInts(def.Throughput), "concurrent streams of the no-delay workloads, with real agents and with protocol nodes (empty: skip)")
	peers := f.String("peers", "", joinInts(def.Peers), "concurrent streams of the peers comparison at the latency workload's rate: direct, two-proxy floor and network interleaved (empty: skip)")
	peersMax := f.String("peers-max", "", joinInts(def.PeersMax), "concurrent streams of the peers comparison with no delay (maximum rate; empty: skip)")
	peerRounds := f.Int("peer-rounds", "", 1, "rounds of each peers point, the paths in a different order each round; figures are medians")
	duration := f.Duration("duration", "", 10*time.Second, "measured window of each phase")
	interval := f.Duration("interval", "", 20*time.Millisecond, "time between tokens of one stream in the latency workload")
	tokens := f.Int("tokens", "", 50, "tokens per answer in the latency workload")
	throughputTokens := f.Int("throughput-tokens", "", 200, "tokens per answer in the no-delay workloads")
	tokenBytes := f.Int("token-bytes", "", 4, "bytes per token")
	maxRate := f.Int("max-rate", "", 10_000, "tokens/s cap of the latency workload over all streams; past it the interval grows (negative: no cap)")
	procs := f.Int("loadgen-procs", "", 0, "GOMAXPROCS of the bench process during the latency workload (0: unchanged; the router is never affected)")
	ollamaURL := f.String("ollama", "", "", "a real Ollama to compare against, directly and through the network (empty: skip)")
	model := f.String("model", "", "stories", "the real Ollama's model")
	olStreams := f.Int("ollama-streams", "", 2, "concurrent consumers of the real-Ollama comparison")
	olRequests := f.Int("ollama-requests", "", 16, "requests per round on each path of the real-Ollama comparison")
	olRounds := f.Int("ollama-rounds", "", 4, "rounds of the real-Ollama comparison, alternating which path goes first")
	olPredict := f.Int("ollama-predict", "", 384, "num_predict of each request of the real-Ollama comparison")
	jsonOut := f.String("json", "", "", "write the results as JSON to this file")
	pngOut := f.String("png", "", "", "write the chart as PNG to this file")
	cpuProfile := f.String("cpuprofile", "", "", "write the bench process's own CPU profile (the load generator: fake Ollama, node agents, consumers) to this file")
	memProfile := f.String("memprofile", "", "", "write the bench process's own allocation profile (go tool pprof -sample_index=alloc_space) to this file when it ends")
	router := f.String("router", "IDLECLAW_BENCH_ROUTER", "", "command that runs the router, space-separated, before \"serve\" (default: this binary)")
	relay := f.String("relay", "", "", "command that runs the peers comparison's other relay processes (floor proxies, node agents), space-separated, before \"bench-relay\" (default: the router's)")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	bad := func(err error) int {
		fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
		return 2
	}
	if f.NArg() > 0 {
		return bad(fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	cfg := def
	if *quick {
		cfg = bench.QuickConfig()
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	lists := []struct {
		name string
		v    string
		dst  *[]int
	}{{"nodes", *nodes, &cfg.Nodes}, {"streams", *streams, &cfg.Streams}, {"throughput", *through, &cfg.Throughput},
		{"peers", *peers, &cfg.Peers}, {"peers-max", *peersMax, &cfg.PeersMax}}
	for _, l := range lists {
		if !set[l.name] {
			continue
		}
		v, err := parseInts(l.v)
		if err != nil {
			return bad(fmt.Errorf("--%s: %w", l.name, err))
		}
		*l.dst = v
	}
	if set["duration"] || !*quick {
		cfg.Duration = *duration
	}
	if set["interval"] || !*quick {
		cfg.Interval = *interval
	}
	if set["tokens"] || !*quick {
		cfg.Tokens = *tokens
	}
	cfg.TokenBytes, cfg.MaxRate, cfg.LoadGenProcs = *tokenBytes, *maxRate, *procs
	if *peerRounds < 1 {
		return bad(errors.New("--peer-rounds must be positive"))
	}
	cfg.PeerRounds = *peerRounds
	if set["throughput-tokens"] {
		if *throughputTokens < 1 {
			return bad(errors.New("--throughput-tokens must be positive"))
		}
		cfg.ThroughputTokens = *throughputTokens
	}
	switch {
	case cfg.Duration <= 0:
		return bad(errors.New("--duration must be positive"))
	case cfg.Interval < 0:
		return bad(errors.New("--interval must not be negative"))
	case cfg.Tokens < 1 || cfg.TokenBytes < 1 || cfg.TokenBytes > 1<<16:
		return bad(errors.New("--tokens and --token-bytes must be positive (--token-bytes at most 65536)"))
	case cfg.MaxRate == 0:
		return bad(errors.New("--max-rate must not be 0"))
	}
	for _, o := range []struct {
		name string
		v    int
		dst  *int
	}{{"ollama-streams", *olStreams, &cfg.OllamaStreams}, {"ollama-requests", *olRequests, &cfg.OllamaRequests},
		{"ollama-rounds", *olRounds, &cfg.OllamaRounds}, {"ollama-predict", *olPredict, &cfg.OllamaPredict}} {
		if o.v < 1 {
			return bad(fmt.Errorf("--%s must be positive", o.name))
		}
		if set[o.name] || !*quick {
			*o.dst = o.v
		}
	}
	if *ollamaURL != "" {
		if err := checkHTTPURL("ollama", *ollamaURL); err != nil {
			return bad(err)
		}
		cfg.OllamaURL, cfg.Model = *ollamaURL, *model
	}
	if *router != "" {
		cfg.Router = strings.Fields(*router)
	} else {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw bench: cannot find this binary to run the router:", err)
			return 1
		}
		cfg.Router = []string{exe}
	}
	if *relay != "" {
		cfg.Relay = strings.Fields(*relay)
	}
	cfg.Command = strings.TrimSpace("idleclaw bench " + strings.Join(args, " "))
	cfg.Progress = s.Stderr

	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
			return 1
		}
		defer stop()
	}
	if *memProfile != "" {
		write, err := openMemProfile(*memProfile)
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
			return 1
		}
		// Last, whatever happened, so that a failure here loses none of
		// the results written before it.
		defer func() {
			if err := write(); err != nil {
				fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
				code = max(code, 1)
			}
		}()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
		return 1
	}
	if err := bench.WriteText(s.Stdout, rep); err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
		return 1
	}
	if *jsonOut != "" {
		if err := writeFile(*jsonOut, func(w *os.File) error { return bench.WriteJSON(w, rep) }); err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
			return 1
		}
	}
	if *pngOut != "" {
		if err := writeFile(*pngOut, func(w *os.File) error { return bench.WritePNG(w, rep) }); err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw bench:", err)
			return 1
		}
	}
	return 0
}

// openMemProfile creates path now, so that a bad path fails before the
// run, and returns the function that writes the allocation profile into
// it (and closes it) when the run is over.
func openMemProfile(path string) (write func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("memory profile: %w", err)
	}
	return func() error {
		runtime.GC() // the profile is as of the last collection: make it this moment
		err := pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("memory profile: %w", err)
		}
		return nil
	}, nil
}

func writeFile(path string, write func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// parseInts parses "10,100,1000" (empty: none).
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// runBenchRelay is the peers comparison's child process (`idleclaw
// bench-relay`, started by `idleclaw bench`, not a user command): a floor
// proxy or the node agents (bench.RunRelay).
func runBenchRelay(ctx context.Context, args []string, _ Env, s Streams) int {
	if err := bench.RunRelay(ctx, args, s.Stdout); err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw bench-relay:", err)
		return 1
	}
	return 0
}
