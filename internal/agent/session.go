package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

var (
	// errReRegistered: the router closed the link because another
	// connection registered the same node id. The backoff is not reset, so
	// two agents sharing an id do not evict each other every second.
	errReRegistered    = errors.New("another connection registered this node id")
	errNoModelsNow     = errors.New("ollama has no models; not connecting until it has")
	errRegisterTimeout = errors.New("no registered answer in time")
	errSend            = errors.New("send frame")
	errFrameTooLarge   = errors.New("frame too large")
	// A v1 router ignores models_update and available:false (protocol
	// §2.1): with one, the node re-registers to announce new models
	// (errV1Models) and leaves while it cannot serve (errV1Unavailable),
	// instead of being sent work it must refuse.
	errV1Models      = errors.New("models changed; re-registering with a v1 router")
	errV1Unavailable = errors.New("cannot serve now; leaving a v1 router until it can")
)

// closeErr is a close frame received from the router.
type closeErr struct {
	code   websocket.StatusCode
	reason string
	err    error
}

func (e closeErr) Error() string {
	return fmt.Sprintf("router closed the link: %d %q", int(e.code), e.reason)
}

func (e closeErr) Unwrap() error { return e.err }

// session is one WebSocket link to the router, from dial to close.
type session struct {
	a          *Agent
	conn       *websocket.Conn
	connCtx    context.Context // reads and writes; canceled once the link is closed
	connCancel context.CancelFunc
	reqCtx     context.Context // parent of every request's context
	reqCancel  context.CancelFunc
	registered chan struct{} // closed when "registered" arrives
	regOnce    sync.Once
	readDone   chan struct{} // closed when the reader has ended
	readErr    error         // why the reader ended; written before readDone is closed
	writing    atomic.Int64  // writes begun and not yet returned
	written    atomic.Uint64 // writes returned
	// chunkWrites: inference_chunk writes begun and not yet returned (the
	// relays' back-pressure, see coalescer).
	chunkWrites atomic.Int64
	watchDone   chan struct{} // closed when the write watchdog has ended
	psTimeouts  int           // heartbeats in a row whose /api/ps got no answer; serve's goroutine only
	protocol    int           // the router's protocol version from "registered" (0: v1); set before registered is closed
	host        string        // the router's host as dialed, which a proof names
	changed     bool          // the models changed since registration; serve's goroutine only

	mu       sync.Mutex // guards the following
	inflight map[string]*request
	closing  bool           // no new request is started (draining or closing)
	draining bool           // shutdown began: heartbeats say available:false
	wg       sync.WaitGroup // request goroutines; Add only under mu while !closing
}

// session dials the router, registers and serves until the link is lost
// (returning why) or ctx is canceled (draining, then returning nil).
// registered reports whether the router accepted the registration.
func (a *Agent) session(ctx context.Context, version string, refresh bool) (registered bool, err error) {
	if refresh {
		if _, err := a.refreshModels(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("cannot list Ollama's models; registering the last known ones", "err", err)
		}
	}
	models := a.currentModels()
	if len(models) == 0 {
		return false, errNoModelsNow
	}

	dctx, cancel := context.WithTimeout(ctx, a.cfg.RegisterTimeout)
	conn, resp, err := websocket.Dial(dctx, a.URL(), &websocket.DialOptions{
		HTTPClient: a.cfg.HTTPClient,
		HTTPHeader: http.Header{"User-Agent": {a.agentTag}},
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		if resp != nil {
			return false, newDialError(resp, err)
		}
		return false, fmt.Errorf("dial router: %w", err)
	}
	conn.SetReadLimit(wire.MaxFrameBytes)

	s := &session{
		a:          a,
		host:       dialedHost(a.URL()),
		conn:       conn,
		registered: make(chan struct{}),
		readDone:   make(chan struct{}),
		inflight:   map[string]*request{},
	}
	base := context.WithoutCancel(ctx)
	s.connCtx, s.connCancel = context.WithCancel(base)
	s.reqCtx, s.reqCancel = context.WithCancel(base)
	s.watchDone = make(chan struct{})
	go s.readLoop()
	go s.watchWrites()

	reg := wire.Register{
		Type:          wire.TypeRegister,
		NodeID:        a.cfg.NodeID,
		Models:        models,
		MaxConcurrent: a.cfg.MaxConcurrent,
		OllamaVersion: version,
		Protocol:      wire.ProtocolVersion,
		Agent:         a.agentTag,
	}
	if a.cfg.Identity != nil {
		reg.Key = a.cfg.Identity.Public()
	}
	if err := s.send(reg); err != nil {
		s.close(websocket.StatusInternalError, "")
		return false, fmt.Errorf("send register: %w", err)
	}
	timer := time.NewTimer(a.cfg.RegisterTimeout)
	defer timer.Stop()
	select {
	case <-s.registered:
	case <-s.readDone:
		s.close(websocket.StatusNormalClosure, "")
		return false, fmt.Errorf("wait for registered: %w", s.readErr)
	case <-timer.C:
		s.close(websocket.StatusPolicyViolation, "registration timeout")
		return false, fmt.Errorf("wait for registered: %w", errRegisterTimeout)
	case <-ctx.Done():
		select {
		case <-s.registered:
			// Registered at the same moment: serve drains the requests
			// that may already have arrived.
		default:
			s.close(websocket.StatusNormalClosure, "node shutting down")
			return false, nil
		}
	}
	a.mu.Lock()
	a.current = s
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.current == s {
			a.current = nil
		}
		a.mu.Unlock()
	}()
	a.log.Info("registered with the router", "router", a.URL(), "models", len(models), "protocol", max(s.protocol, 1))
	a.printf("%s  connected to the router, serving %s\n", a.stamp(), plural(len(models), "model"))
	if s.protocol < wire.ProtocolVersion {
		a.printf("%s  the router speaks protocol v1: it is told of model changes by registering again, and the node leaves it while it cannot serve\n", a.stamp())
	}
	return true, s.serve(ctx)
}

