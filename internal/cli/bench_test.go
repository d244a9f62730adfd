package cli

import (
	"context"
	"encoding/json"
	"flag"
	"image/png"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/bench"
)

// TestBenchHelperRouter is the router process of TestBenchQuick: the test
// binary re-executed as `idleclaw serve` (the bench runs the router as a
// separate process so that its CPU and memory are its own). It runs only
// when "serve" follows "--" on its command line; with "bench-relay" there it
// is one of the peers comparison's other relay processes.
func TestBenchHelperRouter(t *testing.T) {
	args := flag.Args()
	if len(args) == 0 || (args[0] != "serve" && args[0] != "bench-relay") {
		t.Skip("helper process for TestBenchQuick")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, args, os.Getenv, Streams{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}

// TestBenchQuick is the CI smoke test of `idleclaw bench --quick`: it
// checks that a short run produces well-formed results, never how fast
// anything was.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a router and nodes for several seconds")
	}
	dir := t.TempDir()
	jsonPath, pngPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.png")
	profPath := filepath.Join(dir, "loadgen.prof")
	memPath := filepath.Join(dir, "loadgen.mem")
	router := os.Args[0] + " -test.run=^TestBenchHelperRouter$ --"
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"bench", "--quick", "--duration", "500ms", "--json", jsonPath, "--png", pngPath, "--memprofile", memPath}
	// The process holds one CPU profile at a time: when the test binary is
	// profiled itself (go test -cpuprofile), --cpuprofile cannot be checked.
	profiled := flag.Lookup("test.cpuprofile") != nil && flag.Lookup("test.cpuprofile").Value.String() != ""
	if !profiled {
		args = append(args, "--cpuprofile", profPath)
	}
	code := Run(ctx, args,
		func(k string) string {
			if k == "IDLECLAW_BENCH_ROUTER" {
				return router
			}
			return ""
		}, Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"idle nodes", "latency workload", "no-delay workloads", "budget", "relay throughput", "time to first token, split", "peers:", "network ÷ floor"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}

	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	q := bench.QuickConfig()
	if rep.Nodes == nil || len(rep.Nodes.Points) != len(q.Nodes) {
		t.Fatalf("node sweep: %+v", rep.Nodes)
	}
	for i, p := range rep.Nodes.Points {
		if p.Nodes != q.Nodes[i] || p.RSSMB <= 0 || p.Goroutines <= 0 {
			t.Errorf("node point %d: %+v", i, p)
		}
	}
	if len(rep.Streams) != len(q.Streams) {
		t.Fatalf("stream sweep: %d points, want %d", len(rep.Streams), len(q.Streams))
	}
	for _, p := range rep.Streams {
		for _, side := range []bench.Side{p.Direct, p.Network} {
			if side.TTFTInP50MS <= 0 || side.TTFTBackP50MS <= 0 || side.TTFTInP50MS >= side.TTFTP50MS || side.TTFTInP99MS < side.TTFTInP50MS {
				t.Errorf("%d streams: time to first token not split: %+v", p.Streams, side)
			}
		}
	}
	if prof, err := os.ReadFile(profPath); !profiled && (err != nil || len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b) {
		t.Errorf("--cpuprofile wrote no gzipped profile: %d bytes, %v", len(prof), err)
	}
	if prof, err := os.ReadFile(memPath); err != nil || len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Errorf("--memprofile wrote no gzipped profile: %d bytes, %v", len(prof), err)
	}
	if len(rep.Throughput) != 2*len(q.Throughput) {
		t.Fatalf("no-delay workloads: %d points, want %d", len(rep.Throughput), 2*len(q.Throughput))
	}
	for _, p := range append(rep.Streams, rep.Throughput...) {
		if p.Network.Tokens == 0 || p.Direct.Tokens == 0 || p.Network.Requests == 0 {
			t.Errorf("%s at %d streams measured nothing: %+v", p.Workload, p.Streams, p)
		}
		if p.Network.Errors != 0 || p.Direct.Errors != 0 {
			t.Errorf("%s at %d streams: errors %d direct, %d network", p.Workload, p.Streams, p.Direct.Errors, p.Network.Errors)
		}
		if p.RouterRSSPeakMB <= 0 || p.GoroutinesActive <= 0 {
			t.Errorf("%s at %d streams: router not sampled: %+v", p.Workload, p.Streams, p)
		}
	}
	if len(rep.Peers) != len(q.Peers)+len(q.PeersMax) {
		t.Fatalf("peers: %d points, want %d", len(rep.Peers), len(q.Peers)+len(q.PeersMax))
	}
	for _, p := range rep.Peers {
		if p.Direct.Tokens == 0 || p.Direct.Errors != 0 {
			t.Errorf("peers %s at %d streams, direct: %+v", p.Workload, p.Streams, p.Direct)
		}
		for name, pp := range map[string]bench.PeerPath{"floor": p.Floor, "network": p.Network} {
			if pp.Side.Tokens == 0 || pp.Side.Requests == 0 || pp.CPUPerMTokens <= 0 || pp.TokensPerSec <= 0 {
				t.Errorf("peers %s at %d streams, %s measured nothing: %+v", p.Workload, p.Streams, name, pp)
			}
		}
		if p.Network.Errors != 0 {
			t.Errorf("peers %s at %d streams: %d network errors", p.Workload, p.Streams, p.Network.Errors)
		}
	}
	if len(rep.Budget) == 0 {
		t.Error("no budget checks")
	}
	for _, c := range rep.Budget {
		switch c.Status {
		case "pass", "miss", "info", "not run":
		default:
			t.Errorf("budget check %q: status %q", c.Figure, c.Status)
		}
	}

	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 600 || r.Dy() < 400 {
		t.Errorf("chart is %v", r)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--nodes", "10,x"},
		{"bench", "--duration", "0s"},
		{"bench", "--ollama", "localhost:11434"},
		{"bench", "extra"},
		{"bench", "--ollama-rounds", "0"},
		{"bench", "--max-rate", "0"},
	} {
		var out, errOut syncBuffer
		if code := Run(context.Background(), args, noEnv, Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut}); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errOut.String())
		}
	}
}

