// Package canary owns the router's check that nodes serve the model they
// claim: canary requests that look like consumer traffic (varied prompts,
// the router's own system prompt, a seed and temperature 0, sent through
// the same dispatch path) go to every node of a model, and their answers
// are compared with those of the other nodes that registered the same
// digest, or with the operator's trusted nodes (compare.go). Each verdict
// goes to the node's record in the hub, where the evidence accumulates:
// a node is verified for a model when its answers keep agreeing, and
// quarantined (never sent the model) when they keep disagreeing. Models
// that should know simple facts (reported at a billion parameters or
// more) are also asked some, as the upstream network's probes did.
//
// Canaries cost each node at most Config.Share of its capacity (its
// request slots over the time it is connected), measured as the time its
// canaries held a slot.
package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
)

// Config tunes a Runner. Zero fields take the defaults noted.
type Config struct {
	// Share is the part of each node's capacity canaries may use
	// (default 0.01: 1%); negative turns canaries off.
	Share float64
	// Interval is how often the runner looks for canaries to send
	// (default 10s).
	Interval time.Duration
	// Tokens is the answer length asked (num_predict, default 48).
	Tokens int
	// Prompts replace the built-in prompts.
	Prompts []string
	// Facts replace the built-in fact probes.
	Facts []Fact
	// Parallel bounds the canaries of one round in flight at once (0: all
	// of a group together). Nodes are other machines; a test that runs
	// every node's Ollama on one machine sets 1.
	Parallel int
	// MinFactParams is the reported parameter count from which a model
	// is asked facts (default 1e9).
	MinFactParams float64
	Logger        *slog.Logger
	Now           func() time.Time
	Rand          func() float64
}

// Fact is a prompt and the pattern a right answer matches.
type Fact struct {
	Prompt string
	Answer *regexp.Regexp
}

