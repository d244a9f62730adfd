package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Check is one figure of the budget against its target.
type Check struct {
	Figure   string  `json:"figure"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Target   string  `json:"target"`
	// Status is "pass", "miss", "info" (no target) or "not run".
	Status string `json:"status"`
}

// Budget targets (issue 3), on a 2-core machine with the load generator on
// the same machine.
const (
	budgetStreams        = 1000
	budgetAddedTTFTP50   = 1.0 // ms
	budgetAddedTTFTP99   = 5.0
	budgetAddedITLP50    = 0.2
	budgetAddedITLP99    = 2.0
	budgetThroughput     = 150_000 // tokens/s
	budgetIdleNodes      = 10_000
	budgetIdleNodesMB    = 500
	budgetMaxStreams     = 5000
	budgetMaxStreamsMB   = 1024 // 1 GB, in MiB like every MB here
	budgetOllamaRatio    = 0.97
	budgetLinearMaxRatio = 1.25 // per-unit cost at the largest size ÷ at the one before
)

// Evaluate checks a report against the budget.
func Evaluate(r *Report) []Check {
	var out []Check
	add := func(figure, target string, value float64, measured string, ok bool, ran bool) {
		c := Check{Figure: figure, Target: target, Value: value, Measured: measured}
		switch {
		case !ran:
			c.Status, c.Measured, c.Value = "not run", "-", 0
		case target == "":
			c.Status, c.Target = "info", "-"
		case ok:
			c.Status = "pass"
		default:
			c.Status = "miss"
		}
		out = append(out, c)
	}
	at := findStreams(r.Streams, budgetStreams)
	latency := func(figure string, limit float64, get func(StreamPoint) float64) {
		v := 0.0
		if at != nil {
			v = get(*at)
		}
		add(figure+", 1,000 streams", fmt.Sprintf("≤ %g ms", limit), v, fmt.Sprintf("%+.3f ms", v), v <= limit, at != nil)
	}
	latency("added time to first token p50", budgetAddedTTFTP50, func(p StreamPoint) float64 { return p.AddedTTFTP50MS })
	latency("added time to first token p99", budgetAddedTTFTP99, func(p StreamPoint) float64 { return p.AddedTTFTP99MS })
	latency("added inter-token delay p50", budgetAddedITLP50, func(p StreamPoint) float64 { return p.AddedITLP50MS })
	latency("added inter-token delay p99", budgetAddedITLP99, func(p StreamPoint) float64 { return p.AddedITLP99MS })

	best := func(workload string) *StreamPoint {
		var b *StreamPoint
		for i := range r.Throughput {
			p := &r.Throughput[i]
			if p.Workload == workload && (b == nil || p.Network.TokensPerSec > b.Network.TokensPerSec) {
				b = p
			}
		}
		return b
	}
	if relay := best(WorkloadRelay); relay != nil {
		add("relay throughput through one router (protocol nodes)", "≥ 150,000 tokens/s", relay.Network.TokensPerSec,
			fmt.Sprintf("%s tokens/s (%d streams)", thousands(relay.Network.TokensPerSec), relay.Streams),
			relay.Network.TokensPerSec >= budgetThroughput, true)
		add("router CPU per million relayed tokens (relay)", "", relay.RouterCPUPerMTokens,
			fmt.Sprintf("%.2f CPU s", relay.RouterCPUPerMTokens), true, true)
	} else {
		add("relay throughput through one router (protocol nodes)", "≥ 150,000 tokens/s", 0, "", false, false)
	}
	if tp := best(WorkloadThroughput); tp != nil {
		add("throughput with real node agents and the fake Ollama", "", tp.Network.TokensPerSec,
			fmt.Sprintf("%s tokens/s (%d streams; direct %s)", thousands(tp.Network.TokensPerSec), tp.Streams, thousands(tp.Direct.TokensPerSec)), true, true)
		add("router CPU per million relayed tokens (throughput)", "", tp.RouterCPUPerMTokens,
			fmt.Sprintf("%.2f CPU s", tp.RouterCPUPerMTokens), true, true)
	}
	if at != nil {
		add("router CPU per million relayed tokens, 1,000 streams", "", at.RouterCPUPerMTokens,
			fmt.Sprintf("%.2f CPU s", at.RouterCPUPerMTokens), true, true)
	}

	var nodes []NodePoint
	if r.Nodes != nil {
		nodes = r.Nodes.Points
	}
	np := findNodes(nodes, budgetIdleNodes)
	if np != nil {
		add("router memory, 10,000 idle nodes", "≤ 500 MB", np.RSSMB, fmt.Sprintf("%.0f MB (%.1f KB/node)", np.RSSMB, np.RSSPerNodeKB),
			np.RSSMB <= budgetIdleNodesMB, true)
	} else {
		add("router memory, 10,000 idle nodes", "≤ 500 MB", 0, "", false, false)
	}
	sp := findStreams(r.Streams, budgetMaxStreams)
	if sp != nil {
		add("router memory, 5,000 concurrent streams", "≤ 1 GB", sp.RouterRSSPeakMB,
			fmt.Sprintf("%.0f MB (%.1f KB/stream)", sp.RouterRSSPeakMB, sp.RSSPerStreamKB), sp.RouterRSSPeakMB <= budgetMaxStreamsMB, true)
	} else {
		add("router memory, 5,000 concurrent streams", "≤ 1 GB", 0, "", false, false)
	}
	if o := r.Ollama; o != nil {
		add("real tiny model: tokens/s through the network ÷ direct", "≥ 97%", o.Ratio, fmt.Sprintf("%.1f%%", 100*o.Ratio),
			o.Ratio >= budgetOllamaRatio, true)
	} else {
		add("real tiny model: tokens/s through the network ÷ direct", "≥ 97%", 0, "", false, false)
	}

	// Linear growth: the cost per unit at the largest size is not more
	// than budgetLinearMaxRatio times the cost per unit at the size before.
	linear := func(figure string, sizes []int, per []float64, unit string) {
		if len(per) < 2 {
			add(figure, "", 0, "", false, false)
			return
		}
		a, b := per[len(per)-2], per[len(per)-1]
		ratio := 0.0
		if a > 0 {
			ratio = b / a
		}
		add(figure, fmt.Sprintf("≤ %.2f×", budgetLinearMaxRatio), ratio,
			fmt.Sprintf("%.2f× (%.3g → %.3g %s, %d → %d)", ratio, a, b, unit, sizes[len(sizes)-2], sizes[len(sizes)-1]),
			a > 0 && ratio <= budgetLinearMaxRatio, true)
	}
	var ns []int
	var nRSS, nG []float64
	for _, p := range nodes {
		ns = append(ns, p.Nodes)
		nRSS = append(nRSS, p.RSSPerNodeKB)
		nG = append(nG, p.GoroutinesPerNode)
	}
	linear("linear in N: memory per idle node", ns, nRSS, "KB")
	linear("linear in N: goroutines per idle node", ns, nG, "")
	var mSizes []int
	var mRSS, mCPU, mG []float64
	for _, p := range r.Streams {
		mSizes = append(mSizes, p.Streams)
		mRSS = append(mRSS, p.RSSPerStreamKB)
		mCPU = append(mCPU, p.RouterCPUPerMTokens)
		mG = append(mG, p.GoroutinesPerStream)
	}
	linear("linear in M: memory per stream", mSizes, mRSS, "KB")
	linear("linear in M: goroutines per stream", mSizes, mG, "")
	linear("linear in M: router CPU per token", mSizes, mCPU, "s/M tokens")
	return out
}

func findStreams(ps []StreamPoint, m int) *StreamPoint {
	for i := range ps {
		if ps[i].Streams == m {
			return &ps[i]
		}
	}
	return nil
}

func findNodes(ps []NodePoint, n int) *NodePoint {
	for i := range ps {
		if ps[i].Nodes == n {
			return &ps[i]
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as tables for people.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %.1f GiB, Linux %s, %s; load average %.2f at start, %.2f at end; %.0fs\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go, m.LoadStart, m.LoadEnd, r.Seconds)
	if r.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", r.Command)
	}
	fmt.Fprintf(&b, "loopback round trip between two threads: %.0f µs p50, %.0f µs p99 back to back; %.0f µs p50, %.0f µs p99 after 10 ms idle\n",
		m.Hop.BusyP50US, m.Hop.BusyP99US, m.Hop.IdleP50US, m.Hop.IdleP99US)
	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(&b, 2, 0, 2, ' ', tabwriter.AlignRight) }

	if r.Nodes != nil && len(r.Nodes.Points) > 0 {
		fmt.Fprintf(&b, "\nidle nodes (light nodes on the real WebSocket protocol: register, heartbeat); router at rest %.1f MB, %d goroutines\n",
			r.Nodes.BaseRSSMB, r.Nodes.BaseGoroutines)
		t := tw()
		fmt.Fprintln(t, "nodes\tRSS MB\tKB/node\tgoroutines\tper node\tconnect s\trouter CPU s\t")
		for _, p := range r.Nodes.Points {
			fmt.Fprintf(t, "%d\t%.1f\t%.1f\t%d\t%.2f\t%.2f\t%.2f\t\n", p.Nodes, p.RSSMB, p.RSSPerNodeKB, p.Goroutines, p.GoroutinesPerNode, p.ConnectSeconds, p.ConnectCPUS)
		}
		t.Flush()
	}
	if len(r.Peers) > 0 {
		fmt.Fprintf(&b, "\npeers: the same NDJSON workload interleaved on three paths, medians of %d round(s): direct to the fake Ollama; floor = two plain Go reverse proxies in a chain, a process each; network = router and node agents (one process) on /ollama/api/chat. Added over direct; relay CPU = the relay processes' over the window (floor: both proxies; network: router + agents)\n",
			r.Peers[0].Rounds)
		t := tw()
		peersTable(t, r.Peers)
		t.Flush()
	}
	if len(r.Streams) > 0 {
		s := r.Settings
		fmt.Fprintf(&b, "\nconcurrent streams, latency workload (real node agents; %d tokens of %d bytes per answer, %.0f ms apart, at most %d tokens/s in all); ms: direct / network / added\n",
			s.Tokens, s.TokenBytes, s.IntervalMS, s.MaxRate)
		latencyTable(tw(), r.Streams)
		fmt.Fprintln(&b, "\ntime to first token, split: way in = the consumer sends → Ollama has the request; way back = Ollama's first token is due (arrival + interval) → the consumer has it; ms: direct / network / added")
		splitTable(tw(), r.Streams)
	}
	if len(r.Throughput) > 0 {
		fmt.Fprintf(&b, "\nno-delay workloads (%d tokens of %d bytes per answer): throughput = real node agents and the fake Ollama; relay = protocol nodes making tokens themselves (router-bound); ms: direct / network / added\n",
			r.Settings.ThroughputTokens, r.Settings.TokenBytes)
		latencyTable(tw(), r.Throughput)
	}
	if all := append(append([]StreamPoint{}, r.Streams...), r.Throughput...); len(all) > 0 {
		fmt.Fprintln(&b, "\nrouter process during the network window")
		t := tw()
		fmt.Fprintln(t, "workload\tstreams\tnodes\tCPU s\tCPU s/M tokens\tRSS idle MB\tRSS peak MB\tKB/stream\tgoroutines idle\tactive\tper stream\tload-gen CPU s\t")
		for _, p := range all {
			fmt.Fprintf(t, "%s\t%d\t%d\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%.2f\t%.2f\t\n", p.Workload, p.Streams, p.Nodes,
				p.RouterCPUS, p.RouterCPUPerMTokens, p.RouterRSSIdleMB, p.RouterRSSPeakMB, p.RSSPerStreamKB,
				p.GoroutinesIdle, p.GoroutinesActive, p.GoroutinesPerStream, p.Network.LoadGenCPU)
		}
		t.Flush()
	}
	if o := r.Ollama; o != nil {
		fmt.Fprintf(&b, "\nreal Ollama %s (%s): %d consumers, %d requests per round on each path, %d rounds, num_predict %d\n",
			o.Model, o.URL, o.Streams, o.Requests, o.Rounds, o.Predict)
		t := tw()
		fmt.Fprintln(t, "path\trequests\terrors\tmodel tokens\tseconds\tmodel tokens/s\tTTFT p50\tTTFT p99\tITL p50\tITL p99\t")
		for _, x := range []struct {
			name string
			s    Side
		}{{"direct", o.Direct}, {"network", o.Network}} {
			tps := 0.0
			if x.s.Seconds > 0 {
				tps = float64(x.s.ModelTokens) / x.s.Seconds
			}
			fmt.Fprintf(t, "%s\t%d\t%d\t%d\t%.2f\t%.1f\t%.2f\t%.2f\t%.3f\t%.3f\t\n", x.name, x.s.Requests, x.s.Errors, x.s.ModelTokens,
				x.s.Seconds, tps, x.s.TTFTP50MS, x.s.TTFTP99MS, x.s.ITLP50MS, x.s.ITLP99MS)
		}
		t.Flush()
		fmt.Fprintf(&b, "network ÷ direct: %.1f%%\n", 100*o.Ratio)
	}
	fmt.Fprintln(&b, "\nbudget")
	t := tabwriter.NewWriter(&b, 2, 0, 2, ' ', 0)
	fmt.Fprintln(t, "figure\tmeasured\ttarget\tresult")
	for _, c := range r.Budget {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", c.Figure, c.Measured, c.Target, c.Status)
	}
	t.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}

// splitTable shows where each point's time to first token went.
func splitTable(t *tabwriter.Writer, ps []StreamPoint) {
	fmt.Fprintln(t, "workload\tstreams\tway in p50\tway in p99\tway back p50\tway back p99\t")
	for _, p := range ps {
		if p.Direct.TTFTInP50MS == 0 || p.Network.TTFTInP50MS == 0 {
			// No tagged request came back on one of the paths (for example
			// a router that rewrote the prompt): no split, not a zero.
			fmt.Fprintf(t, "%s\t%d\t-\t-\t-\t-\t\n", p.Workload, p.Streams)
			continue
		}
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%s\t\n", p.Workload, p.Streams,
			tri(p.Direct.TTFTInP50MS, p.Network.TTFTInP50MS), tri(p.Direct.TTFTInP99MS, p.Network.TTFTInP99MS),
			tri(p.Direct.TTFTBackP50MS, p.Network.TTFTBackP50MS), tri(p.Direct.TTFTBackP99MS, p.Network.TTFTBackP99MS))
	}
	t.Flush()
}

func latencyTable(t *tabwriter.Writer, ps []StreamPoint) {
	fmt.Fprintln(t, "workload\tstreams\tnodes\tinterval ms\tTTFT p50\tTTFT p99\tITL p50\tITL p99\ttokens/s direct\tnetwork\treq/s direct\tnetwork\terrors\t")
	for _, p := range ps {
		fmt.Fprintf(t, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%d / %d\t\n", p.Workload, p.Streams, p.Nodes, p.IntervalMS,
			tri(p.Direct.TTFTP50MS, p.Network.TTFTP50MS), tri(p.Direct.TTFTP99MS, p.Network.TTFTP99MS),
			tri3(p.Direct.ITLP50MS, p.Network.ITLP50MS), tri3(p.Direct.ITLP99MS, p.Network.ITLP99MS),
			thousands(p.Direct.TokensPerSec), thousands(p.Network.TokensPerSec),
			p.Direct.RequestsPerSec, p.Network.RequestsPerSec, p.Direct.Errors, p.Network.Errors)
	}
	t.Flush()
}

// tri shows a figure as direct / network / added, in ms to 0.01; tri3 to
// 0.001 ms (inter-token delays).
func tri(d, n float64) string  { return fmt.Sprintf("%.2f / %.2f / %+.2f", d, n, n-d) }
func tri3(d, n float64) string { return fmt.Sprintf("%.3f / %.3f / %+.3f", d, n, n-d) }

// thousands formats a rate with thousands separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
