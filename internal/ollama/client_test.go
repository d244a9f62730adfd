package ollama_test

import (
	"context"
	"encoding/json"
	"errors"
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

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

func TestBaseURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"", "http://localhost:11434", false},
		{"http://localhost:11434", "http://localhost:11434", false},
		{"http://localhost:11434/", "http://localhost:11434", false},
		{"https://ollama.example.com", "https://ollama.example.com:443", false},
		{"http://ollama.example.com", "http://ollama.example.com:80", false},
		{"HTTP://Box:1234", "http://Box:1234", false},
		{"box:1234", "http://box:1234", false},
		{"box", "http://box:11434", false},
		{":8080", "http://localhost:8080", false},
		{"0.0.0.0", "http://127.0.0.1:11434", false},
		{"0.0.0.0:11435", "http://127.0.0.1:11435", false},
		{"[::]:11434", "http://[::1]:11434", false},
		{"::1", "http://[::1]:11434", false},
		{"[fe80::1]", "http://[fe80::1]:11434", false},
		{"  127.0.0.1:11434  ", "http://127.0.0.1:11434", false},
		{"http://proxy:8080/ollama/", "http://proxy:8080/ollama", false},
		{"ftp://box", "", true},
		{"box:notaport", "", true},
		{"box:0", "", true},
		{"box:70000", "", true},
		{"bad host", "", true},
	}
	for _, tt := range tests {
		got, err := ollama.BaseURL(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("BaseURL(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func newFake(t *testing.T, cfg ollamatest.Config) (*ollamatest.Server, *ollama.Client) {
	t.Helper()
	fake := ollamatest.NewServer(cfg)
	t.Cleanup(fake.Close)
	return fake, &ollama.Client{BaseURL: fake.URL, HTTP: &http.Client{}}
}

func TestClientMetadata(t *testing.T) {
	_, c := newFake(t, ollamatest.Config{
		Version: "0.9.6",
		Models: []ollamatest.Model{
			{Name: "stories:latest", Size: 1185376, Capabilities: []string{"completion", "tools"}, ContextLength: 2048, Family: "llama", Quantization: "Q8_0", ParameterSize: "15M"},
		},
		Loaded: []string{"stories:latest"},
	})
	ctx := context.Background()

	v, err := c.Version(ctx)
	if err != nil || v != "0.9.6" {
		t.Fatalf("Version = %q, %v", v, err)
	}
	tags, err := c.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags.Models) != 1 || tags.Models[0].Name != "stories:latest" || tags.Models[0].Size != 1185376 || tags.Models[0].Digest == "" {
		t.Fatalf("Tags = %+v", tags)
	}
	show, err := c.Show(ctx, "stories:latest")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(show.Capabilities, ","); got != "completion,tools" {
		t.Errorf("capabilities = %q", got)
	}
	if show.ContextLength() != 2048 || show.Details.QuantizationLevel != "Q8_0" || show.Details.ParameterSize != "15M" {
		t.Errorf("show = %+v (ctx %d)", show.Details, show.ContextLength())
	}
	ps, err := c.PS(ctx)
	if err != nil || len(ps.Models) != 1 || ps.Models[0].Name != "stories:latest" {
		t.Fatalf("PS = %+v, %v", ps, err)
	}

	_, err = c.Show(ctx, "nope:latest")
	var se *ollama.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || se.Message == "" {
		t.Fatalf("Show(unknown) error = %v, want *StatusError 404", err)
	}
	if errors.Is(err, ollama.ErrUnreachable) {
		t.Fatal("a 404 must not be ErrUnreachable")
	}
}

func TestClientChatStream(t *testing.T) {
	fake, c := newFake(t, ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest", Size: 1185376}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Thinking: []string{"hmm"}, Tokens: []string{"Hel", "lo"},
				ToolCalls: [][]ollamatest.ToolCall{{{Function: ollamatest.ToolCallFunction{Name: "web_search", Arguments: json.RawMessage(`{"query":"x"}`)}}}}}
		},
	})
	stream := true
	req := ollama.ChatRequest{Model: "stories", Messages: []ollama.Message{{Role: "user", Content: "hi"}}, Stream: &stream}
	var got []ollama.ChatResponse
	if err := c.Chat(context.Background(), req, func(r ollama.ChatResponse) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("got %d lines, want 5: %+v", len(got), got)
	}
	if got[0].Message.Thinking != "hmm" || got[1].Message.Content != "Hel" || got[2].Message.Content != "lo" {
		t.Errorf("lines = %+v", got)
	}
	if tc := got[3].Message.ToolCalls; len(tc) != 1 || tc[0].Function.Name != "web_search" || string(tc[0].Function.Arguments) != `{"query":"x"}` {
		t.Errorf("tool calls = %+v", tc)
	}
	last := got[4]
	if !last.Done || last.DoneReason != "stop" || last.EvalCount != 3 || last.EvalDuration <= 0 {
		t.Errorf("final = %+v", last)
	}
	if r := fake.Requests(); len(r) != 1 || r[0].Model != "stories" || r[0].Stream == nil || !*r[0].Stream {
		t.Errorf("requests = %+v", r)
	}
}

