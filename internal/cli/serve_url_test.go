package cli

import (
	"strings"
	"testing"
)

// TestCheckHTTPURL: the URL flags of serve take an http(s) URL with a
// host; --public-url in particular is shown to the other routers, which
// drop one with spaces or control characters, so serve refuses it at
// start instead.
func TestCheckHTTPURL(t *testing.T) {
	for _, ok := range []string{"http://r1.example", "https://r1.example:8443/idleclaw", "http://127.0.0.1:9000"} {
		if err := checkHTTPURL("public-url", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"ftp://x", "http://", "http:///path", "http://x/a b", "http://x/\x1b[2J", "https://x/\u200b", "http://x/\xff",
		"http://x/" + strings.Repeat("a", 512), "r1.example"} {
		if err := checkHTTPURL("public-url", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if code, _, errOut := run(t, "", "serve", "--public-url", "http://x/a b"); code != 2 || !strings.Contains(errOut, "--public-url") {
		t.Errorf("serve --public-url with a space: exit %d, %q", code, errOut)
	}
}
