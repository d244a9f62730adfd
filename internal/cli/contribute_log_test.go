package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// TestContributePrintsEachEventOnce: by default contribute prints its human
// lines on stdout and no structured log on stderr (each event once);
// -v, --verbose or --log-level turn the logs on.
func TestContributePrintsEachEventOnce(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}}})
	defer ollama.Close()
	base := routerBase(t, start(t, "serve", "--listen", "127.0.0.1:0", "--records", "none"))
	for _, tc := range []struct {
		flags []string
		logs  bool
	}{
		{nil, false},
		{[]string{"-v"}, true},
		{[]string{"--verbose"}, true},
		{[]string{"--log-level", "info"}, true},
	} {
		node := start(t, append([]string{"contribute", "--server", base, "--ollama", ollama.URL, "--identity", "none", "--control", "none"}, tc.flags...)...)
		waitFor(t, "connected line", 10*time.Second, func() bool { return strings.Contains(node.out.String(), "connected to the router") })
		if code := node.stop(t); code != 0 {
			t.Fatalf("%v: exit %d", tc.flags, code)
		}
		stderr := node.errOut.String()
		if got := strings.Contains(stderr, `msg="registered with the router"`); got != tc.logs {
			t.Errorf("%v: structured logs on stderr = %v, want %v:\n%s", tc.flags, got, tc.logs, stderr)
		}
		if !tc.logs && stderr != "" {
			t.Errorf("default: stderr %q, want nothing", stderr)
		}
	}
}
