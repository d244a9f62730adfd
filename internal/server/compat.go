package server

// What the drop-in dialects (openai.go, ollamaapi.go) share: their routes,
// the validation every chat request gets whatever its shape (the same
// limits, roles and inbound filter as /api/chat), the whitelisted sampling
// options, and the run through the one dispatch path with its metrics.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// compatRoutes registers the drop-in consumer APIs (OpenAI-compatible under
// /v1, Ollama-compatible under /ollama). Chat endpoints take the chat
// bucket and the per-IP stream limit (admitAs); reads take the default
// bucket (limitedAs).
func (s *Server) compatRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/chat/completions", s.handleOpenAIChat)
	mux.Handle("GET /v1/models", s.limitedAs(openAITooMany, s.handleOpenAIModels))
	mux.Handle("GET /v1/models/{model...}", s.limitedAs(openAITooMany, s.handleOpenAIModel))
	mux.Handle("/v1/", s.limitedAs(openAITooMany, func(w http.ResponseWriter, r *http.Request) {
		writeOpenAIError(w, http.StatusNotFound, "Unknown endpoint "+r.Method+" "+r.URL.Path, "")
	}))

	mux.HandleFunc("POST /ollama/api/chat", s.handleOllamaChat)
	mux.HandleFunc("POST /ollama/api/generate", s.handleOllamaGenerate)
	mux.Handle("GET /ollama/api/tags", s.limitedAs(ollamaTooMany, s.handleOllamaTags))
	mux.Handle("POST /ollama/api/show", s.limitedAs(ollamaTooMany, s.handleOllamaShow))
	mux.Handle("GET /ollama/api/ps", s.limitedAs(ollamaTooMany, s.handleOllamaPS))
	mux.Handle("GET /ollama/api/version", s.limitedAs(ollamaTooMany, s.handleOllamaVersion))
	mux.Handle("GET /ollama/{$}", s.limitedAs(ollamaTooMany, handleOllamaRoot))
	mux.Handle("GET /ollama", s.limitedAs(ollamaTooMany, handleOllamaRoot))
	mux.Handle("POST /ollama/api/pull", s.limitedAs(ollamaTooMany, s.handleOllamaPull))
	mux.Handle("/ollama/", s.limitedAs(ollamaTooMany, handleOllamaUnknown))
}

// maxCompatExtraBytes bounds what a compat request carries besides message
// text, as the node will receive it (compacted, HTML-escaped JSON): tools,
// format, options, tool calls and tool names. With 100,000 characters of
// text (at most 6 bytes each once escaped) the request still fits in one
// node frame (wire.MaxFrameBytes).
const maxCompatExtraBytes = 256 << 10

// msgOverhead is what the framing of one message or tool call adds to the
// node frame at most (keys, quotes, an index), counted in the extras.
const msgOverhead = 64

// maxStop bounds the stop sequences of a request (as the v1 options do).
const maxStop = 8

// maxTools bounds the tools of one request (OpenAI allows 128).
const maxTools = 128

// compatOptions are the Ollama options a compat consumer may set; every
// other key is dropped.
type compatOptions struct {
	Temperature      *float64 `json:"temperature,omitempty"`
	TopP             *float64 `json:"top_p,omitempty"`
	TopK             *int     `json:"top_k,omitempty"`
	MinP             *float64 `json:"min_p,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	NumPredict       *int     `json:"num_predict,omitempty"`
	Stop             []string `json:"stop,omitempty"`
	RepeatPenalty    *float64 `json:"repeat_penalty,omitempty"`
	PresencePenalty  *float64 `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	NumCtx           *int     `json:"num_ctx,omitempty"`
}

// maxNumCtx bounds num_ctx: a consumer must not make a volunteer's machine
// allocate an arbitrarily large context.
const maxNumCtx = 131072

func (o *compatOptions) check() *RequestError {
	if len(o.Stop) > maxStop {
		return badRequest("stop: at most %d sequences", maxStop)
	}
	for _, s := range o.Stop {
		if s == "" || utf8.RuneCountInString(s) > 256 {
			return badRequest("stop: each sequence must be 1..256 characters")
		}
	}
	if o.NumCtx != nil && (*o.NumCtx < 1 || *o.NumCtx > maxNumCtx) {
		return badRequest("num_ctx: must be 1..%d", maxNumCtx)
	}
	if o.NumPredict != nil && *o.NumPredict < -2 {
		return badRequest("num_predict: must be -2, -1 or a positive count")
	}
	return nil
}

