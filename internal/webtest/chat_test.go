package webtest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/web"
)

// TestChatStreams loads the page, sends a message with the keyboard and
// sees the answer arrive token by token, under the page's CSP.
func TestChatStreams(t *testing.T) {
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		rep := ollamatest.DefaultRespond(r)
		rep.Delay = 120 * time.Millisecond
		return rep
	})
	base := startRouter(t)
	startNode(t, base, o.URL, 1)

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Content-Security-Policy"); got != web.CSP {
		t.Fatalf("CSP %q, want %q", got, web.CSP)
	}

	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("stories:latest")
	p.waitJS(`document.getElementById("live").classList.contains("up")`, "the live dot")
	// Every text the answer shows while it streams.
	eval[bool](p, `(() => { window.__seen = []; new MutationObserver(() => {
		const a = [...document.querySelectorAll("#log .msg.assistant .body")];
		const t = a.length ? a[a.length-1].textContent : "";
		if (window.__seen[window.__seen.length-1] !== t) window.__seen.push(t);
	}).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true}); return true })()`)
	p.send("hello big world")
	p.waitIdle()
	if got := p.lastAnswer(); got != "Echo: hello big world" {
		t.Fatalf("answer %q", got)
	}
	seen := eval[[]string](p, `window.__seen.filter(s => s)`)
	want := []string{"Echo: ", "Echo: hello", "Echo: hello big", "Echo: hello big world"}
	if strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Errorf("the answer showed %q while streaming, want each token as it came: %q", seen, want)
	}
	if got := p.text("#log .msg.user .body"); got != "hello big world" {
		t.Errorf("user message %q", got)
	}
	if r := lastRequest(t, o); r.Model != "stories:latest" || lastUser(r) != "hello big world" {
		t.Errorf("Ollama got model %q, last user message %q", r.Model, lastUser(r))
	}
	for _, u := range p.requested() {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("the page asked for %s, outside its router", u)
		}
	}
}
