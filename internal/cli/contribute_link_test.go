package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

func storiesOllama(t *testing.T) *ollamatest.Server {
	t.Helper()
	o := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	t.Cleanup(o.Close)
	return o
}

// TestContributeNotARouter: a server that answers 404 on the node endpoint
// is not an IdleClaw router: contribute says so and exits 1 at once
// instead of retrying for ever.
func TestContributeNotARouter(t *testing.T) {
	t.Parallel()
	ollama := storiesOllama(t)
	notRouter := httptest.NewServer(http.NotFoundHandler())
	defer notRouter.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code := Run(ctx, []string{"contribute", "--server", notRouter.URL, "--ollama", ollama.URL, "--identity", "none", "--control", "none"},
		noEnv, Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	if ctx.Err() != nil {
		t.Fatalf("contribute still retrying after 20 s; stdout:\n%s", out.String())
	}
	want := "cannot connect: " + notRouter.URL + "/ws/node answered 404 Not Found: this is not an IdleClaw router"
	if code != 1 || !strings.Contains(errOut.String(), want) || !strings.Contains(errOut.String(), "check --server") {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut.String(), want)
	}
	if strings.Contains(out.String(), "retrying") {
		t.Errorf("stdout speaks of retrying: %q", out.String())
	}
}

// TestContributeRefusalsExplained: a node refused because another
// connected node holds its id is told what happened and what to do; one
// whose connection the router rate-limits is told so.
func TestContributeRefusalsExplained(t *testing.T) {
	t.Parallel()
	ollama := storiesOllama(t)
	base := routerBase(t, start(t, "serve", "--listen", "127.0.0.1:0", "--records", "none", "--rate-limit-ws-rpm", "2"))
	args := []string{"contribute", "--server", base, "--ollama", ollama.URL, "--control", "none", "--identity", "none", "--node-id", "node-twin"}
	first := start(t, args...)
	waitFor(t, "first node linked", 10*time.Second, func() bool { return strings.Contains(first.out.String(), "connected to the router") })
	second := start(t, args...)
	want := `the router refused this node: node id "node-twin" is in use by a node connected now. Give this one another --node-id`
	waitFor(t, "the refusal explained", 10*time.Second, func() bool { return strings.Contains(second.out.String(), want) })
	if n := strings.Count(second.out.String(), "is in use by a node connected now"); n != 1 {
		t.Errorf("explained %d times, want once:\n%s", n, second.out.String())
	}
	// The bucket (2 a minute) is spent: a third node's dial gets 429.
	third := start(t, "contribute", "--server", base, "--ollama", ollama.URL, "--control", "none", "--identity", "none")
	waitFor(t, "the rate limit explained", 10*time.Second, func() bool {
		return strings.Contains(third.out.String(), "rate-limited: the router refused this node's connection (429 Too Many Requests)")
	})
}

// TestContributeCannotConnect: before any link, a router that cannot be
// reached is "cannot connect", with the cause, once.
func TestContributeCannotConnect(t *testing.T) {
	t.Parallel()
	ollama := storiesOllama(t)
	closed := closedServer(t)
	node := start(t, "contribute", "--server", closed, "--ollama", ollama.URL, "--identity", "none", "--control", "none")
	want := "cannot connect to the router at " + strings.TrimPrefix(closed, "http://") + ": connection refused; the node keeps trying"
	waitFor(t, "cannot connect", 10*time.Second, func() bool { return strings.Contains(node.out.String(), want) })
	waitFor(t, "a second attempt", 10*time.Second, func() bool { return strings.Count(node.out.String(), "retrying in") >= 2 })
	if n := strings.Count(node.out.String(), "cannot connect"); n != 1 {
		t.Errorf("said %d times:\n%s", n, node.out.String())
	}
	if code := node.stop(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}
