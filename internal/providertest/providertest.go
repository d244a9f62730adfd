// Package providertest is a fake paid AI provider: an OpenAI-compatible
// API (POST /chat/completions streamed and not, GET /models, under any base
// path such as /v1) that answers and fails the way real providers do, byte
// for byte where it matters to a client: OpenAI's two kinds of 429
// (insufficient_quota, and rate_limit_exceeded with its x-ratelimit-*
// headers and Retry-After), billing errors, OpenRouter's and DeepSeek's
// 402, Anthropic's "credit balance is too low" 400, 5xx pages, a provider
// that never answers, and one that fails in the middle of a stream.
//
// How each chat request is answered is scripted with a [Reply], built by
// hand or by the constructors named after the real answers
// ([InsufficientQuota], [RateLimited], [PaymentRequired], ...). Every
// request is recorded. Like ollamatest, the package does not import
// testing, so a command (cmd/fakeprovider) can serve it to shell scripts.
package providertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxRequestBytes bounds a request body the fake reads.
const MaxRequestBytes = 8 << 20

// Reply says how the fake answers one chat request.
//
// With Status 0 or 200 it is an answer: Content tokens (one chunk each
// when streamed), then ToolCalls, then the final chunk, usage and [DONE];
// Cut, Stall and ErrorEvent change how a stream ends. With another Status
// it is an error answer: Header and Body exactly as given.
type Reply struct {
	Status int
	Header http.Header // extra headers of an error answer (Content-Type included)
	Body   string      // an error answer's body, as the provider sends it

	Tokens    []string
	ToolCalls []ToolCall
	Delay     time.Duration // before each content or tool-call chunk

	// Hang sends nothing, not even the status line, until the client goes
	// away or the server closes: a provider that times out.
	Hang bool
	// Cut aborts the connection after the tokens (a stream or a body cut
	// in the middle).
	Cut bool
	// Stall stops sending after the tokens and holds the connection open.
	Stall bool
	// ErrorEvent, when set, is the data of an SSE error event sent after
	// the tokens (first, when there are none), after which the stream
	// ends: the way some providers report a failure on a 200 stream.
	ErrorEvent string
}

// ToolCall is one function call of an answer.
type ToolCall struct {
	Name      string
	Arguments string // a JSON object, as a string
}

// Request is one chat request as the fake received it.
type Request struct {
	Path          string
	Authorization string
	Header        http.Header
	Body          []byte
	Model         string
	Stream        bool
	IncludeUsage  bool
	Messages      []Message
	Tools         json.RawMessage
}

// Message is one message of a request (content parts joined by newlines).
type Message struct {
	Role       string
	Content    string
	ToolCallID string
}

// Config configures a fake provider.
type Config struct {
	// Key, if set, is the only API key accepted (Authorization: Bearer
	// Key); others get OpenAI's 401 invalid_api_key.
	Key string
	// Models are the ids GET /models lists (default gpt-4o-mini, gpt-4o).
	Models []string
	// Respond answers each chat request (nil: [Echo]).
	Respond func(Request) Reply
}

// Server is a fake provider. Safe for concurrent use.
type Server struct {
	// URL is the base URL of a server made by NewServer, with /v1.
	URL string

	ts     *httptest.Server
	key    string
	models []string

	mu       sync.Mutex
	respond  func(Request) Reply
	requests []Request

	seq    atomic.Int64
	closed chan struct{}
	once   sync.Once
}

// NewServer starts a fake provider on a loopback port; its URL ends in
// /v1, as OpenAI's base URL does.
func NewServer(cfg Config) *Server {
	s := NewHandler(cfg)
	s.ts = httptest.NewServer(s)
	s.URL = s.ts.URL + "/v1"
	return s
}

// NewHandler makes a fake provider to serve on a listener of the caller's.
func NewHandler(cfg Config) *Server {
	s := &Server{key: cfg.Key, models: cfg.Models, respond: cfg.Respond, closed: make(chan struct{})}
	if len(s.models) == 0 {
		s.models = []string{"gpt-4o-mini", "gpt-4o"}
	}
	return s
}

// Close ends hanging and stalled answers and stops the server.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closed) })
	if s.ts != nil {
		s.ts.CloseClientConnections()
		s.ts.Close()
	}
}

// SetRespond replaces the responder (nil: [Echo]).
func (s *Server) SetRespond(fn func(Request) Reply) {
	s.mu.Lock()
	s.respond = fn
	s.mu.Unlock()
}

