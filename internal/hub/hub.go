// Package hub owns the router's side of node connections: registration, the
// registry of connected nodes and their models, liveness, the records the
// router keeps of each node, node selection and the per-request streams
// that carry a node's chunks to one consumer.
//
// Each node connection is served by one goroutine (ServeNode) that reads its
// frames and owns a writer goroutine with a bounded queue. Chunks go to each
// request's byte-bounded queue without blocking: a consumer that stops
// reading fails its own request, never the node's read loop, its heartbeats
// or its other requests.
//
// Nodes are untrusted. Everything a node sends is bounded where it is
// decoded (package wire) and again where the hub keeps it; frames beyond a
// node's budget are refused before they take the registry lock; and what a
// node claims about itself (that a model is loaded, how fast it is, how
// big its models are) never decides the choice of a node unless the
// router's own measurements bear it out.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/lograte"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Sentinel errors callers branch on.
var (
	ErrNoNode       = errors.New("no node available for the model")
	ErrUnavailable  = errors.New("the nodes that serve the model are unavailable")
	ErrNodeGone     = errors.New("node disconnected")
	ErrSlowConsumer = errors.New("consumer too slow")
	ErrShutdown     = errors.New("router shutting down")
	ErrNodeBusy     = errors.New("node send queue full")
)

// NodeError is a request ended by the node with an inference_error code.
type NodeError struct{ Code string }

func (e *NodeError) Error() string { return "node error: " + e.Code }

// Config configures a Hub. The zero value is usable: every zero field takes
// the default noted.
type Config struct {
	RegistrationTimeout time.Duration // default 10s
	HeartbeatTimeout    time.Duration // default 45s
	MaxNodesPerIP       int           // default 3; negative turns the limit off
	// MaxConnsPerIP bounds the open node connections of one IP, registered
	// or not (default twice MaxNodesPerIP; negative: off).
	MaxConnsPerIP int
	// StreamBufferBytes bounds what one request holds for a consumer that
	// falls behind the node (default 1 MiB); past it the request fails as
	// too slow. MaxBufferedBytes bounds the same over every request at
	// once (default 64 MiB): past it the request that would pass it fails.
	StreamBufferBytes int
	MaxBufferedBytes  int64
	SendQueue         int // frames queued per node, default 256
	// TakeoverTimeout is how long a connected node has to answer a ping
	// when another connection registers its id (default 5s): while the
	// old link answers, the newcomer is refused.
	TakeoverTimeout time.Duration
	// WarmWindow is how long after the router last saw a node answer for
	// a model it believes the model still loaded there (default 5m, the
	// keep_alive routers send). ColdFirstToken is the first-token time
	// past which an answer counts as a cold start (default 5s): a node
	// that claims a model loaded and then takes longer loses the claim's
	// weight.
	WarmWindow     time.Duration
	ColdFirstToken time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
	// OnRegister, if set, is called (without locks held) after a node registered.
	OnRegister func()

	Policy  Policy        // node selection; default WarmFirst
	Breaker BreakerConfig // per-node circuit breaker
	Queue   QueueConfig   // waiting for a busy model
	Budget  FrameBudget   // per-node frame rates

	// PublicHosts are the router's host names (host or host:port) as nodes
	// dial them, besides the Host header of each upgrade: a node's
	// signature must name one of them (see authenticate).
	PublicHosts []string
	// TrustedNodes are node ids (of keys) the operator vouches for: their
	// tier is trusted, and canaries compare others with them first.
	TrustedNodes []string
	// Store keeps the records and bans across restarts; nil keeps them
	// in memory only. The hub saves what changed every FlushInterval
	// (default 2s) and at Close.
	Store         RecordStore
	FlushInterval time.Duration
	// MaxRecords bounds the records the hub keeps, its own and other
	// routers' (default 100,000): past it, records of nodes not connected
	// are forgotten, least recently updated first, and other routers'
	// records of nodes it does not know are not taken.
	MaxRecords int
}

// RecordStore keeps what the router knows of nodes: records (opaque
// bytes by key) and bans. It never holds anything of consumers. Its
// methods are called from one goroutine at a time, never under the
// hub's lock.
type RecordStore interface {
	LoadRecords(each func(key string, data []byte) error) error
	SaveRecords(records map[string][]byte) error // a nil value deletes
	LoadBans() ([]string, error)
	PutBan(id string, banned bool) error
}

