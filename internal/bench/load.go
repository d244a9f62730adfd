package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// target is one chat endpoint the consumers call: the router's v1
// /api/chat (server-sent events) or Ollama's /api/chat (NDJSON).
type target struct {
	url  string
	body []byte
	sse  bool
	// tokenBytes, when set, is the size of one token of the fake Ollama:
	// a line whose text holds several (a relay sent them together) counts
	// as that many tokens, arrived at once. 0: one token a line.
	tokenBytes int
	// With arrivals set, each request is tagged (see arrivals) and its
	// time to first token split into the way in and the way back.
	arrivals *arrivals
}

// loadSpec is one run of concurrent consumers, each in a closed loop (the
// next request starts when the previous answer has ended).
type loadSpec struct {
	streams int
	// stagger spreads the consumers' first requests over this time, so
	// that the load is steady instead of arriving in waves.
	stagger time.Duration
	// warmup follows the stagger and is not measured.
	warmup time.Duration
	// duration is the measured window. Requests are measured if they
	// start in it; tokens and finished requests are counted if they arrive
	// in it.
	duration time.Duration
	// requests > 0 switches to a fixed count: that many requests in all,
	// every one measured, and the window is the whole run.
	requests int
	// tail bounds how long requests may still run after the window (or,
	// with a fixed count, the whole run).
	tail time.Duration
}

