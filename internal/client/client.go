// Package client is the consumer side of an IdleClaw router's public API
// (docs/protocol.md §1): GET /health, GET /api/models and the server-sent
// event stream of POST /api/chat. It turns the router's answers into Go
// values and its failures into typed errors a caller can branch on
// (*APIError, *StreamError, ErrUnreachable, ErrEndedEarly).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// ErrUnreachable is wrapped by every error that means the router could not be
// reached at all (DNS failure, connection refused, dial timeout).
var ErrUnreachable = errors.New("cannot reach the router")

// ErrEndedEarly is returned by Chat when the event stream ends without its
// final "data: [DONE]" line.
var ErrEndedEarly = errors.New("stream ended early")

// maxErrorBody bounds how much of an error answer is read; maxJSONBody bounds
// a /health or /api/models answer.
const (
	maxErrorBody = 64 << 10
	maxJSONBody  = 4 << 20
	maxDetail    = 500 // bytes of an error detail kept for display
)

// APIError is an HTTP error answer from the router.
type APIError struct {
	Status int // HTTP status code
	// Detail is the router's {"detail": ...}: the string itself, or compact
	// JSON when the detail is not a string (422 validation errors). It is
	// truncated and stripped of control characters, so it is safe to print.
	// Empty when the body had no detail.
	Detail string
	// RetryAfter is the Retry-After header (seconds or an HTTP date); zero
	// when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("router answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// StreamError is an error the router reported inside a chat stream after it
// had started (a delta "\n\n[Error: <message>]").
type StreamError struct {
	Message string // stripped of control characters
}

func (e *StreamError) Error() string { return "error from the network: " + e.Message }

// Client talks to one router. It is safe for concurrent use; its fields must
// not change after first use.
type Client struct {
	// BaseURL is the router's URL without a trailing slash, for example
	// "https://api.idleclaw.com" (a path prefix is kept).
	BaseURL string
	// HTTP is the client used for every request. A whole-request deadline
	// belongs in the context, not in HTTP.Timeout, which would cut long
	// streams.
	HTTP *http.Client
}

// New validates server (http or https with a host; a trailing slash is
// tolerated; no query, fragment or credentials) and returns a client. A nil hc
// means http.DefaultClient.
func New(server string, hc *http.Client) (*Client, error) {
	base, err := normalizeURL(server)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{BaseURL: base, HTTP: hc}, nil
}

func normalizeURL(server string) (string, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return "", errors.New("server URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server URL %q is not a URL: %v", server, unwrapURLError(err))
	}
	switch u.Scheme {
	case "http", "https":
	case "":
		return "", fmt.Errorf("server URL %q has no scheme: use http:// or https://", server)
	default:
		return "", fmt.Errorf("server URL %q must use http or https, not %s", server, u.Scheme)
	}
	switch {
	case u.Opaque != "" || u.Hostname() == "":
		return "", fmt.Errorf("server URL %q has no host", server)
	case u.User != nil:
		return "", fmt.Errorf("server URL %q must not contain credentials", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("server URL %q must not have a query or fragment", server)
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"), nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Health is the answer of GET /health. Keys the router adds are ignored.
type Health struct {
	Status        string  `json:"status"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	NodeCount     int     `json:"node_count"`
}

// Capabilities says what a model can do on the network.
type Capabilities struct {
	Thinking  bool `json:"thinking"`
	ToolCalls bool `json:"tool_calls"`
}

// Models is the answer of GET /api/models. Models lists names largest first;
// Models[0] is the network's default.
type Models struct {
	Models       []string                `json:"models"`
	Capabilities map[string]Capabilities `json:"capabilities"`
}

// Health fetches GET /health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.getJSON(ctx, "/health", &h)
	return h, err
}

// Models fetches GET /api/models.
func (c *Client) Models(ctx context.Context) (Models, error) {
	var m Models
	err := c.getJSON(ctx, "/api/models", &m)
	if m.Models == nil {
		m.Models = []string{}
	}
	return m, err
}

// Network is the part of GET /api/network (an extension of our router;
// an upstream router answers 404) that clients read: per model, its nodes,
// free slots and how many nodes of each trust class serve it.
type Network struct {
	Models []NetworkModel `json:"models"`
	// Routers lists the routers of a network on NATS, the one asked
	// first; absent for a router alone.
	Routers []NetworkRouter `json:"routers,omitempty"`
}

// NetworkRouter is one router of Network.
type NetworkRouter struct {
	ID        string `json:"id"`
	URL       string `json:"url,omitempty"`
	NodeCount int    `json:"node_count"`
}

// NetworkModel is one model of Network.
type NetworkModel struct {
	Name        string `json:"name"`
	Nodes       int    `json:"nodes"`
	Servable    int    `json:"servable"`
	FreeSlots   int    `json:"free_slots"`
	Verified    int    `json:"verified"`
	Unverified  int    `json:"unverified"`
	Quarantined int    `json:"quarantined"`
}

// Network fetches GET /api/network.
func (c *Client) Network(ctx context.Context) (Network, error) {
	var n Network
	err := c.getJSON(ctx, "/api/network", &n)
	return n, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(ctx, req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %w", path, newAPIError(resp))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("GET %s: %w", path, ctx.Err())
		}
		return fmt.Errorf("GET %s: read answer: %w", path, err)
	}
	if len(data) > maxJSONBody {
		return fmt.Errorf("GET %s: answer larger than %d bytes", path, maxJSONBody)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("GET %s: not an IdleClaw answer (is %s an IdleClaw router?): %v", path, c.BaseURL, err)
	}
	return nil
}

// do sends req and classifies transport failures: the context's own error
// when ctx ended, ErrUnreachable when no connection could be made.
func (c *Client) do(ctx context.Context, req *http.Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err == nil {
		return resp, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cause, ok := dialFailure(err); ok {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.BaseURL, cause)
	}
	return nil, unwrapURLError(err)
}

// dialFailure reports whether err means no connection could be made, and the
// most telling cause to show.
func dialFailure(err error) (error, bool) {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr, true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && (opErr.Op == "dial" || opErr.Op == "proxyconnect") {
		return opErr, true
	}
	return nil, false
}

func newAPIError(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var b struct {
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Detail) == 0 || string(b.Detail) == "null" {
		return e
	}
	var s string
	if json.Unmarshal(b.Detail, &s) != nil {
		var buf bytes.Buffer
		if json.Compact(&buf, b.Detail) != nil {
			return e
		}
		s = buf.String()
	}
	e.Detail = truncate(Sanitize(s), maxDetail)
	return e
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > 24*3600 {
			n = 24 * 3600
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// Sanitize removes control characters other than newline and tab (escape
// sequences included) so that text from the network cannot drive a terminal.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if isUnsafe(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isUnsafe(r) {
			return -1
		}
		return r
	}, s)
}

func isUnsafe(r rune) bool {
	return r != '\n' && r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029')
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
