package server

// The Ollama-compatible dialect under /ollama: POST /api/chat and
// /api/generate (NDJSON streams by default, or one JSON object with
// "stream": false), and the reads /api/tags, /api/show, /api/ps and
// /api/version, so that an Ollama client configured with host
// http://router/ollama works unchanged. It emulates Ollama's API as of
// ollamaVersion.

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/jsonscan"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// ollamaVersion is the version of Ollama's API this dialect emulates,
// reported by /ollama/api/version.
const ollamaVersion = "0.9.6"

// OllamaRequest is a decoded and validated /api/chat or /api/generate body.
type OllamaRequest struct {
	Chat   dispatch.Request // what the dispatcher runs (model normalized)
	Model  string           // the model as the consumer named it, echoed in answers
	Stream bool             // default true
	// Load is set for a request with no conversation (no messages, no
	// prompt): Ollama loads the model and answers done_reason "load"; we
	// answer the same without dispatching anything.
	Load bool
}

type ollamaBody struct {
	Model    string          `json:"model"`
	Messages []ollamaMessage `json:"messages"`
	Prompt   string          `json:"prompt"`
	System   string          `json:"system"`
	Images   []string        `json:"images"`
	Stream   *bool           `json:"stream"`
	Format   json.RawMessage `json:"format"`
	Options  json.RawMessage `json:"options"`
	Think    json.RawMessage `json:"think"`
	Tools    json.RawMessage `json:"tools"`
}

type ollamaMessage struct {
	Role      string            `json:"role"`
	Content   string            `json:"content"`
	Images    []string          `json:"images"`
	ToolCalls []ollama.ToolCall `json:"tool_calls"`
	ToolName  string            `json:"tool_name"`
}

// DecodeOllamaChatRequest decodes and validates an /api/chat body against
// the limits every dialect shares. Refusals are 400s.
func DecodeOllamaChatRequest(body []byte, lim Limits) (OllamaRequest, *RequestError) {
	return decodeOllama(body, lim, false)
}

// DecodeOllamaGenerateRequest decodes and validates an /api/generate body:
// prompt (and system) become the conversation [system?, user].
func DecodeOllamaGenerateRequest(body []byte, lim Limits) (OllamaRequest, *RequestError) {
	return decodeOllama(body, lim, true)
}

func decodeOllama(body []byte, lim Limits, generate bool) (OllamaRequest, *RequestError) {
	var in ollamaBody
	if err := json.Unmarshal(body, &in); err != nil {
		return OllamaRequest{}, badRequest("invalid JSON body: %s", jsonErrorText(err))
	}
	if rerr := checkModel(in.Model); rerr != nil {
		return OllamaRequest{}, rerr
	}
	out := OllamaRequest{Model: in.Model, Stream: in.Stream == nil || *in.Stream}
	req := dispatch.Request{Model: wire.NormalizeModel(in.Model)}

	var msgs []ollama.Message
	if generate {
		if len(in.Images) > 0 {
			return OllamaRequest{}, badRequest("images are not supported")
		}
		if in.System != "" {
			msgs = append(msgs, ollama.Message{Role: "system", Content: in.System})
		}
		if in.Prompt != "" {
			msgs = append(msgs, ollama.Message{Role: "user", Content: in.Prompt})
		}
	} else {
		if lim.MaxMessages > 0 && len(in.Messages) > lim.MaxMessages {
			return OllamaRequest{}, badRequest("messages: must hold %s", itemsRule(lim.MaxMessages))
		}
		msgs = make([]ollama.Message, 0, len(in.Messages))
		for i, m := range in.Messages {
			role := strings.ToLower(m.Role)
			if !compatRoles[role] {
				return OllamaRequest{}, badRequest("messages[%d].role: must be system, user, assistant or tool", i)
			}
			if len(m.Images) > 0 {
				return OllamaRequest{}, badRequest("images are not supported")
			}
			if len(m.ToolCalls) > 0 && role != "assistant" {
				return OllamaRequest{}, badRequest("messages[%d].tool_calls: only assistant messages carry tool calls", i)
			}
			om := ollama.Message{Role: role, Content: m.Content}
			for j, tc := range m.ToolCalls {
				if !validToolName(tc.Function.Name) {
					return OllamaRequest{}, badRequest("messages[%d].tool_calls[%d].function.name: must be 1..64 characters of [a-zA-Z0-9_.-]", i, j)
				}
				args, ok := toolArguments(tc.Function.Arguments)
				if !ok || (len(tc.Function.Arguments) > 0 && tc.Function.Arguments[0] == '"') {
					return OllamaRequest{}, badRequest("messages[%d].tool_calls[%d].function.arguments: must be a JSON object", i, j)
				}
				om.ToolCalls = append(om.ToolCalls, ollama.ToolCall{Function: ollama.ToolFunction{Index: tc.Function.Index, Name: tc.Function.Name, Arguments: args}})
			}
			if role == "tool" {
				if m.ToolName != "" && !validToolName(m.ToolName) {
					return OllamaRequest{}, badRequest("messages[%d].tool_name: must be 1..64 characters of [a-zA-Z0-9_.-]", i)
				}
				om.ToolName = m.ToolName
			}
			msgs = append(msgs, om)
		}
		tools, rerr := decodeTools(in.Tools, "")
		if rerr != nil {
			return OllamaRequest{}, rerr
		}
		req.Tools = tools
	}

	if len(in.Options) > 0 && string(in.Options) != "null" {
		if !jsonObject(in.Options) {
			return OllamaRequest{}, badRequest("options: must be an object")
		}
		var opts compatOptions
		if err := json.Unmarshal(in.Options, &opts); err != nil {
			return OllamaRequest{}, badRequest("options: %s", jsonErrorText(err))
		}
		if rerr := opts.check(); rerr != nil {
			return OllamaRequest{}, rerr
		}
		req.Options = opts.raw()
	}
	format, rerr := ollamaFormat(in.Format)
	if rerr != nil {
		return OllamaRequest{}, rerr
	}
	req.Format = format
	if req.Think, req.ThinkLevel, rerr = ollamaThink(in.Think); rerr != nil {
		return OllamaRequest{}, rerr
	}
	if len(msgs) == 0 {
		out.Chat, out.Load = req, true
		return out, nil
	}
	req.Messages = msgs
	if rerr := checkMessages(msgs, lim, len(req.Tools)+len(req.Format)+len(req.Options)); rerr != nil {
		return OllamaRequest{}, rerr
	}
	out.Chat = req
	return out, nil
}

