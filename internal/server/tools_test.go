package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/tools"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// fakeSearx is a SearXNG instance that records every query.
type fakeSearx struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values
}

const searxResults = `{"query":"go","results":[
 {"url":"https://go.dev/","title":"The Go Programming Language","content":"Go is an open source programming language."},
 {"url":"https://en.wikipedia.org/wiki/Go_(programming_language)","title":"Go (programming language)","content":"Go is a statically typed language."}
]}`

// wantToolText is what the tool message carries for searxResults.
const wantToolText = "1. The Go Programming Language\nhttps://go.dev/\nGo is an open source programming language.\n\n" +
	"2. Go (programming language)\nhttps://en.wikipedia.org/wiki/Go_(programming_language)\nGo is a statically typed language."

func newFakeSearx(t *testing.T) *fakeSearx {
	t.Helper()
	f := &fakeSearx{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.Query())
		f.mu.Unlock()
		if r.Method != http.MethodGet || r.URL.Path != "/search" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(searxResults))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSearx) calls() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.queries...)
}

func withSearch(f *fakeSearx) func(*harnessConfig) {
	return func(c *harnessConfig) {
		c.dispatch.Search = &tools.WebSearch{BaseURL: f.URL, Client: f.Client(), Timeout: 2 * time.Second}
		c.closers = append(c.closers, f.Close)
	}
}

func nativeCall(args string) wire.ChunkMessage {
	return wire.ChunkMessage{ToolCalls: []ollama.ToolCall{{Function: ollama.ToolFunction{Name: "web_search", Arguments: json.RawMessage(args)}}}}
}

