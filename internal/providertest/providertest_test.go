package providertest

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, s *Server, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestErrorsAsSent: an error reply is its status, headers and body, byte
// for byte, and the body is the provider's JSON shape.
func TestErrorsAsSent(t *testing.T) {
	for name, rep := range map[string]Reply{
		"quota": InsufficientQuota(), "rate": RateLimited(20*time.Second, true), "402": PaymentRequired(),
		"anthropic": CreditTooLow(), "500": ServerError(), "529": AnthropicOverloaded(),
	} {
		s := NewServer(Config{Respond: func(Request) Reply { return rep }})
		resp := post(t, s, "", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.Close()
		if resp.StatusCode != rep.Status || string(b) != rep.Body {
			t.Errorf("%s: %d %q", name, resp.StatusCode, b)
		}
		for k := range rep.Header {
			if resp.Header.Get(k) != rep.Header.Get(k) {
				t.Errorf("%s: header %s %q, want %q", name, k, resp.Header.Get(k), rep.Header.Get(k))
			}
		}
		var shape struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &shape); err != nil || shape.Error.Message == "" {
			t.Errorf("%s: not a provider error body: %s", name, b)
		}
	}
	if h := RateLimited(20*time.Second, true).Header; h.Get("Retry-After") != "20" || h.Get("X-Ratelimit-Reset-Requests") != "20s" ||
		h.Get("Retry-After-Ms") != "20000" || !strings.Contains(RateLimited(20*time.Second, true).Body, "Please try again in 20s.") {
		t.Errorf("rate limit headers %v", h)
	}
	if !strings.Contains(TokensRateLimited(634*time.Millisecond).Body, "try again in 634ms.") {
		t.Errorf("tokens limit message: %s", TokensRateLimited(634*time.Millisecond).Body)
	}
}

// TestStreamShape: a streamed answer is OpenAI's: an opening chunk with
// the role, one chunk per token, tool calls in pieces, the finish, usage
// when asked, [DONE]; the whole answer holds the same.
func TestStreamShape(t *testing.T) {
	s := NewServer(Config{Key: "sk-k", Respond: func(r Request) Reply {
		return Reply{Tokens: []string{"Hi", " there"}, ToolCalls: []ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}
	}})
	defer s.Close()
	resp := post(t, s, "sk-k", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"a b"}]}]}`)
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var text, args, role, finish string
	var usage, done bool
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if d == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Role      string `json:"role"`
					Content   string `json:"content"`
					ToolCalls []struct {
						Function struct{ Arguments string } `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct{ CompletionTokens int } `json:"usage"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("chunk %s: %v", d, err)
		}
		if c.Usage != nil {
			usage = true
		}
		for _, ch := range c.Choices {
			role += ch.Delta.Role
			text += ch.Delta.Content
			for _, tc := range ch.Delta.ToolCalls {
				args += tc.Function.Arguments
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if role != "assistant" || text != "Hi there" || args != `{"city":"Paris"}` || finish != "tool_calls" || !usage || !done {
		t.Fatalf("role %q text %q args %q finish %q usage %v done %v", role, text, args, finish, usage, done)
	}
	r := s.Requests()
	if len(r) != 1 || r[0].Messages[0].Content != "a b" || !r[0].Stream || !r[0].IncludeUsage || r[0].Authorization != "Bearer sk-k" {
		t.Fatalf("recorded %+v", r)
	}
	if resp := post(t, s, "sk-wrong-0000", `{}`); resp.StatusCode != 401 {
		t.Fatalf("a wrong key: %d", resp.StatusCode)
	}
}

// TestFailures: Cut breaks the connection mid-answer; Hang answers
// nothing until Close.
func TestFailures(t *testing.T) {
	s := NewServer(Config{Respond: func(r Request) Reply {
		if r.Model == "hang" {
			return Reply{Hang: true}
		}
		return Reply{Tokens: []string{"a", "b"}, Cut: true}
	}})
	for _, stream := range []string{"true", "false"} {
		resp := post(t, s, "", `{"model":"m","stream":`+stream+`}`)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "unexpected EOF") {
			t.Errorf("stream %s: read %q without the cut's error (%v)", stream, b, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(s.URL+"/chat/completions", "application/json", strings.NewReader(`{"model":"hang"}`))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	for s.Count() < 3 {
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	s.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a hanging provider answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the hanging request")
	}
}
