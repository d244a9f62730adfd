package server

// The OpenAI-compatible dialect: POST /v1/chat/completions (streamed as
// server-sent events, or one JSON body) and GET /v1/models, so that OpenAI
// SDKs with base_url http://router/v1 work unchanged. Requests are
// translated into one dispatch.Request; the dispatcher's events are written
// in OpenAI's chunk format.

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/jsonscan"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// openAIFingerprint is the system_fingerprint of every answer.
const openAIFingerprint = "fp_idleclaw"

// OpenAIRequest is a decoded and validated /v1/chat/completions body.
type OpenAIRequest struct {
	Chat         dispatch.Request // what the dispatcher runs (model normalized)
	Model        string           // the model as the consumer named it, echoed in answers
	Stream       bool
	IncludeUsage bool // stream_options.include_usage
}

type openAIBody struct {
	Model         string          `json:"model"`
	Messages      []openAIMessage `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	PresencePenalty     *float64        `json:"presence_penalty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	ResponseFormat      *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	ReasoningEffort *string         `json:"reasoning_effort"`
	Tools           json.RawMessage `json:"tools"`
	ToolChoice      json.RawMessage `json:"tool_choice"`
	N               *int            `json:"n"`
}

type openAIMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  []openAIToolUse `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

type openAIToolUse struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// DecodeOpenAIRequest decodes and validates a /v1/chat/completions body
// against the limits every dialect shares. Refusals are 400s.
func DecodeOpenAIRequest(body []byte, lim Limits) (OpenAIRequest, *RequestError) {
	var in openAIBody
	if err := json.Unmarshal(body, &in); err != nil {
		return OpenAIRequest{}, badRequest("invalid JSON body: %s", jsonErrorText(err))
	}
	if rerr := checkModel(in.Model); rerr != nil {
		return OpenAIRequest{}, rerr
	}
	if in.N != nil && *in.N != 1 {
		return OpenAIRequest{}, badRequest("n: only 1 is supported")
	}
	if len(in.Messages) < 1 || (lim.MaxMessages > 0 && len(in.Messages) > lim.MaxMessages) {
		return OpenAIRequest{}, badRequest("messages: must hold %s", itemsRule(lim.MaxMessages))
	}
	msgs := make([]ollama.Message, 0, len(in.Messages))
	callNames := map[string]string{} // tool_call_id → function name
	for i, m := range in.Messages {
		role := m.Role
		if role == "developer" {
			role = "system"
		}
		if !compatRoles[role] {
			return OpenAIRequest{}, badRequest("messages[%d].role: must be system, developer, user, assistant or tool", i)
		}
		text, rerr := openAIContent(m.Content, i)
		if rerr != nil {
			return OpenAIRequest{}, rerr
		}
		om := ollama.Message{Role: role, Content: text}
		if len(m.ToolCalls) > 0 && role != "assistant" {
			return OpenAIRequest{}, badRequest("messages[%d].tool_calls: only assistant messages carry tool calls", i)
		}
		for j, tc := range m.ToolCalls {
			if tc.Type != "" && tc.Type != "function" {
				return OpenAIRequest{}, badRequest("messages[%d].tool_calls[%d].type: must be \"function\"", i, j)
			}
			if !validToolName(tc.Function.Name) {
				return OpenAIRequest{}, badRequest("messages[%d].tool_calls[%d].function.name: must be 1..64 characters of [a-zA-Z0-9_.-]", i, j)
			}
			args, ok := toolArguments(tc.Function.Arguments)
			if !ok {
				return OpenAIRequest{}, badRequest("messages[%d].tool_calls[%d].function.arguments: must be a JSON object encoded as a string", i, j)
			}
			om.ToolCalls = append(om.ToolCalls, ollama.ToolCall{Function: ollama.ToolFunction{Index: j, Name: tc.Function.Name, Arguments: args}})
			if tc.ID != "" {
				callNames[tc.ID] = tc.Function.Name
			}
		}
		if role == "tool" {
			om.ToolName = callNames[m.ToolCallID] // "" when the call is not in the history
		}
		msgs = append(msgs, om)
	}

	opts := compatOptions{Temperature: in.Temperature, TopP: in.TopP, Seed: in.Seed,
		PresencePenalty: in.PresencePenalty, FrequencyPenalty: in.FrequencyPenalty}
	switch {
	case in.MaxCompletionTokens != nil:
		opts.NumPredict = in.MaxCompletionTokens
	case in.MaxTokens != nil:
		opts.NumPredict = in.MaxTokens
	}
	if opts.NumPredict != nil && *opts.NumPredict < 1 {
		return OpenAIRequest{}, badRequest("max_tokens: must be at least 1")
	}
	stop, rerr := openAIStop(in.Stop)
	if rerr != nil {
		return OpenAIRequest{}, rerr
	}
	opts.Stop = stop
	if rerr := opts.check(); rerr != nil {
		return OpenAIRequest{}, rerr
	}

	req := dispatch.Request{Model: wire.NormalizeModel(in.Model), Messages: msgs, Options: opts.raw()}
	if rf := in.ResponseFormat; rf != nil {
		switch rf.Type {
		case "", "text":
		case "json_object":
			req.Format = json.RawMessage(`"json"`)
		case "json_schema":
			if rf.JSONSchema == nil || !jsonObject(rf.JSONSchema.Schema) {
				return OpenAIRequest{}, badRequest("response_format.json_schema.schema: must be an object")
			}
			f, err := normalizeJSON(rf.JSONSchema.Schema)
			if err != nil {
				return OpenAIRequest{}, badRequest("response_format.json_schema.schema: malformed")
			}
			req.Format = f
		default:
			return OpenAIRequest{}, badRequest("response_format.type: must be text, json_object or json_schema")
		}
	}
	if e := in.ReasoningEffort; e != nil {
		switch *e {
		case "", "none":
		case "minimal", "low":
			req.Think, req.ThinkLevel = true, "low"
		case "medium", "high":
			req.Think, req.ThinkLevel = true, *e
		default:
			return OpenAIRequest{}, badRequest("reasoning_effort: must be none, minimal, low, medium or high")
		}
	}
	forward, only, rerr := openAIToolChoice(in.ToolChoice)
	if rerr != nil {
		return OpenAIRequest{}, rerr
	}
	tools, rerr := decodeTools(in.Tools, only)
	if rerr != nil {
		return OpenAIRequest{}, rerr
	}
	if forward {
		req.Tools = tools
	}
	if rerr := checkMessages(msgs, lim, len(req.Tools)+len(req.Format)+len(req.Options)); rerr != nil {
		return OpenAIRequest{}, rerr
	}
	out := OpenAIRequest{Chat: req, Model: in.Model, Stream: in.Stream}
	out.IncludeUsage = in.Stream && in.StreamOptions != nil && in.StreamOptions.IncludeUsage
	return out, nil
}

// openAIContent reads a message's content: a string, null, or an array of
// {"type":"text","text":...} parts (joined with newlines).
func openAIContent(raw json.RawMessage, i int) (string, *RequestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badRequest("messages[%d].content: malformed string", i)
		}
		return s, nil
	case '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", badRequest("messages[%d].content: %s", i, jsonErrorText(err))
		}
		var b strings.Builder
		for j, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return "", badRequest("messages[%d].content[%d]: only text parts are supported", i, j)
			}
			if j > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(*p.Text)
		}
		return b.String(), nil
	}
	return "", badRequest("messages[%d].content: must be a string or an array of text parts", i)
}

// openAIStop reads stop: null, a string, or an array of strings.
func openAIStop(raw json.RawMessage) ([]string, *RequestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("stop: must be a string or an array of strings")
	}
	return list, nil
}

// openAIToolChoice reads tool_choice: whether to forward the tools at all,
// and the one tool to keep when a function is named. "required" cannot be
// enforced on Ollama; it forwards the tools as "auto" does.
func openAIToolChoice(raw json.RawMessage) (forward bool, only string, rerr *RequestError) {
	if len(raw) == 0 || string(raw) == "null" {
		return true, "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto", "required":
			return true, "", nil
		case "none":
			return false, "", nil
		}
		return false, "", badRequest("tool_choice: must be none, auto, required or a function")
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &named) != nil || named.Type != "function" || named.Function.Name == "" {
		return false, "", badRequest("tool_choice: must be none, auto, required or a function")
	}
	return true, named.Function.Name, nil
}

func (s *Server) handleOpenAIChat(w http.ResponseWriter, r *http.Request) {
	release, ok := s.admitAs(w, r, openAITooMany)
	if !ok {
		return
	}
	defer release()
	body, rerr := readBody(w, r, s.cfg.MaxBodyBytes, s.cfg.BodyTimeout)
	if rerr != nil {
		writeOpenAIError(w, rerr.Status, rerr.Detail, "")
		return
	}
	req, rerr := DecodeOpenAIRequest(body, s.limits())
	if rerr != nil {
		writeOpenAIError(w, rerr.Status, rerr.Detail, "")
		return
	}
	if ref := s.precheck(r, &req.Chat); ref != nil {
		if ref.status == http.StatusNotFound {
			writeOpenAIError(w, http.StatusNotFound, "The model '"+req.Model+"' does not exist or no node serves it", "model_not_found")
			return
		}
		writeOpenAIError(w, ref.status, ref.msg, "")
		return
	}
	id := "chatcmpl-" + randomHex(12)
	created := s.cfg.Now().Unix()
	if req.Stream {
		st := newOpenAIStream(w, id, created, req.Model, req.IncludeUsage)
		if err := s.run(w, r, "openai", req.Model, req.Chat, st.event); errors.Is(err, dispatch.ErrNoNode) {
			writeOpenAIError(w, http.StatusServiceUnavailable, openAINoNode(err, req.Chat, req.Model), "")
		}
		return
	}
	var c openAICollect
	err := s.run(w, r, "openai", req.Model, req.Chat, c.event)
	switch {
	case errors.Is(err, dispatch.ErrNoNode):
		writeOpenAIError(w, http.StatusServiceUnavailable, openAINoNode(err, req.Chat, req.Model), "")
	case errors.Is(err, errTooLargeAnswer):
		writeOpenAIError(w, http.StatusBadGateway, errTooLargeAnswer.Error(), "")
	case err != nil: // the consumer went away
	case c.done.FinishReason == "error":
		writeOpenAIError(w, failedStatus(w, c.failure), c.failed, "")
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(c.appendBody(nil, id, created, req.Model))
	}
}

// openAINoNode is the 503 text of a refusal before the answer began.
func openAINoNode(err error, req dispatch.Request, model string) string {
	named := req
	named.Model = model
	if errors.Is(err, dispatch.ErrUnavailable) || !errors.Is(err, dispatch.ErrBusy) && (req.MinTier != "" || req.Digest != "") {
		return noNodeTextFor(err, named)
	}
	return "No node is free to serve model " + model + " now; please retry"
}

func (s *Server) handleOpenAIModels(w http.ResponseWriter, r *http.Request) {
	b := []byte(`{"object":"list","data":[`)
	for i, m := range s.models(false) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOpenAIModel(b, m.Name)
	}
	b = append(b, "]}\n"...)
	writeRawJSON(w, http.StatusOK, b)
}

func (s *Server) handleOpenAIModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	if !wire.ValidModelName(name) {
		writeOpenAIError(w, http.StatusNotFound, "The model '"+name+"' does not exist", "model_not_found")
		return
	}
	m, ok := s.hub.Model(wire.NormalizeModel(name))
	if !ok {
		writeOpenAIError(w, http.StatusNotFound, "The model '"+name+"' does not exist or no node serves it", "model_not_found")
		return
	}
	writeRawJSON(w, http.StatusOK, append(appendOpenAIModel(nil, m.Name), '\n'))
}

func appendOpenAIModel(b []byte, name string) []byte {
	b = append(b, `{"id":`...)
	b = jsonscan.AppendString(b, name, false)
	return append(b, `,"object":"model","created":0,"owned_by":"idleclaw"}`...)
}

func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeOpenAIError writes OpenAI's error shape; code "" is null.
func writeOpenAIError(w http.ResponseWriter, status int, msg, code string) {
	writeRawJSON(w, status, append(appendOpenAIError(nil, status, msg, code), '\n'))
}

func appendOpenAIError(b []byte, status int, msg, code string) []byte {
	typ := "api_error"
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		typ = "invalid_request_error"
	case http.StatusNotFound:
		typ = "not_found_error"
	case http.StatusTooManyRequests:
		typ = "rate_limit_error"
	}
	b = append(b, `{"error":{"message":`...)
	b = jsonscan.AppendString(b, msg, false)
	b = append(b, `,"type":"`...)
	b = append(b, typ...)
	b = append(b, `","param":null,"code":`...)
	if code == "" {
		b = append(b, "null"...)
	} else {
		b = jsonscan.AppendString(b, code, false)
	}
	return append(b, "}}"...)
}

func openAITooMany(w http.ResponseWriter, detail string, retry time.Duration) {
	setRetryAfter(w, retry)
	writeOpenAIError(w, http.StatusTooManyRequests, detail, "")
}

// openAIStream writes dispatch events as OpenAI chat.completion.chunk
// events. It is on the per-token path: every event is appended into one
// reused buffer and flushed at once (unless Event.More says another
// follows immediately).
type openAIStream struct {
	out          streamOut
	prefix       []byte // `data: {"id":...,"choices":[`
	includeUsage bool
	buf          []byte
	roleSent     bool
	calls        int    // tool calls sent so far: the next call's index
	failed       string // the Failed text, written when Done says "error"
}

func newOpenAIStream(w http.ResponseWriter, id string, created int64, model string, includeUsage bool) *openAIStream {
	p := []byte(`data: {"id":"` + id + `","object":"chat.completion.chunk","created":`)
	p = strconv.AppendInt(p, created, 10)
	p = append(p, `,"model":`...)
	p = jsonscan.AppendString(p, model, false)
	p = append(p, `,"system_fingerprint":"`+openAIFingerprint+`","choices":[`...)
	return &openAIStream{out: newStreamOut(w, "text/event-stream; charset=utf-8"), prefix: p, includeUsage: includeUsage, buf: make([]byte, 0, 512)}
}

func (e *openAIStream) event(ev dispatch.Event) error {
	b := e.buf[:0]
	switch ev.Kind {
	case dispatch.Content:
		b = e.delta(b, `"content":`, ev.Text)
	case dispatch.Thinking:
		b = e.delta(b, `"reasoning":`, ev.Text)
	case dispatch.ToolCalls:
		b = e.open(b)
		b = append(b, `"tool_calls":[`...)
		for i, c := range ev.Calls {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(e.calls), 10)
			e.calls++
			b = append(b, ',')
			b = appendOpenAIToolCall(b, c)
		}
		b = append(b, `]},"finish_reason":null}]}`+"\n\n"...)
	case dispatch.KeepAlive:
		// SSE comments: clients skip them; ours shows the place in line.
		if ev.Position > 0 {
			b = append(b, ": queued position="...)
			b = strconv.AppendInt(b, int64(ev.Position), 10)
			b = append(b, "\n\n"...)
			break
		}
		b = append(b, ": ping\n\n"...)
	case dispatch.Failed:
		e.failed = ev.Text
		return nil
	case dispatch.Done:
		if ev.FinishReason == "error" {
			b = append(b, "data: "...)
			b = appendOpenAIError(b, http.StatusBadGateway, cmpOr(e.failed, "the request failed"), "")
			b = append(b, "\n\ndata: [DONE]\n\n"...)
			break
		}
		// A length limit of the router (Failed, then Done "length") is a
		// normal finish_reason "length" here, not an error.
		if !e.roleSent {
			b = e.delta(b, `"content":`, "")
		}
		b = append(b, e.prefix...)
		b = append(b, `{"index":0,"delta":{},"finish_reason":`...)
		b = jsonscan.AppendString(b, ev.FinishReason, false)
		b = append(b, "}]"...)
		b = appendTier(b, ev.Tier)
		b = append(b, "}\n\n"...)
		if e.includeUsage {
			b = append(b, e.prefix...)
			b = append(b, `],"usage":`...)
			b = appendOpenAIUsage(b, ev.Usage)
			b = append(b, "}\n\n"...)
		}
		b = append(b, "data: [DONE]\n\n"...)
	default: // server-side tool progress has no place in OpenAI's format
		return nil
	}
	e.buf = b
	return e.out.write(b, ev.More)
}

// open starts a chunk's delta; the first delta carries the role.
func (e *openAIStream) open(b []byte) []byte {
	b = append(b, e.prefix...)
	b = append(b, `{"index":0,"delta":{`...)
	if !e.roleSent {
		e.roleSent = true
		b = append(b, `"role":"assistant",`...)
	}
	return b
}

func (e *openAIStream) delta(b []byte, key, text string) []byte {
	b = e.open(b)
	b = append(b, key...)
	b = jsonscan.AppendString(b, text, false)
	return append(b, `},"finish_reason":null}]}`+"\n\n"...)
}

// appendOpenAIToolCall appends the keys of a tool call after its opening
// brace (and index, when streamed): a fresh id, and the arguments as a JSON
// string.
func appendOpenAIToolCall(b []byte, c ollama.ToolCall) []byte {
	b = append(b, `"id":"call_`...)
	b = append(b, randomHex(12)...)
	b = append(b, `","type":"function","function":{"name":`...)
	b = jsonscan.AppendString(b, c.Function.Name, false)
	b = append(b, `,"arguments":`...)
	args := c.Function.Arguments
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	b = jsonscan.AppendString(b, string(appendCompactJSON(nil, args)), false)
	return append(b, "}}"...)
}

// appendOpenAIUsage writes the usage object. Without a prompt count from
// the node (a v1 node strips it) prompt_tokens and total_tokens are left
// out rather than reported as a false zero.
func appendOpenAIUsage(b []byte, u dispatch.Usage) []byte {
	if !u.PromptKnown {
		b = append(b, `{"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
		return append(b, '}')
	}
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens+u.CompletionTokens), 10)
	return append(b, '}')
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// openAICollect gathers a whole answer for a non-streamed request,
// bounded in bytes (collectBound).
type openAICollect struct {
	content, reasoning strings.Builder
	calls              []ollama.ToolCall
	failed             string
	failure            dispatch.Failure
	done               dispatch.Event
	size               collectBound
}

func (c *openAICollect) event(ev dispatch.Event) error {
	if err := c.size.add(ev); err != nil {
		return err
	}
	switch ev.Kind {
	case dispatch.Content:
		c.content.WriteString(ev.Text)
	case dispatch.Thinking:
		c.reasoning.WriteString(ev.Text)
	case dispatch.ToolCalls:
		c.calls = append(c.calls, ev.Calls...)
	case dispatch.Failed:
		c.failed, c.failure = ev.Text, ev.Failure
	case dispatch.Done:
		c.done = ev
	}
	return nil
}

func (c *openAICollect) appendBody(b []byte, id string, created int64, model string) []byte {
	b = append(b, `{"id":"`+id+`","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = jsonscan.AppendString(b, model, false)
	b = append(b, `,"system_fingerprint":"`+openAIFingerprint+`","choices":[{"index":0,"message":{"role":"assistant","content":`...)
	if c.content.Len() == 0 && len(c.calls) > 0 {
		b = append(b, "null"...)
	} else {
		b = jsonscan.AppendString(b, c.content.String(), false)
	}
	if c.reasoning.Len() > 0 {
		b = append(b, `,"reasoning":`...)
		b = jsonscan.AppendString(b, c.reasoning.String(), false)
	}
	if len(c.calls) > 0 {
		b = append(b, `,"tool_calls":[`...)
		for i, tc := range c.calls {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			b = appendOpenAIToolCall(b, tc)
		}
		b = append(b, ']')
	}
	b = append(b, `},"finish_reason":`...)
	b = jsonscan.AppendString(b, c.done.FinishReason, false)
	b = append(b, `}],"usage":`...)
	b = appendOpenAIUsage(b, c.done.Usage)
	b = appendTier(b, c.done.Tier)
	return append(b, "}\n"...)
}
