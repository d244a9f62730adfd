package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// wholeBody hands each /api/chat answer over whole, so that every line of
// it has already arrived when the agent reads the first: the node link's
// view of an Ollama that is ahead of it.
func wholeBody() http.RoundTripper {
	gate := make(chan struct{})
	close(gate)
	return gatedBody{gate: gate}
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
		c.Ollama.HTTP = &http.Client{Transport: wholeBody()}
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
		{text("b", ""), true}, {text("", ""), true}, {text("c", "d"), true}, // a blank line joins; both kinds never
		{text("e", ""), false},
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
		m := *c.Message // send must not keep c's message
		c.Message = &m
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
	want := []string{"think||0|false", "|Hello, |0|false", "|world|0|false", "|!|0|false", "||1|false", "|a|0|false", "||0|true",
		"|b|0|false", "d|c|0|false", "|e|0|false"}
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

	// Texts that together would reach maxHeldBytes go out apart: no
	// frame is larger than its largest line alone would make it.
	out = nil
	co = coalescer{}
	half := strings.Repeat("y", maxHeldBytes/2)
	for range 3 {
		if err := co.push(text(half, ""), true, send); err != nil {
			t.Fatal(err)
		}
	}
	if err := co.flush(send); err != nil || len(out) != 3 {
		t.Fatalf("sent %d frames, %v; want 3", len(out), err)
	}
}

// refCoalescer is the coalescer as it was before it gathered held text
// in a buffer of its own (at 46cd196), with one rule added since: texts
// are joined only while the result stays under maxHeldBytes.
// FuzzCoalescer checks that the two send the same frames.
type refCoalescer struct {
	held    wire.Chunk
	holding bool
}

func (co *refCoalescer) push(c wire.Chunk, wait bool, send func(wire.Chunk) error) error {
	if co.holding {
		co.holding = false
		h, n := co.held.Message, c.Message
		if refMergeable(co.held, c) && len(h.Content)+len(h.Thinking)+len(n.Content)+len(n.Thinking) < maxHeldBytes {
			c.Message.Content = co.held.Message.Content + c.Message.Content
			c.Message.Thinking = co.held.Message.Thinking + c.Message.Thinking
		} else if err := send(co.held); err != nil {
			return err
		}
	}
	m := c.Message
	if wait && !c.Done && len(m.ToolCalls) == 0 && (m.Content != "" || m.Thinking != "") &&
		len(m.Content)+len(m.Thinking) < maxHeldBytes {
		co.held, co.holding = c, true
		return nil
	}
	return send(c)
}

func (co *refCoalescer) flush(send func(wire.Chunk) error) error {
	if !co.holding {
		return nil
	}
	co.holding = false
	return send(co.held)
}

func refMergeable(held, next wire.Chunk) bool {
	h, n := held.Message, next.Message
	if h.Content != "" && h.Thinking != "" || len(n.ToolCalls) > 0 || next.Done {
		return false
	}
	switch {
	case n.Content == "" && n.Thinking == "":
		return true
	case h.Content != "":
		return n.Thinking == ""
	default:
		return n.Content == ""
	}
}

// FuzzCoalescer: the coalescer sends the frames the reference sends, for
// any sequence of chunks (each byte of ops picks one: content, thinking,
// both, blank, a tool call, the final chunk, long text; and whether the
// next line has arrived), although it reuses one message for every chunk
// it sends from what it holds, and its caller one for every line.
func FuzzCoalescer(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Add([]byte{8, 8, 9, 9, 8, 11, 8, 10, 12, 13, 6, 8, 8, 14, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		long := strings.Repeat("x", maxHeldBytes/3)
		chunk := func(op byte, msg *wire.ChunkMessage) wire.Chunk {
			*msg = wire.ChunkMessage{Role: "assistant"}
			c := wire.Chunk{Message: msg}
			switch op % 8 {
			case 0:
				msg.Content = "c"
			case 1:
				msg.Thinking = "t"
			case 2:
				msg.Content, msg.Thinking = "C", "T"
			case 3: // blank
			case 4:
				msg.ToolCalls = []ollama.ToolCall{{Function: ollama.ToolFunction{Name: "f", Arguments: json.RawMessage(`{}`)}}}
			case 5:
				c.Done, c.DoneReason = true, "stop"
			case 6:
				msg.Content = long
			case 7:
				msg.Thinking = long
			}
			return c
		}
		frames := func(push func(wire.Chunk, bool, func(wire.Chunk) error) error, flush func(func(wire.Chunk) error) error, reuse bool) []string {
			var out []string
			send := func(c wire.Chunk) error {
				b, err := wire.AppendInferenceChunk(nil, wire.InferenceChunk{Type: wire.TypeInferenceChunk, RequestID: "r", Chunk: c})
				out = append(out, string(b))
				return err
			}
			var msg wire.ChunkMessage
			for _, op := range ops {
				m := &msg
				if !reuse {
					m = new(wire.ChunkMessage)
				}
				if err := push(chunk(op, m), op&8 != 0, send); err != nil {
					t.Fatal(err)
				}
			}
			if err := flush(send); err != nil {
				t.Fatal(err)
			}
			return out
		}
		var co coalescer
		var ref refCoalescer
		got := frames(co.push, co.flush, true)
		want := frames(ref.push, ref.flush, false)
		if !slices.Equal(got, want) {
			t.Errorf("ops %v: sent\n%q\nwant\n%q", ops, got, want)
		}
	})
}

// TestAgentJoinedTextBeforeAFailure: text held to be joined with a line
// that had already arrived still goes out when that line is Ollama's
// error: the consumer gets what was answered, then the failure.
func TestAgentJoinedTextBeforeAFailure(t *testing.T) {
	h := newHarness(t, ollamatest.Config{
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"Half", " an answer"}, Error: "boom"}
		},
	}, func(c *Config) {
		c.JoinArrived = true
		c.HeartbeatInterval, c.ModelsPollInterval = time.Hour, time.Hour // nothing else on the link
	})
	rc, _ := h.connect(t)
	rc.expect(t, wire.TypeHeartbeat)
	rc.request(t, "r1", map[string]any{"model": "stories", "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	var text strings.Builder
	for {
		f := rc.expectFor(t, "r1")
		if f.typ() == wire.TypeInferenceError {
			break
		}
		var ic wire.InferenceChunk
		if err := json.Unmarshal(f.raw, &ic); err != nil {
			t.Fatal(err)
		}
		if ic.Chunk.Done {
			t.Fatal("a final chunk for a failed answer")
		}
		text.WriteString(ic.Chunk.Message.Content)
	}
	if text.String() != "Half an answer" {
		t.Fatalf("before the failure the router got %q", text.String())
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}
