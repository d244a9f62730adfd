package cli

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestContributeControl: pause, resume and status from another terminal,
// through the control socket; while paused the router sends the node
// nothing (its own record says unavailable, and a chat is refused at once).
func TestContributeControl(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	base := routerBase(t, start(t, "serve", "--listen", "127.0.0.1:0", "--rate-limit-default-rpm", "0", "--rate-limit-chat-rpm", "0", "--admin-token", "tok"))
	node := start(t, "contribute", "--server", base, "--ollama", ollama.URL, "--control", sock, "--owner-poll", "0")
	waitFor(t, "registration", 10*time.Second, func() bool {
		ns := adminNodes(t, base, "tok")
		return len(ns) == 1 && ns[0]["available"] == true
	})
	code, out, errOut := run(t, "", "contribute", "status", "--control", sock)
	if code != 0 || !strings.Contains(out, ": serving") || !strings.Contains(out, "connected") || !strings.Contains(out, "context 8192") {
		t.Fatalf("status: %d %s %s", code, out, errOut)
	}
	code, out, _ = run(t, "", "contribute", "pause", "--for", "1h", "--control", sock)
	if code != 0 || !strings.Contains(out, "paused (paused by the owner) until") {
		t.Fatalf("pause: %d %s", code, out)
	}
	waitFor(t, "the router to hear of the pause", 10*time.Second, func() bool {
		ns := adminNodes(t, base, "tok")
		return len(ns) == 1 && ns[0]["available"] == false
	})
	resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(`{"model":"stories","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || len(ollama.Requests()) != 0 {
		t.Fatalf("a chat while paused: %d, Ollama saw %d requests", resp.StatusCode, len(ollama.Requests()))
	}
	if !strings.Contains(node.out.String(), "paused: paused by the owner") {
		t.Errorf("contribute did not say it paused:\n%s", node.out.String())
	}
	code, out, _ = run(t, "", "contribute", "resume", "--control", sock)
	if code != 0 || !strings.Contains(out, ": serving") {
		t.Fatalf("resume: %d %s", code, out)
	}
	waitFor(t, "the router to hear of the resume", 10*time.Second, func() bool {
		ns := adminNodes(t, base, "tok")
		return len(ns) == 1 && ns[0]["available"] == true
	})
	code, out, _ = run(t, "", "contribute", "status", "--json", "--control", sock)
	if code != 0 || !strings.Contains(out, `"state":"serving"`) {
		t.Errorf("status --json: %d %s", code, out)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode: %v %v", fi, err)
	}
	// No node: a clear error.
	if code, _, errOut := run(t, "", "contribute", "status", "--control", filepath.Join(dir, "none.sock")); code != 1 || !strings.Contains(errOut, "no node answers") {
		t.Errorf("status without a node: %d %s", code, errOut)
	}
}

func TestInstallService(t *testing.T) {
	home := t.TempDir()
	var out, errOut strings.Builder
	code := Run(t.Context(), []string{"contribute", "--install-service", "--server", "https://router.example", "--schedule", "Mon-Fri 22:00-08:00"},
		func(k string) string {
			if k == "HOME" {
				return home
			}
			return ""
		}, Streams{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
	if code != 0 {
		t.Fatalf("install-service: %d %s", code, errOut.String())
	}
	unit := filepath.Join(home, ".config", "systemd", "user", "idleclaw-contribute.service")
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), ` contribute --server https://router.example --schedule "Mon-Fri 22:00-08:00"`) ||
		strings.Contains(string(b), "install-service") || !strings.Contains(out.String(), "systemctl --user enable --now idleclaw-contribute") ||
		!strings.Contains(out.String(), "journalctl --user -u idleclaw-contribute") {
		t.Errorf("unit:\n%s\noutput:\n%s", b, out.String())
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("IDLECLAW_REQUIRE_SYSTEMD") == "1" {
			t.Fatal("systemd-analyze is not installed (IDLECLAW_REQUIRE_SYSTEMD=1)")
		}
		t.Skip("systemd-analyze is not installed: the unit's syntax is not verified here")
	}
	cmd := exec.Command(analyze, "verify", unit)
	cmd.Env = append(os.Environ(), "HOME="+home)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	} else {
		t.Logf("systemd-analyze verify: ok %s", strings.TrimSpace(string(b)))
	}
	// The macOS agent, written for a darwin machine.
	path, explain, err := installService("darwin", home, "/usr/local/bin/idleclaw", []string{"--server", "https://r.example"})
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := os.ReadFile(path)
	if !strings.Contains(string(pl), "<string>contribute</string>") || !strings.Contains(string(pl), "Library/Logs/idleclaw/contribute.log") ||
		!strings.Contains(explain, "launchctl load -w") {
		t.Errorf("plist:\n%s\n%s", pl, explain)
	}
}
