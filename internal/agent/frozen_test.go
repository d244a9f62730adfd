package agent

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
	var frozen atomic.Bool
	url := ollamaUnless(t, func(w http.ResponseWriter, r *http.Request) bool {
		if frozen.Load() {
			<-r.Context().Done() // never answers, like a stopped process
			return true
		}
		return false
	})
	_, rc := runAgentOn(t, url, 50*time.Millisecond)
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
	var slowOnce atomic.Bool
	url := ollamaUnless(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/api/ps" && slowOnce.CompareAndSwap(true, false) {
			<-r.Context().Done() // this one look gets no answer
			return true
		}
		return false
	})
	_, rc := runAgentOn(t, url, time.Hour)
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

// runAgentOn runs an agent (newHarness) with 50 ms heartbeats and the given
// models poll against the Ollama at ollamaURL, and returns it with its link
// once the router acknowledged the registration.
func runAgentOn(t *testing.T, ollamaURL string, poll time.Duration) (*harness, *routerConn) {
	t.Helper()
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.Ollama = &ollama.Client{BaseURL: ollamaURL, HTTP: &http.Client{}}
		c.HeartbeatInterval, c.ModelsPollInterval = 50*time.Millisecond, poll
	})
	rc, _ := h.connect(t)
	return h, rc
}

// TestAgentHeartbeatAloneSeesFrozenOllama: with no models poll to help,
// the heartbeat's own look at Ollama takes the node out of rotation when
// Ollama freezes and puts it back when Ollama answers again, saying each
// once in the log — also when Ollama comes back answering /api/ps with an
// error status (one without /api/ps): an answer is an Ollama that is up.
func TestAgentHeartbeatAloneSeesFrozenOllama(t *testing.T) {
	for _, psMissing := range []bool{false, true} {
		t.Run(fmt.Sprintf("ps missing %v", psMissing), func(t *testing.T) {
			var frozen atomic.Bool
			url := ollamaUnless(t, func(w http.ResponseWriter, r *http.Request) bool {
				switch {
				case frozen.Load():
					<-r.Context().Done()
					return true
				case psMissing && r.URL.Path == "/api/ps":
					http.NotFound(w, r)
					return true
				}
				return false
			})
			h, rc := runAgentOn(t, url, time.Hour)
			defer frozen.Store(false)
			frozen.Store(true)
			awaitAvailable(t, rc, false, "while Ollama is frozen")
			frozen.Store(false)
			awaitAvailable(t, rc, true, "after Ollama came back")
			saidOnce(t, h, "cannot reach Ollama", "Ollama is back")
		})
	}
}

// TestAgentFailingModelListKeepsNodeDown: while Ollama answers /api/ps but
// fails to list its models, the node stays out of rotation (the heartbeat's
// good look does not undo the models poll's bad one) and says so once; it
// comes back once the list works again.
func TestAgentFailingModelListKeepsNodeDown(t *testing.T) {
	var tagsFail atomic.Bool
	url := ollamaUnless(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/api/tags" && tagsFail.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return true
		}
		return false
	})
	h, rc := runAgentOn(t, url, 50*time.Millisecond)
	tagsFail.Store(true)
	awaitAvailable(t, rc, false, "while /api/tags fails")
	for i := 0; i < 10; i++ { // about ten polls and heartbeats
		if hb := rc.expect(t, wire.TypeHeartbeat); hb.m["available"] != false {
			t.Fatalf("heartbeat %d after the node went down says %s", i, hb.raw)
		}
	}
	tagsFail.Store(false)
	awaitAvailable(t, rc, true, "after /api/tags works again")
	saidOnce(t, h, "cannot reach Ollama", "Ollama is back")
}

// ollamaUnless serves the fake Ollama (storiesModel) except for the
// requests fail answers itself (it returns true for those). The server
// closes after the agent has stopped (cleanups run last first).
func ollamaUnless(t *testing.T, fail func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	fake := ollamatest.NewHandler(ollamatest.Config{Models: []ollamatest.Model{storiesModel}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fail(w, r) {
			fake.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// saidOnce checks that the agent's log has each of lines exactly once.
func saidOnce(t *testing.T, h *harness, lines ...string) {
	t.Helper()
	logs := h.logs.String()
	for _, l := range lines {
		if n := strings.Count(logs, l); n != 1 {
			t.Errorf("%d log lines say %q, want 1:\n%s", n, l, logs)
		}
	}
}
