package cli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/providertest"
)

// gatewayChat posts a plain chat to a gateway and returns the route and
// the body.
func gatewayChat(t *testing.T, base, model string) (int, string, string) {
	t.Helper()
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"tell me a story"}]}`
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-IdleClaw-Route"), string(b)
}

// TestGatewayCommand: `idleclaw gateway` in front of a fake provider and
// a network (router + node, through the CLI) answers from the provider,
// then from the network once the provider runs out of credit, and prints
// one line per request; the key is in none of its output.
func TestGatewayCommand(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	network := startNetwork(t, ollama.URL, nil, nil)
	const key = "sk-cli-test-key-0123456789"
	prov := providertest.NewServer(providertest.Config{Key: key})
	defer prov.Close()
	p, base := startGateway(t, map[string]string{"OPENAI_API_KEY": key}, "--provider-url", prov.URL, "--network", network)
	for _, want := range []string{"key from OPENAI_API_KEY", "OPENAI_BASE_URL=" + base + "/v1", "network:  " + network} {
		if !strings.Contains(p.out.String(), want) {
			t.Errorf("start-up lines lack %q:\n%s", want, p.out.String())
		}
	}
	if st, route, body := gatewayChat(t, base, "gpt-4o-mini"); st != 200 || route != "provider" || !strings.Contains(body, "Echo: tell me a story") {
		t.Fatalf("with credit: %d %s %s", st, route, body)
	}
	prov.SetRespond(func(providertest.Request) providertest.Reply { return providertest.InsufficientQuota() })
	// No --map: gpt-4o-mini becomes the network's default model.
	st, route, body := gatewayChat(t, base, "gpt-4o-mini")
	if st != 200 || route != "network" || !strings.Contains(body, "Echo: tell me a story") || !strings.Contains(body, `"model":"stories:latest"`) {
		t.Fatalf("out of credit: %d %s %s", st, route, body)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d: %s", code, p.errOut.String())
	}
	out := p.out.String()
	for _, want := range []string{
		` route=provider why="provider answered" model=gpt-4o-mini status=200 duration=`,
		` route=network why="provider out of credit (429 insufficient_quota), cooling down 1h0m0s" model=gpt-4o-mini->stories:latest status=200 duration=`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("request lines lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+p.errOut.String(), key) {
		t.Fatalf("the key is in the output:\n%s\n%s", out, p.errOut.String())
	}
}

// TestGatewayConfigFile: a config file sets the provider, its key and
// the mapping; a flag beats it; IDLECLAW_PROVIDER_KEY beats its key, and
// its key beats OPENAI_API_KEY; a file others may read is warned about.
func TestGatewayConfigFile(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	network := startNetwork(t, ollama.URL, nil, nil)
	const fileKey = "sk-from-the-file-000000"
	prov := providertest.NewServer(providertest.Config{Key: fileKey})
	defer prov.Close()
	other := providertest.NewServer(providertest.Config{Key: fileKey})
	defer other.Close()
	path := filepath.Join(t.TempDir(), "gateway.json")
	cfg := `{"provider_url":"` + prov.URL + `","provider_key":"` + fileKey + `","network":"` + network + `","models":{"gpt-4o-mini":"stories"}}`
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, base := startGateway(t, map[string]string{"OPENAI_API_KEY": "sk-not-this-one-000"}, "--config", path)
	if !strings.Contains(p.errOut.String(), "readable by others") || !strings.Contains(p.out.String(), "key from "+path) {
		t.Errorf("stderr %q, stdout %q", p.errOut.String(), p.out.String())
	}
	if st, route, body := gatewayChat(t, base, "gpt-4o-mini"); st != 200 || route != "provider" {
		t.Fatalf("with the file's key: %d %s %s", st, route, body)
	}
	if prov.Count() != 1 {
		t.Fatalf("the file's provider got %d requests", prov.Count())
	}
	// A flag beats the file.
	_, base2 := startGateway(t, nil, "--config", path, "--provider-url", other.URL)
	if st, route, _ := gatewayChat(t, base2, "gpt-4o-mini"); st != 200 || route != "provider" || other.Count() != 1 {
		t.Fatalf("--provider-url over the file: %d %s, other got %d", st, route, other.Count())
	}
	// IDLECLAW_PROVIDER_KEY beats the file's key: the provider refuses it.
	_, base3 := startGateway(t, map[string]string{"IDLECLAW_PROVIDER_KEY": "sk-env-wins-00000000"}, "--config", path)
	if st, route, body := gatewayChat(t, base3, "gpt-4o-mini"); st != 401 || route != "provider" || !strings.Contains(body, "invalid_api_key") {
		t.Fatalf("IDLECLAW_PROVIDER_KEY over the file: %d %s %s", st, route, body)
	}
}

func TestGatewayUsage(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.json")
	_ = os.WriteFile(unknown, []byte(`{"provider":"x"}`), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--map", "gpt-4o"}, "invalid --map"},
		{[]string{"--on-rate-limit", "wait"}, "retry or fallback"},
		{[]string{"--provider-url", "api.openai.com"}, "not an http(s) base URL"},
		{[]string{"--network", "ftp://x"}, "not an http(s) base URL"},
		{[]string{"--listen", "127.0.0.1:8787", "--provider-url", "http://localhost:8787/v1"}, "must not be this gateway"},
		{[]string{"--config", filepath.Join(dir, "missing.json")}, "read config"},
		{[]string{"--config", unknown}, `unknown field "provider"`},
		{[]string{"--probe-every", "0s"}, "must be positive"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		code, _, stderr := run(t, "", append([]string{"gateway"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	if code, _, stderr := run(t, "", "gateway", "-h"); code != 0 || !strings.Contains(stderr, "--on-rate-limit [IDLECLAW_ON_RATE_LIMIT]") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}
}
