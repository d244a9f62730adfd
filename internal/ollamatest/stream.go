package ollamatest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idleclaw/idleclaw/internal/jsonscan"
)

const (
	ctNDJSON = "application/x-ndjson"
	ctJSON   = "application/json; charset=utf-8"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// handleInference serves /api/chat (gen false) and /api/generate (gen true).
func (s *Server) handleInference(w http.ResponseWriter, r *http.Request, gen bool) {
	start := time.Now()
	s.active.Add(1)
	canceled := false
	defer func() {
		s.active.Add(-1)
		if canceled {
			s.canceled.Add(1)
			select {
			case s.canceledCh <- struct{}{}:
			default:
			}
		}
	}()

	path := "/api/chat"
	if gen {
		path = "/api/generate"
	}
	// Read the whole body: this also lets net/http notice a client that
	// goes away (it cancels r.Context()).
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req, err := decodeRequest(body, path)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.record(req)

	_, found := s.lookup(req.Model)
	if found {
		defer s.served(req.Model, req.KeepAlive)
	}
	if !found {
		switch {
		case gen:
			writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		case strings.TrimSpace(req.Model) == "":
			writeError(w, http.StatusBadRequest, "model is required")
		default:
			writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		}
		return
	}

	// Load and unload requests: no messages (or no prompt), answered at once.
	empty := len(req.Messages) == 0
	if gen {
		empty = req.Prompt == ""
	}
	if empty {
		reason := "load"
		if d, ok, _ := keepAlive(req.KeepAlive); ok && d == 0 {
			reason = "unload"
		}
		var b []byte
		b = append(b, `{"model":`...)
		b = jsonscan.AppendString(b, req.Model, true)
		b = append(b, `,"created_at":"`...)
		b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
		if gen {
			b = append(b, `","response":"","done":true,"done_reason":`...)
			b = jsonscan.AppendString(b, reason, true)
		} else {
			b = append(b, `","message":{"role":"assistant","content":""},"done_reason":`...)
			b = jsonscan.AppendString(b, reason, true)
			b = append(b, `,"done":true`...)
		}
		b = append(b, '}')
		w.Header().Set("Content-Type", ctJSON)
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		return
	}

	reply := s.responder()(req)
	loaded := time.Now()
	if reply.Status != 0 && reply.Status != http.StatusOK {
		msg := reply.Error
		if msg == "" {
			msg = strings.ToLower(http.StatusText(reply.Status))
		}
		writeError(w, reply.Status, msg)
		return
	}
	if reply.DoneReason == "" {
		reply.DoneReason = "stop"
	}

	st := &streamer{
		w:      w,
		rc:     http.NewResponseController(w),
		ctx:    r.Context(),
		closed: s.closed,
		delay:  reply.Delay,
		gen:    gen,
		start:  start,
		loaded: loaded,
	}
	defer st.release()
	st.prefix = append(st.prefix, `{"model":`...)
	st.prefix = jsonscan.AppendString(st.prefix, req.Model, true)
	st.prefix = append(st.prefix, `,"created_at":"`...)
	st.promptCount = promptTokens(req)

	if req.Stream == nil || *req.Stream {
		st.stream(&reply)
	} else {
		st.whole(&reply)
	}
	canceled = st.canceled
}

// promptTokens is a plausible prompt_eval_count: about four bytes a token.
func promptTokens(req ChatRequest) int {
	n := 1
	if req.Prompt != "" {
		n += (len(req.Prompt) + 3) / 4
	}
	for _, m := range req.Messages {
		n += 4 + (len(m.Content)+3)/4
	}
	return n
}

// streamer writes one reply. Not safe for concurrent use.
type streamer struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	ctx    context.Context
	closed <-chan struct{}
	timer  *time.Timer
	delay  time.Duration
	gen    bool

	bufp   *[]byte
	prefix []byte // {"model":"m","created_at":"

	start, loaded, firstEval time.Time
	evalCount                int
	promptCount              int
	canceled                 bool // the client went away before the reply was complete
}

func (st *streamer) release() {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.bufp != nil {
		if cap(*st.bufp) <= 64<<10 {
			*st.bufp = (*st.bufp)[:0]
			bufPool.Put(st.bufp)
		}
		st.bufp = nil
	}
}

