// Package server owns the router's public HTTP API: the routes in one place,
// client addressing and rate limits, the consumer dialects (one file each),
// the read-only views (health, models, metrics, admin) and the node
// WebSocket endpoint. Every chat dialect hands its validated request to the
// one dispatch path.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ratelimit"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Config configures the HTTP API. Limits of 0 are off; DefaultConfig has
// the protocol's defaults.
type Config struct {
	RateChatRPM            int // per IP per minute on chat endpoints
	RateWSRPM              int // per IP per minute on /ws/node upgrades
	RateDefaultRPM         int // per IP per minute on every other path
	MaxConcurrentChatPerIP int
	MaxMessages            int
	MaxMessageLength       int // characters (code points) per message
	MaxTotalChars          int // characters over all messages
	MaxBodyBytes           int64
	// BodyTimeout bounds the time to receive a request body (default
	// 10s; negative: none).
	BodyTimeout time.Duration
	// MaxConcurrentPerIP bounds the requests of one client IP in flight
	// at once on the read endpoints (health, models, metrics, admin, the
	// Ollama and OpenAI lists); 0: off. Chats have their own bound.
	MaxConcurrentPerIP int
	// WriteStall bounds how long one write to a consumer may block: a
	// consumer that stops reading loses its stream, and its slot, after it
	// (default 30s; negative: no bound).
	WriteStall time.Duration

	TrustedProxies []netip.Prefix // peers whose X-Forwarded-For is believed
	AdminToken     string         // empty: /admin answers 401 always
	Inbound        *filter.Inbound
	// Classifier, if set, judges the consumer's own messages after the
	// inbound patterns and the model and draining checks pass; a refusal
	// is the patterns' 400. One that fails or times out lets the request
	// through (the patterns already ran).
	Classifier filter.Classifier

	// Collectors are more Prometheus collectors for /metrics/prometheus
	// (the canaries', say).
	Collectors []prometheus.Collector

	// Web, if set, answers the GET and HEAD requests no API route takes:
	// the web page at / (internal/web). Nil: those are 404 too.
	Web http.Handler

	Logger *slog.Logger
	Now    func() time.Time
}

// DefaultConfig returns the v1 limits (protocol §1, §3).
func DefaultConfig() Config {
	return Config{
		RateChatRPM:            20,
		RateWSRPM:              5,
		RateDefaultRPM:         60,
		MaxConcurrentChatPerIP: 3,
		MaxMessages:            wire.MaxMessages,
		MaxMessageLength:       wire.MaxMessageChars,
		MaxTotalChars:          wire.MaxTotalChars,
		MaxBodyBytes:           wire.MaxFrameBytes,
		BodyTimeout:            10 * time.Second,
		MaxConcurrentPerIP:     8,
	}
}

// Server is the router's HTTP API. Safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub.Hub
	dispatch *dispatch.Dispatcher
	started  time.Time
	mux      *http.ServeMux
	metrics  *Metrics

	chatRate, wsRate, defaultRate *ratelimit.Buckets
	chatConc, readConc            *ratelimit.Concurrency

	draining atomic.Bool
	peers    Peers // the other routers of a network; nil: alone
}

