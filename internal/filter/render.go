package filter

import (
	"slices"
	"unicode/utf8"
)

// RenderHold bounds how many bytes a [Render] holds back. A decision that
// would need more input than this is taken conservatively: the construct
// is neutralised (or, for Markdown code, treated as not being code).
const RenderHold = 4096

// maxReaders bounds the tag readers a Render runs at once; a '<' that would
// start one more is escaped instead.
const maxReaders = 32

// editKind is one neutralising edit on one input rune.
type editKind uint8

const (
	editLT      editKind = iota + 1 // '<' becomes "&lt;"
	editAttr                        // "x-" goes before the rune (an attribute name)
	editBracket                     // '[' becomes "&#91;"
	editParen                       // '(' becomes "&#40;"
	editColon                       // ':' becomes "&#58;"
)

type edit struct {
	m mark
	k editKind
}

// dest is a pending check of a Markdown link destination ("](" or "]:").
type dest struct {
	at mark
	k  editKind
	sc schemeCheck
}

const (
	modeText = iota
	modeFence
)

// HTML block kinds (CommonMark 4.6) a line may start, as bits: types 1 to 5
// end at a marker, types 6 and 7 at a blank line (html.blank).
const (
	htmlRaw   = 1 << iota // <script, <pre, <style, <textarea: ends at their end tag
	htmlCmt               // <!--: ends at -->
	htmlPI                // <?: ends at ?>
	htmlDecl              // <!X: ends at >
	htmlCDATA             // <![CDATA[: ends at ]]>
)

// Render makes node text safe to render as Markdown or HTML, as a stream
// filter: Push each chunk, then Flush at the end. Not safe for concurrent
// use; use one Render per text channel. A nil *Render passes text through.
//
// What it neutralises, and how (each a small local edit, so that the rest
// of the text is left as it was):
//
//   - A tag that can run script, fetch, embed or submit (script, style,
//     iframe, object, embed, svg, math, img, video, audio, source, link,
//     meta, base, form, input, button, template, ..., see dangerousTags):
//     its '<' becomes "&lt;", so the tag shows as text.
//   - In any other tag, an event handler (on...=), style=, a fetching or
//     submitting attribute (src=, srcset=, srcdoc=, poster=, background=,
//     data=, action=, formaction=, ping=, ...), or an href= (xlink:href=,
//     cite=, ...) whose URL has a scheme other than http, https, mailto,
//     tel or ftp: the attribute name gets an "x-" prefix, so it does
//     nothing.
//   - A Markdown image (![...]: inline, reference or shortcut; a renderer
//     would fetch it): its '[' becomes "&#91;", so it shows as text, alt
//     text and URL.
//   - A Markdown link or reference definition whose destination has a
//     scheme other than those: its "](" becomes "]&#40;" and "]:"
//     becomes "]&#58;", so it is no link; an autolink <scheme:...> has its
//     '<' escaped.
//
// Schemes are read as a browser reads them (character references decoded,
// tab, newline and controls ignored), and every check also runs on the
// text folded (NFKC, lowercased, zero-width and other invisible
// characters removed), so that ＜ｓｃｒｉｐｔ＞ or java&#x09;script: or
// <scr\u200bipt> are caught too. A tag is read from every '<' followed by a
// letter, whatever came before, since a Markdown renderer may start one
// anywhere.
//
// Text inside Markdown code is left exactly as it is: fenced code blocks
// (``` or ~~~ at the start of a line, indented by at most three spaces) and
// code spans (`...` within one line). A Markdown renderer shows code as
// text, so this is safe for consumers that render Markdown; a consumer that
// puts answers into a page as HTML without rendering Markdown must escape
// code itself. Code is only recognised where every CommonMark renderer
// agrees that it is code: where that is in doubt (a fence inside a list
// item that is less indented later, a fence after a line that may begin an
// HTML block, a code span after raw HTML, a link or a URL in the same
// paragraph, a lone \r, ...) the text is filtered like any other; after
// some of these doubts, all the rest of the stream is.
//
// Ordinary text passes byte for byte: prose, maths such as a<b and c>d,
// generics List<T>, links, emoji, CJK. Push holds back only what could still
// turn out to need an edit, at most [RenderHold] bytes; the output is the
// same for every way the input is split into chunks.
type Render struct {
	buf   []byte // input from base on, not yet emitted
	base  int    // input offset of buf[0]
	pos   int    // input offset of the next byte to examine
	edits []edit // decided edits at offsets ≥ base

	mode     uint8
	poisoned bool // no Markdown code recognised any more

	// The current line (text mode).
	lineStart bool // pos is at the start of a line not yet examined
	lineBlank bool // only spaces and tabs so far
	lineFence bool // the line opens a fenced code block
	lineMarks uint8
	look      lineLook
	fenceCh   byte
	fenceN    int
	fenceInd  int
	fl        fenceLine

	html  htmlState // HTML blocks that may be open
	spans bool      // code spans still possible in this paragraph
	token bool      // the current word has "://" or "www."
	bsl   int       // backslashes just before pos
	win   [11]byte  // the last input bytes, ASCII lowercased
	span  spanLook

	readers []tagReader
	rawPrev rune
	rawM    mark
	fPrev   rune
	fM      mark
	dests   []dest

	fr []rune // scratch for fold
	fi []int8
}

