// Package gateway is the consumer's fallback gateway (`idleclaw gateway`):
// an OpenAI-compatible endpoint on the consumer's machine that sends each
// chat request to the consumer's own provider first and to the IdleClaw
// network when the provider says the credit or quota is gone, or fails.
//
// It owns the classification of provider answers (classify.go), the
// provider's cooldown and probe state on an injected clock (state.go), the
// model mapping (models.go), the config file (config.go) and the relay of
// answers (relay.go). The decision to fall back is taken before the first
// byte reaches the client; once a stream has begun, a failure ends it with
// an error event, never with another source's words spliced in.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idleclaw/idleclaw/internal/client"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxRetryWait   = 10 * time.Second
	DefaultHeaderTimeout  = 2 * time.Minute // a whole non-streamed answer comes with its headers
	DefaultStallTimeout   = time.Minute
	DefaultTimeout        = 10 * time.Minute
	DefaultMaxBodyBytes   = 8 << 20
	DefaultMaxAnswerBytes = 32 << 20
)

// Response headers that say who served an answer and why.
const (
	HeaderRoute  = "X-IdleClaw-Route"  // "provider" or "network"
	HeaderReason = "X-IdleClaw-Reason" // why, in a few words
	HeaderModel  = "X-IdleClaw-Model"  // the network model that served a mapped request
	// loopHeader marks the gateway's own requests: a gateway that gets
	// one is being asked by itself (a provider or network URL that points
	// back at a gateway) and refuses it.
	loopHeader = "X-IdleClaw-Gateway"
)

// Config configures a Gateway. Zero fields take the defaults above.
type Config struct {
	// ProviderURL is the provider's OpenAI-compatible base URL, such as
	// https://api.openai.com/v1 (chat at ProviderURL/chat/completions).
	ProviderURL string
	// ProviderKey is sent as the bearer token. Empty: the client's own
	// Authorization header is passed on instead. Never logged.
	ProviderKey string
	// NetworkURL is the IdleClaw router's base URL.
	NetworkURL string
	// Models maps a provider model to the network model used when the
	// request falls back; "*" is the default for all others. Without a
	// mapping, a model the network serves keeps its name and any other
	// becomes the network's default model (the first of /api/models).
	Models map[string]string
	// OnRateLimit is "retry" (wait Retry-After, up to MaxRetryWait, and
	// retry once; default) or "fallback" (go to the network at once).
	OnRateLimit  string
	MaxRetryWait time.Duration
	Cooldowns    Cooldowns
	// HeaderTimeout bounds the wait for an answer's status and headers;
	// StallTimeout the silence inside an answer; Timeout the whole
	// request.
	HeaderTimeout  time.Duration
	StallTimeout   time.Duration
	Timeout        time.Duration
	MaxBodyBytes   int64 // a client's request body
	MaxAnswerBytes int64 // a non-streamed answer, held whole before it is sent

	HTTPClient *http.Client                                     // nil: a client of its own
	Now        func() time.Time                                 // nil: time.Now
	Sleep      func(ctx context.Context, d time.Duration) error // the rate-limit wait; nil: a timer
	Out        io.Writer                                        // one line per request; nil: none
	Logger     *slog.Logger                                     // diagnostics; nil: none
	UserAgent  string                                           // sent to the network
}

// Gateway is the HTTP handler. Safe for concurrent use.
type Gateway struct {
	cfg     Config
	state   *State
	network *client.Client
	mux     *http.ServeMux

	mu       sync.Mutex // guards the following fields
	netNames []string   // the network's models, cached
	netAt    time.Time  // when netNames was fetched

	outMu sync.Mutex // serialises request lines
}

