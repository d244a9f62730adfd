package filter

import "unicode/utf8"

// This file holds the HTML side of the render filter: a tag reader that
// follows the HTML tokenizer's tag states (tag name, attribute name,
// before/after value, quoted and unquoted values, self-closing) closely
// enough to see each attribute as a browser would, and the URL scheme check
// shared by attribute values and Markdown link destinations.

// dangerousTags are the elements whose '<' the filter escapes, whatever
// their attributes: they run script, fetch, embed other documents, submit,
// restyle the page, or change how the markup around them is parsed.
var dangerousTags = []string{
	"script", "style", "iframe", "frame", "frameset", "object", "embed",
	"applet", "param", "svg", "math", "img", "image", "picture", "video",
	"audio", "source", "track", "link", "meta", "base", "form", "input",
	"button", "textarea", "isindex", "template", "noscript", "noembed",
	"noframes", "xmp", "plaintext", "title", "portal", "fencedframe",
	"bgsound", "layer", "ilayer", "xml", "import",
}

// valuedAttrs are renamed whenever they have a value: with one they fetch
// (src, srcset, poster, background, data, ...), submit (action,
// formaction), or carry markup or CSS (srcdoc, style). Every attribute whose
// name starts with "on" (an event handler) is treated the same.
var valuedAttrs = []string{
	"style", "src", "srcset", "srcdoc", "lowsrc", "dynsrc", "poster",
	"background", "data", "codebase", "archive", "classid", "action",
	"formaction", "ping", "manifest", "datasrc", "datafld", "dataformatas",
}

// urlAttrs are renamed when their value is a URL with a scheme that is not
// allowed (see [allowedSchemes]); a relative URL or an http(s) one stays.
var urlAttrs = []string{"href", "xlink:href", "cite", "longdesc", "folder", "profile"}

// allowedSchemes are the URL schemes links may keep. Everything else with a
// scheme (javascript:, vbscript:, data:, file:, ...) is neutralised.
var allowedSchemes = []string{"http", "https", "mailto", "tel", "ftp"}

type attrClass uint8

const (
	acSafe   attrClass = iota
	acValued           // renamed when it has a value
	acURL              // renamed when its value has a scheme not allowed
)

var (
	dangerousTagSet  = map[string]bool{}
	tagPrefixes      = map[string]bool{} // every prefix of a dangerous tag name, "" included
	attrClasses      = map[string]attrClass{}
	attrPrefixes     = map[string]bool{}
	allowedSchemeSet = map[string]bool{}
)

func init() {
	for _, n := range dangerousTags {
		dangerousTagSet[n] = true
		for i := 0; i <= len(n); i++ {
			tagPrefixes[n[:i]] = true
		}
	}
	for _, n := range valuedAttrs {
		attrClasses[n] = acValued
	}
	for _, n := range urlAttrs {
		attrClasses[n] = acURL
	}
	for n := range attrClasses {
		for i := 0; i <= len(n); i++ {
			attrPrefixes[n[:i]] = true
		}
	}
	for _, s := range allowedSchemes {
		allowedSchemeSet[s] = true
	}
}

// name is a bounded, lowercased tag or attribute name as it grows.
type name struct {
	b    [24]byte
	n    uint8
	long bool // longer than b, or holds a rune that no listed name has
}

func (nm *name) reset() { *nm = name{} }

func (nm *name) add(r rune) {
	if r >= 0x80 || int(nm.n) == len(nm.b) {
		nm.long = true
		return
	}
	nm.b[nm.n] = byte(r)
	nm.n++
}

func (nm *name) str() string { return string(nm.b[:nm.n]) }

// tag names: is a dangerous name (once complete), could still become one.
func (nm *name) dangerousTag() bool { return !nm.long && dangerousTagSet[nm.str()] }
func (nm *name) tagPrefix() bool    { return !nm.long && tagPrefixes[nm.str()] }

// isEvent: an event handler attribute name ("on" and at least one more
// character), whatever its length.
func (nm *name) isEvent() bool {
	return nm.n >= 2 && nm.b[0] == 'o' && nm.b[1] == 'n' && (nm.n > 2 || nm.long)
}

func (nm *name) attrClass() attrClass {
	if nm.isEvent() {
		return acValued
	}
	if nm.long {
		return acSafe
	}
	return attrClasses[nm.str()]
}

