package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {10, 1}, {1, 1}, {90, 9}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%g = %d, want %d", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty percentile")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		line  string
		sse   bool
		kind  lineKind
		count int64
	}{
		{`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"delta":{"content":" xxx"},"index":0}]}` + "\n", true, lineToken, 0},
		{`data: {"id":"c","choices":[{"delta":{"content":"hm","reasoning":true},"index":0}]}` + "\n", true, lineOther, 0},
		{`data: {"id":"c","choices":[{"delta":{"content":"\n\n[Error: the node serving this request disconnected]"},"index":0}]}` + "\n", true, lineFailed, 0},
		{`data: {"id":"c","choices":[{"delta":{},"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":42,"total_tokens":49}}` + "\n", true, lineFinal, 42},
		{`data: {"id":"c","choices":[{"delta":{},"index":0,"finish_reason":"error"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}` + "\n", true, lineFailed, 0},
		{"data: [DONE]\n", true, lineOther, 0},
		{": ping\n", true, lineOther, 0},
		{"\n", true, lineOther, 0},
		{`{"model":"m","created_at":"t","message":{"role":"assistant","content":"Once"},"done":false}` + "\n", false, lineToken, 0},
		{`{"model":"m","created_at":"t","message":{"role":"assistant","content":"","thinking":"x"},"done":false}` + "\n", false, lineOther, 0},
		{`{"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"eval_count":17}` + "\n", false, lineFinal, 17},
		{`{"error":"boom"}` + "\n", false, lineFailed, 0},
	} {
		kind, count := classify([]byte(tc.line), tc.sse)
		if kind != tc.kind || count != tc.count {
			t.Errorf("classify(%q) = %d, %d; want %d, %d", tc.line, kind, count, tc.kind, tc.count)
		}
	}
}

func TestParseFakePrompt(t *testing.T) {
	r := parseFakePrompt(fakePrompt(3, 5, 20*time.Millisecond))
	if len(r.Tokens) != 3 || r.Tokens[0] != " xxxx" || r.Delay != 20*time.Millisecond {
		t.Fatalf("reply %+v", r)
	}
	if r := parseFakePrompt("hello"); len(r.Tokens) != 1 || r.Delay != 0 {
		t.Fatalf("default reply %+v", r)
	}
	if r := parseFakePrompt("bench tokens=-1 bytes=999999 interval=bad"); len(r.Tokens) != 1 || len(r.Tokens[0]) != 4 {
		t.Fatalf("bad values were not ignored: %+v", r)
	}
}

func TestArrivals(t *testing.T) {
	var a arrivals
	prompt := fakePrompt(3, 5, 20*time.Millisecond) + tagPlaceholder
	body := directBody(benchModel, prompt, nil)
	var tags []uint64
	for range 2 {
		tagged, id := a.tag(body)
		if id == 0 || len(tagged) != len(body) || !json.Valid(tagged) || bytes.Contains(tagged, []byte(tagPlaceholder)) {
			t.Fatalf("tag %d: %s", id, tagged)
		}
		var req struct{ Messages []struct{ Content string } }
		if err := json.Unmarshal(tagged, &req); err != nil {
			t.Fatal(err)
		}
		base, got := untag(req.Messages[len(req.Messages)-1].Content)
		if base != prompt[:len(prompt)-len(tagPlaceholder)] || got != id {
			t.Fatalf("untag returned %q, %d; want the prompt and %d", base, got, id)
		}
		now := time.Now()
		a.note(got, now, 20*time.Millisecond)
		arr, ok := a.take(id)
		if !ok || !arr.at.Equal(now) || arr.due.Sub(arr.at) != 20*time.Millisecond {
			t.Fatalf("take(%d) = %+v, %v", id, arr, ok)
		}
		if _, ok := a.take(id); ok {
			t.Fatalf("take(%d) twice", id)
		}
		tags = append(tags, id)
	}
	if tags[0] == tags[1] {
		t.Fatalf("two requests got tag %d", tags[0])
	}
	// The fake Ollama notes a tagged request on its way in, its first
	// token due one interval after, and answers the untagged prompt.
	f := &fakeOllama{replies: map[string]ollamatest.Reply{}}
	tagged, id := f.arrivals.tag(body)
	var req struct{ Messages []ollamatest.Message }
	if err := json.Unmarshal(tagged, &req); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	rep := f.respond(ollamatest.ChatRequest{Messages: req.Messages})
	arr, ok := f.arrivals.take(id)
	if !ok || arr.at.Before(before) || arr.due.Sub(arr.at) != 20*time.Millisecond || rep.Delay != 20*time.Millisecond || len(rep.Tokens) != 3 {
		t.Fatalf("respond: reply delay %v, %d tokens; arrival %+v noted %v", rep.Delay, len(rep.Tokens), arr, ok)
	}
	if b, id := a.tag([]byte(`{"untagged":true}`)); id != 0 || string(b) != `{"untagged":true}` {
		t.Fatalf("untagged body: %s, %d", b, id)
	}
	for _, p := range []string{"hello", "x" + tagField + "12", "x" + tagField + "0000000000000000000x"} {
		if got, id := untag(p); got != p || id != 0 {
			t.Errorf("untag(%q) = %q, %d; want it unchanged, 0", p, got, id)
		}
	}
	if _, ok := (*arrivals)(nil).take(1); ok {
		t.Error("a nil arrivals took a tag")
	}
}