// Requests returns every chat request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count is the number of chat requests received so far.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Echo answers "Echo: " and the words of the last user message.
func Echo(req Request) Reply {
	text := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			text = req.Messages[i].Content
			break
		}
	}
	toks := []string{"Echo:"}
	for _, w := range strings.Fields(text) {
		toks = append(toks, " "+w)
	}
	return Reply{Tokens: toks}
}

// ServeHTTP serves POST .../chat/completions and GET .../models.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/chat/completions") && r.Method == http.MethodPost:
		s.chat(w, r)
	case strings.HasSuffix(r.URL.Path, "/models") && r.Method == http.MethodGet:
		s.listModels(w, r)
	default:
		writeError(w, Reply{Status: http.StatusNotFound, Header: jsonHeader(),
			Body: openAIError("Invalid URL ("+r.Method+" "+r.URL.Path+")", "invalid_request_error", "", "")})
	}
}

// authorized answers OpenAI's 401 to a request without the key.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.key != "" && r.Header.Get("Authorization") != "Bearer "+s.key {
		writeError(w, InvalidAPIKey(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
		return false
	}
	return true
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list"}
	for _, m := range s.models {
		out.Data = append(out.Data, model{ID: m, Object: "model", Created: 1721172741, OwnedBy: "system"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

type wireRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Messages []struct {
		Role       string          `json:"role"`
		Content    json.RawMessage `json:"content"`
		ToolCallID string          `json:"tool_call_id"`
	} `json:"messages"`
	Tools json.RawMessage `json:"tools"`
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil || len(body) > MaxRequestBytes {
		writeError(w, BadRequest("", "The request body could not be read."))
		return
	}
	var in wireRequest
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, BadRequest("", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"))
		return
	}
	req := Request{Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Header: r.Header.Clone(), Body: body,
		Model: in.Model, Stream: in.Stream, IncludeUsage: in.StreamOptions != nil && in.StreamOptions.IncludeUsage, Tools: in.Tools}
	for _, m := range in.Messages {
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: contentText(m.Content), ToolCallID: m.ToolCallID})
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	respond := s.respond
	s.mu.Unlock()
	if !s.authorized(w, r) {
		return
	}
	if respond == nil {
		respond = Echo
	}
	rep := respond(req)
	if rep.Hang {
		select {
		case <-r.Context().Done():
			return
		case <-s.closed:
			panic(http.ErrAbortHandler) // no answer at all, not an empty one
		}
	}
	if rep.Status != 0 && rep.Status != http.StatusOK {
		writeError(w, rep)
		return
	}
	id := fmt.Sprintf("chatcmpl-fake%06d", s.seq.Add(1))
	a := answer{s: s, w: w, r: r, rep: rep, id: id, model: in.Model, prompt: promptTokens(req.Messages)}
	if in.Stream {
		a.stream(req.IncludeUsage)
		return
	}
	a.whole()
}

// contentText reads a string content or joins text parts.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		texts = append(texts, p.Text)
	}
	return strings.Join(texts, "\n")
}

// promptTokens counts a prompt's words, the fake's idea of tokens.
func promptTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += len(strings.Fields(m.Content)) + 3
	}
	return n
}

func writeError(w http.ResponseWriter, rep Reply) {
	for k, vs := range rep.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.Header().Set("X-Request-Id", "req_fake0123456789")
	w.WriteHeader(rep.Status)
	_, _ = io.WriteString(w, rep.Body)
}

// answer writes one 200 answer.
type answer struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	rep    Reply
	id     string
	model  string
	prompt int
}

// wait sleeps Delay unless the client or the server goes away first.
func (a *answer) wait() bool {
	if a.rep.Delay <= 0 {
		return a.r.Context().Err() == nil
	}
	t := time.NewTimer(a.rep.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.r.Context().Done():
	case <-a.s.closed:
	}
	return false
}

// end cuts or stalls the answer when the reply says so; it reports
// whether the answer is over.
func (a *answer) end() bool {
	switch {
	case a.rep.Cut:
		panic(http.ErrAbortHandler) // net/http closes the connection mid-answer
	case a.rep.Stall:
		select {
		case <-a.r.Context().Done():
		case <-a.s.closed:
			panic(http.ErrAbortHandler) // the answer stays unfinished
		}
		return true
	}
	return false
}

