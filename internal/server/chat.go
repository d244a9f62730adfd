package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/jsonscan"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// ChatRequest is the body of the v1 POST /api/chat. Unknown keys are ignored.
type ChatRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	Think    bool          `json:"think"`
	// Options (ext) carries the sampling options a consumer may set.
	Options *Options `json:"options"`
	// Trust (ext) is the least trusted node tier the consumer accepts
	// ("verified", ...); Digest (ext) pins the model's digest. The
	// X-IdleClaw-Trust and X-IdleClaw-Digest headers say the same.
	Trust  string `json:"trust"`
	Digest string `json:"digest"`
}

// ChatMessage is one message of a v1 chat request.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Options are the Ollama options a consumer may set (ext); every other
// option key is dropped.
type Options struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	TopK        *int     `json:"top_k,omitempty"`
	Seed        *int     `json:"seed,omitempty"`
	NumPredict  *int     `json:"num_predict,omitempty"`
	Stop        []string `json:"stop,omitempty"`
}

// Limits bound a consumer request; 0 turns a limit off.
type Limits struct {
	MaxMessages      int
	MaxMessageLength int
	MaxTotalChars    int
}

// RequestError is a refused consumer request: an HTTP status and a safe detail.
type RequestError struct {
	Status int
	Detail string
}

func (e *RequestError) Error() string { return e.Detail }

func unprocessable(format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusUnprocessableEntity, Detail: fmt.Sprintf(format, args...)}
}

// DecodeChatRequest decodes and validates a v1 chat body (protocol §1.1,
// checks 3 and 4): schema and sizes (422), then the total (422).
func DecodeChatRequest(body []byte, lim Limits) (ChatRequest, *RequestError) {
	var req ChatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return ChatRequest{}, unprocessable("invalid JSON body: %s", jsonErrorText(err))
	}
	if !wire.ValidModelName(req.Model) { // 1..64 characters of the pattern
		return ChatRequest{}, unprocessable("model: must be 1..%d characters of [a-zA-Z0-9._:/-]", wire.MaxModelName)
	}
	if len(req.Messages) < 1 || (lim.MaxMessages > 0 && len(req.Messages) > lim.MaxMessages) {
		return ChatRequest{}, unprocessable("messages: must hold %s", itemsRule(lim.MaxMessages))
	}
	total := 0
	for i, m := range req.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return ChatRequest{}, unprocessable("messages[%d].role: must be \"user\" or \"assistant\"", i)
		}
		n := utf8.RuneCountInString(m.Content)
		if n < 1 || (lim.MaxMessageLength > 0 && n > lim.MaxMessageLength) {
			return ChatRequest{}, unprocessable("messages[%d].content: must be 1..%d characters", i, lim.MaxMessageLength)
		}
		total += n
	}
	if lim.MaxTotalChars > 0 && total > lim.MaxTotalChars {
		return ChatRequest{}, unprocessable("Total payload too large: %d chars (max %d)", total, lim.MaxTotalChars)
	}
	if o := req.Options; o != nil && len(o.Stop) > 8 {
		return ChatRequest{}, unprocessable("options.stop: at most 8 sequences")
	}
	return req, nil
}

// itemsRule says how many messages a request may hold, for error texts.
func itemsRule(limit int) string {
	if limit <= 0 {
		return "at least 1 item"
	}
	return "1.." + strconv.Itoa(limit) + " items"
}

func jsonErrorText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: expected %s", te.Field, te.Type)
	}
	return "malformed"
}

// readBody reads at most limit bytes (0: no limit) within timeout (0: no
// deadline): a client that holds its body back keeps its chat slot for
// that long at most. The read deadline is lifted once the body is in, so
// that it does not cut the answer's stream; a body that could not be read
// closes the connection after the answer.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, *RequestError) {
	body := r.Body
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
	}
	rc := http.NewResponseController(w)
	lift := false
	if timeout > 0 {
		lift = rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	}
	b, err := io.ReadAll(body)
	if err != nil {
		// What is left of the body must not be read: net/http drains it
		// before it writes the answer and again when it closes the body,
		// and a client holding its body back would hold the answer and
		// the connection with it. The deadline stays, and the connection
		// is closed after the answer.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, &RequestError{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("Request body too large (max %d bytes)", limit)}
		case errors.As(err, &ne) && ne.Timeout():
			return nil, &RequestError{Status: http.StatusRequestTimeout, Detail: fmt.Sprintf("Request body not received within %s", timeout)}
		}
		return nil, &RequestError{Status: http.StatusBadRequest, Detail: "could not read the request body"}
	}
	if lift {
		_ = rc.SetReadDeadline(time.Time{})
	}
	w.Header().Del("Connection") // the body is in: the connection may be kept (ServeHTTP)
	return b, nil
}

// admit applies the chat checks that come before the body: the per-IP
// bucket, then the per-IP concurrency. On success the caller must call the
// returned release.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	return s.admitAs(w, r, tooMany)
}

