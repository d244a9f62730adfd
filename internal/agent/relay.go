package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// request is one inference request being relayed.
type request struct {
	id       string
	model    string
	begin    time.Time
	cancel   context.CancelFunc
	canceled atomic.Bool // the router sent cancel_request: send nothing more
}

// start checks an inference_request and starts relaying it, or refuses it.
// It runs on the reader goroutine.
func (s *session) start(f wire.RouterFrame) {
	a := s.a
	begin := a.cfg.Now()
	req, err := wire.DecodeOllamaParams(f.OllamaParams, a.serves)
	if err == nil {
		vision, predict := a.facts(req.Model)
		err = a.cfg.Limits.shape(&req, vision, predict)
	}
	if err != nil {
		a.log.Info("refusing a request", "request_id", f.RequestID, "err", err)
		s.refuse(f.RequestID, modelOf(f.OllamaParams), wire.ErrInvalidRequest, begin)
		return
	}
	if len(req.Think) > 0 && req.Think[0] == '"' && !a.thinkLevels {
		// An Ollama older than 0.11 refuses a think level; ask it to think.
		req.Think = json.RawMessage("true")
	}
	ctx, cancel := context.WithCancel(s.reqCtx)
	r := &request{id: f.RequestID, model: req.Model, begin: begin, cancel: cancel}
	why := ""
	s.mu.Lock()
	switch {
	case s.closing:
		why = "shutting down"
	case s.inflight[r.id] != nil:
		why = "duplicate"
	case len(s.inflight) >= a.cfg.MaxConcurrent:
		why = "at capacity"
	case a.gate.paused():
		why = "paused"
	default:
		s.inflight[r.id] = r
		s.wg.Add(1)
		go s.relay(ctx, r, req)
	}
	s.mu.Unlock()
	switch why {
	case "":
	case "duplicate":
		cancel()
		a.log.Warn("ignoring a request id already in flight", "request_id", r.id)
	default:
		cancel()
		a.log.Info("refusing a request", "request_id", r.id, "reason", why)
		s.refuse(r.id, r.model, wire.ErrOllamaUnavailable, begin)
	}
}

// refuse answers a request that will not run.
func (s *session) refuse(id, model, code string, begin time.Time) {
	if err := s.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: id, Error: code}); err != nil {
		s.a.log.Debug("send inference_error", "request_id", id, "err", err)
	}
	s.a.reportLine(begin, model, 0, 0, "error "+code)
}

// cancel stops a request on the router's demand; nothing more is sent for it.
func (s *session) cancel(id string) {
	s.mu.Lock()
	r := s.inflight[id]
	// The router counts the slot free once it sent the cancel and may send
	// the next request right behind it: free the slot now, not when the
	// Ollama call has unwound, or that request is refused as over capacity.
	delete(s.inflight, id)
	s.mu.Unlock()
	if r == nil {
		s.a.log.Debug("cancel for a request not in flight", "request_id", id)
		return
	}
	r.canceled.Store(true)
	r.cancel()
}