func TestClientChatErrors(t *testing.T) {
	fake, c := newFake(t, ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1}}})
	req := ollama.ChatRequest{Model: "stories", Messages: []ollama.Message{{Role: "user", Content: "hi"}}}
	nop := func(ollama.ChatResponse) error { return nil }

	t.Run("busy", func(t *testing.T) {
		fake.SetRespond(func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Status: 503, Error: "server busy, please try again.  maximum pending requests exceeded"}
		})
		err := c.Chat(context.Background(), req, nop)
		var se *ollama.StatusError
		if !errors.As(err, &se) || se.Status != 503 || !strings.Contains(se.Message, "server busy") {
			t.Fatalf("err = %v, want StatusError 503", err)
		}
	})
	t.Run("midstream", func(t *testing.T) {
		fake.SetRespond(func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a"}, Error: "boom"}
		})
		n := 0
		err := c.Chat(context.Background(), req, func(ollama.ChatResponse) error { n++; return nil })
		var se *ollama.StreamError
		if !errors.As(err, &se) || se.Message != "boom" || n != 1 {
			t.Fatalf("err = %v (lines %d), want StreamError boom after 1 line", err, n)
		}
	})
	t.Run("callback error", func(t *testing.T) {
		fake.SetRespond(func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a", "b"}, Hang: true}
		})
		stop := errors.New("stop")
		err := c.Chat(context.Background(), req, func(ollama.ChatResponse) error { return stop })
		if !errors.Is(err, stop) {
			t.Fatalf("err = %v, want stop", err)
		}
		select {
		case <-fake.CanceledCh():
		case <-time.After(5 * time.Second):
			t.Fatal("the Ollama request was not closed")
		}
	})
	t.Run("cancel", func(t *testing.T) {
		fake.SetRespond(func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"a"}, Hang: true}
		})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			errc <- c.Chat(ctx, req, func(ollama.ChatResponse) error { cancel(); return nil })
		}()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Chat did not return after cancel")
		}
		select {
		case <-fake.CanceledCh():
		case <-time.After(5 * time.Second):
			t.Fatal("the Ollama request was not closed")
		}
	})
	t.Run("bad request", func(t *testing.T) {
		fake.SetRespond(nil)
		err := c.Chat(context.Background(), ollama.ChatRequest{Model: "missing", Messages: req.Messages}, nop)
		var se *ollama.StatusError
		if !errors.As(err, &se) || se.Status != 404 {
			t.Fatalf("err = %v, want 404", err)
		}
	})
}

func TestClientChatLongLine(t *testing.T) {
	long := strings.Repeat("x", 3<<20) // 3 MiB, split over many reads
	mux := http.NewServeMux()
	mux.HandleFunc("/api/chat", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		b, _ := json.Marshal(map[string]any{"model": "m", "message": map[string]string{"role": "assistant", "content": long}, "done": false})
		w.Write(b)
		w.Write([]byte("\n\n"))
		io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}`)
	})
	mux.HandleFunc("/api/tags", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Internal Server Error")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c := &ollama.Client{BaseURL: srv.URL}
	var n int
	err := c.Chat(context.Background(), ollama.ChatRequest{Model: "m"}, func(r ollama.ChatResponse) error {
		n += len(r.Message.Content)
		return nil
	})
	if err != nil || n != len(long) {
		t.Fatalf("Chat = %v, %d bytes", err, n)
	}
	if _, err := c.Tags(context.Background()); err == nil || errors.Is(err, ollama.ErrUnreachable) {
		t.Fatalf("Tags of a non-JSON body: err = %v, want a decode error", err)
	}
}

func TestClientChatIncomplete(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":"a"},"done":false}`+"\n")
	}))
	defer srv.Close()
	err := (&ollama.Client{BaseURL: srv.URL}).Chat(context.Background(), ollama.ChatRequest{Model: "m"}, func(ollama.ChatResponse) error { return nil })
	if !errors.Is(err, ollama.ErrStreamIncomplete) {
		t.Fatalf("err = %v, want ErrStreamIncomplete", err)
	}
}

