// Package ollamatest provides a fake Ollama server that speaks Ollama's native
// HTTP API (/api/chat, /api/generate, /api/tags, /api/show, /api/ps,
// /api/version) with the wire shapes of Ollama v0.9.6.
//
// It is meant for unit tests, end-to-end tests and benchmarks: how each
// chat or generate request is answered is scripted with a [Reply] (tokens,
// thinking, tool calls, delays, errors, hanging streams), every request is
// recorded for assertions, and cancellations by the client are counted and
// signalled on a channel so tests can wait for them without sleeping.
//
// The package does not import testing, so non-test code (a benchmark tool)
// can use it too, either through [NewServer] (own loopback listener) or
// [NewHandler] (an http.Handler to serve on a listener of the caller's).
//
// Deliberate simplifications, compared with a real Ollama: the fake never
// enforces model capabilities (tools, thinking) and does not tokenise; the
// set of models reported by /api/ps changes only through [Config.Loaded] and
// [Server.SetLoaded], not through load or unload requests (which are still
// answered with Ollama's "load"/"unload" responses).
package ollamatest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// Model describes one model the fake Ollama has "pulled".
type Model struct {
	Name          string   // "stories:latest"; a name without a tag gets ":latest"
	Size          int64    // bytes, reported by /api/tags and /api/ps
	Digest        string   // sha256 hex; if empty, a stable fake one is derived from Name
	Family        string   // details.family, default "llama"
	ParameterSize string   // default "260K"
	Quantization  string   // default "F32"
	ContextLength int      // model_info "<family>.context_length", default 512
	Capabilities  []string // /api/show capabilities, default ["completion"]
}

// Reply says how the fake answers one chat or generate request.
//
// The order on the wire is: Thinking chunks, Tokens, ToolCalls (one chunk
// per element), then either nothing (Hang), a mid-stream error line (Error
// without Status) or the final done line. Delay is waited before each
// thinking, content, tool-call and error chunk (not before the final line).
type Reply struct {
	Status     int           // if non-zero and != 200: answer this HTTP status with {"error": Error} before streaming
	Error      string        // with Status: the error text; without Status: sent as a mid-stream {"error":...} line after Tokens
	Thinking   []string      // thinking chunks, sent first (message.thinking)
	Tokens     []string      // content chunks
	ToolCalls  [][]ToolCall  // each element is sent whole in one done:false chunk after the tokens (message.tool_calls); ignored by /api/generate
	Delay      time.Duration // pause before each chunk (a timer that honours request cancellation)
	DoneReason string        // default "stop"
	Hang       bool          // after the tokens, send nothing more and wait until the client goes away
}

// ToolCall is one tool call as in Ollama's native API.
type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

// ToolCallFunction is the function part of a [ToolCall].
type ToolCallFunction struct {
	Index     int             `json:"index,omitempty"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"` // JSON object
}

// ChatRequest is what the fake decoded from a POST /api/chat (or
// /api/generate; Prompt is set then, and Path tells which).
type ChatRequest struct {
	Path      string // "/api/chat" or "/api/generate"
	Model     string
	Messages  []Message
	Prompt    string
	Stream    *bool
	Think     json.RawMessage
	KeepAlive json.RawMessage
	Options   map[string]any
	Tools     json.RawMessage
	Format    json.RawMessage
	Raw       map[string]json.RawMessage // every top-level key as received, so tests can assert which keys were forwarded
}