// Side is what consumers measured on one path (through the network, or
// directly against Ollama) for one workload.
type Side struct {
	Streams     int     `json:"streams"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Tokens      int64   `json:"tokens"`
	ModelTokens int64   `json:"model_tokens"` // eval_count reported by Ollama for the measured requests
	Seconds     float64 `json:"seconds"`
	TTFTP50MS   float64 `json:"ttft_p50_ms"`
	TTFTP99MS   float64 `json:"ttft_p99_ms"`
	// The time to first token, split (tagged requests to the fake Ollama
	// only): the way in, from the consumer's request to the fake Ollama
	// having it; the way back, from when the fake Ollama's first token is
	// due (arrival + interval) to the consumer having it.
	TTFTInP50MS    float64 `json:"ttft_in_p50_ms,omitempty"`
	TTFTInP99MS    float64 `json:"ttft_in_p99_ms,omitempty"`
	TTFTBackP50MS  float64 `json:"ttft_back_p50_ms,omitempty"`
	TTFTBackP99MS  float64 `json:"ttft_back_p99_ms,omitempty"`
	ITLP50MS       float64 `json:"itl_p50_ms"`
	ITLP99MS       float64 `json:"itl_p99_ms"`
	TokensPerSec   float64 `json:"tokens_per_s"`
	RequestsPerSec float64 `json:"requests_per_s"`
	// LoadGenCPU is the CPU time of the bench process (consumers, node
	// agents, fake Ollama) during the window.
	LoadGenCPU float64 `json:"loadgen_cpu_s"`
}

// window is the measured time span of a load run.
type window struct{ open, close time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.open) && t.Before(w.close) }

// recorder holds one consumer's measurements; merged after the run.
type recorder struct {
	ttft, itl        []time.Duration
	ttftIn, ttftBack []time.Duration // tagged requests only
	tokens           int64
	modelTokens      int64
	requests         int
	errors           int
}

// merge appends o's samples to r's and sums the counts.
func (r *recorder) merge(o *recorder) {
	r.ttft = append(r.ttft, o.ttft...)
	r.itl = append(r.itl, o.itl...)
	r.ttftIn = append(r.ttftIn, o.ttftIn...)
	r.ttftBack = append(r.ttftBack, o.ttftBack...)
	r.tokens += o.tokens
	r.modelTokens += o.modelTokens
	r.requests += o.requests
	r.errors += o.errors
}

// loadResult is the raw outcome of one or more load runs on one path.
type loadResult struct {
	rec     recorder
	streams int
	seconds float64
	cpu     time.Duration
}

// add appends another run's samples and sums its counts and time.
func (r *loadResult) add(o *loadResult) {
	r.rec.merge(&o.rec)
	r.streams = max(r.streams, o.streams)
	r.seconds += o.seconds
	r.cpu += o.cpu
}

func (r *loadResult) side() Side {
	s := Side{
		Streams:     r.streams,
		Requests:    r.rec.requests,
		Errors:      r.rec.errors,
		Tokens:      r.rec.tokens,
		ModelTokens: r.rec.modelTokens,
		Seconds:     r.seconds,
		TTFTP50MS:   ms(percentile(r.rec.ttft, 50)),
		TTFTP99MS:   ms(percentile(r.rec.ttft, 99)),
		ITLP50MS:    ms(percentile(r.rec.itl, 50)),
		ITLP99MS:    ms(percentile(r.rec.itl, 99)),
		LoadGenCPU:  r.cpu.Seconds(),
	}
	if len(r.rec.ttftIn) > 0 {
		s.TTFTInP50MS, s.TTFTInP99MS = ms(percentile(r.rec.ttftIn, 50)), ms(percentile(r.rec.ttftIn, 99))
		s.TTFTBackP50MS, s.TTFTBackP99MS = ms(percentile(r.rec.ttftBack, 50)), ms(percentile(r.rec.ttftBack, 99))
	}
	if r.seconds > 0 {
		s.TokensPerSec = float64(r.rec.tokens) / r.seconds
		s.RequestsPerSec = float64(r.rec.requests) / r.seconds
	}
	return s
}

// runLoad runs spec against tgt. onOpen and onClose (either may be nil)
// are called when the measured window opens and closes, to sample the
// router at those moments.
func runLoad(ctx context.Context, nk *netKit, tgt target, spec loadSpec, onOpen, onClose func()) (*loadResult, error) {
	tr := nk.transport(spec.streams)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	t0 := time.Now().Add(20 * time.Millisecond)
	fixed := spec.requests > 0
	w := window{open: t0.Add(spec.stagger + spec.warmup)}
	var hard time.Time
	if fixed {
		w = window{open: t0, close: t0.Add(1000 * time.Hour)}
		hard = t0.Add(spec.tail)
	} else {
		w.close = w.open.Add(spec.duration)
		hard = w.close.Add(spec.tail)
	}
	ctx, cancel := context.WithDeadline(ctx, hard)
	defer cancel()

	var left atomic.Int64
	left.Store(int64(spec.requests))
	recs := make([]recorder, spec.streams)
	var wg sync.WaitGroup
	for i := range spec.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var offset time.Duration
			if spec.streams > 1 {
				offset = spec.stagger * time.Duration(i) / time.Duration(spec.streams)
			}
			if !sleepUntil(ctx, t0.Add(offset)) {
				return
			}
			br := bufio.NewReaderSize(nil, 16<<10)
			for ctx.Err() == nil {
				if fixed {
					if left.Add(-1) < 0 {
						return
					}
				} else if !time.Now().Before(w.close) {
					return
				}
				request(ctx, client, tgt, w, &recs[i], br)
			}
		}()
	}

	res := &loadResult{streams: spec.streams}
	var cpu0, cpu1 time.Duration
	if fixed {
		cpu0, _ = selfCPU()
		if onOpen != nil {
			onOpen()
		}
		wg.Wait()
		res.seconds = time.Since(t0).Seconds()
		if onClose != nil {
			onClose()
		}
		cpu1, _ = selfCPU()
	} else {
		if !sleepUntil(ctx, w.open) {
			wg.Wait()
			return nil, fmt.Errorf("load: %w", ctx.Err())
		}
		cpu0, _ = selfCPU()
		if onOpen != nil {
			onOpen()
		}
		sleepUntil(ctx, w.close)
		cpu1, _ = selfCPU()
		if onClose != nil {
			onClose()
		}
		res.seconds = w.close.Sub(w.open).Seconds()
		wg.Wait()
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("load: %w", err)
	}
	res.cpu = cpu1 - cpu0
	for i := range recs {
		res.rec.merge(&recs[i])
	}
	if tgt.arrivals != nil {
		tgt.arrivals.at.Clear() // requests that never got a first token
	}
	return res, nil
}

// request runs one chat request and records what arrived, and when.
func request(ctx context.Context, client *http.Client, tgt target, w window, rec *recorder, br *bufio.Reader) {
	body, tag := tgt.body, uint64(0)
	if tgt.arrivals != nil {
		body, tag = tgt.arrivals.tag(body) // before the clock starts: not the network's time
	}
	start := time.Now()
	measured := w.contains(start)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tgt.url, bytes.NewReader(body))
	if err != nil {
		rec.errors++
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if measured && ctx.Err() == nil {
			rec.errors++
		}
		sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if measured {
			rec.errors++
		}
		// For example 503 while every node is busy: do not spin.
		sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
		return
	}
	br.Reset(resp.Body)
	var last time.Time
	n := 0
	failed, finished := false, false
	var modelTokens int64
	for {
		line, err := br.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			// A line longer than the buffer is never a token line of
			// ours: skip the rest of it.
			line = nil
			_, err = br.ReadSlice('\n')
		}
		if len(line) > 0 {
			now := time.Now()
			switch kind, count := classify(line, tgt.sse); kind {
			case lineToken:
				if n == 0 {
					arr, arrived := tgt.arrivals.take(tag) // taken even unmeasured: it is forgotten
					if measured {
						rec.ttft = append(rec.ttft, now.Sub(start))
						if arrived {
							rec.ttftIn = append(rec.ttftIn, arr.at.Sub(start))
							rec.ttftBack = append(rec.ttftBack, now.Sub(arr.due))
						}
					}
				} else if measured {
					rec.itl = append(rec.itl, now.Sub(last))
				}
				k := 1
				if tgt.tokenBytes > 0 {
					k = max(1, textBytes(line, tgt.sse)/tgt.tokenBytes)
				}
				if measured {
					for range k - 1 {
						rec.itl = append(rec.itl, 0)
					}
				}
				last = now
				n += k
				if w.contains(now) {
					rec.tokens += int64(k)
				}
			case lineFinal:
				finished = true
				modelTokens = count
			case lineFailed:
				failed = true
			}
		}
		if err != nil {
			if err != io.EOF {
				failed = true
			}
			break
		}
	}
	if failed || !finished {
		if measured && ctx.Err() == nil {
			rec.errors++
		}
		return
	}
	if measured {
		rec.modelTokens += modelTokens
	}
	if w.contains(time.Now()) {
		rec.requests++
	}
}

type lineKind int

const (
	lineOther  lineKind = iota
	lineToken           // answer text
	lineFinal           // the request ended well; count is the model's token count
	lineFailed          // an error inside the stream
)

var (
	ssePrefix    = []byte("data: ")
	sseContent   = []byte(`"delta":{"content":`)
	sseReasoning = []byte(`"reasoning":true`)
	sseError     = []byte(`[Error: `)
	sseFinish    = []byte(`"finish_reason":`)
	sseFinishErr = []byte(`"finish_reason":"error"`)
	sseUsage     = []byte(`"completion_tokens":`)
	ndError      = []byte(`{"error"`)
	ndDone       = []byte(`"done":true`)
	ndNotDone    = []byte(`"done":false`)
	ndEmpty      = []byte(`"content":""`)
	ndContent    = []byte(`"content":`)
	ndEvalCount  = []byte(`"eval_count":`)
)

// classify reads one line of an answer: an SSE line of the router's v1 API
// (sse) or an NDJSON line of Ollama's /api/chat. Only the answer's content
// counts as tokens; thinking text does not.
func classify(line []byte, sse bool) (lineKind, int64) {
	if sse {
		rest, ok := bytes.CutPrefix(line, ssePrefix)
		if !ok || len(rest) == 0 || rest[0] != '{' {
			return lineOther, 0
		}
		switch {
		case bytes.Contains(rest, sseFinishErr):
			return lineFailed, 0
		case bytes.Contains(rest, sseFinish):
			return lineFinal, intAfter(rest, sseUsage)
		case bytes.Contains(rest, sseContent):
			if bytes.Contains(rest, sseError) {
				return lineFailed, 0
			}
			if bytes.Contains(rest, sseReasoning) {
				return lineOther, 0
			}
			return lineToken, 0
		}
		return lineOther, 0
	}
	switch {
	case bytes.HasPrefix(line, ndError):
		return lineFailed, 0
	case bytes.Contains(line, ndDone):
		return lineFinal, intAfter(line, ndEvalCount)
	case bytes.Contains(line, ndNotDone) && !bytes.Contains(line, ndEmpty):
		return lineToken, 0
	}
	return lineOther, 0
}

// textBytes is the length of a token line's answer text, escapes counted
// as one byte: what follows the content key up to its closing quote.
func textBytes(line []byte, sse bool) int {
	key := ndContent
	if sse {
		key = sseContent
	}
	i := bytes.Index(line, key)
	if i < 0 {
		return 0
	}
	rest := line[i+len(key):]
	if len(rest) == 0 || rest[0] != '"' {
		return 0
	}
	n := 0
	for j := 1; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			return n
		}
		n++
	}
	return n
}

// intAfter parses the unsigned integer that follows key in b (0 if none).
func intAfter(b, key []byte) int64 {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseInt(string(b[:j]), 10, 64)
	return n
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