// htmlState tells which HTML blocks may be open: one that ends at a blank
// line, and those that end at a marker (kind bits).
type htmlState struct {
	blank bool
	marks uint8
}

// lineLook examines the start of a line: a fence, or an HTML block start.
type lineLook struct {
	active   bool
	i        int
	col      int
	prefixed bool // container markers (>, -, 1.) or the like came first
	stage    uint8
	ch       byte
	run      int
}

// spanLook looks for the end of a code span.
type spanLook struct {
	active bool
	i      int
	n      int // length of the opening backtick run
	opened bool
	m      int // length of the backtick run being read
	pipe   bool
}

// fenceLine reads a line inside a fenced code block, for its closing fence.
type fenceLine struct {
	phase uint8 // flIndent, flRun, flTrail, flContent
	col   int
	run   int
}

const (
	flIndent = iota
	flRun
	flTrail
	flContent
)

// NewRender returns a render-safety filter for one text channel.
func NewRender() *Render {
	r := &Render{}
	r.reset()
	return r
}

func (r *Render) reset() {
	*r = Render{buf: r.buf[:0], edits: r.edits[:0], readers: r.readers[:0], dests: r.dests[:0], fr: r.fr[:0], fi: r.fi[:0]}
	r.lineStart, r.lineBlank, r.spans = true, true, true
	r.rawPrev, r.fPrev = -1, -1
}

// Push adds the next chunk and returns the text that is safe to emit now.
func (r *Render) Push(chunk string) string {
	if r == nil {
		return chunk
	}
	if chunk == "" {
		return ""
	}
	held := len(r.buf)
	r.buf = append(r.buf, chunk...)
	r.process(false)
	upTo := r.holdStart()
	if held == 0 && len(r.edits) == 0 && upTo > r.base {
		// All of it comes from this chunk: no copy.
		n := upTo - r.base
		r.buf = r.buf[:copy(r.buf, r.buf[n:])]
		r.base = upTo
		return chunk[:n]
	}
	return r.emit(upTo)
}

// Flush ends the text and returns whatever was held back, filtered. The
// Render is then reset and may be reused for a new text.
func (r *Render) Flush() string {
	if r == nil {
		return ""
	}
	r.process(true)
	for i := range r.readers {
		r.readers[i].finishEOF(r)
	}
	r.readers = r.readers[:0]
	for i := range r.dests {
		if r.dests[i].sc.end() {
			r.edit(r.dests[i].at, r.dests[i].k)
		}
	}
	r.dests = r.dests[:0]
	out := r.emit(r.base + len(r.buf))
	r.reset()
	return out
}

