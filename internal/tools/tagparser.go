package tools

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Call is one tool call requested by a model.
type Call struct {
	Name      string
	Arguments json.RawMessage // a JSON object
}

const (
	openTag  = "<tool_call>"
	closeTag = "</tool_call>"

	// MaxTagBody bounds the body of one <tool_call> tag in bytes. A longer
	// body is discarded (no call, no text) without being accumulated.
	MaxTagBody = 16 << 10

	// maxHeld is the longest text held back because it could begin a tag:
	// a proper prefix of closeTag.
	maxHeld = len(closeTag) - 1

	// maxCallName bounds the name of a parsed call.
	maxCallName = 64
)

// TagParser extracts text-form tool calls,
// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, from streamed
// model output, and strips the tags from the text. Not safe for concurrent use.
//
// Tags are matched ASCII case-insensitively and across chunk boundaries. Only
// the trailing characters that could begin a tag (<tool_call> or
// </tool_call>) are held back; all other text is returned at once. Text
// inside a tag is never returned. A stray closing tag is stripped too.
// Removing a tag never lets a new tag form out of the text around it: when
// the text shown before a removed tag ends with, say, "<tool" and the text
// after it continues "_call>", that continuation is taken as a tag too, so
// the concatenated output never contains a tag.
//
// The output (concatenated text and the sequence of calls) depends only on
// the concatenated input, not on how it was split into chunks.
//
// The zero value is ready to use. After Flush the parser can be reused for a
// new stream.
type TagParser struct {
	// held is text not yet returned because it could begin a tag, or
	// continue one begun by shown (emitted) text.
	held string
	// shown is the longest suffix of the text returned so far that is a
	// proper prefix of a tag. It matters after a tag was removed: the text
	// after the tag must not complete a tag with it.
	shown    string
	inTag    bool
	body     []byte // tag body so far; only its last maxHeld bytes once overflowed
	overflow bool   // the body is longer than MaxTagBody: it will be dropped
}

// Push consumes the next chunk of model output. It returns the text that can
// be shown now, with tags removed, and the calls whose closing tag arrived in
// this chunk, in order.
func (p *TagParser) Push(chunk string) (text string, calls []Call) {
	var out strings.Builder
	for {
		if p.inTag {
			rest, done := p.feedBody(chunk, &calls)
			if !done {
				break
			}
			chunk = rest
		}
		// Match tags on the tag prefix ending the text so far (shown or
		// held) followed by chunk. The first e bytes were already shown.
		var pre string
		var e int
		if p.held != "" && p.held[0] == '<' {
			pre = p.held
		} else {
			pre, e = p.shown+p.held, len(p.shown)
		}
		v := vstr{pre, chunk}
		pos, tagLen, open := v.findTag()
		if pos < 0 {
			start := v.len() - v.heldLen(v.len())
			if start < e {
				// All of v continues the shown tag prefix.
				p.held = v.substr(e, v.len())
				break
			}
			v.writeTo(&out, e, start)
			if start > 0 {
				p.shown = v.substr(start-v.heldLen(start), start)
			}
			p.held = v.substr(start, v.len())
			break
		}
		// Show the text before the tag (a tag that began in shown text
		// is removed from there on).
		end := max(e, pos)
		v.writeTo(&out, e, end)
		if end > 0 {
			p.shown = v.substr(end-v.heldLen(end), end)
		}
		p.held = ""
		// pre is a proper prefix of a tag, so the tag ends in chunk.
		chunk = chunk[pos+tagLen-len(pre):]
		if open {
			p.inTag = true
			p.overflow = false
			p.body = p.body[:0]
		}
	}
	return out.String(), calls
}

// Flush ends the stream: text held back because it might begin a tag is
// returned; the content of an unterminated tag is dropped. The parser is
// reset for reuse. Flush never returns calls (a call needs its closing tag);
// the result has the same shape as Push for symmetry.
func (p *TagParser) Flush() (text string, calls []Call) {
	text = p.held
	body := p.body[:0]
	if cap(body) > 2*MaxTagBody {
		body = nil
	}
	*p = TagParser{body: body}
	return text, nil
}

// feedBody consumes chunk while inside a tag. When the closing tag is in
// chunk it parses the body, leaves the tag and returns the text after the
// closing tag with done set.
func (p *TagParser) feedBody(chunk string, calls *[]Call) (rest string, done bool) {
	// p.body holds no closing tag, so a closing tag can start at most
	// maxHeld bytes before its end.
	start := max(0, len(p.body)-maxHeld)
	tail := string(p.body[start:])
	v := vstr{tail, chunk}
	pos := v.index(closeTag)
	if pos < 0 {
		// Any closing tag still to come starts at or after
		// len(p.body)+len(chunk)-maxHeld, so the body is at least that long.
		if p.overflow || len(p.body)+len(chunk)-maxHeld > MaxTagBody {
			p.overflow = true
			p.body = appendTail(p.body, chunk, maxHeld)
		} else {
			p.body = append(p.body, chunk...)
		}
		return "", false
	}
	if !p.overflow && start+pos <= MaxTagBody {
		var body []byte
		if cut := pos - len(tail); cut >= 0 {
			body = append(p.body, chunk[:cut]...)
		} else {
			body = p.body[:len(p.body)+cut]
		}
		if c, ok := parseCall(body); ok {
			*calls = append(*calls, c)
		}
	}
	p.inTag = false
	p.overflow = false
	p.body = p.body[:0]
	return chunk[pos+len(closeTag)-len(tail):], true
}

