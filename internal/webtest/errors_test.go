package webtest

import (
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestQueuePosition: while the only node is busy, the page says where the
// message waits in line, then shows the answer when its turn comes.
func TestQueuePosition(t *testing.T) {
	hold := make(chan struct{})
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		if lastUser(r) == "hold" {
			<-hold
		}
		return ollamatest.DefaultRespond(r)
	})
	base := startRouter(t)
	startNode(t, base, o.URL, 1, "--max-concurrent", "1")
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("stories:latest")

	resp, _ := postChat(t, base, "stories:latest", "hold")
	waitStarted(t, o)
	p.send("my turn")
	p.waitJS(`document.getElementById("status").textContent === "Every node is busy: you are number 1 in line."`, "the queue position")
	close(hold)
	if r := <-resp; r != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	p.waitIdle()
	if got := p.lastAnswer(); got != "Echo: my turn" {
		t.Errorf("answer after the wait %q", got)
	}
	if got := p.text("#status"); got != "" {
		t.Errorf("status after the answer %q", got)
	}
}

// TestErrorsAreClear: a node that fails mid-answer, a model no node
// serves any more, and the rate limit each give the reader a plain
// sentence, never the node's own error text.
func TestErrorsAreClear(t *testing.T) {
	o := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		if lastUser(r) == "fail" {
			return ollamatest.Reply{Tokens: []string{"Half", " an answer"}, Error: "secret internal trace at 10.1.2.3"}
		}
		return ollamatest.DefaultRespond(r)
	})
	base := startRouter(t)
	node := startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("stories:latest")

	p.send("fail")
	p.waitIdle()
	errText := p.text("#log .msg.assistant:last-child .err")
	if p.lastAnswer() != "Half an answer" || errText == "" || strings.Contains(errText, "secret") || strings.Contains(errText, "10.1.2.3") {
		t.Errorf("a node failing mid-answer: answer %q, error %q", p.lastAnswer(), errText)
	}
	if !strings.HasSuffix(errText, ".") || errText[0] < 'A' || errText[0] > 'Z' {
		t.Errorf("error %q is not a sentence", errText)
	}
	t.Logf("mid-answer failure shows: %q", errText)

	// The node goes; the conversation's model stays picked, marked.
	node.stop(t)
	p.waitJS(`document.getElementById("live-text").textContent === "no node"`, "the network to be empty")
	if got := p.text("#model option:checked"); got != "stories:latest · no node now" {
		t.Errorf("picker without nodes %q", got)
	}
	p.send("anyone?")
	p.waitIdle()
	if got := p.text("#log .msg.assistant:last-child .err"); got != "No nodes available with model stories:latest." {
		t.Errorf("no node: %q", got)
	}
	if cls := eval[string](p, `document.getElementById("status").className`); cls != "status err" {
		t.Errorf("status class %q", cls)
	}
	// A new conversation with no model online says so before sending.
	eval[bool](p, `localStorage.removeItem("idleclaw.model") || true`)
	p.do(chromedp.Click(chromedp.ID("new-chat")))
	p.send("hello?")
	p.waitJS(`document.getElementById("status").textContent.startsWith("No model is online")`, "the no-model message")
	if got := eval[string](p, `document.getElementById("prompt").value`); got != "hello?" {
		t.Errorf("the unsent message left the box: %q", got)
	}

	// The rate limit: the second chat of the minute is refused.
	limited := startRouter(t, "--rate-limit-chat-rpm", "1")
	startNode(t, limited, o.URL, 1)
	q := newPage(t, limited, "/", 1280, 800)
	q.pickModel("stories:latest")
	q.send("one")
	q.waitIdle()
	q.send("two")
	q.waitIdle()
	got := q.text("#log .msg.assistant:last-child .err")
	if !regexp.MustCompile(`^Too many requests\. Try again in \d+ seconds?\.$`).MatchString(got) {
		t.Errorf("rate limited: %q", got)
	}
}

// TestKeyboardAndLabels: every control has a name a screen reader says,
// the live regions are marked, Shift+Enter is a new line and Enter sends.
func TestKeyboardAndLabels(t *testing.T) {
	o := fakeOllama(t, nil, demoModels...)
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	for _, path := range []string{"/", "/network"} {
		p := newPage(t, base, path, 1280, 800)
		p.waitJS(`document.getElementById("model").options.length === 2`, "the models")
		unnamed := eval[[]string](p, `[...document.querySelectorAll("button, select, textarea, input, a[href]")].filter(e => e.offsetParent !== null).filter(e =>
			!((e.getAttribute("aria-label") || "").trim() || (e.labels && [...e.labels].some(l => l.textContent.trim())) || e.textContent.trim())).map(e => e.outerHTML)`)
		if len(unnamed) != 0 {
			t.Errorf("%s: controls without a name: %q", path, unnamed)
		}
		if lang := eval[string](p, `document.documentElement.lang`); lang != "en" {
			t.Errorf("lang %q", lang)
		}
		if got := eval[string](p, `document.querySelector("nav a[aria-current=page]").textContent`); got != map[string]string{"/": "Chat", "/network": "Network"}[path] {
			t.Errorf("%s: current page link %q", path, got)
		}
	}
	p := newPage(t, base, "/", 1280, 800)
	p.waitJS(`document.getElementById("model").options.length === 2`, "the models")
	for sel, role := range map[string]string{"#log": "log", "#status": "status"} {
		if got := eval[string](p, `document.querySelector(`+jsString(sel)+`).getAttribute("role")`); got != role {
			t.Errorf("%s role %q, want %s", sel, got, role)
		}
	}
	if got := eval[string](p, `document.getElementById("prompt").labels[0].textContent`); got != "Message" {
		t.Errorf("message box label %q", got)
	}
	p.pickModel("stories:latest")
	p.do(chromedp.Focus(chromedp.ID("prompt")), chromedp.SendKeys(chromedp.ID("prompt"), "line one"),
		chromedp.KeyEvent("\r", chromedp.KeyModifiers(kb.ModifierShift)), chromedp.SendKeys(chromedp.ID("prompt"), "line two"))
	if got := eval[string](p, `document.getElementById("prompt").value`); got != "line one\nline two" {
		t.Fatalf("after Shift+Enter the box holds %q", got)
	}
	if n := eval[int](p, `document.querySelectorAll("#log .msg").length`); n != 0 {
		t.Fatal("Shift+Enter sent the message")
	}
	p.do(pressKey("Enter", 13))
	p.waitIdle()
	if got := lastUser(lastRequest(t, o)); got != "line one\nline two" {
		t.Errorf("Ollama got %q", got)
	}
	if got := eval[string](p, `document.activeElement.id`); got != "prompt" {
		t.Errorf("after sending, focus is on %q, want the message box", got)
	}
}
