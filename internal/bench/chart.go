package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// WritePNG draws the report's sweeps (how each cost grows with N and M) as
// one PNG chart.
func WritePNG(w io.Writer, r *Report) error {
	return png.Encode(w, Chart(r))
}

var (
	colBlue   = color.RGBA{31, 119, 180, 255}
	colOrange = color.RGBA{255, 127, 14, 255}
	colGreen  = color.RGBA{44, 160, 44, 255}
	colPurple = color.RGBA{148, 103, 189, 255}
	colRed    = color.RGBA{214, 39, 40, 255}
	colGrid   = color.RGBA{225, 225, 225, 255}
	colAxis   = color.RGBA{90, 90, 90, 255}
	colText   = color.RGBA{20, 20, 20, 255}
)

type series struct {
	name string
	c    color.RGBA
	x, y []float64
}

type panel struct {
	title, xlabel string
	series        []series
	limit         float64 // a budget line; 0: none
	limitName     string
}

const (
	panelW, panelH = 600, 340
	chartCols      = 2
	headerH        = 34
)

// Chart draws six panels: memory and goroutines against idle nodes,
// memory and CPU per token against streams, the added latency and the
// tokens/s delivered.
func Chart(r *Report) *image.RGBA {
	var nx, nRSS, nG []float64
	if r.Nodes != nil {
		for _, p := range r.Nodes.Points {
			nx = append(nx, float64(p.Nodes))
			nRSS = append(nRSS, p.RSSMB)
			nG = append(nG, float64(p.Goroutines))
		}
	}
	var mx, mPeak, mIdle, mCPU, mG, aT50, aT99, aI50, aI99, dTPS, nTPS []float64
	for _, p := range r.Streams {
		mx = append(mx, float64(p.Streams))
		mPeak = append(mPeak, p.RouterRSSPeakMB)
		mIdle = append(mIdle, p.RouterRSSIdleMB)
		mCPU = append(mCPU, p.RouterCPUPerMTokens)
		mG = append(mG, float64(p.GoroutinesActive))
		aT50 = append(aT50, p.AddedTTFTP50MS)
		aT99 = append(aT99, p.AddedTTFTP99MS)
		aI50 = append(aI50, p.AddedITLP50MS)
		aI99 = append(aI99, p.AddedITLP99MS)
		dTPS = append(dTPS, p.Direct.TokensPerSec)
		nTPS = append(nTPS, p.Network.TokensPerSec)
	}
	var tx, tCPU, tD, tN, rx, rCPU, rN []float64
	for _, p := range r.Throughput {
		switch p.Workload {
		case WorkloadThroughput:
			tx = append(tx, float64(p.Streams))
			tCPU = append(tCPU, p.RouterCPUPerMTokens)
			tD = append(tD, p.Direct.TokensPerSec)
			tN = append(tN, p.Network.TokensPerSec)
		case WorkloadRelay:
			rx = append(rx, float64(p.Streams))
			rCPU = append(rCPU, p.RouterCPUPerMTokens)
			rN = append(rN, p.Network.TokensPerSec)
		}
	}
	panels := []panel{
		{title: "router RSS (MB) vs idle nodes", xlabel: "idle nodes (N)", limit: budgetIdleNodesMB, limitName: "budget at 10k nodes",
			series: []series{{"RSS", colBlue, nx, nRSS}}},
		{title: "router goroutines", xlabel: "idle nodes (N) / concurrent streams (M)",
			series: []series{{"vs idle nodes", colBlue, nx, nG}, {"vs streams (mid-run)", colOrange, mx, mG}}},
		{title: "router RSS (MB) vs concurrent streams", xlabel: "concurrent streams (M)", limit: budgetMaxStreamsMB, limitName: "budget at 5k streams",
			series: []series{{"peak while streaming", colBlue, mx, mPeak}, {"nodes connected, idle", colOrange, mx, mIdle}}},
		{title: "router CPU s per million tokens", xlabel: "concurrent streams (M)",
			series: []series{{"latency workload", colBlue, mx, mCPU}, {"no delay, agents", colOrange, tx, tCPU}, {"no delay, protocol nodes", colGreen, rx, rCPU}}},
		{title: "added latency (ms): network - direct", xlabel: "concurrent streams (M)",
			series: []series{{"TTFT p50", colBlue, mx, aT50}, {"TTFT p99", colOrange, mx, aT99}, {"ITL p50", colGreen, mx, aI50}, {"ITL p99", colPurple, mx, aI99}}},
		{title: "tokens/s delivered to consumers", xlabel: "concurrent streams (M)", limit: budgetThroughput, limitName: "throughput budget",
			series: []series{{"latency: direct", colBlue, mx, dTPS}, {"latency: network", colOrange, mx, nTPS},
				{"no delay: direct", colGreen, tx, tD}, {"no delay: network, agents", colPurple, tx, tN},
				{"no delay: network, protocol nodes", colRed, rx, rN}}},
	}
	rows := (len(panels) + chartCols - 1) / chartCols
	img := image.NewRGBA(image.Rect(0, 0, chartCols*panelW, headerH+rows*panelH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	m := r.Machine
	drawText(img, 10, 22, colText, fmt.Sprintf("idleclaw bench: router costs as N and M grow  (%d CPUs, %s, load %.2f)", m.CPUs, m.Go, m.LoadStart))
	for i, p := range panels {
		x0, y0 := (i%chartCols)*panelW, headerH+(i/chartCols)*panelH
		drawPanel(img, image.Rect(x0, y0, x0+panelW, y0+panelH), p)
	}
	return img
}

func drawPanel(img *image.RGBA, box image.Rectangle, p panel) {
	plot := image.Rect(box.Min.X+72, box.Min.Y+28, box.Max.X-18, box.Max.Y-42)
	drawText(img, box.Min.X+72, box.Min.Y+18, colText, p.title)
	drawText(img, (plot.Min.X+plot.Max.X)/2-textWidth(p.xlabel)/2, box.Max.Y-10, colAxis, p.xlabel)

	// Ranges: x on a log scale over whole decades, y linear from 0 (or
	// below, for negative values) to a round number above the data.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := 0.0, p.limit
	points := 0
	for _, s := range p.series {
		for i := range min(len(s.x), len(s.y)) {
			if s.x[i] <= 0 || math.IsNaN(s.y[i]) || math.IsInf(s.y[i], 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, s.x[i]), math.Max(xmax, s.x[i])
			ymin, ymax = math.Min(ymin, s.y[i]), math.Max(ymax, s.y[i])
			points++
		}
	}
	strokeRect(img, plot, colAxis)
	if points == 0 {
		drawText(img, plot.Min.X+10, plot.Min.Y+20, colAxis, "not measured in this run")
		return
	}
	lx0, lx1 := math.Floor(math.Log10(xmin)), math.Ceil(math.Log10(xmax))
	if lx1 <= lx0 {
		lx1 = lx0 + 1
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	step := niceStep((ymax - ymin) / 5)
	ylo, yhi := math.Floor(ymin/step)*step, math.Ceil(ymax*1.05/step)*step
	px := func(x float64) int {
		return plot.Min.X + int(math.Round((math.Log10(x)-lx0)/(lx1-lx0)*float64(plot.Dx())))
	}
	py := func(y float64) int {
		return plot.Max.Y - int(math.Round((y-ylo)/(yhi-ylo)*float64(plot.Dy())))
	}
	for y := ylo; y <= yhi+step/2; y += step {
		yy := py(y)
		hline(img, plot.Min.X+1, plot.Max.X-1, yy, colGrid, 0)
		label := compact(y)
		drawText(img, plot.Min.X-6-textWidth(label), yy+4, colAxis, label)
	}
	for e := lx0; e <= lx1; e++ {
		xx := px(math.Pow(10, e))
		vline(img, xx, plot.Min.Y+1, plot.Max.Y-1, colGrid)
		label := compact(math.Pow(10, e))
		drawText(img, xx-textWidth(label)/2, plot.Max.Y+16, colAxis, label)
	}
	if ylo < 0 {
		hline(img, plot.Min.X, plot.Max.X, py(0), colAxis, 0)
	}
	strokeRect(img, plot, colAxis)
	if p.limit > 0 {
		y := py(p.limit)
		hline(img, plot.Min.X, plot.Max.X, y, colRed, 6)
		drawText(img, plot.Max.X-textWidth(p.limitName)-4, y-4, colRed, p.limitName)
	}
	for _, s := range p.series {
		var prev image.Point
		have := false
		for i := range min(len(s.x), len(s.y)) {
			if s.x[i] <= 0 || math.IsNaN(s.y[i]) || math.IsInf(s.y[i], 0) {
				continue
			}
			pt := image.Pt(px(s.x[i]), py(s.y[i]))
			if have {
				line(img, prev, pt, s.c)
			}
			fillRect(img, image.Rect(pt.X-3, pt.Y-3, pt.X+4, pt.Y+4), s.c)
			prev, have = pt, true
		}
	}
	// Legend, top left inside the plot.
	ly := plot.Min.Y + 8
	for _, s := range p.series {
		if len(s.x) == 0 {
			continue
		}
		fillRect(img, image.Rect(plot.Min.X+8, ly, plot.Min.X+18, ly+10), s.c)
		drawText(img, plot.Min.X+22, ly+10, colText, s.name)
		ly += 15
	}
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// compact formats an axis value: 0.5, 20, 1.5k, 2M.
func compact(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trimFloat(v/1e6) + "M"
	case a >= 1e3:
		return trimFloat(v/1e3) + "k"
	}
	return trimFloat(v)
}

func trimFloat(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

func drawText(img *image.RGBA, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func textWidth(s string) int { return 7 * len([]rune(s)) }

func fillRect(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r.Intersect(img.Bounds()), image.NewUniform(c), image.Point{}, draw.Src)
}

func strokeRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c, 0)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c, 0)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y, c)
}

// hline draws a horizontal line, dashed when dash > 0.
func hline(img *image.RGBA, x0, x1, y int, c color.RGBA, dash int) {
	for x := x0; x <= x1; x++ {
		if dash > 0 && (x-x0)/dash%2 == 1 {
			continue
		}
		img.SetRGBA(x, y, c)
		if dash > 0 {
			img.SetRGBA(x, y+1, c)
		}
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// line draws a 2-pixel-wide segment.
func line(img *image.RGBA, a, b image.Point, c color.RGBA) {
	dx, dy := b.X-a.X, b.Y-a.Y
	n := max(abs(dx), abs(dy), 1)
	for i := 0; i <= n; i++ {
		x := a.X + dx*i/n
		y := a.Y + dy*i/n
		img.SetRGBA(x, y, c)
		img.SetRGBA(x+1, y, c)
		img.SetRGBA(x, y+1, c)
		img.SetRGBA(x+1, y+1, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
