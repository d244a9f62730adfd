// Package agent owns the node side of IdleClaw (docs/protocol.md §2): it
// discovers the local Ollama's models, dials the router's /ws/node link,
// registers, heartbeats, relays inference requests to Ollama and streams the
// answers back, follows cancellations, notices models pulled or removed,
// reconnects with backoff and drains gracefully on shutdown.
//
// The agent never writes prompt or answer text anywhere but to the router:
// neither to its human output nor to its logs.
package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	randv2 "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Errors Run returns at startup; callers branch on them.
var (
	// ErrOllamaUnreachable: no connection to Ollama could be made.
	ErrOllamaUnreachable = errors.New("cannot reach ollama")
	// ErrNoModels: Ollama answered but offers no model this node can serve.
	ErrNoModels = errors.New("ollama has no models")
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval  = 15 * time.Second
	DefaultModelsPollInterval = 30 * time.Second
	DefaultDrainGrace         = 30 * time.Second
	DefaultRegisterTimeout    = 15 * time.Second
	DefaultWriteTimeout       = 20 * time.Second
)

// Config configures an Agent. Zero values take the documented defaults.
type Config struct {
	// Server is the router: "http(s)://host" or a full "ws(s)://host/ws/node"
	// (see NodeURL). Required.
	Server string
	// Servers are more routers of the same network, in the same forms.
	// The node links to Server first; when its link is lost and
	// reconnecting fails, it moves to the next (after the last, back to
	// Server), each router with its own backoff.
	Servers []string
	// Ollama is the local Ollama the node relays to. Required. Its HTTP
	// client must not have a Timeout (answers stream for minutes); a nil
	// HTTP gets one keeping MaxConcurrent+2 idle connections to Ollama.
	Ollama *ollama.Client
	// Identity, if set, is the node's key: the node id is the one derived
	// from it, the router is shown the public key and the node proves it
	// holds the key when it registers. Without one the node is keyless
	// (a v1 node's way): routers rank it lower.
	Identity *identity.Key
	// NodeID identifies a keyless node; empty means a random "node-" + 16
	// hex digits, made once in New and kept across reconnects. With an
	// Identity it must be empty or the key's id.
	NodeID string
	// MaxConcurrent is how many requests run at once (default 2, clamped 1..10).
	MaxConcurrent int
	// HeartbeatInterval (default 15 s).
	HeartbeatInterval time.Duration
	// ModelsPollInterval is how often /api/tags is listed again to notice
	// models pulled or removed (default 30 s).
	ModelsPollInterval time.Duration
	// DrainGrace is how long in-flight requests may run after shutdown
	// begins before they are canceled (default 30 s).
	DrainGrace time.Duration
	// RegisterTimeout bounds the dial plus the wait for "registered" (default 15 s).
	RegisterTimeout time.Duration
	// WriteTimeout bounds one frame write; a router that does not take a
	// frame within it is considered gone (default 20 s).
	WriteTimeout time.Duration
	// Backoff is the reconnect schedule (default 1 s doubling to 60 s, equal jitter).
	Backoff Backoff
	// Limits bound what a router may ask of the owner's machine (see
	// Limits; zero fields take its defaults).
	Limits Limits
	// Owner, Busy and Schedule decide when the owner's machine is lent:
	// the node pauses while the owner uses their Ollama, while the
	// machine is busy, and outside the schedule (zero values: the owner
	// monitor on with its defaults, no busy thresholds, always open).
	Owner    Owner
	Busy     Busy
	Schedule Schedule
	// Models, if set, are the models the owner shares (names as Ollama
	// lists them, or as wire.NormalizeModel gives them); the others are
	// not offered.
	Models []string
	// JoinArrived joins Ollama's lines of plain text that have already
	// arrived into one inference_chunk, texts concatenated, whenever the
	// next line is there by the time one is sent (never waiting for a
	// line that has not arrived): fewer frames when Ollama is ahead of the
	// link. Without it a line waits for the next only while another
	// request's chunk is being written on the link, so an idle link
	// carries every line alone, as Ollama sent it (what tests pinning
	// frame boundaries rely on). `idleclaw contribute` sets it.
	JoinArrived bool
	// AgentVersion is announced as "idleclaw-go/<AgentVersion>".
	AgentVersion string
	// Logger receives diagnostics (default: discard).
	Logger *slog.Logger
	// Out receives the human lines: the setup and one line per finished
	// request (default: discard).
	Out io.Writer
	// HTTPClient dials the WebSocket (default http.DefaultClient).
	HTTPClient *http.Client
	// Now is the clock used for the human lines and request durations
	// (default time.Now).
	Now func() time.Time
	// Rand returns a number in [0, 1) for the backoff jitter (default math/rand/v2).
	Rand func() float64
}

