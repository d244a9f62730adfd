package hub

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// ModelInfo describes one model of the network.
type ModelInfo struct {
	// Model holds the normalized name and what one of its nodes reported
	// (digest, details); Size is the largest size reported. These are the
	// nodes' words, for display only: nothing chooses by them.
	wire.Model
	Nodes     int  // nodes counted (see Models)
	Origins   int  // distinct addresses among them
	FreeSlots int  // request slots free now among the nodes that can take requests
	Loaded    bool // some node claims the model loaded in memory (its heartbeat)
	// Trust: nodes counted by tier (TierTrusted and TierVerified count as
	// Verified; TierUnverified and TierAnonymous as Unverified), and by
	// the digest they registered the model with.
	Verified, Unverified, Quarantined int
	Digests                           map[string]DigestInfo
	Thinking                          bool
	Tools                             bool
	Vision                            bool
	// Capabilities lists what the router knows of the model's
	// capabilities (the union over its nodes, known names only).
	Capabilities []string
}

// DigestInfo counts the nodes that registered a model with one digest.
type DigestInfo struct {
	Nodes, Verified int
}

// modelsView caches the model lists of a large registry for a moment.
type modelsView struct {
	gen      uint64
	at       time.Time
	all, now []ModelInfo
	valid    bool
}

// Caching: a registry of fewer node×model pairs than exactPairs is
// listed afresh every time (it costs microseconds); a larger one is
// listed at most once per viewTTL unless the registry changes, so that
// hammering /api/models cannot hold the registry lock for long.
const (
	exactPairs = 4096
	viewTTL    = 500 * time.Millisecond
)

// Models lists the models of the network, the most servable first: by the
// number of distinct addresses whose nodes serve it, then free slots, then
// nodes, then name. Clients take the first as the default model, so it is
// what the network can really serve, never what a node says of its size.
// With all false, only nodes that can take a request now count (registered,
// available, with a free slot, not held out by their breaker), and models
// without such a node are left out; with all true every registered node
// counts.
func (h *Hub) Models(all bool) []ModelInfo {
	now := h.cfg.Now()
	h.mu.Lock()
	if h.view.valid && h.view.gen == h.gen && now.Sub(h.view.at) < viewTTL {
		out := h.view.now
		if all {
			out = h.view.all
		}
		h.mu.Unlock()
		return slices.Clone(out)
	}
	pairs := 0
	for _, e := range h.byModel {
		pairs += len(e.nodes)
	}
	allList, nowList := h.gatherLocked(now)
	if pairs >= exactPairs {
		h.view = modelsView{gen: h.gen, at: now, all: allList, now: nowList, valid: true}
	} else {
		h.view.valid = false
	}
	h.mu.Unlock()
	out := nowList
	if all {
		out = allList
	}
	return slices.Clone(out)
}

// Model returns what the network knows of one model (a normalized name),
// counting every registered node that has it, busy or not. It is on every
// request's path: it visits that model's nodes only, and leaves Origins
// out (zero).
func (h *Hub) Model(name string) (ModelInfo, bool) {
	now := h.cfg.Now()
	h.mu.Lock()
	e := h.byModel[name]
	if e == nil {
		h.mu.Unlock()
		return ModelInfo{}, false
	}
	a := newAgg(name, e)
	a.light = true // no addresses: this is on every request's path
	for n := range e.nodes {
		a.add(n, h.servableLocked(n, now), h.tierLocked(n, name))
	}
	h.mu.Unlock()
	all, _ := a.infos()
	return all, true
}

// servableLocked reports whether n can take a request now (for a model
// it is not quarantined for). h.mu must be held.
func (h *Hub) servableLocked(n *Node, now time.Time) bool {
	return n.hasCapacity() && !n.rec.blocked(h.cfg.Breaker, now)
}

