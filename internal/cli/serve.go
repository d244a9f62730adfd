package cli

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idleclaw/idleclaw/internal/canary"
	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/nodedb"
	"github.com/idleclaw/idleclaw/internal/server"
	"github.com/idleclaw/idleclaw/internal/tools"
	"github.com/idleclaw/idleclaw/internal/web"
	"github.com/idleclaw/idleclaw/internal/wire"
)

func runServe(ctx context.Context, args []string, env Env, s Streams) int {
	def := server.DefaultConfig()
	f := newFlags("serve", env, s.Stderr)
	listen := f.String("listen", "IDLECLAW_LISTEN", "127.0.0.1:8000", "address to listen on (put a TLS reverse proxy in front)")
	chatRPM := f.Int("rate-limit-chat-rpm", "IDLECLAW_RATE_LIMIT_CHAT_RPM", def.RateChatRPM, "chat requests per minute per client IP (0: off)")
	wsRPM := f.Int("rate-limit-ws-rpm", "IDLECLAW_RATE_LIMIT_WS_RPM", def.RateWSRPM, "node connections per minute per IP (0: off)")
	defRPM := f.Int("rate-limit-default-rpm", "IDLECLAW_RATE_LIMIT_DEFAULT_RPM", def.RateDefaultRPM, "other requests per minute per client IP (0: off)")
	conc := f.Int("max-concurrent-chat-per-ip", "IDLECLAW_MAX_CONCURRENT_CHAT_PER_IP", def.MaxConcurrentChatPerIP, "concurrent chat streams per client IP (0: off)")
	nodesPerIP := f.Int("max-nodes-per-ip", "IDLECLAW_MAX_NODES_PER_IP", 3, "registered nodes per IP (0: off)")
	maxMsgs := f.Int("max-messages", "IDLECLAW_MAX_MESSAGES", def.MaxMessages, "messages per chat request (0: off)")
	maxLen := f.Int("max-message-length", "IDLECLAW_MAX_MESSAGE_LENGTH", def.MaxMessageLength, "characters per message (0: off)")
	maxTotal := f.Int("max-total-chars", "IDLECLAW_MAX_TOTAL_CHARS", def.MaxTotalChars, "characters per chat request (0: off)")
	maxResp := f.Int("max-response-chars", "IDLECLAW_MAX_RESPONSE_CHARS", 4096, "characters of answer per request (0: off)")
	respTimeout := f.Duration("response-timeout", "IDLECLAW_RESPONSE_TIMEOUT", 120*time.Second, "time limit for a whole answer (0: off)")
	maxHistory := f.Int("max-history", "IDLECLAW_MAX_HISTORY", 20, "messages of the conversation sent to the node")
	system := f.String("system-prompt", "IDLECLAW_SYSTEM_PROMPT", dispatch.DefaultSystemPrompt, "safety system prompt placed first in every conversation (\"-\": none)")
	keepAlive := f.String("keep-alive", "IDLECLAW_KEEP_ALIVE", "5m", "Ollama keep_alive sent with each request")
	searx := f.String("searxng-url", "IDLECLAW_SEARXNG_URL", "", "SearXNG base URL; enables the server-side web_search tool")
	toolRPM := f.Int("tool-calls-per-minute", "IDLECLAW_TOOL_CALLS_PER_MINUTE", 20, "web_search calls per node per minute")
	toolRounds := f.Int("max-tool-rounds", "IDLECLAW_MAX_TOOL_ROUNDS", 5, "tool rounds per request")
	toolTimeout := f.Duration("tool-timeout", "IDLECLAW_TOOL_TIMEOUT", 15*time.Second, "time limit of one web_search call")
	adminToken := f.String("admin-token", "IDLECLAW_ADMIN_TOKEN", "", "bearer token for /admin/nodes (empty: /admin always answers 401)")
	proxies := f.String("trusted-proxies", "IDLECLAW_TRUSTED_PROXIES", "", "comma-separated IPs/CIDRs whose X-Forwarded-For is believed")
	regTimeout := f.Duration("registration-timeout", "IDLECLAW_REGISTRATION_TIMEOUT", 10*time.Second, "time a node has to send register")
	hbTimeout := f.Duration("heartbeat-timeout", "IDLECLAW_HEARTBEAT_TIMEOUT", 45*time.Second, "silence after which a node is dropped")
	classURL := f.String("classifier-url", "IDLECLAW_CLASSIFIER_URL", "", "optional content classifier: POST {\"kind\",\"text\"} → {\"allowed\"}, asked about prompts before dispatch and answers while they stream")
	classTimeout := f.Duration("classifier-timeout", "IDLECLAW_CLASSIFIER_TIMEOUT", filter.DefaultClassifierTimeout, "time limit of one classifier verdict; a classifier that fails or times out lets the text through")
	inFile := f.String("inbound-filter-file", "IDLECLAW_INBOUND_FILTER_FILE", "", "file of inbound patterns, one regexp per line, replacing the defaults (an empty file turns the filter off)")
	outFile := f.String("outbound-filter-file", "IDLECLAW_OUTBOUND_FILTER_FILE", "", "file of outbound patterns, one regexp per line, replacing the defaults")
	grace := f.Duration("shutdown-grace", "IDLECLAW_SHUTDOWN_GRACE", 10*time.Second, "time in-flight requests get to end at shutdown")
	writeStall := f.Duration("write-stall", "IDLECLAW_WRITE_STALL", 30*time.Second, "longest a write to a consumer may block; a consumer that stops reading loses its stream (0: off)")
	drainWindow := f.Duration("drain-window", "IDLECLAW_DRAIN_WINDOW", 5*time.Second, "at shutdown, node closes are spread over this window so nodes do not all reconnect at once")
	queueMax := f.Int("queue-max", "IDLECLAW_QUEUE_MAX", 256, "requests waiting per model when every node is busy (0: no queue, 503 at once)")
	queueWait := f.Duration("queue-wait", "IDLECLAW_QUEUE_WAIT", 30*time.Second, "longest wait in the queue before 503")
	firstToken := f.Duration("first-token-timeout", "IDLECLAW_FIRST_TOKEN_TIMEOUT", 60*time.Second, "time a node has to send its first chunk, a cold model load included (0: off)")
	stall := f.Duration("stall-timeout", "IDLECLAW_STALL_TIMEOUT", 30*time.Second, "longest silence between a node's chunks (0: off)")
	retries := f.Int("max-retries", "IDLECLAW_MAX_RETRIES", 2, "other nodes tried when a node fails before the first token (0: none)")
	breakerThreshold := f.Int("breaker-threshold", "IDLECLAW_BREAKER_THRESHOLD", 3, "consecutive failures that take a node out of rotation (0: never)")
	breakerCooldown := f.Duration("breaker-cooldown", "IDLECLAW_BREAKER_COOLDOWN", 30*time.Second, "time a failing node stays out of rotation before a trial request")
	bodyTimeout := f.Duration("body-timeout", "IDLECLAW_BODY_TIMEOUT", def.BodyTimeout, "time a client has to send its request body (0: off)")
	readConc := f.Int("max-concurrent-per-ip", "IDLECLAW_MAX_CONCURRENT_PER_IP", def.MaxConcurrentPerIP, "requests in flight per client IP on the read endpoints (0: off)")
	streamBuf := f.Int("stream-buffer-bytes", "IDLECLAW_STREAM_BUFFER_BYTES", 1<<20, "bytes one request may hold for a consumer that reads slower than its node sends")
	maxBuffered := f.Int("max-buffered-bytes", "IDLECLAW_MAX_BUFFERED_BYTES", 64<<20, "bytes all requests together may hold for their consumers")
	toolCalls := f.Int("max-tool-calls", "IDLECLAW_MAX_TOOL_CALLS", 8, "server-side tool calls one round may ask for")
	records := f.String("records", "IDLECLAW_RECORDS", "", "file of node records and bans kept across restarts (default: ~/.local/state/idleclaw/router.db); \"none\": in memory only")
	trustedNodes := f.String("trusted-node", "IDLECLAW_TRUSTED_NODES", "", "comma-separated node ids (of keys) you vouch for: their tier is trusted and canaries compare others with them")
	publicHosts := f.String("public-host", "IDLECLAW_PUBLIC_HOSTS", "", "comma-separated host[:port] names nodes dial this router by, when a proxy rewrites Host (identity proofs name the host)")
	canaryShare := f.Float("canary-share", "IDLECLAW_CANARY_SHARE", 0.01, "part of each node's capacity spent on canaries that check it serves the model it claims (0: off)")
	canaryInterval := f.Duration("canary-interval", "IDLECLAW_CANARY_INTERVAL", 10*time.Second, "how often canaries are considered")
	webPage := f.Bool("web", "IDLECLAW_WEB", true, "serve the web chat and network page at / (--web=false: the API only)")
	renderSafe := f.Bool("render-safe", "IDLECLAW_RENDER_SAFE", true, "make answer and thinking text safe to render as Markdown or HTML (neutralise script, event handlers, javascript: links, images that fetch); false passes node text as it is, after the outbound patterns")
	logFormat := f.String("log-format", "IDLECLAW_LOG_FORMAT", "text", "log format: text or json")
	logLevel := f.String("log-level", "IDLECLAW_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	natsURL := f.String("nats", "IDLECLAW_NATS", "", "NATS server URL(s), comma-separated (nats://host:4222, tls://… for TLS): join the routers of one network through it (empty: this router alone)")
	natsCreds := f.String("nats-creds", "IDLECLAW_NATS_CREDS", "", "NATS credentials file (with --nats)")
	natsCA := f.String("nats-tls-ca", "IDLECLAW_NATS_TLS_CA", "", "CA certificates (PEM) that sign the NATS server's certificate (with --nats; default the system's roots)")
	natsCert := f.String("nats-tls-cert", "IDLECLAW_NATS_TLS_CERT", "", "client certificate (PEM) for a NATS server that verifies clients (with --nats-tls-key)")
	natsKey := f.String("nats-tls-key", "IDLECLAW_NATS_TLS_KEY", "", "the client certificate's key (PEM)")
	natsReplicas := f.Int("nats-replicas", "IDLECLAW_NATS_REPLICAS", 1, "servers of a NATS cluster that keep each of the network's buckets (1, 3 or 5; with --nats)")
	natsDomain := f.String("nats-js-domain", "IDLECLAW_NATS_JS_DOMAIN", "", "the JetStream domain that keeps the network's buckets, for a router on a leaf node without JetStream (with --nats)")
	natsName := f.String("nats-name", "IDLECLAW_NATS_NAME", "", "the NATS connection's name (default idleclaw-router-<router id>)")
	routerID := f.String("router-id", "IDLECLAW_ROUTER_ID", "", "this router's id in the network, 1..64 of [A-Za-z0-9_-] (default: random at each start)")
	publicURL := f.String("public-url", "IDLECLAW_PUBLIC_URL", "", "this router's public URL, shown to the network in /api/network (with --nats)")
	config := f.String("config", "IDLECLAW_CONFIG", "", "file of `key = value` lines, one a flag (listen = 127.0.0.1:8000); the command line and the environment win over it")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	if f.NArg() > 0 {
		return usageError(s, fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	if *config != "" {
		if err := f.applyConfigFile(*config); err != nil {
			return usageError(s, err)
		}
	}
	log, err := newLogger(s.Stderr, *logFormat, *logLevel)
	if err != nil {
		return usageError(s, err)
	}
	trusted, err := parsePrefixes(*proxies)
	if err != nil {
		return usageError(s, err)
	}
	inPatterns, err := patternsFrom(*inFile, filter.DefaultInboundPatterns())
	if err != nil {
		return usageError(s, err)
	}
	outPatterns, err := patternsFrom(*outFile, filter.DefaultOutboundPatterns())
	if err != nil {
		return usageError(s, err)
	}
	inbound, err := filter.NewInbound(inPatterns)
	if err != nil {
		return usageError(s, err)
	}
	outbound, err := filter.NewOutbound(outPatterns)
	if err != nil {
		return usageError(s, err)
	}
	var search *tools.WebSearch
	if *searx != "" {
		if err := checkHTTPURL("searxng-url", *searx); err != nil {
			return usageError(s, err)
		}
		search = &tools.WebSearch{BaseURL: strings.TrimRight(*searx, "/"), Client: &http.Client{}, Timeout: *toolTimeout}
	}

	var classifier filter.Classifier
	if *classURL != "" {
		if err := checkHTTPURL("classifier-url", *classURL); err != nil {
			return usageError(s, err)
		}
		classifier = &filter.HTTPClassifier{URL: *classURL, Timeout: *classTimeout}
	}

	if *routerID != "" && !cluster.ValidRouterID(*routerID) {
		return usageError(s, fmt.Errorf("--router-id must be 1..64 of [A-Za-z0-9_-]"))
	}
	if *publicURL != "" {
		if err := checkHTTPURL("public-url", *publicURL); err != nil {
			return usageError(s, err)
		}
	}

	store, err := openRecords(*records, env, log)
	if err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw serve:", err)
		return 1
	}
	if store != nil {
		defer store.Close()
	}
	// In a network the hub's store also shares the records it saves
	// with the other routers (and the hub saves even without --records).
	recStore := recordStore(store)
	var shared *cluster.Records
	if *natsURL != "" {
		shared = cluster.NewRecords(recStore)
		recStore = shared
	}
	h := hub.New(hub.Config{
		Store:               recStore,
		TrustedNodes:        splitList(*trustedNodes),
		PublicHosts:         splitList(*publicHosts),
		RegistrationTimeout: *regTimeout,
		HeartbeatTimeout:    *hbTimeout,
		MaxNodesPerIP:       offIfZero(*nodesPerIP),
		StreamBufferBytes:   *streamBuf,
		MaxBufferedBytes:    int64(*maxBuffered),
		Logger:              log.With("component", "hub"),
		Breaker:             hub.BreakerConfig{Threshold: offIfZero(*breakerThreshold), Cooldown: *breakerCooldown},
		Queue:               hub.QueueConfig{MaxWaiting: offIfZero(*queueMax), MaxWait: *queueWait},
	})
	d := dispatch.New(dispatch.Config{
		SystemPrompt:       *system,
		MaxHistory:         *maxHistory,
		KeepAlive:          *keepAlive,
		MaxResponseChars:   offIfZero(*maxResp),
		ResponseTimeout:    time.Duration(offIfZero(int(*respTimeout))),
		FirstTokenTimeout:  time.Duration(offIfZero(int(*firstToken))),
		StallTimeout:       time.Duration(offIfZero(int(*stall))),
		MaxRetries:         offIfZero(*retries),
		Search:             search,
		ToolCallsPerMinute: *toolRPM,
		MaxToolRounds:      *toolRounds,
		MaxToolCalls:       *toolCalls,
		Outbound:           outbound,
		RawText:            !*renderSafe,
		Classifier:         classifier,
		Logger:             log.With("component", "dispatch"),
	}, h)
	share := *canaryShare
	if share <= 0 {
		share = -1
	}
	var page http.Handler
	if *webPage {
		wp, err := web.New()
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw serve:", err)
			return 1
		}
		page = wp
	}
	canaries := canary.New(canary.Config{Share: share, Interval: *canaryInterval, Logger: log.With("component", "canary")}, h, d)
	api := server.New(server.Config{
		Collectors:  []prometheus.Collector{canaries.Collector()},
		RateChatRPM: *chatRPM, RateWSRPM: *wsRPM, RateDefaultRPM: *defRPM,
		MaxConcurrentChatPerIP: *conc, MaxMessages: *maxMsgs, MaxMessageLength: *maxLen, MaxTotalChars: *maxTotal,
		MaxBodyBytes:       def.MaxBodyBytes,
		BodyTimeout:        time.Duration(offIfZero(int(*bodyTimeout))),
		MaxConcurrentPerIP: *readConc,
		WriteStall:         time.Duration(offIfZero(int(*writeStall))),
		TrustedProxies:     trusted, AdminToken: *adminToken, Inbound: inbound,
		Classifier: classifier,
		Web:        page,
		Logger:     log.With("component", "api"),
	}, h, d, nil)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(s.Stderr, "idleclaw serve: %v\n", err)
		return 1
	}
	var cl *cluster.Cluster
	if *natsURL != "" {
		// A forwarded request ends by this router's limits too (0: off,
		// then the cluster's default bound).
		maxRequest := time.Duration(0)
		if *respTimeout > 0 {
			maxRequest = *respTimeout + max(*queueWait, 0)
		}
		cl, err = cluster.New(cluster.Config{URL: *natsURL, Creds: *natsCreds, Name: *natsName, RouterID: *routerID,
			TLSCA: *natsCA, TLSCert: *natsCert, TLSKey: *natsKey, Replicas: *natsReplicas, JSDomain: *natsDomain,
			PublicURL: *publicURL, MaxRequest: maxRequest, Records: shared, Logger: log.With("component", "cluster")}, h, api)
		if err != nil {
			_ = ln.Close()
			fmt.Fprintf(s.Stderr, "idleclaw serve: %v\n", err)
			return 1
		}
		api.SetPeers(cl)
		log.Info("joined the network", "nats", redactURL(*natsURL), "router_id", cl.RouterID())
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	fmt.Fprintf(s.Stdout, "idleclaw router listening on http://%s\n", ln.Addr())
	fmt.Fprint(s.Stdout, nextSteps(ln.Addr(), page != nil))
	log.Info("router started", "addr", ln.Addr().String(), "web_search", search != nil, "web_page", page != nil)
	cctx, stopCanaries := context.WithCancel(context.Background())
	canaryDone := make(chan struct{})
	go func() {
		defer close(canaryDone)
		canaries.Run(cctx)
	}()
	var stopOnce sync.Once
	stopCanaryRun := func() {
		stopOnce.Do(func() {
			stopCanaries()
			<-canaryDone
		})
	}
	defer stopCanaryRun()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if cl != nil {
			cl.Close()
		}
		h.Close()
		fmt.Fprintf(s.Stderr, "idleclaw serve: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("router shutting down", "grace", grace.String())
	// New chats get 503; streams in flight get the grace period to end.
	api.Drain()
	gctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := api.WaitIdle(gctx); err != nil {
		log.Warn("grace period over; ending open streams")
	}
	// Nodes get 1001, spread over the drain window; every stream still open
	// ends with an error event and [DONE].
	stopCanaryRun()
	if cl != nil {
		// Our entry expires; other routers' requests still here end.
		cl.Close()
	}
	h.CloseSpread(*drainWindow)
	sctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	log.Info("router stopped")
	return 0
}

// nextSteps tells whoever started a router what to run next, in other
// terminals, for the address it listens on (this machine's loopback when it
// listens on every address).
func nextSteps(addr net.Addr, web bool) string {
	host := addr.String()
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		host = net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port))
	}
	u := "http://" + host
	steps := [][2]string{
		{"idleclaw contribute --server " + u, "share this machine's Ollama models"},
		{"idleclaw consume --server " + u + ` --prompt "Hello"`, "ask the network"},
		{"idleclaw status --server " + u, "see its nodes and models"},
	}
	w := 0
	for _, st := range steps {
		w = max(w, len(st[0]))
	}
	var b strings.Builder
	b.WriteString("next, in other terminals:\n")
	for _, st := range steps {
		fmt.Fprintf(&b, "  %-*s  # %s\n", w, st[0], st[1])
	}
	if web {
		fmt.Fprintf(&b, "or open %s/ in a browser: the chat, and the network at %s/network\n", u, u)
	}
	return b.String()
}

