package ollama

import (
	"encoding/json"

	"github.com/idleclaw/idleclaw/internal/jsonscan"
)

// decodeChatLine decodes one NDJSON line of a /api/chat answer: through
// decodeChatLineFast when it takes the line, through encoding/json
// otherwise. model is the model name the line most likely carries (the
// previous line's); it only saves an allocation.
func decodeChatLine(line []byte, model string) (ChatResponse, error) {
	if cr, ok := decodeChatLineFast(line, model); ok {
		return cr, nil
	}
	var cr ChatResponse
	if err := json.Unmarshal(line, &cr); err != nil {
		return ChatResponse{}, err
	}
	return cr, nil
}

// Bits of the keys decodeChatLineFast has seen, to refuse repeats.
const (
	seenModel = 1 << iota
	seenCreatedAt
	seenMessage
	seenDone
	seenDoneReason
	seenTotalDuration
	seenLoadDuration
	seenPromptEvalCount
	seenPromptEvalDuration
	seenEvalCount
	seenEvalDuration
	seenRole
	seenContent
	seenThinking
)

// decodeChatLineFast decodes the lines Ollama streams for a chat answer,
// one per token, and the final one with its metrics:
//
//	{"model":"m","created_at":"2026-01-01T00:00:00.123Z","message":{"role":"assistant","content":"Hel"},"done":false}
//	{"model":"m","created_at":"…","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":1,"load_duration":2,"prompt_eval_count":3,"prompt_eval_duration":4,"eval_count":5,"eval_duration":6}
//
// without reflection, because the node decodes one per token and
// encoding/json was a large part of its CPU time. Keys may come in any
// order, with any whitespace; message may also hold "thinking". It reports
// false for anything else: another or a repeated key (tool_calls, images,
// error, …), a value of another JSON type (null included), a string with a
// control character, invalid UTF-8 or a \u escape of a surrogate, a number
// that is not an integer in range of its field, trailing data. Those lines
// go through encoding/json, so that every line decodes exactly as it
// would there; FuzzDecodeChatLineFast checks that the two agree.
//
// When the line's model equals model, the result holds model itself rather
// than a new copy.
func decodeChatLineFast(line []byte, model string) (ChatResponse, bool) {
	p := jsonscan.New(line)
	var cr ChatResponse
	var seen uint32
	first := func(bit uint32) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	str := func(dst *string, known string) bool {
		s, ok := p.StrKnown(known)
		*dst = s
		return ok
	}
	i64 := func(dst *int64) bool {
		v, ok := p.Int()
		*dst = v
		return ok
	}
	integer := func(dst *int) bool {
		v, ok := p.Int()
		if !ok || int64(int(v)) != v { // out of range on 32-bit platforms
			return false
		}
		*dst = int(v)
		return true
	}
	message := func(key []byte) bool {
		switch string(key) {
		case "role":
			return first(seenRole) && str(&cr.Message.Role, "assistant")
		case "content":
			return first(seenContent) && str(&cr.Message.Content, "")
		case "thinking":
			return first(seenThinking) && str(&cr.Message.Thinking, "")
		}
		return false
	}
	ok := p.Object(func(key []byte) bool {
		switch string(key) {
		case "model":
			return first(seenModel) && str(&cr.Model, model)
		case "created_at":
			return first(seenCreatedAt) && p.SkipStr()
		case "message":
			return first(seenMessage) && p.Object(message)
		case "done":
			if !first(seenDone) {
				return false
			}
			v, ok := p.Bool()
			cr.Done = v
			return ok
		case "done_reason":
			return first(seenDoneReason) && str(&cr.DoneReason, "stop")
		case "total_duration":
			return first(seenTotalDuration) && i64(&cr.TotalDuration)
		case "load_duration":
			return first(seenLoadDuration) && i64(&cr.LoadDuration)
		case "prompt_eval_count":
			return first(seenPromptEvalCount) && integer(&cr.PromptEvalCount)
		case "prompt_eval_duration":
			return first(seenPromptEvalDuration) && i64(&cr.PromptEvalDuration)
		case "eval_count":
			return first(seenEvalCount) && integer(&cr.EvalCount)
		case "eval_duration":
			return first(seenEvalDuration) && i64(&cr.EvalDuration)
		}
		return false
	})
	if !ok || !p.End() {
		return ChatResponse{}, false
	}
	return cr, true
}