func TestClientChatLineTooLong(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":"`)
		io.WriteString(w, strings.Repeat("x", ollama.MaxLineBytes+10))
		io.WriteString(w, `"},"done":true}`+"\n")
	}))
	defer srv.Close()
	err := (&ollama.Client{BaseURL: srv.URL}).Chat(context.Background(), ollama.ChatRequest{Model: "m"}, func(ollama.ChatResponse) error { return nil })
	if err == nil || errors.Is(err, ollama.ErrUnreachable) {
		t.Fatalf("err = %v, want a line-too-long error", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &ollama.Client{BaseURL: "http://" + addr}
	ctx := context.Background()
	if _, err := c.Version(ctx); !errors.Is(err, ollama.ErrUnreachable) {
		t.Errorf("Version err = %v, want ErrUnreachable", err)
	}
	if err := c.Chat(ctx, ollama.ChatRequest{Model: "m"}, func(ollama.ChatResponse) error { return nil }); !errors.Is(err, ollama.ErrUnreachable) {
		t.Errorf("Chat err = %v, want ErrUnreachable", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Tags(cctx); !errors.Is(err, context.Canceled) || errors.Is(err, ollama.ErrUnreachable) {
		t.Errorf("Tags(canceled) err = %v, want context.Canceled only", err)
	}
}

// TestClientChatMore: More says whether the next line had already arrived
// when a line was handed over, and only then.
func TestClientChatMore(t *testing.T) {
	seen := make(chan struct{})
	line := func(content string, done bool) string {
		b, _ := json.Marshal(map[string]any{"model": "m", "message": map[string]string{"role": "assistant", "content": content}, "done": done})
		return string(b) + "\n"
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, line("a", false)+line("b", false)) // together
		w.(http.Flusher).Flush()
		<-seen // the client has handed over "b": nothing was waiting behind it
		io.WriteString(w, line("", true))
	}))
	defer srv.Close()
	var got []string
	err := (&ollama.Client{BaseURL: srv.URL}).Chat(context.Background(), ollama.ChatRequest{Model: "m"}, func(r ollama.ChatResponse) error {
		got = append(got, fmt.Sprintf("%s:%v", r.Message.Content, r.More))
		if r.Message.Content == "b" {
			close(seen)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a:true", "b:false", ":false"}; !slices.Equal(got, want) {
		t.Fatalf("lines = %v, want %v", got, want)
	}
}

// TestChatConnectionClosedBeforeAnswer: an Ollama that closes the
// connection without answering (it went away, or a kept-alive connection
// it had closed) is unreachable, not an Ollama error: the router may then
// move the request.
func TestChatConnectionClosedBeforeAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	c := &ollama.Client{BaseURL: srv.URL}
	err := c.Chat(t.Context(), ollama.ChatRequest{Model: "m", Messages: []ollama.Message{{Role: "user", Content: "hi"}}}, func(ollama.ChatResponse) error { return nil })
	if !errors.Is(err, ollama.ErrUnreachable) {
		t.Fatalf("Chat = %v, want ErrUnreachable", err)
	}
}

// TestClientChatReusesReaders: answers read one after the other and at
// once on one client (which reuses its line readers) each get their own
// lines, and what a call returned stays as it was after later calls.
func TestClientChatReusesReaders(t *testing.T) {
	_, c := newFake(t, ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest"}},
		Respond: func(r ollamatest.ChatRequest) ollamatest.Reply {
			w := r.Messages[len(r.Messages)-1].Content
			return ollamatest.Reply{Tokens: []string{w, w + "!"}, Thinking: []string{"on " + w}}
		},
	})
	chat := func(word string) ([]string, error) {
		var texts []string
		err := c.Chat(context.Background(), ollama.ChatRequest{Model: "stories", Messages: []ollama.Message{{Role: "user", Content: word}}}, func(r ollama.ChatResponse) error {
			texts = append(texts, r.Message.Thinking+r.Message.Content)
			return nil
		})
		return texts, err
	}
	want := func(w string) []string { return []string{"on " + w, w, w + "!", ""} }
	first, err := chat("alpha")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			w := strings.Repeat(string(rune('a'+i)), 5+i)
			if got, err := chat(w); err != nil || !slices.Equal(got, want(w)) {
				t.Errorf("chat %q = %q, %v", w, got, err)
			}
		})
	}
	wg.Wait()
	if !slices.Equal(first, want("alpha")) {
		t.Errorf("first answer became %q", first)
	}
}