// New checks cfg and returns the gateway.
func New(cfg Config) (*Gateway, error) {
	if err := CheckBaseURL(cfg.ProviderURL); err != nil {
		return nil, fmt.Errorf("provider URL: %w", err)
	}
	if err := CheckBaseURL(cfg.NetworkURL); err != nil {
		return nil, fmt.Errorf("network URL: %w", err)
	}
	if cfg.ProviderKey != "" {
		if err := checkKey(cfg.ProviderKey); err != nil {
			return nil, fmt.Errorf("provider key: %w", err)
		}
	}
	if err := checkMap(cfg.Models); err != nil {
		return nil, fmt.Errorf("model map: %w", err)
	}
	if cfg.OnRateLimit == "" {
		cfg.OnRateLimit = "retry"
	}
	if err := checkOnRateLimit(cfg.OnRateLimit); err != nil {
		return nil, err
	}
	cfg.ProviderURL = strings.TrimRight(cfg.ProviderURL, "/")
	cfg.NetworkURL = strings.TrimRight(cfg.NetworkURL, "/")
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MaxRetryWait, DefaultMaxRetryWait)
	def(&cfg.HeaderTimeout, DefaultHeaderTimeout)
	def(&cfg.StallTimeout, DefaultStallTimeout)
	def(&cfg.Timeout, DefaultTimeout)
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxAnswerBytes <= 0 {
		cfg.MaxAnswerBytes = DefaultMaxAnswerBytes
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "idleclaw-gateway"
	}
	nc, err := client.New(cfg.NetworkURL, cfg.HTTPClient)
	if err != nil {
		return nil, fmt.Errorf("network URL: %w", err)
	}
	g := &Gateway{cfg: cfg, state: NewState(cfg.Cooldowns), network: nc}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", g.handleChat)
	mux.HandleFunc("GET /v1/models", g.handleModels)
	mux.HandleFunc("GET /health", g.handleHealth)
	mux.HandleFunc("/v1/", g.handlePassthrough)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: the gateway serves /v1/chat/completions, /v1/models and the provider's other /v1 endpoints", "invalid_request_error", "")
	})
	g.mux = mux
	return g, nil
}

// ServeHTTP serves the gateway's API.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// State is the provider's health, for tests and /health.
func (g *Gateway) State() *State { return g.state }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// line is one request's log line.
type line struct {
	start     time.Time
	route     string // provider, network, gateway
	why       string
	model     string // as asked, "->mapped" when mapped
	status    int
	streamErr string
}

func (g *Gateway) writeLine(l *line) {
	d := g.cfg.Now().Sub(l.start)
	var b strings.Builder
	b.WriteString(l.start.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteString(" route=" + l.route)
	b.WriteString(" why=" + strconv.Quote(l.why))
	b.WriteString(" model=" + logValue(l.model))
	b.WriteString(" status=" + strconv.Itoa(l.status))
	b.WriteString(" duration=" + d.Round(time.Millisecond).String())
	if l.streamErr != "" {
		b.WriteString(" stream_error=" + strconv.Quote(l.streamErr))
	}
	b.WriteByte('\n')
	g.outMu.Lock()
	defer g.outMu.Unlock()
	_, _ = io.WriteString(g.cfg.Out, b.String())
}

// logValue quotes a client-chosen value when it needs it, and bounds it.
func logValue(s string) string {
	if s == "" {
		return `""`
	}
	if len(s) > 128 {
		s = s[:128]
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r >= 0x7f {
			return strconv.Quote(s)
		}
	}
	return s
}

// headerValue makes a reason fit for a header: printable ASCII, bounded.
func headerValue(s string) string {
	b := make([]byte, 0, min(len(s), 256))
	for i := 0; i < len(s) && len(b) < 256; i++ {
		if c := s[i]; c >= ' ' && c < 0x7f {
			b = append(b, c)
		}
	}
	return string(b)
}

// writeError writes OpenAI's error shape.
func writeError(w http.ResponseWriter, status int, msg, typ, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(errorBody(msg, typ, code), '\n'))
}

// bodyTimeout bounds the time a client takes to send its request body.
const bodyTimeout = 30 * time.Second

// readBody reads a client's body, bounded in size and time; it answers
// the client itself when the body is too large or unreadable.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over %d bytes", g.cfg.MaxBodyBytes), "invalid_request_error", "")
			return nil, http.StatusRequestEntityTooLarge, false
		}
		writeError(w, http.StatusBadRequest, "the request body could not be read", "invalid_request_error", "")
		return nil, http.StatusBadRequest, false
	}
	return body, 0, true
}

