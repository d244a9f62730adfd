package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// wholeBody reads each /api/chat answer to its end before handing it over,
// so that every line of it has already arrived when the agent reads the
// first: the node link's view of an Ollama that is ahead of it.
type wholeBody struct{}

func (wholeBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.URL.Path != "/api/chat" {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// TestAgentNoQueueNoCoalescing: without JoinArrived, with the node link
// idle, every line goes out alone as Ollama sent it, even when the lines
// behind it have already arrived (nothing to wait for, so nothing is held).
func TestAgentNoQueueNoCoalescing(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Thinking: []string{"th", "ink"}, Tokens: []string{"Hel", "lo", ", ", "world"}}
		},
	}, func(c *Config) {
		c.Ollama.HTTP = &http.Client{Transport: wholeBody{}}
		c.HeartbeatInterval, c.ModelsPollInterval = time.Hour, time.Hour // nothing else on the link
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat) // the first heartbeat is no longer on the link
	rc.request(t, "r1", map[string]any{"model": "stories", "messages": []map[string]string{{"role": "user", "content": "hi"}}, "think": true})
	var texts []string
	for {
		f := rc.expectFor(t, "r1")
		var ic wire.InferenceChunk
		if err := json.Unmarshal(f.raw, &ic); err != nil {
			t.Fatal(err)
		}
		if ic.Chunk.Done {
			break
		}
		texts = append(texts, ic.Chunk.Message.Thinking+ic.Chunk.Message.Content)
	}
	if want := []string{"th", "ink", "Hel", "lo", ", ", "world"}; !slices.Equal(texts, want) {
		t.Errorf("frames = %q, want %q", texts, want)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

// gatedBody hands each /api/chat answer over in two parts: its first
// lines at once, the rest only when gate is closed, so that a test knows
// which lines had arrived when the agent read each one.
type gatedBody struct {
	first int           // lines in the first part
	gate  chan struct{} // closed: the rest may be read
}

func (g gatedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.URL.Path != "/api/chat" {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	cut := 0
	for range g.first {
		cut += bytes.IndexByte(b[cut:], '\n') + 1
	}
	resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b[:cut]), &waitReader{gate: g.gate, r: bytes.NewReader(b[cut:])}))
	return resp, nil
}

// waitReader blocks its first read until gate is closed.
type waitReader struct {
	gate chan struct{}
	r    io.Reader
}

func (w *waitReader) Read(p []byte) (int, error) {
	<-w.gate
	return w.r.Read(p)
}

// chunkTexts reads r1's frames up to n texts or the final chunk: each
// frame's thinking and content.
func chunkTexts(t *testing.T, rc *routerConn, n int) (texts []string, done bool) {
	t.Helper()
	for len(texts) < n {
		f := rc.expectFor(t, "r1")
		var ic wire.InferenceChunk
		if err := json.Unmarshal(f.raw, &ic); err != nil {
			t.Fatal(err)
		}
		if ic.Chunk.Done {
			return texts, true
		}
		texts = append(texts, ic.Chunk.Message.Thinking+ic.Chunk.Message.Content)
	}
	return texts, false
}

