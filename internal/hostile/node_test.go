package hostile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// wsNode is a node the test plays over a real WebSocket: honest frames
// are built from package wire's types, hostile ones as raw JSON.
type wsNode struct {
	t    *testing.T
	conn *websocket.Conn
	id   string

	// onRequest, if set (serve), is called in a goroutine of its own for
	// each inference_request; otherwise requests go to frames like every
	// other frame.
	onRequest atomic.Pointer[func(req request)]
	frames    chan wire.RouterFrame
	cancels   sync.Map // request id → chan struct{} closed by cancel_request
	canceled  atomic.Int64
	requests  atomic.Int64

	done     chan struct{} // the read loop ended
	closeErr error         // why (read after done)
}

// request is an inference_request as a node sees it.
type request struct {
	ID       string
	Params   ollama.ChatRequest
	Canceled <-chan struct{} // closed when the router sends cancel_request
}

// lastUser is the last user message of the request.
func (r request) lastUser() string {
	for i := len(r.Params.Messages) - 1; i >= 0; i-- {
		if r.Params.Messages[i].Role == "user" {
			return r.Params.Messages[i].Content
		}
	}
	return ""
}

// dialNode opens a node link from ip. With read false the node never
// reads its socket (it answers no ping, takes no frame).
func dialNode(t *testing.T, r *router, ip string, read bool) (*wsNode, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: dialerFrom(ip).DialContext}
	conn, resp, err := websocket.Dial(ctx, "ws://"+r.host+"/ws/node", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial node: status %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial node: %w", err)
	}
	conn.SetReadLimit(wire.MaxFrameBytes + 1024)
	n := &wsNode{t: t, conn: conn, frames: make(chan wire.RouterFrame, 1024), done: make(chan struct{})}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if read {
		go n.readLoop()
	}
	return n, nil
}

// mustDialNode is dialNode that fails the test on error.
func mustDialNode(t *testing.T, r *router, ip string) *wsNode {
	t.Helper()
	n, err := dialNode(t, r, ip, true)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *wsNode) readLoop() {
	defer close(n.done)
	for {
		typ, data, err := n.conn.Read(context.Background())
		if err != nil {
			n.closeErr = err
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		f, err := wire.DecodeRouterFrame(data)
		if err != nil {
			continue
		}
		switch {
		case f.Type == wire.TypeCancelRequest:
			n.canceled.Add(1)
			if ch, ok := n.cancels.LoadAndDelete(f.RequestID); ok {
				close(ch.(chan struct{}))
			}
		case f.Type == wire.TypeInferenceReq && n.onRequest.Load() != nil:
			n.requests.Add(1)
			var p ollama.ChatRequest
			_ = json.Unmarshal(f.OllamaParams, &p)
			ch := make(chan struct{})
			n.cancels.Store(f.RequestID, ch)
			go (*n.onRequest.Load())(request{ID: f.RequestID, Params: p, Canceled: ch})
			continue
		case f.Type == wire.TypeInferenceReq:
			n.requests.Add(1)
		}
		select {
		case n.frames <- f:
		default: // nobody reads them: drop (the node keeps reading its socket)
		}
	}
}

// serve answers every inference_request with fn, in a goroutine per
// request.
func (n *wsNode) serve(fn func(req request)) { n.onRequest.Store(&fn) }

// send writes v as a JSON text frame.
func (n *wsNode) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return n.sendRaw(b)
}

// sendRaw writes b as one text frame.
func (n *wsNode) sendRaw(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.conn.Write(ctx, websocket.MessageText, b)
}

// next waits for the next frame of type typ (others are skipped).
func (n *wsNode) next(typ string, d time.Duration) (wire.RouterFrame, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case f := <-n.frames:
			if f.Type == typ {
				return f, nil
			}
		case <-n.done:
			return wire.RouterFrame{}, fmt.Errorf("link closed waiting for %s: %w", typ, n.closeErr)
		case <-timer.C:
			return wire.RouterFrame{}, fmt.Errorf("no %s within %s", typ, d)
		}
	}
}

// register sends a register frame and waits for "registered".
func (n *wsNode) register(id string, maxConcurrent int, models ...wire.Model) error {
	n.id = id
	if err := n.send(map[string]any{"type": "register", "node_id": id, "models": models,
		"max_concurrent": maxConcurrent, "ollama_version": "0.9.6", "protocol": 2, "agent": "hostile-suite"}); err != nil {
		return fmt.Errorf("register %s: %w", id, err)
	}
	if _, err := n.next(wire.TypeRegistered, 10*time.Second); err != nil {
		return fmt.Errorf("register %s: %w", id, err)
	}
	return nil
}

// closeStatus waits for the router to close the link and returns the
// close code and reason (-1 if the link ended without a close frame).
func (n *wsNode) closeStatus(d time.Duration) (websocket.StatusCode, string, error) {
	select {
	case <-n.done:
	case <-time.After(d):
		return 0, "", fmt.Errorf("the router did not close the link within %s", d)
	}
	var ce websocket.CloseError
	if errors.As(n.closeErr, &ce) {
		return ce.Code, ce.Reason, nil
	}
	return -1, "", nil
}

// isOpen reports whether the link is still up.
func (n *wsNode) isOpen() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// chunk sends one inference chunk.
func (n *wsNode) chunk(id string, c wire.Chunk) error {
	return n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: id, Chunk: c})
}

// heartbeat sends a heartbeat claiming loaded.
func (n *wsNode) heartbeat(loaded ...string) error {
	return n.send(map[string]any{"type": "heartbeat", "node_id": n.id, "active_requests": 0, "available": true, "loaded_models": loaded})
}

// model is a wire model with capabilities.
func model(name string, size int64, caps ...string) wire.Model {
	if len(caps) == 0 {
		caps = []string{"completion"}
	}
	return wire.Model{Name: name, Size: size, Capabilities: caps}
}

// honestNode registers an in-test node that answers every request with
// "honest: " and the last user message, in a few chunks.
func honestNode(t *testing.T, r *router, ip, id string, models ...wire.Model) *wsNode {
	t.Helper()
	n := mustDialNode(t, r, ip)
	n.serve(func(req request) {
		words := strings.Fields("honest: " + req.lastUser())
		for i, w := range words {
			if i > 0 {
				w = " " + w
			}
			if n.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: w}}) != nil {
				return
			}
		}
		_ = n.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: ollama.Metrics{EvalCount: len(words), PromptEvalCount: 10}})
	})
	if err := n.register(id, 2, models...); err != nil {
		t.Fatal(err)
	}
	return n
}