// v1Leave reports why the node must leave a v1 router now: its models
// changed (it registers again at once), or it cannot serve (it comes back
// when it can). A v2 router hears of both without a new link.
func (s *session) v1Leave() error {
	if s.protocol >= wire.ProtocolVersion {
		return nil
	}
	switch {
	case s.changed:
		return errV1Models
	case !s.a.serving():
		return errV1Unavailable
	}
	return nil
}

// serve runs the registered link: heartbeats, model polls, and the reaction
// to a lost link or to shutdown.
func (s *session) serve(ctx context.Context) error {
	a := s.a
	hb := time.NewTicker(a.cfg.HeartbeatInterval)
	defer hb.Stop()
	poll := time.NewTicker(a.cfg.ModelsPollInterval)
	defer poll.Stop()
	if ctx.Err() == nil {
		s.heartbeat()
	}
	for {
		select {
		case <-ctx.Done():
			s.drain(hb.C, "node shutting down")
			return nil
		case <-s.readDone:
			s.close(websocket.StatusNormalClosure, "")
			return fmt.Errorf("read from router: %w", s.readErr)
		case <-hb.C:
			s.heartbeat()
		case <-poll.C:
			s.pollModels(ctx)
		case <-a.kick:
			s.heartbeat() // the owner paused or resumed the node
		}
		if err := s.v1Leave(); err != nil {
			// Requests in flight are let finish (bounded by the drain
			// grace), as at shutdown, then the link is closed.
			s.drain(hb.C, "node leaving: "+leaveReason(err))
			return err
		}
	}
}

// drain stops taking requests, tells the router, lets in-flight requests
// finish for up to DrainGrace, then closes the link with 1000.
func (s *session) drain(hbC <-chan time.Time, reason string) {
	a := s.a
	s.mu.Lock()
	s.closing, s.draining = true, true
	n := len(s.inflight)
	s.mu.Unlock()
	s.heartbeat()
	if n > 0 {
		a.log.Info("draining", "in_flight", n, "grace", a.cfg.DrainGrace.String())
		a.printf("%s  shutting down: waiting up to %s for %s\n", a.stamp(), a.cfg.DrainGrace, plural(n, "request"))
	}
	idle := make(chan struct{})
	go func() {
		s.wg.Wait() // no Add can happen any more: closing is set
		close(idle)
	}()
	grace := time.NewTimer(a.cfg.DrainGrace)
	defer grace.Stop()
	for waiting := true; waiting; {
		select {
		case <-idle:
			waiting = false
		case <-grace.C:
			s.mu.Lock()
			left := len(s.inflight)
			s.mu.Unlock()
			a.log.Warn("drain grace over; canceling requests", "in_flight", left)
			s.reqCancel()
			<-idle
			waiting = false
		case <-s.readDone:
			s.reqCancel()
			<-idle
			waiting = false
		case <-hbC:
			s.heartbeat()
		}
	}
	s.close(websocket.StatusNormalClosure, reason)
	a.log.Info("link closed", "reason", reason)
}