// ollamaFormat reads format: absent, null or "" (none), "json", or a JSON
// schema object.
func ollamaFormat(raw json.RawMessage) (json.RawMessage, *RequestError) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		return nil, nil
	}
	if string(raw) == `"json"` {
		return raw, nil
	}
	if !jsonObject(raw) {
		return nil, badRequest(`invalid format: must be "json" or a JSON schema object`)
	}
	f, err := normalizeJSON(raw)
	if err != nil {
		return nil, badRequest("invalid format: malformed")
	}
	return f, nil
}

// ollamaThink reads think: a bool, or "low", "medium" or "high".
func ollamaThink(raw json.RawMessage) (think bool, level string, rerr *RequestError) {
	switch string(raw) {
	case "", "null", "false":
		return false, "", nil
	case "true":
		return true, "", nil
	case `"low"`, `"medium"`, `"high"`:
		return true, string(raw[1 : len(raw)-1]), nil
	}
	return false, "", badRequest(`invalid think value: must be "high", "medium", "low", true, or false`)
}

func (s *Server) handleOllamaChat(w http.ResponseWriter, r *http.Request) {
	s.handleOllamaInference(w, r, false)
}

func (s *Server) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) {
	s.handleOllamaInference(w, r, true)
}

func (s *Server) handleOllamaInference(w http.ResponseWriter, r *http.Request, generate bool) {
	release, ok := s.admitAs(w, r, ollamaTooMany)
	if !ok {
		return
	}
	defer release()
	start := s.cfg.Now()
	body, rerr := readBody(w, r, s.cfg.MaxBodyBytes, s.cfg.BodyTimeout)
	if rerr != nil {
		writeOllamaError(w, rerr.Status, rerr.Detail)
		return
	}
	req, rerr := decodeOllama(body, s.limits(), generate)
	if rerr != nil {
		writeOllamaError(w, rerr.Status, rerr.Detail)
		return
	}
	if ref := s.precheck(r, &req.Chat); ref != nil {
		if ref.status == http.StatusNotFound {
			writeOllamaError(w, http.StatusNotFound, modelNotFound(req.Model))
			return
		}
		writeOllamaError(w, ref.status, ref.msg)
		return
	}
	e := &ollamaWriter{w: w, generate: generate, now: s.cfg.Now, start: start, stream: req.Stream, buf: make([]byte, 0, 512)}
	e.head = jsonscan.AppendString(append(e.head, `{"model":`...), req.Model, false)
	e.head = append(e.head, `,"created_at":"`...)
	if req.Load {
		e.writeLoad()
		return
	}
	if req.Stream {
		e.out = newStreamOut(w, "application/x-ndjson")
	}
	err := s.run(w, r, "ollama", req.Model, req.Chat, e.event)
	switch {
	case errors.Is(err, dispatch.ErrUnavailable):
		named := req.Chat
		named.Model = req.Model
		writeOllamaError(w, http.StatusServiceUnavailable, noNodeTextFor(err, named))
	case errors.Is(err, dispatch.ErrNoNode):
		writeOllamaError(w, http.StatusServiceUnavailable, "server busy, please try again. no node is free to serve model "+req.Model)
	case errors.Is(err, errTooLargeAnswer) && !req.Stream:
		writeOllamaError(w, http.StatusBadGateway, errTooLargeAnswer.Error())
	case err != nil || req.Stream: // the consumer went away, or the stream is written
	case e.done.FinishReason == "error":
		writeOllamaError(w, failedStatus(w, e.failure), e.failed)
	default:
		w.Header().Set("Cache-Control", "no-store")
		writeOllamaJSON(w, http.StatusOK, e.appendWhole(e.buf[:0]))
	}
}

