package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// fakeSearch is a SearXNG that answers every search with one result and
// counts the searches.
func fakeSearch(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"results":[{"title":"A result","url":"https://example.org/","content":"a snippet"}]}`))
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func searchCalls(n int, args string) []ollama.ToolCall {
	out := make([]ollama.ToolCall, n)
	for i := range out {
		out[i] = ollama.ToolCall{Function: ollama.ToolFunction{Name: "web_search", Arguments: json.RawMessage(args)}}
	}
	return out
}

// TestToolCallBounds: with web search on, a node that asks for more tool
// calls than a round allows, more rounds than a request allows, calls
// that break the frame's bounds or more searches than its address may
// run, gets none of them run beyond the bound, and the consumer an
// explicit error.
func TestToolCallBounds(t *testing.T) {
	search, searches := fakeSearch(t)
	r := startRouter(t, "--searxng-url", search.URL)
	n := mustDialNode(t, r, freshIP())
	n.serve(func(req request) {
		id := req.ID
		done := func(text string) {
			if text != "" {
				_ = n.chunk(id, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: text}})
			}
			_ = n.chunk(id, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"})
		}
		calls := func(k int, args string) {
			_ = n.chunk(id, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", ToolCalls: searchCalls(k, args)}})
		}
		switch req.lastUser() {
		case "sixteen calls":
			calls(16, `{"query":"q"}`)
			done("")
		case "seventeen calls":
			calls(17, `{"query":"q"}`)
			done("after")
		case "nine calls in three chunks":
			for range 3 {
				calls(3, `{"query":"q"}`)
			}
			done("")
		case "one call per round, forever":
			calls(1, `{"query":"q"}`)
			done("")
		case "a 70 KiB argument":
			calls(1, `{"query":"`+strings.Repeat("q", 70<<10)+`"}`)
			done("after")
		case "nine tags":
			done(strings.Repeat(`<tool_call>{"name": "web_search", "arguments": {"query": "q"}}</tool_call>`, 9))
		}
	})
	if err := n.register("tooly", 4, model("tooly:1", 1e9, "completion", "tools"), model("tagger:1", 1e9, "completion")); err != nil {
		t.Fatal(err)
	}
	c := clientFrom(freshIP())
	cases := []struct {
		prompt, model, bound, wantErr, wantContent string
		wantSearches                               int64
	}{
		{"sixteen calls", "tooly:1", "--max-tool-calls 8 per round", "the model asked for too many tool calls", "", 0},
		{"nine calls in three chunks", "tooly:1", "--max-tool-calls 8 per round, over chunks", "the model asked for too many tool calls", "", 0},
		{"nine tags", "tagger:1", "--max-tool-calls 8 per round, text tags", "the model asked for too many tool calls", "", 0},
		{"seventeen calls", "tooly:1", "16 tool calls per chunk: the frame is refused", "", "after", 0},
		{"a 70 KiB argument", "tooly:1", "64 KiB of arguments: the frame is refused", "", "after", 0},
		{"one call per round, forever", "tooly:1", "--max-tool-rounds 5", "too many tool rounds", "", 5},
	}
	for _, tc := range cases {
		before := searches.Load()
		start := time.Now()
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", tc.model, tc.prompt, nil), nil)
		ran := searches.Load() - before
		if err != nil || a.Status != http.StatusOK || !a.Done {
			t.Errorf("%s: %d %v %.200q", tc.prompt, a.Status, err, a.Body)
			continue
		}
		if ran != tc.wantSearches {
			t.Errorf("%s: %d searches ran, want %d", tc.prompt, ran, tc.wantSearches)
		}
		if tc.wantErr != "" && (len(a.Errors) != 1 || a.Errors[0] != tc.wantErr) {
			t.Errorf("%s: errors %q, want %q", tc.prompt, a.Errors, tc.wantErr)
		}
		if tc.wantErr == "" && (len(a.Errors) > 0 || a.Content != tc.wantContent || a.Finish != "stop") {
			t.Errorf("%s: %q finish %q errors %q; want %q", tc.prompt, a.Content, a.Finish, a.Errors, tc.wantContent)
		}
		if strings.Contains(a.Content, "tool_call") {
			t.Errorf("%s: the consumer saw tool-call text: %.200q", tc.prompt, a.Content)
		}
		what := fmt.Sprintf("%q", a.Errors)
		if tc.wantErr == "" {
			what = fmt.Sprintf("answer %q, finish %q", a.Content, a.Finish)
		}
		observe(t, "tool calls: "+tc.prompt, tc.bound, "%d searches run; consumer got %s in %s, %d tool events", ran, what, ms(time.Since(start)), len(a.Tools))
	}
	if !n.isOpen() {
		t.Fatal("the node was disconnected for its refused frames")
	}
	// The searches of one address are budgeted (--tool-calls-per-minute
	// 20, refilled one per 3 s): a node looping tool rounds gets no more.
	start := time.Now()
	total := searches.Load()
	var last answer
	for i := 0; i < 10 && !strings.Contains(strings.Join(last.Errors, ""), "too many web searches"); i++ {
		var err error
		if last, err = r.chat(context.Background(), c, "v1", chatBody("v1", "tooly:1", "one call per round, forever", nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	ran := searches.Load()
	allowed := int64(20 + time.Since(start)/(3*time.Second) + 1)
	if ran > allowed || !strings.Contains(strings.Join(last.Errors, ""), "too many web searches") {
		t.Errorf("%d searches from one address in %s (budget %d), last errors %q", ran, time.Since(start), allowed, last.Errors)
	}
	observe(t, "tool rounds looped over several requests", "--tool-calls-per-minute 20 per address",
		"%d searches in all (%d in this loop over %s), then %q", ran, ran-total, ms(time.Since(start)), last.Errors)
}
