package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// modelsTTL is how long the network's model list is reused.
const modelsTTL = 30 * time.Second

// listTimeout bounds a model-list request to either side.
const listTimeout = 10 * time.Second

// Bounds of a model list read from the provider or the network.
const (
	MaxModelList    = 4 << 20
	maxModelEntries = 4096
)

var errNoNetworkModel = errors.New("no node serves a model now")

// networkModels is the network's model list, largest first, cached for
// modelsTTL. The lock is not held across the request.
func (g *Gateway) networkModels(ctx context.Context) ([]string, error) {
	now := g.cfg.Now()
	g.mu.Lock()
	if g.netNames != nil && now.Sub(g.netAt) < modelsTTL {
		names := g.netNames
		g.mu.Unlock()
		return names, nil
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	m, err := g.network.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the network's models: %w", err)
	}
	names := make([]string, 0, len(m.Models))
	for _, n := range m.Models {
		if wire.ValidModelName(n) && len(names) < maxModelEntries {
			names = append(names, n)
		}
	}
	g.mu.Lock()
	g.netNames, g.netAt = names, now
	g.mu.Unlock()
	return names, nil
}

// networkModel is the network model a request for asked goes to: the
// mapping's, else asked itself when the network serves it, else the
// mapping's "*", else the network's default (its first model).
func (g *Gateway) networkModel(ctx context.Context, asked string) (string, error) {
	if m, ok := g.cfg.Models[asked]; ok && asked != "*" {
		return m, nil
	}
	names, err := g.networkModels(ctx)
	if wire.ValidModelName(asked) {
		want := wire.NormalizeModel(asked)
		for _, n := range names {
			if n == asked || n == want {
				return asked, nil
			}
		}
	}
	if def := g.cfg.Models["*"]; def != "" {
		return def, nil
	}
	if err != nil {
		return "", errors.New("the network's model list could not be read")
	}
	if len(names) == 0 {
		return "", errNoNetworkModel
	}
	return names[0], nil
}

// ModelEntry is one model of an OpenAI model list.
type ModelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// DecodeModelList reads an OpenAI /models answer ({"data":[{"id",...}]}),
// keeping at most 4096 entries whose ids are 1..256 bytes without
// control characters.
func DecodeModelList(data []byte) ([]ModelEntry, error) {
	if len(data) > MaxModelList {
		return nil, fmt.Errorf("a model list over %d bytes", MaxModelList)
	}
	var in struct {
		Data []struct {
			ID      string          `json:"id"`
			Created json.RawMessage `json:"created"`
			OwnedBy string          `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("not a model list: %s", jsonErrText(err))
	}
	out := make([]ModelEntry, 0, min(len(in.Data), maxModelEntries))
	for _, m := range in.Data {
		if len(out) == maxModelEntries {
			break
		}
		if m.ID == "" || len(m.ID) > 256 || strings.ContainsFunc(m.ID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			continue
		}
		e := ModelEntry{ID: m.ID, Object: "model", OwnedBy: m.OwnedBy}
		_ = json.Unmarshal(m.Created, &e.Created)
		if len(e.OwnedBy) > 256 {
			e.OwnedBy = e.OwnedBy[:256]
		}
		out = append(out, e)
	}
	return out, nil
}

// listFrom fetches and decodes a model list.
func (g *Gateway) listFrom(ctx context.Context, url string, h http.Header) ([]ModelEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	c, err := g.send(ctx, http.MethodGet, url, nil, h)
	if err != nil {
		return nil, errors.New(describe(err))
	}
	defer c.close()
	if c.resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", c.resp.StatusCode)
	}
	data, err := readAll(c, MaxModelList)
	if err != nil {
		return nil, errors.New(describe(err))
	}
	return DecodeModelList(data)
}

// handleModels lists the provider's models (when it answers) and the
// network's, the provider's first; an id both have is listed once.
func (g *Gateway) handleModels(w http.ResponseWriter, r *http.Request) {
	l := &line{start: g.cfg.Now(), route: "provider,network", model: "-"}
	defer g.writeLine(l)
	ph := g.providerHeaders(r)
	ph.Del("Content-Type")
	var wg sync.WaitGroup
	var prov, netw []ModelEntry
	var perr, nerr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		prov, perr = g.listFrom(r.Context(), g.cfg.ProviderURL+"/models", ph)
	}()
	go func() {
		defer wg.Done()
		netw, nerr = g.listFrom(r.Context(), g.cfg.NetworkURL+"/v1/models", http.Header{"User-Agent": {g.cfg.UserAgent}, loopHeader: {"1"}})
	}()
	wg.Wait()
	var routes, why []string
	if perr == nil {
		routes = append(routes, "provider")
	} else {
		why = append(why, "provider: "+perr.Error())
	}
	if nerr == nil {
		routes = append(routes, "network")
	} else {
		why = append(why, "network: "+nerr.Error())
	}
	l.route, l.why = strings.Join(routes, ","), strings.Join(why, "; ")
	if len(routes) == 0 {
		l.route, l.status = "gateway", http.StatusBadGateway
		writeError(w, l.status, "neither the provider nor the IdleClaw network listed its models ("+l.why+")", "api_error", "")
		return
	}
	if l.why == "" {
		l.why = "both listed"
	}
	seen := map[string]bool{}
	out := make([]ModelEntry, 0, len(prov)+len(netw))
	for _, m := range prov {
		if !seen[m.ID] {
			seen[m.ID] = true
			out = append(out, m)
		}
	}
	for _, m := range netw {
		if !seen[m.ID] {
			seen[m.ID] = true
			m.OwnedBy = "idleclaw"
			out = append(out, m)
		}
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "data": out})
	l.status = http.StatusOK
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(HeaderRoute, l.route)
	w.Header().Set(HeaderReason, headerValue(l.why))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}
