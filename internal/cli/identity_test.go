package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// adminNodes reads /admin/nodes.
func adminNodes(t *testing.T, base, token string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("/admin/nodes %s: %v", b, err)
	}
	return v.Nodes
}

// TestIdentityThroughTheCLI: contribute makes a key on first run (0600),
// registers under the id derived from it, and proves it; the router keeps
// the node's record in its file across a restart, and a ban survives one.
func TestIdentityThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "cfg", "node.key")
	db := filepath.Join(dir, "state", "router.db")
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376, Capabilities: []string{"completion"}}}})
	defer ollama.Close()

	serve := start(t, "serve", "--listen", "127.0.0.1:0", "--records", db, "--admin-token", "tok", "--rate-limit-default-rpm", "0")
	base := routerBase(t, serve)
	node := start(t, "contribute", "--server", base, "--ollama", ollama.URL, "--identity", keyPath)
	var id string
	waitFor(t, "the keyed node", 10*time.Second, func() bool {
		ns := adminNodes(t, base, "tok")
		if len(ns) == 1 {
			id, _ = ns[0]["node_id"].(string)
		}
		return len(ns) == 1 && ns[0]["key"] != nil
	})
	k, err := identity.Load(keyPath)
	if err != nil {
		t.Fatalf("the key file: %v", err)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o", fi.Mode().Perm())
	}
	if id != k.NodeID() || !strings.HasPrefix(id, identity.IDPrefix) {
		t.Fatalf("registered as %q, want the key's id %q", id, k.NodeID())
	}
	if !strings.Contains(node.errOut.String(), "created a node identity") || !strings.Contains(node.out.String(), id) {
		t.Errorf("contribute did not say it made an identity or show its id:\n%s\n%s", node.errOut.String(), node.out.String())
	}
	tiers, _ := adminNodes(t, base, "tok")[0]["tiers"].(map[string]any)
	if tiers["stories:latest"] != "unverified" {
		t.Errorf("tiers %v, want unverified", tiers)
	}

	// Ban another key; restart the router on the same file.
	other, _ := identity.New()
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/bans", strings.NewReader(`{"node_id":"`+other.NodeID()+`"}`))
	req.Header.Set("Authorization", "Bearer tok")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("ban: %v %v", resp, err)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	serve2 := start(t, "serve", "--listen", strings.TrimPrefix(base, "http://"), "--records", db, "--admin-token", "tok", "--rate-limit-default-rpm", "0")
	routerBase(t, serve2)
	waitFor(t, "the node back after the restart", 30*time.Second, func() bool {
		ns := adminNodes(t, base, "tok")
		return len(ns) == 1 && ns[0]["node_id"] == id
	})
	req, _ = http.NewRequest(http.MethodGet, base+"/admin/bans", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), other.NodeID()) {
		t.Errorf("bans after the restart: %s", b)
	}
}
