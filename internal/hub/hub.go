// Package hub owns the router's side of node connections: registration, the
// registry of connected nodes and their models, liveness, node selection and
// the per-request streams that carry a node's chunks to one consumer.
//
// Each node connection is served by one goroutine (ServeNode) that reads its
// frames and owns a writer goroutine with a bounded queue. Chunks go to each
// request's bounded buffer without blocking: a consumer that stops reading
// fails its own request, never the node's read loop, its heartbeats or its
// other requests.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// Sentinel errors callers branch on.
var (
	ErrNoNode       = errors.New("no node available for the model")
	ErrNodeGone     = errors.New("node disconnected")
	ErrSlowConsumer = errors.New("consumer too slow")
	ErrShutdown     = errors.New("router shutting down")
	ErrNodeBusy     = errors.New("node send queue full")
)

// NodeError is a request ended by the node with an inference_error code.
type NodeError struct{ Code string }

func (e *NodeError) Error() string { return "node error: " + e.Code }

// Config configures a Hub. The zero value is usable: every zero field takes
// the protocol default.
type Config struct {
	RegistrationTimeout time.Duration // default 10s
	HeartbeatTimeout    time.Duration // default 45s
	MaxNodesPerIP       int           // default 3; negative turns the limit off
	StreamBuffer        int           // chunks buffered per request, default 256
	// StreamOverflowBytes bounds what a request holds beyond StreamBuffer
	// when its consumer falls behind a burst (default 1 MiB); past it the
	// request fails as too slow.
	StreamOverflowBytes int
	SendQueue           int // frames queued per node, default 256
	Logger              *slog.Logger
	Now                 func() time.Time
	// OnRegister, if set, is called (without locks held) after a node registered.
	OnRegister func()

	Policy  Policy        // node selection; default WarmFirst
	Breaker BreakerConfig // per-node circuit breaker
	Queue   QueueConfig   // waiting for a busy model
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
	if c.StreamBuffer <= 0 {
		c.StreamBuffer = 256
	}
	if c.StreamOverflowBytes == 0 {
		c.StreamOverflowBytes = 1 << 20
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
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
}

// Hub is the registry of connected nodes. It is safe for concurrent use.
type Hub struct {
	cfg  Config
	log  *slog.Logger
	wg   sync.WaitGroup // every goroutine the hub started
	stop chan struct{}

	registeredTotal atomic.Int64
	waiting         atomic.Int64 // requests in all queues; 0 lets kick skip the lock

	mu       sync.Mutex                    // guards the following fields
	nodes    map[string]*Node              // registered nodes by node_id
	conns    map[*Node]struct{}            // every open connection, registered or not
	perIP    map[string]int                // registered nodes per IP
	byModel  map[string]map[*Node]struct{} // registered nodes by model they advertise (index.go)
	breakers map[string]*breaker           // by node_id; outlives connections
	queues   map[string]*modelQueue        // waiting requests by model
	cands    []Candidate                   // pickLocked's scratch, reused from pick to pick
	closed   bool
}

// New returns a Hub and starts its liveness watchdog. Call Close to stop it.
func New(cfg Config) *Hub {
	cfg.setDefaults()
	h := &Hub{
		cfg:      cfg,
		log:      cfg.Logger,
		stop:     make(chan struct{}),
		nodes:    map[string]*Node{},
		conns:    map[*Node]struct{}{},
		perIP:    map[string]int{},
		byModel:  map[string]map[*Node]struct{}{},
		breakers: map[string]*breaker{},
		queues:   map[string]*modelQueue{},
	}
	h.wg.Add(1)
	go h.watchdog()
	return h
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
// address as the server resolved it. The caller must not use conn afterwards.
func (h *Hub) ServeNode(ctx context.Context, conn *websocket.Conn, ip string) {
	conn.SetReadLimit(wire.MaxFrameBytes)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := &Node{
		hub:       h,
		conn:      conn,
		ip:        ip,
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
	h.conns[n] = struct{}{}
	h.wg.Add(1) // for this ServeNode call; Close waits for it
	h.mu.Unlock()
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		delete(h.conns, n)
		h.mu.Unlock()
	}()
	n.run(ctx)
}

func (h *Hub) register(n *Node, reg wire.Register) (reason string) {
	now := h.cfg.Now()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return "router shutting down"
	}
	old := h.nodes[reg.NodeID]
	count := h.perIP[n.ip]
	if old != nil && old.ip == n.ip {
		count-- // the old connection is being replaced
	}
	if h.cfg.MaxNodesPerIP > 0 && count >= h.cfg.MaxNodesPerIP {
		h.mu.Unlock()
		return wire.CloseTooManyNodesFromIP
	}
	if old != nil {
		h.removeLocked(old)
	}
	n.id = reg.NodeID
	n.connectedAt = now
	n.lastSeen.Store(now.UnixNano())
	n.maxConcurrent = reg.MaxConcurrent
	n.ollamaVersion = reg.OllamaVersion
	n.agent = reg.Agent
	h.setModelsLocked(n, reg.Models) // not indexed yet: addLocked does below
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
		h.log.Info("node re-registered", "node_id", n.id)
		old.closeWith(websocket.StatusNormalClosure, wire.CloseReRegistered)
	}
	h.registeredTotal.Add(1)
	if h.cfg.OnRegister != nil {
		h.cfg.OnRegister()
	}
	return ""
}