// New returns the API over the nodes of h, dispatching chats through d.
func New(cfg Config, h *hub.Hub, d *dispatch.Dispatcher, m *Metrics) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WriteStall == 0 {
		cfg.WriteStall = 30 * time.Second
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 10 * time.Second
	}
	if m == nil {
		m = NewMetrics(h, cfg.Collectors...)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, hub: h, dispatch: d, started: cfg.Now(), metrics: m,
		chatRate:    ratelimit.NewBuckets(cfg.RateChatRPM, cfg.Now),
		wsRate:      ratelimit.NewBuckets(cfg.RateWSRPM, cfg.Now),
		defaultRate: ratelimit.NewBuckets(cfg.RateDefaultRPM, cfg.Now),
		chatConc:    ratelimit.NewConcurrency(cfg.MaxConcurrentChatPerIP),
		readConc:    ratelimit.NewConcurrency(cfg.MaxConcurrentPerIP),
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/chat", s.handleChat)
	mux.HandleFunc("GET /ws/node", s.handleNode)
	mux.Handle("GET /health", s.limited(s.handleHealth))
	mux.Handle("GET /api/models", s.limited(s.handleModels))
	mux.Handle("GET /api/network", s.limited(s.handleNetwork))
	mux.Handle("GET /api/network/events", s.networkEvents())
	mux.Handle("GET /metrics", s.limited(s.handleMetricsJSON))
	mux.Handle("GET /metrics/prometheus", s.limited(s.metrics.ServeHTTP))
	mux.Handle("GET /admin/nodes", s.limited(s.handleAdminNodes))
	mux.Handle("GET /admin/bans", s.limited(s.handleAdminBans))
	mux.Handle("POST /admin/bans", s.limited(s.handleAdminBans))
	mux.Handle("DELETE /admin/bans/{id}", s.limited(s.handleAdminBans))
	s.compatRoutes(mux)
	mux.Handle("/", s.limited(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Web != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			s.cfg.Web.ServeHTTP(w, r)
			return
		}
		writeDetail(w, http.StatusNotFound, "Not Found")
	}))
	s.mux = mux
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		s.mux.ServeHTTP(w, r)
		return
	}
	// Until readBody has the whole body, an answer closes the connection,
	// and once the handler is done a read deadline already passed ends
	// what net/http still reads of the body: it would drain the unread
	// body before writing the answer and again when closing it, with no
	// deadline, and a client holding its body back (refused before it
	// was read: a 429, a 401, a 404) would hold the answer and the
	// connection.
	w.Header().Set("Connection", "close")
	s.mux.ServeHTTP(w, r)
	if w.Header().Get("Connection") == "close" {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

// Drain makes the server refuse new chat requests (503) while the ones in
// flight finish.
func (s *Server) Drain() { s.draining.Store(true) }

// WaitIdle waits until no chat stream is in flight or ctx ends.
func (s *Server) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.metrics.requestsActive.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// limited applies the default per-IP bucket to a read endpoint.
func (s *Server) limited(h http.HandlerFunc) http.Handler {
	return s.limitedAs(tooMany, h)
}

// limitedAs is limited with the dialect's own 429 writer.
func (s *Server) limitedAs(refuse func(w http.ResponseWriter, detail string, retry time.Duration), h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := s.clientIP(r)
		if ok, retry := s.defaultRate.Allow(ip); !ok {
			refuse(w, "Too many requests", retry)
			return
		}
		if !s.readConc.Acquire(ip) {
			refuse(w, "Too many concurrent requests", time.Second)
			return
		}
		defer s.readConc.Release(ip)
		h(w, r)
	})
}

// clientIP is the socket peer, or, when that peer is a trusted proxy, the
// nearest untrusted address of X-Forwarded-For.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if !s.trusted(peer) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a.String()
		}
	}
	return peer.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Consumer-facing error bodies are {"detail": "..."} (protocol §1).
func writeDetail(w http.ResponseWriter, status int, detail any) {
	writeJSON(w, status, map[string]any{"detail": detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func tooMany(w http.ResponseWriter, detail string, retry time.Duration) {
	setRetryAfter(w, retry)
	writeDetail(w, http.StatusTooManyRequests, detail)
}

// setRetryAfter sets Retry-After in whole seconds, at least 1.
func setRetryAfter(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retry/time.Second))))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":         "healthy",
		"uptime_seconds": int(s.cfg.Now().Sub(s.started).Seconds()),
		"node_count":     s.nodeCount(),
	})
}

type capability struct {
	Thinking  bool `json:"thinking"`
	ToolCalls bool `json:"tool_calls"`
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	models := s.models(false)
	names := make([]string, 0, len(models))
	caps := make(map[string]capability, len(models))
	for _, m := range models {
		names = append(names, m.Name)
		caps[m.Name] = capability{Thinking: m.Thinking, ToolCalls: m.Tools}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": names, "capabilities": caps})
}

type modelCount struct {
	Name      string `json:"name"`
	NodeCount int    `json:"node_count"`
}

func (s *Server) handleMetricsJSON(w http.ResponseWriter, r *http.Request) {
	models := s.hub.Models(true)
	avail := make([]modelCount, 0, len(models))
	for _, m := range models {
		avail = append(avail, modelCount{Name: m.Name, NodeCount: m.Nodes})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"nodes_connected":        s.hub.NodeCount(),
		"nodes_registered_total": s.hub.RegisteredTotal(),
		"requests_total":         s.metrics.requestsTotal.Load(),
		"requests_active":        s.metrics.requestsActive.Load(),
		"requests_errors_total":  s.metrics.requestsErrors.Load(),
		"models_available":       avail,
		"uptime_seconds":         int(s.cfg.Now().Sub(s.started).Seconds()),
	})
}

type adminNode struct {
	NodeID           string            `json:"node_id"`
	IP               string            `json:"ip"`
	Models           []string          `json:"models"`
	ConnectedSeconds int               `json:"connected_seconds"`
	ActiveRequests   int               `json:"active_requests"`
	OllamaVersion    string            `json:"ollama_version"`
	MaxConcurrent    int               `json:"max_concurrent"`
	Available        bool              `json:"available"`
	Agent            string            `json:"agent,omitempty"`
	Key              string            `json:"key,omitempty"`
	Tiers            map[string]string `json:"tiers"`
	Record           adminRecord       `json:"record"`
}

