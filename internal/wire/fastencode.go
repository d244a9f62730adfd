package wire

import (
	"encoding/json"
	"unicode/utf8"
)

// AppendInferenceChunk appends f encoded as JSON to dst: the frame a node
// sends for every token. The common frame — text only, not the last — is
// written without reflection, byte for byte as json.Marshal writes it
// (FuzzAppendInferenceChunk checks that); any other (tool calls, the final
// chunk with its metrics) goes through json.Marshal.
func AppendInferenceChunk(dst []byte, f InferenceChunk) ([]byte, error) {
	m := f.Chunk.Message
	if f.Chunk.Done || f.Chunk.DoneReason != "" || f.Chunk.Metrics != (Chunk{}).Metrics || (m != nil && m.ToolCalls != nil) {
		b, err := json.Marshal(f)
		if err != nil {
			return dst, err
		}
		return append(dst, b...), nil
	}
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, f.Type)
	dst = append(dst, `,"request_id":`...)
	dst = appendJSONString(dst, f.RequestID)
	dst = append(dst, `,"chunk":{`...)
	if m != nil {
		dst = append(dst, `"message":{"role":`...)
		dst = appendJSONString(dst, m.Role)
		dst = append(dst, `,"content":`...)
		dst = appendJSONString(dst, m.Content)
		if m.Thinking != "" {
			dst = append(dst, `,"thinking":`...)
			dst = appendJSONString(dst, m.Thinking)
		}
		dst = append(dst, `},`...)
	}
	return append(dst, `"done":false}}`...), nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string escaped exactly as
// json.Marshal escapes it (HTML-safe; U+2028 and U+2029 escaped; invalid
// UTF-8 as \ufffd).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