// unregister removes n if it is still the registered node for its id.
func (h *Hub) unregister(n *Node) {
	h.mu.Lock()
	if h.nodes[n.id] == n {
		h.removeLocked(n)
	}
	h.mu.Unlock()
}

// RegisteredTotal counts successful registrations since start.
func (h *Hub) RegisteredTotal() int64 { return h.registeredTotal.Load() }

// NodeCount is the number of registered nodes.
func (h *Hub) NodeCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.nodes)
}

// ModelInfo describes one model that some node can serve now.
type ModelInfo struct {
	wire.Model
	Nodes        int
	Thinking     bool
	Tools        bool
	Loaded       bool
	Capabilities []string
}

// Models lists the models some available node with free capacity serves,
// largest first (clients take the first as the default). If all is true,
// busy and unavailable nodes count too.
func (h *Hub) Models(all bool) []ModelInfo {
	return h.models(all, "")
}

// Model returns what the network knows of one model (a normalized name),
// counting every registered node that has it, busy or not. It is on every
// request's path, so it gathers that one model only.
func (h *Hub) Model(name string) (ModelInfo, bool) {
	if out := h.models(true, name); len(out) == 1 {
		return out[0], true
	}
	return ModelInfo{}, false
}

// models gathers the models of the nodes, or only the one named by only:
// then it visits only the nodes the index lists for it.
func (h *Hub) models(all bool, only string) []ModelInfo {
	byName := map[string]*ModelInfo{}
	gather := func(n *Node) {
		if !all && !n.hasCapacity() {
			return
		}
		for _, m := range n.models {
			if only != "" && m.Name != only {
				continue
			}
			mi := byName[m.Name]
			if mi == nil {
				mi = &ModelInfo{Model: m}
				byName[m.Name] = mi
			}
			mi.Nodes++
			mi.Size = max(mi.Size, m.Size)
			if mi.Digest == "" {
				mi.Digest = m.Digest
			}
			for _, c := range m.Capabilities {
				if !slices.Contains(mi.Capabilities, c) {
					mi.Capabilities = append(mi.Capabilities, c)
				}
			}
			if slices.Contains(n.loaded, m.Name) {
				mi.Loaded = true
			}
		}
	}
	h.mu.Lock()
	if only != "" {
		for n := range h.nodesWithLocked(only) {
			gather(n)
		}
	} else {
		for _, n := range h.nodes {
			gather(n)
		}
	}
	h.mu.Unlock()
	out := make([]ModelInfo, 0, len(byName))
	for _, mi := range byName {
		mi.Thinking, mi.Tools = capabilities(mi.Name, mi.Capabilities)
		out = append(out, *mi)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Size != out[j].Size {
			return out[i].Size > out[j].Size
		}
		return out[i].Name < out[j].Name
	})
	return out
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
}

// Nodes lists the registered nodes, ordered by node id.
func (h *Hub) Nodes() []NodeInfo {
	now := h.cfg.Now()
	h.mu.Lock()
	out := make([]NodeInfo, 0, len(h.nodes))
	for _, n := range h.nodes {
		names := make([]string, len(n.models))
		for i, m := range n.models {
			names[i] = m.Name
		}
		out = append(out, NodeInfo{
			NodeID: n.id, IP: n.ip, Models: names, ConnectedFor: now.Sub(n.connectedAt),
			ActiveRequests: int(n.active.Load()), MaxConcurrent: n.maxConcurrent,
			Available: n.available, OllamaVersion: n.ollamaVersion, Agent: n.agent,
		})
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}