// adminRecord is the router's record of a node, as the operator sees it.
type adminRecord struct {
	Reputation   float64                `json:"reputation"`
	Breaker      string                 `json:"breaker"`
	TokensPerSec float64                `json:"tokens_per_second"`
	Canary       map[string]adminCanary `json:"canary,omitempty"`
}

type adminCanary struct {
	Agreed      int    `json:"agreed"`
	Disagreed   int    `json:"disagreed"`
	Verified    bool   `json:"verified"`
	Quarantined bool   `json:"quarantined"`
	Last        string `json:"last,omitempty"`
}

func (s *Server) handleAdminNodes(w http.ResponseWriter, r *http.Request) {
	if !s.adminAuthorized(r) {
		writeDetail(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	nodes := s.hub.Nodes()
	out := make([]adminNode, 0, len(nodes))
	for _, n := range nodes {
		rec := adminRecord{Reputation: n.Reputation, Breaker: n.Breaker, TokensPerSec: n.TokensPerSec}
		for model, c := range n.Canary {
			if rec.Canary == nil {
				rec.Canary = map[string]adminCanary{}
			}
			ac := adminCanary{Agreed: c.Agreed, Disagreed: c.Disagreed, Verified: c.Verified, Quarantined: c.Quarantined}
			if !c.Last.IsZero() {
				ac.Last = c.Last.UTC().Format(time.RFC3339)
			}
			rec.Canary[model] = ac
		}
		out = append(out, adminNode{
			NodeID: n.NodeID, IP: MaskIP(n.IP), Models: n.Models,
			ConnectedSeconds: int(n.ConnectedFor.Seconds()), ActiveRequests: n.ActiveRequests,
			OllamaVersion: n.OllamaVersion, MaxConcurrent: n.MaxConcurrent, Available: n.Available, Agent: n.Agent,
			Key: n.Key, Tiers: n.Tiers, Record: rec,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

// handleAdminBans lists the bans (GET), bans a node id (POST
// {"node_id": "..."}) or lifts a ban (DELETE /admin/bans/{id}). Bans of
// keyed nodes name the key's node id; they are kept across restarts.
func (s *Server) handleAdminBans(w http.ResponseWriter, r *http.Request) {
	if !s.adminAuthorized(r) {
		writeDetail(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"bans": s.hub.Bans()})
	case http.MethodPost:
		body, rerr := readBody(w, r, 4<<10, s.cfg.BodyTimeout)
		if rerr != nil {
			writeDetail(w, rerr.Status, rerr.Detail)
			return
		}
		var req struct {
			NodeID string `json:"node_id"`
		}
		if json.Unmarshal(body, &req) != nil || req.NodeID == "" || len(req.NodeID) > wire.MaxNodeID {
			writeDetail(w, http.StatusUnprocessableEntity, "node_id: required, at most 64 characters")
			return
		}
		s.hub.Ban(req.NodeID)
		s.shareBan(r.Context(), req.NodeID, true)
		writeJSON(w, http.StatusOK, map[string]any{"banned": req.NodeID})
	case http.MethodDelete:
		id := r.PathValue("id")
		if id == "" {
			writeDetail(w, http.StatusNotFound, "Not Found")
			return
		}
		s.hub.Unban(id)
		s.shareBan(r.Context(), id, false)
		writeJSON(w, http.StatusOK, map[string]any{"unbanned": id})
	}
}

func (s *Server) adminAuthorized(r *http.Request) bool {
	if s.cfg.AdminToken == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) == 1
}

// MaskIP hides the host part of an address: a.b.x.x for IPv4, the first two
// groups for IPv6.
func MaskIP(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "x"
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return strconv.Itoa(int(b[0])) + "." + strconv.Itoa(int(b[1])) + ".x.x"
	}
	b := a.As16()
	return strconv.FormatUint(uint64(b[0])<<8|uint64(b[1]), 16) + ":" + strconv.FormatUint(uint64(b[2])<<8|uint64(b[3]), 16) + ":x:x:x:x:x:x"
}

// bounded wraps a dialect's event writer so that no write to the consumer
// blocks longer than WriteStall. The deadline is moved at most once a second
// (not per token) and cleared when the request ends, so it cannot outlive
// the request on a kept-alive connection; call the returned stop then.
func (s *Server) bounded(w http.ResponseWriter, emit func(dispatch.Event) error) (func(dispatch.Event) error, func()) {
	if s.cfg.WriteStall < 0 {
		return emit, func() {}
	}
	rc := http.NewResponseController(w)
	var set time.Time
	return func(ev dispatch.Event) error {
			if now := time.Now(); now.Sub(set) >= time.Second {
				_ = rc.SetWriteDeadline(now.Add(s.cfg.WriteStall))
				set = now
			}
			return emit(ev)
		}, func() {
			if !set.IsZero() {
				_ = rc.SetWriteDeadline(time.Time{})
			}
		}
}