// admitAs is admit with the dialect's own 429 writer (every chat dialect
// shares the same buckets).
func (s *Server) admitAs(w http.ResponseWriter, r *http.Request, refuse func(w http.ResponseWriter, detail string, retry time.Duration)) (release func(), ok bool) {
	ip := s.clientIP(r)
	if ok, retry := s.chatRate.Allow(ip); !ok {
		refuse(w, "Too many requests", retry)
		return nil, false
	}
	if !s.chatConc.Acquire(ip) {
		refuse(w, "Too many concurrent requests", 5*time.Second)
		return nil, false
	}
	return func() { s.chatConc.Release(ip) }, true
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	release, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer release()
	body, rerr := readBody(w, r, s.cfg.MaxBodyBytes, s.cfg.BodyTimeout)
	if rerr != nil {
		writeDetail(w, rerr.Status, rerr.Detail)
		return
	}
	req, rerr := DecodeChatRequest(body, s.limits())
	if rerr != nil {
		writeDetail(w, rerr.Status, rerr.Detail)
		return
	}
	msgs := make([]ollama.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = ollama.Message{Role: m.Role, Content: m.Content}
	}
	var opts json.RawMessage
	if req.Options != nil {
		opts, _ = json.Marshal(req.Options)
		if string(opts) == "{}" {
			opts = nil
		}
	}
	dreq := dispatch.Request{Model: wire.NormalizeModel(req.Model), Messages: msgs, Think: req.Think, Options: opts,
		MinTier: req.Trust, Digest: req.Digest}
	// v1 messages are user or assistant: the consumer's own words are the
	// user's, and the checks are every dialect's. A model no node has
	// still goes to dispatch, which finds no node: v1 counts it in
	// /metrics as a failed request and answers its 503 below.
	if ref := s.precheck(r, &dreq); ref != nil && ref.status != http.StatusNotFound {
		writeDetail(w, ref.status, ref.msg)
		return
	}
	err := s.run(w, r, "v1", req.Model, dreq, newSSE(w, req.Model).event)
	if errors.Is(err, dispatch.ErrNoNode) { // run set Retry-After for ErrBusy
		named := dreq
		named.Model = req.Model // v1's text names the model as the consumer did
		writeDetail(w, http.StatusServiceUnavailable, noNodeTextFor(err, named))
	}
}

func (s *Server) limits() Limits {
	return Limits{MaxMessages: s.cfg.MaxMessages, MaxMessageLength: s.cfg.MaxMessageLength, MaxTotalChars: s.cfg.MaxTotalChars}
}

// sse writes dispatch events as the v1 IdleClaw event stream.
type sse struct {
	out    streamOut
	prefix []byte // `data: {"id":...,"choices":[{"delta":`
	buf    []byte
}

func newSSE(w http.ResponseWriter, model string) *sse {
	p := []byte(`data: {"id":"chatcmpl-` + randomHex(6) + `","object":"chat.completion.chunk","model":`)
	p = jsonscan.AppendString(p, model, false)
	p = append(p, `,"choices":[{"delta":`...)
	return &sse{out: newStreamOut(w, "text/event-stream; charset=utf-8"), prefix: p}
}

func (e *sse) event(ev dispatch.Event) error {
	b := e.buf[:0]
	switch ev.Kind {
	case dispatch.Content:
		b = e.delta(b, `{"content":`, ev.Text, `}`)
	case dispatch.Thinking:
		b = e.delta(b, `{"content":`, ev.Text, `,"reasoning":true}`)
	case dispatch.ToolState:
		b = append(b, e.prefix...)
		b = append(b, `{"tool_call":{"name":`...)
		b = jsonscan.AppendString(b, ev.Tool, false)
		b = append(b, `,"status":`...)
		b = jsonscan.AppendString(b, ev.Status, false)
		b = append(b, `}},"index":0}]}`+"\n\n"...)
	case dispatch.KeepAlive:
		if ev.Position > 0 {
			b = append(b, ": queued position="...)
			b = strconv.AppendInt(b, int64(ev.Position), 10)
			b = append(b, "\n\n"...)
		} else {
			b = append(b, ": ping\n\n"...)
		}
	case dispatch.Failed:
		b = e.delta(b, `{"content":`, "\n\n[Error: "+ev.Text+"]", `}`)
	case dispatch.Done:
		b = append(b, e.prefix...)
		b = append(b, `{},"index":0,"finish_reason":`...)
		b = jsonscan.AppendString(b, ev.FinishReason, false)
		b = append(b, `}],"usage":`...)
		b = appendOpenAIUsage(b, ev.Usage)
		b = appendTier(b, ev.Tier)
		b = append(b, "}\n\ndata: [DONE]\n\n"...)
	}
	e.buf = b
	return e.out.write(b, ev.More)
}

func (e *sse) delta(b []byte, open, text, closing string) []byte {
	b = append(b, e.prefix...)
	b = append(b, open...)
	b = jsonscan.AppendString(b, text, false)
	b = append(b, closing...)
	return append(b, `,"index":0}]}`+"\n\n"...)
}

// appendTier adds the serving node's trust tier (ext) to a final payload.
func appendTier(b []byte, tier string) []byte {
	if tier == "" {
		return b
	}
	b = append(b, `,"trust_tier":`...)
	return jsonscan.AppendString(b, tier, false)
}
