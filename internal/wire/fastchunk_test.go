package wire

import (
	"reflect"
	"testing"
)

// FuzzDecodeChunkFast checks that the token fast path decodes exactly what
// encoding/json decodes, and only what it accepts:
//
//	go test -run='^$' -fuzz=FuzzDecodeChunkFast -fuzztime=60s ./internal/wire/
func FuzzDecodeChunkFast(f *testing.F) {
	for _, s := range []string{
		benchChunk,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"a\nb \"q\" \u00e9\u003c\/"},"done":false}}`,
		` { "chunk" : { "done" : true , "message" : { "thinking" : "hm", "content" : "" } } , "request_id" : "r" , "type" : "inference_chunk" } `,
		`{"type":"inference_chunk","request_id":"r","chunk":{}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{}}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":null}}`,
		`{"type":"inference_chunk","request_id":"","chunk":{"message":{"content":"x"}}}`,
		`{"type":"inference_chunk","request_id":"r","request_id":"s","chunk":{}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"content":"\ud83d\ude00"}}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"content":"x"},"done":false,"done_reason":"stop","eval_count":3}}`,
		`{"type":"inference_chunk","REQUEST_ID":"r","chunk":{}}`,
		`{"type":"heartbeat","node_id":"n"}`,
		"{\"type\":\"inference_chunk\",\"request_id\":\"r\",\"chunk\":{\"message\":{\"content\":\"\xff\"}}}",
		`{"type":"inference_chunk","request_id":"r","chunk":{}} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeChunkFast(data)
		if !ok {
			return
		}
		slow, err := decodeNodeFrameJSON(data)
		if err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast path differs for %q\nfast: %#v\nslow: %#v", data, fast, slow)
		}
		if !reflect.DeepEqual(fast.Chunk, slow.Chunk) || (fast.Chunk.Message == nil) != (slow.Chunk.Message == nil) {
			t.Fatalf("chunk differs for %q", data)
		}
		if m := fast.Chunk.Message; m != nil && !reflect.DeepEqual(*m, *slow.Chunk.Message) {
			t.Fatalf("message differs for %q: %#v vs %#v", data, *m, *slow.Chunk.Message)
		}
	})
}

func TestDecodeChunkFastTakesTokens(t *testing.T) {
	for _, s := range []string{
		benchChunk,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"line\n\u003cb\u003e"},"done":false}}`,
	} {
		if _, ok := decodeChunkFast([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
}