// TestAgentJoinsArrivedLines: with JoinArrived, lines that have already
// arrived go out together, texts joined, in one frame, even with the node
// link idle; a
// line is never held for one that has not arrived (the first frame comes
// while the rest of the answer is still held back); thinking and content
// are never joined.
func TestAgentJoinsArrivedLines(t *testing.T) {
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Thinking: []string{"th", "ink"}, Tokens: []string{"Hel", "lo", ", ", "world"}}
		},
	}, func(c *Config) {
		c.Ollama.HTTP = &http.Client{Transport: gatedBody{first: 4, gate: gate}}
		c.JoinArrived = true
		c.HeartbeatInterval, c.ModelsPollInterval = time.Hour, time.Hour // nothing else on the link
	})
	t.Cleanup(release) // before the harness's cleanups: no read is left blocked
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat) // the first heartbeat is no longer on the link
	rc.request(t, "r1", map[string]any{"model": "stories", "messages": []map[string]string{{"role": "user", "content": "hi"}}, "think": true})
	got, _ := chunkTexts(t, rc, 2) // sent before the rest has arrived
	release()
	rest, done := chunkTexts(t, rc, 10)
	if !done {
		t.Fatal("no final chunk")
	}
	got = append(got, rest...)
	if want := []string{"think", "Hello", ", world"}; !slices.Equal(got, want) {
		t.Errorf("frames = %q, want %q", got, want)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestCoalescer: text that may wait (the next line has arrived) is merged
// with the line behind it; thinking, content, tool calls and the final chunk
// are never merged with one another; each chunk sent is a v1 frame; what
// is held when the answer ends is sent.
func TestCoalescer(t *testing.T) {
	text := func(content, thinking string) wire.Chunk {
		return wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: content, Thinking: thinking}}
	}
	tool := wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", ToolCalls: []ollama.ToolCall{{Function: ollama.ToolFunction{Name: "web_search", Arguments: json.RawMessage(`{"q":"go"}`)}}}}}
	final := text("", "")
	final.Done, final.DoneReason = true, "stop"
	in := []struct {
		c    wire.Chunk
		wait bool
	}{
		{text("", "th"), true}, {text("", "ink"), true}, // merged; held over content
		{text("Hel", ""), true}, {text("lo", ""), true}, {text(", ", ""), false}, // merged, sent: nothing behind
		{text("world", ""), false},          // alone
		{text("!", ""), true}, {tool, true}, // not merged with a tool call
		{text("a", ""), true}, {final, true}, // not merged with the final chunk
	}
	var co coalescer
	var out []wire.Chunk
	send := func(c wire.Chunk) error {
		b, err := wire.AppendInferenceChunk(nil, wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: "r", Chunk: c})
		if err != nil {
			return err
		}
		if _, err := wire.DecodeNodeFrame(b); err != nil {
			t.Errorf("a v1 router would refuse %s: %v", b, err)
		}
		out = append(out, c)
		return nil
	}
	for _, x := range in {
		if err := co.push(x.c, x.wait, send); err != nil {
			t.Fatal(err)
		}
	}
	if err := co.flush(send); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range out {
		got = append(got, fmt.Sprintf("%s|%s|%d|%v", c.Message.Thinking, c.Message.Content, len(c.Message.ToolCalls), c.Done))
	}
	want := []string{"think||0|false", "|Hello, |0|false", "|world|0|false", "|!|0|false", "||1|false", "|a|0|false", "||0|true"}
	if !slices.Equal(got, want) {
		t.Errorf("sent %q\nwant %q", got, want)
	}

	// A text held when the answer ends (the line it waited for was blank).
	out = nil
	co = coalescer{}
	if err := co.push(text("x", ""), true, send); err != nil || len(out) != 0 {
		t.Fatalf("held text was sent at once: %v %v", out, err)
	}
	if err := co.flush(send); err != nil || len(out) != 1 || out[0].Message.Content != "x" {
		t.Fatalf("flush sent %v, %v", out, err)
	}
}

func TestMergeable(t *testing.T) {
	text := func(content, thinking string) wire.Chunk {
		return wire.Chunk{Message: &wire.ChunkMessage{Content: content, Thinking: thinking}}
	}
	final := text("", "")
	final.Done = true
	for _, c := range []struct {
		held, next wire.Chunk
		want       bool
	}{
		{text("a", ""), text("b", ""), true},
		{text("", "a"), text("", "b"), true},
		{text("a", ""), text("", ""), true},
		{text("a", ""), text("", "b"), false},
		{text("", "a"), text("b", ""), false},
		{text("a", "b"), text("c", ""), false},
		{text("a", ""), final, false},
		{text("a", ""), wire.Chunk{Message: &wire.ChunkMessage{ToolCalls: make([]ollama.ToolCall, 1)}}, false},
	} {
		if got := mergeable(c.held, c.next); got != c.want {
			t.Errorf("mergeable(%+v, %+v) = %v, want %v", c.held.Message, c.next.Message, got, c.want)
		}
	}
}