// attrUndecided: the name could still grow into one that is not safe.
func (nm *name) attrUndecided() bool {
	if nm.n <= 2 && !nm.long && (nm.n == 0 || nm.b[0] == 'o') && (nm.n < 2 || nm.b[1] == 'n') {
		return true // "", "o", "on": an event handler name may follow
	}
	if nm.isEvent() {
		return true // decided as valued, but whether it gets a value is open
	}
	return !nm.long && attrPrefixes[nm.str()]
}

// mark is a place in the input an edit can apply to: the input rune that
// starts at byte pos, and, for a folded rune, its index in the rune's NFKC
// form (-1 for the rune as it is).
type mark struct {
	pos int
	idx int8
}

// tstate is the state of a tag reader, after the HTML tokenizer's.
type tstate uint8

const (
	tsName        tstate = iota // tag name
	tsBeforeAttr                // before attribute name
	tsAttrName                  // attribute name
	tsAfterName                 // after attribute name
	tsBeforeValue               // before attribute value
	tsValueDQ                   // attribute value (double-quoted)
	tsValueSQ                   // attribute value (single-quoted)
	tsValueUnq                  // attribute value (unquoted)
	tsAfterValueQ               // after attribute value (quoted)
	tsSelfClose                 // self-closing start tag
)

// tagReader reads one possible tag, from its '<' to its '>'. The render
// filter starts one at every '<' followed by a letter, in the input as it is
// (raw) and in its folded form, because a Markdown renderer, or the page an
// answer is put in, may begin a tag at any of them.
type tagReader struct {
	folded bool
	st     tstate
	nm     name

	// The tag name is undecided while it could still become a dangerous
	// one, or an autolink with a scheme not allowed.
	namePending bool
	schemeLike  bool
	autolink    bool // <scheme: with a scheme not allowed: an autolink if '>' ends it
	lt          mark

	// The current attribute is undecided from its first character until
	// its name, its '=' and (for URL attributes) its scheme tell.
	attrPending bool
	class       attrClass
	at          mark
	url         schemeCheck
}

// hold returns where the reader's undecided edit would go, if any.
func (t *tagReader) hold() (int, bool) {
	switch {
	case t.namePending || t.autolink:
		return t.lt.pos, true
	case t.attrPending:
		return t.at.pos, true
	}
	return 0, false
}

// same reports whether two readers will behave alike from now on.
func (t *tagReader) same(u *tagReader) bool {
	return t.folded == u.folded && t.st == u.st && !t.namePending && !u.namePending &&
		!t.attrPending && !u.attrPending && !t.autolink && !u.autolink
}

func isHTMLSpace(c rune) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

func isASCIIAlpha(c rune) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isSchemeChar(c rune) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// editor is where tag readers and link checks record their decisions.
type editor interface {
	edit(m mark, k editKind)
}

