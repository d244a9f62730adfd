package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/server"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Bounds of a summary: what one router says of its nodes.
const (
	maxSummaryBytes  = 512 << 10
	maxSummaryModels = 512
)

// Summary is one router's entry in the bucket: what its own nodes serve.
type Summary struct {
	Router string          `json:"router"`
	URL    string          `json:"url,omitempty"`
	Nodes  int             `json:"nodes"`
	All    []hub.ModelInfo `json:"all"` // hub.Models(true)
	Now    []hub.ModelInfo `json:"now"` // hub.Models(false)
	// Waiting is how many requests wait for a node there: while some do,
	// the others announce a slot that comes free at once (freeSoon).
	Waiting int `json:"waiting,omitempty"`
}

// remote is another router as this one last heard of it.
type remote struct {
	sum  Summary
	seen time.Time // when its entry last came (local clock)
}

func (c *Cluster) summary() Summary {
	s := Summary{Router: c.cfg.RouterID, URL: c.cfg.PublicURL, Nodes: c.hub.NodeCount(),
		All: c.hub.Models(true), Now: c.hub.Models(false), Waiting: c.hub.Waiting()}
	if len(s.All) > maxSummaryModels {
		s.All = s.All[:maxSummaryModels]
	}
	if len(s.Now) > maxSummaryModels {
		s.Now = s.Now[:maxSummaryModels]
	}
	for _, list := range [][]hub.ModelInfo{s.All, s.Now} {
		for i := range list {
			list[i].Digests = trimDigests(list[i].Digests)
		}
	}
	return s
}

// trimDigests returns the maxSummaryDigests digests of ds with the most
// nodes (then the first in order), in a new map, or ds itself when it has
// no more. Each node chooses the digest it registers a model with, so
// nodes could list any number under one model.
func trimDigests(ds map[string]hub.DigestInfo) map[string]hub.DigestInfo {
	if len(ds) <= maxSummaryDigests {
		return ds
	}
	keys := make([]string, 0, len(ds))
	for d := range ds {
		keys = append(keys, d)
	}
	sort.Slice(keys, func(i, j int) bool {
		if a, b := ds[keys[i]].Nodes, ds[keys[j]].Nodes; a != b {
			return a > b
		}
		return keys[i] < keys[j]
	})
	out := make(map[string]hub.DigestInfo, maxSummaryDigests)
	for _, d := range keys[:maxSummaryDigests] {
		out[d] = ds[d]
	}
	return out
}

// bucket returns the key-value bucket, creating it if need be (at start,
// and after a NATS server that kept no state restarted).
func (c *Cluster) bucket(ctx context.Context, fresh bool) (jetstream.KeyValue, error) {
	c.mu.Lock()
	kv := c.kv
	c.mu.Unlock()
	if kv != nil && !fresh {
		return kv, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       c.cfg.Bucket,
		Description:  "idleclaw routers: what each router's nodes serve",
		History:      1,
		TTL:          c.cfg.TTL,
		MaxValueSize: maxSummaryBytes,
		Storage:      jetstream.MemoryStorage,
		Replicas:     c.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", c.cfg.Bucket, err)
	}
	c.mu.Lock()
	c.kv = kv
	c.mu.Unlock()
	return kv, nil
}

// publishLoop puts this router's summary every Interval. A failed put
// (NATS down, or back without the bucket) makes the next one create the
// bucket again.
func (c *Cluster) publishLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	// A slot that comes free here while requests wait at another router
	// is announced at once, at most every freeSoon, so that their waits
	// end there (the view's Offload) rather than at the next tick.
	soon := time.NewTimer(freeSoon)
	soon.Stop()
	armed := false
	var last time.Time
	fresh := false
	for {
		last = time.Now()
		if c.nc.IsConnected() {
			if err := c.publish(ctx, fresh); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Debug("publish summary", "err", err)
				fresh = true
			} else {
				fresh = false
			}
		}
		for again := true; again; {
			again = false
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-soon.C:
				armed = false
			case <-c.hub.Freed():
				switch d := freeSoon - time.Since(last); {
				case armed || c.Waiting() == 0:
					again = true
				case d > 0:
					soon.Reset(d)
					armed, again = true, true
				}
			}
		}
	}
}

// freeSoon is the shortest time between two announcements of a free slot.
const freeSoon = 100 * time.Millisecond

// Waiting implements server.Peers: the requests waiting for a node at
// the other routers.
func (c *Cluster) Waiting() int {
	n := 0
	for _, r := range c.fresh() {
		n += r.sum.Waiting // each clamped: no overflow over 256 routers
	}
	return n
}

