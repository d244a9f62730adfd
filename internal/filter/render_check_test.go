package filter

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer/html"
	"github.com/yuin/goldmark/text"
	xhtml "golang.org/x/net/html"
	"golang.org/x/text/unicode/norm"
)

// The checker the render tests judge output by. It shares no code with the
// filter: it renders the text with a real Markdown renderer (goldmark, with
// GitHub's tables, strikethrough, autolinks and footnotes, raw HTML passed
// through and links not sanitised) and reads HTML with a real tokenizer
// (golang.org/x/net/html), and looks for what can run script or fetch:
//
//   - in the HTML goldmark produces;
//   - in the text read directly as HTML, from every '<' (a renderer may
//     start a tag at any of them), with the content of Markdown code
//     neutralised (a Markdown renderer shows it as text; see maskCode);
//   - in both of these again after NFKC normalisation with invisible
//     characters removed.

var checkerMarkdown = goldmark.New(
	goldmark.WithExtensions(extension.Table, extension.Strikethrough, extension.Linkify, extension.Footnote),
	goldmark.WithRendererOptions(html.WithUnsafe()),
)

// Tags that run script, fetch, embed, submit or restyle, whatever their
// attributes.
var checkerTags = map[string]bool{
	"script": true, "iframe": true, "object": true, "embed": true, "svg": true, "math": true,
	"img": true, "image": true, "video": true, "audio": true, "source": true, "link": true,
	"meta": true, "style": true, "base": true, "form": true, "input": true, "button": true,
	"frame": true, "frameset": true, "applet": true, "template": true, "portal": true,
	"bgsound": true, "isindex": true, "track": true, "picture": true, "textarea": true,
	"xmp": true, "plaintext": true, "noscript": true,
}

// Attributes that fetch or submit as soon as they have a value.
var checkerFetch = map[string]bool{
	"src": true, "srcset": true, "srcdoc": true, "lowsrc": true, "dynsrc": true, "poster": true,
	"background": true, "data": true, "action": true, "formaction": true, "codebase": true,
	"ping": true, "archive": true, "classid": true,
}

var checkerSchemes = []string{"javascript:", "vbscript:", "data:", "file:", "livescript:", "mocha:"}

// renderViolation describes the first dangerous construct in out, or
// returns "" if there is none.
func renderViolation(out string) string {
	src := []byte(out)
	doc := checkerMarkdown.Parser().Parse(text.NewReader(src))
	masked := maskCode(src, doc)
	var rendered bytes.Buffer
	if err := checkerMarkdown.Renderer().Render(&rendered, src, doc); err != nil {
		return "markdown: " + err.Error()
	}
	if v := htmlViolation(rendered.String(), false); v != "" {
		return "as Markdown: " + v
	}
	// The page an answer is put in may go on with markup that ends a tag
	// the answer left open: ` "'>` ends it in any state.
	if v := htmlViolation(string(masked)+` "'>`, true); v != "" {
		return "as HTML: " + v
	}
	folded := checkerFold(string(masked) + ` "'>`)
	if v := htmlViolation(folded, true); v != "" {
		return "folded, as HTML: " + v
	}
	rendered.Reset()
	if err := checkerMarkdown.Convert([]byte(folded), &rendered); err != nil {
		return "markdown: " + err.Error()
	}
	if v := htmlViolation(rendered.String(), false); v != "" {
		return "folded, as Markdown: " + v
	}
	return ""
}

// maskCode returns src with the content of its Markdown code (code spans,
// fenced and indented code blocks) neutralised: what a Markdown renderer
// shows as text must not count, but a page that shows the text as HTML
// still sees where tags and quoted values end in it. So whitespace, quotes,
// '>', '/' and '=' stay, and every other byte becomes 'x'.
func maskCode(src []byte, doc ast.Node) []byte {
	masked := bytes.Clone(src)
	blank := func(s text.Segment) {
		for i := s.Start; i < s.Stop && i < len(masked); i++ {
			if !strings.ContainsRune(" \t\n\r\f\"'>/=", rune(masked[i])) {
				masked[i] = 'x'
			}
		}
	}
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.CodeSpan:
			for c := n.FirstChild(); c != nil; c = c.NextSibling() {
				if t, ok := c.(*ast.Text); ok {
					blank(t.Segment)
				}
			}
			return ast.WalkSkipChildren, nil
		case *ast.FencedCodeBlock, *ast.CodeBlock:
			lines := n.Lines()
			for i := range lines.Len() {
				blank(lines.At(i))
			}
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	})
	return masked
}

// checkerFold is NFKC with format characters, other default-ignorable
// characters and controls (but \t \n \f \r) removed.
func checkerFold(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
			unicode.Is(unicode.Cc, r) && r != '\t' && r != '\n' && r != '\f' && r != '\r' {
			return -1
		}
		return r
	}, norm.NFKC.String(s))
}

// htmlViolation reads s as HTML: as one document, or (everyLT) from each
// '<' on, taking the tag that starts there.
func htmlViolation(s string, everyLT bool) string {
	if !everyLT {
		z := xhtml.NewTokenizer(strings.NewReader(s))
		for {
			tt := z.Next()
			if tt == xhtml.ErrorToken {
				return ""
			}
			if tt == xhtml.StartTagToken || tt == xhtml.SelfClosingTagToken {
				if v := tagViolation(z.Token()); v != "" {
					return v
				}
			}
		}
	}
	for i := strings.IndexByte(s, '<'); i >= 0; {
		z := xhtml.NewTokenizer(strings.NewReader(s[i:]))
		if tt := z.Next(); tt == xhtml.StartTagToken || tt == xhtml.SelfClosingTagToken {
			if v := tagViolation(z.Token()); v != "" {
				return fmt.Sprintf("at byte %d: %s", i, v)
			}
		}
		j := strings.IndexByte(s[i+1:], '<')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return ""
}

func tagViolation(t xhtml.Token) string {
	name := strings.ToLower(t.Data)
	if checkerTags[name] {
		return fmt.Sprintf("tag <%s>", name)
	}
	for _, a := range t.Attr {
		key := strings.ToLower(a.Key)
		val := strings.TrimSpace(a.Val)
		switch {
		case len(key) > 2 && strings.HasPrefix(key, "on") && val != "":
			return fmt.Sprintf("event handler %s=%q in <%s>", key, a.Val, name)
		case key == "style" && strings.ContainsAny(val, `(\@`):
			return fmt.Sprintf("style=%q in <%s>", a.Val, name)
		case checkerFetch[key] && val != "":
			return fmt.Sprintf("fetching %s=%q in <%s>", key, a.Val, name)
		case key == "href" || key == "xlink:href" || key == "cite" || key == "longdesc" || key == "action":
			if s := checkerScheme(a.Val); s != "" {
				return fmt.Sprintf("%s with scheme %s in <%s>", key, s, name)
			}
		}
	}
	return ""
}

// checkerScheme returns the dangerous scheme a URL attribute value (already
// unescaped by the tokenizer) has, if any.
func checkerScheme(v string) string {
	v = strings.ToLower(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point) {
			return -1
		}
		return r
	}, norm.NFKC.String(v)))
	v = strings.TrimLeft(v, " ")
	for _, s := range checkerSchemes {
		if strings.HasPrefix(v, s) {
			return s
		}
	}
	return ""
}