// step feeds the reader one rune: c is the rune the tokenizer sees (the
// input rune, or one folded rune), fs what it adds to a name or a value
// (c with ASCII lowercased, or folded runes), m where c is. It returns false when the tag has
// ended (or its '<' was escaped).
func (t *tagReader) step(e editor, c rune, fs []rune, m mark) bool {
	if t.autolink {
		// <scheme:... is a Markdown autolink if a '>' ends it before any
		// whitespace (a '<' does not: once escaped it is text an autolink
		// may hold). Meanwhile it is read as a tag too.
		switch {
		case c == '>':
			e.edit(t.lt, editLT)
			return false
		case isHTMLSpace(c):
			t.autolink = false
		}
	}
	switch t.st {
	case tsName:
		switch {
		case isHTMLSpace(c):
			return t.endName(e, tsBeforeAttr)
		case c == '/':
			return t.endName(e, tsSelfClose)
		case c == '>':
			t.endName(e, tsName)
			return false
		}
		if !t.namePending {
			return true
		}
		for _, f := range fs {
			if t.schemeLike {
				if f == ':' {
					t.schemeLike = false
					t.autolink = t.nm.n >= 2 && (t.nm.long || !allowedSchemeSet[t.nm.str()])
				} else if !isSchemeChar(f) || t.nm.n >= 32 {
					t.schemeLike = false
				}
			}
			t.nm.add(f)
		}
		t.namePending = t.schemeLike || t.nm.tagPrefix()
		return true
	case tsBeforeAttr:
		switch {
		case isHTMLSpace(c):
		case c == '/':
			t.st = tsSelfClose
		case c == '>':
			return false
		default:
			t.startAttr(e, fs, m)
		}
	case tsAttrName:
		switch {
		case isHTMLSpace(c):
			t.endAttrName()
			t.st = tsAfterName
		case c == '/':
			t.endAttrName()
			t.attrPending = false // no value
			t.st = tsSelfClose
		case c == '>':
			t.endAttrName()
			t.attrPending = false
			return false
		case c == '=':
			t.endAttrName()
			t.equals(e)
		default:
			if t.attrPending {
				for _, f := range fs {
					t.nm.add(f)
				}
				if !t.nm.attrUndecided() {
					t.attrPending = false
				}
			}
		}
	case tsAfterName:
		switch {
		case isHTMLSpace(c):
		case c == '/':
			t.attrPending = false
			t.st = tsSelfClose
		case c == '=':
			t.equals(e)
		case c == '>':
			t.attrPending = false
			return false
		default:
			t.startAttr(e, fs, m)
		}
	case tsBeforeValue:
		switch {
		case isHTMLSpace(c):
		case c == '"':
			t.st = tsValueDQ
		case c == '\'':
			t.st = tsValueSQ
		case c == '>':
			t.valueEnd(e)
			return false
		default:
			t.st = tsValueUnq
			t.value(e, fs)
		}
	case tsValueDQ, tsValueSQ:
		if c == '"' && t.st == tsValueDQ || c == '\'' && t.st == tsValueSQ {
			t.valueEnd(e)
			t.st = tsAfterValueQ
		} else {
			t.value(e, fs)
		}
	case tsValueUnq:
		switch {
		case isHTMLSpace(c):
			t.valueEnd(e)
			t.st = tsBeforeAttr
		case c == '>':
			t.valueEnd(e)
			return false
		default:
			t.value(e, fs)
		}
	case tsAfterValueQ, tsSelfClose:
		switch {
		case isHTMLSpace(c):
			t.st = tsBeforeAttr
		case c == '/':
			t.st = tsSelfClose
		case c == '>':
			return false
		default:
			t.st = tsBeforeAttr
			t.startAttr(e, fs, m)
		}
	}
	return true
}

// endName ends the tag name: a dangerous tag has its '<' escaped, and is
// then no tag at all.
func (t *tagReader) endName(e editor, next tstate) bool {
	if t.namePending {
		t.namePending = false
		if t.nm.dangerousTag() {
			e.edit(t.lt, editLT)
			return false
		}
	}
	t.st = next
	return true
}

func (t *tagReader) startAttr(e editor, fs []rune, m mark) {
	t.st = tsAttrName
	t.nm.reset()
	t.at = m
	t.attrPending = true
	for _, f := range fs {
		t.nm.add(f)
	}
	if !t.nm.attrUndecided() {
		t.attrPending = false
	}
}

func (t *tagReader) endAttrName() {
	if t.attrPending {
		t.class = t.nm.attrClass()
		if t.class == acSafe {
			t.attrPending = false
		}
	}
}

// equals: the attribute has a value.
func (t *tagReader) equals(e editor) {
	t.st = tsBeforeValue
	if !t.attrPending {
		return
	}
	switch t.class {
	case acValued:
		e.edit(t.at, editAttr)
		t.attrPending = false
	case acURL:
		t.url = schemeCheck{}
	default:
		t.attrPending = false
	}
}

func (t *tagReader) value(e editor, fs []rune) {
	if !t.attrPending {
		return
	}
	for _, f := range fs {
		if done, bad := t.url.feed(f); done {
			t.attrPending = false
			if bad {
				e.edit(t.at, editAttr)
			}
			return
		}
	}
}

func (t *tagReader) valueEnd(e editor) {
	if t.attrPending {
		t.attrPending = false
		if t.url.end() {
			e.edit(t.at, editAttr)
		}
	}
}

// finish takes, conservatively, an undecided decision that has waited
// too long (RenderHold): it reports whether the tag reader goes on.
func (t *tagReader) finish(e editor) bool {
	if t.namePending || t.autolink {
		t.namePending = false
		if t.nm.dangerousTag() || t.nm.tagPrefix() || t.schemeLike || t.autolink {
			e.edit(t.lt, editLT)
			return false
		}
	}
	if t.attrPending {
		t.attrPending = false
		e.edit(t.at, editAttr)
	}
	return true
}