func (c *Config) setDefaults() {
	if c.RegistrationTimeout <= 0 {
		c.RegistrationTimeout = 10 * time.Second
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 45 * time.Second
	}
	if c.MaxNodesPerIP == 0 {
		c.MaxNodesPerIP = wire.MaxNodesPerIP
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 2 * c.MaxNodesPerIP
		if c.MaxNodesPerIP < 0 {
			c.MaxConnsPerIP = -1
		}
	}
	if c.StreamBufferBytes <= 0 {
		c.StreamBufferBytes = 1 << 20
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = 64 << 20
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.TakeoverTimeout <= 0 {
		c.TakeoverTimeout = 5 * time.Second
	}
	if c.WarmWindow <= 0 {
		c.WarmWindow = 5 * time.Minute
	}
	if c.ColdFirstToken <= 0 {
		c.ColdFirstToken = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Policy == nil {
		c.Policy = WarmFirst{}
	}
	if c.Breaker.Threshold == 0 {
		c.Breaker.Threshold = 3
	}
	if c.Breaker.Cooldown <= 0 {
		c.Breaker.Cooldown = 30 * time.Second
	}
	if c.Queue.MaxWaiting == 0 {
		c.Queue.MaxWaiting = 256
	}
	if c.Queue.MaxWait <= 0 {
		c.Queue.MaxWait = 30 * time.Second
	}
	c.Budget.setDefaults()
	if c.FlushInterval <= 0 {
		c.FlushInterval = 2 * time.Second
	}
	if c.MaxRecords <= 0 {
		c.MaxRecords = maxRecords
	}
}

// maxRecords is Config.MaxRecords' default.
const maxRecords = 100_000

// Hub is the registry of connected nodes. It is safe for concurrent use.
type Hub struct {
	cfg   Config
	log   *slog.Logger
	quiet *lograte.Limiter // lines a node can provoke
	wg    sync.WaitGroup   // every goroutine the hub started
	stop  chan struct{}

	registeredTotal atomic.Int64
	waiting         atomic.Int64 // requests in all queues; 0 lets kick skip the lock
	buffered        atomic.Int64 // bytes queued in every stream

	mu        sync.Mutex             // guards the following fields
	nodes     map[string]*Node       // registered nodes by node_id
	conns     map[*Node]struct{}     // every open connection, registered or not
	connsByIP map[string]int         // open connections per IP
	perIP     map[string]int         // registered nodes per IP
	byModel   map[string]*modelEntry // registered nodes by model they advertise (index.go)
	records   map[string]*record     // by address and announced id; outlive connections
	goneByIP  map[string]*record     // the record of the node that last left each address
	claiming  map[string]bool        // ids whose takeover check is under way
	bans      map[string]bool        // node ids the operator banned
	forgotten map[string]bool        // records dropped since the last flush (the store deletes them)
	trusted   map[string]bool        // Config.TrustedNodes
	queues    map[string]*modelQueue // waiting requests by model
	freed     chan struct{}          // a slot came free with no waiter here (Freed)
	cands     []Candidate            // pickLocked's scratch, reused from pick to pick
	gen       uint64                 // bumped whenever the registry or a node's availability changes
	view      modelsView             // the cached model lists (views.go)
	closed    bool
}

// New returns a Hub and starts its liveness watchdog. Call Close to stop it.
func New(cfg Config) *Hub {
	cfg.setDefaults()
	h := &Hub{
		cfg:       cfg,
		log:       cfg.Logger,
		quiet:     lograte.New(cfg.Logger, lograte.Config{Now: cfg.Now}),
		stop:      make(chan struct{}),
		nodes:     map[string]*Node{},
		conns:     map[*Node]struct{}{},
		connsByIP: map[string]int{},
		perIP:     map[string]int{},
		byModel:   map[string]*modelEntry{},
		records:   map[string]*record{},
		goneByIP:  map[string]*record{},
		claiming:  map[string]bool{},
		bans:      map[string]bool{},
		forgotten: map[string]bool{},
		trusted:   map[string]bool{},
		queues:    map[string]*modelQueue{},
		freed:     make(chan struct{}, 1),
	}
	for _, id := range cfg.TrustedNodes {
		h.trusted[id] = true
	}
	h.load()
	h.wg.Add(1)
	go h.watchdog()
	if cfg.Store != nil {
		h.wg.Add(1)
		go h.flusher()
	}
	return h
}

// load reads the records and bans the store kept. A store that cannot be
// read leaves the hub empty (and says so): the router still serves.
func (h *Hub) load() {
	st := h.cfg.Store
	if st == nil {
		return
	}
	n := 0
	now := h.cfg.Now()
	err := st.LoadRecords(func(key string, b []byte) error {
		r, ok := decodeRecord(key, b, now)
		if !ok || len(h.records) >= h.cfg.MaxRecords {
			return nil // a damaged or surplus entry is skipped, not fatal
		}
		h.records[key] = r
		n++
		return nil
	})
	if err != nil {
		h.log.Warn("cannot read the node records; starting without them", "err", err)
	}
	bans, err := st.LoadBans()
	if err != nil {
		h.log.Warn("cannot read the bans; starting without them", "err", err)
	}
	for _, id := range bans {
		h.bans[id] = true
	}
	h.log.Info("node records loaded", "records", n, "bans", len(bans))
}

// flusher saves the records that changed every FlushInterval, and once
// more when the hub closes.
func (h *Hub) flusher() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			h.flush()
			return
		case <-t.C:
			h.flush()
		}
	}
}

