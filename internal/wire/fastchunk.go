package wire

import "github.com/idleclaw/idleclaw/internal/jsonscan"

// decodeChunkFast decodes the frame a node sends for every token, an
// inference_chunk holding only text:
//
//	{"type":"inference_chunk","request_id":"r1","chunk":{"message":{"role":"assistant","content":"Hel"},"done":false}}
//
// without reflection, because it is the router's hottest path (about a
// tenth of the time encoding/json takes). Keys may come in any order, with
// any whitespace between tokens. It reports false for anything else: other
// or repeated keys, a "type" other than inference_chunk, an empty
// request_id, a value of another JSON type, a control character or invalid
// UTF-8 inside a string, a \u escape of a surrogate, trailing data. Those go
// through encoding/json, so that every frame decodes exactly as it would
// there; FuzzDecodeChunkFast checks that the two agree. The JSON itself is
// read by internal/jsonscan, which the node's Ollama line decoder shares.
func decodeChunkFast(data []byte) (NodeFrame, bool) {
	p := jsonscan.New(data)
	var f NodeFrame
	var c Chunk
	var m ChunkMessage
	var seenType, seenChunk, seenMsg bool
	ok := p.Object(func(key []byte) bool {
		switch string(key) {
		case "type":
			if seenType {
				return false
			}
			seenType = true
			s, ok := p.StrKnown(TypeInferenceChunk)
			if !ok || s != TypeInferenceChunk {
				return false
			}
			f.Type = TypeInferenceChunk
			return true
		case "request_id":
			if f.RequestID != "" {
				return false
			}
			s, ok := p.Str()
			f.RequestID = s
			return ok && s != ""
		case "chunk":
			if seenChunk {
				return false
			}
			seenChunk = true
			var seenDone bool
			return p.Object(func(key []byte) bool {
				switch string(key) {
				case "message":
					if seenMsg {
						return false
					}
					seenMsg = true
					var seenRole, seenContent, seenThinking bool
					return p.Object(func(key []byte) bool {
						var dst *string
						known := "" // the role is nearly always "assistant"
						switch string(key) {
						case "role":
							dst, known = &m.Role, "assistant"
							if seenRole {
								return false
							}
							seenRole = true
						case "content":
							dst = &m.Content
							if seenContent {
								return false
							}
							seenContent = true
						case "thinking":
							dst = &m.Thinking
							if seenThinking {
								return false
							}
							seenThinking = true
						default:
							return false
						}
						s, ok := p.StrKnown(known)
						*dst = s
						return ok
					})
				case "done":
					if seenDone {
						return false
					}
					seenDone = true
					v, ok := p.Bool()
					c.Done = v
					return ok
				}
				return false
			})
		}
		return false
	})
	if !ok || !seenType || f.RequestID == "" || !seenChunk {
		return NodeFrame{}, false
	}
	if !p.End() {
		return NodeFrame{}, false
	}
	both := &chunkAndMessage{c: c, m: m} // one allocation for the two
	if seenMsg {
		both.c.Message = &both.m
	}
	f.Chunk = &both.c
	return f, true
}

type chunkAndMessage struct {
	c Chunk
	m ChunkMessage
}
