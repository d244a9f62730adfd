package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

func chunkFrame(id, role, content, thinking string, withMsg, done bool) InferenceChunk {
	f := InferenceChunk{Type: TypeInferenceChunk, RequestID: id, Chunk: Chunk{Done: done}}
	if withMsg {
		f.Chunk.Message = &ChunkMessage{Role: role, Content: content, Thinking: thinking}
	}
	return f
}

func TestAppendInferenceChunkMatchesMarshal(t *testing.T) {
	cases := []InferenceChunk{
		chunkFrame("r1", "assistant", "Hel", "", true, false),
		chunkFrame("r1", "assistant", "", "hmm <b>&</b>", true, false),
		chunkFrame("r-\"quoted\"", "assistant", "line\nbreak\ttab\x00\x1f\b\f\u2028\u2029é😀\xff", "", true, false),
		chunkFrame("r1", "", "", "", false, false),
		chunkFrame("r1", "assistant", "bye", "", true, true),
		{Type: TypeInferenceChunk, RequestID: "r2", Chunk: Chunk{Message: &ChunkMessage{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: ollama.Metrics{EvalCount: 3, EvalDuration: 10}}},
		{Type: TypeInferenceChunk, RequestID: "r3", Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", ToolCalls: []ollama.ToolCall{
			{Function: ollama.ToolFunction{Name: "web_search", Arguments: json.RawMessage(`{"query":"x"}`)}}}}}},
	}
	for _, f := range cases {
		checkAppendInferenceChunk(t, f)
	}
}

func checkAppendInferenceChunk(t *testing.T, f InferenceChunk) {
	t.Helper()
	want, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte("prefix")
	got, err := AppendInferenceChunk(bytes.Clone(prefix), f)
	if err != nil {
		t.Fatalf("AppendInferenceChunk: %v", err)
	}
	if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("AppendInferenceChunk(%+v)\n got %s\nwant %s", f, got[len(prefix):], want)
	}
}

// FuzzAppendInferenceChunk: the fast encoder writes what json.Marshal
// writes, for any strings.
func FuzzAppendInferenceChunk(f *testing.F) {
	f.Add("r1", "assistant", "Hello", "", true, false)
	f.Add("r\x00", "assistant", "<script>&\u2028", "think\xff\xfe", true, false)
	f.Add("", "", "", "", false, true)
	f.Fuzz(func(t *testing.T, id, role, content, thinking string, withMsg, done bool) {
		checkAppendInferenceChunk(t, chunkFrame(id, role, content, thinking, withMsg, done))
	})
}

func BenchmarkEncodeInferenceChunk(b *testing.B) {
	f := chunkFrame("3f9a1c2e-77d1-4c1b-9a8e-0e2b6c1d9f00", "assistant", " the", "", true, false)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = AppendInferenceChunk(buf[:0], f)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(f)
		}
	})
}

// TestAppendInferenceChunkKnowsEveryField: the fast path writes the fields
// it knows and sends everything else to json.Marshal; a field added to one
// of these types must be taught to it (or to its fallback condition) first.
func TestAppendInferenceChunkKnowsEveryField(t *testing.T) {
	for _, c := range []struct {
		typ  reflect.Type
		want int
	}{
		{reflect.TypeFor[InferenceChunk](), 3},
		{reflect.TypeFor[Chunk](), 4}, // Message, Done, DoneReason, the embedded Metrics
		{reflect.TypeFor[ChunkMessage](), 4},
		{reflect.TypeFor[ollama.Metrics](), 6},
	} {
		if n := c.typ.NumField(); n != c.want {
			t.Errorf("%v has %d fields, AppendInferenceChunk was written for %d: update it and this test", c.typ, n, c.want)
		}
	}
}
