package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Peers is the rest of a network of routers (internal/cluster): what the
// other routers' nodes serve, and a way to run a request on them. A
// Server without Peers is a router alone, as it always was.
type Peers interface {
	// Models lists the other routers' models as each of them counts them
	// (hub.Models' lists, concatenated: one model may appear once per
	// router); all as for hub.Models.
	Models(all bool) []hub.ModelInfo
	// NodeCount is the number of nodes connected to the other routers.
	NodeCount() int
	// Waiting is the number of requests waiting for a node at the other
	// routers.
	Waiting() int
	// Routers lists the routers of the network, this one first.
	Routers() []PeerRouter
	// Chat runs req on another router's nodes, as dispatch.Chat does on
	// this router's: it returns an error matching dispatch.ErrNoNode,
	// having emitted nothing, when no other router took the request.
	// With wait false only routers with a free slot now are asked, and
	// they do not queue it.
	Chat(ctx context.Context, req dispatch.Request, wait bool, emit func(dispatch.Event) error) (dispatch.Result, error)
}

// PeerRouter is one router of the network, as /api/network shows it.
type PeerRouter struct {
	ID        string `json:"id"`
	URL       string `json:"url,omitempty"`
	NodeCount int    `json:"node_count"`
}

// banSharer is a Peers that also carries the operator's bans to the
// other routers.
type banSharer interface {
	ShareBan(ctx context.Context, id string, banned bool) error
}

// shareBan passes a ban (or its lifting) made here to the other routers,
// when there are any; failing that, the ban holds here.
func (s *Server) shareBan(ctx context.Context, id string, banned bool) {
	bs, ok := s.peers.(banSharer)
	if !ok {
		return
	}
	if err := bs.ShareBan(ctx, id, banned); err != nil {
		s.log.Warn("cannot pass the ban to the other routers; it holds here", "node_id", id, "banned", banned, "err", err)
	}
}

// SetPeers joins the server to a network of routers. Call it before the
// server serves.
func (s *Server) SetPeers(p Peers) { s.peers = p }

// models is hub.Models merged with the other routers' models.
func (s *Server) models(all bool) []hub.ModelInfo {
	local := s.hub.Models(all)
	if s.peers == nil {
		return local
	}
	return mergeModels(local, s.peers.Models(all))
}

// nodeCount counts the nodes of the whole network.
func (s *Server) nodeCount() int {
	n := s.hub.NodeCount()
	if s.peers != nil {
		n += s.peers.NodeCount()
	}
	return n
}

// modelInfo is what the network knows of a model: its nodes here, or,
// when this router has none, the other routers'.
func (s *Server) modelInfo(name string) (hub.ModelInfo, bool) {
	if m, ok := s.hub.Model(name); ok || s.peers == nil {
		return m, ok
	}
	for _, m := range s.models(true) {
		if m.Name == name {
			return m, true
		}
	}
	return hub.ModelInfo{}, false
}

// knownModel reports whether some node of the network serves the model.
func (s *Server) knownModel(name string) bool {
	if _, ok := s.hub.Model(name); ok {
		return true
	}
	if s.peers == nil {
		return false
	}
	for _, m := range s.peers.Models(true) {
		if m.Name == name {
			return true
		}
	}
	return false
}

// chat runs req on this router's nodes, or, when they cannot take it now
// and another router's can, on those. A request waiting here for a node
// moves to another router's when one frees there first (hub.Offload, from
// the network's view); if that node is taken by the time it arrives, it
// waits here again at the head of the queue, at most maxMoves times.
func (s *Server) chat(ctx context.Context, req dispatch.Request, emit func(dispatch.Event) error) (dispatch.Result, error) {
	if s.peers == nil || req.Node != "" {
		return s.dispatch.Chat(ctx, req, emit)
	}
	var deadline time.Time // one bound for the wait here, however often it moves
	if t := s.dispatch.ResponseTimeout(); t > 0 {
		deadline = time.Now().Add(t)
	}
	begun := false
	out := func(ev dispatch.Event) error {
		begun = true
		return emit(ev)
	}
	info, ok := s.hub.Model(req.Model)
	if !ok || info.FreeSlots <= 0 {
		// No local node, or none free: another router's free node
		// first; with no local node at all, another router's queue.
		res, err := s.peers.Chat(ctx, req, !ok, out)
		if !errors.Is(err, dispatch.ErrNoNode) || !ok {
			return res, err
		}
	}
	for moves := 0; ; moves++ {
		req.Stay, req.Begun, req.Deadline = moves >= maxMoves, begun, deadline
		res, err := s.dispatch.Chat(ctx, req, out)
		if !errors.Is(err, dispatch.ErrElsewhere) {
			return res, err
		}
		res, err = s.peers.Chat(ctx, req, false, out)
		if !errors.Is(err, dispatch.ErrNoNode) {
			return res, err
		}
		req.Moved = true // the free node was taken meanwhile: back in line, first
	}
}

// maxMoves bounds how often a waiting request moves to another router's
// free node and finds it taken.
const maxMoves = 3

// ErrRemoteRefused is what CheckRemote returns for a request it refuses
// on its merits (not for want of a node): the other router should not
// try elsewhere.
var ErrRemoteRefused = errors.New("request refused")

