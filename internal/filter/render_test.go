package filter

import (
	"flag"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// corpus reads a test corpus: entries separated by sep lines (or one per
// line when sep is ""), %% comment lines left out, and the escapes
// ⟦n⟧ ⟦t⟧ ⟦r⟧ ⟦U+XXXX⟧ decoded. A one-line entry may start with %?, which
// lax reports.
func corpus(t testing.TB, file, sep string) (entries []string, lax []bool) {
	t.Helper()
	b, err := os.ReadFile("testdata/render/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var cur []string
	flush := func(l bool) {
		if len(cur) > 0 {
			entries = append(entries, unescapeCorpus(t, strings.Join(cur, "\n")))
			lax = append(lax, l)
		}
		cur = nil
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case sep != "" && line == sep:
			flush(false)
		case sep == "" && strings.HasPrefix(line, "%?"):
			cur = append(cur, line[2:])
			flush(true)
		case strings.HasPrefix(line, "%%"):
		case sep == "":
			if line != "" {
				cur = append(cur, line)
				flush(false)
			}
		default:
			cur = append(cur, line)
		}
	}
	flush(false)
	return entries, lax
}

var corpusEscape = regexp.MustCompile(`⟦(n|t|r|U\+[0-9A-F]{4,6})⟧`)

func unescapeCorpus(t testing.TB, s string) string {
	return corpusEscape.ReplaceAllStringFunc(s, func(m string) string {
		switch c := strings.TrimSuffix(strings.TrimPrefix(m, "⟦"), "⟧"); c {
		case "n":
			return "\n"
		case "t":
			return "\t"
		case "r":
			return "\r"
		default:
			v, err := strconv.ParseUint(c[2:], 16, 32)
			if err != nil {
				t.Fatalf("corpus escape %s: %v", m, err)
			}
			return string(rune(v))
		}
	})
}

// renderChunks streams chunks through one Render, checking the hold-back
// bound after every Push, and returns the output and the pieces emitted.
func renderChunks(t testing.TB, chunks []string) (string, []string) {
	t.Helper()
	r := NewRender()
	var pieces []string
	for _, c := range chunks {
		pieces = append(pieces, r.Push(c))
		if n := len(r.buf); n > RenderHold+utf8.UTFMax {
			t.Fatalf("chunks %q: %d bytes held back", chunks, n)
		}
	}
	pieces = append(pieces, r.Flush())
	return strings.Join(pieces, ""), pieces
}

// checkSplits checks that every split of s gives want: s cut in two at
// every byte, in single bytes, and in random chunks (fixed seed).
func checkSplits(t *testing.T, s, want string) {
	t.Helper()
	try := func(chunks []string) {
		t.Helper()
		got, pieces := renderChunks(t, chunks)
		if got != want {
			t.Fatalf("input %q\nchunks %q:\ngot  %q\nwant %q", s, chunks, got, want)
		}
		if utf8.ValidString(s) {
			for _, p := range pieces {
				if !utf8.ValidString(p) {
					t.Fatalf("input %q chunks %q: emitted invalid UTF-8 %q", s, chunks, p)
				}
			}
		}
	}
	for i := 0; i <= len(s); i++ {
		try([]string{s[:i], s[i:]})
	}
	try(strings.Split(s, ""))
	var bytes1 []string
	for i := range len(s) {
		bytes1 = append(bytes1, s[i:i+1])
	}
	try(bytes1)
	rng := rand.New(rand.NewPCG(uint64(len(s)), 7))
	for range 8 {
		var chunks []string
		for rest := s; rest != ""; {
			n := min(1+rng.IntN(12), len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		try(chunks)
	}
}

// hostileContexts put a payload where an answer may have it.
var hostileContexts = []struct{ name, before, after string }{
	{"alone", "", ""},
	{"in a sentence", "Here you go: ", " Hope it helps."},
	{"after a code block", "```\ncode\n```\n\n", "\n"},
	{"in a quote", "> ", ""},
	{"in a list", "- item\n- ", "\n"},
	{"after inline code", "Use `x` and ", " then `y`."},
}

// TestRenderHostile: no payload of the hostile corpus survives, in any
// context, however it is split.
func TestRenderHostile(t *testing.T) {
	payloads, lax := corpus(t, "hostile.txt", "")
	if len(payloads) < 300 {
		t.Fatalf("hostile corpus has %d payloads", len(payloads))
	}
	for i, p := range payloads {
		// The checker must see each payload as dangerous, or it tests
		// nothing; for the few it cannot judge, the filter must act.
		if lax[i] {
			if RenderText(p) == p {
				t.Errorf("payload %q passes unchanged", p)
			}
		} else if v := renderViolation(p); v == "" {
			t.Errorf("checker finds nothing dangerous in payload %q", p)
		}
		for _, c := range hostileContexts {
			in := c.before + p + c.after
			out := RenderText(in)
			if v := renderViolation(out); v != "" {
				t.Errorf("%s: payload %q\nsurvives as %q\n%s", c.name, p, out, v)
				continue
			}
			if c.name == "alone" || c.name == "in a sentence" {
				checkSplits(t, in, out)
			}
		}
	}
}

// TestRenderOrdinary: every ordinary answer passes byte for byte, however
// it is split.
func TestRenderOrdinary(t *testing.T) {
	answers, _ := corpus(t, "ordinary.txt", "%%%%")
	if len(answers) < 40 {
		t.Fatalf("ordinary corpus has %d answers", len(answers))
	}
	for _, a := range answers {
		if got := RenderText(a); got != a {
			t.Errorf("ordinary answer changed:\n%s\n---- became ----\n%s", a, got)
			continue
		}
		if v := renderViolation(a); v != "" {
			t.Errorf("checker objects to ordinary answer %q: %s", a, v)
		}
		checkSplits(t, a, a)
	}
}

// TestRenderEdits pins down what neutralising looks like.
func TestRenderEdits(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)>"},
		{"<script>alert(1)</script>", "&lt;script>alert(1)</script>"},
		{"<div onmouseover=alert(1)>x</div>", "<div x-onmouseover=alert(1)>x</div>"},
		{"<div onclick>x</div>", "<div onclick>x</div>"}, // no value: nothing to run
		{`<a href="javascript:alert(1)">x</a>`, `<a x-href="javascript:alert(1)">x</a>`},
		{`<a href="https://example.com">x</a>`, `<a href="https://example.com">x</a>`},
		{`<a href="/relative">x</a>`, `<a href="/relative">x</a>`},
		{`<p style="color:red">x</p>`, `<p x-style="color:red">x</p>`},
		{"![x](http://evil.example/x.png)", "!&#91;x](http://evil.example/x.png)"},
		{"[x](javascript:alert(1))", "[x]&#40;javascript:alert(1))"},
		{"[x](https://ok.example)", "[x](https://ok.example)"},
		{"[r]: javascript:alert(1)", "[r]&#58; javascript:alert(1)"},
		{"[r]: see this: note", "[r]: see this: note"},
		{"<javascript:alert(1)>", "&lt;javascript:alert(1)>"},
		{"<https://example.com>", "<https://example.com>"},
		{"＜ｓｃｒｉｐｔ＞", "&lt;ｓｃｒｉｐｔ＞"},
		{"<scr\u200bipt>", "&lt;scr\u200bipt>"},
		{"<div ｏｎclick=alert(1)>", "<div x-ｏｎclick=alert(1)>"},
		{"‼[x](y)", "‼&#91;x](y)"},
		{"<x ℅nclick=alert(1)>", "<x c/x-onclick=alert(1)>"},
		{"`<script>` and <script>", "`<script>` and &lt;script>"},
		{"```\n<script>\n```\n<script>", "```\n<script>\n```\n&lt;script>"},
		{"<input>", "&lt;input>"},
		{"a<b and c>d", "a<b and c>d"},
		// A code span after raw HTML in the same paragraph is not trusted.
		{"<b>x</b> `<script>`", "<b>x</b> `&lt;script>`"},
		{"<b>x</b>\n\n`<script>`", "<b>x</b>\n\n`<script>`"},
		// A fence in a list item that a less indented line may end.
		{"1. a\n   ```\n   <script>\n<script>\n", "1. a\n   ```\n   <script>\n&lt;script>\n"},
		// At the end of the input an unfinished name is complete.
		{"x <svg", "x &lt;svg"},
		{"x <sv", "x <sv"},
	}
	reused := NewRender() // a Render starts afresh after Flush
	for _, tc := range tests {
		if got := RenderText(tc.in); got != tc.want {
			t.Errorf("RenderText(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := reused.Push(tc.in) + reused.Flush(); got != tc.want {
			t.Errorf("reused Render: %q gives %q, want %q", tc.in, got, tc.want)
		}
		checkSplits(t, tc.in, tc.want)
	}
	var nilRender *Render
	if got := nilRender.Push("<script>") + nilRender.Flush(); got != "<script>" {
		t.Errorf("nil Render gives %q", got)
	}
}

// TestRenderHoldBound: decisions that would need more than RenderHold
// bytes are taken conservatively, and the held text stays bounded.
func TestRenderHoldBound(t *testing.T) {
	zw := strings.Repeat("\u200b", RenderHold)
	tests := []struct {
		name, in string
		ok       func(out string) bool
	}{
		{"name padded with zero-width spaces", "<scr" + zw + "ipt>", func(o string) bool { return strings.HasPrefix(o, "&lt;") }},
		{"bang padded", "!" + zw + "[x](http://e/x.png)", func(o string) bool { return strings.Contains(o, "&#91;") }},
		{"long attribute name", "<x on" + strings.Repeat("a", 2*RenderHold) + "=1>", func(o string) bool { return strings.HasPrefix(o, "<x x-on") }},
		{"scheme padded with tabs", `<a href="` + strings.Repeat("\t", 2*RenderHold) + `javascript:x">`, func(o string) bool { return strings.HasPrefix(o, "<a x-href") }},
		{"long code span", "`" + strings.Repeat("a", 2*RenderHold) + "` <b onclick=x>", func(o string) bool { return strings.Contains(o, "x-onclick") }},
		{"long fence line", "```" + strings.Repeat("a", 2*RenderHold) + "\n<b onclick=x>\n```", func(o string) bool { return strings.Contains(o, "x-onclick") }},
		{"long indentation", strings.Repeat(" ", 2*RenderHold) + "```\n<b onclick=x>\n```", func(o string) bool { return strings.Contains(o, "x-onclick") }},
		{"long maths prose", "a<b " + strings.Repeat("and so on ", RenderHold) + "c>d", func(o string) bool { return !strings.Contains(o, "&") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := RenderText(tc.in)
			if !tc.ok(out) {
				t.Errorf("output %.80q...", out)
			}
			if v := renderViolation(out); v != "" {
				t.Errorf("output %.80q: %s", out, v)
			}
			for _, n := range []int{1, 3, 64, 1000} {
				got, _ := renderChunks(t, tokens(tc.in, n))
				if got != out {
					t.Fatalf("%d-byte chunks give a different output", n)
				}
			}
		})
	}
}

var fragmentRuns = flag.Int("render.fragments", 20000, "cases TestRenderFragments tries")
var fragmentSeed = flag.Uint64("render.seed", 1, "seed of TestRenderFragments")

// renderFragments are pieces of Markdown and HTML syntax (and of payloads)
// that TestRenderFragments strings together at random.
var renderFragments = []string{
	"`", "``", "```", "~~~", "\n", "\n\n", " ", "   ", "    ", "\t", "- ", "1. ", "> ", "|", "\\",
	"<img src=x onerror=alert(1)>", "<b>", "</b>", "<div>", "<a title='", "'>", "\"", "<!--", "-->",
	"](", "[", "]", ")", "![", "]: ", "javascript:alert(1)", "http://x.y/", "www.", "$", "<",
	">", "x", "abc", "<scr", "ipt>", "on", "click=", "<x ", "=", "&#106;", "\r\n", "\r", "\u200b", "＜",
	"<script>", "* ", "# ", "===", "---", "[^", "<https://x>", "<javascript:x>", "`x`", "```js\n",
	"<a href=", "<a href=\"", "\"javascript:alert(1)\"", "style=", "onerror=alert(1)", "<svg", "/", "'",
	"&lt;", "&#x3c;", "&colon;", "java", "script:", "![x]", "[x]", "(http://e/x.png)", "<!", "?>", "]]>",
	"<pre>", "</pre>", "<textarea>", "   ```\n", "  ", "1) ", "+ ", "\\`", "``x``", "~~~~", "<?",
	"ｏｎ", "＞", "＂", "！", "［", "］", "（", "\u2028", "\u00a0", "<ſcript>", "\u200d", "&", "#", ";",
}

// TestRenderFragments strings fragments of syntax together at random (fixed
// seed), to reach the combinations of fences, code spans, containers, raw
// HTML and links that byte mutation rarely builds: none may leave anything
// dangerous. (Run with -render.fragments=N -render.seed=S for a longer
// search.)
func TestRenderFragments(t *testing.T) {
	rng := rand.New(rand.NewPCG(*fragmentSeed, 2))
	fails := 0
	for i := 0; i < *fragmentRuns && fails < 5; i++ {
		var b strings.Builder
		for range 1 + rng.IntN(14) {
			b.WriteString(renderFragments[rng.IntN(len(renderFragments))])
		}
		in := b.String()
		out := RenderText(in)
		if v := renderViolation(out); v != "" {
			t.Errorf("input %q\noutput %q\n%s", in, out, v)
			fails++
		}
	}
}

// TestDropped checks the fast paths of dropped against Unicode's tables.
func TestDropped(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		want := unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
			unicode.Is(unicode.Cc, r) && r != '\t' && r != '\n' && r != '\f' && r != '\r'
		if dropped(r) != want {
			t.Fatalf("dropped(%U) = %v, want %v", r, !want, want)
		}
	}
}

// FuzzRender: the output never holds a dangerous construct (per the
// checker), chunking never changes it, and it stays within a small factor
// of the input.
func FuzzRender(f *testing.F) {
	hostile, _ := corpus(f, "hostile.txt", "")
	for _, p := range hostile {
		f.Add(p, []byte{3, 1, 4, 1, 5, 9, 2, 6})
	}
	ordinary, _ := corpus(f, "ordinary.txt", "%%%%")
	for _, a := range ordinary {
		f.Add(a, []byte{7, 7, 7, 7})
	}
	f.Fuzz(func(t *testing.T, in string, cuts []byte) {
		if len(in) > 2048 {
			return
		}
		out := RenderText(in)
		if len(out) > 8*len(in)+16 {
			t.Fatalf("input of %d bytes gave %d", len(in), len(out))
		}
		got, _ := renderChunks(t, splitAt(in, cuts))
		if got != out {
			t.Fatalf("input %q chunks %q:\ngot  %q\nwant %q", in, splitAt(in, cuts), got, out)
		}
		if v := renderViolation(out); v != "" {
			t.Fatalf("input %q\noutput %q\n%s", in, out, v)
		}
	})
}