// Agent is one node agent. Run it once.
type Agent struct {
	cfg      Config
	urls     []string     // Server, then Servers, as node-link URLs
	cur      atomic.Int32 // the one dialed now
	ol       *ollama.Client
	log      *slog.Logger
	agentTag string
	started  atomic.Bool
	// thinkLevels: the Ollama takes think as "low"/"medium"/"high" (0.11+);
	// older ones only take a bool. Set once in Run before any request.
	thinkLevels bool

	outMu sync.Mutex // serialises human lines

	mu sync.Mutex // guards the following
	// models is what the node advertises now (at most 20, largest first);
	// empty while Ollama has none.
	models  []wire.Model
	served  map[string]bool // wire.NormalizeModel(name) of models
	vision  map[string]bool // the same, for the models with the vision capability
	predict map[string]int  // the models' own num_predict, where they set one
	// Two looks at Ollama, each with one writer: the models poll
	// (/api/tags) and the heartbeat (/api/ps). Either one failing makes the
	// node unavailable; each clears only its own.
	tagsDown  bool // the last models poll could not list the models
	psDown    bool // the heartbeat found Ollama gone or frozen
	showCache map[string]showInfo
	// The node's own use of each model (owner.go), by normalized name.
	active  map[string]int
	ends    map[string][]ownEnd
	current *session // the link up now, or nil
	stats   counters

	gate  *gate         // the owner's say: paused, and why
	kick  chan struct{} // capacity 1: the gate changed, send a heartbeat now
	dials *dialLog      // the node's own connections to Ollama; nil: not recorded
}

type showInfo struct {
	caps    []string
	details ollama.ModelDetails
	ctxLen  int
	predict int // the model's own num_predict, or 0
}

