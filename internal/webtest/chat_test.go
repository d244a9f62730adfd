package webtest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
	// --web=false: the router is the API alone.
	off := startRouter(t, "--web=false")
	for _, path := range []string{"/", "/network", "/assets/app.js"} {
		r, err := http.Get(off + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound || r.Header.Get("Content-Security-Policy") != "" {
			t.Errorf("--web=false: GET %s: %d, CSP %q", path, r.StatusCode, r.Header.Get("Content-Security-Policy"))
		}
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
	// The first visit's weight on the wire: the page and its three assets,
	// gzipped, headers included.
	assets, urls := p.transferred(base + "/assets/")
	if len(urls) != 3 {
		t.Errorf("the page loaded %d assets, want 3: %q", len(urls), urls)
	}
	doc := p.received(base + "/")
	if doc == 0 || assets+doc > 20<<10 {
		t.Errorf("the first visit took %d bytes for the page and %d for its assets: over 20 KiB", doc, assets)
	}
	t.Logf("first visit: %d bytes on the wire, the page %d and its assets %d", doc+assets, doc, assets)
}

// waitCanceled waits until the fake Ollama saw a request canceled by its
// client (the node).
func waitCanceled(t *testing.T, o *ollamatest.Server, what string) {
	t.Helper()
	select {
	case <-o.CanceledCh():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Ollama's request was not canceled (%d active, %d canceled)", what, o.Active(), o.Canceled())
	}
}

// waitStarted waits until the fake Ollama received a request.
func waitStarted(t *testing.T, o *ollamatest.Server) ollamatest.ChatRequest {
	t.Helper()
	select {
	case r := <-o.Started():
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Ollama received no request")
		return ollamatest.ChatRequest{}
	}
}

// TestStopCancelsTheNode stops an answer with the Stop button, then one
// with Escape, and sees each time the node's Ollama call canceled and the
// partial answer kept.
func TestStopCancelsTheNode(t *testing.T) {
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		return ollamatest.Reply{Tokens: []string{"Part", " one"}, Hang: true}
	})
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("stories:latest")

	for i, how := range []string{"button", "Escape"} {
		p.send("tell me a long story " + how)
		waitStarted(t, o)
		p.waitJS(`document.querySelectorAll("#log .msg.assistant").length === `+itoa(i+1)+` && document.querySelector("#log .msg.assistant:last-child .body").textContent === "Part one"`, "the first tokens")
		if eval[bool](p, `document.getElementById("stop").hidden || !document.getElementById("send").hidden`) {
			t.Fatal("no Stop button while the answer streams")
		}
		if how == "button" {
			p.do(chromedp.Click(chromedp.ID("stop")))
		} else {
			p.do(pressKey("Escape", 27))
		}
		waitCanceled(t, o, how)
		p.waitIdle()
		if got := p.lastAnswer(); got != "Part one" {
			t.Errorf("after stop (%s) the answer is %q, want the partial %q", how, got, "Part one")
		}
		if meta := p.text("#log .msg.assistant:last-child .meta"); !strings.Contains(meta, "stopped") {
			t.Errorf("after stop (%s) the answer's note is %q", how, meta)
		}
		if st := p.text("#status"); st != "Stopped." {
			t.Errorf("status %q after stop", st)
		}
	}
	if n := o.Canceled(); n != 2 {
		t.Errorf("Ollama counted %d canceled requests, want 2", n)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestModelsAndThinking switches models, uses thinking where the model
// thinks, and sees the thinking apart from the answer and collapsible.
func TestModelsAndThinking(t *testing.T) {
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		rep := ollamatest.DefaultRespond(r)
		if string(r.Think) == "true" {
			rep.Thinking = []string{"Let me", " think."}
			rep.Delay = 100 * time.Millisecond
		}
		return rep
	}, demoModels...)
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/", 1280, 800)

	p.pickModel("stories:latest")
	if !eval[bool](p, `document.getElementById("think-wrap").hidden`) {
		t.Error("a thinking toggle for a model that does not think")
	}
	if got := p.text(`#model option[value="qwen3:0.6b"]`); got != "qwen3:0.6b · 1 node, thinks, tools" {
		t.Errorf("the picker shows %q", got)
	}
	p.send("one")
	p.waitIdle()
	if r := lastRequest(t, o); r.Model != "stories:latest" || string(r.Think) == "true" {
		t.Errorf("Ollama got %s think %s, want stories:latest without thinking", r.Model, r.Think)
	}

	p.pickModel("qwen3:0.6b")
	p.waitJS(`!document.getElementById("think-wrap").hidden`, "the thinking toggle")
	p.do(chromedp.Click(chromedp.ID("think")))
	// Whether the thinking showed open while it came, before the answer.
	eval[bool](p, `(() => { window.__openWhileThinking = false; new MutationObserver(() => {
		const d = document.querySelector("#log .msg.assistant:last-child details.thinking");
		const b = document.querySelector("#log .msg.assistant:last-child .body");
		if (d && d.open && d.textContent.includes("Let me") && b && b.textContent === "") window.__openWhileThinking = true;
	}).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true, attributes: true}); return true })()`)
	p.send("why is the sky blue")
	p.waitIdle()
	if !eval[bool](p, `window.__openWhileThinking`) {
		t.Error("the thinking was not shown open while it streamed")
	}
	r := lastRequest(t, o)
	if r.Model != "qwen3:0.6b" || string(r.Think) != "true" {
		t.Fatalf("Ollama got %s think %s, want qwen3:0.6b with thinking", r.Model, r.Think)
	}
	if got := p.lastAnswer(); got != "Echo: why is the sky blue" {
		t.Errorf("answer %q", got)
	}
	if got := p.text("#log .msg.assistant:last-child details.thinking div"); got != "Let me think." {
		t.Errorf("thinking %q", got)
	}
	if strings.Contains(p.lastAnswer(), "think") {
		t.Error("the thinking is in the answer")
	}
	// Once the answer came, the thinking is folded; a click opens it.
	if eval[bool](p, `document.querySelector("#log .msg.assistant:last-child details.thinking").open`) {
		t.Error("the thinking stays open after the answer came")
	}
	p.do(chromedp.Click(chromedp.CSS("#log .msg.assistant:last-child details.thinking summary")))
	p.waitJS(`document.querySelector("#log .msg.assistant:last-child details.thinking").open`, "the thinking to open")

	// Back to a model that does not think: no toggle, no thinking asked.
	p.pickModel("stories:latest")
	p.waitJS(`document.getElementById("think-wrap").hidden`, "the toggle to go")
	p.send("again")
	p.waitIdle()
	if r := lastRequest(t, o); r.Model != "stories:latest" || string(r.Think) == "true" {
		t.Errorf("Ollama got %s think %s after switching back", r.Model, r.Think)
	}
}

