package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeRouter is an httptest router that speaks protocol §1: /health,
// /api/models and a scripted /api/chat event stream.
type fakeRouter struct {
	health string // raw JSON of /health
	models string // raw JSON of /api/models
	// chat answers POST /api/chat; nil streams lines.
	chat  func(w http.ResponseWriter, r *http.Request)
	lines []string // raw SSE lines (without "\n") for the default chat
	got   chan []byte
}

func (f *fakeRouter) start(t *testing.T) *httptest.Server {
	t.Helper()
	f.got = make(chan []byte, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.health)
	})
	mux.HandleFunc("GET /api/models", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.models)
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case f.got <- body:
		default:
		}
		if f.chat != nil {
			f.chat(w, r)
			return
		}
		sseHeaders(w)
		for _, l := range f.lines {
			io.WriteString(w, l+"\n")
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
}

// data renders one SSE event line (plus its blank separator) for delta.
func data(delta string, extra ...string) string {
	tail := ""
	if len(extra) > 0 {
		tail = "," + strings.Join(extra, ",")
	}
	return fmt.Sprintf(`data: {"id":"chatcmpl-3f2a9c1b7d4e","object":"chat.completion.chunk","model":"m","choices":[{"delta":%s,"index":0}]%s}`+"\n", delta, tail)
}

func newClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := New(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestClientNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, err string
	}{
		{in: "https://api.idleclaw.com", want: "https://api.idleclaw.com"},
		{in: "https://api.idleclaw.com/", want: "https://api.idleclaw.com"},
		{in: " HTTP://localhost:8000// ", want: "http://localhost:8000"},
		{in: "http://[::1]:8000/prefix/", want: "http://[::1]:8000/prefix"},
		{in: "", err: "empty"},
		{in: "api.idleclaw.com", err: "no scheme"},
		{in: "localhost:8000", err: "must use http or https"},
		{in: "ftp://x", err: "must use http or https"},
		{in: "ws://x/ws/node", err: "must use http or https"},
		{in: "http://", err: "no host"},
		{in: "http:///path", err: "no host"},
		{in: "http://:8000", err: "no host"},
		{in: "http:opaque", err: "no host"},
		{in: "http://u:secret@x", err: "credentials"},
		{in: "http://x/?a=b", err: "query or fragment"},
		{in: "http://x/#f", err: "query or fragment"},
		{in: "http://x:port", err: "not a URL"},
		{in: "http://a b", err: "not a URL"},
	}
	for _, tt := range tests {
		c, err := New(tt.in, nil)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("New(%q) error = %v, want containing %q", tt.in, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("New(%q) error leaks the password: %v", tt.in, err)
			}
			continue
		}
		if err != nil || c.BaseURL != tt.want || c.HTTP == nil {
			t.Errorf("New(%q) = %+v, %v; want BaseURL %q", tt.in, c, err, tt.want)
		}
	}
}