func (a *answer) headers(contentType string) {
	h := a.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Request-Id", "req_fake0123456789")
	h.Set("Openai-Processing-Ms", "42")
	h.Set("Openai-Version", "2020-10-01")
	h.Set("X-Ratelimit-Limit-Requests", "10000")
	h.Set("X-Ratelimit-Remaining-Requests", "9999")
	h.Set("X-Ratelimit-Reset-Requests", "6ms")
	a.w.WriteHeader(http.StatusOK)
}

func (a *answer) chunk(b *bytes.Buffer, delta string, finish string) {
	fmt.Fprintf(b, `data: {"id":%q,"object":"chat.completion.chunk","created":1730000000,"model":%s,"system_fingerprint":"fp_fake","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}`+"\n\n",
		a.id, jsonString(a.model), delta, finish)
}

func (a *answer) flush(b *bytes.Buffer) bool {
	_, err := a.w.Write(b.Bytes())
	b.Reset()
	if err == nil {
		err = http.NewResponseController(a.w).Flush()
	}
	return err == nil
}

func (a *answer) stream(includeUsage bool) {
	a.headers("text/event-stream; charset=utf-8")
	var b bytes.Buffer
	if len(a.rep.Tokens)+len(a.rep.ToolCalls) > 0 || a.rep.ErrorEvent == "" {
		a.chunk(&b, `{"role":"assistant","content":"","refusal":null}`, "null")
		if !a.flush(&b) {
			return
		}
	}
	for _, t := range a.rep.Tokens {
		if !a.wait() {
			return
		}
		a.chunk(&b, `{"content":`+jsonString(t)+`}`, "null")
		if !a.flush(&b) {
			return
		}
	}
	for i, c := range a.rep.ToolCalls {
		if !a.wait() {
			return
		}
		// As OpenAI streams a call: id, type and name first, then the
		// arguments in pieces.
		a.chunk(&b, fmt.Sprintf(`{"tool_calls":[{"index":%d,"id":"call_fake%02d","type":"function","function":{"name":%s,"arguments":""}}]}`, i, i, jsonString(c.Name)), "null")
		args := c.Arguments
		for len(args) > 0 {
			n := min(len(args), 8)
			a.chunk(&b, fmt.Sprintf(`{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}`, i, jsonString(args[:n])), "null")
			args = args[n:]
		}
		if !a.flush(&b) {
			return
		}
	}
	if a.rep.ErrorEvent != "" {
		b.WriteString("data: " + a.rep.ErrorEvent + "\n\n")
		a.flush(&b)
		return
	}
	if a.end() {
		return
	}
	finish := `"stop"`
	if len(a.rep.ToolCalls) > 0 {
		finish = `"tool_calls"`
	}
	a.chunk(&b, `{}`, finish)
	if includeUsage {
		fmt.Fprintf(&b, `data: {"id":%q,"object":"chat.completion.chunk","created":1730000000,"model":%s,"system_fingerprint":"fp_fake","choices":[],"usage":%s}`+"\n\n",
			a.id, jsonString(a.model), a.usage())
	}
	b.WriteString("data: [DONE]\n\n")
	a.flush(&b)
}

func (a *answer) usage() string {
	c := len(a.rep.Tokens) + len(a.rep.ToolCalls)
	return fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, a.prompt, c, a.prompt+c)
}

func (a *answer) whole() {
	for range a.rep.Tokens {
		if !a.wait() {
			return
		}
	}
	content := jsonString(strings.Join(a.rep.Tokens, ""))
	finish := "stop"
	calls := ""
	if len(a.rep.ToolCalls) > 0 {
		finish = "tool_calls"
		if len(a.rep.Tokens) == 0 {
			content = "null"
		}
		parts := make([]string, 0, len(a.rep.ToolCalls))
		for i, c := range a.rep.ToolCalls {
			parts = append(parts, fmt.Sprintf(`{"id":"call_fake%02d","type":"function","function":{"name":%s,"arguments":%s}}`, i, jsonString(c.Name), jsonString(c.Arguments)))
		}
		calls = `,"tool_calls":[` + strings.Join(parts, ",") + `]`
	}
	body := fmt.Sprintf(`{"id":%q,"object":"chat.completion","created":1730000000,"model":%s,"choices":[{"index":0,"message":{"role":"assistant","content":%s,"refusal":null,"annotations":[]%s},"logprobs":null,"finish_reason":%q}],"usage":%s,"service_tier":"default","system_fingerprint":"fp_fake"}`+"\n",
		a.id, jsonString(a.model), content, calls, finish, a.usage())
	if a.rep.Cut || a.rep.Stall {
		a.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		a.headers("application/json")
		_, _ = io.WriteString(a.w, body[:len(body)/2])
		_ = http.NewResponseController(a.w).Flush()
		a.end()
		return
	}
	a.headers("application/json")
	_, _ = io.WriteString(a.w, body)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json; charset=utf-8"}}
}