// Message is one chat message as in Ollama's native API.
type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	Thinking  string     `json:"thinking,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	ToolName  string     `json:"tool_name,omitempty"`
	Images    []string   `json:"images,omitempty"`
}

// Config configures a fake Ollama.
type Config struct {
	Models   []Model
	Loaded   []string                // names reported by /api/ps
	Version  string                  // default "0.9.6"
	Respond  func(ChatRequest) Reply // nil: [DefaultRespond]
	NoRecord bool                    // do not keep the Requests() history (for benchmarks)
}

// DefaultRespond is the responder used when Config.Respond is nil. It is
// deterministic: the reply is "Echo: " followed by the words of the last user
// message (or the prompt, for /api/generate), one token per word, words after
// the first carrying their leading space. "hello big world" gives the tokens
// "Echo: ", "hello", " big", " world".
func DefaultRespond(req ChatRequest) Reply {
	text := req.Prompt
	if req.Path != "/api/generate" {
		text = ""
		for i := len(req.Messages) - 1; i >= 0; i-- {
			if req.Messages[i].Role == "user" {
				text = req.Messages[i].Content
				break
			}
		}
	}
	words := strings.Fields(text)
	tokens := make([]string, 0, len(words)+1)
	tokens = append(tokens, "Echo: ")
	for i, w := range words {
		if i > 0 {
			w = " " + w
		}
		tokens = append(tokens, w)
	}
	return Reply{Tokens: tokens, DoneReason: "stop"}
}

// modelEntry is a Model with defaults applied plus its listing metadata.
type modelEntry struct {
	Model
	key      string // normalised name used for lookups
	modified time.Time
}

// Server is a fake Ollama. Safe for concurrent use.
type Server struct {
	// URL is the base URL ("http://127.0.0.1:port") of a server made by
	// NewServer; empty for NewHandler.
	URL string

	ts       *httptest.Server
	version  string
	noRecord bool

	mu       sync.RWMutex
	models   []modelEntry
	loaded   []string
	expires  map[string]time.Time // what /api/ps reports per loaded model, as Ollama sets it: the end of its last request plus that request's keep_alive
	respond  func(ChatRequest) Reply
	requests []ChatRequest
	firstSee map[string]time.Time // modified_at per model key, stable across SetModels

	active     atomic.Int64
	canceled   atomic.Int64
	canceledCh chan struct{}
	startedCh  chan ChatRequest

	closed    chan struct{}
	closeOnce sync.Once
}

// NewServer starts a fake Ollama on 127.0.0.1 with a random port. Call Close
// when done.
func NewServer(cfg Config) *Server {
	s := NewHandler(cfg)
	s.ts = httptest.NewUnstartedServer(s)
	s.ts.Start()
	s.URL = s.ts.URL
	return s
}

// NewHandler makes a fake Ollama without a listener: serve it with
// net/http on a listener of your own. URL stays empty. Close still makes
// running (hanging or delayed) requests return.
func NewHandler(cfg Config) *Server {
	s := &Server{
		version:    cfg.Version,
		noRecord:   cfg.NoRecord,
		respond:    cfg.Respond,
		firstSee:   make(map[string]time.Time),
		expires:    make(map[string]time.Time),
		canceledCh: make(chan struct{}, 1024),
		startedCh:  make(chan ChatRequest, 1024),
		closed:     make(chan struct{}),
	}
	if s.version == "" {
		s.version = "0.9.6"
	}
	s.SetModels(cfg.Models)
	s.SetLoaded(cfg.Loaded)
	return s
}

// Close stops the server. It returns promptly even while streams hang or
// wait: running chat/generate requests are ended and client connections
// closed. Requests ended this way are not counted as canceled.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	if s.ts != nil {
		s.ts.CloseClientConnections()
		s.ts.Close()
	}
}

// SetModels replaces the set of models (pulled or removed at runtime).
func (s *Server) SetModels(models []Model) {
	now := time.Now().UTC()
	entries := make([]modelEntry, 0, len(models))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range models {
		e := withDefaults(m)
		t, ok := s.firstSee[e.key]
		if !ok {
			t = now
			s.firstSee[e.key] = t
		}
		e.modified = t
		entries = append(entries, e)
	}
	s.models = entries
}

// SetLoaded replaces the names reported as loaded by /api/ps.
func (s *Server) SetLoaded(names []string) {
	s.mu.Lock()
	s.loaded = append([]string(nil), names...)
	for _, n := range names {
		if _, ok := s.expires[n]; !ok {
			s.expires[n] = time.Now().Add(5 * time.Minute)
		}
	}
	s.mu.Unlock()
}

// served notes that a request for model ended: as Ollama does, a loaded
// model's expiry becomes now plus the request's keep_alive (default 5m).
func (s *Server) served(model string, ka json.RawMessage) {
	d, ok, _ := keepAlive(ka)
	if !ok || d < 0 {
		d = 5 * time.Minute
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.loaded {
		if n == model || withTag(n) == withTag(model) {
			s.expires[n] = time.Now().Add(d)
		}
	}
}

// SetRespond replaces the responder; nil restores DefaultRespond.
func (s *Server) SetRespond(fn func(ChatRequest) Reply) {
	s.mu.Lock()
	s.respond = fn
	s.mu.Unlock()
}

// Requests returns every chat/generate request decoded so far, in order of
// arrival (a copy). It includes requests answered with an error, such as an
// unknown model. Empty when Config.NoRecord is set.
func (s *Server) Requests() []ChatRequest {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]ChatRequest(nil), s.requests...)
}

// Active returns the number of chat/generate requests being served now.
func (s *Server) Active() int { return int(s.active.Load()) }

// Canceled returns the number of chat/generate requests whose client went
// away before the reply was complete.
func (s *Server) Canceled() int { return int(s.canceled.Load()) }

// CanceledCh receives one value each time a chat/generate request is
// canceled by its client (sent after Active and Canceled are updated; values
// beyond the buffer of 1024 are dropped).
func (s *Server) CanceledCh() <-chan struct{} { return s.canceledCh }

// Started receives each chat/generate request once it has been decoded (the
// same set as Requests, even with NoRecord; values beyond the buffer of 1024
// are dropped).
func (s *Server) Started() <-chan ChatRequest { return s.startedCh }

// ServeHTTP implements http.Handler with Ollama's routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "Ollama is running")
	case "/api/version":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"version": s.version})
	case "/api/tags":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		s.handleTags(w)
	case "/api/ps":
		if !allow(w, r, http.MethodGet) {
			return
		}
		s.handlePs(w)
	case "/api/show":
		if !allow(w, r, http.MethodPost) {
			return
		}
		s.handleShow(w, r)
	case "/api/chat":
		if !allow(w, r, http.MethodPost) {
			return
		}
		s.handleInference(w, r, false)
	case "/api/generate":
		if !allow(w, r, http.MethodPost) {
			return
		}
		s.handleInference(w, r, true)
	default:
		// Ollama (gin) answers unknown routes with a plain-text body.
		plain(w, http.StatusNotFound, "404 page not found")
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	plain(w, http.StatusMethodNotAllowed, "405 method not allowed")
	return false
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// normName turns a model name into the key Ollama would match it by:
// case-insensitive, default registry and namespace dropped, ":latest" added
// when there is no tag.
func normName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "https://")
	n = strings.TrimPrefix(n, "http://")
	if i := strings.Index(n, "@"); i >= 0 {
		n = n[:i]
	}
	n = strings.TrimPrefix(n, "registry.ollama.ai/")
	n = strings.TrimPrefix(n, "library/")
	return withTag(n)
}

func withTag(n string) string {
	i := strings.LastIndex(n, ":")
	if i < 0 || strings.Contains(n[i+1:], "/") {
		return n + ":latest"
	}
	return n
}

func withDefaults(m Model) modelEntry {
	if m.Family == "" {
		m.Family = "llama"
	}
	if m.ParameterSize == "" {
		m.ParameterSize = "260K"
	}
	if m.Quantization == "" {
		m.Quantization = "F32"
	}
	if m.ContextLength == 0 {
		m.ContextLength = 512
	}
	if m.Capabilities == nil {
		m.Capabilities = []string{"completion"}
	} else {
		m.Capabilities = append([]string(nil), m.Capabilities...)
	}
	m.Name = withTag(strings.TrimSpace(m.Name))
	if m.Digest == "" {
		sum := sha256.Sum256([]byte(m.Name))
		m.Digest = hex.EncodeToString(sum[:])
	}
	return modelEntry{Model: m, key: normName(m.Name)}
}

func (s *Server) lookup(name string) (modelEntry, bool) {
	if strings.TrimSpace(name) == "" {
		return modelEntry{}, false
	}
	key := normName(name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, m := range s.models {
		if m.key == key {
			return m, true
		}
	}
	return modelEntry{}, false
}

type details struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

func (m modelEntry) details() details {
	return details{
		Format:            "gguf",
		Family:            m.Family,
		Families:          []string{m.Family},
		ParameterSize:     m.ParameterSize,
		QuantizationLevel: m.Quantization,
	}
}

func (s *Server) handleTags(w http.ResponseWriter) {
	type listModel struct {
		Name       string    `json:"name"`
		Model      string    `json:"model"`
		ModifiedAt time.Time `json:"modified_at"`
		Size       int64     `json:"size"`
		Digest     string    `json:"digest"`
		Details    details   `json:"details"`
	}
	s.mu.RLock()
	out := make([]listModel, 0, len(s.models))
	for _, m := range s.models {
		out = append(out, listModel{
			Name: m.Name, Model: m.Name, ModifiedAt: m.modified,
			Size: m.Size, Digest: m.Digest, Details: m.details(),
		})
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (s *Server) handlePs(w http.ResponseWriter) {
	type psModel struct {
		Name          string    `json:"name"`
		Model         string    `json:"model"`
		Size          int64     `json:"size"`
		Digest        string    `json:"digest"`
		Details       details   `json:"details"`
		ExpiresAt     time.Time `json:"expires_at"`
		SizeVRAM      int64     `json:"size_vram"`
		ContextLength int       `json:"context_length"`
	}
	s.mu.RLock()
	names := append([]string(nil), s.loaded...)
	exp := make(map[string]time.Time, len(names))
	for _, n := range names {
		exp[n] = s.expires[n]
	}
	s.mu.RUnlock()
	out := make([]psModel, 0, len(names))
	for _, n := range names {
		m, ok := s.lookup(n)
		if !ok {
			m = withDefaults(Model{Name: n})
		}
		out = append(out, psModel{
			Name: m.Name, Model: m.Name, Size: m.Size, Digest: m.Digest,
			Details: m.details(), ExpiresAt: exp[n], SizeVRAM: 0,
			ContextLength: m.ContextLength,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (s *Server) handleShow(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "missing request body")
		return
	} else if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	m, ok := s.lookup(req.Model)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	params := []string{
		fmt.Sprintf("%-30s %#v", "num_ctx", m.ContextLength),
		fmt.Sprintf("%-30s %#v", "stop", "<s>"),
		fmt.Sprintf("%-30s %#v", "temperature", 0),
	}
	tmpl := "{{ .Prompt }}"
	digest := "sha256-" + m.Digest
	var mf strings.Builder
	fmt.Fprintln(&mf, `# Modelfile generated by "ollama show"`)
	fmt.Fprintln(&mf, "# To build a new Modelfile based on this, replace FROM with:")
	fmt.Fprintf(&mf, "# FROM %s\n\n", m.Name)
	fmt.Fprintf(&mf, "FROM /usr/share/ollama/.ollama/models/blobs/%s\n", digest)
	fmt.Fprintf(&mf, "TEMPLATE %q\n", tmpl)
	fmt.Fprintf(&mf, "PARAMETER num_ctx %d\n", m.ContextLength)
	fmt.Fprintf(&mf, "PARAMETER stop <s>\n")
	fmt.Fprintf(&mf, "PARAMETER temperature 0\n")
	resp := map[string]any{
		"modelfile":  mf.String(),
		"parameters": strings.Join(params, "\n"),
		"template":   tmpl,
		"details":    m.details(),
		"model_info": map[string]any{
			"general.architecture":             m.Family,
			"general.file_type":                0,
			"general.parameter_count":          parseParamCount(m.ParameterSize),
			"general.quantization_version":     2,
			m.Family + ".context_length":       m.ContextLength,
			m.Family + ".block_count":          5,
			m.Family + ".embedding_length":     64,
			m.Family + ".attention.head_count": 8,
		},
		"capabilities": m.Capabilities,
		"modified_at":  m.modified,
	}
	writeJSON(w, http.StatusOK, resp)
}