func TestClientHealthAndModels(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{
		health: `{"status":"healthy","uptime_seconds":3723,"node_count":2,"extra":{"x":1}}`,
		models: `{"models":["qwen3:32b","llama3.2:3b"],"capabilities":{"qwen3:32b":{"thinking":true,"tool_calls":true},"llama3.2:3b":{"thinking":false,"tool_calls":true}}}`,
	}
	c := newClient(t, f.start(t).URL+"/")
	h, err := c.Health(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Health{Status: "healthy", UptimeSeconds: 3723, NodeCount: 2}); h != want {
		t.Errorf("Health = %+v, want %+v", h, want)
	}
	m, err := c.Models(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := Models{
		Models: []string{"qwen3:32b", "llama3.2:3b"},
		Capabilities: map[string]Capabilities{
			"qwen3:32b":   {Thinking: true, ToolCalls: true},
			"llama3.2:3b": {ToolCalls: true},
		},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Models = %+v, want %+v", m, want)
	}
}

func TestClientGetErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(error) bool
		msg     string
	}{
		{
			name: "rate limited",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "7")
				writeJSON(w, http.StatusTooManyRequests, `{"detail":"Too many requests"}`)
			},
			check: func(err error) bool {
				var ae *APIError
				return errors.As(err, &ae) && ae.Status == 429 && ae.RetryAfter == 7*time.Second && ae.Detail == "Too many requests"
			},
			msg: "429 Too Many Requests: Too many requests",
		},
		{
			name: "html from a proxy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				io.WriteString(w, "<html>bad gateway</html>")
			},
			check: func(err error) bool {
				var ae *APIError
				return errors.As(err, &ae) && ae.Status == 502 && ae.Detail == ""
			},
			msg: "router answered 502 Bad Gateway",
		},
		{
			name: "not json",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "<html>hello</html>")
			},
			check: func(err error) bool { return err != nil },
			msg:   "is http",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c := newClient(t, srv.URL)
			_, err := c.Health(t.Context())
			if !tt.check(err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Health error = %v, want %q", err, tt.msg)
			}
			_, err = c.Models(t.Context())
			if !tt.check(err) {
				t.Errorf("Models error = %v", err)
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	t.Parallel()
	url := closedAddr(t)
	c := newClient(t, url)
	_, err := c.Health(t.Context())
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach the router at "+url) {
		t.Errorf("Health error = %v, want ErrUnreachable", err)
	}
	err = c.Chat(t.Context(), ChatRequest{Model: "m"}, func(Event) error { return nil })
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Chat error = %v, want ErrUnreachable", err)
	}
}