// gone records why the reply stops early: the client went away (counted as
// canceled) or the server is closing (not counted).
func (st *streamer) gone() {
	select {
	case <-st.closed:
	default:
		st.canceled = true
	}
}

// wait pauses for the reply's Delay; false when the request must stop.
func (st *streamer) wait() bool {
	if st.delay <= 0 {
		select {
		case <-st.ctx.Done():
			st.gone()
			return false
		case <-st.closed:
			return false
		default:
			return true
		}
	}
	if st.timer == nil {
		st.timer = time.NewTimer(st.delay)
	} else {
		st.timer.Reset(st.delay)
	}
	select {
	case <-st.timer.C:
		return true
	case <-st.ctx.Done():
		st.timer.Stop()
		st.gone()
		return false
	case <-st.closed:
		st.timer.Stop()
		return false
	}
}

// hang waits until the client goes away or the server closes.
func (st *streamer) hang() {
	select {
	case <-st.ctx.Done():
		st.gone()
	case <-st.closed:
	}
}

// line starts a stream line in the pooled buffer.
func (st *streamer) line() []byte {
	if st.bufp == nil {
		st.bufp = bufPool.Get().(*[]byte)
	}
	b := append((*st.bufp)[:0], st.prefix...)
	return time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
}

// emit writes and flushes one line; false when the client went away.
func (st *streamer) emit(b []byte) bool {
	*st.bufp = b
	if _, err := st.w.Write(b); err != nil {
		st.gone()
		return false
	}
	if err := st.rc.Flush(); err != nil {
		st.gone()
		return false
	}
	return true
}

func (st *streamer) evalChunk() {
	if st.evalCount == 0 {
		st.firstEval = time.Now()
	}
	st.evalCount++
}

// stream answers with NDJSON, one flushed line per chunk.
func (st *streamer) stream(rep *Reply) {
	h := st.w.Header()
	h.Set("Content-Type", ctNDJSON)
	st.w.WriteHeader(http.StatusOK)

	for _, t := range rep.Thinking {
		if !st.wait() {
			return
		}
		st.evalChunk()
		b := st.line()
		if st.gen {
			b = append(b, `","response":"","thinking":`...)
			b = jsonscan.AppendString(b, t, true)
			b = append(b, `,"done":false}`+"\n"...)
		} else {
			b = append(b, `","message":{"role":"assistant","content":"","thinking":`...)
			b = jsonscan.AppendString(b, t, true)
			b = append(b, `},"done":false}`+"\n"...)
		}
		if !st.emit(b) {
			return
		}
	}
	for _, t := range rep.Tokens {
		if !st.wait() {
			return
		}
		st.evalChunk()
		b := st.line()
		if st.gen {
			b = append(b, `","response":`...)
			b = jsonscan.AppendString(b, t, true)
			b = append(b, `,"done":false}`+"\n"...)
		} else {
			b = append(b, `","message":{"role":"assistant","content":`...)
			b = jsonscan.AppendString(b, t, true)
			b = append(b, `},"done":false}`+"\n"...)
		}
		if !st.emit(b) {
			return
		}
	}
	if !st.gen {
		for _, calls := range rep.ToolCalls {
			if !st.wait() {
				return
			}
			b := st.line()
			b = append(b, `","message":{"role":"assistant","content":"","tool_calls":`...)
			b = appendToolCalls(b, calls)
			b = append(b, `},"done":false}`+"\n"...)
			if !st.emit(b) {
				return
			}
		}
	}
	if rep.Hang {
		st.hang()
		return
	}
	if rep.Error != "" {
		if !st.wait() {
			return
		}
		if st.bufp == nil {
			st.bufp = bufPool.Get().(*[]byte)
		}
		b := append((*st.bufp)[:0], `{"error":`...)
		b = jsonscan.AppendString(b, rep.Error, true)
		b = append(b, "}\n"...)
		st.emit(b)
		return
	}
	b := st.line()
	if st.gen {
		b = append(b, `","response":"","done":true,"done_reason":`...)
		b = jsonscan.AppendString(b, rep.DoneReason, true)
	} else {
		b = append(b, `","message":{"role":"assistant","content":""},"done_reason":`...)
		b = jsonscan.AppendString(b, rep.DoneReason, true)
		b = append(b, `,"done":true`...)
	}
	b = st.appendMetrics(b)
	b = append(b, "}\n"...)
	st.emit(b)
}