// openAIError is OpenAI's error body; "" param and code are null.
func openAIError(msg, typ, param, code string) string {
	null := func(s string) string {
		if s == "" {
			return "null"
		}
		return jsonString(s)
	}
	return fmt.Sprintf("{\n    \"error\": {\n        \"message\": %s,\n        \"type\": %s,\n        \"param\": %s,\n        \"code\": %s\n    }\n}\n",
		jsonString(msg), jsonString(typ), null(param), null(code))
}

// InsufficientQuota is OpenAI's answer once the credit is gone: a 429 that
// retrying does not cure.
func InsufficientQuota() Reply {
	return Reply{Status: http.StatusTooManyRequests, Header: jsonHeader(), Body: openAIError(
		"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
		"insufficient_quota", "", "insufficient_quota")}
}

// RateLimited is OpenAI's requests-per-minute 429 (rate_limit_exceeded),
// whose message names the wait and whose x-ratelimit-* headers say when
// the limit resets. retryAfter, if set, is also sent as Retry-After (in
// whole seconds, rounded up) and retry-after-ms.
func RateLimited(wait time.Duration, retryAfter bool) Reply {
	h := jsonHeader()
	h.Set("X-Ratelimit-Limit-Requests", "3")
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	h.Set("X-Ratelimit-Reset-Requests", wait.String())
	h.Set("X-Ratelimit-Limit-Tokens", "40000")
	h.Set("X-Ratelimit-Remaining-Tokens", "39980")
	h.Set("X-Ratelimit-Reset-Tokens", "30ms")
	if retryAfter {
		h.Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds(), 10))
	}
	return Reply{Status: http.StatusTooManyRequests, Header: h, Body: openAIError(
		"Rate limit reached for gpt-4o-mini in organization org-fake0123456789 on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in "+tryAgainIn(wait)+". Visit https://platform.openai.com/account/rate-limits to learn more. You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing.",
		"requests", "", "rate_limit_exceeded")}
}

// TokensRateLimited is OpenAI's tokens-per-minute 429, with only the
// message to say how long to wait.
func TokensRateLimited(wait time.Duration) Reply {
	h := jsonHeader()
	h.Set("X-Ratelimit-Remaining-Tokens", "0")
	return Reply{Status: http.StatusTooManyRequests, Header: h, Body: openAIError(
		"Rate limit reached for gpt-4o in organization org-fake0123456789 on tokens per min (TPM): Limit 30000, Used 14567, Requested 24754. Please try again in "+tryAgainIn(wait)+". Visit https://platform.openai.com/account/rate-limits to learn more.",
		"tokens", "", "rate_limit_exceeded")}
}