func TestClientChatStream(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 200<<10)
	tests := []struct {
		name  string
		lines []string
		want  []Event
		err   func(error) bool
	}{
		{
			name: "answer, thinking, tools, usage",
			lines: []string{
				": ping", "",
				data(`{"content":"Let me","reasoning":true}`), "",
				data(`{"content":" think.","reasoning":true}`), "",
				data(`{"tool_call":{"name":"web_search","status":"executing"}}`), "",
				": ping", "",
				data(`{"tool_call":{"name":"web_search","status":"done"}}`), "",
				data(`{"content":"Hel"}`), "",
				data(`{"content":"lo"}`), "",
				`data: {"id":"chatcmpl-3f2a9c1b7d4e","object":"chat.completion.chunk","model":"m","choices":[{"delta":{},"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, "",
				"data: [DONE]", "",
			},
			want: []Event{
				{Content: "Let me", Reasoning: true},
				{Content: " think.", Reasoning: true},
				{ToolCall: &ToolCall{Name: "web_search", Status: "executing"}},
				{ToolCall: &ToolCall{Name: "web_search", Status: "done"}},
				{Content: "Hel"},
				{Content: "lo"},
				{FinishReason: "stop", Usage: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
			},
		},
		{
			name:  "CRLF, other fields and a long line",
			lines: []string{"event: message\r", "id: 1\r", "retry: 10\r", strings.TrimSuffix(data(`{"content":"`+long+`"}`), "\n") + "\r", "\r", "data: [DONE]\r"},
			want:  []Event{{Content: long}},
		},
		{
			name: "queue positions, and comments that are not",
			lines: []string{": queued position=3", "", ": queued position=1", "", ": queued position=x", ": queued position=-2", ": queued", "",
				data(`{"content":"Hi"}`), "", "data: [DONE]", ""},
			want: []Event{{Queued: 3}, {Queued: 1}, {Content: "Hi"}},
		},
		{
			name:  "data without a space is not an event",
			lines: []string{`data:{"choices":[{"delta":{"content":"no"}}]}`, data(`{"content":"yes"}`), "data: [DONE]"},
			want:  []Event{{Content: "yes"}},
		},
		{
			name:  "in-stream error",
			lines: []string{data(`{"content":"Par"}`), "", data(`{"content":"\n\n[Error: Node disconnected\u001b[31m]"}`), "", "data: [DONE]", ""},
			want:  []Event{{Content: "Par"}},
			err: func(err error) bool {
				var se *StreamError
				return errors.As(err, &se) && se.Message == "Node disconnected[31m"
			},
		},
		{
			name:  "no [DONE]",
			lines: []string{data(`{"content":"Hi"}`), ""},
			want:  []Event{{Content: "Hi"}},
			err:   func(err error) bool { return errors.Is(err, ErrEndedEarly) },
		},
		{
			name:  "empty stream",
			lines: nil,
			err:   func(err error) bool { return errors.Is(err, ErrEndedEarly) },
		},
		{
			name:  "bad payload",
			lines: []string{"data: {nope", "data: [DONE]"},
			err:   func(err error) bool { return err != nil && strings.Contains(err.Error(), "bad event payload") },
		},
		{
			name:  "line too long",
			lines: []string{data(`{"content":"` + strings.Repeat("y", MaxLineBytes) + `"}`), "data: [DONE]"},
			err:   func(err error) bool { return err != nil && strings.Contains(err.Error(), "longer than") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRouter{lines: tt.lines}
			c := newClient(t, f.start(t).URL)
			var got []Event
			err := c.Chat(t.Context(), ChatRequest{Model: "m", Messages: []Message{{Role: "user", Content: "hi"}}}, func(ev Event) error {
				got = append(got, ev)
				return nil
			})
			if tt.err == nil && err != nil {
				t.Fatalf("Chat error = %v", err)
			}
			if tt.err != nil && !tt.err(err) {
				t.Fatalf("Chat error = %v (%T), not the expected one", err, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events:\n got %s\nwant %s", dump(got), dump(tt.want))
			}
		})
	}
}

func dump(evs []Event) string {
	b, _ := json.Marshal(evs)
	if len(b) > 300 {
		b = append(b[:300], "..."...)
	}
	return string(b)
}

func TestClientChatRequestBody(t *testing.T) {
	t.Parallel()
	seed, temp := 42, 0.0
	tests := []struct {
		name string
		req  ChatRequest
		want string
	}{
		{
			name: "v1",
			req:  ChatRequest{Model: "llama3.2:3b", Messages: []Message{{Role: "user", Content: "hi"}}},
			want: `{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}],"think":false}`,
		},
		{
			name: "options",
			req:  ChatRequest{Model: "m", Messages: []Message{{Role: "user", Content: "hi"}}, Think: true, Options: &Options{Seed: &seed, Temperature: &temp}},
			want: `{"model":"m","messages":[{"role":"user","content":"hi"}],"think":true,"options":{"seed":42,"temperature":0}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ct string
			f := &fakeRouter{chat: func(w http.ResponseWriter, r *http.Request) {
				ct = r.Header.Get("Content-Type")
				sseHeaders(w)
				io.WriteString(w, "data: [DONE]\n\n")
			}}
			c := newClient(t, f.start(t).URL)
			if err := c.Chat(t.Context(), tt.req, func(Event) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if got := string(<-f.got); got != tt.want {
				t.Errorf("body = %s, want %s", got, tt.want)
			}
			if ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestClientChatHTTPErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		ctype  string
		want   APIError
	}{
		{name: "rate", status: 429, header: map[string]string{"Retry-After": "12"}, body: `{"detail":"Too many requests"}`, want: APIError{Status: 429, Detail: "Too many requests", RetryAfter: 12 * time.Second}},
		{name: "concurrent", status: 429, header: map[string]string{"Retry-After": "5"}, body: `{"detail":"Too many concurrent requests"}`, want: APIError{Status: 429, Detail: "Too many concurrent requests", RetryAfter: 5 * time.Second}},
		{name: "schema", status: 422, body: `{"detail": [ {"loc": ["body", "model"], "msg": "field required"} ]}`, want: APIError{Status: 422, Detail: `[{"loc":["body","model"],"msg":"field required"}]`}},
		{name: "too large", status: 422, body: `{"detail":"Total payload too large: 100001 chars (max 100000)"}`, want: APIError{Status: 422, Detail: "Total payload too large: 100001 chars (max 100000)"}},
		{name: "filter", status: 400, body: `{"detail":"Message content not allowed"}`, want: APIError{Status: 400, Detail: "Message content not allowed"}},
		{name: "no node", status: 503, body: `{"detail":"No nodes available with model x"}`, want: APIError{Status: 503, Detail: "No nodes available with model x"}},
		{name: "null detail", status: 500, body: `{"detail":null}`, want: APIError{Status: 500}},
		{name: "long detail", status: 400, body: `{"detail":"` + strings.Repeat("é", 400) + `"}`, want: APIError{Status: 400, Detail: strings.Repeat("é", 250) + "…"}},
		{name: "ok but not a stream", status: 200, ctype: "text/html", body: "<html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRouter{chat: func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				ct := tt.ctype
				if ct == "" {
					ct = "application/json"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}}
			c := newClient(t, f.start(t).URL)
			called := false
			err := c.Chat(t.Context(), ChatRequest{Model: "x"}, func(Event) error { called = true; return nil })
			if called {
				t.Error("fn called on an error answer")
			}
			var ae *APIError
			if tt.status == 200 {
				if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "not an event stream") {
					t.Errorf("error = %v, want not an event stream", err)
				}
				return
			}
			if !errors.As(err, &ae) {
				t.Fatalf("error = %v (%T), want *APIError", err, err)
			}
			if *ae != tt.want {
				t.Errorf("APIError = %+v, want %+v", *ae, tt.want)
			}
		})
	}
}

