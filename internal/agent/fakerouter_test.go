package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 10 * time.Second

// fakeRouter is a minimal router: it accepts node links, answers register
// with registered (unless silent), records every frame and lets the test
// send frames and close links.
type fakeRouter struct {
	t      *testing.T
	srv    *httptest.Server
	conns  chan *routerConn
	silent atomic.Bool
	v1     atomic.Bool // acknowledge as a v1 router does: no protocol version
	wg     sync.WaitGroup
	stop   chan struct{} // closed at cleanup: releases paused readers

	mu  sync.Mutex
	all []*routerConn
}

// frame is one frame a node sent.
type frame struct {
	raw []byte
	m   map[string]any
}

func (f frame) typ() string         { s, _ := f.m["type"].(string); return s }
func (f frame) str(k string) string { s, _ := f.m[k].(string); return s }

type routerConn struct {
	c      *websocket.Conn
	header http.Header
	frames chan frame
	done   chan struct{}
	paused atomic.Bool // stop reading after the frame being read (a router that takes nothing)
	// set before done is closed
	closeCode   websocket.StatusCode
	closeReason string
}

func newFakeRouter(t *testing.T) *fakeRouter {
	t.Helper()
	fr := &fakeRouter{t: t, conns: make(chan *routerConn, 64), stop: make(chan struct{})}
	fr.srv = httptest.NewServer(http.HandlerFunc(fr.serve))
	t.Cleanup(func() {
		close(fr.stop)
		fr.mu.Lock()
		for _, rc := range fr.all {
			rc.c.CloseNow()
		}
		fr.mu.Unlock()
		fr.wg.Wait()
		fr.srv.Close()
	})
	return fr
}

func (fr *fakeRouter) serve(w http.ResponseWriter, r *http.Request) {
	fr.wg.Add(1)
	defer fr.wg.Done()
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.SetReadLimit(wire.MaxFrameBytes)
	rc := &routerConn{c: c, header: r.Header.Clone(), frames: make(chan frame, 4096), done: make(chan struct{})}
	fr.mu.Lock()
	fr.all = append(fr.all, rc)
	fr.mu.Unlock()
	fr.conns <- rc
	for {
		if rc.paused.Load() {
			<-fr.stop
		}
		typ, data, err := c.Read(context.Background())
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				rc.closeCode, rc.closeReason = ce.Code, ce.Reason
			} else {
				rc.closeCode = -1
			}
			close(rc.done)
			return
		}
		if typ != websocket.MessageText {
			fr.t.Errorf("node sent a non-text frame")
		}
		f := frame{raw: data}
		if err := json.Unmarshal(data, &f.m); err != nil {
			fr.t.Errorf("node sent invalid JSON %q: %v", data, err)
			continue
		}
		if f.typ() == wire.TypeRegister && !fr.silent.Load() {
			ack := wire.Registered{Type: wire.TypeRegistered, NodeID: f.str("node_id"), Protocol: wire.ProtocolVersion}
			if fr.v1.Load() {
				ack.Protocol = 0
			}
			rc.send(fr.t, ack)
		}
		select {
		case rc.frames <- f:
		default:
			fr.t.Errorf("fake router: frame buffer full")
		}
	}
}

// next waits for a new link.
func (fr *fakeRouter) next(t *testing.T) *routerConn {
	t.Helper()
	select {
	case rc := <-fr.conns:
		return rc
	case <-time.After(waitTimeout):
		t.Fatal("no node link arrived")
		return nil
	}
}

func (rc *routerConn) send(t *testing.T, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Errorf("marshal: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := rc.c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Logf("fake router write: %v", err)
	}
}

func (rc *routerConn) request(t *testing.T, id string, params any) {
	t.Helper()
	p, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	rc.send(t, map[string]any{"type": wire.TypeInferenceReq, "request_id": id, "ollama_params": json.RawMessage(p)})
}

