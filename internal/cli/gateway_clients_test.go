package cli

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/providertest"
)

// gatewayProviderTokens is the fake provider's plain answer.
var gatewayProviderTokens = []string{"Provider", " says", " hello", "."}

// gatewayProviderReply answers like a tool-capable provider model, as
// clientsReply does for the network: a get_weather call while the
// conversation has tools and no tool result, then an answer quoting the
// result; a 404 for "no-such-model".
func gatewayProviderReply(req providertest.Request) providertest.Reply {
	var last providertest.Message
	if n := len(req.Messages); n > 0 {
		last = req.Messages[n-1]
	}
	switch {
	case req.Model == "no-such-model":
		return providertest.ModelNotFound(req.Model)
	case last.Role == "tool":
		return providertest.Reply{Tokens: []string{"The weather: ", last.Content, "."}}
	case len(req.Tools) > 0 && string(req.Tools) != "null":
		return providertest.Reply{ToolCalls: []providertest.ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}
	}
	return providertest.Reply{Tokens: gatewayProviderTokens}
}

// startGateway runs `idleclaw gateway` through the real CLI entry point
// with env, and returns its base URL (without /v1).
func startGateway(t *testing.T, env map[string]string, args ...string) (*proc, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan int, 1), cancel: cancel}
	go func() {
		p.done <- Run(ctx, append([]string{"gateway", "--listen", "127.0.0.1:0"}, args...), func(k string) string { return env[k] },
			Streams{Stdin: strings.NewReader(""), Stdout: p.out, Stderr: p.errOut})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Errorf("gateway did not stop")
		}
	})
	return p, routerBase(t, p)
}

// TestGatewayClients runs the official openai npm client (clients/
// gateway.test.mjs, node --test) against three gateways started through
// the CLI, in front of fake providers and one network (router + node +
// fake Ollama, also through the CLI): one whose provider answers, one
// whose provider is out of credit, one whose provider's streams break off.
func TestGatewayClients(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("..", "..", "clients"))
	if err != nil {
		t.Fatal(err)
	}
	required := os.Getenv("IDLECLAW_REQUIRE_CLIENTS") == "1"
	missing := func(why string) {
		t.Helper()
		if required {
			t.Fatalf("%s (IDLECLAW_REQUIRE_CLIENTS=1)", why)
		}
		t.Skipf("%s: run `bash scripts/clients.sh` to install the client libraries", why)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		missing("clients/node_modules/openai is missing")
	}

	ollama := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{
			{Name: "stories:latest", Size: 1_185_376, Capabilities: []string{"completion"}},
			{Name: "qwen3:0.6b", Size: 522_000_000, Family: "qwen3", Capabilities: []string{"completion", "tools"}},
		},
		Respond: clientsReply,
	})
	defer ollama.Close()
	network := startNetwork(t, ollama.URL, nil, nil)

	const key = "sk-gateway-test-key-0123456789"
	healthy := providertest.NewServer(providertest.Config{Key: key, Respond: gatewayProviderReply})
	defer healthy.Close()
	exhausted := providertest.NewServer(providertest.Config{Key: key, Respond: func(providertest.Request) providertest.Reply {
		return providertest.InsufficientQuota()
	}})
	defer exhausted.Close()
	broken := providertest.NewServer(providertest.Config{Key: key, Respond: func(providertest.Request) providertest.Reply {
		return providertest.Reply{Tokens: gatewayProviderTokens, Cut: true}
	}})
	defer broken.Close()

	env := map[string]string{"IDLECLAW_PROVIDER_KEY": key}
	gw := func(provider string) (*proc, string) {
		return startGateway(t, env, "--provider-url", provider, "--network", network, "--map", "gpt-4o-mini=stories,gpt-4o=qwen3:0.6b")
	}
	hp, hURL := gw(healthy.URL)
	ep, eURL := gw(exhausted.URL)
	bp, bURL := gw(broken.URL)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "gateway.test.mjs")
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"GATEWAY_URL=" + hURL,
		"GATEWAY_URL_EXHAUSTED=" + eURL,
		"GATEWAY_URL_BROKEN=" + bURL,
		"GATEWAY_MODEL=gpt-4o-mini",
		"GATEWAY_TOOL_MODEL=gpt-4o",
		"EXPECT_PROVIDER_TEXT=" + strings.Join(gatewayProviderTokens, ""),
		"EXPECT_NETWORK_TEXT=" + strings.Join(clientsTokens, ""),
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node --test did not finish in time:\n%s", out)
	case errors.As(err, &exitErr):
		t.Fatalf("node --test failed (%v):\n%s\ngateway lines:\n%s%s%s", err, out, hp.out.String(), ep.out.String(), bp.out.String())
	case err != nil:
		t.Fatalf("node --test: %v", err)
	}
	summary := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "#" && clientsCounters[f[1]] {
			summary += f[1] + " " + f[2] + "; "
		}
	}
	// 5 tests per gateway side, the pass-through 404, the broken stream.
	if !strings.Contains(summary, "pass 12;") || !strings.Contains(summary, "fail 0") || !strings.Contains(summary, "skipped 0") {
		t.Fatalf("node --test: %s\n%s", summary, out)
	}
	t.Logf("node --test: %s", summary)

	// The provider got the gateway's key, never the SDK's; the healthy
	// gateway never fell back, the exhausted one always did after the
	// provider's first answer.
	for _, p := range []*providertest.Server{healthy, exhausted, broken} {
		for _, r := range p.Requests() {
			if r.Authorization != "Bearer "+key {
				t.Fatalf("the provider got Authorization %q", r.Authorization)
			}
		}
	}
	if n := exhausted.Count(); n != 1 {
		t.Errorf("the exhausted provider was asked %d times, want once (then the cooldown)", n)
	}
	if strings.Contains(hp.out.String(), "route=network") {
		t.Errorf("the healthy gateway fell back:\n%s", hp.out.String())
	}
	if got := strings.Count(ep.out.String(), " route=network "); got != 5 {
		t.Errorf("the exhausted gateway sent %d chats to the network, want all 5 of them:\n%s", got, ep.out.String())
	}
	if !strings.Contains(bp.out.String(), "stream_error=") {
		t.Errorf("the broken gateway's line does not note the broken stream:\n%s", bp.out.String())
	}
	for _, p := range []*proc{hp, ep, bp} {
		if logs := p.out.String() + p.errOut.String(); strings.Contains(logs, key) || strings.Contains(logs, "Once upon a time") {
			t.Fatalf("a key or prompt text in the gateway's output:\n%s", logs)
		}
	}
}