// raw returns the options as JSON, or nil when none is set.
func (o *compatOptions) raw() json.RawMessage {
	b, _ := json.Marshal(o)
	if string(b) == "{}" {
		return nil
	}
	return b
}

func badRequest(format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Detail: fmt.Sprintf(format, args...)}
}

// checkModel checks a consumer's model name.
func checkModel(name string) *RequestError {
	if name == "" {
		return badRequest("model is required")
	}
	if !wire.ValidModelName(name) {
		return badRequest("model: must be 1..%d characters of [a-zA-Z0-9._:/-]", wire.MaxModelName)
	}
	return nil
}

// compatRoles are the roles a compat request may carry.
var compatRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// checkMessages applies the limits of protocol §3 to a translated
// conversation: 1..MaxMessages messages, each at most MaxMessageLength
// characters (code points), at most MaxTotalChars in all, known roles, and
// the extras budget (tool calls and tool names, added to extra).
func checkMessages(msgs []ollama.Message, lim Limits, extra int) *RequestError {
	if len(msgs) < 1 || (lim.MaxMessages > 0 && len(msgs) > lim.MaxMessages) {
		return badRequest("messages: must hold %s", itemsRule(lim.MaxMessages))
	}
	total := 0
	for i, m := range msgs {
		if !compatRoles[m.Role] {
			return badRequest("messages[%d].role: must be system, user, assistant or tool", i)
		}
		n := utf8.RuneCountInString(m.Content)
		if lim.MaxMessageLength > 0 && n > lim.MaxMessageLength {
			return badRequest("messages[%d].content: at most %d characters", i, lim.MaxMessageLength)
		}
		total += n
		extra += msgOverhead + len(m.ToolName)
		for _, tc := range m.ToolCalls {
			extra += msgOverhead + len(tc.ID) + len(tc.Function.Name) + len(tc.Function.Arguments)
		}
	}
	if lim.MaxTotalChars > 0 && total > lim.MaxTotalChars {
		return badRequest("Total payload too large: %d chars (max %d)", total, lim.MaxTotalChars)
	}
	if extra > maxCompatExtraBytes {
		return badRequest("tools, format, options and tool calls exceed %d bytes", maxCompatExtraBytes)
	}
	return nil
}

// normalizeJSON returns raw compacted and HTML-escaped, the form the node
// frame will carry it in (so the extras budget measures the real size).
func normalizeJSON(raw json.RawMessage) (json.RawMessage, error) {
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// jsonObject reports whether raw (valid JSON) is an object.
func jsonObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// compatTool is a function tool, in the shape both OpenAI and Ollama use.
type compatTool struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	} `json:"function"`
}

// decodeTools checks a tools array and returns it in Ollama's shape with
// unknown keys dropped (nil for none). only, when set, keeps just the tool
// of that name.
func decodeTools(raw json.RawMessage, only string) (json.RawMessage, *RequestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var tools []compatTool
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, badRequest("tools: %s", jsonErrorText(err))
	}
	if len(tools) > maxTools {
		return nil, badRequest("tools: at most %d", maxTools)
	}
	kept := tools[:0]
	found := only == ""
	for i, t := range tools {
		if t.Type != "function" || t.Function == nil {
			return nil, badRequest("tools[%d]: only function tools are supported", i)
		}
		if !validToolName(t.Function.Name) {
			return nil, badRequest("tools[%d].function.name: must be 1..64 characters of [a-zA-Z0-9_.-]", i)
		}
		if p := t.Function.Parameters; len(p) > 0 && string(p) != "null" && !jsonObject(p) {
			return nil, badRequest("tools[%d].function.parameters: must be an object", i)
		}
		if string(t.Function.Parameters) == "null" {
			t.Function.Parameters = nil
		}
		if only != "" && t.Function.Name != only {
			continue
		}
		found = true
		kept = append(kept, t)
	}
	if !found {
		return nil, badRequest("tool_choice: no tool named %q", only)
	}
	if len(kept) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return nil, badRequest("tools: malformed")
	}
	return b, nil
}

func validToolName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// toolArguments turns tool-call arguments (a JSON object, or as OpenAI has
// them a string holding one; empty means {}) into the object Ollama takes.
func toolArguments(raw json.RawMessage) (json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		raw = bytes.TrimSpace([]byte(s))
		if len(raw) == 0 {
			raw = []byte("{}")
		}
		if !json.Valid(raw) {
			return nil, false
		}
	}
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	if !jsonObject(raw) {
		return nil, false
	}
	out, err := normalizeJSON(raw)
	return out, err == nil
}