// parseParamCount turns "260K", "3.2B", "7b" into a parameter count.
func parseParamCount(s string) int64 {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := 1.0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult, s = 1e3, s[:n-1]
		case 'M':
			mult, s = 1e6, s[:n-1]
		case 'B':
			mult, s = 1e9, s[:n-1]
		case 'T':
			mult, s = 1e12, s[:n-1]
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(f * mult)
}

// wireRequest is the body of /api/chat and /api/generate.
type wireRequest struct {
	Model     string          `json:"model"`
	Messages  []Message       `json:"messages"`
	Prompt    string          `json:"prompt"`
	Stream    *bool           `json:"stream"`
	Think     json.RawMessage `json:"think"`
	KeepAlive json.RawMessage `json:"keep_alive"`
	Options   map[string]any  `json:"options"`
	Tools     json.RawMessage `json:"tools"`
	Format    json.RawMessage `json:"format"`
}

// decodeRequest decodes and validates a chat/generate body the way Ollama's
// API types would; the error text is what goes into the 400 answer.
func decodeRequest(body []byte, path string) (ChatRequest, error) {
	var wr wireRequest
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&wr); err != nil {
		if errors.Is(err, io.EOF) {
			return ChatRequest{}, errors.New("missing request body")
		}
		return ChatRequest{}, err
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&raw); err != nil {
		return ChatRequest{}, err
	}
	for i := range wr.Messages {
		m := &wr.Messages[i]
		m.Role = strings.ToLower(m.Role)
		for _, tc := range m.ToolCalls {
			a := bytes.TrimSpace(tc.Function.Arguments)
			if len(a) > 0 && a[0] != '{' && !bytes.Equal(a, []byte("null")) {
				return ChatRequest{}, fmt.Errorf("json: cannot unmarshal %s into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments", jsonKind(a))
			}
		}
		for _, img := range m.Images {
			if _, err := base64.StdEncoding.DecodeString(img); err != nil {
				return ChatRequest{}, err
			}
		}
	}
	if err := checkKeepAlive(wr.KeepAlive); err != nil {
		return ChatRequest{}, err
	}
	if err := checkThink(wr.Think); err != nil {
		return ChatRequest{}, err
	}
	return ChatRequest{
		Path:      path,
		Model:     wr.Model,
		Messages:  wr.Messages,
		Prompt:    wr.Prompt,
		Stream:    wr.Stream,
		Think:     wr.Think,
		KeepAlive: wr.KeepAlive,
		Options:   wr.Options,
		Tools:     wr.Tools,
		Format:    wr.Format,
		Raw:       raw,
	}, nil
}

