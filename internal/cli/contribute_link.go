package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// lockedWriter serialises whole writes from the agent's human lines and the
// CLI's own, so that lines do not interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// linkWatch explains to the person at the terminal what the router said
// when it refused this node: it sees the WebSocket handshakes (it is the
// transport of the HTTP client the agent dials with) and the agent's
// "link lost" log records (it wraps the agent's log handler). A 404 on the
// node endpoint is permanent: linkWatch ends the agent (stop) and
// notRouter says why.
type linkWatch struct {
	base   http.RoundTripper
	out    io.Writer
	now    func() time.Time
	stop   context.CancelFunc
	nodeID func() string

	mu         sync.Mutex
	linked     bool            // some handshake succeeded
	failedOnce bool            // some handshake could not be sent
	notRouter  string          // the refused URL and status, once a handshake got 404 before any link
	hinted     map[string]bool // close reasons already explained
}

func newLinkWatch(out io.Writer, stop context.CancelFunc) *linkWatch {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &linkWatch{base: tr, out: out, now: time.Now, stop: stop, nodeID: func() string { return "" }, hinted: map[string]bool{}}
}

// RoundTrip is the node link's transport.
func (lw *linkWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := lw.base.RoundTrip(req)
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		return resp, err
	}
	if err != nil {
		lw.mu.Lock()
		first := !lw.linked && !lw.failedOnce
		lw.failedOnce = true
		lw.mu.Unlock()
		if first && req.Context().Err() == nil {
			lw.hint(fmt.Sprintf("cannot connect to the router at %s: %s; the node keeps trying", req.URL.Host, dialCause(err)))
		}
		return resp, err
	}
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
		lw.mu.Lock()
		lw.linked = true
		lw.mu.Unlock()
	case http.StatusNotFound:
		// Before any link, a 404 means --server is not a router; once the
		// node has been linked, it is a router's passing trouble.
		lw.mu.Lock()
		permanent := !lw.linked
		if permanent {
			lw.notRouter = fmt.Sprintf("%s answered %d %s", req.URL.Redacted(), resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		lw.mu.Unlock()
		if permanent {
			lw.stop()
		}
	case http.StatusTooManyRequests:
		wait := ""
		if ra := resp.Header.Get("Retry-After"); ra != "" && len(ra) <= 10 {
			wait = " (it asks for " + ra + " s)"
		}
		lw.hint("rate-limited: the router refused this node's connection (429 Too Many Requests)" + wait + "; the node waits and tries again")
	}
	return resp, nil
}

// notRouterError is the permanent refusal, or "".
func (lw *linkWatch) notRouterError() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.notRouter
}

func (lw *linkWatch) hint(line string) {
	fmt.Fprintf(lw.out, "%s  %s\n", lw.now().Format("2006-01-02 15:04:05"), line)
}

// closeHint explains a close reason the router sent, once per reason.
func (lw *linkWatch) closeHint(reason string) {
	var line string
	switch reason {
	case wire.CloseNodeIDInUse:
		line = fmt.Sprintf("the router refused this node: node id %q is in use by a node connected now. Give this one another --node-id, or drop --node-id so that it runs under its own identity key", lw.nodeID())
	case wire.CloseTooManyNodesFromIP, wire.CloseTooManyConnections:
		line = "the router refused this node: it takes no more nodes from this address now. Stop another node on this network address, or use another router (--server)"
	case wire.CloseReservedNodeID:
		line = "the router refused this node: node ids starting \"" + identity.IDPrefix + "\" are for nodes with an identity key. Choose another --node-id"
	case wire.CloseBanned:
		line = "the router refused this node: its operator banned this node or its key"
	default:
		return
	}
	lw.mu.Lock()
	seen := lw.hinted[reason]
	lw.hinted[reason] = true
	lw.mu.Unlock()
	if !seen {
		lw.hint(line)
	}
}

// hintHandler passes records on to next and shows linkWatch the close
// reasons of the agent's "link lost" records, whatever next's level.
type hintHandler struct {
	next  slog.Handler
	watch *linkWatch
}

func (h hintHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h hintHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "close_reason" {
			h.watch.closeHint(a.Value.String())
			return false
		}
		return true
	})
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h hintHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return hintHandler{next: h.next.WithAttrs(as), watch: h.watch}
}

func (h hintHandler) WithGroup(name string) slog.Handler {
	return hintHandler{next: h.next.WithGroup(name), watch: h.watch}
}

// dialCause is the innermost reason a connection failed ("connection
// refused", "no such host").
func dialCause(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Err
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}
