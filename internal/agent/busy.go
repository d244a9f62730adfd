package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Busy settings: optional thresholds on the machine's CPU and GPU use by
// others than Ollama, held for a while before the node pauses (and below
// them for as long before it serves again), so that it does not flap.
type Busy struct {
	CPU      float64       // percent of all CPUs used by processes other than Ollama's; 0: not watched
	GPU      float64       // percent GPU use (nvidia-smi) while the node has nothing in flight; 0: not watched
	For      time.Duration // how long a level must hold before it counts (default 1m)
	Interval time.Duration // how often it is sampled (default 5s)
	ProcRoot string        // "/proc"; tests set another
	// GPUCommand reads the GPU use in percent (default: nvidia-smi).
	GPUCommand func(ctx context.Context) (float64, error)
}

func (b Busy) withDefaults() Busy {
	if b.For <= 0 {
		b.For = time.Minute
	}
	if b.Interval <= 0 {
		b.Interval = 5 * time.Second
	}
	if b.ProcRoot == "" {
		b.ProcRoot = "/proc"
	}
	if b.GPUCommand == nil {
		b.GPUCommand = nvidiaSMI
	}
	return b
}

// cpuSample is the CPU time the machine and Ollama's processes used so far.
type cpuSample struct {
	total, idle, ollama float64 // clock ticks
}

// readCPU reads /proc/stat and the CPU time of every process named ollama
// (the server and its runners): Ollama's own work is the node's or the
// owner's, which the owner monitor watches; the busy threshold is about
// everything else.
func readCPU(root string) (cpuSample, bool) {
	b, err := os.ReadFile(filepath.Join(root, "stat"))
	if err != nil {
		return cpuSample{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuSample{}, false
	}
	var s cpuSample
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		s.total += x
		if i == 3 || i == 4 { // idle, iowait
			s.idle += x
		}
	}
	dirs, _ := os.ReadDir(root)
	for _, d := range dirs {
		if !d.IsDir() || d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(root, d.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "ollama" {
			continue
		}
		st, err := os.ReadFile(filepath.Join(root, d.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: utime, stime are 12 and 13 of them.
		rest := string(st)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		pf := strings.Fields(rest)
		if len(pf) > 12 {
			u, _ := strconv.ParseFloat(pf[11], 64)
			k, _ := strconv.ParseFloat(pf[12], 64)
			s.ollama += u + k
		}
	}
	return s, true
}

// othersPercent is the share of all CPU time between two samples used by
// processes other than Ollama's.
func othersPercent(a, b cpuSample) float64 {
	total := b.total - a.total
	if total <= 0 {
		return 0
	}
	busy := (total - (b.idle - a.idle)) - (b.ollama - a.ollama)
	return max(0, min(100, 100*busy/total))
}

func nvidiaSMI(ctx context.Context) (float64, error) {
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return 0, err
	}
	hi := 0.0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if v, err := strconv.ParseFloat(strings.TrimSpace(line), 64); err == nil {
			hi = max(hi, v)
		}
	}
	return hi, nil
}

// hysteresis turns a level sampled over time into a steady verdict: it
// turns on after the level was above the threshold for the whole span, and
// off after it was at or below it for as long.
type hysteresis struct {
	span  time.Duration
	on    bool
	since time.Time // when the level last crossed to the other side of the verdict
	side  bool      // the side it is on since then
}

func (h *hysteresis) add(above bool, now time.Time) (on, changed bool) {
	if h.since.IsZero() || above != h.side {
		h.side, h.since = above, now
	}
	if h.side != h.on && now.Sub(h.since) >= h.span {
		h.on = h.side
		return h.on, true
	}
	return h.on, false
}

// watchBusy samples the machine until ctx ends and pauses the node while
// it is busy.
func (a *Agent) watchBusy(ctx context.Context) {
	b := a.cfg.Busy
	if b.CPU <= 0 && b.GPU <= 0 {
		return
	}
	t := time.NewTicker(b.Interval)
	defer t.Stop()
	cpu := &hysteresis{span: b.For}
	gpu := &hysteresis{span: b.For}
	last, haveLast := readCPU(b.ProcRoot)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := a.cfg.Now()
		busy := false
		if b.CPU > 0 {
			if cur, ok := readCPU(b.ProcRoot); ok && haveLast {
				on, _ := cpu.add(othersPercent(last, cur) > b.CPU, now)
				busy = busy || on
				last = cur
			} else if ok {
				last, haveLast = cur, true
			}
		}
		if b.GPU > 0 && a.idle() {
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			v, err := b.GPUCommand(gctx)
			cancel()
			if err == nil {
				on, _ := gpu.add(v > b.GPU, now)
				busy = busy || on
			}
		} else if b.GPU > 0 {
			busy = busy || gpu.on
		}
		if busy {
			a.gate.set(PauseBusy, time.Time{})
		} else {
			a.gate.clear(PauseBusy)
		}
	}
}

// idle reports whether the node has no request in flight.
func (a *Agent) idle() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.active) == 0
}