// flush saves the dirty records: encoded under the lock (bounded: a
// record is small), written without it.
func (h *Hub) flush() {
	h.mu.Lock()
	batch := map[string][]byte{}
	for k, r := range h.records {
		if r.dirty {
			b, err := json.Marshal(r.data())
			if err == nil {
				batch[k] = b
				r.dirty = false
			}
		}
	}
	for k := range h.forgotten {
		if h.records[k] == nil {
			batch[k] = nil
		}
	}
	clear(h.forgotten)
	h.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := h.cfg.Store.SaveRecords(batch); err != nil {
		h.log.Warn("cannot save the node records", "err", err, "records", len(batch))
		h.mu.Lock()
		for k := range batch {
			if r := h.records[k]; r != nil {
				r.dirty = true
			}
		}
		h.mu.Unlock()
	}
}

// watchdog drops nodes that sent nothing for HeartbeatTimeout. One goroutine
// checks every node, so liveness costs nothing per frame.
func (h *Hub) watchdog() {
	defer h.wg.Done()
	interval := min(max(h.cfg.HeartbeatTimeout/10, 10*time.Millisecond), time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		now := h.cfg.Now()
		deadline := now.Add(-h.cfg.HeartbeatTimeout).UnixNano()
		h.mu.Lock()
		var stale []*Node
		for _, n := range h.nodes {
			if n.seen.Swap(false) {
				n.lastSeen.Store(now.UnixNano())
			}
			if n.lastSeen.Load() < deadline {
				stale = append(stale, n)
			}
		}
		h.mu.Unlock()
		for _, n := range stale {
			h.log.Info("node heartbeat timeout", "node_id", n.id)
			n.closeWith(websocket.StatusNormalClosure, wire.CloseHeartbeatTimeout)
		}
		// A breaker's cool-down ends with no event: give waiters a look.
		h.kickAll()
	}
}

// Close closes every node connection with 1001 (going away), which ends
// every open request with ErrShutdown, and waits for all hub goroutines.
func (h *Hub) Close() { h.CloseSpread(0) }

// CloseSpread is Close with the node closes spread evenly over window, as
// a lame duck does, so that thousands of nodes do not reconnect to the
// next router in the same instant.
func (h *Hub) CloseSpread(window time.Duration) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.wg.Wait()
		return
	}
	h.closed = true
	h.endWaitsLocked(ErrShutdown) // no node will be handed out any more
	conns := make([]*Node, 0, len(h.conns))
	for n := range h.conns {
		conns = append(conns, n)
	}
	h.mu.Unlock()
	close(h.stop)
	start := time.Now()
	for i, n := range conns {
		if window > 0 {
			if d := time.Until(start.Add(window * time.Duration(i) / time.Duration(len(conns)))); d > 0 {
				time.Sleep(d) // pacing the closes, not synchronisation
			}
		}
		n.shutdown()
	}
	h.wg.Wait()
}

// ServeNode runs one node connection until it ends. ip is the node's client
// address as the server resolved it, host the Host the node dialed (the
// upgrade request's). The caller must not use conn afterwards.
func (h *Hub) ServeNode(ctx context.Context, conn *websocket.Conn, ip, host string) {
	conn.SetReadLimit(wire.MaxNodeFrameBytes)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := &Node{
		hub:       h,
		conn:      conn,
		ip:        ip,
		host:      host,
		send:      make(chan []byte, h.cfg.SendQueue),
		gone:      make(chan struct{}),
		cancelRun: cancel,
		pending:   map[string]*Stream{},
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = conn.Close(websocket.StatusGoingAway, "router shutting down")
		return
	}
	if h.cfg.MaxConnsPerIP > 0 && h.connsByIP[ip] >= h.cfg.MaxConnsPerIP {
		h.mu.Unlock()
		h.quiet.Info("ip:"+ip, "too_many_connections", "node connection refused", "reason", wire.CloseTooManyConnections)
		_ = conn.Close(websocket.StatusPolicyViolation, wire.CloseTooManyConnections)
		return
	}
	h.conns[n] = struct{}{}
	h.connsByIP[ip]++
	h.wg.Add(1) // for this ServeNode call; Close waits for it
	h.mu.Unlock()
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		delete(h.conns, n)
		if h.connsByIP[ip]--; h.connsByIP[ip] <= 0 {
			delete(h.connsByIP, ip)
		}
		h.mu.Unlock()
	}()
	n.run(ctx)
}