// relay runs one request against Ollama and streams the whitelisted answer
// to the router.
func (s *session) relay(ctx context.Context, r *request, req ollama.ChatRequest) {
	a := s.a
	defer s.wg.Done()
	defer r.cancel()
	defer s.release(r)

	model := wire.NormalizeModel(req.Model)
	keepAlive, _ := parseKeepAlive(req.KeepAlive)
	a.noteStart(model)
	defer func() { a.noteEnd(model, keepAlive) }()
	var chunks int
	var final ollama.Metrics
	var frame []byte // reused: the connection copies what it writes
	send := func(c wire.Chunk) error {
		var err error
		frame, err = wire.AppendInferenceChunk(frame[:0], wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: r.id, Chunk: c})
		if err != nil {
			return fmt.Errorf("encode frame: %w", err)
		}
		s.chunkWrites.Add(1)
		defer s.chunkWrites.Add(-1)
		return s.write(frame)
	}
	// Coalescing under back-pressure: see coalescer.
	var co coalescer
	var msg wire.ChunkMessage // reused for every line: send encodes it at once, push copies what it holds
	err := a.ol.Chat(ctx, req, func(cr ollama.ChatResponse) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := whitelist(cr, a, &msg)
		if c.Message.Content != "" || c.Message.Thinking != "" || len(c.Message.ToolCalls) > 0 {
			chunks++
		}
		if c.Done {
			final = cr.Metrics
			// Free the slot before the router learns the request is
			// over, so that it may send the next one at once.
			s.release(r)
		}
		// A text waits only for a line that is already here (reading
		// it does not block, so joining the two costs no time): always
		// with JoinArrived, else when the link is not ready, another
		// request's chunk being written on it (this one's are not: it
		// writes them itself).
		return co.push(c, cr.More && (a.cfg.JoinArrived || s.chunkWrites.Load() > 0), send)
	})
	if err == nil || ctx.Err() == nil && !r.canceled.Load() && !errors.Is(err, errSend) {
		// What Ollama sent before it ended, or failed, goes out first.
		if ferr := co.flush(send); ferr != nil {
			err = ferr
		}
	}
	s.release(r)
	outcome := "ok"
	switch {
	case err == nil:
	case r.canceled.Load():
		outcome = "canceled"
	case errors.Is(err, errSend):
		outcome = "canceled"
		a.log.Warn("request lost with the link", "request_id", r.id)
	case ctx.Err() != nil:
		// The session ended (drain grace over, or the link was lost):
		// tell the router if the link still works.
		outcome = "canceled"
		s.sendError(r.id, wire.ErrOllamaUnavailable)
	default:
		code := errorCode(err)
		outcome = "error " + code
		a.log.Warn("request failed", "request_id", r.id, "model", r.model, "code", code, "err", err)
		s.sendError(r.id, code)
	}
	tokens := chunks
	if final.EvalCount > 0 {
		tokens = final.EvalCount
	}
	tps := requestRate(tokens, final, a.cfg.Now().Sub(r.begin))
	a.log.Debug("request done", "request_id", r.id, "model", r.model, "tokens", tokens, "outcome", outcome)
	if outcome == "ok" {
		a.stats.add(a.cfg.Now(), tokens)
	}
	a.reportLine(r.begin, r.model, tokens, tps, outcome)
}

// coalescer merges one request's chunks that Ollama has already sent: when
// Ollama's next line has arrived (reading it will not block), a chunk of
// plain text may be held, and goes out with that line, in one valid v1
// inference_chunk with the texts concatenated. With Config.JoinArrived it
// is held whenever that line is there, so that when Ollama is ahead of the
// link one frame carries what was waiting; without, only while another
// request's chunk is being written on the link (back-pressure), so that an
// idle link carries every line alone as Ollama sent it. Nothing waits on a
// timer: a held text waits only for a line that is already there.
type coalescer struct {
	text     []byte // the held text, reused
	thinking bool   // it is thinking, not content
	holding  bool
	msg      wire.ChunkMessage // what flush sends the held text in
}

// push takes the next chunk; wait says that it may be held for the line
// behind it. send writes a chunk to the link; it must not keep c, whose
// message the caller may reuse once push returns.
func (co *coalescer) push(c wire.Chunk, wait bool, send func(wire.Chunk) error) error {
	m := c.Message
	// plain: text of one kind, or none, and not final.
	plain := !c.Done && len(m.ToolCalls) == 0 && (m.Content == "" || m.Thinking == "")
	if co.holding {
		// Joined only while the text stays under maxHeldBytes, so that
		// no frame is larger than one of the lines alone would make it.
		if plain && (m.Content == "" && m.Thinking == "" || (m.Thinking != "") == co.thinking) &&
			len(co.text)+len(m.Content)+len(m.Thinking) < maxHeldBytes {
			co.text = append(co.text, m.Content...)
			co.text = append(co.text, m.Thinking...)
			if wait {
				return nil
			}
			return co.flush(send)
		}
		if err := co.flush(send); err != nil {
			return err
		}
	}
	if wait && plain && (m.Content != "" || m.Thinking != "") && len(m.Content)+len(m.Thinking) < maxHeldBytes {
		co.text = append(append(co.text[:0], m.Content...), m.Thinking...)
		co.thinking = m.Thinking != ""
		co.holding = true
		return nil
	}
	return send(c)
}

// flush sends what is held, if anything (the line it waited for was
// blank, or it is not text of the same kind).
func (co *coalescer) flush(send func(wire.Chunk) error) error {
	if !co.holding {
		return nil
	}
	co.holding = false
	co.msg = wire.ChunkMessage{Role: "assistant"}
	if co.thinking {
		co.msg.Thinking = string(co.text)
	} else {
		co.msg.Content = string(co.text)
	}
	return send(wire.Chunk{Message: &co.msg})
}