// RenderText filters a whole text at once: the same as one Push and a
// Flush of a new Render.
func RenderText(s string) string {
	r := NewRender()
	return r.Push(s) + r.Flush()
}

func (r *Render) edit(m mark, k editKind) {
	e := edit{m: m, k: k}
	if !slices.Contains(r.edits, e) {
		r.edits = append(r.edits, e)
	}
}

func (r *Render) at(i int) byte { return r.buf[i-r.base] }

func (r *Render) end() int { return r.base + len(r.buf) }

// holdStart is the earliest input offset an undecided edit may still go to
// (or pos, where examining stopped).
func (r *Render) holdStart() int {
	h := r.pos
	for i := range r.readers {
		if p, ok := r.readers[i].hold(); ok && p < h {
			h = p
		}
	}
	// A '<' may still start a tag.
	if r.rawPrev == '<' && r.rawM.pos < h {
		h = r.rawM.pos
	}
	if r.fPrev == '<' && r.fM.pos < h {
		h = r.fM.pos
	}
	for i := range r.dests {
		if p := r.dests[i].at.pos; p < h {
			h = p
		}
	}
	return h
}

// emit returns the input before offset upTo with its edits, and drops it.
func (r *Render) emit(upTo int) string {
	n := upTo - r.base
	if n <= 0 {
		return ""
	}
	var out string
	if len(r.edits) == 0 {
		out = string(r.buf[:n])
	} else {
		out = r.applyEdits(upTo)
	}
	r.buf = r.buf[:copy(r.buf, r.buf[n:])]
	r.base = upTo
	return out
}

func (r *Render) applyEdits(upTo int) string {
	slices.SortFunc(r.edits, func(a, b edit) int {
		if a.m.pos != b.m.pos {
			return a.m.pos - b.m.pos
		}
		return int(a.m.idx) - int(b.m.idx)
	})
	out := make([]byte, 0, upTo-r.base+16*len(r.edits))
	from := r.base
	k := 0
	for k < len(r.edits) && r.edits[k].m.pos < upTo {
		p := r.edits[k].m.pos
		j := k
		for j < len(r.edits) && r.edits[j].m.pos == p {
			j++
		}
		out = append(out, r.buf[from-r.base:p-r.base]...)
		_, w := utf8.DecodeRune(r.buf[p-r.base:])
		out = appendEdited(out, r.buf[p-r.base:p-r.base+w], r.edits[k:j])
		from = p + w
		k = j
	}
	out = append(out, r.buf[from-r.base:upTo-r.base]...)
	r.edits = r.edits[:copy(r.edits, r.edits[k:])]
	return string(out)
}

// appendEdited appends the input rune src with its edits applied. Edits
// on a folded rune (an index into the NFKC form of a non-ASCII rune) show
// the rune in that form, where the edit can be placed.
func appendEdited(out, src []byte, es []edit) []byte {
	attr, folded := false, false
	for _, e := range es {
		switch {
		case e.k == editAttr && e.m.idx <= 0:
			attr = true // before the rune, however it is shown
		case len(src) > 1:
			folded = true
		}
	}
	if attr {
		out = append(out, "x-"...)
	}
	if !folded {
		for _, e := range es {
			if s := replacement(e.k, rune(src[0])); s != "" {
				return append(out, s...)
			}
		}
		return append(out, src...)
	}
	for i, c := range display(src) {
		var repl string
		for _, e := range es {
			if int(e.m.idx) != i {
				continue
			}
			if e.k == editAttr && i > 0 {
				out = append(out, "x-"...)
			} else if s := replacement(e.k, c); s != "" {
				repl = s
			}
		}
		if repl != "" {
			out = append(out, repl...)
		} else {
			out = utf8.AppendRune(out, c)
		}
	}
	return out
}

