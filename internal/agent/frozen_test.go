package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestAgentFrozenOllamaKeepsHeartbeats: when Ollama stops answering (a
// frozen process), the models poll gives up in time and the node keeps
// heartbeating, saying it is unavailable, instead of falling silent until
// the router drops it.
func TestAgentFrozenOllamaKeepsHeartbeats(t *testing.T) {
	fake := ollamatest.NewHandler(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	var frozen atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if frozen.Load() {
			<-r.Context().Done() // never answers, like a stopped process
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after the agent stopped (cleanups run last first)
	rc := runAgentOn(t, srv.URL, 50*time.Millisecond)
	defer frozen.Store(false) // before the agent stops: its drain asks Ollama
	frozen.Store(true)
	// Heartbeats go on, and soon say the node takes nothing.
	awaitAvailable(t, rc, false, "while Ollama is frozen")
	rc.expect(t, wire.TypeHeartbeat) // and they keep coming
	// Ollama answers again: the node soon takes requests again.
	frozen.Store(false)
	awaitAvailable(t, rc, true, "after Ollama came back")
}

// awaitAvailable reads heartbeats until one says available is want, for at
// most 10 s.
func awaitAvailable(t *testing.T, rc *routerConn, want bool, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if hb := rc.expect(t, wire.TypeHeartbeat); hb.m["available"] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat with available:%v %s", want, when)
		}
	}
}

// TestAgentOneSlowPSKeepsNodeAvailable: one /api/ps that does not answer in
// time (Ollama busy loading a model, say) does not take the node out of
// rotation; only a second one in a row does.
func TestAgentOneSlowPSKeepsNodeAvailable(t *testing.T) {
	fake := ollamatest.NewHandler(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	var slowOnce atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/ps" && slowOnce.CompareAndSwap(true, false) {
			<-r.Context().Done() // this one look gets no answer
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after the agent stopped (cleanups run last first)
	rc := runAgentOn(t, srv.URL, time.Hour)
	slowOnce.Store(true)
	// The heartbeat that waited on the slow look, and the ones after it,
	// still say the node takes requests.
	for i := 0; i < 5; i++ {
		if hb := rc.expect(t, wire.TypeHeartbeat); hb.m["available"] != true {
			t.Fatalf("heartbeat %d: %s", i, hb.raw)
		}
	}
	if slowOnce.Load() {
		t.Fatal("the slow /api/ps look never happened")
	}
}

// runAgentOn runs an agent with 50 ms heartbeats and the given models poll
// against the Ollama at ollamaURL and a fake router, until the test ends,
// and returns its link once the router acknowledged the registration.
func runAgentOn(t *testing.T, ollamaURL string, poll time.Duration) *routerConn {
	t.Helper()
	router := newFakeRouter(t)
	a, err := New(Config{
		Server: router.srv.URL, Ollama: &ollama.Client{BaseURL: ollamaURL, HTTP: &http.Client{}},
		AgentVersion: "test", Logger: slog.New(slog.DiscardHandler), HTTPClient: &http.Client{},
		HeartbeatInterval: 50 * time.Millisecond, ModelsPollInterval: poll,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	rc := router.next(t)
	rc.expect(t, wire.TypeRegister) // the fake router answers it with registered
	return rc
}