// TestBenchProfilePathsFailFirst checks that a profile that cannot be
// written stops the bench before it runs, not after minutes of measuring.
// TestBenchMemProfileSurvivesAFailedOutput: when writing a result fails
// (here the JSON file), the memory profile is still written.
func TestBenchMemProfileSurvivesAFailedOutput(t *testing.T) {
	dir := t.TempDir()
	memPath := filepath.Join(dir, "mem.prof")
	var out, errOut syncBuffer
	code := Run(context.Background(), []string{"bench", "--nodes", "", "--streams", "", "--throughput", "", "--peers", "", "--peers-max", "",
		"--json", filepath.Join(dir, "no-such-dir", "b.json"), "--memprofile", memPath}, noEnv,
		Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	if code != 1 || !strings.Contains(errOut.String(), "b.json") {
		t.Fatalf("exit %d, stderr %q; want 1 and the JSON file's error", code, errOut.String())
	}
	prof, err := os.ReadFile(memPath)
	if err != nil || len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Errorf("--memprofile after a failed --json: %d bytes, %v; want a gzipped profile", len(prof), err)
	}
}

func TestBenchProfilePathsFailFirst(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "no-such-dir", "p.prof")
	for _, flag := range []string{"--memprofile", "--cpuprofile"} {
		var out, errOut syncBuffer
		code := Run(context.Background(), []string{"bench", "--quick", flag, bad}, noEnv,
			Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
		// One line on stderr: the error, and no progress of a run.
		if code != 1 || !strings.Contains(errOut.String(), "profile") || strings.Count(errOut.String(), "\n") != 1 || out.String() != "" {
			t.Errorf("%s to a missing directory: exit %d, stdout %q, stderr %q; want 1, nothing, one profile error", flag, code, out.String(), errOut.String())
		}
	}
}
