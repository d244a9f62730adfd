package wire

import "testing"

// A typical streamed token: about 4 characters of answer text.
const benchChunk = `{"type":"inference_chunk","request_id":"req-3f2a9c1b7d4e","chunk":{"message":{"role":"assistant","content":" the"},"done":false}}`

// BenchmarkDecodeChunk measures the router's side of a stream's hot path
// (the node's side: BenchmarkEncodeInferenceChunk). Run:
// go test -run='^$' -bench=Chunk -benchmem ./internal/wire/
func BenchmarkDecodeChunk(b *testing.B) {
	// The frame is the one a node sends for this token.
	sent, err := AppendInferenceChunk(nil, InferenceChunk{Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
		Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: " the"}}})
	if err != nil || string(sent) != benchChunk {
		b.Fatalf("bench frame drifted from the node's encoder (%v):\n%s", err, sent)
	}
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