func (g *Gateway) handleChat(w http.ResponseWriter, r *http.Request) {
	l := &line{start: g.cfg.Now(), route: "gateway"}
	defer g.writeLine(l)
	if r.Header.Get(loopHeader) != "" {
		l.status, l.why = http.StatusLoopDetected, "refused a request from a gateway (a loop)"
		writeError(w, l.status, "request loop: this gateway was asked by a gateway; its provider or network URL points back at a gateway", "invalid_request_error", "loop_detected")
		return
	}
	body, status, ok := g.readBody(w, r)
	if !ok {
		l.status, l.why = status, "bad request body"
		return
	}
	req, err := DecodeChatRequest(body)
	if err != nil {
		l.status, l.why = http.StatusBadRequest, "bad request body"
		writeError(w, http.StatusBadRequest, err.Error(), "invalid_request_error", "")
		return
	}
	l.model = req.Model
	ctx, cancel := context.WithTimeoutCause(r.Context(), g.cfg.Timeout, &timeoutError{"no whole answer", g.cfg.Timeout})
	defer cancel()
	d := g.state.Decide(l.start)
	why := d.Why
	if d.Provider {
		var served bool
		if served, why = g.viaProvider(ctx, w, r, body, d.Probe, l); served {
			return
		}
	}
	g.viaNetwork(ctx, w, r, body, req, why, l)
}

// providerHeaders are the client's headers that go on to the provider.
func (g *Gateway) providerHeaders(r *http.Request) http.Header {
	h := http.Header{}
	for k, vs := range r.Header {
		ck := http.CanonicalHeaderKey(k)
		switch {
		case ck == "Accept", ck == "Content-Type", ck == "User-Agent", ck == "Openai-Organization", ck == "Openai-Project",
			ck == "Openai-Beta", ck == "Http-Referer", ck == "X-Title", ck == "Idempotency-Key", strings.HasPrefix(ck, "X-Stainless-"):
			h[ck] = append([]string(nil), vs...)
		}
	}
	if g.cfg.ProviderKey != "" {
		h.Set("Authorization", "Bearer "+g.cfg.ProviderKey)
	} else if a := r.Header.Get("Authorization"); a != "" {
		h.Set("Authorization", a)
	}
	h.Set(loopHeader, "1")
	return h
}

// call is one request upstream: its answer's body reads reset the stall
// timer, and a read that fails says why (a stall, the total time).
type call struct {
	resp   *http.Response
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *time.Timer
	d      time.Duration
}

func (c *call) Read(p []byte) (int, error) {
	n, err := c.resp.Body.Read(p)
	if n > 0 {
		c.stall.Reset(c.d)
	}
	if err != nil && !errors.Is(err, io.EOF) && c.ctx.Err() != nil {
		err = context.Cause(c.ctx)
	}
	return n, err
}

func (c *call) close() {
	c.stall.Stop()
	c.cancel(nil)
	_ = c.resp.Body.Close()
}

// send makes one upstream request, bounded by HeaderTimeout until the
// answer's headers and by StallTimeout between its reads after.
func (g *Gateway) send(ctx context.Context, method, url string, body []byte, h http.Header) (*call, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(cctx, method, url, rd)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header = h
	ht := time.AfterFunc(g.cfg.HeaderTimeout, func() { cancel(&timeoutError{"no answer", g.cfg.HeaderTimeout}) })
	resp, err := g.cfg.HTTPClient.Do(req)
	ht.Stop()
	if err != nil {
		cause := context.Cause(cctx)
		cancel(nil)
		if cause != nil {
			return nil, cause
		}
		return nil, err
	}
	c := &call{resp: resp, ctx: cctx, cancel: cancel, d: g.cfg.StallTimeout}
	c.stall = time.AfterFunc(c.d, func() { cancel(&timeoutError{"no data", c.d}) })
	return c, nil
}

// readAll reads at most limit bytes of an answer; more is an error.
func readAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("an answer over %d bytes", limit)
	}
	return b, nil
}

// hopHeaders are not copied from an upstream answer.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Content-Encoding": true, "Set-Cookie": true,
	"Alt-Svc": true, "Strict-Transport-Security": true,
}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		if hopHeaders[k] || strings.HasPrefix(k, "X-Idleclaw-") {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(h.Get("Content-Type"))), "text/event-stream")
}