// expect waits for the next frame of one of the given types, skipping
// others (heartbeats, mostly).
func (rc *routerConn) expect(t *testing.T, types ...string) frame {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case f := <-rc.frames:
			for _, ty := range types {
				if f.typ() == ty {
					return f
				}
			}
		case <-deadline:
			t.Fatalf("no %v frame arrived", types)
			return frame{}
		}
	}
}

// expectFor waits for the next frame of request id, skipping the others.
func (rc *routerConn) expectFor(t *testing.T, id string) frame {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case f := <-rc.frames:
			if f.str("request_id") == id {
				return f
			}
		case <-deadline:
			t.Fatalf("no frame for request %s arrived", id)
			return frame{}
		}
	}
}

// waitClosed waits until the node closed the link and returns the code and
// reason it sent.
func (rc *routerConn) waitClosed(t *testing.T) (websocket.StatusCode, string) {
	t.Helper()
	select {
	case <-rc.done:
		return rc.closeCode, rc.closeReason
	case <-time.After(waitTimeout):
		t.Fatal("the node did not close the link")
		return 0, ""
	}
}

// syncBuffer is an io.Writer safe for concurrent use that can be waited on.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the text contains sub.
func (b *syncBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for !strings.Contains(b.String(), sub) {
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("output never contained %q; got:\n%s", sub, b.String())
		}
	}
}

// waitAfter waits until the output holds sub after the first after.
func (b *syncBuffer) waitAfter(t *testing.T, after, sub string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		out := b.String()
		if i := strings.Index(out, after); i >= 0 && strings.Contains(out[i:], sub) {
			return
		}
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("output never contained %q after %q; got:\n%s", sub, after, out)
		}
	}
}

// harness runs one agent against a fake Ollama and a fake router.
type harness struct {
	fake   *ollamatest.Server
	router *fakeRouter
	out    *syncBuffer
	logs   *syncBuffer
	agent  *Agent
	cancel context.CancelFunc
	done   chan error
}

var storiesModel = ollamatest.Model{Name: "stories:latest", Size: 1185376, Capabilities: []string{"completion"}}

func newHarness(t *testing.T, ocfg ollamatest.Config, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessOf(t, ocfg, mod, false)
}

// newV1Harness is newHarness with a router that acknowledges as a v1
// router does (no protocol version) and so, as upstream, ignores
// models_update and available:false.
func newV1Harness(t *testing.T, ocfg ollamatest.Config, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessOf(t, ocfg, mod, true)
}

func newHarnessOf(t *testing.T, ocfg ollamatest.Config, mod func(*Config), v1 bool) *harness {
	t.Helper()
	if ocfg.Models == nil {
		ocfg.Models = []ollamatest.Model{storiesModel}
	}
	h := &harness{
		fake:   ollamatest.NewServer(ocfg),
		router: newFakeRouter(t),
		out:    newSyncBuffer(),
		logs:   newSyncBuffer(),
		done:   make(chan error, 1),
	}
	h.router.v1.Store(v1)
	t.Cleanup(h.fake.Close)
	cfg := Config{
		Server:       h.router.srv.URL,
		Ollama:       &ollama.Client{BaseURL: h.fake.URL, HTTP: &http.Client{}},
		AgentVersion: "test",
		Logger:       slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Out:          h.out,
		Backoff:      Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond},
		HTTPClient:   &http.Client{},
		DrainGrace:   200 * time.Millisecond, // hanging requests end the test quickly
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(2 * waitTimeout):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

// stop cancels the agent's context and returns what Run returned.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(2 * waitTimeout):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// connect waits for the agent's link and its register frame.
func (h *harness) connect(t *testing.T) (*routerConn, frame) {
	t.Helper()
	rc := h.router.next(t)
	reg := rc.expect(t, wire.TypeRegister)
	return rc, reg
}

func chat(model string, msgs ...string) map[string]any {
	var m []map[string]string
	for _, s := range msgs {
		m = append(m, map[string]string{"role": "user", "content": s})
	}
	return map[string]any{"model": model, "messages": m}
}
