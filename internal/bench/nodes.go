package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// benchModel is the model the fake Ollama serves.
const benchModel = "bench"

// fakeOllama is one fake Ollama (internal/ollamatest) on a loopback
// listener, shared by every node agent and by the direct consumers. Its
// answer to a request is given by the request's last user message (see
// fakePrompt), so the network and direct paths get the same token schedule
// by construction.
type fakeOllama struct {
	url string
	o   *ollamatest.Server
	srv *http.Server
	wg  sync.WaitGroup

	arrivals arrivals

	mu      sync.Mutex
	replies map[string]ollamatest.Reply
}

// arrivals notes when the fake Ollama receives each tagged request, so that
// a consumer can split its time to first token into the way in (its request
// reaching Ollama) and the way back (Ollama's first token reaching it). The
// consumer and the fake Ollama run in this process: one clock.
type arrivals struct {
	seq atomic.Uint64
	at  sync.Map // tag (uint64) → arrival
}

// arrival is when a tagged request reached the fake Ollama, and when its
// first token was due (arrival + the reply's delay).
type arrival struct{ at, due time.Time }

// tagPlaceholder ends a prompt whose requests are tagged; each request
// carries its own number in its place, as many digits, so the body's size
// and JSON stay the same.
const (
	tagField       = " req="
	tagPlaceholder = tagField + "00000000000000000000"
)

// tag returns a copy of body with a new tag in the placeholder, and the
// tag; body without the placeholder comes back as is, with tag 0.
func (a *arrivals) tag(body []byte) ([]byte, uint64) {
	i := bytes.Index(body, []byte(tagPlaceholder))
	if i < 0 {
		return body, 0
	}
	id := a.seq.Add(1)
	out := bytes.Clone(body)
	digits := out[i+len(tagField) : i+len(tagPlaceholder)]
	for j, v := len(digits)-1, id; j >= 0; j, v = j-1, v/10 {
		digits[j] = byte('0' + v%10)
	}
	return out, id
}

// untag returns a prompt without its tag, and the tag (0: none).
func untag(prompt string) (string, uint64) {
	i := strings.LastIndex(prompt, tagField)
	if i < 0 || len(prompt)-i != len(tagPlaceholder) {
		return prompt, 0
	}
	id, err := strconv.ParseUint(prompt[i+len(tagField):], 10, 64)
	if err != nil {
		return prompt, 0
	}
	return prompt[:i], id
}

// note records that the request tagged id arrived at at, its first token
// due first later.
func (a *arrivals) note(id uint64, at time.Time, first time.Duration) {
	if id > 0 {
		a.at.Store(id, arrival{at: at, due: at.Add(first)})
	}
}

// take returns and forgets the arrival of the request tagged id.
func (a *arrivals) take(id uint64) (arrival, bool) {
	if a == nil || id == 0 {
		return arrival{}, false
	}
	v, ok := a.at.LoadAndDelete(id)
	if !ok {
		return arrival{}, false
	}
	return v.(arrival), true
}

func startFake() (*fakeOllama, error) {
	f := &fakeOllama{replies: map[string]ollamatest.Reply{}}
	f.o = ollamatest.NewHandler(ollamatest.Config{
		Models:   []ollamatest.Model{{Name: benchModel, Size: 1 << 30}},
		NoRecord: true,
		Respond:  f.respond,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start fake ollama: %w", err)
	}
	f.url = "http://" + ln.Addr().String()
	f.srv = &http.Server{Handler: f.o, ReadHeaderTimeout: 30 * time.Second}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = f.srv.Serve(ln)
	}()
	return f, nil
}

func (f *fakeOllama) close() {
	f.o.Close()
	_ = f.srv.Close()
	f.wg.Wait()
}

// fakePrompt is the user message that asks the fake Ollama for tokens
// answer tokens of size bytes each, interval apart.
func fakePrompt(tokens, size int, interval time.Duration) string {
	return fmt.Sprintf("bench tokens=%d bytes=%d interval=%s", tokens, size, interval)
}

func (f *fakeOllama) respond(req ollamatest.ChatRequest) ollamatest.Reply {
	prompt := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			prompt = req.Messages[i].Content
			break
		}
	}
	at := time.Now()
	prompt, id := untag(prompt)
	r := f.reply(prompt)
	f.arrivals.note(id, at, r.Delay) // the fake waits Delay before each token
	return r
}

// reply is the reply to an untagged prompt, parsed once.
func (f *fakeOllama) reply(prompt string) ollamatest.Reply {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.replies[prompt]; ok {
		return r
	}
	r := parseFakePrompt(prompt)
	if len(f.replies) < 1024 {
		f.replies[prompt] = r
	}
	return r
}