// TestReloadKeepsTheConversation reloads the page mid-conversation: the
// conversation is still there (from localStorage), and the next message
// carries it to the node.
func TestReloadKeepsTheConversation(t *testing.T) {
	o := fakeOllama(t, nil)
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("stories:latest")
	p.send("hello big world")
	p.waitIdle()

	p.do(chromedp.Reload())
	p.waitJS(`document.readyState === "complete" && document.querySelectorAll("#log .msg").length === 2`, "the conversation after the reload")
	if got := p.lastAnswer(); got != "Echo: hello big world" {
		t.Errorf("answer after reload %q", got)
	}
	if got := p.text("#conv-list button"); got != "hello big world" {
		t.Errorf("conversation list %q", got)
	}
	p.send("and more")
	p.waitIdle()
	r := lastRequest(t, o)
	var got []string
	for _, m := range r.Messages[1:] { // after the router's system prompt
		got = append(got, m.Role+":"+m.Content)
	}
	want := []string{"user:hello big world", "assistant:Echo: hello big world", "user:and more"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Ollama got %q, want %q", got, want)
	}

	// New chat starts empty; the old one is a click away; Delete asks twice.
	p.do(chromedp.Click(chromedp.ID("new-chat")))
	p.waitJS(`document.querySelectorAll("#log .msg").length === 0`, "an empty chat")
	p.do(chromedp.Click(chromedp.CSS("#conv-list button")))
	p.waitJS(`document.querySelectorAll("#log .msg").length === 4`, "the old chat")
	p.do(chromedp.Click(chromedp.ID("clear")))
	if n := eval[int](p, `document.querySelectorAll("#log .msg").length`); n != 4 {
		t.Fatalf("one click on Delete removed the chat (%d messages)", n)
	}
	p.do(chromedp.Click(chromedp.ID("clear")))
	p.waitJS(`document.querySelectorAll("#log .msg").length === 0 && document.querySelectorAll("#conv-list button").length === 0`, "the chat deleted")
	p.do(chromedp.Reload())
	p.waitJS(`document.readyState === "complete" && document.getElementById("model").options.length > 0`, "the reload")
	if n := eval[int](p, `document.querySelectorAll("#conv-list button").length + JSON.parse(localStorage.getItem("idleclaw.chats.v1") || "[]").length`); n != 0 {
		t.Errorf("a deleted conversation came back (%d)", n)
	}
}
