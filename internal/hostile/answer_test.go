package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// endless streams chunks made by mk until the router cancels the request
// or limit chunks went out, and reports how many went out.
func endless(n *wsNode, req request, limit int, mk func(i int) wire.Chunk) int {
	for i := range limit {
		select {
		case <-req.Canceled:
			return i
		default:
		}
		if n.chunk(req.ID, mk(i)) != nil {
			return i
		}
	}
	_ = n.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"})
	return limit
}

// TestThinkingCountsAgainstTheLimit: a node that answers with endless
// thinking is cut at --max-response-chars whether or not the consumer sees
// the thinking, in every dialect, streamed or not; thinking the consumer
// did not ask for is never relayed; the node is told to stop.
func TestThinkingCountsAgainstTheLimit(t *testing.T) {
	r := startRouter(t) // --max-response-chars 4096, the default
	const limit = 4096
	n := mustDialNode(t, r, freshIP())
	var sent atomic.Int64 // chunks sent for the last request
	thought := strings.Repeat("é", 999) + " "
	n.serve(func(req request) {
		sent.Store(int64(endless(n, req, 100_000, func(int) wire.Chunk {
			return wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Thinking: thought}}
		})))
	})
	if err := n.register("thinker", 4, model("thinker:1", 1e9, "completion", "thinking")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dialect string
		extra         map[string]any
		think         bool
	}{
		{"v1, think:false", "v1", map[string]any{"think": false}, false},
		{"v1, think:true", "v1", map[string]any{"think": true}, true},
		{"OpenAI, streamed, no reasoning asked", "openai", nil, false},
		{"OpenAI, not streamed, no reasoning asked", "openai", map[string]any{"stream": false}, false},
		{"OpenAI, not streamed, reasoning_effort high", "openai", map[string]any{"stream": false, "reasoning_effort": "high"}, true},
		{"Ollama, streamed, think:false", "ollama", map[string]any{"think": false}, false},
		{"Ollama, not streamed, think:true", "ollama", map[string]any{"stream": false, "think": true}, true},
	}
	c := clientFrom(freshIP())
	for i, tc := range cases {
		canceled := n.canceled.Load()
		a, err := r.chat(context.Background(), c, tc.dialect, chatBody(tc.dialect, "thinker:1", fmt.Sprintf("think %d", i), tc.extra), nil)
		if err != nil || a.Status != http.StatusOK {
			t.Errorf("%s: %d %v %.300s", tc.name, a.Status, err, a.Body)
			continue
		}
		shown := utf8.RuneCountInString(a.Reasoning)
		if a.Finish != "length" || a.Content != "" {
			t.Errorf("%s: finish %q, content %.80q; want the length limit and no content", tc.name, a.Finish, a.Content)
		}
		if !tc.think && shown != 0 {
			t.Errorf("%s: %d characters of thinking relayed that the consumer did not ask for", tc.name, shown)
		}
		if tc.think && (shown > limit || shown < limit-1000) {
			t.Errorf("%s: %d characters of thinking relayed; want the first %d", tc.name, shown, limit)
		}
		if a.Bytes > 64<<10 {
			t.Errorf("%s: a %d-byte answer for a %d-character limit", tc.name, a.Bytes, limit)
		}
		eventually(t, "the cancel of "+tc.name, 5*time.Second, func() bool { return n.canceled.Load() > canceled })
		eventually(t, "the node to stop", 5*time.Second, func() bool { return sent.Load() > 0 })
		observe(t, "endless thinking, "+tc.name, fmt.Sprintf("--max-response-chars %d counts thinking", limit),
			"finish %q after %d thinking characters shown (of %d sent); %d-byte answer; node canceled after %d chunks of 1,000",
			a.Finish, shown, sent.Load()*1000, a.Bytes, sent.Load())
		sent.Store(0)
	}
}

// TestUnlimitedAnswersAreStillBounded: with the response limits off, a
// node sending 200 KB chunks without end cannot make a non-streamed answer
// collect without bound: the router stops at its collection bound (8 MiB),
// answers 502 and cancels the node.
func TestUnlimitedAnswersAreStillBounded(t *testing.T) {
	r := startRouter(t, "--max-response-chars", "0", "--response-timeout", "0")
	n := mustDialNode(t, r, freshIP())
	block := strings.Repeat("x", 200_000)
	var sent atomic.Int64
	n.serve(func(req request) {
		sent.Store(int64(endless(n, req, 1000, func(int) wire.Chunk {
			return wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: block}}
		})))
	})
	if err := n.register("gusher", 4, model("gusher:1", 1e9)); err != nil {
		t.Fatal(err)
	}
	base := r.rss()
	c := clientFrom(freshIP())
	for _, dialect := range []string{"openai", "ollama"} {
		canceled := n.canceled.Load()
		start := time.Now()
		a, err := r.chat(context.Background(), c, dialect, chatBody(dialect, "gusher:1", "say a lot", map[string]any{"stream": false}), nil)
		if err != nil || a.Status != http.StatusBadGateway || a.Bytes > 4<<10 {
			t.Errorf("%s: %d %v, %d bytes %.200q; want a short 502", dialect, a.Status, err, a.Bytes, a.Body)
		}
		eventually(t, "the node's cancel", 10*time.Second, func() bool { return n.canceled.Load() > canceled })
		eventually(t, "the node to stop", 5*time.Second, func() bool { return sent.Load() > 0 })
		observe(t, "endless 200 KB chunks, "+dialect+" not streamed, limits off", "8 MiB collected at most",
			"%d after %s: %d-byte body %.90q; node canceled after %d chunks (%s)", a.Status, ms(time.Since(start)), a.Bytes,
			strings.TrimSpace(a.Body), sent.Load(), mib(sent.Load()*200_000))
		sent.Store(0)
	}
	if hwm := r.hwm(); hwm-base > 128<<20 {
		t.Errorf("router VmHWM grew from %s to %s", mib(base), mib(hwm))
	} else {
		t.Logf("router VmRSS %s before, VmHWM %s after", mib(base), mib(hwm))
	}
}

