package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// FuzzDecodeChatRequest: DecodeChatRequest never panics, refuses with 422
// only, and whatever it accepts is within the protocol's limits.
func FuzzDecodeChatRequest(f *testing.F) {
	seeds := []string{
		`{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}],"think":false}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"é日本\u2028\ud83d\ude00"}],"options":{"temperature":0.5,"stop":["a"]}}`,
		`{"model":"m","messages":[{"role":"system","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"tool","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":""}]}`,
		`{"model":"m","messages":[]}`,
		`{"model":"","messages":[{"role":"user","content":"x"}]}`,
		`{"model":"a b","messages":[{"role":"user","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"think":"yes"}`,
		`{"model":"m","messages":null}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"model":"n"}`,
		`{"Model":"m","MESSAGES":[{"Role":"user","Content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"options":{"stop":["1","2","3","4","5","6","7","8","9"]}}`,
		`[]`, `null`, `{`, ``, `"x"`, `{"model":5}`,
		`{"model":"` + strings.Repeat("m", 65) + `","messages":[{"role":"user","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("é", 10_001) + `"}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	lim := Limits{MaxMessages: wire.MaxMessages, MaxMessageLength: wire.MaxMessageChars, MaxTotalChars: wire.MaxTotalChars}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, rerr := DecodeChatRequest(body, lim)
		if rerr != nil {
			if rerr.Status != http.StatusUnprocessableEntity || rerr.Detail == "" {
				t.Fatalf("refused with %d %q, want 422 and a detail", rerr.Status, rerr.Detail)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if n := utf8.RuneCountInString(req.Model); n < 1 || n > 64 || !wire.ValidModelName(req.Model) {
			t.Fatalf("accepted model %q", req.Model)
		}
		if n := len(req.Messages); n < 1 || n > 50 {
			t.Fatalf("accepted %d messages", n)
		}
		total := 0
		for i, m := range req.Messages {
			if m.Role != "user" && m.Role != "assistant" {
				t.Fatalf("accepted role %q", m.Role)
			}
			n := utf8.RuneCountInString(m.Content)
			if n < 1 || n > 10_000 {
				t.Fatalf("accepted message %d of %d characters", i, n)
			}
			total += n
		}
		if total > 100_000 {
			t.Fatalf("accepted %d characters in total", total)
		}
		// What was accepted can be forwarded: it fits the limits a node
		// enforces too.
		if wire.NormalizeModel(req.Model) == "" {
			t.Fatalf("model %q normalizes to nothing", req.Model)
		}
	})
}
