package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestAgentNotARouter: a --server that answers the node endpoint with 404
// before any link is not a router: Run returns ErrNotARouter at once
// instead of retrying for ever.
func TestAgentNotARouter(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	defer fake.Close()
	out := newSyncBuffer()
	a, err := New(Config{Server: srv.URL, Ollama: &ollama.Client{BaseURL: fake.URL}, Out: out, Owner: Owner{Poll: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, ErrNotARouter) {
		t.Fatalf("Run = %v, want ErrNotARouter", err)
	}
	if ctx.Err() != nil || strings.Contains(out.String(), "retrying") {
		t.Errorf("retried: %q", out.String())
	}
}

// TestAgentHonoursRetryAfter: a router that refuses the handshake with 429
// and Retry-After holds the node off that long, and the node says it is
// rate-limited.
func TestAgentHonoursRetryAfter(t *testing.T) {
	var dials atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dials.Add(1)
		w.Header().Set("Retry-After", "30")
		http.Error(w, "Too many connection attempts", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	out := runUntil(t, srv.URL, Backoff{Initial: time.Millisecond, Max: time.Millisecond}, "retrying in 30s")
	if !strings.Contains(out.String(), "rate-limited: the router refused this node's connection (429 Too Many Requests)") {
		t.Errorf("output: %q", out.String())
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials; the node did not wait the 30 s asked (backoff 1 ms)", n)
	}
}

// TestAgentFollowsNoRedirect plays a router that answers the node's dial
// with a redirect to another host: the agent must not dial it (it could
// be a host on the contributor's network, or a router the contributor did
// not choose), and says where the redirect pointed.
func TestAgentFollowsNoRedirect(t *testing.T) {
	var victim atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		victim.Add(1)
		http.NotFound(w, r)
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/ws/node", http.StatusFound)
	}))
	defer srv.Close()
	out := runUntil(t, srv.URL, Backoff{Initial: time.Hour, Max: time.Hour}, "follows no redirect")
	if n := victim.Load(); n != 0 {
		t.Errorf("the redirect's target was dialed %d times", n)
	}
	if !strings.Contains(out.String(), other.URL+"/ws/node") {
		t.Errorf("output does not say where the redirect pointed: %q", out.String())
	}
}

// runUntil runs an agent with one model against server until its output
// says until, and returns the output.
func runUntil(t *testing.T, server string, b Backoff, until string) *syncBuffer {
	t.Helper()
	fake := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	defer fake.Close()
	out := newSyncBuffer()
	a, err := New(Config{Server: server, Ollama: &ollama.Client{BaseURL: fake.URL}, Out: out, Owner: Owner{Poll: -1}, Backoff: b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	out.waitFor(t, until)
	cancel()
	<-done
	return out
}
