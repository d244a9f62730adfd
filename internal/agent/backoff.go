package agent

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Jitter says how a reconnect delay is randomised.
type Jitter int

const (
	// EqualJitter waits between half and all of the exponential delay: never
	// hammers the router, yet spreads a crowd of reconnecting nodes.
	EqualJitter Jitter = iota
	// FullJitter waits between zero and the exponential delay.
	FullJitter
	// NoJitter waits exactly the exponential delay (for tests and tools).
	NoJitter
)

// Backoff is the reconnect schedule: Initial doubling up to Max, randomised
// by Jitter. The zero value means 1 s doubling to 60 s with equal jitter
// (protocol §2.3).
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  Jitter
	// Restart spreads the return after the router closed the link with
	// 1001 (going away: it is stopping, most likely to restart; ours sends
	// it at shutdown) or 1012 (service restart): the next
	// attempt waits at least a uniform random part of Restart. Every node
	// of that router hears 1001 within its drain window; without this they
	// would all be back in the second after the new router opens. Default
	// 10 × Initial (10 s).
	Restart time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = time.Minute
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Restart <= 0 {
		b.Restart = 10 * b.Initial
	}
	return b
}

// RestartDelay is the least wait before reconnecting after the router went
// away (see Restart).
func (b Backoff) RestartDelay(rnd func() float64) time.Duration {
	b = b.withDefaults()
	return time.Duration(rnd() * float64(b.Restart))
}

// Delay returns the wait before reconnect attempt number attempt (0 for the
// first retry after a loss). rnd returns a number in [0, 1); it is how tests
// make the jitter deterministic.
func (b Backoff) Delay(attempt int, rnd func() float64) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	switch b.Jitter {
	case FullJitter:
		return time.Duration(rnd() * float64(d))
	case NoJitter:
		return d
	default:
		half := d / 2
		return half + time.Duration(rnd()*float64(d-half))
	}
}

// NodeURL turns a router address into the WebSocket URL of its node link:
// "http(s)://host[/base]" becomes "ws(s)://host[/base]/ws/node"; a ws(s)://
// URL is taken as the full endpoint, except that a bare "ws(s)://host" gets
// "/ws/node" added.
func NodeURL(server string) (string, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return "", fmt.Errorf("server URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %w", server, err)
	}
	path := strings.TrimRight(u.Path, "/")
	switch strings.ToLower(u.Scheme) {
	case "http":
		u.Scheme = "ws"
		if !strings.HasSuffix(path, "/ws/node") {
			path += "/ws/node"
		}
	case "https":
		u.Scheme = "wss"
		if !strings.HasSuffix(path, "/ws/node") {
			path += "/ws/node"
		}
	case "ws", "wss":
		u.Scheme = strings.ToLower(u.Scheme)
		if path == "" {
			path = "/ws/node"
		}
	default:
		return "", fmt.Errorf("server URL %q: scheme must be http, https, ws or wss", server)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("server URL %q: missing host", server)
	}
	if u.User != nil {
		return "", fmt.Errorf("server URL %q: credentials in the URL are not supported", server)
	}
	u.Path, u.RawPath, u.Fragment, u.RawFragment = path, "", "", ""
	return u.String(), nil
}