// gatherLocked builds both model lists. h.mu must be held; the work is
// O(1) per node and model (the node lists are bounded at registration).
func (h *Hub) gatherLocked(now time.Time) (all, servable []ModelInfo) {
	all = make([]ModelInfo, 0, len(h.byModel))
	servable = make([]ModelInfo, 0, len(h.byModel))
	for name, e := range h.byModel {
		a := newAgg(name, e)
		for n := range e.nodes {
			a.add(n, h.servableLocked(n, now), h.tierLocked(n, name))
		}
		x, y := a.infos()
		all = append(all, x)
		if y.Nodes > 0 {
			servable = append(servable, y)
		}
	}
	SortModels(all)
	SortModels(servable)
	return all, servable
}

// agg gathers one model's figures over its nodes, for both lists at once.
type agg struct {
	info          ModelInfo
	ips, freeIPs  []string
	nodes, nfree  int
	slots         int
	loaded, fresh bool
	light         bool // leave the addresses out (Origins stays 0)
}

func newAgg(name string, e *modelEntry) *agg {
	caps := e.capsOf()
	a := &agg{}
	a.info.Name = name
	a.info.Capabilities = caps.Names()
	a.info.Thinking, a.info.Tools, a.info.Vision = capabilities(name, caps)
	return a
}

func (a *agg) add(n *Node, servable bool, tier string) {
	digest := ""
	for i := range n.models {
		m := &n.models[i]
		if m.Name != a.info.Name {
			continue
		}
		digest = normDigest(m.Digest)
		if !a.fresh {
			a.fresh = true
			size := a.info.Size
			a.info.Model = m.Model
			a.info.Size = max(size, m.Size)
		} else {
			a.info.Size = max(a.info.Size, m.Size)
		}
		break
	}
	a.nodes++
	if !a.light {
		a.ips = append(a.ips, n.ip)
	}
	verified := tier == TierTrusted || tier == TierVerified
	switch {
	case tier == TierQuarantined:
		a.info.Quarantined++
		servable = false // never sent the model: not servable for it
	case verified:
		a.info.Verified++
	default:
		a.info.Unverified++
	}
	if digest != "" && !a.light {
		if a.info.Digests == nil {
			a.info.Digests = map[string]DigestInfo{}
		}
		d := a.info.Digests[digest]
		d.Nodes++
		if verified {
			d.Verified++
		}
		a.info.Digests[digest] = d
	}
	if slices.Contains(n.loaded, a.info.Name) {
		a.loaded = true
	}
	if servable {
		a.nfree++
		if !a.light {
			a.freeIPs = append(a.freeIPs, n.ip)
		}
		a.slots += n.maxConcurrent - int(n.active.Load())
	}
}

// infos returns the model as every node counts (all) and as the nodes that
// can take a request now count (servable).
func (a *agg) infos() (all, servable ModelInfo) {
	all = a.info
	all.Nodes, all.Origins, all.FreeSlots, all.Loaded = a.nodes, distinct(a.ips), a.slots, a.loaded
	servable = all
	servable.Nodes, servable.Origins = a.nfree, distinct(a.freeIPs)
	return all, servable
}

func distinct(ss []string) int {
	if len(ss) < 2 {
		return len(ss)
	}
	slices.Sort(ss)
	return len(slices.Compact(ss))
}

// SortModels orders models as every model list does: the most distinct
// addresses able to serve first, then free slots, nodes, and name.
func SortModels(ms []ModelInfo) {
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if a.Origins != b.Origins {
			return a.Origins > b.Origins
		}
		if a.FreeSlots != b.FreeSlots {
			return a.FreeSlots > b.FreeSlots
		}
		if a.Nodes != b.Nodes {
			return a.Nodes > b.Nodes
		}
		return a.Name < b.Name
	})
}

