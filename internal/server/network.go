package server

import (
	"net/http"
	"sort"
)

// GET /api/network (ext): the network as one JSON document, for the web
// page, `idleclaw status` and anyone who wants more than /api/models —
// per model, how many nodes serve it, how many slots are free, and how
// many nodes of each trust class serve it, with which digests. It names
// no node and no address.

type networkModel struct {
	Name         string                 `json:"name"`
	Nodes        int                    `json:"nodes"`
	Servable     int                    `json:"servable"` // nodes that can take a request now
	FreeSlots    int                    `json:"free_slots"`
	Thinking     bool                   `json:"thinking"`
	ToolCalls    bool                   `json:"tool_calls"`
	Vision       bool                   `json:"vision"`
	Capabilities []string               `json:"capabilities"`
	Verified     int                    `json:"verified"`
	Unverified   int                    `json:"unverified"`
	Quarantined  int                    `json:"quarantined"`
	Digests      map[string]digestCount `json:"digests"`
}

type digestCount struct {
	Nodes    int `json:"nodes"`
	Verified int `json:"verified"`
}

type networkView struct {
	UptimeSeconds  int            `json:"uptime_seconds"`
	NodeCount      int            `json:"node_count"`
	Models         []networkModel `json:"models"`          // the most servable first, as /api/models
	RequestsActive int64          `json:"requests_active"` // at this router
	RequestsQueued int            `json:"requests_queued"` // at every router of the network
	// Routers lists the routers of a network of several (this one
	// first); absent for a router alone.
	Routers []PeerRouter `json:"routers,omitempty"`
}

func (s *Server) network() networkView {
	all := s.models(true)
	now := map[string]int{}
	order := map[string]int{}
	for i, m := range s.models(false) {
		now[m.Name] = m.Nodes
		order[m.Name] = i
	}
	v := networkView{
		UptimeSeconds:  int(s.cfg.Now().Sub(s.started).Seconds()),
		NodeCount:      s.nodeCount(),
		Models:         make([]networkModel, 0, len(all)),
		RequestsActive: s.metrics.requestsActive.Load(),
		RequestsQueued: s.hub.Waiting(),
	}
	if s.peers != nil {
		v.Routers = s.peers.Routers()
		v.RequestsQueued += s.peers.Waiting()
	}
	for _, m := range all {
		nm := networkModel{Name: m.Name, Nodes: m.Nodes, Servable: now[m.Name], FreeSlots: m.FreeSlots,
			Thinking: m.Thinking, ToolCalls: m.Tools, Vision: m.Vision, Capabilities: m.Capabilities,
			Verified: m.Verified, Unverified: m.Unverified, Quarantined: m.Quarantined, Digests: map[string]digestCount{}}
		if nm.Capabilities == nil {
			nm.Capabilities = []string{}
		}
		for d, c := range m.Digests {
			nm.Digests["sha256:"+d] = digestCount{Nodes: c.Nodes, Verified: c.Verified}
		}
		v.Models = append(v.Models, nm)
	}
	// Servable models first, in /api/models' order; the rest by name.
	sort.SliceStable(v.Models, func(i, j int) bool {
		oi, iok := order[v.Models[i].Name]
		oj, jok := order[v.Models[j].Name]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return v.Models[i].Name < v.Models[j].Name
	})
	return v
}

func (s *Server) handleNetwork(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.network())
}
