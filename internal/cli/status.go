package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/client"
)

// statusReport is the output of `idleclaw status --json`: one JSON object on
// one line of stdout. It is a stable interface: keys are added, never renamed
// or removed.
//
// When the router answered both GET /health and GET /api/models (exit 0):
//
//	{"server":"https://api.idleclaw.com","reachable":true,"uptime_seconds":3723,"node_count":2,
//	 "models":[{"name":"qwen3:32b","thinking":true,"tool_calls":true,"nodes":1,"free_slots":2,
//	            "trust":{"verified":1,"unverified":0,"quarantined":0}},
//	           {"name":"llama3.2:3b","thinking":false,"tool_calls":true,"nodes":1,"free_slots":0,
//	            "trust":{"verified":0,"unverified":1,"quarantined":0}}]}
//
// A router of a network on NATS adds "routers":[{"id":"a","url":"https://a.example",
// "node_count":2},…], the one asked first.
//
// server is the normalized router URL; uptime_seconds is whole seconds;
// node_count counts the nodes registered with the router; models is in the
// router's order, largest model first, so models[0] is the network's default
// ([] when no node serves anything).
//
// Otherwise (exit 1), with error saying why (network failure, error answer,
// timeout):
//
//	{"server":"https://api.idleclaw.com","reachable":false,"error":"dial tcp ...: connection refused"}
type statusReport struct {
	Server        string        `json:"server"`
	Reachable     bool          `json:"reachable"`
	UptimeSeconds int64         `json:"uptime_seconds"`
	NodeCount     int           `json:"node_count"`
	Models        []statusModel `json:"models"`
	// Routers, for a network of routers on NATS: each router's id, URL
	// (if it has one) and its own nodes, the one asked first.
	Routers []statusRouter `json:"routers,omitempty"`
}

// statusRouter is one router of a network on NATS.
type statusRouter struct {
	ID        string `json:"id"`
	URL       string `json:"url,omitempty"`
	NodeCount int    `json:"node_count"`
}

// maxStatusRouters bounds the routers status lists (a router keeps at
// most 256 others in its view).
const maxStatusRouters = 257

// statusModel is one model of a statusReport. nodes, free_slots and
// trust come from GET /api/network, which only our router has: they are
// absent behind an upstream router.
type statusModel struct {
	Name      string       `json:"name"`
	Thinking  bool         `json:"thinking"`
	ToolCalls bool         `json:"tool_calls"`
	Nodes     *int         `json:"nodes,omitempty"`
	FreeSlots *int         `json:"free_slots,omitempty"`
	Trust     *statusTrust `json:"trust,omitempty"`
}

// statusTrust counts a model's nodes by what canaries found: verified
// (they agree with the others, or trusted nodes), unverified (not yet
// judged, or keyless), quarantined (they do not serve the model they
// claim, and get no requests).
type statusTrust struct {
	Verified    int `json:"verified"`
	Unverified  int `json:"unverified"`
	Quarantined int `json:"quarantined"`
}

// statusFailure is the statusReport shape when the status could not be read.
type statusFailure struct {
	Server    string `json:"server"`
	Reachable bool   `json:"reachable"` // always false
	Error     string `json:"error"`
}

func runStatus(ctx context.Context, args []string, env Env, s Streams) int {
	f := newFlags("status", env, s.Stderr)
	server := f.String("server", "IDLECLAW_SERVER", DefaultServer, "router: http(s)://host[:port], or host:port for http")
	asJSON := f.Bool("json", "", false, "print one stable JSON object instead of text")
	timeout := f.Duration("timeout", "", 15*time.Second, "limit for the whole check (0: none)")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	if f.NArg() > 0 {
		fmt.Fprintf(s.Stderr, "idleclaw: unexpected argument %q\n", f.Arg(0))
		return 2
	}
	if *timeout < 0 {
		fmt.Fprintf(s.Stderr, "idleclaw: invalid --timeout %v: must be 0 or more\n", *timeout)
		return 2
	}
	addr, err := routerAddr(*server, false)
	var c *client.Client
	if err == nil {
		c, err = client.New(addr, &http.Client{})
	}
	if err != nil {
		fmt.Fprintln(s.Stderr, "idleclaw: invalid --server:", err)
		return 2
	}
	noteDefaultRouter(f, s.Stderr, "asking")
	reqCtx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	report, err := readStatus(reqCtx, c)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(s.Stderr, "idleclaw: interrupted")
			return exitInterrupted
		}
		msg := statusErrorText(err, *timeout)
		if *asJSON {
			writeJSONLine(s.Stdout, statusFailure{Server: c.BaseURL, Error: msg})
		} else {
			fmt.Fprintf(s.Stderr, "router: %s — unreachable: %s\n", c.BaseURL, msg)
		}
		return 1
	}
	if *asJSON {
		writeJSONLine(s.Stdout, report)
		return 0
	}
	printStatus(s.Stdout, report)
	return 0
}