// register makes n the node for reg.NodeID, or returns the close reason
// that refuses it. If another connection holds the id, that connection is
// pinged first (without the lock): while it answers, the id is in use and
// the newcomer is refused, so that nobody can take over a live node's id
// and, with it, its place and record.
func (h *Hub) register(ctx context.Context, n *Node, reg wire.Register, key string) (reason string) {
	models := nodeModels(reg.Models)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return "router shutting down"
	}
	old := h.nodes[reg.NodeID]
	if old != nil {
		if h.claiming[reg.NodeID] {
			h.mu.Unlock()
			return wire.CloseNodeIDInUse
		}
		h.claiming[reg.NodeID] = true
		h.mu.Unlock()
		alive := old.alive(ctx, h.cfg.TakeoverTimeout)
		h.mu.Lock()
		delete(h.claiming, reg.NodeID)
		if alive {
			h.mu.Unlock()
			h.quiet.Warn("ip:"+n.ip, "node_id_in_use", "refused a connection registering a connected node's id", "node_id", reg.NodeID)
			return wire.CloseNodeIDInUse
		}
		if h.closed {
			h.mu.Unlock()
			return "router shutting down"
		}
		switch h.nodes[reg.NodeID] {
		case old:
		case nil:
			old = nil // the old link ended meanwhile: the id is free
		default:
			// Another newcomer took the id while the old link was checked.
			h.mu.Unlock()
			return wire.CloseNodeIDInUse
		}
	}
	count := h.perIP[n.ip]
	if old != nil && old.ip == n.ip {
		count-- // the old connection is being replaced
	}
	if h.cfg.MaxNodesPerIP > 0 && count >= h.cfg.MaxNodesPerIP {
		h.mu.Unlock()
		return wire.CloseTooManyNodesFromIP
	}
	now := h.cfg.Now()
	if old != nil {
		h.removeLocked(old)
		h.leftLocked(old.rec)
	}
	n.id = reg.NodeID
	n.connectedAt = now
	n.lastSeen.Store(now.UnixNano())
	n.maxConcurrent = reg.MaxConcurrent
	n.ollamaVersion = reg.OllamaVersion
	n.agent = reg.Agent
	n.protocol = reg.Protocol
	n.key = key
	n.rec = h.recordLocked(n.ip, n.id, key, now)
	n.rec.live++
	h.setModelsLocked(n, models) // not indexed yet: addLocked does below
	n.available = true
	n.registered = true
	// "registered" goes first into the connection's (still empty) send
	// queue, before any request the node can be given once it is visible
	// (waiters are handed its capacity just below).
	n.send <- registeredAck(n.id)
	h.addLocked(n)
	h.kickNodeLocked(n)
	h.mu.Unlock()
	if old != nil {
		h.log.Info("node re-registered: the old link did not answer", "node_id", n.id)
		old.closeWith(websocket.StatusNormalClosure, wire.CloseReRegistered)
	}
	h.registeredTotal.Add(1)
	if h.cfg.OnRegister != nil {
		h.cfg.OnRegister()
	}
	return ""
}