// TestAbsurdMetrics: a node whose final chunk reports negative counts,
// durations of hundreds of years or numbers no integer holds neither
// crashes the router nor cuts the answer: it arrives whole, and what each
// dialect reports of it is plausible.
func TestAbsurdMetrics(t *testing.T) {
	r := startRouter(t, "--stall-timeout", "5s")
	variants := []struct{ name, metrics string }{
		{"negative counts and durations", `"eval_count":-5,"prompt_eval_count":-1,"eval_duration":-1,"prompt_eval_duration":-7,"load_duration":-1,"total_duration":-1`},
		{"2^63-1 durations, 2^62 counts", `"eval_count":4611686018427387904,"prompt_eval_count":4611686018427387904,"eval_duration":9223372036854775807,"load_duration":9223372036854775807,"total_duration":9223372036854775807`},
		{"-2^63 durations", `"eval_duration":-9223372036854775808,"total_duration":-9223372036854775808,"eval_count":3`},
		{"2^24 tokens for 3 chunks in 1 ns", `"eval_count":16777216,"eval_duration":1,"prompt_eval_count":16777216`},
		{"1e30 ns", `"eval_count":3,"eval_duration":1e30,"total_duration":1e30`},
		{"fractional counts", `"eval_count":2.5,"prompt_eval_count":0.5,"eval_duration":1.5`},
	}
	n := mustDialNode(t, r, freshIP())
	var which atomic.Int64
	n.serve(func(req request) {
		v := variants[which.Load()]
		for _, w := range []string{"one", " two", " three"} {
			if n.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: w}}) != nil {
				return
			}
		}
		_ = n.sendRaw([]byte(`{"type":"inference_chunk","request_id":` + jsonQuote(req.ID) +
			`,"chunk":{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",` + v.metrics + `}}`))
	})
	if err := n.register("metrics", 4, model("metrics:1", 1e9)); err != nil {
		t.Fatal(err)
	}
	c := clientFrom(freshIP())
	for i, v := range variants {
		which.Store(int64(i))
		var got []string
		for _, dialect := range []string{"v1", "openai", "ollama"} {
			extra := map[string]any{}
			if dialect != "v1" {
				extra["stream"] = false
			}
			start := time.Now()
			a, err := r.chat(context.Background(), c, dialect, chatBody(dialect, "metrics:1", "count to three", extra), nil)
			if err != nil || a.Status != http.StatusOK || a.Content != "one two three" || a.Finish != "stop" || len(a.Errors) > 0 {
				t.Errorf("%s, %s: %d %v content %q finish %q errors %q after %s; want the whole answer", v.name, dialect, a.Status, err, a.Content, a.Finish, a.Errors, ms(time.Since(start)))
				got = append(got, dialect+": cut ("+strings.Join(a.Errors, "; ")+")")
				continue
			}
			for k, val := range a.Usage {
				if val < 0 || (strings.HasSuffix(k, "tokens") || strings.HasSuffix(k, "count")) && val > 1000 ||
					strings.HasSuffix(k, "duration") && val > float64(time.Hour) {
					t.Errorf("%s, %s: reports %s = %v", v.name, dialect, k, val)
				}
			}
			got = append(got, fmt.Sprintf("%s %v", dialect, usageText(a.Usage)))
		}
		observe(t, "final chunk with "+v.name, "implausible metrics read as unknown",
			"answer whole in all dialects; reported: %s", strings.Join(got, "; "))
	}
	if c, err := r.get(clientFrom(freshIP()), "/health", nil); err != nil || c != http.StatusOK {
		t.Errorf("/health after the absurd metrics: %d %v", c, err)
	}
}

func usageText(u map[string]float64) string {
	var parts []string
	for _, k := range []string{"prompt_tokens", "completion_tokens", "eval_count", "prompt_eval_count", "eval_duration", "total_duration"} {
		if v, ok := u[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%g", k, v))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