func TestAddrWatcher(t *testing.T) {
	found := make(chan string, 1)
	w := &addrWatcher{found: found}
	for _, s := range []string{"=== RUN x\nidleclaw router listen", "ing on http://127.0.0.1:4242\n", "later\n"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case a := <-found:
		if a != "127.0.0.1:4242" {
			t.Fatalf("address %q", a)
		}
	default:
		t.Fatal("no address found")
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 150000: "150,000", 1234567.4: "1,234,567", -4200: "-4,200"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

// sampleReport is a full report with made-up figures.
func sampleReport() *Report {
	side := func(ttft, itl, tps float64) Side {
		return Side{Streams: 1, Requests: 10, Tokens: 500, Seconds: 1, TTFTP50MS: ttft, TTFTP99MS: 2 * ttft,
			ITLP50MS: itl, ITLP99MS: 2 * itl, TokensPerSec: tps, RequestsPerSec: 10}
	}
	r := &Report{
		Machine: Machine{CPUs: 2, Go: "go1.26"},
		Nodes: &NodeSweep{BaseRSSMB: 10, BaseGoroutines: 10, Points: []NodePoint{
			{Nodes: 10, RSSMB: 10.5, RSSPerNodeKB: 51, Goroutines: 30, GoroutinesPerNode: 2},
			{Nodes: 1000, RSSMB: 50, RSSPerNodeKB: 41, Goroutines: 2010, GoroutinesPerNode: 2},
			{Nodes: 10000, RSSMB: 400, RSSPerNodeKB: 40, Goroutines: 20010, GoroutinesPerNode: 2},
		}},
	}
	for _, m := range []int{10, 100, 1000, 5000} {
		r.Streams = append(r.Streams, StreamPoint{Workload: WorkloadLatency, Streams: m, Nodes: m/10 + 1, Tokens: 50, IntervalMS: 20,
			Direct: side(20, 20, float64(m)*50), Network: side(20.5, 20.1, float64(m)*50),
			AddedTTFTP50MS: 0.5, AddedTTFTP99MS: 1, AddedITLP50MS: 0.1, AddedITLP99MS: 0.2,
			RouterCPUPerMTokens: 8, RouterRSSIdleMB: 12, RouterRSSPeakMB: 12 + float64(m)*0.07, RSSPerStreamKB: 70,
			GoroutinesIdle: 20, GoroutinesActive: 20 + 2*m, GoroutinesPerStream: 2})
	}
	r.Throughput = []StreamPoint{
		{Workload: WorkloadThroughput, Streams: 32, Direct: side(1, 0.01, 200000), Network: side(3, 0.01, 90000), RouterCPUPerMTokens: 9},
		{Workload: WorkloadRelay, Streams: 32, Direct: side(1, 0.01, 200000), Network: side(2, 0.01, 160000), RouterCPUPerMTokens: 6},
	}
	r.Ollama = &OllamaPoint{Model: "stories", Direct: side(5, 1, 900), Network: side(6, 1, 890), Ratio: 0.99}
	r.Budget = Evaluate(r)
	return r
}

func TestEvaluate(t *testing.T) {
	r := sampleReport()
	status := map[string]string{}
	for _, c := range r.Budget {
		status[c.Figure] = c.Status
	}
	for fig, want := range map[string]string{
		"added time to first token p50, 1,000 streams":           "pass",
		"relay throughput through one router (protocol nodes)":   "pass",
		"router memory, 10,000 idle nodes":                       "pass",
		"router memory, 5,000 concurrent streams":                "pass",
		"real tiny model: tokens/s through the network ÷ direct": "pass",
		"linear in N: memory per idle node":                      "pass",
		"linear in M: router CPU per token":                      "pass",
	} {
		if status[fig] != want {
			t.Errorf("%s: %q, want %q (all: %v)", fig, status[fig], want, status)
		}
	}
	r.Streams[2].AddedTTFTP99MS = 9
	r.Nodes.Points[2].RSSMB = 600
	r.Ollama.Ratio = 0.9
	status = map[string]string{}
	for _, c := range Evaluate(r) {
		status[c.Figure] = c.Status
	}
	for _, fig := range []string{"added time to first token p99, 1,000 streams", "router memory, 10,000 idle nodes", "real tiny model: tokens/s through the network ÷ direct"} {
		if status[fig] != "miss" {
			t.Errorf("%s: %q, want miss", fig, status[fig])
		}
	}
	if s := Evaluate(&Report{}); len(s) == 0 || s[0].Status != "not run" {
		t.Errorf("empty report: %+v", s)
	}
}

func TestWriters(t *testing.T) {
	r := sampleReport()
	var text bytes.Buffer
	if err := WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"idle nodes", "latency workload", "no-delay workloads", "real Ollama stories", "budget", "150,000 tokens/s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Streams) != 4 || back.Nodes.Points[2].Nodes != 10000 || back.Ollama.Ratio != 0.99 {
		t.Errorf("JSON round trip lost data: %+v", back)
	}
	var img bytes.Buffer
	if err := WritePNG(&img, r); err != nil {
		t.Fatal(err)
	}
	m, err := png.Decode(&img)
	if err != nil {
		t.Fatal(err)
	}
	if b := m.Bounds(); b.Dx() != chartCols*panelW || b.Dy() != headerH+3*panelH {
		t.Errorf("chart size %v", b)
	}
	// An empty report still draws (every panel says it has no data).
	if err := WritePNG(&bytes.Buffer{}, &Report{}); err != nil {
		t.Fatal(err)
	}
}

func TestNiceStepAndCompact(t *testing.T) {
	for raw, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 120: 200} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 0.5: "0.5", 1500: "1.5k", 150000: "150k", 2e6: "2M", -1: "-1"} {
		if got := compact(v); got != want {
			t.Errorf("compact(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSplitTableShowsMissingSplit(t *testing.T) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	split := Side{TTFTInP50MS: 0.5, TTFTInP99MS: 1, TTFTBackP50MS: 0.25, TTFTBackP99MS: 2}
	splitTable(tw, []StreamPoint{
		{Workload: WorkloadLatency, Streams: 10, Direct: split, Network: split},
		{Workload: WorkloadLatency, Streams: 20, Direct: split},  // no tagged request came back through the network
		{Workload: WorkloadLatency, Streams: 30, Network: split}, // nor directly
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "0.50 / 0.50 / +0.00") {
		t.Fatalf("table:\n%s", b.String())
	}
	for _, l := range lines[2:] {
		if f := strings.Fields(l); len(f) != 6 || f[2] != "-" || f[5] != "-" {
			t.Errorf("a point without a split shows %q, want dashes", l)
		}
	}
}

func TestTextBytes(t *testing.T) {
	for _, c := range []struct {
		line string
		sse  bool
		want int
	}{
		{`{"model":"m","message":{"role":"assistant","content":" xxx xxx xxx"},"done":false}`, false, 12},
		{`{"model":"m","message":{"role":"assistant","content":"a\"b"},"done":false}`, false, 3},
		{`{"model":"m","done":true}`, false, 0},
		{`data: {"choices":[{"delta":{"content":" xxx xxx"}}]}`, true, 8},
	} {
		if got := textBytes([]byte(c.line), c.sse); got != c.want {
			t.Errorf("textBytes(%s) = %d, want %d", c.line, got, c.want)
		}
	}
}