// ownWords reports whether m is the consumer's own words (user and system
// messages), not the assistant's or tools' earlier turns: what the inbound
// filter and the classifier judge.
func ownWords(m ollama.Message) bool { return m.Role == "user" || m.Role == "system" }

// patternsOK runs the inbound content filter over the consumer's own words.
func (s *Server) patternsOK(msgs []ollama.Message) bool {
	for _, m := range msgs {
		if ownWords(m) && s.cfg.Inbound.Match(m.Content) {
			return false
		}
	}
	return true
}

// classifierAllows asks the optional classifier about the consumer's own
// words (joined by blank lines). It runs last of the checks: the call is
// remote. Without a classifier, or when it fails or takes too long, the
// answer is yes: the patterns already ran.
func (s *Server) classifierAllows(ctx context.Context, msgs []ollama.Message) bool {
	if s.cfg.Classifier == nil {
		return true
	}
	var own []string
	for _, m := range msgs {
		if ownWords(m) {
			own = append(own, m.Content)
		}
	}
	if len(own) == 0 {
		return true
	}
	ok, err := s.cfg.Classifier.Allow(ctx, filter.KindPrompt, strings.Join(own, "\n\n"))
	if err != nil {
		s.log.Warn("prompt classifier failed; the request goes on", "err", err)
		return true
	}
	return ok
}

// compatRefusal is why a validated compat request cannot be dispatched
// (after the checks every dialect shares), or nil.
type compatRefusal struct {
	status int
	msg    string
}

// Trust headers (ext): every dialect takes them; the v1 body has the
// same as fields. The answer names the tier that served it.
const (
	headerTrust  = "X-IdleClaw-Trust"  // the least trusted tier accepted: verified, trusted, ...
	headerDigest = "X-IdleClaw-Digest" // pin the model's digest
	headerTier   = "X-IdleClaw-Tier"   // in the answer: the tier of the node that served it
)

// trustOf reads a consumer's trust requirements: the body's fields, else
// the headers. It refuses values it does not know.
func trustOf(r *http.Request, trust, digest string) (minTier, pin string, rerr *RequestError) {
	if trust == "" {
		trust = r.Header.Get(headerTrust)
	}
	if digest == "" {
		digest = r.Header.Get(headerDigest)
	}
	switch trust = strings.ToLower(strings.TrimSpace(trust)); trust {
	case "", "any":
		trust = ""
	case hub.TierAnonymous, hub.TierUnverified, hub.TierVerified, hub.TierTrusted:
	default:
		return "", "", badRequest("trust: must be any, unverified, verified or trusted")
	}
	digest = strings.TrimSpace(digest)
	if digest != "" && !validDigest(digest) {
		return "", "", badRequest("digest: must be 1..64 hex digits, optionally after sha256:")
	}
	return trust, digest, nil
}

