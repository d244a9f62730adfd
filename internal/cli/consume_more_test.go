package cli

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/client"
)

const usageChunk = `{"id":"chatcmpl-3f2a9c1b7d4e","object":"chat.completion.chunk","model":"m","choices":[{"delta":{},"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":26,"completion_tokens":9,"total_tokens":35}}`

// TestConsumeResolvesTheModel: --model stories reaches a network that
// lists stories:latest under that name (a v1 router matches exactly), and
// a name the network lists is sent as it is.
func TestConsumeResolvesTheModel(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"qwen3:0.6b", "stories:latest", "plain"}}
	url := f.start(t)
	for _, tc := range []struct{ given, sent string }{
		{"stories", "stories:latest"},
		{"stories:latest", "stories:latest"},
		{"plain:latest", "plain"},
		{"qwen3:0.6b", "qwen3:0.6b"},
	} {
		code, out, stderr := run(t, "", "consume", "--server", url, "--model", tc.given, "--prompt", "hi")
		reqs := f.requests()
		if code != 0 || out != "Hello world\n" || reqs[len(reqs)-1].Model != tc.sent {
			t.Errorf("--model %s: exit %d, stdout %q, stderr %q, sent %q; want %q", tc.given, code, out, stderr, reqs[len(reqs)-1].Model, tc.sent)
		}
	}
}

// TestConsumeThinkOnAModelThatCannot: --think on a model the network lists
// without the thinking capability warns and asks without thinking.
func TestConsumeThinkOnAModelThatCannot(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"qwen3:0.6b", "stories:latest"}, caps: map[string]client.Capabilities{
		"qwen3:0.6b": {Thinking: true}, "stories:latest": {}}}
	url := f.start(t)
	code, out, stderr := run(t, "", "consume", "--server", url, "--model", "stories", "--think", "--prompt", "hi")
	if code != 0 || out != "Hello world\n" || !strings.Contains(stderr, "stories:latest cannot think") || !strings.Contains(stderr, "asking without --think") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if r := f.requests(); r[0].Think {
		t.Error("think:true sent to a model that cannot think")
	}
	code, _, stderr = run(t, "", "consume", "--server", url, "--model", "qwen3:0.6b", "--think", "--prompt", "hi")
	if r := f.requests(); code != 0 || !r[1].Think || strings.Contains(stderr, "cannot think") {
		t.Errorf("a thinking model: exit %d, think %v, stderr %q", code, r[1].Think, stderr)
	}
}

// TestConsumeSystemMaxTokensStats: --system and --max-tokens reach the
// router as system and options.num_predict; --stats prints the answer's
// figures and the router's usage to stderr.
func TestConsumeSystemMaxTokensStats(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}, chat: func(w http.ResponseWriter, r *http.Request) {
		sse(w, delta(`{"content":"Hello"}`), delta(`{"content":" world"}`), usageChunk, "[DONE]")
	}}
	url := f.start(t)
	code, out, stderr := run(t, "", "consume", "--server", url, "--model", "m", "--prompt", "hi", "--system", "Be brief.", "--max-tokens", "64", "--stats")
	if code != 0 || out != "Hello world\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	req := f.requests()[0]
	if req.System != "Be brief." || string(req.Options) != `{"num_predict":64}` {
		t.Errorf("system %q, options %s", req.System, req.Options)
	}
	if !strings.Contains(stderr, "[stats: 9 answer tokens") || !strings.Contains(stderr, "first token after") ||
		!strings.Contains(stderr, "usage: prompt 26, completion 9, total 35 tokens]") {
		t.Errorf("stats: %q", stderr)
	}
	if code, _, stderr := run(t, "", "consume", "--server", url, "--model", "m", "--prompt", "hi", "--max-tokens", "0"); code != 2 || !strings.Contains(stderr, "--max-tokens") {
		t.Errorf("--max-tokens 0: exit %d, %q", code, stderr)
	}
}

// TestStatsLine: tokens/s is given only for 2 tokens or more over 50 ms or
// more, counted from the first token.
func TestStatsLine(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &answerPrinter{first: t0.Add(500 * time.Millisecond), chunks: 3, usage: &client.Usage{CompletionTokens: 10}}
	got := statsLine(p, t0, t0.Add(2500*time.Millisecond))
	want := "[stats: 10 answer tokens, 5.0 tokens/s; first token after 0.50 s; 2.50 s in all; usage: completion 10 tokens]"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	p = &answerPrinter{first: t0, chunks: 1}
	if got := statsLine(p, t0, t0.Add(time.Second)); strings.Contains(got, "/s") || !strings.Contains(got, "1 answer chunks") || !strings.Contains(got, "no usage") {
		t.Errorf("one chunk: %s", got)
	}
	p = &answerPrinter{first: t0, usage: &client.Usage{CompletionTokens: 5}}
	if got := statsLine(p, t0, t0.Add(10*time.Millisecond)); strings.Contains(got, "/s") {
		t.Errorf("10 ms: %s", got)
	}
}

// TestConsumeConversation: without --prompt, consume reads one message a
// line from stdin and sends each with the conversation so far.
func TestConsumeConversation(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}}
	url := f.start(t)
	code, out, stderr := run(t, "hello\n\n  \nhow are you?\r\n", "consume", "--server", url, "--model", "m")
	if code != 0 || out != "Hello world\nHello world\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	var got []string
	for _, m := range reqs[1].Messages {
		got = append(got, m.Role+":"+m.Content)
	}
	if want := "user:hello|assistant:Hello world|user:how are you?"; strings.Join(got, "|") != want {
		t.Errorf("second request %q, want %q", strings.Join(got, "|"), want)
	}
	// A failed turn is reported, left out of the history, and makes the exit 1.
	var failed atomic.Bool
	f2 := &fakeRouter{models: []string{"m"}}
	f2.before = func(w http.ResponseWriter, r *http.Request) bool {
		if failed.CompareAndSwap(false, true) {
			routerJSON(w, http.StatusBadRequest, `{"detail":"Message content not allowed"}`)
			return true
		}
		return false
	}
	url2 := f2.start(t)
	code, out, stderr = run(t, "bad\ngood\n", "consume", "--server", url2, "--model", "m")
	if code != 1 || out != "Hello world\n" || !strings.Contains(stderr, "Message content not allowed") {
		t.Fatalf("failed turn: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if r := f2.requests(); len(r) != 1 || len(r[0].Messages) != 1 || r[0].Messages[0].Content != "good" {
		t.Errorf("after a failed turn: %+v", r)
	}
}

// TestConsumeSaysItWaits: a request that waits in the router's queue says
// so on stderr, once per place, and the answer is untouched.
func TestConsumeSaysItWaits(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{models: []string{"m"}, chat: func(w http.ResponseWriter, r *http.Request) {
		sse(w, ": queued position=2", ": queued position=2", ": queued position=1", ": ping", delta(`{"content":"Hello"}`), "[DONE]")
	}}
	url := f.start(t)
	code, out, stderr := run(t, "", "consume", "--server", url, "--model", "m", "--prompt", "hi")
	want := "[waiting for a free node: position 2 in the queue]\n[waiting for a free node: position 1 in the queue]\n"
	if code != 0 || out != "Hello\n" || !strings.Contains(stderr, want) || strings.Count(stderr, "position 2") != 1 {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