// leaveReason is the close reason for leaving a v1 router.
func leaveReason(err error) string {
	if errors.Is(err, errV1Models) {
		return "models changed"
	}
	return "cannot serve now"
}

// close ends the session: no new requests, the running ones are canceled
// and waited for, the link is closed and the reader waited for.
func (s *session) close(code websocket.StatusCode, reason string) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.reqCancel()
	s.wg.Wait()
	if err := s.conn.Close(code, reason); err != nil {
		s.a.log.Debug("close link", "err", err)
	}
	<-s.readDone
	s.connCancel()
	<-s.watchDone
}

// readLoop reads frames until the link fails; a reader always runs so that
// pings and close frames are answered.
func (s *session) readLoop() {
	defer close(s.readDone)
	for {
		_, data, err := s.conn.Read(s.connCtx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				e := closeErr{code: ce.Code, reason: ce.Reason, err: err}
				if ce.Reason == wire.CloseReRegistered {
					s.readErr = fmt.Errorf("%w: %w", errReRegistered, e)
				} else {
					s.readErr = e
				}
				return
			}
			s.readErr = err
			return
		}
		s.handle(data)
	}
}

// handle dispatches one frame from the router. Unknown types are ignored,
// as v1 peers do.
func (s *session) handle(data []byte) {
	a := s.a
	f, err := wire.DecodeRouterFrame(data)
	if err != nil {
		a.log.Warn("ignoring a bad frame from the router", "err", err)
		return
	}
	switch f.Type {
	case wire.TypeRegistered:
		if f.NodeID != "" && f.NodeID != a.cfg.NodeID {
			a.log.Warn("router acknowledged another node id", "acknowledged", f.NodeID)
		}
		s.regOnce.Do(func() {
			s.protocol = f.Protocol
			close(s.registered)
		})
	case wire.TypeChallenge:
		s.prove(f.Nonce)
	case wire.TypeInferenceReq:
		s.start(f)
	case wire.TypeCancelRequest:
		s.cancel(f.RequestID)
	default:
		a.log.Debug("ignoring a frame of unknown type", "type", f.Type)
	}
}

// prove answers a router's challenge with the key's signature of it, for
// the router host the node dialed. Without a key, or for a second
// challenge, it sends nothing (the router then gives up on the link).
func (s *session) prove(nonce string) {
	a := s.a
	select {
	case <-s.registered:
		a.log.Warn("ignoring a challenge after registration")
		return
	default:
	}
	b, err := base64.StdEncoding.DecodeString(nonce)
	if a.cfg.Identity == nil || err != nil || len(b) != identity.NonceSize {
		a.log.Warn("ignoring a challenge the node cannot answer", "keyless", a.cfg.Identity == nil)
		return
	}
	sig := a.cfg.Identity.Sign(b, s.host, a.cfg.NodeID)
	if err := s.send(wire.Proof{Type: wire.TypeProof, Signature: sig}); err != nil {
		a.log.Debug("send proof", "err", err)
	}
}

// send writes one frame. Writes from several goroutines are serialised by
// the connection; each blocks (bounded by WriteTimeout, see watchWrites)
// until the router takes it, so a slow router slows the relays instead of
// growing a queue.
func (s *session) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return s.write(b)
}

// write sends one encoded frame.
func (s *session) write(b []byte) error {
	if len(b) > wire.MaxNodeFrameBytes {
		return fmt.Errorf("%w: %d bytes", errFrameTooLarge, len(b))
	}
	// A context that cannot end, so the connection arms no timer per
	// frame (a context with a deadline per token cost the agent a timer
	// and a cancellation watcher each); watchWrites bounds the write.
	s.writing.Add(1)
	err := s.conn.Write(context.Background(), websocket.MessageText, b)
	s.written.Add(1)
	s.writing.Add(-1)
	if err != nil {
		return fmt.Errorf("%w: %w", errSend, err)
	}
	return nil
}

// watchWrites closes the link when writes are pending and none has
// returned for WriteTimeout: the router stopped reading (or the network
// did), and the writers blocked behind it fail instead of waiting forever.
// It ends with connCtx.
func (s *session) watchWrites() {
	defer close(s.watchDone)
	limit := s.a.cfg.WriteTimeout
	tick := time.NewTicker(max(limit/4, time.Millisecond))
	defer tick.Stop()
	var last uint64
	since := time.Now() // when writes were last seen progressing, or none pending
	for {
		var now time.Time
		select {
		case <-s.connCtx.Done():
			return
		case now = <-tick.C:
		}
		if n := s.written.Load(); n != last || s.writing.Load() == 0 {
			last, since = n, now
			continue
		}
		if now.Sub(since) >= limit {
			s.a.log.Warn("the router takes no frames; closing the link", "waited", now.Sub(since).Round(time.Millisecond).String())
			_ = s.conn.CloseNow()
			return
		}
	}
}

