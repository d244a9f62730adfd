package webtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// screenshot writes the tab's viewport to docs/img/name when
// IDLECLAW_SCREENSHOTS=1.
func (p *page) screenshot(name string) {
	p.t.Helper()
	if os.Getenv("IDLECLAW_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join("..", "..", "docs", "img", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote %s (%d bytes)", path, len(png))
}

var demoModels = []ollamatest.Model{
	{Name: "qwen3:0.6b", Size: 522_000_000, Capabilities: []string{"completion", "tools", "thinking"}},
	{Name: "stories:latest", Size: 1_185_376},
}

// demoRespond answers like a small model that thinks, in Markdown.
func demoRespond(r ollamatest.ChatRequest) ollamatest.Reply {
	if !strings.Contains(lastUser(r), "reverse") {
		return ollamatest.DefaultRespond(r)
	}
	rep := ollamatest.Reply{Tokens: strings.SplitAfter("Use **slicing** for a reversed copy, or `list.reverse()` to reverse in place:\n\n"+
		"```python\nnums = [1, 2, 3]\nprint(nums[::-1])  # [3, 2, 1]\nnums.reverse()\n```\n\n"+
		"- `reversed(nums)` gives an iterator, without a copy\n- `nums[::-1]` works on strings too", " ")}
	if string(r.Think) == "true" {
		rep.Thinking = strings.SplitAfter("The user wants to reverse a list. Slicing makes a copy; reverse() works in place.", " ")
	}
	return rep
}

// TestScreenshots shows the chat and the network page on a desktop and on
// a phone, and checks that nothing is wider than a phone's screen.
func TestScreenshots(t *testing.T) {
	o := fakeOllama(t, demoRespond, demoModels...)
	base := startRouter(t)
	startNode(t, base, o.URL, 1, "--node-id", "demo-node-1")
	o2 := fakeOllama(t, demoRespond, demoModels[1])
	startNode(t, base, o2.URL, 2, "--node-id", "demo-node-2")

	p := newPage(t, base, "/", 1280, 800)
	p.pickModel("qwen3:0.6b")
	p.waitJS(`!document.getElementById("think-wrap").hidden`, "the thinking toggle")
	p.do(chromedp.Click(chromedp.ID("think")))
	p.send("How do I reverse a list in Python?")
	p.waitIdle()
	p.waitJS(`document.querySelector("#log .code pre")`, "the code block")
	p.do(chromedp.Click(chromedp.CSS("details.thinking summary")))
	p.screenshot("chat.png")

	// The code block's Copy button puts the code on the clipboard.
	grantClipboard(p)
	p.do(chromedp.Click(chromedp.CSS("#log .code .copy")))
	p.waitJS(`document.querySelector("#log .code .copy").textContent === "Copied"`, "the copy")
	clip, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("read the clipboard: %v", err)
	}
	if want := "nums = [1, 2, 3]\nprint(nums[::-1])  # [3, 2, 1]\nnums.reverse()"; clip != want {
		t.Errorf("the clipboard holds %q, want the code %q", clip, want)
	}

	p.do(chromedp.Click(chromedp.ID("nav-network")))
	p.waitJS(`location.pathname === "/network" && document.getElementById("s-nodes").textContent === "2"`, "the network view")
	p.screenshot("network.png")

	phone := newPage(t, base, "/", 390, 844)
	phone.waitJS(`document.querySelectorAll("#model option").length === 2`, "the models")
	phone.send("How do I reverse a list in Python?")
	phone.waitIdle()
	if w := eval[int](phone, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at phone width the page is %d px wide", w)
	}
	if !eval[bool](phone, `getComputedStyle(document.getElementById("menu")).display !== "none"`) {
		t.Error("no conversations button at phone width")
	}
	if eval[bool](phone, `document.getElementById("sidebar").getBoundingClientRect().right > 0`) {
		t.Error("the conversation list covers the chat at phone width")
	}
	phone.screenshot("chat-phone.png")
	phone.do(chromedp.Click(chromedp.ID("menu")))
	phone.waitJS(`document.getElementById("sidebar").getBoundingClientRect().left >= 0 && document.getElementById("menu").getAttribute("aria-expanded") === "true"`, "the conversation list")
	phone.do(chromedp.Click(chromedp.CSS("#conv-list button")))
	phone.waitJS(`document.getElementById("sidebar").getBoundingClientRect().right <= 0`, "the list to close")

	phone.do(chromedp.Click(chromedp.ID("nav-network")))
	phone.waitJS(`document.getElementById("s-nodes").textContent === "2"`, "the network view")
	if w := eval[int](phone, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at phone width the network page is %d px wide", w)
	}
	phone.screenshot("network-phone.png")
}

// grantClipboard lets the page use the clipboard, as a person's click
// would in a focused window.
func grantClipboard(p *page) {
	p.t.Helper()
	b := chromedp.FromContext(p.ctx).Browser
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := cdp.Call(p.ctx, b, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, Origin: p.base})
		if err != nil {
			p.t.Fatalf("grant %s: %v", name, err)
		}
	}
	focus := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true})
		return err
	})
	p.do(focus)
}