// New checks cfg and makes an Agent.
func New(cfg Config) (*Agent, error) {
	u, err := NodeURL(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	urls := []string{u}
	for _, srv := range cfg.Servers {
		v, err := NodeURL(srv)
		if err != nil {
			return nil, fmt.Errorf("new agent: %w", err)
		}
		urls = append(urls, v)
	}
	if cfg.Ollama == nil || cfg.Ollama.BaseURL == "" {
		return nil, errors.New("new agent: an Ollama client with a BaseURL is required")
	}
	switch {
	case cfg.Identity != nil && cfg.NodeID != "" && cfg.NodeID != cfg.Identity.NodeID():
		return nil, fmt.Errorf("new agent: node id %q is not the one derived from the identity key (%s)", cfg.NodeID, cfg.Identity.NodeID())
	case cfg.Identity != nil:
		cfg.NodeID = cfg.Identity.NodeID()
	case strings.HasPrefix(cfg.NodeID, identity.IDPrefix):
		return nil, fmt.Errorf("new agent: node ids starting %q are for nodes with an identity key", identity.IDPrefix)
	case cfg.NodeID == "":
		cfg.NodeID, err = randomNodeID()
		if err != nil {
			return nil, fmt.Errorf("new agent: %w", err)
		}
	}
	if len(cfg.NodeID) > wire.MaxNodeID {
		return nil, fmt.Errorf("new agent: node id over %d characters", wire.MaxNodeID)
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = wire.DefaultConcurrent
	}
	cfg.MaxConcurrent = min(max(cfg.MaxConcurrent, wire.MinMaxConcurrent), wire.MaxMaxConcurrent)
	cfg.HeartbeatInterval = cmp.Or(max(cfg.HeartbeatInterval, 0), DefaultHeartbeatInterval)
	cfg.ModelsPollInterval = cmp.Or(max(cfg.ModelsPollInterval, 0), DefaultModelsPollInterval)
	cfg.DrainGrace = cmp.Or(max(cfg.DrainGrace, 0), DefaultDrainGrace)
	cfg.RegisterTimeout = cmp.Or(max(cfg.RegisterTimeout, 0), DefaultRegisterTimeout)
	cfg.WriteTimeout = cmp.Or(max(cfg.WriteTimeout, 0), DefaultWriteTimeout)
	cfg.Backoff = cfg.Backoff.withDefaults()
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.Owner = cfg.Owner.withDefaults()
	cfg.Busy = cfg.Busy.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = randv2.Float64
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	// The link follows no redirect: a router could otherwise send the
	// agent's dial to another host (one on the contributor's network, or
	// a router the contributor did not choose) or from wss to ws. The
	// 3xx answer ends the dial, and the owner is told where it pointed.
	hc := *cfg.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTPClient = &hc
	var dials *dialLog
	if cfg.Ollama.HTTP == nil {
		// One idle connection to Ollama per request slot, plus the
		// heartbeat's and the models poll's: http.DefaultTransport keeps 2
		// per host, so every request past the second would dial anew.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.MaxConcurrent + 2
		if cfg.Owner.Connections {
			dials = newDialLog(cfg.Now)
			dials.wrap(tr)
		}
		// The caller's client stays as it was.
		cfg.Ollama = &ollama.Client{BaseURL: cfg.Ollama.BaseURL, HTTP: &http.Client{Transport: tr}}
	} else if tr, ok := cfg.Ollama.HTTP.Transport.(*http.Transport); ok && cfg.Owner.Connections {
		tr = tr.Clone()
		dials = newDialLog(cfg.Now)
		dials.wrap(tr)
		hc := *cfg.Ollama.HTTP
		hc.Transport = tr
		cfg.Ollama = &ollama.Client{BaseURL: cfg.Ollama.BaseURL, HTTP: &hc}
	}
	a := &Agent{
		cfg:       cfg,
		urls:      urls,
		ol:        cfg.Ollama,
		log:       cfg.Logger.With("node_id", cfg.NodeID),
		agentTag:  "idleclaw-go/" + cmp.Or(cfg.AgentVersion, "dev"),
		showCache: map[string]showInfo{},
		active:    map[string]int{},
		ends:      map[string][]ownEnd{},
		kick:      make(chan struct{}, 1),
		dials:     dials,
	}
	a.gate = newGate(cfg.Now, a.gateChanged)
	return a, nil
}

// NodeID returns the node's id (random unless configured).
func (a *Agent) NodeID() string { return a.cfg.NodeID }

// URL returns the router's node-link URL the agent dials.
func (a *Agent) URL() string { return a.urls[a.cur.Load()] }

func randomNodeID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random node id: %w", err)
	}
	return "node-" + hex.EncodeToString(b[:]), nil
}