// maxHeldBytes bounds the text one coalesced chunk gathers: a line that
// would take it past goes out in a frame of its own.
const maxHeldBytes = 16 << 10

// A request's line gives a rate only for minRateTokens or more over
// minRateSpan or more.
const (
	minRateTokens = 2
	minRateSpan   = 50 * time.Millisecond
)

// requestRate is a request's tokens a second for its line, from Ollama's
// eval time or, without one, the wall time; 0 (not shown) when too few
// tokens or too short a time make it meaningless: one token in Ollama's
// microseconds is not thousands a second.
func requestRate(tokens int, final ollama.Metrics, wall time.Duration) float64 {
	switch {
	case tokens < minRateTokens:
		return 0
	case final.EvalDuration >= int64(minRateSpan):
		return final.TokensPerSecond()
	case final.EvalDuration == 0 && wall >= minRateSpan:
		return float64(tokens) / wall.Seconds()
	}
	return 0
}

// release frees the request's slot; it may be called more than once.
func (s *session) release(r *request) {
	s.mu.Lock()
	if s.inflight[r.id] == r {
		delete(s.inflight, r.id)
	}
	s.mu.Unlock()
}

func (s *session) sendError(id, code string) {
	if err := s.send(wire.InferenceError{Type: wire.TypeInferenceError, RequestID: id, Error: code}); err != nil {
		s.a.log.Debug("send inference_error", "request_id", id, "err", err)
	}
}

// errorCode maps a failed Ollama call to the code the router is told. No
// Ollama error text ever goes to the router.
func errorCode(err error) string {
	var se *ollama.StatusError
	switch {
	case errors.Is(err, ollama.ErrUnreachable):
		return wire.ErrOllamaUnavailable
	case errors.As(err, &se) && se.Status == http.StatusServiceUnavailable:
		return wire.ErrOllamaBusy
	default:
		return wire.ErrOllamaError
	}
}

// whitelist keeps only what protocol §2.1 lets a chunk carry. The chunk's
// message is msg, overwritten.
func whitelist(cr ollama.ChatResponse, a *Agent, msg *wire.ChunkMessage) wire.Chunk {
	*msg = wire.ChunkMessage{
		Role:     "assistant",
		Content:  cr.Message.Content,
		Thinking: cr.Message.Thinking,
	}
	for _, tc := range cr.Message.ToolCalls {
		args := bytes.TrimSpace(tc.Function.Arguments)
		switch {
		case len(args) == 0 || bytes.Equal(args, []byte("null")):
			args = []byte("{}")
		case args[0] != '{' || !json.Valid(args):
			a.log.Warn("dropping a tool call whose arguments are not a JSON object", "tool", tc.Function.Name)
			continue
		}
		msg.ToolCalls = append(msg.ToolCalls, ollama.ToolCall{
			ID:       tc.ID,
			Function: ollama.ToolFunction{Index: tc.Function.Index, Name: tc.Function.Name, Arguments: json.RawMessage(args)},
		})
	}
	c := wire.Chunk{Message: msg, Done: cr.Done}
	if cr.Done {
		c.DoneReason = cr.DoneReason
		c.Metrics = cr.Metrics
	}
	return c
}

// modelOf digs the model name out of refused params, for the human line.
func modelOf(raw json.RawMessage) string {
	var p struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(raw, &p)
	return p.Model
}

// reportLine prints one finished request: never any prompt or answer text.
func (a *Agent) reportLine(begin time.Time, model string, tokens int, tps float64, outcome string) {
	if !wire.ValidModelName(model) {
		model = "-" // router-supplied text: do not echo it to a terminal
	}
	// Stamped when printed (the request's end), so that lines are in
	// order; the duration says when it began.
	end := a.cfg.Now()
	rate := ""
	if tps > 0 {
		rate = fmt.Sprintf("  %.1f tok/s", tps)
	}
	a.printf("%s  %s  %s in %s%s  %s\n", end.Format("2006-01-02 15:04:05"), model, plural(tokens, "token"), humanSpan(end.Sub(begin)), rate, outcome)
}

// humanSpan is a request's duration for its line: 0.3 s, 12 s, 2m5s.
func humanSpan(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= 10*time.Second:
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