func (n *fakeNode) end(reqID string) {
	n.t.Helper()
	n.send(wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: reqID,
		Chunk: wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop"}})
}

func jsonEqual(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestToolRound: a native tool call and the text form each drive a full
// round: tool events to the consumer, a second request with the tool turn
// and the results, the final answer streamed, no tags shown.
func TestToolRound(t *testing.T) {
	tests := []struct {
		name        string
		model       wire.Model
		firstAnswer []wire.ChunkMessage // the node's first round, before done
		wantTools   bool                // the first request offers tools natively
		wantPrompt  bool                // the first request's system prompt offers the tag form
		wantText    string              // the assistant text of the tool turn
		wantShown   string              // what the consumer sees of the first round
	}{
		{
			name:        "native tool call",
			model:       model("tooly:latest", 1, "completion", "tools"),
			firstAnswer: []wire.ChunkMessage{nativeCall(`{"query":"go"}`)},
			wantTools:   true,
		},
		{
			name:  "text form split across chunks",
			model: model("plain:latest", 1, "completion"),
			firstAnswer: []wire.ChunkMessage{
				{Content: "Let me look. <tool_"},
				{Content: `call>{"name":"web_search","argu`},
				{Content: `ments":{"query":"go"}}</tool`},
				{Content: "_call>"},
			},
			wantPrompt: true,
			wantText:   "Let me look. ",
			wantShown:  "Let me look. ",
		},
		{
			name:        "text form, upper case, in one chunk",
			model:       model("plain:latest", 1, "completion"),
			firstAnswer: []wire.ChunkMessage{{Content: `<TOOL_CALL>{"name": "web_search", "arguments": {"query": "go"}}</Tool_Call>`}},
			wantPrompt:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			searx := newFakeSearx(t)
			h := newHarness(t, withSearch(searx))
			node := h.registerNode(t, "n", 1, tc.model)
			streamc := h.openChatAsync(t, userChat(strings.TrimSuffix(tc.model.Name, ":latest"), "what is go?"))

			req := node.expect(wire.TypeInferenceReq)
			_, hasTools := req.ParamKeys["tools"]
			if hasTools != tc.wantTools {
				t.Errorf("tools offered natively: %v, want %v", hasTools, tc.wantTools)
			}
			if tc.wantTools && !jsonEqual(t, req.Params.Tools, json.RawMessage("["+string((&tools.WebSearch{}).Definition())+"]")) {
				t.Errorf("tools %s", req.Params.Tools)
			}
			sys := req.Params.Messages[0]
			if hasPrompt := strings.Contains(sys.Content, "<tool_call>"); sys.Role != "system" || hasPrompt != tc.wantPrompt {
				t.Errorf("system prompt offers the tag form: %v, want %v", hasPrompt, tc.wantPrompt)
			}
			for _, m := range tc.firstAnswer {
				node.chunk(req.RequestID, m)
			}
			node.end(req.RequestID)

			req2 := node.expect(wire.TypeInferenceReq)
			msgs := req2.Params.Messages
			if len(msgs) != len(req.Params.Messages)+2 {
				t.Fatalf("second request has %d messages, want %d", len(msgs), len(req.Params.Messages)+2)
			}
			turn, result := msgs[len(msgs)-2], msgs[len(msgs)-1]
			if turn.Role != "assistant" || turn.Content != tc.wantText || len(turn.ToolCalls) != 1 ||
				turn.ToolCalls[0].Function.Name != "web_search" || !jsonEqual(t, turn.ToolCalls[0].Function.Arguments, json.RawMessage(`{"query":"go"}`)) {
				t.Errorf("tool turn %+v", turn)
			}
			if result.Role != "tool" || result.ToolName != "web_search" || result.Content != wantToolText {
				t.Errorf("tool result %+v", result)
			}
			if calls := searx.calls(); len(calls) != 1 || calls[0].Get("q") != "go" || calls[0].Get("format") != "json" ||
				calls[0].Get("categories") != "general" {
				t.Errorf("SearXNG calls %v", calls)
			}

			node.content(req2.RequestID, "Go is a language.")
			node.finish(req2.RequestID, 10, 5)
			s := streamc.wait(t)
			tr := s.all(t)
			if tr.Content != tc.wantShown+"Go is a language." {
				t.Errorf("consumer saw %q", tr.Content)
			}
			if strings.Contains(strings.ToLower(s.rawText()), "tool_call>") || strings.Contains(s.rawText(), "{\\\"query") {
				t.Errorf("tags or call arguments reached the consumer: %s", s.rawText())
			}
			if want := []string{"web_search:executing", "web_search:done"}; strings.Join(tr.Tools, ",") != strings.Join(want, ",") {
				t.Errorf("tool events %v, want %v", tr.Tools, want)
			}
			if tr.Finish != "stop" || len(tr.Errors) != 0 {
				t.Errorf("finish %q errors %v", tr.Finish, tr.Errors)
			}
			// The tool events come between the rounds' text, in order.
			var order []string
			for _, p := range tr.Payloads {
				switch d := p.Choices[0].Delta; {
				case d.ToolCall != nil:
					order = append(order, d.ToolCall.Status)
				case d.Content != nil:
					order = append(order, "text")
				}
			}
			if got := strings.Join(order, ","); !strings.HasSuffix(got, "executing,done,text") {
				t.Errorf("event order %s", got)
			}
		})
	}
}

// TestToolsNotConfigured: with no search backend, tool calls a node emits
// trigger nothing: no search, tags stripped, one round only.
func TestToolsNotConfigured(t *testing.T) {
	searx := newFakeSearx(t) // exists, but the router is not told of it
	h := newHarness(t)
	node := h.registerNode(t, "n", 1, model("tooly:latest", 1, "completion", "tools"))
	streamc := h.openChatAsync(t, userChat("tooly", "hi"))
	req := node.expect(wire.TypeInferenceReq)
	if _, ok := req.ParamKeys["tools"]; ok {
		t.Error("tools offered with no search backend")
	}
	if strings.Contains(req.Params.Messages[0].Content, "tool_call") {
		t.Error("tag prompt offered with no search backend")
	}
	node.content(req.RequestID, `before <tool_call>{"name":"web_search","arguments":{"query":"go"}}</tool_call> after`)
	node.chunk(req.RequestID, nativeCall(`{"query":"go"}`))
	node.finish(req.RequestID, 1, 1)
	tr := streamc.wait(t).all(t)
	if tr.Content != "before  after" {
		t.Errorf("consumer saw %q", tr.Content)
	}
	if len(tr.Tools) != 0 || tr.Finish != "stop" {
		t.Errorf("tools %v finish %q", tr.Tools, tr.Finish)
	}
	// [DONE] came after a single round: a second one would have needed the
	// node to answer again.
	node.noFrame()
	if n := len(searx.calls()); n != 0 {
		t.Errorf("%d SearXNG calls", n)
	}
}

// TestToolInvalidArguments: a call without a query is answered to the
// model with an error; SearXNG is not called.
func TestToolInvalidArguments(t *testing.T) {
	tests := []struct{ name, args string }{
		{"no query", `{}`},
		{"empty query", `{"query":"   "}`},
		{"query not a string", `{"query":5}`},
		{"unknown key", `{"query":"go","site":"x"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			searx := newFakeSearx(t)
			h := newHarness(t, withSearch(searx))
			node := h.registerNode(t, "n", 1, model("tooly:latest", 1, "completion", "tools"))
			streamc := h.openChatAsync(t, userChat("tooly", "hi"))
			req := node.expect(wire.TypeInferenceReq)
			node.chunk(req.RequestID, nativeCall(tc.args))
			node.end(req.RequestID)
			req2 := node.expect(wire.TypeInferenceReq)
			last := req2.Params.Messages[len(req2.Params.Messages)-1]
			if last.Role != "tool" || !strings.HasPrefix(last.Content, "Error: invalid arguments") {
				t.Errorf("tool message %+v", last)
			}
			node.content(req2.RequestID, "sorry")
			node.finish(req2.RequestID, 1, 1)
			tr := streamc.wait(t).all(t)
			if tr.Content != "sorry" || len(tr.Tools) != 0 {
				t.Errorf("consumer saw %+v", tr)
			}
			if n := len(searx.calls()); n != 0 {
				t.Errorf("%d SearXNG calls for invalid arguments", n)
			}
		})
	}
}

// TestToolRoundsLimit: a model that never stops calling tools ends with an
// error event after the last allowed round.
func TestToolRoundsLimit(t *testing.T) {
	searx := newFakeSearx(t)
	h := newHarness(t, withSearch(searx))
	node := h.registerNode(t, "n", 1, model("tooly:latest", 1, "completion", "tools"))
	streamc := h.openChatAsync(t, userChat("tooly", "hi"))
	rounds := 0
	for ; rounds < 6; rounds++ {
		req := node.expect(wire.TypeInferenceReq)
		node.chunk(req.RequestID, nativeCall(`{"query":"go"}`))
		node.end(req.RequestID)
	}
	tr := streamc.wait(t).all(t)
	if len(tr.Errors) != 1 || tr.Errors[0] != "\n\n[Error: too many tool rounds]" || tr.Finish != "error" {
		t.Errorf("got errors %q finish %q, want one too-many-rounds error", tr.Errors, tr.Finish)
	}
	if n := len(searx.calls()); n != 5 {
		t.Errorf("%d SearXNG calls, want 5", n)
	}
	if n := len(tr.Tools); n != 10 {
		t.Errorf("%d tool events, want 5 executing + 5 done", n)
	}
	node.noFrame()
}