func validDigest(d string) bool {
	d = strings.TrimPrefix(d, "sha256:")
	if d == "" || len(d) > 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// precheck applies the checks after decoding: the trust requirements
// (400), inbound patterns (400), a model no node has (404), a draining
// router (503), the classifier (400).
func (s *Server) precheck(r *http.Request, req *dispatch.Request) *compatRefusal {
	ctx := r.Context()
	minTier, digest, rerr := trustOf(r, req.MinTier, req.Digest)
	if rerr != nil {
		return &compatRefusal{rerr.Status, rerr.Detail}
	}
	req.MinTier, req.Digest = minTier, digest
	if !s.patternsOK(req.Messages) {
		return &compatRefusal{http.StatusBadRequest, "Message content not allowed"}
	}
	if !s.knownModel(req.Model) {
		return &compatRefusal{status: http.StatusNotFound}
	}
	if s.draining.Load() {
		return &compatRefusal{http.StatusServiceUnavailable, "Router is shutting down"}
	}
	if !s.classifierAllows(ctx, req.Messages) {
		return &compatRefusal{http.StatusBadRequest, "Message content not allowed"}
	}
	return nil
}

// noNodeTextFor is the consumer's reason for a refusal before the stream
// began (err matches dispatch.ErrNoNode). The v1 texts begin as v1
// routers word them; the rest says why, and what the request asked for
// (a trust tier, a digest) when that is what no node met.
func noNodeTextFor(err error, req dispatch.Request) string {
	model := req.Model
	if errors.Is(err, dispatch.ErrNoNode) && !errors.Is(err, dispatch.ErrBusy) && (req.MinTier != "" || req.Digest != "") {
		want := ""
		if req.MinTier != "" {
			want = " of trust tier " + req.MinTier + " or better"
		}
		if req.Digest != "" {
			want += " with digest " + req.Digest
		}
		return "No nodes available with model " + model + want
	}
	switch {
	case errors.Is(err, dispatch.ErrBusy):
		return "All nodes with model " + model + " are busy; retry shortly"
	case errors.Is(err, dispatch.ErrUnavailable):
		return "No nodes available with model " + model + ": the nodes that serve it are not taking requests now (paused, draining, or failing)"
	}
	return "No nodes available with model " + model
}

// maxCollectBytes bounds what a non-streamed answer gathers before it is
// written, whatever the response limits (which an operator may turn off).
const maxCollectBytes = 8 << 20

// errTooLargeAnswer ends a non-streamed answer that outgrew maxCollectBytes.
var errTooLargeAnswer = errors.New("the answer is too large to return in one piece; ask for a stream")

// collectBound counts what a non-streamed answer gathers.
type collectBound struct{ n int }

// add counts ev; past maxCollectBytes it fails, which ends the request
// (the dispatcher cancels the node's work) with errTooLargeAnswer.
func (c *collectBound) add(ev dispatch.Event) error {
	c.n += len(ev.Text)
	for _, tc := range ev.Calls {
		c.n += 64 + len(tc.Function.Name) + len(tc.Function.Arguments)
	}
	if c.n > maxCollectBytes {
		return errTooLargeAnswer
	}
	return nil
}

// tierHeader sets the answer's X-IdleClaw-Tier from the first event that
// names the serving node's tier. A stream whose headers went out before
// (a queue position, a keep-alive) names it in its final event only.
func tierHeader(w http.ResponseWriter, emit func(dispatch.Event) error) func(dispatch.Event) error {
	set := false
	return func(ev dispatch.Event) error {
		if !set && ev.Tier != "" {
			w.Header().Set(headerTier, ev.Tier)
			set = true
		}
		return emit(ev)
	}
}

// run sends req down the one dispatch path and counts it.
// When it returns ErrNoNode (ErrBusy, ErrUnavailable) nothing was
// written; for ErrBusy and ErrUnavailable Retry-After is set, and the
// caller writes its dialect's 503.
func (s *Server) run(w http.ResponseWriter, r *http.Request, dialect, model string, req dispatch.Request, emit func(dispatch.Event) error) error {
	end := s.metrics.begin(dialect)
	req.ClientIP = s.clientIP(r)
	emit = tierHeader(w, emit)
	emit, stop := s.bounded(w, emit)
	defer stop()
	res, err := s.chat(r.Context(), req, emit)
	switch {
	case errors.Is(err, dispatch.ErrNoNode):
		if errors.Is(err, dispatch.ErrBusy) || errors.Is(err, dispatch.ErrUnavailable) {
			setRetryAfter(w, dispatch.RetryAfter)
		}
		end(res.Outcome, 0, 0)
	case err != nil:
		res.Outcome = "canceled"
		end(res.Outcome, res.Tokens, res.FirstToken)
	default:
		end(res.Outcome, res.Tokens, res.FirstToken)
	}
	// One line per request, whatever its end (never prompt or answer
	// text). tokens is what was relayed.
	s.log.Info("chat", "dialect", dialect, "model", wire.NormalizeModel(model), "outcome", res.Outcome, "tokens", res.Tokens,
		"first_token_ms", res.FirstToken.Milliseconds())
	return err
}

// failedStatus is the HTTP status for a non-streamed answer that failed
// after dispatch began: 504 for the time limit, 503 for what a retry may
// fix (with Retry-After set on w, as for a refusal: a request that waited
// in the queue in vain ends here), 502 otherwise.
func failedStatus(w http.ResponseWriter, kind dispatch.Failure) int {
	switch kind {
	case dispatch.FailTimeout:
		return http.StatusGatewayTimeout
	case dispatch.FailRetry:
		setRetryAfter(w, dispatch.RetryAfter)
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// randomHex returns 2n random hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// appendCompactJSON appends raw (valid JSON) without insignificant
// whitespace, so it can sit on one NDJSON or SSE line.
func appendCompactJSON(b []byte, raw json.RawMessage) []byte {
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return append(b, "{}"...)
	}
	return buf.Bytes()
}