// parseFakePrompt turns a fakePrompt back into a reply; anything else gets
// one short token.
func parseFakePrompt(prompt string) ollamatest.Reply {
	tokens, size, interval := 1, 4, time.Duration(0)
	for _, kv := range strings.Fields(prompt) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "tokens":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n <= 1_000_000 {
				tokens = n
			}
		case "bytes":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n <= 1<<16 {
				size = n
			}
		case "interval":
			if d, err := time.ParseDuration(v); err == nil && d >= 0 {
				interval = d
			}
		}
	}
	// " xxx": no outbound pattern or tool-call tag can start in it, so
	// the router's filters hold nothing back.
	tok := " " + strings.Repeat("x", size-1)
	if size == 1 {
		tok = "x"
	}
	r := ollamatest.Reply{Tokens: make([]string, tokens), Delay: interval}
	for i := range r.Tokens {
		r.Tokens[i] = tok
	}
	return r
}

// agentPool is a set of real node agents (internal/agent), each with its
// own WebSocket link to the router, relaying to one Ollama.
type agentPool struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	errs []error
}

// startAgents starts n agents named prefix-i, each serving up to perNode
// requests at once.
func startAgents(ctx context.Context, nk *netKit, routerURL, ollamaURL, prefix string, n, perNode int) (*agentPool, error) {
	ctx, cancel := context.WithCancel(ctx)
	p := &agentPool{cancel: cancel}
	wsClient := &http.Client{Transport: nk.transport(16)}
	olClient := &http.Client{Transport: nk.transport(n * perNode)}
	for i := range n {
		a, err := agent.New(agent.Config{
			Server:        routerURL,
			Ollama:        &ollama.Client{BaseURL: ollamaURL, HTTP: olClient},
			NodeID:        fmt.Sprintf("%s-%d", prefix, i),
			MaxConcurrent: perNode,
			DrainGrace:    2 * time.Second,
			Owner:         agent.Owner{Poll: -1}, // the fake Ollama has no owner; its /api/ps is not the bench's load
			JoinArrived:   true,                  // as idleclaw contribute
			AgentVersion:  "bench",
			HTTPClient:    wsClient,
		})
		if err != nil {
			p.stop()
			return nil, fmt.Errorf("start agents: %w", err)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := a.Run(ctx); err != nil {
				p.mu.Lock()
				p.errs = append(p.errs, err)
				p.mu.Unlock()
			}
		}()
	}
	return p, nil
}

func (p *agentPool) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}

// stop drains and stops every agent and waits for them.
func (p *agentPool) stop() {
	p.cancel()
	p.wg.Wait()
}

// protoPool is a set of light nodes on the real WebSocket protocol: each
// registers, is heartbeaten (one goroutine heartbeats them all every 15 s,
// as often as an agent does) and keeps a reader running. For the idle-node
// sweep they take no requests. For the relay workload (serve) they answer
// each inference_request themselves with the fake Ollama's schedule, one
// inference_chunk frame per token written as the agent writes them, but
// without the HTTP hop to an Ollama: the load generator's cost per token is
// then a fraction of the router's, and the router is what limits.
type protoPool struct {
	url     string
	client  *http.Client
	serve   bool
	perNode int
	stopc   chan struct{}
	wg      sync.WaitGroup // readers, heartbeats and answers

	mu    sync.Mutex
	conns []*protoNode
}

type protoNode struct {
	c  *websocket.Conn
	id string

	mu       sync.Mutex // guards inflight
	inflight map[string]context.CancelFunc
}

func newProtoPool(nk *netKit, routerURL string, serve bool, perNode int) *protoPool {
	p := &protoPool{
		url:     "ws" + strings.TrimPrefix(routerURL, "http") + "/ws/node",
		client:  &http.Client{Transport: nk.transport(64)},
		serve:   serve,
		perNode: perNode,
		stopc:   make(chan struct{}),
	}
	p.wg.Add(1)
	go p.heartbeats()
	return p
}

// add connects and registers count more nodes, parallel at a time.
func (p *protoPool) add(ctx context.Context, prefix string, count, parallel int) error {
	p.mu.Lock()
	first := len(p.conns)
	p.mu.Unlock()
	ids := make(chan int)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				if err := p.connect(ctx, fmt.Sprintf("%s-%d", prefix, i)); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
feed:
	for i := first; i < first+count; i++ {
		select {
		case ids <- i:
		case <-ctx.Done():
			break feed
		}
		if len(errc) > 0 {
			break
		}
	}
	close(ids)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}

