package server

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idleclaw/idleclaw/internal/hub"
)

// Metrics counts what the router does, for the v1 JSON view (/metrics) and
// for Prometheus (/metrics/prometheus, its own registry). Safe for
// concurrent use.
type Metrics struct {
	requestsTotal  atomic.Int64
	requestsActive atomic.Int64
	requestsErrors atomic.Int64

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	tokens   prometheus.Counter
	ttft     prometheus.Histogram
	handler  http.Handler
}

// NewMetrics registers the router's metrics on a registry of its own.
func NewMetrics(h *hub.Hub, extra ...prometheus.Collector) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "idleclaw_chat_requests_total", Help: "Chat requests by dialect and outcome.",
	}, []string{"dialect", "outcome"})
	m.tokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "idleclaw_completion_tokens_total", Help: "Completion tokens relayed, as counted by nodes.",
	})
	m.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "idleclaw_time_to_first_token_seconds", Help: "Time from request to the first answer token.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	m.reg.MustRegister(m.requests, m.tokens, m.ttft,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "idleclaw_nodes_connected", Help: "Registered nodes."},
			func() float64 { return float64(h.NodeCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "idleclaw_nodes_registered_total", Help: "Node registrations since start."},
			func() float64 { return float64(h.RegisteredTotal()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "idleclaw_chat_requests_active", Help: "Chat streams in flight."},
			func() float64 { return float64(m.requestsActive.Load()) }),
		collectors.NewGoCollector(),
		tierCollector{h},
	)
	m.reg.MustRegister(extra...)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// ServeHTTP serves the Prometheus exposition.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// begin counts a chat request that passed validation; the returned func
// records how it ended.
func (m *Metrics) begin(dialect string) func(outcome string, tokens int, firstToken time.Duration) {
	m.requestsTotal.Add(1)
	m.requestsActive.Add(1)
	return func(outcome string, tokens int, firstToken time.Duration) {
		m.requestsActive.Add(-1)
		switch outcome {
		case "ok", "length", "canceled":
		default: // error, no_node, busy and the timeouts
			m.requestsErrors.Add(1)
		}
		m.requests.WithLabelValues(dialect, outcome).Inc()
		m.tokens.Add(float64(tokens))
		if firstToken > 0 {
			m.ttft.Observe(firstToken.Seconds())
		}
	}
}

// tierCollector exports the nodes of each model by trust tier, read from
// the hub at each scrape.
type tierCollector struct{ h *hub.Hub }

var tierDesc = prometheus.NewDesc("idleclaw_model_nodes", "Registered nodes per model and trust class (verified, unverified, quarantined).",
	[]string{"model", "trust"}, nil)

func (c tierCollector) Describe(ch chan<- *prometheus.Desc) { ch <- tierDesc }

func (c tierCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.h.Models(true) {
		for trust, n := range map[string]int{"verified": m.Verified, "unverified": m.Unverified, "quarantined": m.Quarantined} {
			ch <- prometheus.MustNewConstMetric(tierDesc, prometheus.GaugeValue, float64(n), m.Name, trust)
		}
	}
}
