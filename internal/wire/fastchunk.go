package wire

import (
	"unicode/utf8"
)

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
// there; FuzzDecodeChunkFast checks that the two agree.
func decodeChunkFast(data []byte) (NodeFrame, bool) {
	p := fastParser{b: data}
	var f NodeFrame
	var c Chunk
	var m ChunkMessage
	var seenType, seenChunk, seenMsg bool
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "type":
			if seenType {
				return false
			}
			seenType = true
			s, ok := p.str()
			if !ok || s != TypeInferenceChunk {
				return false
			}
			f.Type = TypeInferenceChunk
			return true
		case "request_id":
			if f.RequestID != "" {
				return false
			}
			s, ok := p.str()
			f.RequestID = s
			return ok && s != ""
		case "chunk":
			if seenChunk {
				return false
			}
			seenChunk = true
			var seenDone bool
			return p.object(func(key []byte) bool {
				switch string(key) {
				case "message":
					if seenMsg {
						return false
					}
					seenMsg = true
					var seenRole, seenContent, seenThinking bool
					return p.object(func(key []byte) bool {
						var dst *string
						switch string(key) {
						case "role":
							dst = &m.Role
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
						s, ok := p.str()
						*dst = s
						return ok
					})
				case "done":
					if seenDone {
						return false
					}
					seenDone = true
					v, ok := p.boolean()
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
	p.space()
	if p.i != len(p.b) {
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

// fastParser reads the few JSON shapes decodeChunkFast accepts.
type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) consume(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads {"key": value, ...}; field reads each value and reports
// whether it was acceptable. Keys must be plain (no escapes).
func (p *fastParser) object(field func(key []byte) bool) bool {
	if !p.consume('{') {
		return false
	}
	if p.consume('}') {
		return true
	}
	for {
		if !p.consume('"') {
			return false
		}
		start := p.i
		for p.i < len(p.b) && p.b[p.i] != '"' {
			if c := p.b[p.i]; c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
				return false
			}
			p.i++
		}
		if p.i >= len(p.b) {
			return false
		}
		key := p.b[start:p.i]
		p.i++
		if !p.consume(':') {
			return false
		}
		p.space()
		if !field(key) {
			return false
		}
		if p.consume(',') {
			continue
		}
		return p.consume('}')
	}
}

func (p *fastParser) boolean() (bool, bool) {
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// str reads a string value: valid UTF-8, no control characters, and of
// the escapes only the simple ones and \u outside the surrogate range.
func (p *fastParser) str() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	p.i++
	start := p.i
	plain := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			raw := p.b[start:p.i]
			p.i++
			if plain {
				if !utf8.Valid(raw) {
					return "", false
				}
				return internString(raw), true
			}
			return unescape(raw)
		case c == '\\':
			plain = false
			p.i += 2
		case c < 0x20:
			return "", false
		default:
			p.i++
		}
	}
	return "", false
}

// internString avoids an allocation for the role every chunk carries.
func internString(b []byte) string {
	switch string(b) {
	case "assistant":
		return "assistant"
	case "":
		return ""
	}
	return string(b)
}

func unescape(raw []byte) (string, bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if c >= utf8.RuneSelf {
				r, size := utf8.DecodeRune(raw[i:])
				if r == utf8.RuneError && size == 1 {
					return "", false
				}
				out = append(out, raw[i:i+size]...)
				i += size
				continue
			}
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return "", false
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			out = append(out, raw[i+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(raw) {
				return "", false
			}
			var r rune
			for _, h := range raw[i+2 : i+6] {
				switch {
				case h >= '0' && h <= '9':
					r = r<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					r = r<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					r = r<<4 | rune(h-'A'+10)
				default:
					return "", false
				}
			}
			if r >= 0xD800 && r <= 0xDFFF {
				return "", false // a surrogate: leave pairs to encoding/json
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default:
			return "", false
		}
		i += 2
	}
	return string(out), true
}