func replacement(k editKind, c rune) string {
	switch {
	case k == editLT && c == '<':
		return "&lt;"
	case k == editBracket && c == '[':
		return "&#91;"
	case k == editParen && c == '(':
		return "&#40;"
	case k == editColon && c == ':':
		return "&#58;"
	}
	return ""
}

// process examines input from pos on, as far as it can be decided. With
// final set the input ends at its end.
func (r *Render) process(final bool) {
	end := r.end()
	for r.pos < end {
		if r.mode == modeFence {
			if !r.fenceStep(final) {
				return
			}
			continue
		}
		if r.lineStart {
			if !r.poisoned && !r.examineLine(final) {
				return
			}
			r.lineStart = false
		}
		if r.plainRun() {
			continue
		}
		c := r.at(r.pos)
		if c == '`' && r.spans && !r.poisoned && r.bsl%2 == 0 && !r.lineFence && !r.htmlOpen() {
			switch r.codeSpan(final) {
			case lookMore:
				return
			case lookYes:
				continue
			}
		}
		if c == '\r' {
			if r.pos+1 == end && !final {
				return
			}
			if r.pos+1 == end || r.at(r.pos+1) != '\n' {
				r.poison()
			}
		}
		rn, w := rune(c), 1
		if c >= utf8.RuneSelf {
			b := r.buf[r.pos-r.base:]
			if !final && !utf8.FullRune(b) {
				return
			}
			rn, w = utf8.DecodeRune(b)
		}
		r.text(rn, w)
		r.pos += w
		r.force()
	}
}

// plain marks the ASCII bytes that, with nothing pending and no tag open,
// change nothing but the line and word state: not markup (< > ! [ ] ` \\
// $), not the / and . that "://" and "www." end with, not controls.
var plain = func() (t [256]bool) {
	for c := ' '; c < 0x7f; c++ {
		t[c] = true
	}
	for _, c := range "<>![]`\\$/." {
		t[c] = false
	}
	t['\t'] = true
	return t
}()

// plainRun passes over a run of plain bytes at once, when nothing is
// pending that each byte would have to be shown to. It reports whether it
// did.
func (r *Render) plainRun() bool {
	if len(r.readers) > 0 || len(r.dests) > 0 || r.rawPrev == '<' || r.fPrev == '<' || r.fPrev == ']' {
		return false
	}
	if p := r.win[10]; p == '<' || p == ']' || p == '[' {
		return false
	}
	b := r.buf[r.pos-r.base:]
	n, space, other := 0, false, false
	for n < len(b) && plain[b[n]] {
		if c := b[n]; c == ' ' || c == '\t' {
			space = true
		} else {
			other = true
		}
		n++
	}
	if n < 2 {
		return false
	}
	if space {
		r.token = false
	}
	if other {
		r.lineBlank = false
	}
	r.bsl = 0
	k := min(n, len(r.win))
	copy(r.win[:], r.win[k:])
	for i, c := range b[n-k : n] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		r.win[len(r.win)-k+i] = c
	}
	last := r.pos + n - 1
	r.rawPrev, r.rawM = rune(r.win[10]), mark{last, -1}
	r.fPrev, r.fM = rune(r.win[10]), mark{last, 0}
	r.pos += n
	return true
}

// force takes, conservatively, every decision that has waited for more than
// RenderHold bytes.
func (r *Render) force() {
	limit := r.pos - RenderHold
	if r.holdStart() >= limit {
		return
	}
	alive := r.readers[:0]
	for _, t := range r.readers {
		if p, ok := t.hold(); ok && p < limit {
			if !t.finish(r) {
				continue
			}
		}
		alive = append(alive, t)
	}
	r.readers = alive
	ds := r.dests[:0]
	for _, d := range r.dests {
		if d.at.pos < limit {
			r.edit(d.at, d.k)
			continue
		}
		ds = append(ds, d)
	}
	r.dests = ds
}

func (r *Render) poison() {
	r.poisoned = true
	r.spans = false
	r.lineFence = false
}

