package filter

import "sync"

// Replacement is what every outbound match is replaced with.
const Replacement = "[content filtered]"

// maxHold bounds how many bytes a Stream holds back. If a candidate match
// has grown longer than this without being decided, the stream gives up on
// it and emits the text (see [Stream]).
const maxHold = 256

// DefaultOutboundPatterns returns the default outbound patterns: the v1
// list `<script[\s>]`, `javascript:`, `data:text/html`, with the two URL
// schemes anchored on a word boundary.
//
// The anchor costs no protection: a browser reads "xjavascript:" or
// "_data:..." as another (harmless) scheme or a relative URL, and the
// characters it strips in front of a URL (spaces, control characters,
// quotes, '=') are not word characters, so \b still holds there. It is what
// lets a stream emit ordinary words at once: without it a word ending in
// "d" or "j" ("Hello world") would have to be held back, because
// "world" + "ata:text/html" contains "data:text/html".
func DefaultOutboundPatterns() []string {
	return []string{
		`<script[\s>]`,
		`\bjavascript:`,
		`\bdata:text/html`,
	}
}

// Outbound rewrites node output before consumers see it: every match of any
// pattern is replaced by [Replacement]. Safe for concurrent use. A nil
// *Outbound, or one with no patterns, changes nothing.
//
// The patterns act as one alternation (?i:p1|p2|...): the input is scanned
// left to right, at each position the leftmost match wins (ties go to the
// earlier pattern, then to Go's usual leftmost-first preference), the match
// is replaced and scanning resumes after it. The replacement text is never
// scanned, so a pattern that matches inside [Replacement] cannot loop.
type Outbound struct {
	p    *program  // nil: no patterns
	pool sync.Pool // of *machine, for Replace
}

// NewOutbound compiles patterns (Go regexps, case-insensitive). The error
// names the first bad pattern.
func NewOutbound(patterns []string) (*Outbound, error) {
	if len(patterns) == 0 {
		return &Outbound{}, nil
	}
	p, err := compileProgram("outbound", patterns)
	if err != nil {
		return nil, err
	}
	o := &Outbound{p: p}
	o.pool.New = func() any { return newMachine(p) }
	return o, nil
}

// Replace returns s with every match replaced by [Replacement]. It is the
// one-shot form, for whole strings such as node error messages; for any
// split of s, a [Stream] produces the same text.
func (o *Outbound) Replace(s string) string {
	if o == nil || o.p == nil || !o.p.hasCandidate(s) {
		return s
	}
	m := o.pool.Get().(*machine)
	st := Stream{o: o, prev: -1, m: m}
	out := st.scan(s, true)
	o.pool.Put(m)
	return out
}

// Stream returns a new per-stream filter state.
func (o *Outbound) Stream() *Stream {
	return &Stream{o: o, prev: -1}
}

// Stream filters one text channel (answer text, or thinking text) chunk by
// chunk. Not safe for concurrent use; use one Stream per channel.
//
// Push returns at once everything that cannot be part of a match and holds
// back only the trailing text where a match could still begin (plus an
// incomplete UTF-8 sequence at the very end, which is never split). The
// concatenated output of Push and Flush equals [Outbound.Replace] of the
// concatenated input, for any split, with one documented exception: the
// hold-back is bounded to 256 bytes. If a candidate match is still undecided
// when the held text would exceed that (possible only for patterns whose
// matches can be that long, e.g. `<a.*?>`; never for the defaults, whose
// matches are at most 14 characters), that candidate is abandoned and its text
// emitted unfiltered, and scanning resumes 256 bytes before the end of the
// pending text.
//
// A nil *Stream, or one from a nil or empty *Outbound, passes text through.
type Stream struct {
	o    *Outbound
	held string // input not yet emitted
	prev rune   // last input rune before held; -1 at the start of the input
	m    *machine
}

// Push adds the next chunk and returns the text that is safe to emit now
// (possibly "").
func (s *Stream) Push(chunk string) string {
	if s == nil || s.o == nil || s.o.p == nil {
		return chunk
	}
	if chunk == "" {
		return ""
	}
	if s.held != "" {
		return s.scan(s.held+chunk, false)
	}
	if s.o.p.hasCandidate(chunk) {
		return s.scan(chunk, false)
	}
	// Hot path: nothing in chunk can start a match.
	end := decodableEnd(chunk)
	if end > 0 {
		s.prev = lastRune(chunk[:end])
	}
	s.held = chunk[end:]
	return chunk[:end]
}

// Flush ends the stream and returns whatever was held back, filtered. The
// Stream is then reset and may be reused for a new text.
func (s *Stream) Flush() string {
	if s == nil {
		return ""
	}
	held := s.held
	if held == "" || s.o == nil || s.o.p == nil {
		s.held, s.prev = "", -1
		return held
	}
	out := s.scan(held, true)
	s.held, s.prev = "", -1
	return out
}

// scan filters buf (held text followed by new input; s.prev is the rune
// before it). If final, buf runs to the end of the input. It returns the text
// to emit and leaves the undecided tail in s.held.
func (s *Stream) scan(buf string, final bool) string {
	if s.m == nil {
		s.m = newMachine(s.o.p)
	}
	end := len(buf)
	if !final {
		end = decodableEnd(buf)
	}
	var out []byte
	emitted, pos, prev := 0, 0, s.prev
	for {
		a, b, found, hold := s.m.search(buf, pos, end, prev, final, false)
		if found {
			if out == nil {
				out = make([]byte, 0, len(buf)+len(Replacement))
			}
			out = append(out, buf[emitted:a]...)
			out = append(out, Replacement...)
			emitted, pos, prev = b, b, lastRune(buf[:b])
			continue
		}
		if final {
			hold = len(buf)
		} else if len(buf)-hold > maxHold {
			// Give up on candidates starting before the last maxHold bytes.
			pos = nextBoundary(buf, hold, len(buf)-maxHold)
			prev = lastRune(buf[:pos])
			continue
		}
		if hold > 0 {
			s.prev = lastRune(buf[:hold])
		}
		s.held = buf[hold:]
		if out == nil {
			return buf[emitted:hold]
		}
		out = append(out, buf[emitted:hold]...)
		return string(out)
	}
}