// whole answers stream:false: one JSON object with the concatenated message.
func (st *streamer) whole(rep *Reply) {
	var content, thinking strings.Builder
	var calls []ToolCall
	for _, t := range rep.Thinking {
		if !st.wait() {
			return
		}
		st.evalChunk()
		thinking.WriteString(t)
	}
	for _, t := range rep.Tokens {
		if !st.wait() {
			return
		}
		st.evalChunk()
		content.WriteString(t)
	}
	if !st.gen {
		for _, c := range rep.ToolCalls {
			if !st.wait() {
				return
			}
			calls = append(calls, c...)
		}
	}
	if rep.Hang {
		st.hang()
		return
	}
	if rep.Error != "" {
		if !st.wait() {
			return
		}
		// Ollama turns an error after generation started into a 500 when
		// not streaming.
		writeError(st.w, http.StatusInternalServerError, rep.Error)
		return
	}
	b := st.line()
	if st.gen {
		b = append(b, `","response":`...)
		b = jsonscan.AppendString(b, content.String(), true)
		if thinking.Len() > 0 {
			b = append(b, `,"thinking":`...)
			b = jsonscan.AppendString(b, thinking.String(), true)
		}
		b = append(b, `,"done":true,"done_reason":`...)
		b = jsonscan.AppendString(b, rep.DoneReason, true)
	} else {
		b = append(b, `","message":{"role":"assistant","content":`...)
		b = jsonscan.AppendString(b, content.String(), true)
		if thinking.Len() > 0 {
			b = append(b, `,"thinking":`...)
			b = jsonscan.AppendString(b, thinking.String(), true)
		}
		if len(calls) > 0 {
			b = append(b, `,"tool_calls":`...)
			b = appendToolCalls(b, calls)
		}
		b = append(b, `},"done_reason":`...)
		b = jsonscan.AppendString(b, rep.DoneReason, true)
		b = append(b, `,"done":true`...)
	}
	b = st.appendMetrics(b)
	b = append(b, '}')
	*st.bufp = b
	st.w.Header().Set("Content-Type", ctJSON)
	st.w.WriteHeader(http.StatusOK)
	if _, err := st.w.Write(b); err != nil {
		st.gone()
	}
}

// appendMetrics appends Ollama's timing fields, measured from real elapsed
// time; every duration is at least 1ns and total covers the others.
func (st *streamer) appendMetrics(b []byte) []byte {
	end := time.Now()
	first := st.firstEval
	if st.evalCount == 0 {
		first = end
	}
	load := max(st.loaded.Sub(st.start), 1)
	promptEval := max(first.Sub(st.loaded), 1)
	eval := max(end.Sub(first), 1)
	total := max(end.Sub(st.start), load+promptEval+eval)
	b = append(b, `,"total_duration":`...)
	b = strconv.AppendInt(b, int64(total), 10)
	b = append(b, `,"load_duration":`...)
	b = strconv.AppendInt(b, int64(load), 10)
	b = append(b, `,"prompt_eval_count":`...)
	b = strconv.AppendInt(b, int64(st.promptCount), 10)
	b = append(b, `,"prompt_eval_duration":`...)
	b = strconv.AppendInt(b, int64(promptEval), 10)
	b = append(b, `,"eval_count":`...)
	b = strconv.AppendInt(b, int64(st.evalCount), 10)
	b = append(b, `,"eval_duration":`...)
	b = strconv.AppendInt(b, int64(eval), 10)
	return b
}

// appendToolCalls appends calls as a JSON array; missing arguments become {}.
func appendToolCalls(b []byte, calls []ToolCall) []byte {
	cs := make([]ToolCall, len(calls))
	copy(cs, calls)
	for i := range cs {
		if len(cs[i].Function.Arguments) == 0 {
			cs[i].Function.Arguments = json.RawMessage("{}")
		}
	}
	enc, err := json.Marshal(cs)
	if err != nil {
		// Invalid Arguments in a scripted Reply: a test bug. Keep the line
		// valid JSON and make the problem visible.
		enc, _ = json.Marshal([]ToolCall{{Function: ToolCallFunction{
			Name:      "ollamatest: invalid tool call arguments: " + err.Error(),
			Arguments: json.RawMessage("{}"),
		}}})
	}
	return append(b, enc...)
}