// readStatus asks the router for /health and /api/models.
func readStatus(ctx context.Context, c *client.Client) (statusReport, error) {
	h, err := c.Health(ctx)
	if err != nil {
		return statusReport{}, err
	}
	m, err := c.Models(ctx)
	if err != nil {
		return statusReport{}, err
	}
	r := statusReport{
		Server:        c.BaseURL,
		Reachable:     true,
		UptimeSeconds: wholeSeconds(h.UptimeSeconds),
		NodeCount:     max(h.NodeCount, 0),
		Models:        make([]statusModel, 0, len(m.Models)),
	}
	// Our router says more; an upstream one has no /api/network.
	byName := map[string]client.NetworkModel{}
	if n, err := c.Network(ctx); err == nil {
		for _, nm := range n.Models {
			byName[nm.Name] = nm
		}
		for _, nr := range n.Routers[:min(len(n.Routers), maxStatusRouters)] {
			r.Routers = append(r.Routers, statusRouter{ID: nr.ID, URL: nr.URL, NodeCount: max(nr.NodeCount, 0)})
		}
	}
	for _, name := range m.Models {
		caps := m.Capabilities[name]
		sm := statusModel{Name: name, Thinking: caps.Thinking, ToolCalls: caps.ToolCalls}
		if nm, ok := byName[name]; ok {
			nodes, free := max(nm.Nodes, 0), max(nm.FreeSlots, 0)
			sm.Nodes, sm.FreeSlots = &nodes, &free
			sm.Trust = &statusTrust{Verified: max(nm.Verified, 0), Unverified: max(nm.Unverified, 0), Quarantined: max(nm.Quarantined, 0)}
		}
		r.Models = append(r.Models, sm)
	}
	return r, nil
}

func wholeSeconds(s float64) int64 {
	const maxSeconds = 100 * 365 * 24 * 3600 // keeps time.Duration from overflowing
	if !(s > 0) {
		return 0
	}
	return int64(math.Min(math.Floor(s), maxSeconds))
}

// statusErrorText says why the status could not be read, without repeating
// the router's URL.
func statusErrorText(err error, timeout time.Duration) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %v (--timeout)", timeout)
	case !errors.Is(err, client.ErrUnreachable):
		return describeError(err)
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &opErr):
		return opErr.Error()
	}
	return describeError(err)
}

func printStatus(w io.Writer, r statusReport) {
	fmt.Fprintf(w, "router: %s — reachable\n", r.Server)
	fmt.Fprintf(w, "uptime: %v\n", time.Duration(r.UptimeSeconds)*time.Second)
	fmt.Fprintf(w, "nodes online: %d\n", r.NodeCount)
	if len(r.Routers) > 0 {
		parts := make([]string, len(r.Routers))
		for i, x := range r.Routers {
			n := fmt.Sprintf("%d node", x.NodeCount)
			if x.NodeCount != 1 {
				n += "s"
			}
			parts[i] = fmt.Sprintf("%s (%s)", client.Sanitize(x.ID), n)
		}
		fmt.Fprintf(w, "routers (%d): %s\n", len(r.Routers), strings.Join(parts, ", "))
	}
	if len(r.Models) == 0 {
		fmt.Fprintln(w, "models (0): none")
		return
	}
	fmt.Fprintf(w, "models (%d):\n", len(r.Models))
	width := 0
	names := make([]string, len(r.Models))
	for i, m := range r.Models {
		names[i] = client.Sanitize(m.Name)
		width = max(width, len(names[i]))
	}
	for i, m := range r.Models {
		var tags []string
		if m.Thinking {
			tags = append(tags, "thinking")
		}
		if m.ToolCalls {
			tags = append(tags, "tools")
		}
		line := fmt.Sprintf("  %-*s  %s", width, names[i], strings.Join(tags, ", "))
		if i == 0 {
			line = strings.TrimRight(line, " ") + "  (default)"
		}
		if m.Nodes != nil {
			line = strings.TrimRight(line, " ") + "  " + nodesText(*m.Nodes, *m.FreeSlots, *m.Trust)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

// nodesText is a model's nodes for the human status: "2 nodes (1
// verified, 1 unverified), 3 free slots".
func nodesText(nodes, free int, t statusTrust) string {
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{{t.Verified, "verified"}, {t.Unverified, "unverified"}, {t.Quarantined, "quarantined"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	text := fmt.Sprintf("%d node", nodes)
	if nodes != 1 {
		text += "s"
	}
	if len(parts) > 0 {
		text += " (" + strings.Join(parts, ", ") + ")"
	}
	text += fmt.Sprintf(", %d free slot", free)
	if free != 1 {
		text += "s"
	}
	return text
}

func writeJSONLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for these types
		panic(err)
	}
	w.Write(append(b, '\n'))
}
