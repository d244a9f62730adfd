package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/gateway"
)

// runGateway serves the fallback gateway until ctx is canceled: the
// user's own provider first, the IdleClaw network when its credit runs
// out (docs/gateway.md). Exit codes: 0 after a clean shutdown, 1 when it
// cannot listen, 2 for bad usage.
func runGateway(ctx context.Context, args []string, env Env, s Streams) int {
	f := newFlags("gateway", env, s.Stderr)
	listen := f.String("listen", "IDLECLAW_GATEWAY_LISTEN", "127.0.0.1:8787", "address to listen on (loopback: only this machine's programs spend your credit)")
	providerURL := f.String("provider-url", "IDLECLAW_PROVIDER_URL", "https://api.openai.com/v1", "your provider's OpenAI-compatible base URL; its key comes from IDLECLAW_PROVIDER_KEY, the config file or OPENAI_API_KEY, never a flag")
	network := f.String("network", "IDLECLAW_SERVER", DefaultServer, "the IdleClaw router to fall back to")
	mapping := f.String("map", "IDLECLAW_GATEWAY_MAP", "", "provider model=network model, comma-separated, e.g. gpt-4o-mini=llama3.2:3b,*=llama3.2:3b (default: a model the network serves keeps its name, others get the network's default model)")
	onRate := f.String("on-rate-limit", "IDLECLAW_ON_RATE_LIMIT", "retry", "on a rate limit: retry (wait Retry-After, up to --max-retry-wait, once) or fallback (to the network at once)")
	maxWait := f.Duration("max-retry-wait", "IDLECLAW_MAX_RETRY_WAIT", gateway.DefaultMaxRetryWait, "longest Retry-After waited before retrying; a longer one falls back")
	quotaCD := f.Duration("quota-cooldown", "IDLECLAW_QUOTA_COOLDOWN", time.Hour, "after the provider says the credit is gone, requests go to the network this long")
	probe := f.Duration("probe-every", "IDLECLAW_PROBE_EVERY", 10*time.Minute, "in a quota cooldown, one request per this period tries the provider, to come back when the credit does")
	errCD := f.Duration("error-cooldown", "IDLECLAW_ERROR_COOLDOWN", 30*time.Second, "after a 5xx, a timeout or a refused connection, requests go to the network this long (0: off)")
	headerTimeout := f.Duration("provider-timeout", "IDLECLAW_PROVIDER_TIMEOUT", gateway.DefaultHeaderTimeout, "time the provider (or the network) has to start its answer; a whole non-streamed answer counts")
	stall := f.Duration("stall-timeout", "IDLECLAW_STALL_TIMEOUT", gateway.DefaultStallTimeout, "longest silence inside an answer")
	total := f.Duration("timeout", "IDLECLAW_GATEWAY_TIMEOUT", gateway.DefaultTimeout, "time limit of a whole request")
	maxBody := f.Int("max-body-bytes", "IDLECLAW_MAX_BODY_BYTES", gateway.DefaultMaxBodyBytes, "largest request body")
	configFile := f.String("config", "IDLECLAW_GATEWAY_CONFIG", "", "JSON config file (docs/gateway.md); flags and environment override it")
	grace := f.Duration("shutdown-grace", "IDLECLAW_SHUTDOWN_GRACE", 10*time.Second, "time requests in flight get to end at shutdown")
	logFormat := f.String("log-format", "IDLECLAW_LOG_FORMAT", "text", "diagnostics format (stderr): text or json")
	logLevel := f.String("log-level", "IDLECLAW_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	bad := func(err error) int {
		fmt.Fprintln(s.Stderr, "idleclaw gateway:", err)
		return 2
	}
	if f.NArg() > 0 {
		return bad(fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	log, err := newLogger(s.Stderr, *logFormat, *logLevel)
	if err != nil {
		return bad(err)
	}
	// given: set by a flag or its environment twin, which beat the file.
	onCommandLine := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { onCommandLine[fl.Name] = true })
	given := func(name string) bool { return onCommandLine[name] || f.env(f.twins[name]) != "" }

	var file gateway.File
	if *configFile != "" {
		var warn string
		file, warn, err = gateway.LoadFile(*configFile)
		if err != nil {
			return bad(err)
		}
		if warn != "" {
			fmt.Fprintln(s.Stderr, "idleclaw gateway: warning:", warn)
		}
	}
	str := func(p *string, name string, from *string) {
		if from != nil && !given(name) {
			*p = *from
		}
	}
	dur := func(p *time.Duration, name string, from *gateway.Duration) {
		if from != nil && !given(name) {
			*p = time.Duration(*from)
		}
	}
	str(providerURL, "provider-url", file.ProviderURL)
	str(network, "network", file.Network)
	str(onRate, "on-rate-limit", file.OnRateLimit)
	dur(quotaCD, "quota-cooldown", file.QuotaCooldown)
	dur(probe, "probe-every", file.ProbeEvery)
	dur(errCD, "error-cooldown", file.ErrorCooldown)
	dur(maxWait, "max-retry-wait", file.MaxRetryWait)

	models := file.Models
	if given("map") || models == nil {
		if models, err = gateway.ParseModelMap(*mapping); err != nil {
			return bad(fmt.Errorf("invalid --map: %w", err))
		}
	}
	key, keyFrom := env("IDLECLAW_PROVIDER_KEY"), "IDLECLAW_PROVIDER_KEY"
	switch {
	case key != "":
	case file.ProviderKey != nil && *file.ProviderKey != "":
		key, keyFrom = *file.ProviderKey, *configFile
	case env("OPENAI_API_KEY") != "":
		key, keyFrom = env("OPENAI_API_KEY"), "OPENAI_API_KEY"
	default:
		keyFrom = ""
	}
	for name, v := range map[string]time.Duration{"quota-cooldown": *quotaCD, "probe-every": *probe, "provider-timeout": *headerTimeout,
		"stall-timeout": *stall, "timeout": *total, "max-retry-wait": *maxWait} {
		if v <= 0 {
			return bad(fmt.Errorf("invalid --%s %s: must be positive", name, v))
		}
	}
	if *errCD < 0 {
		return bad(fmt.Errorf("invalid --error-cooldown %s", *errCD))
	}
	if *maxBody <= 0 {
		return bad(fmt.Errorf("invalid --max-body-bytes %d: must be positive", *maxBody))
	}
	if samePlace(*providerURL, *listen) || samePlace(*network, *listen) {
		return bad(fmt.Errorf("the provider and the network must not be this gateway (%s)", *listen))
	}
	errCooldown := *errCD
	if errCooldown == 0 {
		errCooldown = -1
	}
	out := s.Stdout
	gw, err := gateway.New(gateway.Config{
		ProviderURL:   *providerURL,
		ProviderKey:   key,
		NetworkURL:    *network,
		Models:        models,
		OnRateLimit:   *onRate,
		MaxRetryWait:  *maxWait,
		Cooldowns:     gateway.Cooldowns{Quota: *quotaCD, ProbeEvery: *probe, Error: errCooldown},
		HeaderTimeout: *headerTimeout, StallTimeout: *stall, Timeout: *total,
		MaxBodyBytes: int64(*maxBody),
		HTTPClient:   &http.Client{Transport: upstreamTransport()},
		Out:          out,
		Logger:       log.With("component", "gateway"),
		UserAgent:    "idleclaw-gateway/" + Version,
	})
	if err != nil {
		return bad(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw gateway:", err)
		return 1
	}
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	base := "http://" + ln.Addr().String() + "/v1"
	fmt.Fprintf(out, "idleclaw gateway listening on %s\n", base)
	fmt.Fprintf(out, "  provider: %s (%s)\n", *providerURL, keySource(keyFrom))
	fmt.Fprintf(out, "  network:  %s\n", *network)
	fmt.Fprintf(out, "  models:   %s\n", describeMap(models))
	fmt.Fprintf(out, "  on a rate limit: %s; out of credit: the network for %s, a probe every %s\n", *onRate, *quotaCD, *probe)
	fmt.Fprintf(out, "  point your programs at it: OPENAI_BASE_URL=%s\n", base)
	if keyFrom == "" {
		fmt.Fprintln(s.Stderr, "idleclaw gateway: no provider key (IDLECLAW_PROVIDER_KEY, the config file or OPENAI_API_KEY): each client's own Authorization header goes to the provider")
	}
	if !loopback(ln.Addr()) {
		fmt.Fprintf(s.Stderr, "idleclaw gateway: warning: %s is not a loopback address: whoever reaches it spends your provider's credit\n", ln.Addr())
	}
	log.Info("gateway started", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintln(s.Stderr, "idleclaw gateway:", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("grace period over; ending open requests")
		_ = srv.Close()
	}
	<-errc
	log.Info("gateway stopped")
	return 0
}

func keySource(from string) string {
	if from == "" {
		return "no key of its own: the client's is passed on"
	}
	return "key from " + from
}

func describeMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "*" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		parts = append(parts, k+" -> "+m[k])
	}
	if d := m["*"]; d != "" {
		parts = append(parts, "others -> "+d)
	} else {
		parts = append(parts, "others -> the same name if the network serves it, else the network's default")
	}
	return strings.Join(parts, ", ")
}

// samePlace is whether base URL u points at the listen address.
func samePlace(u, listen string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "0" {
		return false
	}
	uport := pu.Port()
	if uport == "" {
		uport = map[string]string{"http": "80", "https": "443"}[pu.Scheme]
	}
	if uport != port {
		return false
	}
	uh := pu.Hostname()
	if host == "" || host == "0.0.0.0" || host == "::" {
		return uh == "localhost" || loopbackHost(uh)
	}
	return uh == host || (uh == "localhost" && loopbackHost(host))
}

func loopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// upstreamTransport is the client transport to the provider and the
// network: bounded dial and TLS handshake; the answers' own time limits
// are the gateway's.
func upstreamTransport() *http.Transport {
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ForceAttemptHTTP2:      true,
		MaxResponseHeaderBytes: 1 << 20,
	}
}
