package server

import (
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestOutboundFilter: a pattern split across chunks is still replaced, in
// answer text and in thinking text.
func TestOutboundFilter(t *testing.T) {
	tests := []struct {
		name     string
		thinking bool
		chunks   []string
		want     string
	}{
		{name: "answer, split tag", chunks: []string{"Click <scr", "ipt>alert(1)"}, want: "Click [content filtered]alert(1)"},
		{name: "answer, split three ways", chunks: []string{"a <S", "CRI", "PT src=x>"}, want: "a [content filtered]src=x>"},
		{name: "answer, javascript: URL", chunks: []string{"go to java", "script:alert(1)"}, want: "go to [content filtered]alert(1)"},
		{name: "answer, data:text/html", chunks: []string{"see data:te", "xt/html;base64,xx"}, want: "see [content filtered];base64,xx"},
		{name: "answer, harmless text", chunks: []string{"Java", "Script is a language; <scr", "oll> is not a tag"},
			want: "JavaScript is a language; <scroll> is not a tag"},
		{name: "answer, pattern at the very end", chunks: []string{"bye <script", ">"}, want: "bye [content filtered]"},
		{name: "thinking, split tag", thinking: true, chunks: []string{"maybe <scr", "ipt>x"}, want: "maybe [content filtered]x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			node := h.registerNode(t, "n", 1, model("m:latest", 1, "completion", "thinking"))
			body := userChat("m", "hi")
			body.Think = tc.thinking // thinking reaches only a consumer who asked for it
			streamc := h.openChatAsync(t, body)
			req := node.expect(wire.TypeInferenceReq)
			for _, c := range tc.chunks {
				if tc.thinking {
					node.thinking(req.RequestID, c)
				} else {
					node.content(req.RequestID, c)
				}
			}
			node.finish(req.RequestID, 1, 1)
			s := streamc.wait(t)
			tr := s.all(t)
			got := tr.Content
			if tc.thinking {
				got = tr.Reasoning
			}
			if got != tc.want {
				t.Errorf("consumer saw %q, want %q", got, tc.want)
			}
			if raw := strings.ToLower(s.rawText()); strings.Contains(raw, "<script") || strings.Contains(raw, "javascript:") ||
				strings.Contains(raw, "data:text/html") {
				t.Errorf("pattern reached the consumer: %s", s.rawText())
			}
		})
	}
}

// TestResponseLengthLimit: the answer stops at the limit with a notice,
// finish_reason "length", and the node is told to stop.
func TestResponseLengthLimit(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.dispatch.MaxResponseChars = 10 })
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := node.expect(wire.TypeInferenceReq)
	node.content(req.RequestID, "0123456")
	node.content(req.RequestID, "789abcdef")
	c := node.expectWithin(time.Second, wire.TypeCancelRequest)
	if c.RequestID != req.RequestID {
		t.Fatalf("cancel_request for %q", c.RequestID)
	}
	tr := streamc.wait(t).all(t)
	if tr.Content != "0123456789" {
		t.Errorf("content %q, want the first 10 characters", tr.Content)
	}
	if len(tr.Errors) != 1 || tr.Errors[0] != "\n\n[Error: response length limit reached]" || tr.Finish != "length" {
		t.Errorf("errors %q finish %q", tr.Errors, tr.Finish)
	}
	// The node's late chunks go nowhere.
	node.content(req.RequestID, "late")
	node.finish(req.RequestID, 1, 1)
}

// TestResponseTimeLimit: an answer that takes too long ends with a notice,
// and the node is told to stop.
func TestResponseTimeLimit(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.dispatch.ResponseTimeout = 300 * time.Millisecond
		c.dispatch.PingInterval = time.Hour
	})
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := node.expect(wire.TypeInferenceReq)
	// The node never answers.
	s := streamc.wait(t)
	tr := s.all(t)
	if tr.Content != "" || len(tr.Errors) != 1 || tr.Errors[0] != "\n\n[Error: response time limit reached]" || tr.Finish != "error" {
		t.Errorf("got %+v", tr)
	}
	c := node.expect(wire.TypeCancelRequest)
	if c.RequestID != req.RequestID {
		t.Errorf("cancel_request for %q", c.RequestID)
	}
}

// TestKeepAlivePing: a silent node makes the router send ": ping" comments.
func TestKeepAlivePing(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.dispatch.PingInterval = 40 * time.Millisecond })
	node := h.registerNode(t, "n", 1, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := node.expect(wire.TypeInferenceReq)
	node.content(req.RequestID, "first")
	s := streamc.wait(t)
	if got, _ := s.nextChunk(t).content(); got != "first" {
		t.Fatalf("content %q", got)
	}
	for i := range 2 {
		if ev := s.next(t); ev.Comment != "ping" {
			t.Fatalf("event %d while the node is silent: %+v, want a ping comment", i, ev)
		}
	}
	node.content(req.RequestID, " second")
	node.finish(req.RequestID, 1, 1)
	tr := s.all(t)
	if tr.Content != " second" || tr.Finish != "stop" {
		t.Errorf("got %+v", tr)
	}
	if !strings.Contains(s.rawText(), "\n\n: ping\n\n") {
		t.Errorf("ping is not a comment line of its own: %q", s.rawText())
	}
}
