// Package jsonscan owns a small reflection-free JSON reader for the few
// hot lines whose shape is known in advance: the inference_chunk frame the
// router decodes per token (internal/wire) and the /api/chat line the node
// decodes per token (internal/ollama). It exists because encoding/json's
// reflection is most of the cost of those decodes. [AppendString] is the
// writing half: the string escaper of every per-token line written by hand
// (the node's frame, the router's SSE and NDJSON events, the fake Ollama's
// stream).
//
// It reads only a strict subset of JSON and reports false for the rest, so
// that a caller can fall back to encoding/json for anything it refuses and
// still decode every input exactly as encoding/json would. Everything a
// Parser accepts is valid JSON, and every value it returns is the value
// encoding/json gives the same bytes. Callers keep the fuzz tests that prove
// it for their shapes.
package jsonscan

import "unicode/utf8"

// Parser reads one JSON text held in memory, left to right. The zero value
// reads nothing; use [New]. A method that reports false leaves the position
// unspecified: the caller is expected to give up on the input.
type Parser struct {
	b []byte
	i int
}

// New returns a Parser at the start of b. The Parser does not copy b, and
// the strings it returns never alias it.
func New(b []byte) Parser { return Parser{b: b} }

// Space skips JSON whitespace (space, tab, newline, carriage return): the
// same set encoding/json skips, and nothing else.
func (p *Parser) Space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// End skips trailing whitespace and reports whether the input ends there.
// Call it after the last value: encoding/json refuses trailing data.
func (p *Parser) End() bool {
	p.Space()
	return p.i == len(p.b)
}

func (p *Parser) consume(c byte) bool {
	p.Space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// Object reads an object, {"key": value, ...}, calling field once per key,
// in input order, with the position at the start of the value; field must
// read the whole value (with Str, Bool, Int or a nested Object) and report
// whether it was acceptable. Object reports false if field does, or if the
// object is malformed.
//
// Keys must be plain printable ASCII: a key holding an escape, a control
// character or a non-ASCII byte is refused, so that the bytes field sees
// are the key itself. The key slice aliases the input and is only valid
// during the call. Object neither matches keys nor notices repeats: a
// caller that wants encoding/json's result must refuse keys it does not
// know (encoding/json matches struct fields case-insensitively) and keys
// it has already seen (encoding/json lets the last one win, or merges).
func (p *Parser) Object(field func(key []byte) bool) bool {
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
		p.Space()
		if !field(key) {
			return false
		}
		if p.consume(',') {
			continue
		}
		return p.consume('}')
	}
}

// Bool reads true or false. It refuses null and every other value.
func (p *Parser) Bool() (v, ok bool) {
	p.Space()
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

// Int reads an integer written as encoding/json decodes it into an integer
// field: an optional minus sign and decimal digits without a leading zero
// (-?(0|[1-9][0-9]*)), within the range of int64. It refuses null, a
// fraction or an exponent (even 1.0 or 1e3, which encoding/json also
// refuses for an integer field), a leading zero or plus sign, and a value
// out of range. A caller storing into a narrower type checks the range
// itself.
func (p *Parser) Int() (int64, bool) {
	p.Space()
	i := p.i
	neg := i < len(p.b) && p.b[i] == '-'
	if neg {
		i++
	}
	start := i
	var u uint64
	for i < len(p.b) && p.b[i] >= '0' && p.b[i] <= '9' {
		if i-start >= 19 { // 19 digits always fit in a uint64
			return 0, false
		}
		u = u*10 + uint64(p.b[i]-'0')
		i++
	}
	n := i - start
	if n == 0 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	if i < len(p.b) {
		switch p.b[i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	const maxInt64 = 1<<63 - 1
	switch {
	case !neg && u > maxInt64, neg && u > maxInt64+1:
		return 0, false
	}
	p.i = i
	if neg {
		return int64(-u), true
	}
	return int64(u), true
}

// Str reads a string. It refuses null and other values, a string holding
// invalid UTF-8 or a raw control character (encoding/json replaces the
// first and refuses the second), and a \u escape in the surrogate range
// (encoding/json pairs them or substitutes U+FFFD; that is left to it).
// The other escapes (\" \\ \/ \b \f \n \r \t and \uXXXX) are decoded.
func (p *Parser) Str() (string, bool) { return p.StrKnown("") }

// StrKnown is Str, except that it returns known itself, without
// allocating, when the string read equals it: for the values nearly every
// line repeats (a role, a model name, a frame type).
func (p *Parser) StrKnown(known string) (string, bool) {
	raw, plain, ok := p.rawStr()
	switch {
	case !ok:
		return "", false
	case plain && string(raw) == known:
		return known, true
	case plain:
		return string(raw), true
	}
	return unescape(raw)
}

// SkipStr reads a string as Str does, refusing what it refuses, without
// keeping it: for fields nobody reads. Only an escaped string allocates.
func (p *Parser) SkipStr() bool {
	raw, plain, ok := p.rawStr()
	if !ok || plain {
		return ok
	}
	_, ok = unescape(raw)
	return ok
}

// rawStr reads a string up to its closing quote and returns what is
// between the quotes; plain reports that it holds no escape and has been
// checked (valid UTF-8, no control character). An escaped string is
// checked by unescape.
func (p *Parser) rawStr() (raw []byte, plain, ok bool) {
	p.Space()
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false, false
	}
	p.i++
	start := p.i
	plain = true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			raw = p.b[start:p.i]
			p.i++
			if plain && !utf8.Valid(raw) {
				return nil, false, false
			}
			return raw, plain, true
		case c == '\\':
			plain = false
			p.i += 2
		case c < 0x20:
			return nil, false, false
		default:
			p.i++
		}
	}
	return nil, false, false
}

// unescape decodes the inside of a string holding escapes. It refuses
// invalid UTF-8, an unknown escape and a \u escape of a surrogate. rawStr
// has already refused control characters.
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
