package filter

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The render filter looks at every answer twice: as a browser reads it,
// and "folded", as a consumer would read it that NFKC-normalises text or
// drops invisible characters before rendering. fold gives the folded form
// of one input rune.

// fold appends to dst the folded runes of the input rune r, whose UTF-8
// bytes are src: its NFKC form, each rune lowercased, with default-ignorable
// characters (zero-width spaces and joiners, word joiner, BOM, bidi
// controls, variation selectors, soft hyphen, ...) and control characters
// other than \t \n \f \r left out. The runes keep their index in the NFKC
// form: idx[i] is the position of dst[i] there, so that an edit on a folded
// rune can be placed (see [display]).
func fold(src []byte, r rune, dst []rune, idx []int8) ([]rune, []int8) {
	if r < utf8.RuneSelf {
		if dropped(r) {
			return dst, idx
		}
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return append(dst, r), append(idx, 0)
	}
	if dropped(r) {
		return dst, idx
	}
	if norm.NFKC.IsNormal(src) {
		return append(dst, unicode.ToLower(r)), append(idx, 0)
	}
	i := int8(0)
	for _, f := range norm.NFKC.String(string(src)) {
		if !dropped(f) {
			dst, idx = append(dst, unicode.ToLower(f)), append(idx, i)
		}
		if i < 127 {
			i++
		}
	}
	return dst, idx
}

// display returns the NFKC form of the input rune src as runes (not
// lowercased): what a folded rune with an edit is shown as.
func display(src []byte) []rune {
	if len(src) == 1 || norm.NFKC.IsNormal(src) {
		r, _ := utf8.DecodeRune(src)
		return []rune{r}
	}
	return []rune(norm.NFKC.String(string(src)))
}

// dropped reports whether a folded view leaves r out: format characters
// (zero-width spaces and joiners, word joiner, BOM, bidi controls, soft
// hyphen, ...), other default-ignorable characters (combining grapheme
// joiner, Hangul fillers, ...), variation selectors, and control characters
// other than the whitespace \t \n \f \r.
func dropped(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t' && r != '\n' && r != '\f' && r != '\r'
	case r < 0x7f:
		return false
	case r <= 0x9f: // DEL and C1 controls
		return true
	case r < 0xad:
		return false
	case 0x3040 <= r && r < 0xfe00: // CJK, Hangul, ...: one filler only
		return r == 0x3164
	}
	return unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}