// checkHTTPURL refuses a flag's value that is not an http(s) URL with a
// host, of at most 512 bytes, without spaces or control characters
// (wire.ValidHTTPURL: the public URL is shown to the other routers, which
// drop one that is not).
func checkHTTPURL(flag, v string) error {
	if !wire.ValidHTTPURL(v) {
		return fmt.Errorf("--%s must be an http(s) URL with a host, at most %d bytes, without spaces", flag, wire.MaxURLLen)
	}
	return nil
}

func usageError(s Streams, err error) int {
	fmt.Fprintln(s.Stderr, "idleclaw:", err)
	return 2
}

// offIfZero maps a flag's 0 ("off") to the components' negative "off".
func offIfZero(v int) int {
	if v == 0 {
		return -1
	}
	return v
}

func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("--trusted-proxies: %q is not an IP or CIDR", s)
			}
			s = netip.PrefixFrom(a, a.BitLen()).String()
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %q is not an IP or CIDR", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// patternsFrom reads one pattern per line (blank lines and lines starting
// with # are skipped), or returns def when path is empty.
func patternsFrom(path string, def []string) ([]string, error) {
	if path == "" {
		return def, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read patterns: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read patterns %s: %w", path, err)
	}
	return out, nil
}

// openRecords opens the node-record file: path, or the default under the
// user's state directory, or none ("none", or no home to put it in).
func openRecords(path string, env Env, log *slog.Logger) (*nodedb.DB, error) {
	if path == "none" {
		return nil, nil
	}
	if path == "" {
		dir := env("XDG_STATE_HOME")
		if dir == "" && env("HOME") != "" {
			dir = filepath.Join(env("HOME"), ".local", "state")
		}
		if dir == "" {
			log.Warn("no HOME or XDG_STATE_HOME: node records are kept in memory only (--records FILE keeps them)")
			return nil, nil
		}
		path = filepath.Join(dir, "idleclaw", "router.db")
	}
	db, err := nodedb.Open(path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w (pass --records FILE for another file, or --records none)", err)
	}
	log.Info("node records", "file", path)
	return db, nil
}

// recordStore is db as the hub's store, or none.
func recordStore(db *nodedb.DB) hub.RecordStore {
	if db == nil {
		return nil
	}
	return db
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// redactURL hides the user and password of URLs (comma-separated) for logs.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