// viaProvider tries the provider. served: the client got its answer (the
// provider's, or its refusal of a bad request) or went away; otherwise
// why says why the request goes to the network.
func (g *Gateway) viaProvider(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte, probe bool, l *line) (served bool, why string) {
	reported := false
	report := func(at time.Time, o Outcome) {
		reported = true
		g.state.Report(at, o, probe)
	}
	defer func() {
		if !reported { // the client left: a probe slot is given back
			g.state.Report(l.start, Outcome{Kind: ClientError}, probe)
		}
	}()
	url := g.cfg.ProviderURL + "/chat/completions"
	h := g.providerHeaders(r)
	var waited time.Duration
	for attempt := 0; ; attempt++ {
		at := g.cfg.Now()
		c, err := g.send(ctx, http.MethodPost, url, body, h)
		if err != nil {
			if r.Context().Err() != nil {
				return g.clientGone(l, "provider")
			}
			why = "provider " + describe(err)
			g.cfg.Logger.Debug("provider call failed", "err", describe(err), "probe", probe)
			report(at, Outcome{Kind: Unavailable, Why: describe(err)})
			return false, why
		}
		if c.resp.StatusCode >= 200 && c.resp.StatusCode < 300 {
			return g.providerAnswer(ctx, w, r, c, at, probe, waited, l, report)
		}
		errBody, rerr := readAll(io.LimitReader(c, MaxErrorBody), MaxErrorBody)
		c.close()
		if rerr != nil && r.Context().Err() != nil {
			return g.clientGone(l, "provider")
		}
		v := Classify(c.resp.StatusCode, c.resp.Header, errBody, at)
		g.cfg.Logger.Debug("provider answer", "status", v.Status, "code", v.Code, "kind", v.Kind.String(), "retry_after", v.RetryAfter, "probe", probe)
		switch v.Kind {
		case Quota:
			report(at, Outcome{Kind: Quota, Why: v.Why()})
			if probe {
				return false, "probe: provider still out of credit (" + v.Why() + ")"
			}
			return false, "provider out of credit (" + v.Why() + "), cooling down " + g.state.cd.Quota.String()
		case Unavailable:
			report(at, Outcome{Kind: Unavailable, Why: v.Why()})
			return false, "provider failed (" + v.Why() + ")"
		case RateLimit:
			wait := v.RetryAfter
			if wait <= 0 {
				wait = time.Second
			}
			if g.cfg.OnRateLimit == "retry" && attempt == 0 && wait <= g.cfg.MaxRetryWait {
				if err := g.cfg.Sleep(ctx, wait); err != nil {
					if r.Context().Err() != nil {
						return g.clientGone(l, "provider")
					}
					report(at, Outcome{Kind: RateLimit, Why: v.Why(), Wait: v.RetryAfter})
					return false, "provider rate limited (" + v.Why() + ") and no time left to wait"
				}
				waited = wait
				continue
			}
			report(at, Outcome{Kind: RateLimit, Why: v.Why(), Wait: v.RetryAfter})
			why = "provider rate limited (" + v.Why()
			if v.RetryAfter > 0 {
				why += ", asks " + v.RetryAfter.String()
			}
			if waited > 0 {
				why += ", again after waiting " + waited.String()
			}
			return false, why + ")"
		}
		// The client's own error: the provider's answer, unchanged.
		report(at, Outcome{Kind: ClientError})
		l.route, l.status = "provider", c.resp.StatusCode
		l.why = "provider refused the request (" + v.Why() + "), passed on"
		copyHeaders(w.Header(), c.resp.Header)
		w.Header().Set(HeaderRoute, "provider")
		w.Header().Set(HeaderReason, headerValue(l.why))
		w.Header().Set("Content-Length", strconv.Itoa(len(errBody)))
		w.WriteHeader(c.resp.StatusCode)
		_, _ = w.Write(errBody)
		return true, ""
	}
}

func (g *Gateway) clientGone(l *line, route string) (bool, string) {
	l.route, l.status, l.why = route, 499, "the client went away"
	return true, ""
}

