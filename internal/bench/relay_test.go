package bench

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/server"
)

// inProcessRouter is hub + dispatch + server wired as `idleclaw serve`
// wires them with the bench's flags (every per-IP and response limit off),
// on an httptest listener: for profiling the relay with go test
// -cpuprofile, where a child process would hide it.
func inProcessRouter(tb testing.TB) string {
	tb.Helper()
	outbound, err := filter.NewOutbound(filter.DefaultOutboundPatterns())
	if err != nil {
		tb.Fatal(err)
	}
	inbound, err := filter.NewInbound(filter.DefaultInboundPatterns())
	if err != nil {
		tb.Fatal(err)
	}
	h := hub.New(hub.Config{MaxNodesPerIP: -1})
	d := dispatch.New(dispatch.Config{MaxResponseChars: -1, ResponseTimeout: -1, Outbound: outbound}, h)
	def := server.DefaultConfig()
	api := server.New(server.Config{
		MaxMessages: def.MaxMessages, MaxMessageLength: def.MaxMessageLength, MaxTotalChars: def.MaxTotalChars,
		MaxBodyBytes: def.MaxBodyBytes, Inbound: inbound,
	}, h, d, nil)
	ts := httptest.NewServer(api)
	tb.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return ts.URL
}

// BenchmarkRelay relays answers of 1000 four-byte tokens with no delay
// from real node agents through an in-process router to 32 concurrent
// consumers: the throughput workload of `idleclaw bench`, in one process so
// that a CPU profile shows the router's share. One op is one token.
//
//	go test -run '^$' -bench Relay -benchtime 300000x -cpuprofile cpu.out ./internal/bench/
//	go tool pprof -top -focus 'internal/(hub|dispatch|server|filter|tools|wire)' cpu.out
func BenchmarkRelay(b *testing.B) {
	const streams, tokens, perNode = 32, 200, 10
	fake, err := startFake()
	if err != nil {
		b.Fatal(err)
	}
	defer fake.close()
	url := inProcessRouter(b)
	nk := &netKit{}
	nodes := streams/perNode + 1
	pool, err := startAgents(context.Background(), nk, url, fake.url, "relay", nodes, perNode)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.stop()
	waitInProcess(b, url, nodes)

	prompt := fakePrompt(tokens, 4, 0)
	requests := max(1, b.N/tokens)
	b.ResetTimer()
	res, err := runLoad(context.Background(), nk, target{url: url + "/api/chat", body: networkBody(benchModel, prompt, nil), sse: true},
		loadSpec{streams: streams, requests: requests, tail: 10 * time.Minute}, nil, nil)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	s := res.side()
	if s.Errors > 0 {
		b.Errorf("%d requests failed", s.Errors)
	}
	b.ReportMetric(s.TokensPerSec, "tokens/s")
}

// TestRouterHelper is a router for `idleclaw bench --router` built from the
// test binary, so that the router process can be profiled under the
// bench's real workloads:
//
//	go test -c -o bench.test ./internal/bench/
//	idleclaw bench --router "./bench.test -test.run=^TestRouterHelper$ -test.cpuprofile=router.prof --" ...
//	go tool pprof -top bench.test router.prof
//
// It runs only when "serve" follows "--" on its command line; with
// "bench-relay" there it is the peers comparison's relay child (RunRelay).
func TestRouterHelper(t *testing.T) {
	if len(flag.Args()) > 0 && flag.Args()[0] == "bench-relay" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := RunRelay(ctx, flag.Args()[1:], os.Stdout); err != nil {
			t.Fatal(err)
		}
		return
	}
	if len(flag.Args()) == 0 || flag.Args()[0] != "serve" {
		t.Skip("helper process for `idleclaw bench --router`")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	url := inProcessRouter(t)
	fmt.Printf("idleclaw router listening on %s\n", url)
	<-ctx.Done()
}

func waitInProcess(tb testing.TB, url string, n int) {
	tb.Helper()
	r := &routerProc{url: url, exited: make(chan struct{}), stderr: &tail{max: 1}, client: httpClientForTest()}
	if err := r.waitNodes(context.Background(), n, time.Minute); err != nil {
		tb.Fatal(fmt.Errorf("in-process router: %w", err))
	}
}

func httpClientForTest() *http.Client { return &http.Client{Timeout: 10 * time.Second} }