// heartbeat sends the node's state, with the models Ollama has in memory
// when /api/ps answers.
func (s *session) heartbeat() {
	a := s.a
	s.mu.Lock()
	hb := wire.Heartbeat{
		Type:           wire.TypeHeartbeat,
		NodeID:         a.cfg.NodeID,
		ActiveRequests: len(s.inflight),
		Available:      !s.draining,
	}
	s.mu.Unlock()
	wasAvailable := a.available()
	ctx, cancel := context.WithTimeout(s.connCtx, min(max(a.cfg.HeartbeatInterval/2, time.Second), 5*time.Second))
	ps, err := a.ol.PS(ctx)
	cancel()
	timedOut := errors.Is(err, context.DeadlineExceeded) && s.connCtx.Err() == nil
	if timedOut {
		s.psTimeouts++
	} else {
		s.psTimeouts = 0
	}
	var status *ollama.StatusError
	switch {
	case err == nil:
		// Only the models this node serves: the others are the owner's
		// business (and a name the router would refuse, or more than it
		// takes, would make it drop the whole heartbeat).
		for _, m := range ps.Models {
			if a.serves(m.Name) && len(hb.LoadedModels) < wire.MaxModelsPerNode {
				hb.LoadedModels = append(hb.LoadedModels, m.Name)
			}
		}
		a.setPSDown(false)
	case errors.As(err, &status):
		// Ollama answered, so it is up and not frozen; it just has no
		// list to give (an Ollama without /api/ps, say).
		a.log.Debug("cannot list loaded models", "err", err)
		a.setPSDown(false)
	case errors.Is(err, ollama.ErrUnreachable) || s.psTimeouts >= 2:
		// Ollama is gone, or frozen (two looks in a row without an
		// answer: one slow answer, say while a model loads, is not
		// enough): say so now rather than at the next models poll.
		a.setPSDown(true)
	default:
		a.log.Debug("cannot list loaded models", "err", err)
	}
	now := a.available()
	a.logAvailability(wasAvailable, now, err)
	hb.Available = hb.Available && now && !a.gate.paused()
	if err := s.send(hb); err != nil {
		a.log.Debug("send heartbeat", "err", err)
	}
}

// pollModels lists Ollama's models again and tells the router what changed.
func (s *session) pollModels(ctx context.Context) {
	a := s.a
	wasAvailable := a.available()
	// Bounded, so that a frozen Ollama cannot hold up the heartbeats that
	// this loop also sends: the node then says it is unavailable instead
	// of falling silent and being dropped.
	pctx, cancel := context.WithTimeout(ctx, max(a.cfg.HeartbeatInterval, time.Second))
	changed, err := a.refreshModels(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	switch {
	case err != nil:
	case changed:
		models := a.currentModels()
		if len(models) == 0 {
			a.log.Warn("Ollama has no models any more; taking no requests until a model is pulled")
			break
		}
		if s.protocol < wire.ProtocolVersion {
			s.changed = true // a v1 router ignores models_update: serve registers again
		} else if err := s.send(wire.ModelsUpdate{Type: wire.TypeModelsUpdate, Models: models}); err != nil {
			a.log.Debug("send models_update", "err", err)
		}
		a.log.Info("models changed", "models", len(models))
		var b strings.Builder
		fmt.Fprintf(&b, "%s  models changed\n", a.stamp())
		writeModels(&b, models)
		a.printf("%s", b.String())
	}
	if now := a.available(); now != wasAvailable {
		a.logAvailability(wasAvailable, now, err)
		s.heartbeat()
	}
}

// logAvailability says when the node stops or starts taking requests
// because of what a look at Ollama found (err: that look's error). A node
// that went down with no error had its models run out, which pollModels
// says in its own words.
func (a *Agent) logAvailability(was, now bool, err error) {
	switch {
	case was && !now && err != nil:
		a.log.Warn("cannot reach Ollama; taking no requests until it answers", "err", err)
	case !was && now:
		a.log.Info("Ollama is back; taking requests again")
	}
}

func (a *Agent) stamp() string { return a.cfg.Now().Format("2006-01-02 15:04:05") }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// dialedHost is the host (and port, if the URL names one) of a router URL.
func dialedHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Host
}
