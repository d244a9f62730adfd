// Package webtest drives the router's web page in a real headless browser
// (Debian's chromium, through chromedp) against a real router and real
// nodes, run in-process through the CLI entry point, in front of the fake
// Ollama of internal/ollamatest.
//
// The tests need /usr/bin/chromium. Without it they skip, unless
// IDLECLAW_REQUIRE_BROWSER=1, which makes a missing browser a failure.
// IDLECLAW_SCREENSHOTS=1 writes the screenshots of TestScreenshots to
// docs/img/. IDLECLAW_E2E_OLLAMA_URL runs TestRealOllama against a real
// Ollama serving the tiny model "stories" (scripts/e2e-web.sh).
package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/idleclaw/idleclaw/internal/cli"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/testutil"
)

// Chromium is where the tests look for the browser (Debian's package).
const Chromium = "/usr/bin/chromium"

// pageTimeout bounds each test's browser work.
const pageTimeout = 45 * time.Second

var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserCancel context.CancelFunc
	browserErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if browserCancel != nil {
		browserCancel()
	}
	os.Exit(code)
}

// needBrowser skips the test when there is no browser, or fails it when
// IDLECLAW_REQUIRE_BROWSER=1.
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		if os.Getenv("IDLECLAW_REQUIRE_BROWSER") == "1" {
			t.Fatalf("IDLECLAW_REQUIRE_BROWSER=1 but no browser: %v (apt-get install chromium)", err)
		}
		t.Skipf("no browser at %s: the web page's browser tests did not run (apt-get install chromium; IDLECLAW_REQUIRE_BROWSER=1 makes this a failure)", Chromium)
	}
}

// startBrowser starts the one headless Chromium the tests share; each
// test has its own tab, and each its own router, so its own origin and
// storage.
func startBrowser() (context.Context, error) {
	browserOnce.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(Chromium),
			chromedp.NoSandbox, // tests run as root in CI
			chromedp.WindowSize(1280, 800),
		)
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(alloc)
		browserCancel = func() { cancel(); cancelAlloc() }
		browserCtx = ctx
		if err := chromedp.Do(ctx); err != nil { // starts the browser
			browserErr = fmt.Errorf("start %s: %w", Chromium, err)
		}
	})
	return browserCtx, browserErr
}

// page is one browser tab with what it logged.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu       sync.Mutex
	problems []string // exceptions, console errors, CSP reports
	requests []string // every URL the tab asked for
	urls     map[network.RequestID]string
	wire     map[string]float64 // bytes on the wire per URL, headers included
}

// newPage opens a tab of width×height on base's page at path.
func newPage(t *testing.T, base, path string, width, height int64) *page {
	t.Helper()
	needBrowser(t)
	bctx, err := startBrowser()
	if err != nil {
		t.Fatal(err)
	}
	tab, closeTab := chromedp.NewContext(bctx)
	t.Cleanup(closeTab)
	if err := chromedp.Do(tab); err != nil { // opens the tab
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancel := context.WithTimeout(tab, pageTimeout)
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx, base: base, urls: map[network.RequestID]string{}, wire: map[string]float64{}}
	if err := chromedp.Listen(tab, p.listen); err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	enable := chromedp.Func(func(ctx context.Context, tt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tt, network.Enable, network.EnableParams{})
		return err
	})
	p.do(enable, chromedp.EmulateViewport(width, height))
	p.do(chromedp.Navigate(base + path))
	p.waitJS(`document.readyState === "complete" && !!document.getElementById("live")`, "the page to load")
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pr := range p.problems {
			t.Errorf("the page logged: %s", pr)
		}
	})
	return p
}

// listen runs in the tab's event loop: it notes problems and requests.
func (p *page) listen(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		p.problems = append(p.problems, "exception: "+text)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
			var b strings.Builder
			for _, a := range ev.Args {
				b.Write(a.Value)
				b.WriteString(a.Description)
				b.WriteByte(' ')
			}
			p.problems = append(p.problems, "console."+string(ev.Type)+": "+b.String())
		}
	case *network.EventRequestWillBeSent:
		p.requests = append(p.requests, ev.Request.URL)
		p.urls[ev.RequestID] = ev.Request.URL
	case *network.EventLoadingFinished:
		p.wire[p.urls[ev.RequestID]] += ev.EncodedDataLength
	}
}

// transferred is what the tab received for the URLs under prefix.
func (p *page) transferred(prefix string) (bytes int, urls []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n float64
	for u, b := range p.wire {
		if strings.HasPrefix(u, prefix) {
			n += b
			urls = append(urls, u)
		}
	}
	return int(n), urls
}

// received is what the tab received for url.
func (p *page) received(url string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int(p.wire[url])
}