func (c *Config) setDefaults() {
	if c.Share == 0 {
		c.Share = 0.01
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.Tokens <= 0 {
		c.Tokens = 48
	}
	if len(c.Prompts) == 0 {
		c.Prompts = defaultPrompts
	}
	if c.Facts == nil {
		c.Facts = defaultFacts
	}
	if c.MinFactParams <= 0 {
		c.MinFactParams = 1e9
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
}

// Runner sends canaries and records their verdicts. Run it once.
type Runner struct {
	cfg Config
	hub *hub.Hub
	d   *dispatch.Dispatcher
	log *slog.Logger

	sent, judged, agreed atomic.Int64
	slotNanos            atomic.Int64 // slot time all canaries took

	mu    sync.Mutex               // guards the following fields
	spent map[string]time.Duration // slot time canaries took, by node
	tally map[string][2]int        // verdicts by node: agreed, disagreed
	next  int                      // the next prompt
}

// Stats are what the canaries did, for metrics and reports.
type Stats struct {
	Sent, Judged, Agreed int64
	SlotTime             time.Duration // slot time canaries held, all nodes
}

// New returns a Runner over h's nodes, sending through d.
func New(cfg Config, h *hub.Hub, d *dispatch.Dispatcher) *Runner {
	cfg.setDefaults()
	return &Runner{cfg: cfg, hub: h, d: d, log: cfg.Logger, spent: map[string]time.Duration{}, tally: map[string][2]int{}}
}

// Stats reports the totals so far.
func (r *Runner) Stats() Stats {
	return Stats{Sent: r.sent.Load(), Judged: r.judged.Load(), Agreed: r.agreed.Load(), SlotTime: time.Duration(r.slotNanos.Load())}
}

// Spent is the slot time canaries took from one node.
func (r *Runner) Spent(nodeID string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spent[nodeID]
}

// Verdicts are the canary verdicts a node got so far (while connected).
func (r *Runner) Verdicts(nodeID string) (agreed, disagreed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.tally[nodeID]
	return c[0], c[1]
}

// Run sends canaries until ctx ends; it returns when every canary it
// started has ended.
func (r *Runner) Run(ctx context.Context) {
	if r.cfg.Share < 0 {
		return
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.Round(ctx)
	}
}

// Round runs one round: for every model, the nodes (per digest) whose
// canary budget allows and that can take a request now are sent the same
// canary, and then judged against each other. It returns when the round's
// canaries have ended.
func (r *Runner) Round(ctx context.Context) {
	targets := r.hub.Targets()
	r.forgetGone(targets)
	groups := map[string][]hub.Target{} // model and digest
	for _, t := range targets {
		groups[t.Model+"\x00"+t.Digest] = append(groups[t.Model+"\x00"+t.Digest], t)
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		var ready []hub.Target
		for _, t := range g {
			if t.Free && r.allowed(t) {
				ready = append(ready, t)
			}
		}
		if len(ready) == 0 {
			continue
		}
		wg.Go(func() { r.group(ctx, ready) })
	}
	wg.Wait()
}

// allowed reports whether a node's canaries stay within Share of its
// capacity so far.
func (r *Runner) allowed(t hub.Target) bool {
	budget := time.Duration(r.cfg.Share * float64(t.MaxConcurrent) * float64(t.ConnectedFor))
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spent[t.NodeID] < budget
}

// group sends one canary to nodes that registered the same model and
// digest, and judges them; a model that should know facts also gets a
// fact probe on one of them.
func (r *Runner) group(ctx context.Context, ready []hub.Target) {
	model := ready[0].Model
	prompt, seed := r.prompt()
	comparable := len(ready) >= 2 || ready[0].Trusted
	if params(ready[0].ParameterSize) >= r.cfg.MinFactParams && len(r.cfg.Facts) > 0 {
		t := ready[int(r.cfg.Rand()*float64(len(ready)))%len(ready)]
		f := r.cfg.Facts[int(r.cfg.Rand()*float64(len(r.cfg.Facts)))%len(r.cfg.Facts)]
		answer, ok := r.ask(ctx, t, f.Prompt, seed)
		if ok && !f.Answer.MatchString(answer) && !t.Trusted {
			r.judge(t, false)
			r.log.Info("canary fact probe failed", "node_id", t.NodeID, "model", model)
		}
		if !comparable {
			return
		}
	}
	if !comparable {
		return // a digest only one node claims stays unverified until a second agrees
	}
	answers := map[string]string{}
	trusted := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, max(r.cfg.Parallel, len(ready)))
	if r.cfg.Parallel > 0 {
		slots = make(chan struct{}, r.cfg.Parallel)
	}
	for _, t := range ready {
		trusted[t.NodeID] = t.Trusted
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if a, ok := r.ask(ctx, t, prompt, seed); ok {
				mu.Lock()
				answers[t.NodeID] = a
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id, agreed := range verdicts(answers, trusted) {
		for _, t := range ready {
			if t.NodeID == id {
				r.judge(t, agreed)
			}
		}
	}
}

func (r *Runner) judge(t hub.Target, agreed bool) {
	r.judged.Add(1)
	r.mu.Lock()
	c := r.tally[t.NodeID]
	if agreed {
		r.agreed.Add(1)
		c[0]++
	} else {
		c[1]++
	}
	r.tally[t.NodeID] = c
	r.mu.Unlock()
	r.hub.Judge(t.NodeID, t.Model, agreed)
}

// ask runs one canary on one node and returns its answer text; ok is
// false when the node did not answer in full (that is the breaker's
// business, not a verdict). The slot time it held counts against the
// node's budget.
func (r *Runner) ask(ctx context.Context, t hub.Target, prompt string, seed int) (answer string, ok bool) {
	opts, _ := json.Marshal(map[string]any{"temperature": 0, "seed": seed, "num_predict": r.cfg.Tokens})
	req := dispatch.Request{
		Model:    t.Model,
		Node:     t.NodeID,
		ClientIP: "canary",
		Messages: []ollama.Message{{Role: "user", Content: prompt}},
		Options:  opts,
	}
	var b strings.Builder
	failed := false
	start := r.cfg.Now()
	r.sent.Add(1)
	_, err := r.d.Chat(ctx, req, func(ev dispatch.Event) error {
		switch ev.Kind {
		case dispatch.Content:
			b.WriteString(ev.Text)
		case dispatch.Failed:
			failed = true
		}
		return nil
	})
	took := max(r.cfg.Now().Sub(start), 0)
	r.log.Debug("canary", "node_id", t.NodeID, "took", took, "chars", b.Len(), "err", err, "failed", failed)
	r.slotNanos.Add(int64(took))
	r.mu.Lock()
	r.spent[t.NodeID] += took
	r.mu.Unlock()
	return b.String(), err == nil && !failed
}

// prompt returns the next canary prompt and its seed.
func (r *Runner) prompt() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.cfg.Prompts[r.next%len(r.cfg.Prompts)]
	r.next++
	// A seed per prompt, the same for every node in the round.
	seed := 1 + int(r.cfg.Rand()*1e6)
	return p, seed
}

// forgetGone drops the budgets of nodes that left.
func (r *Runner) forgetGone(targets []hub.Target) {
	live := make(map[string]bool, len(targets))
	for _, t := range targets {
		live[t.NodeID] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.spent {
		if !live[id] {
			delete(r.spent, id)
			delete(r.tally, id)
		}
	}
}

// params reads a reported parameter size ("8B", "260K", "7.6B", "70b").
func params(s string) float64 {
	s = strings.TrimSpace(strings.ToUpper(s))
	if s == "" {
		return 0
	}
	mult := 1.0
	switch s[len(s)-1] {
	case 'K':
		mult = 1e3
	case 'M':
		mult = 1e6
	case 'B':
		mult = 1e9
	case 'T':
		mult = 1e12
	default:
		mult = 1
		s += " "
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s[:len(s)-1]), 64)
	if err != nil || v < 0 {
		return 0
	}
	return v * mult
}

// String describes the stats.
func (s Stats) String() string {
	return fmt.Sprintf("sent %d, judged %d, agreed %d, slot time %s", s.Sent, s.Judged, s.Agreed, s.SlotTime.Round(time.Millisecond))
}

// Collector exports the canaries' totals to Prometheus.
func (r *Runner) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Runner }

var (
	descSent   = prometheus.NewDesc("idleclaw_canaries_sent_total", "Canary requests sent to nodes.", nil, nil)
	descJudged = prometheus.NewDesc("idleclaw_canary_verdicts_total", "Canary verdicts by outcome.", []string{"verdict"}, nil)
	descSlot   = prometheus.NewDesc("idleclaw_canary_slot_seconds_total", "Node slot time canaries held.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSent
	ch <- descJudged
	ch <- descSlot
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Sent))
	ch <- prometheus.MustNewConstMetric(descJudged, prometheus.CounterValue, float64(s.Agreed), "agreed")
	ch <- prometheus.MustNewConstMetric(descJudged, prometheus.CounterValue, float64(s.Judged-s.Agreed), "disagreed")
	ch <- prometheus.MustNewConstMetric(descSlot, prometheus.CounterValue, s.SlotTime.Seconds())
}