// ollamaWriter writes dispatch events as Ollama's NDJSON lines, one line
// per event flushed at once (unless Event.More says another follows
// immediately), or gathers them into one answer. It is on the per-token
// path: lines are appended into one reused buffer.
type ollamaWriter struct {
	w        http.ResponseWriter
	out      streamOut // used when streaming
	head     []byte    // `{"model":"m","created_at":"`
	generate bool
	stream   bool
	now      func() time.Time
	buf      []byte
	calls    int    // tool calls written so far: the next call's index
	failed   string // the Failed text, written when Done says "error"
	failure  dispatch.Failure

	start, first time.Time // request arrival; first token, thinking or tool call

	// Gathered for a non-streamed answer, bounded in bytes.
	size              collectBound
	content, thinking strings.Builder
	toolCalls         []ollama.ToolCall
	done              dispatch.Event
}

func (e *ollamaWriter) event(ev dispatch.Event) error {
	if !e.stream {
		if err := e.size.add(ev); err != nil {
			return err
		}
	}
	switch ev.Kind {
	case dispatch.Content, dispatch.Thinking, dispatch.ToolCalls:
		if e.first.IsZero() {
			e.first = e.now()
		}
	case dispatch.Failed:
		e.failed, e.failure = ev.Text, ev.Failure
		return nil
	case dispatch.Done:
		e.done = ev
	}
	if !e.stream {
		switch ev.Kind {
		case dispatch.Content:
			e.content.WriteString(ev.Text)
		case dispatch.Thinking:
			e.thinking.WriteString(ev.Text)
		case dispatch.ToolCalls:
			e.toolCalls = append(e.toolCalls, ev.Calls...)
		}
		return nil
	}
	b := e.buf[:0]
	switch ev.Kind {
	case dispatch.Content:
		b = e.line(b)
		b = jsonscan.AppendString(b, ev.Text, false)
		b = e.lineEnd(b)
	case dispatch.Thinking:
		b = e.line(b)
		b = append(b, `"","thinking":`...)
		b = jsonscan.AppendString(b, ev.Text, false)
		b = e.lineEnd(b)
	case dispatch.ToolCalls:
		if e.generate {
			return nil
		}
		b = e.line(b)
		b = append(b, `"","tool_calls":`...)
		b = e.appendToolCalls(b, ev.Calls)
		b = e.lineEnd(b)
	case dispatch.KeepAlive:
		// NDJSON has no comment line: an empty chunk keeps proxies from
		// timing the stream out and is harmless to every client; while
		// the request waits for a node it names its place in the queue
		// (ext: queue_position, which Ollama's clients ignore).
		b = e.line(b)
		b = append(b, `""`...)
		b = e.lineEnd(b)
		if ev.Position > 0 {
			b = b[:len(b)-len("}\n")]
			b = append(b, `,"queue_position":`...)
			b = strconv.AppendInt(b, int64(ev.Position), 10)
			b = append(b, "}\n"...)
		}
	case dispatch.Done:
		if ev.FinishReason == "error" {
			b = append(b, `{"error":`...)
			b = jsonscan.AppendString(b, cmpOr(e.failed, "the request failed"), false)
			b = append(b, "}\n"...)
			break
		}
		b = e.line(b)
		b = append(b, `""`...)
		b = e.appendFinal(b)
	default: // server-side tool progress has no place in Ollama's format
		return nil
	}
	e.buf = b
	return e.out.write(b, ev.More)
}