func (p *page) requested() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it holds, within the page's
// deadline.
func (p *page) waitJS(expr, what string) {
	p.t.Helper()
	for {
		ok, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if p.ctx.Err() != nil {
			p.t.Fatalf("timed out waiting for %s (%s): last error %v", what, expr, err)
		}
		select {
		case <-p.ctx.Done():
		case <-time.After(25 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

// text is an element's textContent ("" when it is not there).
func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, `(document.querySelector(`+jsString(sel)+`) || {}).textContent || ""`)
}

// send types a message and presses Enter.
func (p *page) send(text string) {
	p.t.Helper()
	p.do(chromedp.Focus(chromedp.ID("prompt")), chromedp.SendKeys(chromedp.ID("prompt"), text), pressKey("Enter", 13))
}

// pressKey presses a key (down, up) on the focused element, as a keyboard
// does for a key that types nothing once its keydown is handled.
func pressKey(key string, code int64) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
				Type: typ, Key: key, Code: key, WindowsVirtualKeyCode: code, NativeVirtualKeyCode: code,
			})
			if err != nil {
				return fmt.Errorf("press %s: %w", key, err)
			}
		}
		return nil
	})
}

// pickModel selects a model in the picker as a person does: the select's
// value changes and it fires change.
func (p *page) pickModel(name string) {
	p.t.Helper()
	p.waitJS(`[...document.querySelectorAll("#model option")].some(o => o.value === `+jsString(name)+`)`, "model "+name+" in the picker")
	eval[bool](p, `(() => { const s = document.getElementById("model"); s.value = `+jsString(name)+`; s.dispatchEvent(new Event("change", {bubbles: true})); return true })()`)
}

// lastAnswer is the text of the last answer's body.
func (p *page) lastAnswer() string {
	return eval[string](p, `(() => { const a = [...document.querySelectorAll("#log .msg.assistant .body")]; return a.length ? a[a.length-1].textContent : "" })()`)
}

// waitIdle waits until no answer is streaming (the Send button is back).
func (p *page) waitIdle() {
	p.t.Helper()
	p.waitJS(`!document.getElementById("send").hidden && document.getElementById("stop").hidden`, "the answer to end")
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ---- a network: router and nodes through the CLI ----

// syncBuffer is a buffer safe for one writer and many readers.
type syncBuffer = testutil.SyncBuffer

// proc is one subcommand running in-process.
type proc struct {
	name        string
	out, errOut *syncBuffer
	done        chan int
	cancel      context.CancelFunc
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: args[0], out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan int, 1), cancel: cancel}
	go func() {
		p.done <- cli.Run(ctx, args, func(string) string { return "" }, cli.Streams{Stdin: strings.NewReader(""), Stdout: p.out, Stderr: p.errOut})
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the command as Ctrl+C does and waits for it.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop; stderr:\n%s", p.name, p.errOut.String())
	}
}

var listenRE = regexp.MustCompile(`listening on (http://[0-9.:]+)`)

// startRouter runs `idleclaw serve` on a free loopback port with every
// rate limit off (the tests share one address) and returns its base URL.
func startRouter(t *testing.T, extra ...string) string {
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--records", "none", "--canary-share", "0",
		"--rate-limit-chat-rpm", "0", "--rate-limit-default-rpm", "0", "--max-concurrent-chat-per-ip", "0",
		"--max-concurrent-per-ip", "0", "--log-level", "warn"}, extra...)
	r := start(t, args...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := listenRE.FindStringSubmatch(r.out.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("router did not start: %s", r.errOut.String())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// startNode runs `idleclaw contribute` against ollamaURL and waits until
// the router counts want nodes.
func startNode(t *testing.T, base, ollamaURL string, want int, extra ...string) *proc {
	t.Helper()
	args := append([]string{"contribute", "--server", base, "--ollama", ollamaURL, "--identity", "none",
		"--control", "none", "--owner-poll", "0", "--log-level", "warn"}, extra...)
	n := start(t, args...)
	waitNodes(t, base, want)
	return n
}

// networkDoc is the part of GET /api/network the tests read.
type networkDoc struct {
	NodeCount int `json:"node_count"`
	Models    []struct {
		Name     string `json:"name"`
		Servable int    `json:"servable"`
	} `json:"models"`
}

func getNetwork(t *testing.T, base string) networkDoc {
	t.Helper()
	resp, err := http.Get(base + "/api/network")
	if err != nil {
		t.Fatalf("GET /api/network: %v", err)
	}
	defer resp.Body.Close()
	var doc networkDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("decode /api/network: %v", err)
	}
	return doc
}

// waitNodes waits until the router has want servable nodes.
func waitNodes(t *testing.T, base string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		doc := getNetwork(t, base)
		servable := 0
		for _, m := range doc.Models {
			servable = max(servable, m.Servable)
		}
		if doc.NodeCount == want && (want == 0 || servable > 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router has %d nodes, want %d", doc.NodeCount, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// fakeOllama is a fake Ollama with the given models, closed at cleanup.
func fakeOllama(t *testing.T, respond func(ollamatest.ChatRequest) ollamatest.Reply, models ...ollamatest.Model) *ollamatest.Server {
	t.Helper()
	if len(models) == 0 {
		models = []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}
	}
	o := ollamatest.NewServer(ollamatest.Config{Models: models, Respond: respond})
	t.Cleanup(o.Close)
	return o
}

// lastRequest is the last chat request the fake Ollama received.
func lastRequest(t *testing.T, o *ollamatest.Server) ollamatest.ChatRequest {
	t.Helper()
	reqs := o.Requests()
	if len(reqs) == 0 {
		t.Fatal("Ollama received no request")
	}
	return reqs[len(reqs)-1]
}

// lastUser is the content of a request's last user message.
func lastUser(r ollamatest.ChatRequest) string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}