// tryAgainIn writes a wait as OpenAI's messages do: "634ms", "20s", "1.574s".
func tryAgainIn(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// BillingHardLimit is OpenAI's 400 once a spending limit is reached.
func BillingHardLimit() Reply {
	return Reply{Status: http.StatusBadRequest, Header: jsonHeader(), Body: openAIError(
		"Billing hard limit has been reached", "invalid_request_error", "", "billing_hard_limit_reached")}
}

// PaymentRequired is OpenRouter's 402 for an account without credits
// (its code is a number).
func PaymentRequired() Reply {
	return Reply{Status: http.StatusPaymentRequired, Header: jsonHeader(),
		Body: `{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits","code":402}}`}
}

// PaymentRequiredMaxTokens is OpenRouter's 402 when the credit left does
// not cover the request's max_tokens.
func PaymentRequiredMaxTokens() Reply {
	return Reply{Status: http.StatusPaymentRequired, Header: jsonHeader(),
		Body: `{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, but can only afford 222. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid account","code":402}}`}
}

// InsufficientBalance is DeepSeek's 402 (whose code says
// invalid_request_error).
func InsufficientBalance() Reply {
	return Reply{Status: http.StatusPaymentRequired, Header: jsonHeader(),
		Body: `{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}`}
}

// CreditTooLow is Anthropic's answer once the credit is gone: a 400
// invalid_request_error in Anthropic's own error shape.
func CreditTooLow() Reply {
	return Reply{Status: http.StatusBadRequest, Header: jsonHeader(),
		Body: `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_011CbrFTcXhtiMzr3s6EocF7"}`}
}

// ServerError is a provider's 500.
func ServerError() Reply {
	return Reply{Status: http.StatusInternalServerError, Header: jsonHeader(), Body: openAIError(
		"The server had an error while processing your request. Sorry about that!", "server_error", "", "")}
}

// Overloaded is OpenAI's 503 for an engine under load.
func Overloaded() Reply {
	return Reply{Status: http.StatusServiceUnavailable, Header: jsonHeader(), Body: openAIError(
		"The engine is currently overloaded, please try again later", "server_error", "", "")}
}

// AnthropicOverloaded is Anthropic's 529.
func AnthropicOverloaded() Reply {
	return Reply{Status: 529, Header: jsonHeader(), Body: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`}
}

// BadGateway is the HTML page a CDN in front of a provider answers.
func BadGateway() Reply {
	return Reply{Status: http.StatusBadGateway, Header: http.Header{"Content-Type": {"text/html"}},
		Body: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"}
}

// BadRequest is OpenAI's 400 for a request the caller got wrong.
func BadRequest(param, msg string) Reply {
	return Reply{Status: http.StatusBadRequest, Header: jsonHeader(), Body: openAIError(msg, "invalid_request_error", param, "")}
}

// ContextLengthExceeded is OpenAI's 400 for a conversation too long for
// the model: the caller's error, although it names tokens.
func ContextLengthExceeded() Reply {
	return Reply{Status: http.StatusBadRequest, Header: jsonHeader(), Body: openAIError(
		"This model's maximum context length is 128000 tokens. However, your messages resulted in 130415 tokens. Please reduce the length of the messages.",
		"invalid_request_error", "messages", "context_length_exceeded")}
}

// ModelNotFound is OpenAI's 404 for a model the key cannot use.
func ModelNotFound(model string) Reply {
	return Reply{Status: http.StatusNotFound, Header: jsonHeader(), Body: openAIError(
		"The model `"+model+"` does not exist or you do not have access to it.", "invalid_request_error", "", "model_not_found")}
}

// InvalidAPIKey is OpenAI's 401 for a wrong key (shown masked).
func InvalidAPIKey(key string) Reply {
	masked := key
	if len(key) > 8 {
		masked = key[:3] + strings.Repeat("*", len(key)-7) + key[len(key)-4:]
	}
	return Reply{Status: http.StatusUnauthorized, Header: jsonHeader(), Body: openAIError(
		"Incorrect API key provided: "+masked+". You can find your API key at https://platform.openai.com/account/api-keys.",
		"invalid_request_error", "", "invalid_api_key")}
}

// StreamFailed is the data of an error event a provider sends on a 200
// stream (OpenRouter's shape: a numeric code).
func StreamFailed(code int, msg string) string {
	return fmt.Sprintf(`{"error":{"code":%d,"message":%s}}`, code, jsonString(msg))
}

// ErrUnknownMode is returned by ByName for a name it does not know.
var ErrUnknownMode = errors.New("unknown reply")

// ByName is the reply a named failure mode gives, for cmd/fakeprovider:
// ok, insufficient_quota, rate_limit, payment_required,
// insufficient_balance, billing_hard_limit, credit_too_low, server_error,
// overloaded, bad_gateway, bad_request, hang, cut.
func ByName(name string, req Request) (Reply, error) {
	switch name {
	case "ok":
		return Echo(req), nil
	case "insufficient_quota":
		return InsufficientQuota(), nil
	case "rate_limit":
		return RateLimited(20*time.Second, true), nil
	case "payment_required":
		return PaymentRequired(), nil
	case "insufficient_balance":
		return InsufficientBalance(), nil
	case "billing_hard_limit":
		return BillingHardLimit(), nil
	case "credit_too_low":
		return CreditTooLow(), nil
	case "server_error":
		return ServerError(), nil
	case "overloaded":
		return Overloaded(), nil
	case "bad_gateway":
		return BadGateway(), nil
	case "bad_request":
		return BadRequest("messages", "Invalid 'messages': empty array."), nil
	case "hang":
		return Reply{Hang: true}, nil
	case "cut":
		r := Echo(req)
		r.Cut = true
		return r, nil
	}
	return Reply{}, fmt.Errorf("%w %q", ErrUnknownMode, name)
}
