package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// ErrNotARouter: the --server answered the node endpoint's handshake with
// 404 before the node was ever linked: it is not an IdleClaw router (or
// the URL is not its node endpoint). Run returns it; retrying would not
// help.
var ErrNotARouter = errors.New("not an IdleClaw router")

// dialError is a handshake the router answered with something other than
// 101 Switching Protocols.
type dialError struct {
	status     int
	retryAfter time.Duration // from Retry-After (seconds), if any
	location   string        // a redirect's Location, if printable and short
	err        error
}

func (e *dialError) Error() string {
	return fmt.Sprintf("dial router: HTTP %d: %v", e.status, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// maxShownLocation bounds the redirect target shown to the owner.
const maxShownLocation = 256

// printableASCII reports whether s is printable ASCII without spaces
// (router-supplied text about to reach a terminal).
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// maxRetryAfter bounds how long a router's Retry-After holds the node off.
const maxRetryAfter = 10 * time.Minute

// newDialError reads a refused handshake's status and Retry-After.
func newDialError(resp *http.Response, err error) *dialError {
	de := &dialError{status: resp.StatusCode, err: err}
	if loc := resp.Header.Get("Location"); len(loc) <= maxShownLocation && printableASCII(loc) {
		de.location = loc
	}
	if s, e := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); e == nil && s > 0 {
		de.retryAfter = min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	return de
}

// lossReason says, for the person at the terminal, why the node is not
// linked, and what to do about it when they can do something.
func (a *Agent) lossReason(err error, ce closeErr) (why, advice string) {
	var de *dialError
	switch {
	case ce.reason != "":
		why = fmt.Sprintf("closed by the router: %q", ce.reason)
		advice = closeAdvice(ce.reason, a.cfg.NodeID)
	case ce.code != 0:
		why = fmt.Sprintf("closed by the router (%d)", int(ce.code))
	case errors.As(err, &de) && de.status == http.StatusTooManyRequests:
		why = "rate-limited: the router refused this node's connection (429 Too Many Requests)"
	case errors.As(err, &de) && de.status >= 300 && de.status < 400:
		why = fmt.Sprintf("the router answered %d %s; the agent follows no redirect", de.status, http.StatusText(de.status))
		if de.location != "" {
			why += " (it pointed to " + de.location + ": if you trust that, give it to --server)"
		}
	case errors.As(err, &de):
		why = fmt.Sprintf("the router answered %d %s", de.status, http.StatusText(de.status))
	case errors.Is(err, errNoModelsNow):
		why = "Ollama has no models"
	case err != nil:
		why = dialCause(err)
	default:
		why = "connection failed"
	}
	return why, advice
}

// closeAdvice is what to do about a refusal the router closed the link
// with, or "" when there is nothing the owner can do.
func closeAdvice(reason, nodeID string) string {
	switch reason {
	case wire.CloseNodeIDInUse:
		return fmt.Sprintf("the router refused this node: node id %q is in use by a node connected now. Give this one another --node-id, or drop --node-id so that it runs under its own identity key", nodeID)
	case wire.CloseTooManyNodesFromIP, wire.CloseTooManyConnections:
		return "the router refused this node: it takes no more nodes from this address now. Stop another node on this network address, or use another router (--server)"
	case wire.CloseReservedNodeID:
		return "the router refused this node: node ids starting \"" + identity.IDPrefix + "\" are for nodes with an identity key. Choose another --node-id"
	case wire.CloseBanned:
		return "the router refused this node: its operator banned this node or its key"
	}
	return ""
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
