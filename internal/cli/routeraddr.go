package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// routerAddr turns a --server value into a router URL. Besides full URLs it
// takes what people type: "127.0.0.1:8000", "localhost:8000", "host:port",
// "host" and ":8000" mean http:// on that host (":8000": this machine). A
// trailing /ws or /ws/node, pasted from a node's link, is dropped, so the
// result is the router's base URL: http(s), or, when node is set, also
// ws(s) (the agent finds /ws/node from the base).
func routerAddr(v string, node bool) (string, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return "", errors.New("the router address is empty")
	}
	if !strings.Contains(s, "://") {
		if strings.HasPrefix(s, ":") {
			s = "127.0.0.1" + s
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is neither a URL nor host:port: %v", v, unwrapURLErr(err))
	}
	switch u.Scheme = strings.ToLower(u.Scheme); u.Scheme {
	case "http", "https":
	case "ws", "wss":
		if !node {
			return "", fmt.Errorf("%q: %s:// is the node link; use http:// or https://", v, u.Scheme)
		}
	default:
		return "", fmt.Errorf("%q: the scheme must be http or https, not %s", v, u.Scheme)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q: missing host", v)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q: port %s is out of range (1..65535)", v, p)
		}
	}
	if u.User != nil {
		return "", fmt.Errorf("%q: credentials in the URL are not supported", u.Redacted())
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("%q: a router URL has no query or fragment", v)
	}
	path := strings.TrimRight(u.Path, "/")
	for _, suffix := range []string{"/ws/node", "/ws"} {
		if strings.HasSuffix(path, suffix) {
			path = strings.TrimSuffix(path, suffix)
			break
		}
	}
	if u.Scheme == "ws" || u.Scheme == "wss" {
		path += "/ws/node" // the agent keeps a ws(s) path as it is
	}
	u.Path, u.RawPath = path, ""
	return u.String(), nil
}

func unwrapURLErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// noteDefaultRouter tells, on one stderr line, that a command with no
// --server (and no IDLECLAW_SERVER) talks to the public router, and how to
// choose another.
func noteDefaultRouter(f *flags, w io.Writer, what string) {
	if f.isGiven("server") {
		return
	}
	fmt.Fprintf(w, "idleclaw: %s the public router %s (--server URL or IDLECLAW_SERVER chooses another)\n", what, DefaultServer)
}
