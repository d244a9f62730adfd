package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeGo is a `go` command for install.sh: `go install` fails as the
// module proxy does when it refuses the module, or, with GO_FAKE_OK set,
// "installs" a binary that prints a version.
const fakeGo = `#!/bin/sh
case "$1" in
install)
	if [ -n "$GO_FAKE_OK" ]; then
		mkdir -p "$GO_FAKE_PATH/bin"
		printf '#!/bin/sh\necho idleclaw 9.9.9\n' >"$GO_FAKE_PATH/bin/idleclaw"
		chmod +x "$GO_FAKE_PATH/bin/idleclaw"
		exit 0
	fi
	echo "go: github.com/idleclaw/idleclaw/cmd/idleclaw@latest: reading https://proxy.golang.org/github.com/idleclaw/idleclaw/@v/list: 403 Forbidden" >&2
	exit 1 ;;
env)
	case "$2" in
	GOPROXY) echo "https://proxy.golang.org,direct" ;;
	GOBIN) echo "" ;;
	GOPATH) echo "$GO_FAKE_PATH" ;;
	esac ;;
esac
`

// TestInstallScriptFromTheSkillFolder runs skill/install.sh copied alone
// into a folder (as a skill is installed), with a go command whose
// `go install ...@latest` is refused: it must say why and what to do.
func TestInstallScriptFromTheSkillFolder(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed for this test:", err)
	}
	script, err := os.ReadFile(filepath.Join("..", "..", "skill", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	skill, bin, gopath := filepath.Join(dir, "skill"), filepath.Join(dir, "bin"), filepath.Join(dir, "gopath")
	for _, d := range []string{skill, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(skill, "install.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	runScript := func(extra ...string) (int, string, string) {
		cmd := exec.Command(bash, "install.sh")
		cmd.Dir = skill
		cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "HOME=" + dir, "GO_FAKE_PATH=" + gopath,
			"OLLAMA_HOST=" + strings.TrimPrefix(closedServer(t), "http://")}, extra...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}
	code, out, stderr := runScript()
	for _, want := range []string{"403 Forbidden", "could not be downloaded", "GOPROXY is https://proxy.golang.org,direct", "GOPROXY=direct bash install.sh", "git clone https://github.com/idleclaw/idleclaw"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refused install: stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code != 1 || strings.Contains(out, "installed:") {
		t.Errorf("refused install: exit %d, stdout %q", code, out)
	}
	code, out, stderr = runScript("GO_FAKE_OK=1")
	if code != 0 || !strings.Contains(out, "installed: idleclaw 9.9.9 at "+gopath+"/bin/idleclaw") {
		t.Errorf("install: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