func jsonKind(b []byte) string {
	switch b[0] {
	case '"':
		return "string"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	default:
		return "number"
	}
}

// keepAlive parses Ollama's keep_alive: seconds as a number, or a Go duration
// string. ok is false when the field is absent or null.
func keepAlive(b json.RawMessage) (d time.Duration, ok bool, err error) {
	if len(b) == 0 || string(b) == "null" {
		return 0, false, nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, false, err
	}
	switch t := v.(type) {
	case float64:
		if t < 0 {
			return -1, true, nil
		}
		return time.Duration(int(t)) * time.Second, true, nil
	case string:
		d, err := time.ParseDuration(t)
		return d, true, err
	default:
		//lint:ignore ST1005 this is Ollama's own error text, kept verbatim
		return 0, false, fmt.Errorf("Unsupported type: '%T'", v)
	}
}

func checkKeepAlive(b json.RawMessage) error {
	_, _, err := keepAlive(b)
	return err
}

func checkThink(b json.RawMessage) error {
	if len(b) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch t := v.(type) {
	case nil, bool:
		return nil
	case string:
		switch t {
		case "high", "medium", "low":
			return nil
		}
	}
	return fmt.Errorf("invalid think value: %s (must be \"high\", \"medium\", \"low\", true, or false)", b)
}

func (s *Server) record(req ChatRequest) {
	if !s.noRecord {
		s.mu.Lock()
		s.requests = append(s.requests, req)
		s.mu.Unlock()
	}
	select {
	case s.startedCh <- req:
	default:
	}
}

func (s *Server) responder() func(ChatRequest) Reply {
	s.mu.RLock()
	fn := s.respond
	s.mu.RUnlock()
	if fn == nil {
		return DefaultRespond
	}
	return fn
}
