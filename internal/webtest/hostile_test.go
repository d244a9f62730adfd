package webtest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestHostileMarkupIsInert has a node answer with markup meant to run in
// the reader's browser. It must show as text: no element made from it but
// the page's own Markdown ones, no handler, no javascript: link, no request
// to the hosts it names.
func TestHostileMarkupIsInert(t *testing.T) {
	var outside atomic.Int64 // requests that reached the "outside host"
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outside.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer host.Close()
	evil := "<script>window.__pwned = 1</script>\n" +
		`<img src="x" onerror="window.__pwned = 2">` + "\n" +
		`<a href="javascript:window.__pwned=3">click me</a> <b onmouseover="window.__pwned=4">hover</b>` + "\n" +
		"[a link](javascript:window.__pwned=5) and [data](data:text/html,<script>window.__pwned=6</script>)\n" +
		"![tracker](" + host.URL + "/pixel.png) <img src=\"" + host.URL + "/raw.png\">\n" +
		`<iframe src="` + host.URL + `/frame"></iframe><style>body{display:none}</style><svg onload="window.__pwned=7"></svg>` + "\n" +
		"**bold <u>under</u>** and `<code>` and [fine](https://example.org/a?b=1)\n" +
		"```html\n<script>window.__pwned = 8</script>\n```\n"
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		rep := ollamatest.Reply{Tokens: strings.SplitAfter(evil, " ")}
		if string(r.Think) == "true" {
			rep.Thinking = []string{`<img src=x onerror="window.__pwned=9">`, "<script>window.__pwned=10</script>"}
		}
		return rep
	}, ollamatest.Model{Name: "qwen3:0.6b", Size: 2, Capabilities: []string{"completion", "thinking"}})
	// The router's outbound filter would blank "<script" and "javascript:",
	// and its render-safety filter neutralise the rest; with neither, the
	// page alone stands between the node and the reader.
	noFilter := filepath.Join(t.TempDir(), "outbound")
	if err := os.WriteFile(noFilter, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := startRouter(t, "--max-response-chars", "0", "--outbound-filter-file", noFilter, "--render-safe=false")
	startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("qwen3:0.6b")
	p.waitJS(`!document.getElementById("think-wrap").hidden`, "the thinking toggle")
	p.do(chromedp.Click(chromedp.ID("think")))
	p.send("hi")
	p.waitIdle()

	if v := eval[string](p, `String(window.__pwned)`); v != "undefined" {
		t.Fatalf("the node's markup ran: window.__pwned = %s", v)
	}
	// The answer's own elements are only what the Markdown renderer makes.
	tags := eval[[]string](p, `[...document.querySelectorAll("#log .msg.assistant *")].map(e => e.tagName.toLowerCase())`)
	allowed := map[string]bool{"details": true, "summary": true, "div": true, "p": true, "br": true, "strong": true, "em": true,
		"code": true, "pre": true, "span": true, "button": true, "a": true, "ul": true, "ol": true, "li": true}
	for _, tag := range tags {
		if !allowed[tag] {
			t.Errorf("the answer made a <%s> element", tag)
		}
	}
	if n := eval[int](p, `document.querySelectorAll("script").length`); n != 1 {
		t.Errorf("%d script elements, want only the page's own", n)
	}
	if n := eval[int](p, `document.querySelectorAll("img, iframe, style, svg, object, embed").length`); n != 0 {
		t.Errorf("%d img/iframe/style/svg/object/embed elements", n)
	}
	handlers := eval[[]string](p, `[...document.querySelectorAll("*")].flatMap(e => [...e.attributes].filter(a => a.name.startsWith("on")).map(a => e.tagName + " " + a.name))`)
	if len(handlers) != 0 {
		t.Errorf("elements with handler attributes: %q", handlers)
	}
	links := eval[[]string](p, `[...document.querySelectorAll("#log a")].map(a => a.href + " " + a.rel)`)
	if len(links) != 1 || links[0] != "https://example.org/a?b=1 nofollow noopener noreferrer" {
		t.Errorf("links in the answer: %q, want only the https one, with rel", links)
	}
	// The text is all there, as text.
	body := p.lastAnswer()
	for _, s := range []string{"<script>window.__pwned = 1</script>", `<img src="x" onerror="window.__pwned = 2">`,
		"[a link](javascript:window.__pwned=5)", "![tracker](" + host.URL + "/pixel.png)", "<style>body{display:none}</style>", "<u>under</u>"} {
		if !strings.Contains(body, s) {
			t.Errorf("the answer does not show %q as text: %q", s, body)
		}
	}
	if got := p.text("#log .msg.assistant:last-child .code pre"); got != "<script>window.__pwned = 8</script>" {
		t.Errorf("code block %q", got)
	}
	if got := p.text("#log .msg.assistant:last-child details.thinking div"); got != `<img src=x onerror="window.__pwned=9"><script>window.__pwned=10</script>` {
		t.Errorf("thinking %q", got)
	}
	if got := eval[string](p, `getComputedStyle(document.body).display`); got == "none" {
		t.Error("the answer's style applied to the page")
	}
	for _, u := range p.requested() {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("the page asked for %s", u)
		}
	}
	if n := outside.Load(); n != 0 {
		t.Errorf("the outside host got %d requests", n)
	}
}
