package wire

import (
	"encoding/json"

	"github.com/idleclaw/idleclaw/internal/jsonscan"
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
	dst = jsonscan.AppendString(dst, f.Type, true)
	dst = append(dst, `,"request_id":`...)
	dst = jsonscan.AppendString(dst, f.RequestID, true)
	dst = append(dst, `,"chunk":{`...)
	if m != nil {
		dst = append(dst, `"message":{"role":`...)
		dst = jsonscan.AppendString(dst, m.Role, true)
		dst = append(dst, `,"content":`...)
		dst = jsonscan.AppendString(dst, m.Content, true)
		if m.Thinking != "" {
			dst = append(dst, `,"thinking":`...)
			dst = jsonscan.AppendString(dst, m.Thinking, true)
		}
		dst = append(dst, `},`...)
	}
	return append(dst, `"done":false}}`...), nil
}
