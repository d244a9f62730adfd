package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryFlag: each flag that serve, contribute, consume
// and status take has its row or mention in the README, so that a flag
// added without documentation fails here.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagRE := regexp.MustCompile(`(?m)^\s+(--[a-z0-9-]+)`)
	for _, cmd := range []string{"serve", "contribute", "consume", "status"} {
		_, out, errOut := run(t, "", cmd, "--help")
		help := out + errOut
		flags := flagRE.FindAllStringSubmatch(help, -1)
		if len(flags) < 3 {
			t.Fatalf("%s --help lists %d flags:\n%s", cmd, len(flags), help)
		}
		for _, f := range flags {
			if f[1] == "--help" {
				continue
			}
			if !strings.Contains(string(readme), "`"+f[1]+"`") && !strings.Contains(string(readme), "`"+f[1]+" ") {
				t.Errorf("README does not document %s %s", cmd, f[1])
			}
		}
	}
}