func (r *Render) htmlOpen() bool { return r.html.blank || r.html.marks != 0 }

// code shows tag readers still open the code in [from, to) as a page that
// renders it as HTML would see it, with its text made harmless: whitespace,
// quotes, '>', '/' and '=' as they are (they end tags and values), every
// other rune as 'x'. Nothing else looks at code.
func (r *Render) code(from, to int) {
	if len(r.readers) == 0 {
		return
	}
	for i := from; i < to; i++ {
		c := rune(r.at(i))
		switch {
		case c >= 0x80 && c < 0xc0:
			continue // inside a rune
		case c == ' ', c == '\t', c == '\n', c == '\r', c == '\f', c == '"', c == '\'', c == '>', c == '/', c == '=':
		default:
			c = 'x'
		}
		m := mark{i, -1}
		r.stepReaders(false, c, []rune{c}, m)
		r.stepReaders(true, c, []rune{c}, m)
	}
}

// codeBoundary forgets what connects text across code: Markdown does not
// see an image or a link destination through it.
func (r *Render) codeBoundary() {
	r.dests = r.dests[:0]
	r.rawPrev, r.fPrev = -1, -1
	r.bsl = 0
	r.win = [11]byte{}
}

// paragraph starts a new paragraph: code spans are possible again.
func (r *Render) paragraph() {
	r.spans = !r.poisoned
	r.token = false
}

// text examines one input rune outside code.
func (r *Render) text(c rune, w int) {
	p := r.pos
	if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
		r.lineBlank = false
	}
	if c == '\\' {
		r.bsl++
	} else {
		r.bsl = 0
	}
	lc := byte(0x80)
	if c < utf8.RuneSelf {
		lc = byte(c)
		if 'A' <= lc && lc <= 'Z' {
			lc += 'a' - 'A'
		}
	}
	if r.spans {
		// What may take a backtick away from a code span: raw HTML and
		// autolinks, link destinations and labels, footnotes, maths.
		switch prev := r.win[10]; {
		case prev == '<' && (isASCIIAlpha(c) || c == '/' || c == '!' || c == '?'),
			prev == ']' && (c == '(' || c == '[' || c == ':'),
			prev == '[' && c == '^',
			c == '$':
			r.spans = false
		}
	}
	switch {
	case isHTMLSpace(c):
		r.token = false
	case c == '/' && r.win[9] == ':' && r.win[10] == '/',
		c == '.' && r.win[8] == 'w' && r.win[9] == 'w' && r.win[10] == 'w':
		r.token = true // a URL a linkifier may extend over a backtick
	}
	copy(r.win[:], r.win[1:])
	r.win[10] = lc
	if c == '>' {
		r.lineMarks |= endMarkers(&r.win)
	}

	src := r.buf[p-r.base : p-r.base+w]
	r.fr, r.fi = fold(src, c, r.fr[:0], r.fi[:0])
	fs := r.fr

	// Tag readers on the input as it is.
	raw := [1]rune{rune(lc)}
	if c >= utf8.RuneSelf {
		raw[0] = c
	}
	r.stepReaders(false, c, raw[:], mark{p, -1})
	if r.rawPrev == '<' && isASCIIAlpha(c) {
		r.spawn(false, r.rawM, raw[:])
	}
	r.rawPrev, r.rawM = c, mark{p, -1}

	// Tag readers and Markdown checks on the folded text.
	for i, f := range fs {
		m := mark{p, r.fi[i]}
		r.stepReaders(true, f, fs[i:i+1], m)
		if r.fPrev == '<' && 'a' <= f && f <= 'z' {
			r.spawn(true, r.fM, fs[i:i+1])
		}
		r.markdown(f, m)
		r.fPrev, r.fM = f, m
	}

	if c == '\n' {
		r.endLine()
	}
}

