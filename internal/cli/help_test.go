package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVersionAndHelp: -v, --version and version print the version; the
// top-level usage lists version and completion; every command's -h starts
// with a one-line description and has examples.
func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-v"}, {"--version"}, {"version"}} {
		if code, out, _ := run(t, "", args...); code != 0 || out != "idleclaw "+Version+"\n" {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	_, _, usage := run(t, "", "help")
	for _, want := range []string{"\n  version ", "\n  completion ", "-v, --version"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			code, _, help := run(t, "", args...)
			first, _, _ := strings.Cut(help, "\n")
			_, examples, _ := strings.Cut(help, "\nexamples:\n")
			if code != 0 || first != "idleclaw "+c.name+": "+c.summary || !strings.Contains(examples, "idleclaw "+c.name) {
				t.Errorf("%v: exit %d, help:\n%s", args, code, help)
			}
		}
	}
	for _, verb := range []string{"pause", "resume", "status"} {
		code, _, help := run(t, "", "contribute", verb, "-h")
		if first, _, _ := strings.Cut(help, "\n"); code != 0 || !strings.HasPrefix(first, "idleclaw contribute "+verb+": ") {
			t.Errorf("contribute %s -h: exit %d, %q", verb, code, help)
		}
	}
	if _, _, help := run(t, "", "contribute", "-h"); !strings.Contains(help, "\n  -v\n") || !strings.Contains(help, "\n  --verbose\n") {
		t.Errorf("contribute -h lacks -v / --verbose:\n%s", help)
	}
}

// TestCompletionBash loads the bash script in bash and completes with it.
func TestCompletionBash(t *testing.T) {
	t.Parallel()
	code, script, stderr := run(t, "", "completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed for this test:", err)
	}
	path := filepath.Join(t.TempDir(), "idleclaw.bash")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		q := make([]string, len(words))
		for i, w := range words {
			q[i] = "'" + w + "'"
		}
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(q, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _idleclaw; echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "-c", prog, "bash", path).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"idleclaw", "con"}, "contribute consume"},
		{[]string{"idleclaw", "consume", "--st"}, "--stats"},
		{[]string{"idleclaw", "consume", "--max-t"}, "--max-tokens"},
		{[]string{"idleclaw", "contribute", "pa"}, "pause"},
		{[]string{"idleclaw", "contribute", "--verb"}, "--verbose"},
		{[]string{"idleclaw", "serve", "--conf"}, "--config"},
		{[]string{"idleclaw", "completion", "z"}, "zsh"},
		{[]string{"idleclaw", "status", "--server", ""}, ""},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("%v: completions %q, want %q", tc.words, got, tc.want)
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		code, script, _ := run(t, "", "completion", sh)
		if code != 0 || !strings.Contains(script, "max-tokens") || !strings.Contains(script, "config") || !strings.Contains(script, "verbose") {
			t.Errorf("completion %s: exit %d", sh, code)
		}
	}
	if code, _, stderr := run(t, "", "completion", "tcsh"); code != 2 || !strings.Contains(stderr, "bash, zsh or fish") {
		t.Errorf("completion tcsh: exit %d, %q", code, stderr)
	}
}

// TestServeConfigFile: serve --config sets flags from key = value lines;
// the command line wins over the file; an unknown key is an error naming
// its line.
func TestServeConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "router.conf")
	body := "# a router for tests\nlisten = 256.0.0.1:0\n\n--max-message-length=5\nrecords = \"none\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// The file's listen (not an address) loses to the command line's.
	base := routerBase(t, start(t, "serve", "--config", conf, "--listen", "127.0.0.1:0"))
	// The file's max-message-length holds: 6 characters are refused (422)
	// before the router looks for a node (503).
	code, _, stderr := run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "abcdef")
	if code != 1 || !strings.Contains(stderr, "(422)") {
		t.Errorf("a 6-character prompt: exit %d, %q; want the router's 422", code, stderr)
	}
	code, _, stderr = run(t, "", "consume", "--server", base, "--model", "stories", "--prompt", "abcde")
	if code != 1 || !strings.Contains(stderr, "no node serves model stories") {
		t.Errorf("a 5-character prompt: exit %d, %q; want no node", code, stderr)
	}

	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("listen = 127.0.0.1:0\n# fine so far\nlisten-port = 8000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr = run(t, "", "serve", "--config", bad)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serve with a bad config file did not exit")
	}
	if code != 2 || !strings.Contains(stderr, bad+`:3: unknown key "listen-port"`) {
		t.Errorf("unknown key: exit %d, %q", code, stderr)
	}
	for _, tc := range []struct{ body, want string }{
		{"listen = a\nlisten = b\n", ":2: listen is set already, on line 1"},
		{"queue-max = many\n", `:1: invalid queue-max "many"`},
		{"just words\n", ":1: want key = value"},
		{"config = other.conf\n", `:1: unknown key "config"`},
	} {
		if err := os.WriteFile(bad, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := run(t, "", "serve", "--config", bad); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", tc.body, code, stderr, tc.want)
		}
	}
}
