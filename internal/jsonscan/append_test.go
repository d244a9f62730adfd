package jsonscan

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestAppendString(t *testing.T) {
	cases := []string{
		"", "plain", `"quoted"`, `back\slash`, "\x00\x01\x07\x08\x0b\x0c\x1f\x7f", "\b\f\n\r\t",
		"<script>&amp;</script>", "é ü 漢字 🦙", "\u2028\u2029", "\xff\xfe", "a\xc3", "\xed\xa0\x80",
		strings.Repeat("x", 3000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(24))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
		r := make([]rune, rng.IntN(8))
		for j := range r {
			r[j] = rune(rng.IntN(0x3000))
		}
		cases = append(cases, string(r))
	}
	for _, s := range cases {
		checkAppendString(t, s)
	}
}

// checkAppendString compares AppendString with encoding/json, in both
// modes: json.Marshal, and an Encoder that does not escape HTML.
func checkAppendString(t *testing.T, s string) {
	t.Helper()
	want, _ := json.Marshal(s)
	if got := AppendString(nil, s, true); !bytes.Equal(got, want) {
		t.Errorf("AppendString(%q, true) = %s, want %s", s, got, want)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	want = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if got := AppendString(nil, s, false); !bytes.Equal(got, want) {
		t.Errorf("AppendString(%q, false) = %s, want %s", s, got, want)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "<>&", "\u2028", "\xff", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(checkAppendString)
}

// BenchmarkAppendString measures the per-token string escaper.
func BenchmarkAppendString(b *testing.B) {
	s := strings.Repeat("Once upon a time, ", 2)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = AppendString(buf[:0], s, true)
	}
}