func TestClientChatStopsEarly(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := &fakeRouter{chat: func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		io.WriteString(w, data(`{"content":"one"}`)+"\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}}
	srv := f.start(t)
	defer close(release)
	c := newClient(t, srv.URL)

	t.Run("fn error", func(t *testing.T) {
		stop := errors.New("stop")
		err := c.Chat(t.Context(), ChatRequest{Model: "m"}, func(Event) error { return stop })
		if err != stop {
			t.Errorf("error = %v, want fn's error as is", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		err := c.Chat(ctx, ChatRequest{Model: "m"}, func(Event) error { cancel(); return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error = %v, want context.Canceled", err)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"5", 5 * time.Second}, {" 60 ", time.Minute}, {"0", 0}, {"-3", 0}, {"soon", 0},
		{"99999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestClientSanitize(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"plain\ttext\n", "plain\ttext\n"},
		{"\x1b]52;c;SGVsbG8=\x07red", "]52;c;SGVsbG8=red"},
		{"a\rb\x00c\u009bd\u2028e", "abcde"},
		{"héllo 🦀", "héllo 🦀"},
	}
	for _, tt := range tests {
		if got := Sanitize(tt.in); got != tt.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzSSE feeds arbitrary bytes to the stream decoder: it must not panic,
// must end, must deliver at most one event per line and must never deliver
// an in-stream error as content.
func FuzzSSE(f *testing.F) {
	f.Add([]byte(data(`{"content":"Hi"}`) + "\n: ping\n\ndata: [DONE]\n"))
	f.Add([]byte(data(`{"content":"\n\n[Error: boom]"}`)))
	f.Add([]byte(data(`{"content":"a","reasoning":true}`) + data(`{"tool_call":{"name":"web_search","status":"done"}}`)))
	f.Add([]byte(`data: {"choices":[],"usage":{"total_tokens":1}}` + "\r\ndata: [DONE]\r\n"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":1}}]}\n"))
	f.Add([]byte("data: null\ndata: []\ndata: \"x\"\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		err := readSSE(bytes.NewReader(in), func(ev Event) error {
			n++
			if !ev.Reasoning && strings.HasPrefix(ev.Content, errorPrefix) && strings.HasSuffix(ev.Content, errorSuffix) {
				t.Fatalf("in-stream error delivered as content: %q", ev.Content)
			}
			return nil
		})
		if lines := bytes.Count(in, []byte("\n")) + 1; n > lines {
			t.Fatalf("%d events from %d lines", n, lines)
		}
		var se *StreamError
		if errors.As(err, &se) && strings.ContainsFunc(se.Message, isUnsafe) {
			t.Fatalf("unsanitized stream error %q", se.Message)
		}
	})
}
