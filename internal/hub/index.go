package hub

import "github.com/idleclaw/idleclaw/internal/wire"

// The per-model index: Hub.byModel maps a normalized model name to the
// registered nodes that advertise it, so that a request's Model lookup,
// pick and serves visit only the nodes that have its model instead of
// every registered node.
//
// A set per model (map[*Node]struct{}) rather than a slice: adding and
// removing a node is O(1) with no position to keep, and iterating it comes
// in random order, as iterating h.nodes did, so that the policy, which
// gives ties to the first candidate, still spreads ties over equal nodes.
//
// Invariant (h.mu held): n is in byModel[name] exactly when h.nodes[n.id]
// == n and n advertises name; no set is empty. Only addLocked,
// removeLocked and setModelsLocked change what it depends on.

// addLocked makes n the registered node for its id and indexes its models.
// h.mu must be held, and no other node registered under n.id.
func (h *Hub) addLocked(n *Node) {
	h.nodes[n.id] = n
	h.perIP[n.ip]++
	for _, m := range n.models {
		h.indexLocked(n, m.Name)
	}
}

// removeLocked unregisters n and takes it out of the index. h.mu must be
// held, and n be the registered node for its id.
func (h *Hub) removeLocked(n *Node) {
	delete(h.nodes, n.id)
	if h.perIP[n.ip]--; h.perIP[n.ip] <= 0 {
		delete(h.perIP, n.ip)
	}
	for _, m := range n.models {
		h.unindexLocked(n, m.Name)
	}
}

// setModelsLocked replaces n's model list (names normalized) and, if n is
// the registered node for its id, re-indexes it: out under the old names,
// in under the new (lists are short and updates rare). A connection not
// registered yet (register indexes it) or already replaced by a newer one
// for its id stays out of the index. h.mu must be held.
func (h *Hub) setModelsLocked(n *Node, models []wire.Model) {
	registered := h.nodes[n.id] == n
	if registered {
		for _, m := range n.models {
			h.unindexLocked(n, m.Name)
		}
	}
	n.models = make([]wire.Model, len(models))
	for i, m := range models {
		m.Name = wire.NormalizeModel(m.Name)
		n.models[i] = m
		if registered {
			h.indexLocked(n, m.Name)
		}
	}
}

// nodesWithLocked returns the registered nodes that advertise model, or
// nil. The set is the index's own: callers must not change it, nor the
// index while ranging over it. h.mu must be held.
func (h *Hub) nodesWithLocked(model string) map[*Node]struct{} {
	return h.byModel[model]
}

// indexLocked lists n under model. h.mu must be held.
func (h *Hub) indexLocked(n *Node, model string) {
	set := h.byModel[model]
	if set == nil {
		set = map[*Node]struct{}{}
		h.byModel[model] = set
	}
	set[n] = struct{}{}
}

// unindexLocked takes n off model's list, dropping the list once empty.
// h.mu must be held.
func (h *Hub) unindexLocked(n *Node, model string) {
	set := h.byModel[model]
	delete(set, n)
	if len(set) == 0 {
		delete(h.byModel, model)
	}
}
