package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// shellWords splits one printed command line as a shell would: words, a
// double-quoted word, a trailing # comment dropped.
func shellWords(line string) []string {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	var words []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		if line[0] == '"' {
			end := strings.IndexByte(line[1:], '"') + 1
			words = append(words, line[1:end])
			line = line[end+1:]
			continue
		}
		w, rest, _ := strings.Cut(line, " ")
		words = append(words, w)
		line = rest
	}
	return words
}

// TestServePrintsNextSteps: serve prints the contribute, consume and status
// commands for its own address, and they work as printed: the whole network
// in three terminals.
func TestServePrintsNextSteps(t *testing.T) {
	ollama := ollamatest.NewServer(ollamatest.Config{
		Models: []ollamatest.Model{{Name: "stories:latest", Size: 1_185_376}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"Once", " upon"}}
		},
	})
	defer ollama.Close()
	router := start(t, "serve", "--listen", "127.0.0.1:0", "--records", "none")
	base := routerBase(t, router)
	cmds := map[string][]string{}
	waitFor(t, "next steps", 10*time.Second, func() bool {
		for _, line := range strings.Split(router.out.String(), "\n") {
			if w := shellWords(line); len(w) > 1 && w[0] == "idleclaw" {
				cmds[w[1]] = w[2:]
			}
		}
		return cmds["contribute"] != nil && cmds["consume"] != nil && cmds["status"] != nil
	})
	delete(cmds, "router") // the "idleclaw router listening on" line
	for name, args := range cmds {
		if !strings.Contains(strings.Join(args, " "), "--server "+base) {
			t.Errorf("%s line %q does not name the router %s", name, args, base)
		}
	}
	start(t, append(append([]string{"contribute"}, cmds["contribute"]...), "--ollama", ollama.URL, "--identity", "none", "--control", "none")...)
	waitFor(t, "node registration", 10*time.Second, func() bool {
		code, out, _ := run(t, "", append([]string{"status"}, cmds["status"]...)...)
		return code == 0 && strings.Contains(out, "stories:latest")
	})
	code, out, stderr := run(t, "", append([]string{"consume"}, cmds["consume"]...)...)
	if code != 0 || out != "Once upon\n" {
		t.Fatalf("the printed consume: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
