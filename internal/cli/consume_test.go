package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/client"
)

// fakeRouter is an httptest router that speaks the consumer API of
// docs/protocol.md §1: /health, /api/models, and POST /api/chat with its
// checks (422 schema, 503 unknown model) and an event stream.
type fakeRouter struct {
	health string // raw /health answer; a default one when ""
	models []string
	caps   map[string]client.Capabilities
	// chat answers a valid chat request for a served model; nil answers
	// "Hello world".
	chat func(w http.ResponseWriter, r *http.Request)
	// before, when set, answers every chat request first (rate limits,
	// content filter); it returns false to let the request go on.
	before func(w http.ResponseWriter, r *http.Request) bool

	mu   sync.Mutex
	reqs []chatBody // guarded by mu
}

// chatBody is a chat request as the fake router saw it.
type chatBody struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Think   bool            `json:"think"`
	System  string          `json:"system"`
	Options json.RawMessage `json:"options"`
}

func (f *fakeRouter) start(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := f.health
		if h == "" {
			h = `{"status":"healthy","uptime_seconds":3723,"node_count":2}`
		}
		routerJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /api/models", func(w http.ResponseWriter, r *http.Request) {
		caps := f.caps
		if caps == nil {
			caps = map[string]client.Capabilities{}
		}
		b, _ := json.Marshal(map[string]any{"models": append([]string{}, f.models...), "capabilities": caps})
		routerJSON(w, http.StatusOK, string(b))
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, r *http.Request) {
		if f.before != nil && f.before(w, r) {
			return
		}
		var req chatBody
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !validChat(req) {
			routerJSON(w, http.StatusUnprocessableEntity, `{"detail":[{"loc":["body"],"msg":"invalid request"}]}`)
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		if !slices.Contains(f.models, req.Model) {
			routerJSON(w, http.StatusServiceUnavailable, fmt.Sprintf(`{"detail":"No nodes available with model %s"}`, req.Model))
			return
		}
		if f.chat != nil {
			f.chat(w, r)
			return
		}
		sse(w, delta(`{"content":"Hello"}`), delta(`{"content":" world"}`), "[DONE]")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (f *fakeRouter) requests() []chatBody {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func validChat(req chatBody) bool {
	if req.Model == "" || utf8.RuneCountInString(req.Model) > 64 || len(req.Messages) == 0 || len(req.Messages) > 50 {
		return false
	}
	for _, m := range req.Messages {
		if (m.Role != "user" && m.Role != "assistant") || m.Content == "" || utf8.RuneCountInString(m.Content) > 10_000 {
			return false
		}
	}
	return true
}

func routerJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// sse starts the event stream if needed and sends each payload as one
// "data: " event, flushed at once. A payload starting with ':' is sent as a
// comment line.
func sse(w http.ResponseWriter, payloads ...string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
	}
	for _, p := range payloads {
		if strings.HasPrefix(p, ":") {
			io.WriteString(w, p+"\n\n")
		} else {
			io.WriteString(w, "data: "+p+"\n\n")
		}
	}
	http.NewResponseController(w).Flush()
}

// delta is the protocol's chunk envelope around one delta.
func delta(d string) string {
	return `{"id":"chatcmpl-3f2a9c1b7d4e","object":"chat.completion.chunk","model":"m","choices":[{"delta":` + d + `,"index":0}]}`
}

// syncWriter is a concurrency-safe buffer that signals each write.
type syncWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func newSyncWriter() *syncWriter { return &syncWriter{wrote: make(chan struct{}, 1)} }

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.b.Write(p)
	w.mu.Unlock()
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the buffer contains s.
func (w *syncWriter) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(w.String(), s) {
		select {
		case <-w.wrote:
		case <-timeout:
			t.Fatalf("never written: %q (have %q)", s, w.String())
		}
	}
}

func envOf(kv ...string) Env {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func closedServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestConsumeStreamsAsItArrives checks that the first token reaches stdout
// before the router sends the second one.
func TestConsumeStreamsAsItArrives(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := &fakeRouter{models: []string{"m"}, chat: func(w http.ResponseWriter, r *http.Request) {
		sse(w, ": ping", delta(`{"content":"Hel"}`))
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		sse(w, ": ping", delta(`{"content":"lo"}`), "[DONE]")
	}}
	url := f.start(t)
	stdout, stderr := newSyncWriter(), newSyncWriter()
	done := make(chan int, 1)
	go func() {
		done <- runConsume(t.Context(), []string{"--server", url, "--model", "m", "--prompt", "hi"}, envOf(), Streams{Stdout: stdout, Stderr: stderr})
	}()
	stdout.waitFor(t, "Hel")
	if got := stdout.String(); got != "Hel" {
		t.Errorf("stdout before the second token = %q, want %q", got, "Hel")
	}
	close(release)
	if code := <-done; code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if got := stdout.String(); got != "Hello\n" {
		t.Errorf("stdout = %q, want %q", got, "Hello\n")
	}
	if got := stderr.String(); got != "" {
		t.Errorf("stderr = %q, want nothing", got)
	}
}

func TestConsume(t *testing.T) {
	t.Parallel()
	two := []string{"big:70b", "small:1b"}
	tests := []struct {
		name   string
		args   []string // --server URL is prepended unless the case sets server
		env    []string // URL in a value is replaced by the fake's URL
		stdin  string
		server string // "closed" for a closed port, "none" to omit --server
		router *fakeRouter

		code       int
		stdout     string
		stderr     []string // substrings
		wantStderr *string  // exact, when set
		check      func(t *testing.T, reqs []chatBody)
	}{
		{
			name:   "answer",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "small:1b", "--prompt", "hi"},
			stdout: "Hello world\n", wantStderr: ptr(""),
			check: func(t *testing.T, reqs []chatBody) {
				if len(reqs) != 1 || reqs[0].Model != "small:1b" || len(reqs[0].Messages) != 1 ||
					reqs[0].Messages[0].Role != "user" || reqs[0].Messages[0].Content != "hi" || reqs[0].Think || reqs[0].Options != nil {
					t.Errorf("request = %+v", reqs)
				}
			},
		},
		{
			name: "answer ending with a newline gets none added",
			router: &fakeRouter{models: two, chat: func(w http.ResponseWriter, r *http.Request) {
				sse(w, delta(`{"content":"line\n"}`), delta(`{"content":""}`), "[DONE]")
			}},
			args:   []string{"--model", "big:70b", "--prompt", "hi"},
			stdout: "line\n",
		},
		{
			name: "thinking and tools go to stderr",
			router: &fakeRouter{models: two, chat: func(w http.ResponseWriter, r *http.Request) {
				sse(w,
					delta(`{"content":"Let me ","reasoning":true}`),
					delta(`{"content":"think.","reasoning":true}`),
					delta(`{"tool_call":{"name":"web_search","status":"executing"}}`),
					": ping",
					delta(`{"tool_call":{"name":"web_search","status":"done"}}`),
					delta(`{"content":"Found.\n","reasoning":true}`),
					delta(`{"content":"Paris"}`),
					`{"id":"chatcmpl-3f2a9c1b7d4e","object":"chat.completion.chunk","model":"m","choices":[{"delta":{},"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`,
					"[DONE]")
			}},
			args:   []string{"--model", "big:70b", "--prompt", "capital?", "--think"},
			stdout: "Paris\n",
			wantStderr: ptr("[thinking]\nLet me think.\n[/thinking]\n[searching the web…]\n[search done]\n" +
				"[thinking]\nFound.\n[/thinking]\n"),
			check: func(t *testing.T, reqs []chatBody) {
				if !reqs[0].Think {
					t.Error("think not sent")
				}
			},
		},
		{
			name: "escape sequences from the network are not printed",
			router: &fakeRouter{models: two, chat: func(w http.ResponseWriter, r *http.Request) {
				sse(w, delta(`{"content":"a\u001b]52;c;eA==\u0007b"}`), "[DONE]")
			}},
			args:   []string{"--model", "big:70b", "--prompt", "hi"},
			stdout: "a]52;c;eA==b\n",
		},
		{
			name:       "default model is models[0]",
			router:     &fakeRouter{models: two},
			args:       []string{"--prompt", "hi"},
			stdout:     "Hello world\n",
			wantStderr: ptr("[model: big:70b]\n"),
			check: func(t *testing.T, reqs []chatBody) {
				if reqs[0].Model != "big:70b" {
					t.Errorf("model = %q, want big:70b", reqs[0].Model)
				}
			},
		},
		{
			name:   "no models on the network",
			router: &fakeRouter{},
			args:   []string{"--prompt", "hi"},
			code:   1, stderr: []string{"no models available on the network"},
		},
		{
			name:   "prompt from stdin",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "big:70b", "--prompt", "-"},
			stdin:  "line one\nline two\n",
			stdout: "Hello world\n",
			check: func(t *testing.T, reqs []chatBody) {
				if got := reqs[0].Messages[0].Content; got != "line one\nline two" {
					t.Errorf("content = %q", got)
				}
			},
		},
		{
			name:   "prompt from stdin keeps all but one newline",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "big:70b", "--prompt", "-"},
			stdin:  "x\r\n\r\n",
			stdout: "Hello world\n",
			check: func(t *testing.T, reqs []chatBody) {
				if got := reqs[0].Messages[0].Content; got != "x\r\n" {
					t.Errorf("content = %q", got)
				}
			},
		},
		{name: "empty stdin", args: []string{"--model", "m", "--prompt", "-"}, stdin: "\n", code: 2, stderr: []string{"prompt is empty"}},
		{name: "no prompt", args: []string{"--model", "m"}, code: 2, stderr: []string{"no prompt: give --prompt TEXT"}},
		{name: "empty prompt", args: []string{"--model", "m", "--prompt", ""}, code: 2, stderr: []string{"the prompt is empty"}},
		{name: "blank prompt", args: []string{"--model", "m", "--prompt", "  "}, code: 2, stderr: []string{"prompt is empty"}},
		{name: "a long prompt is the router's to judge", router: &fakeRouter{models: []string{"m"}}, args: []string{"--model", "m", "--prompt", strings.Repeat("é", 10_001)}, code: 1, stderr: []string{"the router refused the request (422)"}},
		{name: "stray argument", args: []string{"--model", "m", "--prompt", "hi", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{name: "model with a slash and an underscore", router: &fakeRouter{models: []string{"hf.co/org/my_model:Q4_K_M"}}, args: []string{"--model", "hf.co/org/my_model:Q4_K_M", "--prompt", "hi"}, stdout: "Hello world\n"},
		{name: "model with a space", args: []string{"--model", "a b", "--prompt", "hi"}, code: 2, stderr: []string{"invalid model name"}},
		{name: "model starting with a hyphen", args: []string{"--model=-x", "--prompt", "hi"}, code: 2, stderr: []string{"invalid model name"}},
		{name: "model too long", args: []string{"--model", strings.Repeat("a", 65), "--prompt", "hi"}, code: 2, stderr: []string{"invalid model name"}},
		{name: "model of 64 characters", router: &fakeRouter{models: []string{strings.Repeat("a", 64)}}, args: []string{"--model", strings.Repeat("a", 64), "--prompt", "hi"}, stdout: "Hello world\n"},
		{name: "model from env is checked too", env: []string{"IDLECLAW_MODEL", "bad;rm"}, args: []string{"--prompt", "hi"}, code: 2, stderr: []string{`invalid model name "bad;rm"`}},
		{name: "server not http", server: "none", args: []string{"--server", "ftp://x", "--model", "m", "--prompt", "hi"}, code: 2, stderr: []string{"invalid --server", "http or https"}},
		{name: "server port out of range", server: "none", args: []string{"--server", "localhost:80000", "--model", "m", "--prompt", "hi"}, code: 2, stderr: []string{"invalid --server", "port 80000 is out of range"}},
		{name: "server from env is checked too", server: "none", env: []string{"IDLECLAW_SERVER", "javascript:alert(1)"}, args: []string{"--model", "m", "--prompt", "hi"}, code: 2, stderr: []string{"invalid --server"}},
		{name: "bad timeout env", env: []string{"IDLECLAW_TIMEOUT", "soon"}, args: []string{"--model", "m", "--prompt", "hi"}, code: 2, stderr: []string{"IDLECLAW_TIMEOUT"}},
		{name: "bad temperature", args: []string{"--model", "m", "--prompt", "hi", "--temperature", "-1"}, code: 2, stderr: []string{"--temperature"}},
		{name: "bad seed", args: []string{"--model", "m", "--prompt", "hi", "--seed", "x"}, code: 2},
		{name: "help", args: []string{"-h"}, code: 0, stderr: []string{"--model [IDLECLAW_MODEL]", "--server [IDLECLAW_SERVER]"}},
		{
			name:   "seed and temperature are sent when given",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "big:70b", "--prompt", "hi", "--seed", "7", "--temperature", "0"},
			stdout: "Hello world\n",
			check: func(t *testing.T, reqs []chatBody) {
				if got := string(reqs[0].Options); got != `{"seed":7,"temperature":0}` {
					t.Errorf("options = %s", got)
				}
			},
		},
		{
			name:   "seed 0 is not sent",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "big:70b", "--prompt", "hi", "--seed", "0"},
			stdout: "Hello world\n",
			check: func(t *testing.T, reqs []chatBody) {
				if reqs[0].Options != nil {
					t.Errorf("options = %s, want none", reqs[0].Options)
				}
			},
		},
		{
			name:   "model not served",
			router: &fakeRouter{models: two},
			args:   []string{"--model", "absent:1b", "--prompt", "hi"},
			code:   1, stderr: []string{"no node serves model absent:1b; models on the network: big:70b, small:1b\n"},
		},
		{
			name:   "model not served on an empty network",
			router: &fakeRouter{},
			args:   []string{"--model", "absent:1b", "--prompt", "hi"},
			code:   1, stderr: []string{"no node serves model absent:1b; models on the network: none\n"},
		},
		{
			name: "nodes serve the model but none takes requests now",
			router: &fakeRouter{models: two, before: func(w http.ResponseWriter, r *http.Request) bool {
				routerJSON(w, http.StatusServiceUnavailable, `{"detail":"No nodes available with model big:70b: the nodes that serve it are not taking requests now (paused, draining, or failing)"}`)
				return true
			}},
			args: []string{"--model", "big:70b", "--prompt", "hi"},
			code: 1, stderr: []string{"no node can serve model big:70b now: the nodes that serve it are not taking requests now (paused, draining, or failing)\n"},
		},
		{
			name: "rate limited",
			router: &fakeRouter{models: two, before: func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", "5")
				routerJSON(w, http.StatusTooManyRequests, `{"detail":"Too many concurrent requests"}`)
				return true
			}},
			args: []string{"--model", "big:70b", "--prompt", "hi"},
			code: 1, stderr: []string{"rate limited by the router; retry in 5 s"},
		},
		{
			name: "content filter",
			router: &fakeRouter{models: two, before: func(w http.ResponseWriter, r *http.Request) bool {
				routerJSON(w, http.StatusBadRequest, `{"detail":"Message content not allowed"}`)
				return true
			}},
			args: []string{"--model", "big:70b", "--prompt", "hi"},
			code: 1, stderr: []string{"refused the request (400): Message content not allowed"},
		},
		{
			name: "payload too large",
			router: &fakeRouter{models: two, before: func(w http.ResponseWriter, r *http.Request) bool {
				routerJSON(w, http.StatusUnprocessableEntity, `{"detail":"Total payload too large: 100001 chars (max 100000)"}`)
				return true
			}},
			args: []string{"--model", "big:70b", "--prompt", "hi"},
			code: 1, stderr: []string{"refused the request (422): Total payload too large: 100001 chars (max 100000)"},
		},
		{
			name: "schema error",
			router: &fakeRouter{models: two, before: func(w http.ResponseWriter, r *http.Request) bool {
				routerJSON(w, http.StatusUnprocessableEntity, `{"detail": [{"loc": ["body", "messages"], "msg": "too long"}]}`)
				return true
			}},
			args: []string{"--model", "big:70b", "--prompt", "hi"},
			code: 1, stderr: []string{`refused the request (422): [{"loc":["body","messages"],"msg":"too long"}]`},
		},
		{
			name: "error inside the stream",
			router: &fakeRouter{models: two, chat: func(w http.ResponseWriter, r *http.Request) {
				sse(w, delta(`{"content":"Partial"}`), delta(`{"content":"\n\n[Error: Node disconnected]"}`), "[DONE]")
			}},
			args:       []string{"--model", "big:70b", "--prompt", "hi"},
			code:       1,
			stdout:     "Partial\n",
			wantStderr: ptr("idleclaw: error from the network: Node disconnected\n"),
		},
		{
			name: "stream without [DONE]",
			router: &fakeRouter{models: two, chat: func(w http.ResponseWriter, r *http.Request) {
				sse(w, delta(`{"content":"Cut"}`))
			}},
			args:   []string{"--model", "big:70b", "--prompt", "hi"},
			code:   1,
			stdout: "Cut\n",
			stderr: []string{"stream ended early"},
		},
		{
			name:   "router unreachable",
			server: "closed",
			args:   []string{"--model", "m", "--prompt", "hi"},
			code:   1, stderr: []string{"idleclaw: cannot reach the router at http://127.0.0.1:", "connection refused"},
		},
		{
			name:   "router unreachable while picking the model",
			server: "closed",
			args:   []string{"--prompt", "hi"},
			code:   1, stderr: []string{"idleclaw: cannot reach the router at http://127.0.0.1:"},
		},
		{
			name:   "env model",
			router: &fakeRouter{models: two},
			env:    []string{"IDLECLAW_MODEL", "small:1b"},
			args:   []string{"--prompt", "hi"},
			stdout: "Hello world\n", wantStderr: ptr(""),
			check: func(t *testing.T, reqs []chatBody) {
				if reqs[0].Model != "small:1b" {
					t.Errorf("model = %q, want the env's", reqs[0].Model)
				}
			},
		},
		{
			name:   "flag model beats env",
			router: &fakeRouter{models: two},
			env:    []string{"IDLECLAW_MODEL", "small:1b"},
			args:   []string{"--prompt", "hi", "--model", "big:70b"},
			stdout: "Hello world\n",
			check: func(t *testing.T, reqs []chatBody) {
				if reqs[0].Model != "big:70b" {
					t.Errorf("model = %q, want the flag's", reqs[0].Model)
				}
			},
		},
		{
			name:   "env server",
			router: &fakeRouter{models: two},
			server: "none",
			env:    []string{"IDLECLAW_SERVER", "URL"},
			args:   []string{"--model", "big:70b", "--prompt", "hi"},
			stdout: "Hello world\n",
		},
		{
			name:   "flag server beats env",
			router: &fakeRouter{models: two},
			server: "none",
			env:    []string{"IDLECLAW_SERVER", "CLOSED"},
			args:   []string{"--server", "URL/", "--model", "big:70b", "--prompt", "hi"},
			stdout: "Hello world\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			router := tt.router
			if router == nil {
				router = &fakeRouter{}
			}
			url := router.start(t)
			closed := closedServer(t)
			subst := func(s string) string {
				s = strings.ReplaceAll(s, "CLOSED", closed)
				return strings.ReplaceAll(s, "URL", url)
			}
			var args []string
			switch tt.server {
			case "":
				args = []string{"--server", url}
			case "closed":
				args = []string{"--server", closed}
			}
			for _, a := range tt.args {
				args = append(args, subst(a))
			}
			var env []string
			for _, e := range tt.env {
				env = append(env, subst(e))
			}
			var stdout, stderr bytes.Buffer
			code := runConsume(t.Context(), args, envOf(env...), Streams{Stdin: strings.NewReader(tt.stdin), Stdout: &stdout, Stderr: &stderr})
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if stdout.String() != tt.stdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.stdout)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), s)
				}
			}
			if tt.wantStderr != nil && stderr.String() != *tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), *tt.wantStderr)
			}
			if tt.check != nil {
				reqs := router.requests()
				if len(reqs) == 0 {
					t.Fatal("no chat request reached the router")
				}
				tt.check(t, reqs)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestConsumeInterrupted(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}, chat: func(w http.ResponseWriter, r *http.Request) {
		sse(w, delta(`{"content":"Hel"}`))
		<-r.Context().Done()
	}}
	url := f.start(t)
	ctx, cancel := context.WithCancel(t.Context())
	stdout, stderr := newSyncWriter(), newSyncWriter()
	done := make(chan int, 1)
	go func() {
		done <- runConsume(ctx, []string{"--server", url, "--model", "m", "--prompt", "hi"}, envOf(), Streams{Stdout: stdout, Stderr: stderr})
	}()
	stdout.waitFor(t, "Hel")
	cancel()
	if code := <-done; code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	if got := stdout.String(); got != "Hel\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := stderr.String(); got != "idleclaw: interrupted\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestConsumeTimeout(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}, chat: func(w http.ResponseWriter, r *http.Request) {
		sse(w, ": ping")
		<-r.Context().Done() // a router that never answers
	}}
	url := f.start(t)
	var stdout, stderr bytes.Buffer
	code := runConsume(t.Context(), []string{"--server", url, "--model", "m", "--prompt", "hi"},
		envOf("IDLECLAW_TIMEOUT", "50ms"), Streams{Stdout: &stdout, Stderr: &stderr})
	if code != 1 || !strings.Contains(stderr.String(), "no complete answer within 50ms") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestConsumeConfigPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     Env
		server  string
		model   string
		timeout time.Duration
	}{
		{name: "defaults", args: nil, env: envOf(), server: DefaultServer, model: "", timeout: 10 * time.Minute},
		{name: "env", env: envOf("IDLECLAW_SERVER", "http://env:1", "IDLECLAW_MODEL", "envm", "IDLECLAW_TIMEOUT", "1m"), server: "http://env:1", model: "envm", timeout: time.Minute},
		{
			name:   "flags beat env",
			args:   []string{"--server", "http://flag:1", "--model", "flagm", "--timeout", "0"},
			env:    envOf("IDLECLAW_SERVER", "http://env:1", "IDLECLAW_MODEL", "envm", "IDLECLAW_TIMEOUT", "1m"),
			server: "http://flag:1", model: "flagm", timeout: 0,
		},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		cfg, code := parseConsume(append(tt.args, "--prompt", "hi"), tt.env, Streams{Stderr: &stderr})
		if code != -1 {
			t.Errorf("%s: exit %d, stderr %q", tt.name, code, stderr.String())
			continue
		}
		if cfg.server != tt.server || cfg.model != tt.model || cfg.timeout != tt.timeout {
			t.Errorf("%s: server %q model %q timeout %v; want %q %q %v", tt.name, cfg.server, cfg.model, cfg.timeout, tt.server, tt.model, tt.timeout)
		}
		if cfg.seed.set || cfg.temperature.set {
			t.Errorf("%s: seed or temperature set without flags", tt.name)
		}
	}
}