func (p *protoPool) connect(ctx context.Context, id string) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, p.url, &websocket.DialOptions{HTTPClient: p.client})
	if err != nil {
		return fmt.Errorf("node %s: dial: %w", id, err)
	}
	conn.SetReadLimit(wire.MaxFrameBytes)
	reg, _ := json.Marshal(wire.Register{
		Type:          wire.TypeRegister,
		NodeID:        id,
		Models:        []wire.Model{{Name: benchModel + ":latest", Size: 1 << 30}},
		MaxConcurrent: p.perNode,
		OllamaVersion: "0.9.6",
		Protocol:      wire.ProtocolVersion,
		Agent:         "idleclaw-bench/protocol-node",
	})
	if err := conn.Write(dctx, websocket.MessageText, reg); err != nil {
		_ = conn.CloseNow()
		return fmt.Errorf("node %s: register: %w", id, err)
	}
	_, data, err := conn.Read(dctx)
	if err != nil {
		_ = conn.CloseNow()
		return fmt.Errorf("node %s: wait for registered: %w", id, err)
	}
	if f, err := wire.DecodeRouterFrame(data); err != nil || f.Type != wire.TypeRegistered {
		_ = conn.CloseNow()
		return fmt.Errorf("node %s: expected registered, got %.80s", id, data)
	}
	n := &protoNode{c: conn, id: id, inflight: map[string]context.CancelFunc{}}
	p.mu.Lock()
	p.conns = append(p.conns, n)
	p.mu.Unlock()
	p.wg.Add(1)
	go p.read(n)
	return nil
}

// read keeps a reader running on the node's link (control frames are
// answered by it) and, when the pool serves, starts and cancels answers.
func (p *protoPool) read(n *protoNode) {
	defer p.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		_, data, err := n.c.Read(ctx)
		if err != nil {
			return
		}
		if !p.serve {
			continue
		}
		f, err := wire.DecodeRouterFrame(data)
		if err != nil {
			continue
		}
		switch f.Type {
		case wire.TypeInferenceReq:
			var params struct {
				Messages []struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"messages"`
			}
			_ = json.Unmarshal(f.OllamaParams, &params)
			prompt := ""
			for _, m := range params.Messages {
				if m.Role == "user" {
					prompt = m.Content
				}
			}
			rctx, rcancel := context.WithCancel(ctx)
			n.mu.Lock()
			n.inflight[f.RequestID] = rcancel
			n.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer rcancel()
				n.answer(rctx, f.RequestID, parseFakePrompt(prompt))
				n.mu.Lock()
				delete(n.inflight, f.RequestID)
				n.mu.Unlock()
			}()
		case wire.TypeCancelRequest:
			n.mu.Lock()
			if c := n.inflight[f.RequestID]; c != nil {
				c()
			}
			n.mu.Unlock()
		}
	}
}

// answer streams one reply: a frame per token, then the final chunk.
func (n *protoNode) answer(ctx context.Context, id string, r ollamatest.Reply) {
	var timer *time.Timer
	if r.Delay > 0 {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	frames := map[string][]byte{}
	for _, tok := range r.Tokens {
		if timer != nil {
			timer.Reset(r.Delay)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		b := frames[tok]
		if b == nil {
			b, _ = json.Marshal(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: id,
				Chunk: wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: tok}}})
			frames[tok] = b
		}
		// Writes take no cancelable context (coder/websocket would arm a
		// timer per frame); a canceled answer stops before its next frame.
		if ctx.Err() != nil || n.c.Write(context.Background(), websocket.MessageText, b) != nil {
			return
		}
	}
	final := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"}
	final.PromptEvalCount, final.EvalCount = 10, len(r.Tokens)
	b, _ := json.Marshal(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: id, Chunk: final})
	if ctx.Err() == nil {
		_ = n.c.Write(context.Background(), websocket.MessageText, b)
	}
}

// heartbeats sends every node a heartbeat each 15 s, as an agent does.
func (p *protoPool) heartbeats() {
	defer p.wg.Done()
	t := time.NewTicker(agent.DefaultHeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stopc:
			return
		case <-t.C:
		}
		p.mu.Lock()
		conns := append([]*protoNode(nil), p.conns...)
		p.mu.Unlock()
		for _, n := range conns {
			n.mu.Lock()
			active := len(n.inflight)
			n.mu.Unlock()
			b, _ := json.Marshal(wire.Heartbeat{Type: wire.TypeHeartbeat, NodeID: n.id, ActiveRequests: active, Available: true})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = n.c.Write(ctx, websocket.MessageText, b)
			cancel()
		}
	}
}

func (p *protoPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close drops every node at once and waits for the pool's goroutines.
func (p *protoPool) close() {
	close(p.stopc)
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, n := range conns {
		_ = n.c.CloseNow()
	}
	p.wg.Wait()
	p.client.CloseIdleConnections()
}
