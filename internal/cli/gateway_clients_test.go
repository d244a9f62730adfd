package cli

import (
	"strings"
	"testing"

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
	p := startEnv(t, func(k string) string { return env[k] }, append([]string{"gateway", "--listen", "127.0.0.1:0"}, args...)...)
	return p, routerBase(t, p)
}

// TestGatewayClients runs the official openai npm client (clients/
// gateway.test.mjs, node --test) against three gateways started through
// the CLI, in front of fake providers and one network (router + node +
// fake Ollama, also through the CLI): one whose provider answers, one
// whose provider is out of credit, one whose provider's streams break off.
func TestGatewayClients(t *testing.T) {
	node, dir := clientLibraries(t, "openai")

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

	summary, out := runNodeTests(t, node, dir, "gateway.test.mjs",
		func() string { return "gateway lines:\n" + hp.out.String() + ep.out.String() + bp.out.String() },
		"GATEWAY_URL="+hURL,
		"GATEWAY_URL_EXHAUSTED="+eURL,
		"GATEWAY_URL_BROKEN="+bURL,
		"GATEWAY_MODEL=gpt-4o-mini",
		"GATEWAY_TOOL_MODEL=gpt-4o",
		"EXPECT_PROVIDER_TEXT="+strings.Join(gatewayProviderTokens, ""),
		"EXPECT_NETWORK_TEXT="+strings.Join(clientsTokens, ""),
	)
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
