package dispatch

import (
	"errors"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/tools"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// The answer shaper turns one node's chunks into the events a consumer
// sees, with no hub and no network: text filters (the operator's outbound
// patterns, then the render-safety rules) → the tool-tag parser → the
// limits on content, thinking and tool calls → the classifier's verdict →
// events. It is driven one chunk at a time (Chunk), and ended by Round at
// a node's final chunk and by Finish when the answer ends. Everything it
// keeps is bounded in bytes. Not safe for concurrent use.

// errTooManyCalls ends a round whose node asked for more tool calls than
// allowed (errWithheld, the classifier's refusal, is judge.go's).
var errTooManyCalls = errors.New("too many tool calls")

// textStream is one streaming rewrite of node text.
type textStream interface {
	Push(chunk string) string
	Flush() string
}

// chain runs text through several streams in order.
type chain []textStream

func (c chain) Push(s string) string {
	for _, f := range c {
		if s == "" {
			return ""
		}
		s = f.Push(s)
	}
	return s
}

func (c chain) Flush() string {
	out := ""
	for i, f := range c {
		// What an earlier stage still held goes through the later ones.
		s := f.Flush()
		for _, g := range c[i+1:] {
			s = g.Push(s)
		}
		out += s
	}
	return out
}

// shapeConfig is what a shaper is told of its request.
type shapeConfig struct {
	maxChars      int  // everything the node produces, in characters; ≤ 0: no limit
	thinking      bool // thinking was asked for and the model can: else it is dropped
	serverTools   bool // server-side tools were offered: collect their calls
	consumerTools bool // the consumer's own tools: hand their calls over
	keepText      bool // keep the round's answer text (for a tool turn)
	maxCalls      int  // server tool calls per round, and consumer tool calls per request
}

// maxKeptText bounds the answer text kept for a tool turn when no response
// limit applies.
const maxKeptText = 64 << 10

// judge is the optional classifier's side the shaper sees.
type judge interface {
	add(text string)
	refusedNow() bool
}

// round is what one node round produced.
type round struct {
	text             string // the answer text of this round (for tool turns)
	calls            []tools.Call
	doneReason       string
	promptTokens     int // as the node reported them (0: unknown)
	completionTokens int
	lengthHit        bool
	consumerCalls    int // consumer tool calls handed over in this round
	relayed          int // chunks with an answer (text, thinking, tool calls) the shaper took in
}

// shaper shapes one request's answer (one node's, after a failover a new
// shaper shapes the next node's).
type shaper struct {
	cfg      shapeConfig
	out      *sink
	content  textStream
	thinking textStream
	judge    judge // nil: none
	chars    int   // counted against cfg.maxChars (kept across tool rounds)
	calls    int   // consumer tool calls handed over so far

	tags tools.TagParser
	r    round
	text []byte
}

func newShaper(cfg shapeConfig, out *sink, content, thinking textStream, j judge) *shaper {
	return &shaper{cfg: cfg, out: out, content: content, thinking: thinking, judge: j}
}

// count adds n characters of node output (as the node sent them, before
// any filter) against the limit; it reports how many of them are allowed
// and whether the limit was reached.
func (sh *shaper) count(n int) (allowed int, hit bool) {
	if sh.cfg.maxChars <= 0 {
		return n, false
	}
	left := sh.cfg.maxChars - sh.chars
	if n > left {
		sh.chars = sh.cfg.maxChars
		return max(left, 0), true
	}
	sh.chars += n
	return n, false
}

// Chunk shapes one chunk; more reports that the node's next chunk is
// already waiting (Event.More). It returns done when the answer must end
// here (the length limit: round.lengthHit is set), or an error: the
// consumer's (emit), errWithheld, errTooManyCalls.
func (sh *shaper) Chunk(c *wire.Chunk, more bool) (done bool, err error) {
	if sh.judge != nil && sh.judge.refusedNow() {
		return true, errWithheld
	}
	sh.out.more = more && !c.Done
	m := c.Message
	if m == nil {
		return false, nil
	}
	if m.Content != "" || m.Thinking != "" || len(m.ToolCalls) > 0 {
		sh.r.relayed++
	}
	if m.Thinking != "" {
		n := utf8.RuneCountInString(m.Thinking)
		allowed, hit := sh.count(n)
		if sh.cfg.thinking {
			text := m.Thinking
			if hit {
				text = truncateRunes(text, allowed)
			}
			if err := sh.emitText(Thinking, sh.thinking.Push(text)); err != nil {
				return true, err
			}
		}
		if hit {
			sh.r.lengthHit = true
			return true, nil
		}
	}
	if m.Content != "" {
		text := m.Content
		allowed, hit := sh.count(utf8.RuneCountInString(text))
		if hit {
			text = truncateRunes(text, allowed)
		}
		visible, calls := sh.tags.Push(text)
		if err := sh.collect(calls); err != nil {
			return true, err
		}
		if err := sh.answer(sh.content.Push(visible)); err != nil {
			return true, err
		}
		if hit {
			sh.r.lengthHit = true
			return true, nil
		}
	}
	if len(m.ToolCalls) > 0 {
		return sh.toolCalls(m.ToolCalls)
	}
	return false, nil
}

// toolCalls handles native tool calls: the consumer's are handed over,
// server-side ones collected; without tools offered they trigger nothing.
// Their names and arguments count against the length limit.
func (sh *shaper) toolCalls(calls []ollama.ToolCall) (done bool, err error) {
	size := 0
	for _, tc := range calls {
		size += len(tc.Function.Name) + len(tc.Function.Arguments)
	}
	if _, hit := sh.count(size); hit {
		sh.r.lengthHit = true
		return true, nil
	}
	switch {
	case sh.cfg.consumerTools:
		if sh.calls+len(calls) > sh.cfg.maxCalls {
			return true, errTooManyCalls
		}
		sh.calls += len(calls)
		sh.r.consumerCalls += len(calls)
		return false, sh.out.send(Event{Kind: ToolCalls, Calls: calls})
	case sh.cfg.serverTools:
		for _, tc := range calls {
			if err := sh.collect([]tools.Call{{Name: tc.Function.Name, Arguments: tc.Function.Arguments}}); err != nil {
				return true, err
			}
		}
	}
	return false, nil
}

// collect keeps server-side tool calls of this round, within the bound.
func (sh *shaper) collect(calls []tools.Call) error {
	if !sh.cfg.serverTools || len(calls) == 0 {
		return nil
	}
	if len(sh.r.calls)+len(calls) > sh.cfg.maxCalls {
		return errTooManyCalls
	}
	sh.r.calls = append(sh.r.calls, calls...)
	return nil
}

// Round ends a node round at its final chunk: what the tag parser held is
// shaped, and the round's result returned. The shaper then starts a fresh
// round (for the next tool round).
func (sh *shaper) Round(c *wire.Chunk) (round, error) {
	visible, calls := sh.tags.Flush()
	if err := sh.collect(calls); err != nil {
		return sh.r, err
	}
	if err := sh.answer(sh.content.Push(visible)); err != nil {
		return sh.r, err
	}
	r := sh.r
	r.text = string(sh.text)
	r.doneReason = c.DoneReason
	r.promptTokens, r.completionTokens = c.PromptEvalCount, c.EvalCount
	sh.r, sh.text = round{}, sh.text[:0]
	return r, nil
}

// answer emits answer text (already counted against the limit as the node
// sent it), keeping it for a tool turn when asked.
func (sh *shaper) answer(visible string) error {
	if visible == "" {
		return nil
	}
	if sh.cfg.keepText && len(sh.text) < maxKeptText {
		sh.text = append(sh.text, visible[:min(len(visible), maxKeptText-len(sh.text))]...)
	}
	return sh.emitText(Content, visible)
}

func (sh *shaper) emitText(k Kind, text string) error {
	if text == "" {
		return nil
	}
	if sh.judge != nil {
		sh.judge.add(text)
	}
	return sh.out.text(k, text)
}

// Finish flushes what the filters held back.
func (sh *shaper) Finish() error {
	if sh.cfg.thinking {
		if err := sh.emitText(Thinking, sh.thinking.Flush()); err != nil {
			return err
		}
	}
	return sh.answer(sh.content.Flush())
}

// Discard drops what the filters hold (text past the limit, or of an
// answer that is being cut).
func (sh *shaper) Discard() {
	_ = sh.content.Flush()
	_ = sh.thinking.Flush()
}

func truncateRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