// Run discovers Ollama's models, then serves the router until ctx is
// canceled, reconnecting whenever the link is lost. On cancellation it
// drains (see Config.DrainGrace), closes the link with 1000 and returns nil.
// At startup it returns an error wrapping ErrOllamaUnreachable or
// ErrNoModels. Run returns only after every goroutine it started has ended.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	version, err := a.ol.Version(ctx)
	a.thinkLevels = versionAtLeast(version, 0, 11)
	if err == nil {
		_, err = a.refreshModels(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ollama.ErrUnreachable) {
			return fmt.Errorf("start agent: %w at %s: %w", ErrOllamaUnreachable, a.ol.BaseURL, err)
		}
		return fmt.Errorf("start agent: %w", err)
	}
	if len(a.currentModels()) == 0 {
		return fmt.Errorf("start agent: %w", ErrNoModels)
	}
	a.printHeader(version)
	a.log.Info("agent starting", "router", a.URL(), "ollama", a.ol.BaseURL, "ollama_version", version,
		"models", len(a.currentModels()), "max_concurrent", a.cfg.MaxConcurrent)

	// The owner's monitors run beside the links, for the agent's life.
	mctx, stopMonitors := context.WithCancel(ctx)
	var monitors sync.WaitGroup
	seen := a.primeOwner(mctx)
	monitors.Go(func() { a.watchOwner(mctx, seen) })
	monitors.Go(func() { a.watchBusy(mctx) })
	monitors.Go(func() { a.watchSchedule(mctx) })
	defer func() {
		stopMonitors()
		monitors.Wait()
	}()

	attempts := make([]int, len(a.urls)) // per router: failures since it last registered us
	linked := false                      // some link registered
	advised := map[string]bool{}         // refusals already explained
	for first := true; ; first = false {
		registered, err := a.session(ctx, version, !first)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, errV1Models):
			// Register again at once with the new models.
			a.printf("%s  models changed: registering again with the v1 router\n", a.stamp())
			continue
		case errors.Is(err, errV1Unavailable):
			why := "Ollama unreachable or without models"
			if a.gate.paused() {
				why = "paused"
			}
			a.printf("%s  cannot serve now (%s): left the v1 router until it can\n", a.stamp(), why)
			if !a.waitAvailable(ctx) {
				return nil
			}
			a.printf("%s  Ollama is back: connecting again\n", a.stamp())
			continue
		}
		if registered && !errors.Is(err, errReRegistered) {
			attempts[a.cur.Load()] = 0
		}
		linked = linked || registered
		var de *dialError
		if errors.As(err, &de) && de.status == http.StatusNotFound && !linked {
			a.log.Error("the server is not an IdleClaw router", "router", a.URL(), "status", de.status)
			return fmt.Errorf("run agent: %w: %s answered %d %s", ErrNotARouter, a.URL(), de.status, http.StatusText(de.status))
		}
		cur := int(a.cur.Load())
		attempt := attempts[cur]
		attempts[cur]++
		if !registered && len(a.urls) > 1 {
			// This router did not take us (again): the next one, after
			// its own backoff.
			cur = (cur + 1) % len(a.urls)
			attempt = attempts[cur]
			a.cur.Store(int32(cur))
		}
		delay := a.cfg.Backoff.Delay(attempt, a.cfg.Rand)
		var ce closeErr // the router's close frame, if it sent one
		errors.As(err, &ce)
		switch ce.code {
		case websocket.StatusGoingAway, websocket.StatusServiceRestart:
			delay = max(delay, a.cfg.Backoff.RestartDelay(a.cfg.Rand))
		}
		if de != nil && de.retryAfter > 0 {
			delay = max(delay, de.retryAfter)
		}
		a.logLoss(err, ce, delay, linked, advised)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// waitAvailable looks at Ollama every models-poll interval, and whenever
// the owner's pause changes, until the node can serve again (its models
// listed, /api/ps answering, not paused); it reports false when ctx ends
// first.
func (a *Agent) waitAvailable(ctx context.Context) bool {
	t := time.NewTicker(a.cfg.ModelsPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case <-a.kick:
		}
		pctx, cancel := context.WithTimeout(ctx, max(a.cfg.HeartbeatInterval, time.Second))
		_, err := a.refreshModels(pctx)
		if err == nil {
			_, err = a.ol.PS(pctx)
			var status *ollama.StatusError
			a.setPSDown(err != nil && !errors.As(err, &status))
		}
		cancel()
		if a.serving() {
			return true
		}
	}
}

