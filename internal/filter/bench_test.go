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

// renderBenchText is an ordinary answer: prose, a list, inline code, a
// link, maths with < and >, and a fenced code block with HTML in it.
var renderBenchText = strings.Repeat(benchText, 4) +
	"\n\n- Use `List<String>` for names, and a map for the rest.\n" +
	"- See the [docs](https://go.dev/doc/) for details; note that a<b and c>d.\n\n" +
	"```html\n<script src=\"app.js\"></script>\n<img src=\"logo.png\" onerror=\"x()\">\n```\n\n" +
	"That is all. 你好，世界！ 👍\n"

// BenchmarkRender streams an ordinary answer through a Render in 4-byte
// chunks, like a model's tokens (Push per chunk, Flush at the end). One op
// is the whole answer.
func BenchmarkRender(b *testing.B) {
	chunks := tokens(renderBenchText, 4)
	r := NewRender()
	b.SetBytes(int64(len(renderBenchText)))
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		for _, c := range chunks {
			_ = r.Push(c)
		}
		_ = r.Flush()
	}
}

// BenchmarkRenderWhole: the same answer in one Push.
func BenchmarkRenderWhole(b *testing.B) {
	b.SetBytes(int64(len(renderBenchText)))
	b.ReportAllocs()
	reportCPU(b)
	r := NewRender()
	for b.Loop() {
		_ = r.Push(renderBenchText)
		_ = r.Flush()
	}
}

// BenchmarkRenderHostile: markup all the way, most of it neutralised.
func BenchmarkRenderHostile(b *testing.B) {
	text := strings.Repeat(`<img src=x onerror=alert(1)> <div onmouseover="x()">`+
		`<a href="jav&#x09;ascript:go()">do</a> ![x](http://e/x.png) [y](javascript:z) `, 8)
	chunks := tokens(text, 4)
	r := NewRender()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		for _, c := range chunks {
			_ = r.Push(c)
		}
		_ = r.Flush()
	}
}
