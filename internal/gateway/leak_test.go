package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

// TestNoGoroutineLeaks: after answers of every kind — whole, streamed,
// cut, stalled, hung past the header timeout, fallen back, and a client
// that leaves mid-stream — and the servers closed, no goroutine of the
// gateway is left.
func TestNoGoroutineLeaks(t *testing.T) {
	stubNet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/models" {
			_, _ = io.WriteString(w, `{"models":["stories:latest"],"capabilities":{}}`)
			return
		}
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"net\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"choices":[{"message":{"content":"net"}}]}`)
	}))
	replies := []providertest.Reply{
		{Tokens: []string{"a"}},
		{Tokens: []string{"a"}, Cut: true},
		{Tokens: []string{"a"}, Stall: true},
		{Hang: true},
		{Tokens: []string{"a", "b", "c", "d", "e", "f"}, Delay: 50 * time.Millisecond},
		providertest.InsufficientQuota(), // last: then the network answers
	}
	var current atomic.Int64
	prov := providertest.NewServer(providertest.Config{Respond: func(providertest.Request) providertest.Reply { return replies[current.Load()] }})
	transport := &http.Transport{}
	gw, err := New(Config{ProviderURL: prov.URL, NetworkURL: stubNet.URL, HeaderTimeout: 200 * time.Millisecond, StallTimeout: 200 * time.Millisecond,
		HTTPClient: &http.Client{Transport: transport}, Cooldowns: Cooldowns{Error: -1}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	cl := &http.Client{Transport: &http.Transport{}}
	// The servers' own goroutines are in the baseline: what must go is
	// every goroutine of a request and of its upstream connections, once
	// the idle connections are closed.
	baseline := runtime.NumGoroutine()
	for i := range replies {
		current.Store(int64(i))
		for _, stream := range []string{"false", "true"} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"m","stream":`+stream+`,"messages":[{"role":"user","content":"hi"}]}`))
			resp, err := cl.Do(req)
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			if i == len(replies)-2 && stream == "true" {
				_, _ = resp.Body.Read(make([]byte, 16)) // the client leaves mid-stream
			} else {
				_, _ = io.ReadAll(resp.Body)
			}
			resp.Body.Close()
			cancel()
		}
	}
	defer func() {
		srv.Close()
		prov.Close()
		stubNet.Close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl.CloseIdleConnections()
		transport.CloseIdleConnections()
		if runtime.NumGoroutine() <= baseline {
			break
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("goroutine leak: %d goroutines, want at most %d\n%s", runtime.NumGoroutine(), baseline, buf.String())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}