// alive pings the node's link and reports whether it answered within
// timeout. The node's read loop is running, which the pong needs.
func (n *Node) alive(ctx context.Context, timeout time.Duration) bool {
	select {
	case <-n.gone:
		return false
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return n.conn.Ping(ctx) == nil
}

// recordLocked returns the record of a node, making one if needed. A node
// that proved a key has the record of its key, wherever it connects
// from. A keyless node's record is keyed by its address and announced id.
// A new record (a new id, or a key never seen) inherits the breaker and
// reputation of the node that last left the same address: a node that
// disconnects and comes back under a fresh id or a fresh key does not
// start clean, while another machine behind the same address that joins
// beside live nodes does. h.mu must be held.
func (h *Hub) recordLocked(ip, id, key string, now time.Time) *record {
	rk := "a:" + ip + "\x00" + id
	if key != "" {
		rk = "k:" + id // the id derives from the key
	}
	r := h.records[rk]
	if r == nil {
		if len(h.records) >= h.cfg.MaxRecords {
			h.forgetRecordsLocked()
		}
		r = &record{key: rk, ip: ip}
		if gone := h.goneByIP[ip]; gone != nil {
			// A key never seen before is free to make: it starts from
			// its address's last record too.
			r.inherit(gone)
		}
		h.records[rk] = r
		delete(h.forgotten, rk)
	}
	r.ip = ip // where the node was last seen
	if r.live == 0 {
		r.known = r.updated
	}
	r.updated = now
	r.dirty = true
	return r
}

// leftLocked notes that a connection holding r ended. h.mu must be held.
func (h *Hub) leftLocked(r *record) {
	if r.live--; r.live == 0 {
		h.goneByIP[r.ip] = r
	}
}

// forgetRecordsLocked drops the older half of the records of nodes not
// connected now. h.mu must be held; it runs once per MaxRecords/2 new
// records at most.
func (h *Hub) forgetRecordsLocked() {
	var idle []*record
	for _, r := range h.records {
		if r.live == 0 {
			idle = append(idle, r)
		}
	}
	if len(idle) == 0 {
		return
	}
	slices.SortFunc(idle, func(a, b *record) int { return a.updated.Compare(b.updated) })
	for _, r := range idle[:len(idle)/2+1] {
		delete(h.records, r.key)
		h.forgotten[r.key] = true
		if h.goneByIP[r.ip] == r {
			delete(h.goneByIP, r.ip)
		}
	}
}

// MergeRecord applies another router's record of a node, data as the
// router's store saved it under key (the network shares what each router
// saves). It is decoded with the bounds of the router's own store,
// outside the lock; a damaged, oversized or misfiled record is refused.
// A record this router does not have is taken while there is room
// (MaxRecords); one of a node not connected here is replaced when the
// other is newer (by its last update). A node connected here is this
// router's own observation: of the other record only what it observed
// against the node later than this router did applies (a breaker that
// opened, a quarantine, a lower reputation; see record.worsen). A merged
// record is not marked changed: this router does not share it again (no
// echo between routers) and keeps it in its own store only once its own
// observations change it. It reports whether anything was applied.
func (h *Hub) MergeRecord(key string, data []byte) bool {
	in, ok := decodeRecord(key, data, h.cfg.Now())
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	r := h.records[key]
	switch {
	case r == nil:
		if len(h.records) >= h.cfg.MaxRecords {
			return false
		}
		h.records[key] = in
		// A record forgotten here and still kept by the network: the
		// store must not delete the network's copy.
		delete(h.forgotten, key)
		return true
	case r.live > 0:
		// Compared signal by signal: the registration here made r
		// newer than whatever the node did elsewhere before.
		if !r.worsen(in) {
			return false
		}
		h.gen++ // the node may leave the servable list
		return true
	case !in.updated.After(r.updated):
		return false
	default:
		r.takeFrom(in)
		return true
	}
}

// RecordCount is the number of node records the hub keeps.
func (h *Hub) RecordCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.records)
}

// TouchConnected marks the records of the nodes connected now as
// changed, so that the store saves them all on its next flush (the
// network's bucket gets them again after NATS lost its state).
func (h *Hub) TouchConnected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.nodes {
		n.rec.dirty = true
	}
}

// unregister removes n if it is still the registered node for its id.
func (h *Hub) unregister(n *Node) {
	h.mu.Lock()
	if h.nodes[n.id] == n {
		h.removeLocked(n)
		h.leftLocked(n.rec)
	}
	h.mu.Unlock()
}

// reserve takes size bytes of the hub-wide stream budget, if it allows.
func (h *Hub) reserve(size int) bool {
	if h.buffered.Add(int64(size)) > h.cfg.MaxBufferedBytes {
		h.buffered.Add(-int64(size))
		return false
	}
	return true
}

// unreserve gives size bytes back to the budget.
func (h *Hub) unreserve(size int) {
	if size != 0 {
		h.buffered.Add(-int64(size))
	}
}

// Buffered is how many bytes every stream holds for its consumer now.
func (h *Hub) Buffered() int64 { return h.buffered.Load() }

// RegisteredTotal counts successful registrations since start.
func (h *Hub) RegisteredTotal() int64 { return h.registeredTotal.Load() }

// NodeCount is the number of registered nodes.
func (h *Hub) NodeCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.nodes)
}

// Freed signals (coalesced: one value waits at most) that a request
// ended and its model has no waiter here, so the slot it held is free:
// for a network of routers, whose waiters may take it.
func (h *Hub) Freed() <-chan struct{} { return h.freed }

// Waiting is the number of requests waiting in the queues.
func (h *Hub) Waiting() int { return int(h.waiting.Load()) }

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}