// providerAnswer handles a 2xx from the provider: a stream is held until
// its first token (or other event that is not an empty opening) shows it
// is an answer and not an error; a whole answer is read before any of it
// is sent. Until then either can still fall back.
func (g *Gateway) providerAnswer(ctx context.Context, w http.ResponseWriter, r *http.Request, c *call, at time.Time, probe bool, waited time.Duration,
	l *line, report func(time.Time, Outcome)) (bool, string) {
	okWhy := "provider answered"
	switch {
	case probe:
		okWhy = "probe: the provider answers again; cooldown over"
	case waited > 0:
		okWhy = "provider answered after a rate-limit wait of " + waited.String()
	}
	if !isEventStream(c.resp.Header) {
		data, err := readAll(c, g.cfg.MaxAnswerBytes)
		c.close()
		if err != nil {
			if r.Context().Err() != nil {
				return g.clientGone(l, "provider")
			}
			report(at, Outcome{Kind: Unavailable, Why: describe(err)})
			return false, "provider's answer broke off before any of it was sent (" + describe(err) + ")"
		}
		report(at, Outcome{Kind: OK})
		l.route, l.status, l.why = "provider", c.resp.StatusCode, okWhy
		copyHeaders(w.Header(), c.resp.Header)
		w.Header().Set(HeaderRoute, "provider")
		w.Header().Set(HeaderReason, headerValue(okWhy))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(c.resp.StatusCode)
		_, _ = w.Write(data)
		return true, ""
	}
	defer c.close()
	er := newEventReader(c)
	var held [][]byte
	heldBytes := 0
	for {
		ev, err := er.next()
		if err != nil {
			if r.Context().Err() != nil {
				return g.clientGone(l, "provider")
			}
			report(at, Outcome{Kind: Unavailable, Why: describe(err)})
			return false, "provider's stream failed before its first token (" + describe(err) + ")"
		}
		held = append(held, append([]byte(nil), ev...))
		heldBytes += len(ev)
		data := eventData(ev)
		if (data == nil || emptyStart(data)) && heldBytes <= MaxErrorBody {
			continue // a comment or a chunk without a token yet: nothing to commit to
		}
		if data != nil && errorEvent(data) {
			v := classifyEvent(data, at)
			if v.Kind != ClientError {
				report(at, Outcome{Kind: v.Kind, Why: v.Why(), Wait: v.RetryAfter})
				return false, "provider's stream began with an error (" + v.Why() + ")"
			}
		}
		break
	}
	report(at, Outcome{Kind: OK})
	l.route, l.status, l.why = "provider", c.resp.StatusCode, okWhy
	copyHeaders(w.Header(), c.resp.Header)
	w.Header().Set(HeaderRoute, "provider")
	w.Header().Set(HeaderReason, headerValue(okWhy))
	w.WriteHeader(c.resp.StatusCode)
	out := newStreamOut(w)
	switch err := relayEvents(out, er, held); {
	case err == nil, errors.Is(err, errClientGone):
	case errors.Is(err, errUpstreamErrorEvent):
		l.streamErr = "provider: " + err.Error()
	default:
		l.streamErr = "provider: " + describe(err)
		_ = out.write(errorEventBytes("the provider's stream broke off after it began (" + describe(err) + "); the answer is incomplete"))
	}
	return true, ""
}

