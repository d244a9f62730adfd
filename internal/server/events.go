package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/idleclaw/idleclaw/internal/ratelimit"
)

// GET /api/network/events (ext): the document of GET /api/network as a
// server-sent event stream, for the web page's live view. Each event is
// one line `data: <json>` with the fields of /api/network plus
// completion_tokens_total (the answer tokens relayed since the router
// started, counted as each answer ends) and tokens_per_second (their rate
// over the last EventsRateWindow). An event is sent when the document
// changed (uptime aside), at most once per EventsInterval, and at least
// every EventsRefresh. A stream lasts EventsLifetime, then ends (the
// browser's EventSource reconnects after `retry`), and ends within an
// interval of the router's drain.
//
// Opening one counts against the default per-IP bucket; an IP holds at
// most EventsPerIP streams (429 past that) and the router at most
// EventsMax (503 past that).

const (
	EventsInterval   = time.Second
	EventsRefresh    = 15 * time.Second
	EventsLifetime   = 10 * time.Minute
	EventsRateWindow = 10 * time.Second
	EventsPerIP      = 2
	EventsMax        = 256
	eventsRetryMS    = 3000
)

// networkEvent is one event: the network view and the answer rate.
type networkEvent struct {
	networkView
	CompletionTokensTotal int64   `json:"completion_tokens_total"`
	TokensPerSecond       float64 `json:"tokens_per_second"`
}

type networkEvents struct {
	s     *Server
	perIP *ratelimit.Concurrency
	open  atomic.Int64
	rate  tokenRate
}

func (s *Server) networkEvents() http.Handler {
	return &networkEvents{s: s, perIP: ratelimit.NewConcurrency(EventsPerIP)}
}

// tokensTotal reads the relayed-token counter.
func (s *Server) tokensTotal() int64 {
	var m dto.Metric
	if err := s.metrics.tokens.Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}

// tokenSample is the token counter at a moment.
type tokenSample struct {
	at    time.Time
	total int64
}

// tokenRate is the rate of the token counter over the last
// EventsRateWindow, from samples that the streams take as they tick (one
// set for all of them). Safe for concurrent use.
type tokenRate struct {
	mu      sync.Mutex
	samples []tokenSample // oldest first; the first is at most one window old, or the oldest known
}

// at notes the counter's total at now and returns its rate per second
// since the sample one window back (or the oldest, when the samples span
// less), to a tenth.
func (r *tokenRate) at(now time.Time, total int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.samples); n == 0 || now.Sub(r.samples[n-1].at) >= EventsInterval/2 {
		r.samples = append(r.samples, tokenSample{now, total})
	}
	// Keep the newest sample that is a window old as the baseline.
	drop := 0
	for drop+1 < len(r.samples) && now.Sub(r.samples[drop+1].at) >= EventsRateWindow {
		drop++
	}
	r.samples = append(r.samples[:0], r.samples[drop:]...)
	base := r.samples[0]
	span := now.Sub(base.at)
	if span <= 0 || total <= base.total {
		return 0
	}
	return math.Round(float64(total-base.total)/span.Seconds()*10) / 10
}

func (e *networkEvents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := e.s
	ip := s.clientIP(r)
	if ok, retry := s.defaultRate.Allow(ip); !ok {
		tooMany(w, "Too many requests", retry)
		return
	}
	if !e.perIP.Acquire(ip) {
		tooMany(w, "Too many concurrent requests", 5*time.Second)
		return
	}
	defer e.perIP.Release(ip)
	if e.open.Add(1) > EventsMax {
		e.open.Add(-1)
		setRetryAfter(w, 10*time.Second)
		writeDetail(w, http.StatusServiceUnavailable, "Too many listeners; retry shortly")
		return
	}
	defer e.open.Add(-1)
	if s.draining.Load() {
		writeDetail(w, http.StatusServiceUnavailable, "Server is shutting down")
		return
	}

	rc := http.NewResponseController(w)
	write := func(b []byte) error {
		if s.cfg.WriteStall > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteStall))
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("network events: write: %w", err)
		}
		if err := rc.Flush(); err != nil {
			return fmt.Errorf("network events: flush: %w", err)
		}
		return nil
	}
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	tick := time.NewTicker(EventsInterval)
	defer tick.Stop()
	start := time.Now()
	var last []byte // the last event sent, uptime zeroed
	var sent time.Time
	var buf bytes.Buffer
	for first := true; ; first = false {
		now := time.Now()
		ev := networkEvent{networkView: s.network(), CompletionTokensTotal: s.tokensTotal()}
		ev.TokensPerSecond = e.rate.at(now, ev.CompletionTokensTotal)
		uptime := ev.UptimeSeconds
		ev.UptimeSeconds = 0
		key, _ := json.Marshal(ev)
		if first || !bytes.Equal(key, last) || now.Sub(sent) >= EventsRefresh {
			ev.UptimeSeconds = uptime
			buf.Reset()
			if first {
				fmt.Fprintf(&buf, "retry: %d\n", eventsRetryMS)
			}
			buf.WriteString("data: ")
			_ = json.NewEncoder(&buf).Encode(ev) // ends with the line's \n
			buf.WriteString("\n")
			if write(buf.Bytes()) != nil {
				return
			}
			last, sent = key, now
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		if s.draining.Load() || time.Since(start) >= EventsLifetime {
			return
		}
	}
}