// refreshModels lists Ollama's models and updates what the node
// advertises. It reports whether the set (names, sizes, digests) changed.
// On error the advertised set is kept and Ollama is marked down.
func (a *Agent) refreshModels(ctx context.Context) (changed bool, err error) {
	models, err := a.listModels(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tagsDown = err != nil
	if err != nil {
		return false, err
	}
	// Ollama answered: it is neither gone nor frozen, whatever the last
	// heartbeat's look found. Without this a node whose Ollama restarted
	// took requests again only at the next heartbeat (15 s by default),
	// not at this poll.
	a.psDown = false
	if sameModels(a.models, models) {
		return false, nil
	}
	a.models = models
	a.served = make(map[string]bool, len(models))
	a.vision = map[string]bool{}
	a.predict = map[string]int{}
	for _, m := range models {
		name := wire.NormalizeModel(m.Name)
		a.served[name] = true
		if slices.Contains(m.Capabilities, "vision") {
			a.vision[name] = true
		}
		if n := a.showCache[m.Name+"@"+m.Digest].predict; n > 0 {
			a.predict[name] = n
		}
	}
	return true, nil
}

// listModels asks Ollama for its models and their details: at most 20,
// the largest first.
func (a *Agent) listModels(ctx context.Context) ([]wire.Model, error) {
	tags, err := a.ol.Tags(ctx)
	if err != nil {
		return nil, err
	}
	var list []ollama.TagsModel
	for _, t := range tags.Models {
		if !a.shares(t.Name) {
			continue
		}
		if !wire.ValidModelName(t.Name) || t.Size < 0 {
			a.log.Warn("model name not allowed by the protocol; not offered", "model", t.Name)
			continue
		}
		list = append(list, t)
	}
	slices.SortStableFunc(list, func(x, y ollama.TagsModel) int {
		return cmp.Or(cmp.Compare(y.Size, x.Size), strings.Compare(x.Name, y.Name))
	})
	if len(list) > wire.MaxModelsPerNode {
		a.log.Info("more models than a node may offer; offering the largest",
			"models", len(list), "offered", wire.MaxModelsPerNode)
		list = list[:wire.MaxModelsPerNode]
	}
	models := make([]wire.Model, 0, len(list))
	for _, t := range list {
		info, err := a.show(ctx, t)
		if err != nil {
			if errors.Is(err, ollama.ErrUnreachable) || ctx.Err() != nil {
				return nil, err
			}
			a.log.Warn("cannot describe model; offering it without details", "model", t.Name, "err", err)
			info = showInfo{details: t.Details}
		}
		models = append(models, wire.Model{
			Name:          t.Name,
			Size:          t.Size,
			Digest:        t.Digest,
			Capabilities:  info.caps,
			Quantization:  cmp.Or(info.details.QuantizationLevel, t.Details.QuantizationLevel),
			ParameterSize: cmp.Or(info.details.ParameterSize, t.Details.ParameterSize),
			ContextLength: info.ctxLen,
			Family:        cmp.Or(info.details.Family, t.Details.Family),
		})
	}
	return models, nil
}

// show describes one model through /api/show, cached by name and digest.
func (a *Agent) show(ctx context.Context, t ollama.TagsModel) (showInfo, error) {
	key := t.Name + "@" + t.Digest
	a.mu.Lock()
	info, ok := a.showCache[key]
	a.mu.Unlock()
	if ok {
		return info, nil
	}
	s, err := a.ol.Show(ctx, t.Name)
	if err != nil {
		return showInfo{}, err
	}
	info = showInfo{caps: s.Capabilities, details: s.Details, ctxLen: s.ContextLength(), predict: s.NumPredict()}
	a.mu.Lock()
	a.showCache[key] = info
	a.mu.Unlock()
	return info, nil
}

func sameModels(x, y []wire.Model) bool {
	if len(x) != len(y) {
		return false
	}
	key := func(ms []wire.Model) []string {
		k := make([]string, len(ms))
		for i, m := range ms {
			k[i] = fmt.Sprintf("%s\x00%d\x00%s", m.Name, m.Size, m.Digest)
		}
		slices.Sort(k)
		return k
	}
	return slices.Equal(key(x), key(y))
}

func (a *Agent) currentModels() []wire.Model {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.models)
}

// available reports whether the node can take requests as far as Ollama
// goes: it has models and neither look at Ollama failed.
func (a *Agent) available() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.models) > 0 && !a.tagsDown && !a.psDown
}

// setPSDown records what the heartbeat's look at Ollama found.
func (a *Agent) setPSDown(down bool) {
	a.mu.Lock()
	a.psDown = down
	a.mu.Unlock()
}