// viaNetwork sends the request to the IdleClaw network, with its model
// mapped, and relays the answer.
func (g *Gateway) viaNetwork(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte, req ChatRequest, why string, l *line) {
	l.route, l.why = "network", why
	w.Header().Set(HeaderRoute, "network")
	w.Header().Set(HeaderReason, headerValue(why))
	model, err := g.networkModel(ctx, req.Model)
	if err != nil {
		if r.Context().Err() != nil {
			l.status = 499
			return
		}
		l.status = http.StatusServiceUnavailable
		writeError(w, l.status, "your provider cannot answer now ("+why+") and the IdleClaw network has no model to answer with ("+err.Error()+")", "api_error", "no_fallback")
		return
	}
	if model != req.Model {
		l.model = req.Model + "->" + model
	}
	w.Header().Set(HeaderModel, model)
	nb, err := withModel(body, model)
	if err != nil {
		l.status = http.StatusBadRequest
		writeError(w, l.status, "the request body could not be rewritten for the network", "invalid_request_error", "")
		return
	}
	h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {g.cfg.UserAgent}, loopHeader: {"1"}}
	if a := r.Header.Get("Accept"); a != "" {
		h.Set("Accept", a)
	}
	c, err := g.send(ctx, http.MethodPost, g.cfg.NetworkURL+"/v1/chat/completions", nb, h)
	if err != nil {
		if r.Context().Err() != nil {
			l.status = 499
			return
		}
		g.cfg.Logger.Warn("the network did not answer", "err", describe(err))
		l.status = http.StatusBadGateway
		l.why = why + "; network " + describe(err)
		w.Header().Set(HeaderReason, headerValue(l.why))
		writeError(w, l.status, "your provider cannot answer now ("+why+") and the IdleClaw network did not either ("+describe(err)+")", "api_error", "no_fallback")
		return
	}
	defer c.close()
	copyHeaders(w.Header(), c.resp.Header)
	if !isEventStream(c.resp.Header) {
		data, err := readAll(c, g.cfg.MaxAnswerBytes)
		if err != nil {
			if r.Context().Err() != nil {
				l.status = 499
				return
			}
			l.status = http.StatusBadGateway
			w.Header().Del("Content-Type")
			writeError(w, l.status, "the IdleClaw network's answer broke off ("+describe(err)+")", "api_error", "")
			return
		}
		l.status = c.resp.StatusCode
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(c.resp.StatusCode)
		_, _ = w.Write(data)
		return
	}
	l.status = c.resp.StatusCode
	w.WriteHeader(c.resp.StatusCode)
	out := newStreamOut(w)
	switch err := relayEvents(out, newEventReader(c), nil); {
	case err == nil, errors.Is(err, errClientGone):
	case errors.Is(err, errUpstreamErrorEvent):
		l.streamErr = "network: " + err.Error()
	default:
		l.streamErr = "network: " + describe(err)
		_ = out.write(errorEventBytes("the IdleClaw network's stream broke off (" + describe(err) + "); the answer is incomplete"))
	}
}

// handlePassthrough forwards the provider's other /v1 endpoints
// (embeddings, audio, ...) unchanged: the network has no fallback for them.
func (g *Gateway) handlePassthrough(w http.ResponseWriter, r *http.Request) {
	l := &line{start: g.cfg.Now(), route: "provider", why: "passed through: no network fallback for " + logPath(r.URL.Path)}
	defer g.writeLine(l)
	if r.Header.Get(loopHeader) != "" {
		l.route, l.status, l.why = "gateway", http.StatusLoopDetected, "refused a request from a gateway (a loop)"
		writeError(w, l.status, "request loop: this gateway was asked by a gateway", "invalid_request_error", "loop_detected")
		return
	}
	var body []byte
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		var status int
		var ok bool
		if body, status, ok = g.readBody(w, r); !ok {
			l.status = status
			return
		}
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), g.cfg.Timeout, &timeoutError{"no whole answer", g.cfg.Timeout})
	defer cancel()
	url := g.cfg.ProviderURL + strings.TrimPrefix(r.URL.Path, "/v1")
	if r.URL.RawQuery != "" {
		url += "?" + r.URL.RawQuery
	}
	c, err := g.send(ctx, r.Method, url, body, g.providerHeaders(r))
	if err != nil {
		if r.Context().Err() != nil {
			l.status = 499
			return
		}
		l.status = http.StatusBadGateway
		writeError(w, l.status, "the provider did not answer ("+describe(err)+")", "api_error", "")
		return
	}
	defer c.close()
	l.status = c.resp.StatusCode
	copyHeaders(w.Header(), c.resp.Header)
	w.Header().Set(HeaderRoute, "provider")
	w.WriteHeader(c.resp.StatusCode)
	out := newStreamOut(w)
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if sent += int64(n); sent > g.cfg.MaxAnswerBytes {
				l.streamErr = "answer over the size limit"
				return
			}
			if out.write(buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.streamErr = describe(err)
			}
			return
		}
	}
}

// logPath bounds a path for a log line.
func logPath(p string) string {
	if len(p) > 64 {
		p = p[:64]
	}
	return headerValue(p)
}

func (g *Gateway) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "provider": g.state.Snapshot(g.cfg.Now())})
}
