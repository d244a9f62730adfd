package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
)

// The owner's side of contribute: the control socket that `contribute
// pause | resume | status` talk to from another terminal, and its
// default path.

// defaultControlPath is where contribute listens for its owner:
// $XDG_RUNTIME_DIR/idleclaw/contribute.sock, else
// ~/.cache/idleclaw/contribute.sock; "" when neither is known.
func defaultControlPath(env Env) string {
	if d := env("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "idleclaw", "contribute.sock")
	}
	if h := env("HOME"); h != "" {
		return filepath.Join(h, ".cache", "idleclaw", "contribute.sock")
	}
	return ""
}

// listenControl opens the control socket: a Unix socket in a 0700
// directory, so that only the owner's user can reach it. A socket left
// by a process that is gone is replaced; one that answers is another
// contribute's, and is an error.
func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another contribute listens there (give this one --control PATH)", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// runContributeControl runs `contribute pause|resume|status`.
func runContributeControl(ctx context.Context, verb string, args []string, env Env, s Streams) int {
	f := newFlags("contribute "+verb, env, s.Stderr)
	control := f.String("control", "IDLECLAW_CONTROL", "", "the running node's control socket (default: $XDG_RUNTIME_DIR/idleclaw/contribute.sock or ~/.cache/idleclaw/contribute.sock)")
	var pauseFor *time.Duration
	if verb == "pause" {
		pauseFor = f.Duration("for", "", 0, "resume by itself after this long (0: until `contribute resume`)")
	}
	asJSON := f.Bool("json", "", false, "print the state as JSON")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	path := *control
	if path == "" {
		path = defaultControlPath(env)
	}
	if path == "" {
		fmt.Fprintln(s.Stderr, "idleclaw contribute:", "no HOME or XDG_RUNTIME_DIR: pass --control PATH")
		return 2
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	method, url := http.MethodGet, "http://node/status"
	switch verb {
	case "pause":
		method, url = http.MethodPost, "http://node/pause"
		if *pauseFor > 0 {
			url += "?for=" + pauseFor.String()
		}
	case "resume":
		method, url = http.MethodPost, "http://node/resume"
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(s.Stderr, "idleclaw contribute %s: no node answers on %s: is `idleclaw contribute` running (with --control there)?\n", verb, path)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(s.Stderr, "idleclaw contribute %s: %s\n", verb, strings.TrimSpace(string(b)))
		return 1
	}
	var st agent.Status
	if err := json.Unmarshal(b, &st); err != nil {
		fmt.Fprintf(s.Stderr, "idleclaw contribute %s: unreadable answer: %v\n", verb, err)
		return 1
	}
	if *asJSON {
		_, _ = s.Stdout.Write(b)
		return 0
	}
	printNodeStatus(s.Stdout, st)
	return 0
}

func printNodeStatus(w io.Writer, st agent.Status) {
	fmt.Fprintf(w, "node %s: %s", st.NodeID, st.State)
	if len(st.Why) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(st.Why, "; "))
	}
	if !st.PausedUntil.IsZero() {
		fmt.Fprintf(w, " until %s", st.PausedUntil.Local().Format("2006-01-02 15:04"))
	}
	fmt.Fprintln(w)
	link := "not connected"
	if st.Connected {
		link = "connected"
	}
	fmt.Fprintf(w, "  router:    %s (%s)\n", st.Router, link)
	fmt.Fprintf(w, "  models:    %s\n", strings.Join(st.Models, ", "))
	fmt.Fprintf(w, "  in flight: %d\n", st.InFlight)
	fmt.Fprintf(w, "  today:     %d requests, %d tokens\n", st.Today.Requests, st.Today.Tokens)
	fmt.Fprintf(w, "  in total:  %d requests, %d tokens (since this node started)\n", st.Total.Requests, st.Total.Tokens)
	l := st.Limits
	fmt.Fprintf(w, "  limits:    %d at once, context %d, answers %d tokens, keep-alive %s, images %v\n",
		l.MaxConcurrent, l.MaxContext, l.MaxPredict, l.MaxKeepAlive, l.AllowImages)
}