// line starts a line up to the value of content (chat) or response
// (generate).
func (e *ollamaWriter) line(b []byte) []byte {
	b = append(b, e.head...)
	b = e.now().UTC().AppendFormat(b, time.RFC3339Nano)
	if e.generate {
		return append(b, `","response":`...)
	}
	return append(b, `","message":{"role":"assistant","content":`...)
}

func (e *ollamaWriter) lineEnd(b []byte) []byte {
	if e.generate {
		return append(b, `,"done":false}`+"\n"...)
	}
	return append(b, `},"done":false}`+"\n"...)
}

func (e *ollamaWriter) appendToolCalls(b []byte, calls []ollama.ToolCall) []byte {
	b = append(b, '[')
	for i, c := range calls {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"function":{"index":`...)
		b = strconv.AppendInt(b, int64(e.calls), 10)
		e.calls++
		b = append(b, `,"name":`...)
		b = jsonscan.AppendString(b, c.Function.Name, false)
		b = append(b, `,"arguments":`...)
		args := c.Function.Arguments
		if len(args) == 0 {
			args = json.RawMessage("{}")
		}
		b = appendCompactJSON(b, args)
		b = append(b, "}}"...)
	}
	return append(b, ']')
}

// appendFinal ends the last line (after the content or response value)
// with done_reason and the metrics. Token counts are the node's; the
// durations are measured at the router: prompt_eval_duration from the
// request's arrival to its first token, eval_duration from there to the
// end, total_duration the whole; load_duration is not known here (0).
func (e *ollamaWriter) appendFinal(b []byte) []byte {
	reason := e.done.FinishReason
	if reason == "tool_calls" || reason == "" {
		reason = "stop"
	}
	end := e.now()
	first := e.first
	if first.IsZero() {
		first = end
	}
	if e.generate {
		b = append(b, `,"done":true,"done_reason":`...)
		b = jsonscan.AppendString(b, reason, false)
	} else {
		b = append(b, `},"done_reason":`...)
		b = jsonscan.AppendString(b, reason, false)
		b = append(b, `,"done":true`...)
	}
	b = append(b, `,"total_duration":`...)
	b = strconv.AppendInt(b, max(0, int64(end.Sub(e.start))), 10)
	b = append(b, `,"load_duration":0`...)
	if e.done.Usage.PromptKnown { // else left out, as Ollama leaves out what it has not counted
		b = append(b, `,"prompt_eval_count":`...)
		b = strconv.AppendInt(b, int64(e.done.Usage.PromptTokens), 10)
	}
	b = append(b, `,"prompt_eval_duration":`...)
	b = strconv.AppendInt(b, max(0, int64(first.Sub(e.start))), 10)
	b = append(b, `,"eval_count":`...)
	b = strconv.AppendInt(b, int64(e.done.Usage.CompletionTokens), 10)
	b = append(b, `,"eval_duration":`...)
	b = strconv.AppendInt(b, max(1, int64(end.Sub(first))), 10)
	b = appendTier(b, e.done.Tier)
	return append(b, "}\n"...)
}

// appendWhole is the non-streamed answer: one object with everything.
func (e *ollamaWriter) appendWhole(b []byte) []byte {
	b = e.line(b)
	b = jsonscan.AppendString(b, e.content.String(), false)
	if e.thinking.Len() > 0 {
		b = append(b, `,"thinking":`...)
		b = jsonscan.AppendString(b, e.thinking.String(), false)
	}
	if len(e.toolCalls) > 0 && !e.generate {
		b = append(b, `,"tool_calls":`...)
		b = e.appendToolCalls(b, e.toolCalls)
	}
	return e.appendFinal(b)
}

// writeLoad answers a request without a conversation as Ollama does after
// loading the model.
func (e *ollamaWriter) writeLoad() {
	b := e.line(e.buf[:0])
	b = append(b, `""`...)
	if e.generate {
		b = append(b, `,"done":true,"done_reason":"load"}`+"\n"...)
	} else {
		b = append(b, `},"done_reason":"load","done":true}`+"\n"...)
	}
	writeOllamaJSON(e.w, http.StatusOK, b)
}

func writeOllamaError(w http.ResponseWriter, status int, msg string) {
	b := jsonscan.AppendString([]byte(`{"error":`), msg, false)
	writeOllamaJSON(w, status, append(b, "}\n"...))
}

// writeOllamaJSON writes a JSON answer as Ollama (gin) does; v is either
// the encoded body or a value to encode.
func writeOllamaJSON(w http.ResponseWriter, status int, v any) {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
		}
		b = append(b, '\n')
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func ollamaTooMany(w http.ResponseWriter, detail string, retry time.Duration) {
	setRetryAfter(w, retry)
	writeOllamaError(w, http.StatusTooManyRequests, detail)
}

func handleOllamaRoot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("Ollama is running"))
}

func (s *Server) handleOllamaVersion(w http.ResponseWriter, r *http.Request) {
	writeOllamaJSON(w, http.StatusOK, []byte(`{"version":"`+ollamaVersion+`"}`+"\n"))
}

// ollamaDetails is what the nodes reported of a model, in Ollama's shape.
// Nodes run Ollama, whose models are GGUF files.
func ollamaDetails(m wire.Model) ollama.ModelDetails {
	d := ollama.ModelDetails{Format: "gguf", Family: m.Family, ParameterSize: m.ParameterSize, QuantizationLevel: m.Quantization}
	if m.Family != "" {
		d.Families = []string{m.Family}
	}
	return d
}

// handleOllamaTags lists every model of a registered node (what the
// network has "pulled"), busy or not. modified_at is not reported by nodes:
// it is the router's start time.
func (s *Server) handleOllamaTags(w http.ResponseWriter, r *http.Request) {
	models := s.models(true)
	out := make([]ollama.TagsModel, 0, len(models))
	for _, m := range models {
		out = append(out, ollama.TagsModel{Name: m.Name, Model: m.Name, ModifiedAt: s.started.UTC().Truncate(time.Second),
			Size: m.Size, Digest: m.Digest, Details: ollamaDetails(m.Model)})
	}
	writeOllamaJSON(w, http.StatusOK, ollama.TagsResponse{Models: out})
}

type ollamaShow struct {
	Details      ollama.ModelDetails `json:"details"`
	ModelInfo    map[string]any      `json:"model_info,omitempty"`
	Capabilities []string            `json:"capabilities"`
	ModifiedAt   time.Time           `json:"modified_at"`
}

func (s *Server) handleOllamaShow(w http.ResponseWriter, r *http.Request) {
	body, rerr := readBody(w, r, 64<<10, s.cfg.BodyTimeout)
	if rerr != nil {
		writeOllamaError(w, rerr.Status, rerr.Detail)
		return
	}
	var in struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeOllamaError(w, http.StatusBadRequest, "invalid JSON body: "+jsonErrorText(err))
		return
	}
	name := cmpOr(in.Model, in.Name)
	if name == "" {
		writeOllamaError(w, http.StatusBadRequest, "model is required")
		return
	}
	var m hub.ModelInfo
	found := false
	if wire.ValidModelName(name) {
		m, found = s.modelInfo(wire.NormalizeModel(name))
	}
	if !found {
		writeOllamaError(w, http.StatusNotFound, modelNotFound(name))
		return
	}
	// Ollama's own CLI (`ollama show`) reads these four keys without
	// checking them, so all four are given when the family is known; what
	// the nodes did not report is 0. parameter_count is derived from
	// parameter_size ("751.63M"), itself Ollama's rounding of the count.
	var info map[string]any
	if m.Family != "" {
		info = map[string]any{
			"general.architecture":         m.Family,
			"general.parameter_count":      parameterCount(m.ParameterSize),
			m.Family + ".context_length":   m.ContextLength,
			m.Family + ".embedding_length": 0,
		}
	}
	caps := m.Capabilities
	if len(caps) == 0 {
		caps = []string{"completion"}
		if m.Tools {
			caps = append(caps, "tools")
		}
		if m.Thinking {
			caps = append(caps, "thinking")
		}
	}
	writeOllamaJSON(w, http.StatusOK, ollamaShow{Details: ollamaDetails(m.Model), ModelInfo: info, Capabilities: caps,
		ModifiedAt: s.started.UTC().Truncate(time.Second)})
}

type ollamaPSModel struct {
	Name          string              `json:"name"`
	Model         string              `json:"model"`
	Size          int64               `json:"size"`
	Digest        string              `json:"digest"`
	Details       ollama.ModelDetails `json:"details"`
	ExpiresAt     time.Time           `json:"expires_at"`
	SizeVRAM      int64               `json:"size_vram"`
	ContextLength int                 `json:"context_length"`
}

// psKeepAlive is how long /api/ps says a loaded model stays loaded: nodes
// do not report when their Ollama unloads it, and a node keeps a model
// loaded at most its --max-keep-alive (5 minutes by default, Ollama's own
// default) after a request.
const psKeepAlive = 5 * time.Minute

// handleOllamaPS lists the models some node of the network reported
// loaded in memory.
// Nodes report neither expiry nor VRAM use: expires_at is now plus
// psKeepAlive, size_vram 0. Ollama's CLI prints expires_at ("4 minutes
// from now"); the zero time read as long ago.
func (s *Server) handleOllamaPS(w http.ResponseWriter, r *http.Request) {
	out := []ollamaPSModel{}
	expires := s.cfg.Now().Add(psKeepAlive).UTC().Truncate(time.Second)
	for _, m := range s.models(true) {
		if m.Loaded {
			out = append(out, ollamaPSModel{Name: m.Name, Model: m.Name, Size: m.Size, Digest: m.Digest,
				Details: ollamaDetails(m.Model), ExpiresAt: expires, ContextLength: m.ContextLength})
		}
	}
	writeOllamaJSON(w, http.StatusOK, map[string]any{"models": out})
}

// parameterCount turns Ollama's parameter_size ("260K", "751.63M", "8.0B")
// back into a count, or 0.
func parameterCount(size string) int64 {
	size = strings.TrimSpace(strings.ToUpper(size))
	mult := 1.0
	if n := len(size); n > 0 {
		switch size[n-1] {
		case 'K':
			mult = 1e3
		case 'M':
			mult = 1e6
		case 'B':
			mult = 1e9
		case 'T':
			mult = 1e12
		}
		if mult != 1 {
			size = size[:n-1]
		}
	}
	f, err := strconv.ParseFloat(size, 64)
	if err != nil || f < 0 || f*mult > 1e15 {
		return 0
	}
	return int64(f*mult + 0.5)
}

// modelNotFound is Ollama's text for a model it does not have; `ollama run`
// prints it as it is.
func modelNotFound(name string) string {
	return `model "` + truncateName(name) + `" not found`
}

// truncateName bounds a consumer-given name echoed in an error.
func truncateName(name string) string {
	if len(name) > 2*wire.MaxModelName {
		return strings.ToValidUTF8(name[:2*wire.MaxModelName], "") + "…"
	}
	return name
}

// handleOllamaPull answers a pull, which the network cannot do: its models
// are the ones its nodes have. `ollama run` pulls a model /api/show does
// not know and prints this error, so it names the model.
func (s *Server) handleOllamaPull(w http.ResponseWriter, r *http.Request) {
	body, rerr := readBody(w, r, 64<<10, s.cfg.BodyTimeout)
	if rerr != nil {
		writeOllamaError(w, rerr.Status, rerr.Detail)
		return
	}
	var in struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	_ = json.Unmarshal(body, &in) // a body that does not name a model gets the plain statement
	msg := notDone("pull") + ": it serves the models its nodes have (GET /ollama/api/tags lists them)"
	if name := cmpOr(in.Model, in.Name); name != "" {
		msg = modelNotFound(name) + " on the IdleClaw network, and " + msg
	}
	writeOllamaError(w, http.StatusNotFound, msg)
}

// ollamaUnsupported are the Ollama API routes the network does not offer,
// each answered with a plain statement (the first path element after
// /ollama/api/).
var ollamaUnsupported = map[string]bool{
	"pull": true, "push": true, "embed": true, "embeddings": true, "delete": true,
	"copy": true, "create": true, "blobs": true,
}

func notDone(op string) string { return "the IdleClaw network does not do " + op }

// handleOllamaUnknown answers every other /ollama route in Ollama's error
// shape, {"error": ...} with 404, so that Ollama clients print the reason.
func handleOllamaUnknown(w http.ResponseWriter, r *http.Request) {
	rest, isAPI := strings.CutPrefix(r.URL.Path, "/ollama/api/")
	op, _, _ := strings.Cut(rest, "/")
	if isAPI && ollamaUnsupported[op] {
		writeOllamaError(w, http.StatusNotFound, notDone(op))
		return
	}
	path := r.URL.Path
	if len(path) > 200 {
		path = strings.ToValidUTF8(path[:200], "") + "…"
	}
	writeOllamaError(w, http.StatusNotFound, "the IdleClaw network's Ollama API has no "+r.Method+" "+path+
		" (it has /api/chat, /api/generate, /api/tags, /api/show, /api/ps and /api/version)")
}