// capabilities says whether a model thinks, calls tools and sees images:
// from what its nodes reported (Ollama's /api/show), or for v1 nodes that
// report nothing, from the name, as v1 routers did.
func capabilities(name string, caps wire.Capability) (thinking, tools, vision bool) {
	if caps != 0 {
		return caps.Has(wire.CapThinking), caps.Has(wire.CapTools), caps.Has(wire.CapVision)
	}
	lower := strings.ToLower(name)
	for _, s := range []string{"qwen3", "deepseek-r1", "gpt-oss", "magistral", "phi4-reasoning"} {
		if strings.Contains(lower, s) {
			thinking = true
		}
	}
	for _, s := range []string{"qwen3", "qwen2.5", "llama3.1", "llama3.2", "llama3.3", "mistral", "mixtral", "command-r", "granite", "gpt-oss", "firefunction"} {
		if strings.Contains(lower, s) {
			tools = true
		}
	}
	return thinking, tools, false
}

// NodeInfo is what the admin view shows of one node.
type NodeInfo struct {
	NodeID         string
	IP             string
	Models         []string
	ConnectedFor   time.Duration
	ActiveRequests int
	MaxConcurrent  int
	Available      bool
	OllamaVersion  string
	Agent          string
	Protocol       int
	Key            string            // the public key it proved; "" for a keyless node
	Tiers          map[string]string // its trust tier per model
	// The router's record of the node.
	Reputation   float64
	Breaker      string  // "closed", "open" or "half-open"
	TokensPerSec float64 // measured by the router; 0 unknown
	Canary       map[string]CanaryRecord
}

// CanaryRecord is what canaries told of a node's answers for one model.
type CanaryRecord struct {
	Agreed, Disagreed int
	Verified          bool
	Quarantined       bool
	Last              time.Time
}

// Nodes lists the registered nodes, ordered by node id.
func (h *Hub) Nodes() []NodeInfo {
	now := h.cfg.Now()
	h.mu.Lock()
	out := make([]NodeInfo, 0, len(h.nodes))
	for _, n := range h.nodes {
		names := make([]string, len(n.models))
		tiers := make(map[string]string, len(n.models))
		for i, m := range n.models {
			names[i] = m.Name
			tiers[m.Name] = h.tierLocked(n, m.Name)
		}
		var canary map[string]CanaryRecord
		for model, e := range n.rec.canary {
			if canary == nil {
				canary = map[string]CanaryRecord{}
			}
			c := CanaryRecord{Verified: e.Verified, Quarantined: e.Quarantined, Last: e.Last}
			for _, v := range e.Verdicts {
				if v {
					c.Agreed++
				} else {
					c.Disagreed++
				}
			}
			canary[model] = c
		}
		out = append(out, NodeInfo{
			NodeID: n.id, IP: n.ip, Models: names, ConnectedFor: now.Sub(n.connectedAt),
			ActiveRequests: int(n.active.Load()), MaxConcurrent: n.maxConcurrent,
			Available: n.available, OllamaVersion: n.ollamaVersion, Agent: n.agent, Protocol: n.protocol,
			Key: n.key, Tiers: tiers,
			Reputation: n.rec.reputation(), Breaker: breakerName(n.rec.state), TokensPerSec: n.rec.tps, Canary: canary,
		})
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

func breakerName(state int) string {
	switch state {
	case breakerOpen:
		return "open"
	case breakerHalfOpen:
		return "half-open"
	}
	return "closed"
}

// Target is one node serving one model, as the canary runner sees it.
type Target struct {
	NodeID        string
	Model         string // normalized
	Digest        string // normalized (no "sha256:"), "" unknown
	ParameterSize string // what the node reported
	MaxConcurrent int
	ConnectedFor  time.Duration
	Free          bool // it can take a request now
	Trusted       bool // the operator vouches for it
	Keyed         bool
}

// Targets lists every registered node and model pair, for the canaries.
func (h *Hub) Targets() []Target {
	now := h.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Target
	for _, n := range h.nodes {
		for _, m := range n.models {
			out = append(out, Target{NodeID: n.id, Model: m.Name, Digest: normDigest(m.Digest), ParameterSize: m.ParameterSize,
				MaxConcurrent: n.maxConcurrent, ConnectedFor: now.Sub(n.connectedAt),
				Free: h.servableLocked(n, now), Trusted: h.trusted[n.id], Keyed: n.key != ""})
		}
	}
	return out
}
