// Package cluster joins several routers into one network through a NATS
// server. Each router publishes what its own nodes serve, every Interval,
// to a JetStream key-value bucket whose entries expire after TTL, and
// watches the others' entries (view.go); a request that this router's
// nodes cannot take runs on another router's nodes, over NATS
// request-reply and a stream of events (remote.go). Without a cluster a
// router works alone.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/lograte"
)

// Local is this router, as the cluster needs it: what its nodes serve,
// and the one dispatch path for requests that other routers forward.
// *server.Server (with the hub) provides it.
type Local interface {
	// CheckRemote validates a forwarded request as a consumer's; an
	// error matching dispatch.ErrNoNode says this router's nodes cannot
	// take it (the other router may try elsewhere).
	CheckRemote(ctx context.Context, req *dispatch.Request, wait bool) error
	// RunRemote runs an accepted request on this router's nodes.
	RunRemote(ctx context.Context, req dispatch.Request, emit func(dispatch.Event) error) (dispatch.Result, error)
}

// Config configures a Cluster. Zero durations take the defaults noted.
type Config struct {
	URL       string // NATS server URL(s), comma-separated; tls:// for TLS
	Creds     string // NATS credentials file, or ""
	Name      string // the NATS connection's name, default "idleclaw-router-<id>"
	RouterID  string // this router's id ([A-Za-z0-9_-], at most 64), default random
	PublicURL string // this router's public URL, shown to the others, or ""
	Bucket    string // the key-value bucket, default "idleclaw_routers"
	// TLS, as NATS clients take it: the CA certificates that sign the
	// server's (PEM; default the system's roots), and this router's
	// client certificate and key for a server that verifies clients.
	TLSCA, TLSCert, TLSKey string
	// Replicas is how many servers of a NATS cluster keep each bucket
	// (JetStream replicas: 1, 3 or 5), default 1.
	Replicas int
	// JSDomain is the JetStream domain that keeps the buckets, for a
	// router on a leaf node without JetStream of its own (a second
	// region); "" is the JetStream of the server the router is on.
	JSDomain string

	Interval time.Duration // summary publication, default 1s
	TTL      time.Duration // summary lifetime, default 5s
	// Silence is how long a forwarded stream may go without a message
	// (events or heartbeats, sent every Silence/4) before the router
	// serving it is taken for gone, default 750ms.
	Silence time.Duration
	// AcceptTimeout bounds the wait for a router to accept a request,
	// default 2s.
	AcceptTimeout time.Duration
	// MaxStreams bounds the forwarded requests this router runs at once
	// for others, default 4096.
	MaxStreams int
	// MaxTries bounds the other routers one request is tried on, default 3.
	MaxTries int
	// MaxRequest bounds a request forwarded to other routers, waiting
	// included, whatever they send (default 10m; serve passes its
	// response timeout plus its queue wait).
	MaxRequest time.Duration
	// Records, if set, is the hub's store (give the hub the same): the
	// records it saves are shared with the other routers, and theirs are
	// applied to the hub (records.go). Nil: records stay per router.
	Records *Records

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.RouterID == "" {
		c.RouterID = NewRouterID()
	}
	if c.Name == "" {
		c.Name = "idleclaw-router-" + c.RouterID
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Bucket == "" {
		c.Bucket = "idleclaw_routers"
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.TTL <= 0 {
		c.TTL = 5 * time.Second
	}
	if c.Silence <= 0 {
		c.Silence = 750 * time.Millisecond
	}
	if c.AcceptTimeout <= 0 {
		c.AcceptTimeout = 2 * time.Second
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 4096
	}
	if c.MaxTries <= 0 {
		c.MaxTries = 3
	}
	if c.MaxRequest <= 0 {
		c.MaxRequest = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

var routerIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidRouterID reports whether id can name a router (a key and a subject
// token).
func ValidRouterID(id string) bool { return routerIDRE.MatchString(id) }

// NewRouterID returns a random router id.
func NewRouterID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "r-" + hex.EncodeToString(b)
}

// Cluster is this router's membership of a network of routers. Safe for
// concurrent use.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	hub   *hub.Hub
	local Local
	nc    *nats.Conn
	js    jetstream.JetStream
	sub   *nats.Subscription // this router's dispatch subject
	ctl   *nats.Subscription // the control subjects of the requests running here
	slots chan struct{}      // MaxStreams

	// pause waits between asks of a router NATS says nothing listens
	// for (ask): sleep, or a test's.
	pause func(context.Context, time.Duration) error

	rjs      jetstream.JetStream // the records' puts, asynchronous
	quiet    *lograte.Limiter    // lines other routers can provoke
	instance string              // this start of the router, in its records' entries

	mu      sync.Mutex // guards the fields below
	kv      jetstream.KeyValue
	routers map[string]*remote  // the other routers, by id
	running map[string]*running // the forwarded requests running here, by id
	closed  bool                // Close began: no new forwarded request
	ownSeen time.Time           // our own entry last came back through the watch

	ctx     context.Context // ends at Close
	stop    context.CancelFunc
	done    sync.WaitGroup
	streams sync.WaitGroup // forwarded requests running here
}

// New connects to NATS and starts publishing and watching. It returns
// once the connection is made, or at once with the connection still being
// tried when NATS is not reachable yet (the router serves its own nodes
// meanwhile); it fails on a bad configuration only.
func New(cfg Config, h *hub.Hub, local Local) (*Cluster, error) {
	cfg.setDefaults()
	if !ValidRouterID(cfg.RouterID) {
		return nil, fmt.Errorf("router id %q: must be 1..64 of [A-Za-z0-9_-]", cfg.RouterID)
	}
	if cfg.Replicas > 5 {
		return nil, fmt.Errorf("nats replicas %d: JetStream keeps at most 5", cfg.Replicas)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, fmt.Errorf("nats tls: a client certificate needs its key, and the key its certificate")
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, hub: h, local: local, routers: map[string]*remote{},
		running: map[string]*running{}, slots: make(chan struct{}, cfg.MaxStreams), pause: sleep}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		// A synchronous subscription's channel is made at this length
		// (nats.go's default, 65,536, is half a megabyte per request).
		nats.SyncQueueLen(eventQueue),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.log.Warn("nats disconnected; serving this router's nodes alone", "err", errString(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	c.nc = nc
	newJS := func(opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
		if cfg.JSDomain != "" {
			return jetstream.NewWithDomain(nc, cfg.JSDomain, opts...)
		}
		return jetstream.New(nc, opts...)
	}
	c.js, err = newJS()
	if err == nil {
		c.rjs, err = newJS(jetstream.WithPublishAsyncMaxPending(recordPutBatch))
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.quiet = lograte.New(c.log, lograte.Config{})
	inst := make([]byte, instanceLen/2)
	_, _ = rand.Read(inst)
	c.instance = hex.EncodeToString(inst)
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.sub, err = nc.Subscribe(dispatchSubject(cfg.RouterID), c.handleRequest)
	if err != nil {
		c.stop()
		nc.Close()
		return nil, fmt.Errorf("subscribe to dispatch subject: %w", err)
	}
	_ = c.sub.SetPendingLimits(1024, 64<<20)
	c.ctl, err = nc.Subscribe(controlSubject(cfg.RouterID, "*"), c.handleControl)
	if err != nil {
		c.stop()
		nc.Close()
		return nil, fmt.Errorf("subscribe to control subjects: %w", err)
	}
	// "a" and "c" only: a few per running request and second.
	_ = c.ctl.SetPendingLimits(4*cfg.MaxStreams, 4*cfg.MaxStreams*64)
	ctx := c.ctx
	c.done.Add(3)
	go func() {
		defer c.done.Done()
		c.publishLoop(ctx)
	}()
	go func() {
		defer c.done.Done()
		c.bansLoop(ctx)
	}()
	go func() {
		defer c.done.Done()
		c.watchLoop(ctx)
	}()
	if cfg.Records != nil {
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			c.recordsLoop(ctx)
		}()
		cfg.Records.attach(c)
	}
	return c, nil
}

// RouterID returns this router's id.
func (c *Cluster) RouterID() string { return c.cfg.RouterID }

// Connected reports whether the NATS connection is up now.
func (c *Cluster) Connected() bool { return c.nc.IsConnected() }

// ConnectedURL is the NATS server this router is connected to now, its
// password redacted ("" when none).
func (c *Cluster) ConnectedURL() string { return c.nc.ConnectedUrlRedacted() }

// Close stops publishing (this router's entry then expires), ends the
// requests still running here for others (drain the server first to let
// them finish), and closes the connection.
func (c *Cluster) Close() {
	if r := c.cfg.Records; r != nil {
		r.detach(c) // the hub's last flush stays in its own store
	}
	c.stop()
	_ = c.sub.Unsubscribe()
	_ = c.ctl.Unsubscribe()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.done.Wait()
	c.streams.Wait()
	c.nc.Close()
}

// Abandon drops the NATS connection at once without any goodbye, as a
// router that dies does (for tests).
func (c *Cluster) Abandon() {
	c.stop()
	c.nc.Close()
}

func dispatchSubject(router string) string { return "idleclaw.dispatch." + router }
func controlSubject(router, id string) string {
	return "idleclaw.ctl." + router + "." + id
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
