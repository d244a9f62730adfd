package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// clientsReply answers like a tool-capable model: a get_weather call while
// the conversation has tools and no tool result yet, then an answer that
// quotes the tool's result; otherwise a fixed five-token answer.
func clientsReply(req ollamatest.ChatRequest) ollamatest.Reply {
	n := len(req.Messages)
	var last ollamatest.Message
	if n > 0 {
		last = req.Messages[n-1]
	}
	switch {
	case last.Role == "tool":
		return ollamatest.Reply{Tokens: []string{"The weather: ", last.Content, "."}}
	case len(req.Tools) > 0:
		return ollamatest.Reply{ToolCalls: [][]ollamatest.ToolCall{{{Function: ollamatest.ToolCallFunction{
			Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)}}}}}
	}
	return ollamatest.Reply{Tokens: clientsTokens}
}

// clientsCounters are the closing counters of node's test runner (TAP).
var clientsCounters = map[string]bool{"tests": true, "pass": true, "fail": true, "cancelled": true, "skipped": true, "todo": true}

var clientsTokens = []string{"Once", " there", " was", " a", " fox."}

// clientLibraries finds node and the official client libraries installed
// in clients/ (scripts/clients.sh): the test skips without them, or fails
// with IDLECLAW_REQUIRE_CLIENTS=1 (CI).
func clientLibraries(t *testing.T, pkgs ...string) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "clients"))
	if err != nil {
		t.Fatal(err)
	}
	missing := func(why string) {
		t.Helper()
		if os.Getenv("IDLECLAW_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%s (IDLECLAW_REQUIRE_CLIENTS=1)", why)
		}
		t.Skipf("%s: run `bash scripts/clients.sh` to install the client libraries", why)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			missing("clients/node_modules/" + pkg + " is missing")
		}
	}
	return node, dir
}

// runNodeTests runs `node --test target` in dir with env (and PATH, a
// fresh HOME), bounded in time; it fails the test when node does (with
// extra's text), and returns node's closing counters ("tests 5; pass 5;
// ...") and its output.
func runNodeTests(t *testing.T, node, dir, target string, extra func() string, env ...string) (summary, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", target)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.WaitDelay = 5 * time.Second
	b, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node --test did not finish in time:\n%s", b)
	case errors.As(err, &exitErr):
		t.Fatalf("node --test failed (%v):\n%s\n%s", err, b, extra())
	case err != nil:
		t.Fatalf("node --test: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "#" && clientsCounters[f[1]] {
			summary += f[1] + " " + f[2] + "; "
		}
	}
	return summary, string(b)
}

// TestClients runs the official OpenAI and Ollama client libraries
// (clients/, node --test) against router + node agent + fake Ollama, all
// started through the real CLI entry points.
func TestClients(t *testing.T) {
	node, dir := clientLibraries(t, "openai", "ollama")

	fake := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{
			{Name: "stories:latest", Size: 1_185_376, Capabilities: []string{"completion"}},
			{Name: "qwen3:0.6b", Size: 522_000_000, Family: "qwen3", ContextLength: 40960, Capabilities: []string{"completion", "tools", "thinking"}},
		},
		Loaded:  []string{"stories:latest"},
		Respond: clientsReply,
	})
	defer fake.Close()

	router := start(t, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit-default-rpm", "0") // polled below
	base := routerBase(t, router)
	// A second router, without nodes, whose chat bucket holds one request.
	limited := start(t, "serve", "--listen", "127.0.0.1:0", "--rate-limit-chat-rpm", "1")
	limitedBase := routerBase(t, limited)
	agent := start(t, "contribute", "--server", base, "--ollama", fake.URL, "--log-format", "json")
	waitFor(t, "node registration", 10*time.Second, func() bool {
		code, out, _ := run(t, "", "status", "--server", base, "--json")
		return code == 0 && strings.Contains(out, "qwen3:0.6b") && strings.Contains(out, "stories:latest")
	})

	summary, out := runNodeTests(t, node, dir, dir, func() string { return "router log:\n" + router.errOut.String() },
		"ROUTER_URL="+base,
		"ROUTER_URL_LIMITED="+limitedBase,
		"IDLECLAW_MODEL=stories",
		"IDLECLAW_TOOL_MODEL=qwen3:0.6b",
		"EXPECT_COMPLETION_TOKENS="+strconv.Itoa(len(clientsTokens)),
		"EXPECT_EXACT_USAGE=1",
	)
	if !strings.Contains(summary, "fail 0") || strings.Contains(summary, "pass 0;") || !strings.Contains(summary, "skipped 0") {
		t.Fatalf("node --test: %s\n%s", summary, out)
	}
	t.Logf("node --test: %s", summary)

	// No prompt or answer text in the logs.
	for _, logs := range []string{router.errOut.String(), agent.errOut.String(), agent.out.String()} {
		if strings.Contains(logs, "Once upon a time") || strings.Contains(logs, "there was a fox") {
			t.Fatalf("prompt or answer text in logs: %s", logs)
		}
	}
}