// finishEOF decides at the end of the input: a tag name ends there, an
// attribute without '=' has no value, a URL value ends.
func (t *tagReader) finishEOF(e editor) {
	if t.namePending && t.nm.dangerousTag() {
		e.edit(t.lt, editLT)
		return
	}
	if t.attrPending {
		switch t.st {
		case tsValueDQ, tsValueSQ, tsValueUnq:
			if t.url.end() {
				e.edit(t.at, editAttr)
			}
		}
	}
}

// schemeCheck reads the start of a URL (an attribute value, or a Markdown
// link destination when md is set) far enough to tell its scheme, the way
// a browser does after decoding character references: ASCII tab and
// newline are ignored anywhere, leading spaces and controls too, and
// (folded view) so are invisible characters. Character references it does
// not know count as dangerous while the scheme is undecided, since they
// could stand for a letter.
type schemeCheck struct {
	md      bool
	started bool // a scheme character was seen
	lt      bool // md: a leading '<' was skipped
	colon   bool // md: a scheme that is not allowed ended; one more rune decides
	n       uint8
	s       [32]byte
	long    bool
	ent     entity
}

// feed takes the next (folded) rune. done reports a decision, bad that the
// URL has a scheme that is not allowed.
func (sc *schemeCheck) feed(f rune) (done, bad bool) {
	if sc.ent.active {
		r, consumed, complete := sc.ent.feed(f)
		if !complete {
			return false, false
		}
		if r.unknown {
			return true, true
		}
		for _, d := range r.runes() {
			if done, bad := sc.decoded(d); done {
				return true, bad
			}
		}
		if consumed {
			return false, false
		}
	}
	if f == '&' {
		sc.ent = entity{active: true}
		return false, false
	}
	return sc.char(f, false)
}

// decoded takes a rune a character reference stood for, folded.
func (sc *schemeCheck) decoded(r rune) (done, bad bool) {
	var buf [utf8.UTFMax]byte
	var fr [8]rune
	var fi [8]int8
	n := utf8.EncodeRune(buf[:], r)
	fs, _ := fold(buf[:n], r, fr[:0], fi[:0])
	for _, f := range fs {
		if done, bad := sc.char(f, true); done {
			return true, bad
		}
	}
	return false, false
}

func (sc *schemeCheck) char(f rune, decoded bool) (done, bad bool) {
	if sc.colon {
		// md: "[x]: word: text" or "](javascript: x)" is no destination
		// with a payload; "javascript:x" is.
		if !decoded && (f == ' ' || f == '\t' || f == '\n' || f == '\r') {
			return true, false
		}
		return true, true
	}
	switch {
	case f < 0x20 || f == 0x7f:
		// Controls: a browser drops tab and newline anywhere, and the
		// others before the scheme; the rest are dropped too, to be safe.
		// In a Markdown destination a newline ends it.
		if sc.md && sc.started && !decoded && (f == '\n' || f == '\r') {
			return true, false
		}
		return false, false
	case f == ' ':
		if !sc.started {
			return false, false
		}
		return true, false
	case sc.md && f == '\\':
		return false, false
	case sc.md && f == '<' && !sc.started && !sc.lt:
		sc.lt = true
		return false, false
	}
	if !sc.started {
		if 'a' <= f && f <= 'z' {
			sc.started = true
			sc.s[0], sc.n = byte(f), 1
			return false, false
		}
		return true, false
	}
	if f == ':' {
		if !sc.long && allowedSchemeSet[string(sc.s[:sc.n])] {
			return true, false
		}
		if sc.md && !sc.lt {
			sc.colon = true
			return false, false
		}
		return true, true
	}
	if !isSchemeChar(f) {
		return true, false
	}
	if int(sc.n) == len(sc.s) {
		sc.long = true
	} else {
		sc.s[sc.n] = byte(f)
		sc.n++
	}
	return false, false
}

// end: the URL ended before a decision. A pending character reference is
// decoded first.
func (sc *schemeCheck) end() (bad bool) {
	if sc.ent.active {
		r := sc.ent.end()
		if r.unknown {
			return true
		}
		for _, d := range r.runes() {
			if done, bad := sc.decoded(d); done {
				return bad
			}
		}
	}
	// A Markdown destination that is only "scheme:" carries nothing.
	return false
}