func (c *Cluster) publish(ctx context.Context, fresh bool) error {
	kv, err := c.bucket(ctx, fresh)
	if err != nil {
		return err
	}
	b, err := json.Marshal(c.summary())
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	if len(b) > maxSummaryBytes {
		return fmt.Errorf("summary of %d bytes exceeds %d", len(b), maxSummaryBytes)
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Interval)
	defer cancel()
	if _, err := kv.Put(pctx, c.cfg.RouterID, b); err != nil {
		return fmt.Errorf("put summary: %w", err)
	}
	return nil
}

// watchLoop keeps c.routers from the bucket's updates. Our own entry
// comes back every Interval: when it stops coming (NATS restarted, the
// watch lost), the watch is made again.
func (c *Cluster) watchLoop(ctx context.Context) {
	c.keepWatching(ctx, "watch routers", c.cfg.Interval/2, c.watch)
}

// keepWatching runs watch until ctx ends, again after pause whenever it
// returns (the watch was lost, or NATS is down).
func (c *Cluster) keepWatching(ctx context.Context, what string, pause time.Duration, watch func(context.Context) error) {
	for ctx.Err() == nil {
		if err := watch(ctx); err != nil && ctx.Err() == nil {
			c.log.Debug(what, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

func (c *Cluster) watch(ctx context.Context) error {
	if !c.nc.IsConnected() {
		return errors.New("not connected")
	}
	kv, err := c.bucket(ctx, false)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		c.mu.Lock()
		c.kv = nil // the bucket may be gone: look it up again
		c.mu.Unlock()
		return fmt.Errorf("watch bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	c.mu.Lock()
	c.ownSeen = time.Now()
	c.mu.Unlock()
	check := time.NewTicker(c.cfg.Interval)
	defer check.Stop()
	replay := true // the entries already there come first, then a nil
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch ended")
			}
			if e == nil {
				replay = false
				continue
			}
			c.apply(e, replay)
		case <-check.C:
			c.mu.Lock()
			lost := time.Since(c.ownSeen) > 3*c.cfg.Interval
			c.mu.Unlock()
			if lost {
				return errors.New("own entry not seen: watching again")
			}
		}
	}
}

// apply takes one update of the bucket: a router's summary, bounded and
// checked, or its removal. An entry replayed when the watch starts may be
// up to TTL old: it counts from when the NATS server stored it (clamped,
// in case the clocks differ), so that it expires on time here too.
func (c *Cluster) apply(e jetstream.KeyValueEntry, replay bool) {
	key := e.Key()
	now := time.Now()
	seen := now
	if replay {
		if t := e.Created(); t.Before(now) {
			seen = t
		}
		if oldest := now.Add(-c.cfg.TTL); seen.Before(oldest) {
			seen = oldest
		}
	}
	if key == c.cfg.RouterID {
		c.mu.Lock()
		c.ownSeen = now
		c.mu.Unlock()
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		c.mu.Lock()
		delete(c.routers, key)
		c.mu.Unlock()
		return
	}
	s, dropped, ok := decodeSummary(key, e.Value())
	if !ok {
		c.quiet.Warn("bucket", "bad_summary", "ignoring a malformed summary from the network", "router", key)
		return
	}
	if dropped > 0 {
		c.quiet.Warn("bucket", "bad_summary_models", "dropped models no node could register from a router's summary",
			"router", key, "dropped", dropped)
	}
	c.mu.Lock()
	if _, known := c.routers[key]; !known && len(c.routers) >= maxRouters {
		c.mu.Unlock()
		c.log.Warn("too many routers in the network; ignoring a new one", "router", key, "max", maxRouters)
		return
	}
	c.routers[key] = &remote{sum: s, seen: seen}
	c.mu.Unlock()
	if replay || c.hub.Waiting() == 0 {
		return
	}
	// Requests waiting here for a model that router has free slots for
	// go there (one queue per model in effect: a free slot anywhere
	// serves the longest waiting request that can move).
	for _, m := range s.Now {
		if m.FreeSlots > 0 {
			c.hub.Offload(m.Name, m.FreeSlots)
		}
	}
}

// maxRouters bounds the other routers this router keeps in its view.
const maxRouters = 256

// decodeSummary decodes the summary a router put under key, refusing one
// over maxSummaryBytes or maxSummaryModels a list, not valid JSON, or
// filed under another router's id, and clamps its counts. Within it, what
// a node could not have registered is dropped, not the whole summary (a
// router must not vanish from the network for one model): a model whose
// name is not a normalized valid name, or is listed twice, or whose
// details fail the protocol's checks; a digest not in the hub's form
// (lower-case hex, 1..64 digits); a capability the router does not know;
// a URL that is not a printable http(s) URL. A model's digests are cut to
// maxSummaryDigests. dropped counts the models dropped. The names and
// details are shown to consumers and summed with this router's own
// (server.mergeModels).
func decodeSummary(key string, v []byte) (s Summary, dropped int, ok bool) {
	if !ValidRouterID(key) || len(v) > maxSummaryBytes || json.Unmarshal(v, &s) != nil || s.Router != key ||
		len(s.All) > maxSummaryModels || len(s.Now) > maxSummaryModels {
		return Summary{}, 0, false
	}
	if !summaryURLOK(s.URL) {
		s.URL = ""
	}
	s.All, dropped = keepValidModels(s.All)
	var d int
	s.Now, d = keepValidModels(s.Now)
	clampSummary(&s)
	return s, dropped + d, true
}

// keepValidModels keeps, in place, the models of list that a router of
// this version could have listed (see decodeSummary), with their digests
// and capabilities cleaned, and says how many it dropped.
func keepValidModels(list []hub.ModelInfo) ([]hub.ModelInfo, int) {
	names := make(map[string]bool, len(list))
	out := list[:0]
	for _, m := range list {
		m.Model.Capabilities = nil // the hub lists its known names in ModelInfo.Capabilities
		if !wire.ValidNormalizedName(m.Name) || names[m.Name] || !wire.ValidModelFields(m.Model) {
			continue
		}
		names[m.Name] = true
		m.Capabilities = wire.CapabilitiesOf(m.Capabilities).Names()
		for d := range m.Digests {
			if !digestKeyOK(d) {
				delete(m.Digests, d)
			}
		}
		m.Digests = trimDigests(m.Digests)
		out = append(out, m)
	}
	return out, len(list) - len(out)
}

// digestKeyOK accepts a digest as the hub files it: lower-case hex, 1..64
// digits, no "sha256:".
func digestKeyOK(d string) bool {
	if d == "" || len(d) > 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// maxSummaryDigests bounds the digests one model of a summary may list
// (the digests its nodes registered it with).
const maxSummaryDigests = 64

// summaryURLOK accepts "" or a URL serve would take as --public-url.
func summaryURLOK(u string) bool { return u == "" || wire.ValidHTTPURL(u) }

// maxNodesPerRouter bounds the counts one router's summary may claim
// (more than one router holds in memory), so that sums cannot overflow
// and no claim outweighs what a router can have.
const maxNodesPerRouter = 1 << 20

// clampSummary bounds a summary's counts: never negative, at most
// maxNodesPerRouter nodes, and free slots at most 10 per node.
func clampSummary(s *Summary) {
	s.Nodes = min(max(s.Nodes, 0), maxNodesPerRouter)
	s.Waiting = min(max(s.Waiting, 0), maxNodesPerRouter)
	for _, list := range [][]hub.ModelInfo{s.All, s.Now} {
		for i := range list {
			m := &list[i]
			m.Nodes = min(max(m.Nodes, 0), s.Nodes)
			m.Origins = min(max(m.Origins, 0), m.Nodes)
			m.FreeSlots = min(max(m.FreeSlots, 0), 10*m.Nodes)
			// The trust and digest counts cover all the router's nodes of
			// the model, quarantined and busy ones too (Nodes in the
			// "now" list does not): bounded by the router's nodes.
			m.Verified = min(max(m.Verified, 0), s.Nodes)
			m.Unverified = min(max(m.Unverified, 0), s.Nodes)
			m.Quarantined = min(max(m.Quarantined, 0), s.Nodes)
			for d, n := range m.Digests {
				n.Nodes = min(max(n.Nodes, 0), s.Nodes)
				n.Verified = min(max(n.Verified, 0), n.Nodes)
				m.Digests[d] = n
			}
		}
	}
}

// fresh returns the other routers heard of within TTL, by id. An entry
// older than that has expired in the bucket too; it is left out here,
// whether or not the watch has said so yet.
func (c *Cluster) fresh() []*remote {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*remote, 0, len(c.routers))
	for id, r := range c.routers {
		if now.Sub(r.seen) > c.cfg.TTL {
			delete(c.routers, id)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].sum.Router < out[j].sum.Router })
	return out
}

// Models implements server.Peers.
func (c *Cluster) Models(all bool) []hub.ModelInfo {
	var out []hub.ModelInfo
	for _, r := range c.fresh() {
		if all {
			out = append(out, r.sum.All...)
		} else {
			out = append(out, r.sum.Now...)
		}
	}
	return out
}

// NodeCount implements server.Peers.
func (c *Cluster) NodeCount() int {
	n := 0
	for _, r := range c.fresh() {
		n += r.sum.Nodes
	}
	return n
}

// Routers implements server.Peers.
func (c *Cluster) Routers() []server.PeerRouter {
	out := []server.PeerRouter{{ID: c.cfg.RouterID, URL: c.cfg.PublicURL, NodeCount: c.hub.NodeCount()}}
	for _, r := range c.fresh() {
		out = append(out, server.PeerRouter{ID: r.sum.Router, URL: r.sum.URL, NodeCount: r.sum.Nodes})
	}
	return out
}