// serves reports whether model is one the node advertises, matching names
// leniently ("llama3.2" is "llama3.2:latest").
func (a *Agent) serves(model string) bool {
	if model == "" {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served[wire.NormalizeModel(model)]
}

// shares reports whether the owner shares model (Config.Models).
func (a *Agent) shares(model string) bool {
	if len(a.cfg.Models) == 0 {
		return true
	}
	for _, m := range a.cfg.Models {
		if m == model || wire.NormalizeModel(m) == wire.NormalizeModel(model) {
			return true
		}
	}
	return false
}

// serving reports whether the node takes network work: Ollama can serve
// and the owner has not paused it.
func (a *Agent) serving() bool { return a.available() && !a.gate.paused() }

// gateChanged prints the owner's pause or resume as one line and has the
// link tell the router at once.
func (a *Agent) gateChanged(paused bool, why string) {
	if paused {
		a.printf("%s  paused: %s; the router sends this node nothing meanwhile\n", a.stamp(), why)
		a.log.Info("paused", "why", why)
	} else {
		a.printf("%s  serving the network again\n", a.stamp())
		a.log.Info("serving again")
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// facts reports, for model as a request names it, whether it has the
// vision capability and its own num_predict (0 for none).
func (a *Agent) facts(model string) (vision bool, predict int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name := wire.NormalizeModel(model)
	return a.vision[name], a.predict[name]
}

// logLoss logs why a link ended (err, and ce if the router closed it), or
// why none could be made (linked false: the node was never linked), and
// when the next attempt is. A refusal the owner can act on is explained
// once (advised keeps which were).
func (a *Agent) logLoss(err error, ce closeErr, delay time.Duration, linked bool, advised map[string]bool) {
	attrs := []any{"retry_in", delay.Round(time.Millisecond).String()}
	if ce.code != 0 {
		attrs = append(attrs, "close_code", int(ce.code), "close_reason", ce.reason)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	why, advice := a.lossReason(err, ce)
	retry := delay.Round(100 * time.Millisecond)
	switch {
	case linked:
		a.log.Warn("router link lost; reconnecting", attrs...)
		a.printf("%s  not connected to the router (%s); retrying in %s\n", a.stamp(), why, retry)
	case !advised[""]:
		advised[""] = true // the first failure says where and why at length
		a.log.Warn("cannot connect to the router; retrying", attrs...)
		a.printf("%s  cannot connect to the router at %s: %s; the node keeps trying (retrying in %s)\n", a.stamp(), dialedHost(a.URL()), why, retry)
	default:
		a.log.Warn("cannot connect to the router; retrying", attrs...)
		a.printf("%s  still not connected to the router (%s); retrying in %s\n", a.stamp(), why, retry)
	}
	if advice != "" && ce.reason != "" && !advised[ce.reason] {
		advised[ce.reason] = true
		a.printf("%s  %s\n", a.stamp(), advice)
	}
}

// printf writes one human line to Out.
func (a *Agent) printf(format string, args ...any) {
	a.outMu.Lock()
	defer a.outMu.Unlock()
	fmt.Fprintf(a.cfg.Out, format, args...)
}

func (a *Agent) printHeader(version string) {
	var b strings.Builder
	fmt.Fprintf(&b, "IdleClaw node %s\n", a.cfg.NodeID)
	fmt.Fprintf(&b, "  router:  %s\n", a.URL())
	fmt.Fprintf(&b, "  ollama:  %s (version %s)\n", a.ol.BaseURL, cmp.Or(version, "unknown"))
	fmt.Fprintf(&b, "  serving: up to %d requests at once\n", a.cfg.MaxConcurrent)
	writeModels(&b, a.currentModels())
	a.printf("%s", b.String())
}

func writeModels(b *strings.Builder, models []wire.Model) {
	fmt.Fprintf(b, "  models:\n")
	w := 0
	for _, m := range models {
		w = max(w, len(m.Name))
	}
	for _, m := range models {
		fmt.Fprintf(b, "    %-*s  %s\n", w, m.Name, HumanBytes(m.Size))
	}
}

// HumanBytes formats a size in decimal units the way Ollama does
// ("1.2 MB", "2.0 GB", "42 GB").
func HumanBytes(n int64) string {
	const (
		kB = 1000
		mB = 1000 * kB
		gB = 1000 * mB
		tB = 1000 * gB
	)
	var v float64
	var unit string
	switch {
	case n >= tB:
		v, unit = float64(n)/tB, "TB"
	case n >= gB:
		v, unit = float64(n)/gB, "GB"
	case n >= mB:
		v, unit = float64(n)/mB, "MB"
	case n >= kB:
		v, unit = float64(n)/kB, "KB"
	default:
		return fmt.Sprintf("%d B", n)
	}
	switch {
	case v >= 10:
		return fmt.Sprintf("%d %s", int64(v), unit)
	case v != math.Trunc(v):
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%d %s", int64(v), unit)
	}
}

// versionAtLeast reports whether an Ollama version "X.Y.Z" is at least
// major.minor. Development builds report 0.0.0 and count as old.
func versionAtLeast(v string, major, minor int) bool {
	var x, y int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &x, &y); err != nil {
		return false
	}
	return x > major || (x == major && y >= minor)
}