func (r *Render) stepReaders(folded bool, c rune, fs []rune, m mark) {
	if len(r.readers) == 0 {
		return
	}
	alive := r.readers[:0]
	for _, t := range r.readers {
		if t.folded == folded && !t.step(r, c, fs, m) {
			continue
		}
		dup := false
		for i := range alive {
			if alive[i].same(&t) {
				dup = true
				break
			}
		}
		if !dup {
			alive = append(alive, t)
		}
	}
	r.readers = alive
}

func (r *Render) spawn(folded bool, lt mark, fs []rune) {
	if len(r.readers) >= maxReaders {
		r.edit(lt, editLT)
		return
	}
	t := tagReader{folded: folded, st: tsName, lt: lt, namePending: true, schemeLike: true}
	if t.step(r, fs[0], fs, lt) {
		r.readers = append(r.readers, t)
	}
}

// markdown runs the Markdown checks on one folded rune.
func (r *Render) markdown(f rune, m mark) {
	if len(r.dests) > 0 {
		ds := r.dests[:0]
		for _, d := range r.dests {
			if done, bad := d.sc.feed(f); done {
				if bad {
					r.edit(d.at, d.k)
				}
				continue
			}
			ds = append(ds, d)
		}
		r.dests = ds
	}
	switch {
	case r.fPrev == '!' && f == '[':
		r.edit(m, editBracket)
	case r.fPrev == ']' && f == '(':
		r.addDest(m, editParen)
	case r.fPrev == ']' && f == ':':
		r.addDest(m, editColon)
	}
}

func (r *Render) addDest(m mark, k editKind) {
	if len(r.dests) >= maxReaders {
		r.edit(m, k)
		return
	}
	r.dests = append(r.dests, dest{at: m, k: k, sc: schemeCheck{md: true}})
}

// endLine is called after the '\n' that ends a line in text mode.
func (r *Render) endLine() {
	if r.lineBlank {
		r.html.blank = false
		r.paragraph()
	}
	r.html.marks &^= r.lineMarks
	r.lineMarks = 0
	if r.lineFence {
		r.mode = modeFence
		r.fl = fenceLine{}
		r.codeBoundary()
	}
	r.lineStart, r.lineBlank, r.lineFence = true, true, false
}

// endMarkers returns the HTML block kinds whose end marker the window ends
// with (its last byte is '>').
func endMarkers(w *[11]byte) uint8 {
	m := uint8(htmlDecl)
	s := string(w[:])
	switch {
	case s[8:] == "-->":
		m |= htmlCmt
	case s[8:] == "]]>":
		m |= htmlCDATA
	}
	if s[9:] == "?>" {
		m |= htmlPI
	}
	if s[2:] == "</script>" || s[5:] == "</pre>" || s[3:] == "</style>" || s == "</textarea>" {
		m |= htmlRaw
	}
	return m
}

// Results of a lookahead.
const (
	lookMore = iota // more input is needed
	lookYes
	lookNo
)

// codeSpan looks, at a backtick run, for the run that closes it on the
// same line. If there is one (and no '|' in between, which a table would
// split at), the span is passed over as it is.
func (r *Render) codeSpan(final bool) int {
	s := &r.span
	if !s.active {
		*s = spanLook{active: true, i: r.pos}
	}
	end, limit := r.end(), r.holdStart()+RenderHold
	for s.i < end && s.i < limit {
		c := r.at(s.i)
		if !s.opened {
			if c == '`' {
				s.n++
				s.i++
				continue
			}
			s.opened = true
		}
		switch {
		case c == '`':
			s.m++
			s.i++
			continue
		case s.m == s.n:
			return r.spanFound()
		case c == '\n' || c == '\r':
			return r.spanNo()
		case c == '|':
			s.pipe = true
		}
		s.m = 0
		s.i++
	}
	switch {
	case s.i < end: // the limit: too long to tell
		return r.spanNo()
	case !final:
		return lookMore
	case s.opened && s.m == s.n:
		return r.spanFound()
	}
	return r.spanNo()
}

