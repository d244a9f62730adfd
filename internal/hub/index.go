package hub

import "github.com/idleclaw/idleclaw/internal/wire"

// The per-model index: Hub.byModel maps a normalized model name to the
// registered nodes that advertise it, with the union of their capabilities
// kept as a count per capability, so that a request's Model lookup, pick
// and serves visit only the nodes that have its model, and reading a
// model's capabilities costs the same whatever its nodes sent.
//
// A set per model (map[*Node]struct{}) rather than a slice: adding and
// removing a node is O(1) with no position to keep, and iterating it comes
// in random order, so that ties among equal nodes spread.
//
// Invariant (h.mu held): n is in byModel[name].nodes exactly when
// h.nodes[n.id] == n and n advertises name; no entry is empty; an entry's
// caps[i] counts its nodes whose model has capability bit i. Only
// addLocked, removeLocked and setModelsLocked change what it depends on.

// nodeModel is one model as a node registered it, with what the hub
// derives from it once, at registration.
type nodeModel struct {
	wire.Model                 // Name normalized ("llama3.2" → "llama3.2:latest")
	spelling   string          // the name exactly as the node registered it: what it is sent
	caps       wire.Capability // the capabilities the router knows, from Model.Capabilities
}

// capBits is the number of capability bits an entry counts.
const capBits = 8

// modelEntry is the index entry of one model.
type modelEntry struct {
	nodes map[*Node]struct{}
	caps  [capBits]int
}

// capsOf is the union of the capabilities of the entry's nodes.
func (e *modelEntry) capsOf() wire.Capability {
	var c wire.Capability
	for i, n := range e.caps {
		if n > 0 {
			c |= 1 << i
		}
	}
	return c
}

// addLocked makes n the registered node for its id and indexes its models.
// h.mu must be held, and no other node registered under n.id.
func (h *Hub) addLocked(n *Node) {
	h.nodes[n.id] = n
	h.perIP[n.ip]++
	for i := range n.models {
		h.indexLocked(n, &n.models[i])
	}
	h.gen++
}

// removeLocked unregisters n and takes it out of the index. h.mu must be
// held, and n be the registered node for its id.
func (h *Hub) removeLocked(n *Node) {
	delete(h.nodes, n.id)
	if h.perIP[n.ip]--; h.perIP[n.ip] <= 0 {
		delete(h.perIP, n.ip)
	}
	for i := range n.models {
		h.unindexLocked(n, &n.models[i])
	}
	h.gen++
}

// setModelsLocked replaces n's model list and, if n is the registered node
// for its id, re-indexes it: out under the old names, in under the new
// (lists are short, at most wire.MaxModelsPerNode, and updates are rate
// limited). A connection not registered yet (register indexes it) or
// already replaced by a newer one for its id stays out of the index. h.mu
// must be held; models is already validated and built (nodeModels).
func (h *Hub) setModelsLocked(n *Node, models []nodeModel) {
	registered := h.nodes[n.id] == n
	if registered {
		for i := range n.models {
			h.unindexLocked(n, &n.models[i])
		}
	}
	n.models = models
	if registered {
		for i := range n.models {
			h.indexLocked(n, &n.models[i])
		}
	}
	h.gen++
}

// nodeModels builds a node's model list from a validated wire list. It
// runs without the hub's lock: the work is the node's to pay for.
func nodeModels(models []wire.Model) []nodeModel {
	out := make([]nodeModel, 0, len(models))
	seen := make(map[string]bool, len(models))
	for _, m := range models {
		name := wire.NormalizeModel(m.Name)
		if seen[name] {
			continue // "m" and "m:latest" are one model
		}
		seen[name] = true
		nm := nodeModel{Model: m, spelling: m.Name, caps: wire.CapabilitiesOf(m.Capabilities)}
		nm.Name = name
		nm.Capabilities = nil // the router keeps only what it knows: caps
		out = append(out, nm)
	}
	return out
}

// nodesWithLocked returns the registered nodes that advertise model, or
// nil. The set is the index's own: callers must not change it, nor the
// index while ranging over it. h.mu must be held.
func (h *Hub) nodesWithLocked(model string) map[*Node]struct{} {
	if e := h.byModel[model]; e != nil {
		return e.nodes
	}
	return nil
}

// indexLocked lists n under m's name. h.mu must be held.
func (h *Hub) indexLocked(n *Node, m *nodeModel) {
	e := h.byModel[m.Name]
	if e == nil {
		e = &modelEntry{nodes: map[*Node]struct{}{}}
		h.byModel[m.Name] = e
	}
	e.nodes[n] = struct{}{}
	for i := range capBits {
		if m.caps&(1<<i) != 0 {
			e.caps[i]++
		}
	}
}

// unindexLocked takes n off m's name, dropping the entry once empty. h.mu
// must be held.
func (h *Hub) unindexLocked(n *Node, m *nodeModel) {
	e := h.byModel[m.Name]
	if e == nil {
		return
	}
	if _, ok := e.nodes[n]; !ok {
		return
	}
	delete(e.nodes, n)
	for i := range capBits {
		if m.caps&(1<<i) != 0 {
			e.caps[i]--
		}
	}
	if len(e.nodes) == 0 {
		delete(h.byModel, m.Name)
	}
}

// digestFor returns the digest n registered model (normalized) with.
// h.mu must be held.
func (n *Node) digestFor(model string) string {
	for i := range n.models {
		if n.models[i].Name == model {
			return n.models[i].Digest
		}
	}
	return ""
}

// spellingFor returns how n registered model (normalized), or model.
func (n *Node) spellingFor(model string) string {
	for i := range n.models {
		if n.models[i].Name == model {
			return n.models[i].spelling
		}
	}
	return model
}