// entity decodes one character reference as it arrives.
type entity struct {
	active  bool
	numeric bool
	hex     bool
	digits  int
	val     int
	nm      name
	started bool // a character after '&' was seen
}

type entResult struct {
	unknown bool
	lit     string // literal text the reference turned out to be
	r       rune   // the decoded rune, if lit == "" and !none
	none    bool
}

func (r entResult) runes() []rune {
	if r.lit != "" {
		return []rune(r.lit)
	}
	if r.none {
		return nil
	}
	return []rune{r.r}
}

// feed takes the rune after '&...'. complete reports that the reference
// ended; consumed that f was part of it (else f still has to be read).
func (e *entity) feed(f rune) (res entResult, consumed, complete bool) {
	switch {
	case !e.started:
		e.started = true
		switch {
		case f == '#':
			e.numeric = true
			return res, true, false
		case 'a' <= f && f <= 'z' || '0' <= f && f <= '9' || 'A' <= f && f <= 'Z':
			e.nm.add(f)
			return res, true, false
		}
		e.active = false
		return entResult{lit: "&"}, false, true
	case e.numeric:
		if e.digits == 0 && !e.hex && (f == 'x' || f == 'X') {
			e.hex = true
			return res, true, false
		}
		if d := digitVal(f, e.hex); d >= 0 {
			e.digits++
			base := 10
			if e.hex {
				base = 16
			}
			e.val = min(e.val*base+d, 0x110000)
			return res, true, false
		}
		res = e.end()
		return res, f == ';' && e.digits > 0, true
	default:
		if 'a' <= f && f <= 'z' || '0' <= f && f <= '9' || 'A' <= f && f <= 'Z' {
			e.nm.add(f)
			return res, true, false
		}
		if f == ';' {
			e.active = false
			if r, ok := namedEntities[e.nm.str()]; ok && !e.nm.long {
				return entResult{r: r}, true, true
			}
			return entResult{unknown: true}, true, true
		}
		return e.end(), false, true
	}
}

// end ends the reference where it stands (no ';').
func (e *entity) end() entResult {
	e.active = false
	switch {
	case !e.started:
		return entResult{lit: "&"}
	case e.numeric && e.digits == 0:
		if e.hex {
			return entResult{lit: "&#x"}
		}
		return entResult{lit: "&#"}
	case e.numeric:
		v := e.val
		switch {
		case v == 0 || v > 0x10ffff || 0xd800 <= v && v <= 0xdfff:
			return entResult{r: 0xfffd}
		case 0x80 <= v && v <= 0x9f:
			// Windows-1252 in HTML: some of these are letters.
			return entResult{unknown: true}
		}
		return entResult{r: rune(v)}
	}
	// A named reference without ';': browsers decode a few legacy ones.
	if r, ok := namedEntities[e.nm.str()]; ok && !e.nm.long {
		return entResult{r: r}
	}
	return entResult{unknown: true}
}

func digitVal(f rune, hex bool) int {
	switch {
	case '0' <= f && f <= '9':
		return int(f - '0')
	case hex && 'a' <= f && f <= 'f':
		return int(f-'a') + 10
	case hex && 'A' <= f && f <= 'F':
		return int(f-'A') + 10
	}
	return -1
}

// namedEntities are the character references the scheme check decodes; any
// other named reference before the scheme is decided counts as dangerous.
// Keys are as the folded view sees them (lowercased), so "Tab" is "tab".
var namedEntities = map[string]rune{
	"tab": '\t', "newline": '\n', "colon": ':', "nbsp": 0xa0, "amp": '&',
	"lt": '<', "gt": '>', "quot": '"', "apos": '\'', "lpar": '(', "rpar": ')',
	"sol": '/', "bsol": '\\', "excl": '!', "num": '#', "period": '.',
	"comma": ',', "semi": ';', "equals": '=', "quest": '?', "plus": '+',
	"lowbar": '_', "verbar": '|', "vert": '|', "percnt": '%', "commat": '@',
	"ast": '*', "grave": '`', "hat": '^', "lsqb": '[', "lbrack": '[',
	"rsqb": ']', "rbrack": ']', "lcub": '{', "lbrace": '{', "rcub": '}',
	"rbrace": '}', "dollar": '$', "hyphen": 0x2010, "dash": 0x2010,
	"minus": 0x2212,
}