func (r *Render) spanFound() int {
	s := &r.span
	s.active = false
	if s.pipe || r.token {
		r.spans = false
		return lookNo
	}
	r.code(r.pos, s.i)
	r.pos = s.i
	r.lineBlank = false
	r.codeBoundary()
	return lookYes
}

func (r *Render) spanNo() int {
	r.span.active = false
	r.spans = false
	return lookNo
}

// examineLine looks at the start of a line (text mode): a fence opens a
// code block if nothing makes that doubtful; a fence where one is in doubt
// ends code recognition; a '<' may begin an HTML block, a '[' a link
// reference definition.
func (r *Render) examineLine(final bool) bool {
	l := &r.look
	if !l.active {
		*l = lineLook{active: true, i: r.pos}
	}
	end, limit := r.end(), r.holdStart()+RenderHold
	for {
		if l.i >= limit {
			l.active = false
			r.poison() // a line too long to tell
			return true
		}
		if l.i >= end {
			if !final {
				if l.stage == 0 {
					// Indentation and container markers are never edited:
					// pass them on while the line is still undecided.
					for r.pos < l.i {
						r.text(rune(r.at(r.pos)), 1)
						r.pos++
					}
				}
				return false
			}
			l.active = false
			if l.stage == 1 && l.run >= 3 || l.stage == 2 {
				r.fenceLike()
			}
			return true
		}
		c := r.at(l.i)
		switch l.stage {
		case 0:
			switch {
			case c == ' ':
				l.col++
			case c == '\t':
				l.col = l.col/4*4 + 4
			case c == '>' || c == '-' || c == '+' || c == '*' || c == '.' || c == ')' || '0' <= c && c <= '9':
				l.prefixed = true
			case c == '`' || c == '~':
				l.stage, l.ch = 1, c
				continue
			case c == '<':
				kind, ok := r.htmlStart(l.i, final)
				if !ok {
					return false
				}
				l.active = false
				if kind == -1 {
					r.html.blank = true
				} else {
					r.html.marks |= uint8(kind)
				}
				return true
			case c == '[':
				// Maybe a link reference definition: its label and title
				// are no inline text, so backticks there open no code.
				r.spans = false
				l.active = false
				return true
			default:
				l.active = false
				return true
			}
		case 1:
			if c == l.ch {
				l.run++
				break
			}
			if l.run < 3 {
				l.active = false
				return true
			}
			if l.ch == '~' {
				l.active = false
				r.fenceLike()
				return true
			}
			l.stage = 2
			continue
		case 2:
			switch c {
			case '`':
				l.active = false // backticks in the info: no fence
				return true
			case '\n', '\r':
				l.active = false
				r.fenceLike()
				return true
			}
		}
		l.i++
	}
}

// fenceLike: the line examined is a fence (after l.col columns of indent,
// and maybe container markers).
func (r *Render) fenceLike() {
	l := &r.look
	if l.prefixed || l.col > 3 || r.htmlOpen() {
		r.poison()
		return
	}
	r.lineFence = true
	r.fenceCh, r.fenceN, r.fenceInd = l.ch, l.run, l.col
}

