package filter

import (
	"strings"
	"testing"
)

const benchText = "The router relays answers from community nodes to consumers. " +
	"Each token is pushed through the filter as soon as it arrives, and the " +
	"filter should hand it back at once unless it could begin a match. Good " +
	"models write plain prose, lists, and code; they rarely write markup. "

// tokens splits text into chunks of n bytes, like a model's token stream.
func tokens(text string, n int) []string {
	var out []string
	for len(text) > 0 {
		k := min(n, len(text))
		out = append(out, text[:k])
		text = text[k:]
	}
	return out
}

func benchPush(b *testing.B, patterns []string, chunks []string) {
	o := newOutbound(b, patterns)
	s := o.Stream()
	i := 0
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		_ = s.Push(chunks[i])
		i++
		if i == len(chunks) {
			i = 0
			s.Flush()
		}
	}
}

// BenchmarkStreamPushPlain is the per-token hot path: 4-byte chunks of
// ordinary English (which contains 'd' and 'j' inside words and at word
// starts) through the default outbound patterns. One op is one Push.
func BenchmarkStreamPushPlain(b *testing.B) {
	benchPush(b, DefaultOutboundPatterns(), tokens(benchText, 4))
}

// BenchmarkStreamPushNoCandidate: chunks without any byte that can start a
// match (the pure fast path).
func BenchmarkStreamPushNoCandidate(b *testing.B) {
	text := strings.NewReplacer("d", "t", "D", "T", "j", "g").Replace(benchText)
	benchPush(b, DefaultOutboundPatterns(), tokens(text, 4))
}

// BenchmarkStreamPushMarkup: a stream full of near misses and matches.
func BenchmarkStreamPushMarkup(b *testing.B) {
	text := strings.Repeat(`<b>data</b> <scroll> <script>x</script> `+
		`<a href="javascript:go()">do it</a> data:text/html `, 4)
	benchPush(b, DefaultOutboundPatterns(), tokens(text, 4))
}

func BenchmarkReplace(b *testing.B) {
	o := newOutbound(b, DefaultOutboundPatterns())
	text := strings.Repeat(benchText, 8) + "<script>alert(1)</script>"
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		_ = o.Replace(text)
	}
}