// appendTail returns the last n bytes of body+chunk, reusing body's storage.
func appendTail(body []byte, chunk string, n int) []byte {
	if len(chunk) >= n {
		return append(body[:0], chunk[len(chunk)-n:]...)
	}
	if keep := n - len(chunk); len(body) > keep {
		body = body[:copy(body, body[len(body)-keep:])]
	}
	return append(body, chunk...)
}

// parseCall parses a tag body: {"name": string, "arguments": object}, with
// surrounding whitespace (and a Markdown code fence) tolerated. "arguments"
// may also be a JSON string holding an object, and "parameters" is accepted
// in place of a missing "arguments" (Llama 3 style).
func parseCall(body []byte) (Call, bool) {
	body = stripFence(bytes.TrimSpace(body))
	if len(body) == 0 || body[0] != '{' {
		return Call{}, false
	}
	var raw struct {
		Name       json.RawMessage `json:"name"`
		Arguments  json.RawMessage `json:"arguments"`
		Parameters json.RawMessage `json:"parameters"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Call{}, false
	}
	var name string
	if err := json.Unmarshal(raw.Name, &name); err != nil {
		return Call{}, false
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > maxCallName {
		return Call{}, false
	}
	args := raw.Arguments
	if isNull(args) {
		args = raw.Parameters
	}
	args = bytes.TrimSpace(args)
	if len(args) > 0 && args[0] == '"' {
		var s string
		if err := json.Unmarshal(args, &s); err != nil {
			return Call{}, false
		}
		args = bytes.TrimSpace([]byte(s))
	}
	if len(args) == 0 || args[0] != '{' {
		return Call{}, false
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, args); err != nil {
		return Call{}, false
	}
	return Call{Name: name, Arguments: json.RawMessage(compact.Bytes())}, true
}

func isNull(m json.RawMessage) bool {
	m = bytes.TrimSpace(m)
	return len(m) == 0 || string(m) == "null"
}

// stripFence removes a Markdown code fence (```json ... ```) around b.
func stripFence(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte("```")) || len(b) < 6 || !bytes.HasSuffix(b, []byte("```")) {
		return b
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return b
	}
	return bytes.TrimSpace(b[nl+1 : len(b)-3])
}

// vstr is the virtual concatenation a+b, used to match tags across the
// held-back text and a new chunk without copying the chunk.
type vstr struct{ a, b string }

func (v vstr) len() int { return len(v.a) + len(v.b) }

func (v vstr) at(i int) byte {
	if i < len(v.a) {
		return v.a[i]
	}
	return v.b[i-len(v.a)]
}

// nextLT returns the position of the first '<' at or after i, or -1.
func (v vstr) nextLT(i int) int {
	if i < len(v.a) {
		if j := strings.IndexByte(v.a[i:], '<'); j >= 0 {
			return i + j
		}
		i = len(v.a)
	}
	if j := strings.IndexByte(v.b[i-len(v.a):], '<'); j >= 0 {
		return i + j
	}
	return -1
}

// foldAt reports whether tag (lower-case ASCII) occurs at position i,
// ignoring ASCII case.
func (v vstr) foldAt(i int, tag string) bool {
	if i < 0 || i+len(tag) > v.len() {
		return false
	}
	for k := 0; k < len(tag); k++ {
		c := v.at(i + k)
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != tag[k] {
			return false
		}
	}
	return true
}

// findTag returns the position and length of the first opening or closing
// tag, or pos -1.
func (v vstr) findTag() (pos, tagLen int, open bool) {
	for i := v.nextLT(0); i >= 0; i = v.nextLT(i + 1) {
		if v.foldAt(i, openTag) {
			return i, len(openTag), true
		}
		if v.foldAt(i, closeTag) {
			return i, len(closeTag), false
		}
	}
	return -1, 0, false
}

// index returns the position of the first occurrence of tag, or -1.
func (v vstr) index(tag string) int {
	for i := v.nextLT(0); i >= 0; i = v.nextLT(i + 1) {
		if v.foldAt(i, tag) {
			return i
		}
	}
	return -1
}

// heldLen returns the length of the longest suffix of v[:end] that is a
// proper prefix of a tag (ignoring ASCII case).
func (v vstr) heldLen(end int) int {
	for k := min(end, maxHeld); k > 0; k-- {
		if v.at(end-k) != '<' {
			continue
		}
		if (k < len(openTag) && v.foldAt(end-k, openTag[:k])) || v.foldAt(end-k, closeTag[:k]) {
			return k
		}
	}
	return 0
}

func (v vstr) writeTo(out *strings.Builder, i, j int) {
	if i < len(v.a) {
		out.WriteString(v.a[i:min(j, len(v.a))])
	}
	if j > len(v.a) {
		out.WriteString(v.b[max(i, len(v.a))-len(v.a) : j-len(v.a)])
	}
}

// substr returns a copy of v[i:j] that does not retain the chunk.
func (v vstr) substr(i, j int) string {
	if i == j {
		return ""
	}
	var sb strings.Builder
	sb.Grow(j - i)
	v.writeTo(&sb, i, j)
	return sb.String()
}
