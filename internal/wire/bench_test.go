package wire

import (
	"encoding/json"
	"testing"
)

// A typical streamed token: about 4 characters of answer text.
const benchChunk = `{"type":"inference_chunk","request_id":"req-3f2a9c1b7d4e","chunk":{"message":{"role":"assistant","content":" the"},"done":false}}`

// BenchmarkDecodeChunk and BenchmarkEncodeChunk measure the hot path of a
// stream. Run: go test -run='^$' -bench=Chunk -benchmem ./internal/wire/
func BenchmarkDecodeChunk(b *testing.B) {
	data := []byte(benchChunk)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := DecodeNodeFrame(data)
		if err != nil || f.Chunk == nil || f.Chunk.Message.Content != " the" {
			b.Fatalf("decode: %v %#v", err, f)
		}
	}
}

func BenchmarkEncodeChunk(b *testing.B) {
	msg := InferenceChunk{Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
		Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: " the"}}}
	if got := string(mustMarshal(b, msg)); got != benchChunk {
		b.Fatalf("bench frame drifted from encoder:\n%s", got)
	}
	b.SetBytes(int64(len(benchChunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}
