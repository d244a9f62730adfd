package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
)

// eventWriter is a ResponseWriter that keeps what a handler wrote, for
// handlers run directly (in a synctest bubble, without sockets).
type eventWriter struct {
	mu     sync.Mutex
	header http.Header
	status int
	body   strings.Builder
}

func newEventWriter() *eventWriter { return &eventWriter{header: http.Header{}} }

func (w *eventWriter) Header() http.Header { return w.header }

func (w *eventWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = status
	}
}

func (w *eventWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}

func (w *eventWriter) Flush()                           {}
func (w *eventWriter) SetWriteDeadline(time.Time) error { return nil }

func (w *eventWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// events are the data payloads written so far.
func (w *eventWriter) events(t *testing.T) []networkEvent {
	t.Helper()
	var out []networkEvent
	for _, line := range strings.Split(w.text(), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev networkEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		out = append(out, ev)
	}
	return out
}

// bubbleServer is a router without sockets, for synctest bubbles.
func bubbleServer(t *testing.T) (*Server, *hub.Hub) {
	t.Helper()
	h := hub.New(hub.Config{MaxNodesPerIP: -1})
	s := New(Config{}, h, dispatch.New(dispatch.Config{}, h), nil)
	t.Cleanup(h.Close)
	return s, h
}

// openEvents starts GET /api/network/events from addr in the background;
// cancel ends the client, and done closes when the handler returned.
func openEvents(s *Server, addr string) (w *eventWriter, cancel context.CancelFunc, done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/network/events", nil)
	r.RemoteAddr = addr
	w = newEventWriter()
	done = make(chan struct{})
	go func() {
		defer close(done)
		s.ServeHTTP(w, r)
	}()
	return w, cancel, done
}

// eventsOpen is the number of event streams the router holds open.
func eventsOpen(t *testing.T, s *Server) int64 {
	t.Helper()
	h, _ := s.mux.Handler(httptest.NewRequest(http.MethodGet, "/api/network/events", nil))
	e, ok := h.(*networkEvents)
	if !ok {
		t.Fatalf("/api/network/events is served by %T", h)
	}
	return e.open.Load()
}

func ended(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// TestNetworkEventsPace checks the stream on a fake clock: the first event
// at once, then one only when the document changes (at most one a second)
// or every EventsRefresh, the token rate over the window, and the end at
// the router's drain.
func TestNetworkEventsPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := bubbleServer(t)
		w, cancel, done := openEvents(s, "192.0.2.1:1000")
		defer cancel()
		synctest.Wait()
		if w.status != http.StatusOK || w.header.Get("Content-Type") != "text/event-stream; charset=utf-8" || w.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("status %d, headers %v", w.status, w.header)
		}
		if !strings.HasPrefix(w.text(), "retry: 3000\ndata: {") || !strings.HasSuffix(w.text(), "}\n\n") {
			t.Fatalf("first event %q", w.text())
		}
		// The event is GET /api/network's document, plus the token fields.
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/network", nil))
		var doc, ev map[string]any
		data, _ := strings.CutPrefix(strings.Split(w.text(), "\n")[1], "data: ")
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		for k, v := range doc {
			if got, _ := json.Marshal(ev[k]); string(got) != mustJSON(t, v) {
				t.Errorf("event %s = %s, /api/network has %s", k, got, mustJSON(t, v))
			}
		}
		if len(ev) != len(doc)+2 || ev["completion_tokens_total"] != 0.0 || ev["tokens_per_second"] != 0.0 {
			t.Errorf("event %v: want /api/network's %d fields and the two token fields at 0", ev, len(doc))
		}

		time.Sleep(time.Second) // an unchanged document: no event
		synctest.Wait()
		if n := len(w.events(t)); n != 1 {
			t.Fatalf("%d events after an unchanged second, want 1", n)
		}
		s.metrics.tokens.Add(30) // an answer of 30 tokens ends
		// The rate is over the samples since the stream began, then over
		// the last 10 s; each change is an event, an unchanged rate none.
		want := []struct {
			at   int // seconds since the stream began
			rate float64
		}{{2, 15}, {3, 10}, {4, 7.5}, {5, 6}, {6, 5}, {7, 4.3}, {8, 3.8}, {9, 3.3}, {10, 3}, {12, 0}}
		for sec := 2; sec <= 12; sec++ {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		evs := w.events(t)[1:]
		if len(evs) != len(want) {
			t.Fatalf("%d events in seconds 2..12, want %d: %+v", len(evs), len(want), evs)
		}
		for i, e := range evs {
			if e.TokensPerSecond != want[i].rate || e.CompletionTokensTotal != 30 {
				t.Errorf("event at %d s: %v tokens/s, total %d; want %v, 30", want[i].at, e.TokensPerSecond, e.CompletionTokensTotal, want[i].rate)
			}
		}
		// Nothing changes: the next event is the refresh, 15 s after the last.
		time.Sleep(EventsRefresh - time.Second)
		synctest.Wait()
		if n := len(w.events(t)); n != 1+len(want) {
			t.Fatalf("%d events before the refresh, want %d", n, 1+len(want))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		evs = w.events(t)
		if n := len(evs); n != 2+len(want) || evs[n-1].UptimeSeconds != 27 {
			t.Fatalf("%d events after the refresh (last %+v), want %d with uptime 27", n, evs[n-1], 2+len(want))
		}

		s.Drain()
		time.Sleep(EventsInterval)
		synctest.Wait()
		if !ended(done) {
			t.Fatal("the stream outlived the drain by a tick")
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNetworkEventsBounds checks the per-IP and total bounds on streams,
// their lifetime, and that a client that leaves ends its stream.
func TestNetworkEventsBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := bubbleServer(t)
		var cancels []context.CancelFunc
		defer func() {
			for _, c := range cancels {
				c()
			}
		}()
		_, c1, done1 := openEvents(s, "192.0.2.1:1")
		synctest.Wait()
		_, c2, _ := openEvents(s, "192.0.2.1:2")
		synctest.Wait()
		cancels = append(cancels, c1, c2)
		w3, c3, done3 := openEvents(s, "192.0.2.1:3")
		cancels = append(cancels, c3)
		synctest.Wait()
		if !ended(done3) || w3.status != http.StatusTooManyRequests || w3.header.Get("Retry-After") != "5" ||
			w3.text() != `{"detail":"Too many concurrent requests"}`+"\n" {
			t.Fatalf("third stream of one IP: %d %q Retry-After %q", w3.status, w3.text(), w3.header.Get("Retry-After"))
		}
		// A client that goes away frees its slot.
		c1()
		synctest.Wait()
		if !ended(done1) {
			t.Fatal("the stream outlived its client")
		}
		_, c4, done4 := openEvents(s, "192.0.2.1:4")
		cancels = append(cancels, c4)
		synctest.Wait()
		if ended(done4) {
			t.Fatal("a freed slot was not given again")
		}

		// The router holds at most EventsMax streams.
		var many []context.CancelFunc
		for i := 2; i < EventsMax; i++ { // two are open
			_, c, _ := openEvents(s, "198.51.100."+strconv.Itoa(i%250)+":"+strconv.Itoa(i))
			many = append(many, c)
		}
		synctest.Wait()
		if n := eventsOpen(t, s); n != EventsMax {
			t.Fatalf("%d streams open, want %d", n, EventsMax)
		}
		wMax, cMax, doneMax := openEvents(s, "203.0.113.9:1")
		cancels = append(cancels, cMax)
		synctest.Wait()
		if !ended(doneMax) || wMax.status != http.StatusServiceUnavailable || wMax.header.Get("Retry-After") != "10" {
			t.Fatalf("stream past the total: %d %q", wMax.status, wMax.text())
		}
		for _, c := range many {
			c()
		}
		synctest.Wait()
		if n := eventsOpen(t, s); n != 2 {
			t.Fatalf("%d streams open after their clients left, want 2", n)
		}

		// Each stream ends after its lifetime; the browser reconnects.
		time.Sleep(EventsLifetime)
		synctest.Wait()
		if !ended(done4) || eventsOpen(t, s) != 0 {
			t.Fatalf("streams outlived their lifetime: %d open", eventsOpen(t, s))
		}
	})
}

// TestNetworkEventsNodes reads the stream over a real socket while a node
// joins and leaves.
func TestNetworkEventsNodes(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/api/network/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() networkEvent {
		t.Helper()
		for lines.Scan() {
			if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
				var ev networkEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Fatalf("event %q: %v", data, err)
				}
				return ev
			}
		}
		t.Fatalf("the stream ended: %v", lines.Err())
		return networkEvent{}
	}
	if ev := next(); ev.NodeCount != 0 || len(ev.Models) != 0 {
		t.Fatalf("first event %+v, want no node", ev)
	}
	n := h.registerNode(t, "node-a", 2, model("stories:latest", 1000))
	ev := next()
	if ev.NodeCount != 1 || len(ev.Models) != 1 || ev.Models[0].Name != "stories:latest" || ev.Models[0].FreeSlots != 2 {
		t.Fatalf("after a node joined: %+v", ev)
	}
	_ = n.conn.CloseNow()
	if ev := next(); ev.NodeCount != 0 || len(ev.Models) != 0 {
		t.Fatalf("after the node left: %+v", ev)
	}
}