// htmlStart classifies a '<' at i that starts a line (after indentation
// and container markers): 0 for no HTML block, -1 for one that ends at a
// blank line, else the kind bit. ok is false if more input is needed.
func (r *Render) htmlStart(i int, final bool) (kind int, ok bool) {
	end := r.end()
	var b [11]byte
	n := 0
	for n < len(b) && i+1+n < end {
		c := r.at(i + 1 + n)
		if c == '\n' || c == '\r' {
			break
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[n] = c
		n++
	}
	complete := n == len(b) || i+1+n < end || final
	s := string(b[:n])
	has := func(p string) (yes, undecided bool) {
		if len(s) >= len(p) {
			return s[:len(p)] == p, false
		}
		return false, s == p[:len(s)] && !complete
	}
	for _, c := range []struct {
		p string
		k int
	}{{"!--", htmlCmt}, {"![cdata[", htmlCDATA}, {"?", htmlPI}} {
		if yes, und := has(c.p); und {
			return 0, false
		} else if yes {
			return c.k, true
		}
	}
	if len(s) == 0 {
		return 0, complete
	}
	if s[0] == '!' {
		if len(s) < 2 {
			return 0, complete
		}
		if isASCIIAlpha(rune(s[1])) {
			return htmlDecl, true
		}
		return 0, true
	}
	for _, t := range []string{"script", "pre", "style", "textarea"} {
		yes, und := has(t)
		if und {
			return 0, false
		}
		if yes {
			if len(s) == len(t) {
				if !complete {
					return 0, false
				}
				return htmlRaw, true // followed by the end of the line
			}
			if c := s[len(t)]; c == ' ' || c == '\t' || c == '>' {
				return htmlRaw, true
			}
		}
	}
	if isASCIIAlpha(rune(s[0])) || s[0] == '/' && len(s) > 1 && isASCIIAlpha(rune(s[1])) {
		return -1, true
	}
	if s == "/" && !complete {
		return 0, false
	}
	return 0, true
}

// fenceStep examines input inside a fenced code block: the content passes
// as it is; a closing fence ends the block; a line that makes the block
// doubtful (less indented than an indented opening fence, or a lone \r)
// ends code recognition. It returns false if more input is needed.
func (r *Render) fenceStep(final bool) bool {
	from := r.pos
	ok := r.fenceByte(final)
	if r.pos > from {
		r.code(from, r.pos)
		r.force()
	}
	return ok
}

func (r *Render) fenceByte(final bool) bool {
	end := r.end()
	c := r.at(r.pos)
	if c == '\r' {
		if r.pos+1 == end && !final {
			return false
		}
		if r.pos+1 == end || r.at(r.pos+1) != '\n' {
			r.leaveFence(true)
			return true
		}
		r.pos++ // the \n that follows decides
		return true
	}
	f := &r.fl
	if c == '\n' {
		if (f.phase == flRun && f.run >= r.fenceN) || f.phase == flTrail {
			r.pos++
			switch {
			case f.col <= 3:
				r.leaveFence(false)
			case f.col <= r.fenceInd+3:
				r.leaveFence(true) // a closing fence only inside a list item
			}
			*f = fenceLine{}
			return true
		}
		r.pos++
		*f = fenceLine{}
		return true
	}
	switch f.phase {
	case flIndent:
		switch {
		case c == ' ':
			f.col++
		case c == '\t':
			f.col = f.col/4*4 + 4
		case r.fenceInd > 0 && f.col < r.fenceInd:
			// Less indented than the fence: a list item it was in may have
			// ended (and the block with it).
			r.leaveFence(true)
			return true
		case c == r.fenceCh && f.col <= r.fenceInd+3:
			f.phase, f.run = flRun, 1
		default:
			f.phase = flContent
		}
		r.pos++
	case flRun:
		switch {
		case c == r.fenceCh:
			f.run++
		case (c == ' ' || c == '\t') && f.run >= r.fenceN:
			f.phase = flTrail
		default:
			f.phase = flContent
		}
		r.pos++
	case flTrail:
		if c != ' ' && c != '\t' {
			f.phase = flContent
		}
		r.pos++
	default:
		i := r.pos
		for i < end && r.at(i) != '\n' && r.at(i) != '\r' {
			i++
		}
		r.pos = i
	}
	return true
}

// leaveFence ends a fenced code block: at its closing fence, or (doubt)
// with code recognition ended.
func (r *Render) leaveFence(doubt bool) {
	r.mode = modeText
	r.html = htmlState{}
	r.fl = fenceLine{}
	r.codeBoundary()
	if doubt {
		r.poison()
		r.lineStart, r.lineBlank = false, true
		return
	}
	r.lineStart, r.lineBlank = true, true
	r.paragraph()
}