// CheckRemote validates a request another router forwards, as this
// router validates its own consumers' requests (the limits, the trust
// requirements, the inbound patterns, the classifier, a draining router):
// a peer is not trusted to have done it. It returns an error matching
// dispatch.ErrNoNode when this router's own nodes cannot take it (with
// wait false: none has a free slot now), ErrRemoteRefused otherwise.
func (s *Server) CheckRemote(ctx context.Context, req *dispatch.Request, wait bool) error {
	req.Node = "" // the canaries' field is never a peer's to set
	if rerr := checkModel(req.Model); rerr != nil {
		return fmt.Errorf("%w: %s", ErrRemoteRefused, rerr.Detail)
	}
	req.Model = wire.NormalizeModel(req.Model)
	extra := len(req.Tools) + len(req.Format) + len(req.Options)
	if rerr := checkMessages(req.Messages, s.limits(), extra); rerr != nil {
		return fmt.Errorf("%w: %s", ErrRemoteRefused, rerr.Detail)
	}
	switch req.ThinkLevel {
	case "", "low", "medium", "high":
	default:
		return fmt.Errorf("%w: think level", ErrRemoteRefused)
	}
	switch req.MinTier {
	case "", hub.TierAnonymous, hub.TierUnverified, hub.TierVerified, hub.TierTrusted:
	default:
		return fmt.Errorf("%w: trust tier", ErrRemoteRefused)
	}
	if req.Digest != "" && !validDigest(req.Digest) {
		return fmt.Errorf("%w: digest", ErrRemoteRefused)
	}
	if len(req.ClientIP) > 64 {
		return fmt.Errorf("%w: client address", ErrRemoteRefused)
	}
	if !s.patternsOK(req.Messages) {
		return fmt.Errorf("%w: message content not allowed", ErrRemoteRefused)
	}
	if s.draining.Load() {
		return dispatch.ErrBusy
	}
	info, ok := s.hub.Model(req.Model)
	switch {
	case !ok:
		return dispatch.ErrNoNode
	case !wait && info.FreeSlots <= 0:
		return dispatch.ErrBusy
	}
	if !s.classifierAllows(ctx, req.Messages) {
		return fmt.Errorf("%w: message content not allowed", ErrRemoteRefused)
	}
	return nil
}

// RunRemote runs a request CheckRemote accepted on this router's own
// nodes, through the one dispatch path, counted as the "cluster" dialect.
func (s *Server) RunRemote(ctx context.Context, req dispatch.Request, emit func(dispatch.Event) error) (dispatch.Result, error) {
	end := s.metrics.begin("cluster")
	req.Stay = true // a forwarded request is not forwarded again
	res, err := s.dispatch.Chat(ctx, req, emit)
	switch {
	case errors.Is(err, dispatch.ErrNoNode):
		end(res.Outcome, 0, 0)
	case err != nil:
		res.Outcome = "canceled"
		end(res.Outcome, res.Tokens, res.FirstToken)
	default:
		end(res.Outcome, res.Tokens, res.FirstToken)
	}
	s.log.Info("chat", "dialect", "cluster", "model", req.Model, "outcome", res.Outcome, "tokens", res.Tokens,
		"first_token_ms", res.FirstToken.Milliseconds())
	return res, err
}

// mergeModels sums the lists of several routers per model, in hub.Models'
// order (distinct addresses, free slots, nodes, name). Addresses are
// counted per router, so Origins may count one address twice when its
// nodes link to two routers.
func mergeModels(local, remote []hub.ModelInfo) []hub.ModelInfo {
	if len(remote) == 0 {
		return local
	}
	at := make(map[string]int, len(local)+len(remote))
	out := make([]hub.ModelInfo, 0, len(local)+len(remote))
	for _, m := range local {
		at[m.Name] = len(out)
		out = append(out, m)
	}
	for _, m := range remote {
		i, ok := at[m.Name]
		if !ok {
			at[m.Name] = len(out)
			m.Capabilities = slices.Clone(m.Capabilities)
			m.Digests = cloneDigests(m.Digests)
			out = append(out, m)
			continue
		}
		o := &out[i]
		o.Nodes += m.Nodes
		o.Origins += m.Origins
		o.FreeSlots += m.FreeSlots
		o.Loaded = o.Loaded || m.Loaded
		o.Verified += m.Verified
		o.Unverified += m.Unverified
		o.Quarantined += m.Quarantined
		o.Thinking = o.Thinking || m.Thinking
		o.Tools = o.Tools || m.Tools
		o.Vision = o.Vision || m.Vision
		o.Size = max(o.Size, m.Size)
		for _, c := range m.Capabilities {
			if !slices.Contains(o.Capabilities, c) {
				o.Capabilities = append(slices.Clone(o.Capabilities), c)
			}
		}
		if len(m.Digests) > 0 {
			o.Digests = cloneDigests(o.Digests)
			if o.Digests == nil {
				o.Digests = map[string]hub.DigestInfo{}
			}
			for d, c := range m.Digests {
				x := o.Digests[d]
				x.Nodes += c.Nodes
				x.Verified += c.Verified
				o.Digests[d] = x
			}
		}
	}
	hub.SortModels(out)
	return out
}

func cloneDigests(m map[string]hub.DigestInfo) map[string]hub.DigestInfo {
	if m == nil {
		return nil
	}
	c := make(map[string]hub.DigestInfo, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
