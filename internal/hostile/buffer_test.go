package hostile

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// stalledClient is an HTTP client from ip whose sockets take 4 KiB at
// most in the kernel: its consumer never reads what it is sent.
func stalledClient(ip string) *http.Client {
	d := dialerFrom(ip)
	d.Control = func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true}}
}

// flooder is a node that answers every request with 200 KB chunks as fast
// as its link takes them, until the router cancels the request.
type flooder struct {
	*wsNode
	mu   sync.Mutex
	sent map[string]int64 // bytes of content sent per request
	over atomic.Int64     // requests that reached the per-request cap without a cancel
}

const floodChunk = 200_000

func startFlooder(t *testing.T, r *router, ip, id string, slots int, capBytes int64) *flooder {
	t.Helper()
	f := &flooder{wsNode: mustDialNode(t, r, ip), sent: map[string]int64{}}
	block := strings.Repeat("z", floodChunk)
	f.serve(func(req request) {
		var n int64
		defer func() {
			f.mu.Lock()
			f.sent[req.ID] = n
			f.mu.Unlock()
		}()
		for n < capBytes {
			select {
			case <-req.Canceled:
				return
			default:
			}
			if f.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: block}}) != nil {
				return
			}
			n += floodChunk
		}
		f.over.Add(1)
	})
	if err := f.register(id, slots, model("flood:1", 1e9)); err != nil {
		t.Fatal(err)
	}
	return f
}

// finished is the number of requests that ended, and the bytes sent for
// each.
func (f *flooder) finished() (n int, sent []int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.sent {
		sent = append(sent, b)
	}
	return len(f.sent), sent
}

// openStalled opens k streams of flood:1 from consumers that never read,
// three per address (the per-IP concurrency), and returns a function that
// closes them.
func openStalled(t *testing.T, r *router, k int) (closeAll func()) {
	t.Helper()
	var resps []*http.Response
	var c *http.Client
	for i := range k {
		if i%3 == 0 {
			c = stalledClient(freshIP())
		}
		resp, err := r.post(context.Background(), c, "/api/chat", chatBody("v1", "flood:1", fmt.Sprintf("flood me %d", i), nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stalled stream %d: status %d", i, resp.StatusCode)
		}
		resps = append(resps, resp)
	}
	return func() {
		for _, resp := range resps {
			_ = resp.Body.Close()
		}
	}
}

// TestStreamBuffersAreBounded: consumers that never read, fed 200 KB
// chunks without end, cost the router what its stream buffers allow —
// per request (--stream-buffer-bytes) and over every request
// (--max-buffered-bytes) — and fail alone: the node is canceled, its
// link and an honest consumer beside them are untouched. A node that
// sends a 1 MiB chunk is closed (1009).
func TestStreamBuffersAreBounded(t *testing.T) {
	const streams = 12
	const capBytes = 512 << 20 // what a node would send each stream without the bound
	phases := []struct {
		name  string
		flags []string
		bound string
		limit int64 // the most the router may hold for the streams (excluding sockets)
	}{
		{"per request", nil, "--stream-buffer-bytes 1 MiB per request", streams << 20},
		{"over all requests", []string{"--stream-buffer-bytes", "268435456", "--max-buffered-bytes", "8388608"},
			"--max-buffered-bytes 8 MiB over all (per request 256 MiB)", 8 << 20},
	}
	for _, ph := range phases {
		t.Run(strings.ReplaceAll(ph.name, " ", "_"), func(t *testing.T) {
			r := startRouter(t, append([]string{"--max-response-chars", "0", "--response-timeout", "0", "--write-stall", "5s"}, ph.flags...)...)
			ip := freshIP()
			f1 := startFlooder(t, r, ip, "flooder-1", 10, capBytes)
			f2 := startFlooder(t, r, ip, "flooder-2", 10, capBytes)
			honestNode(t, r, freshIP(), "honest-buf", model("honest:1", 1e9))
			base := r.rss()
			closeAll := openStalled(t, r, streams)
			defer closeAll()
			eventually(t, "every stalled stream to be canceled", 30*time.Second, func() bool {
				n1, _ := f1.finished()
				n2, _ := f2.finished()
				return n1+n2 >= streams
			})
			// An honest consumer is served meanwhile.
			a, err := r.chat(context.Background(), clientFrom(freshIP()), "v1", chatBody("v1", "honest:1", "are you there", nil), nil)
			if err != nil || a.Content != "honest: are you there" {
				t.Errorf("honest chat beside the stalled streams: %+v %v", a, err)
			}
			hwm := r.hwm()
			n1, s1 := f1.finished()
			n2, s2 := f2.finished()
			sent := append(s1, s2...)
			var total int64
			for _, b := range sent {
				total += b
			}
			if f1.over.Load()+f2.over.Load() > 0 {
				t.Errorf("%d streams took %s without a cancel", f1.over.Load()+f2.over.Load(), mib(capBytes))
			}
			if !f1.isOpen() || !f2.isOpen() {
				t.Errorf("a flooding node lost its link for its consumers' slowness")
			}
			// The router holds at most the bound for the streams, plus for
			// each one the chunk its blocked write holds and the encoded
			// event (about twice a chunk, JSON-escaped).
			allowed := ph.limit + streams*4*floodChunk + 48<<20
			if hwm-base > allowed {
				t.Errorf("router VmHWM grew by %s (from %s to %s), want under %s", mib(hwm-base), mib(base), mib(hwm), mib(allowed))
			}
			observe(t, fmt.Sprintf("%d consumers never read; nodes send 200 KB chunks without end (%s)", streams, ph.name), ph.bound,
				"all %d canceled after %s to %s each (%s in all); the flooders' links stay up; router VmRSS %s before, VmHWM %s after (+%s); an honest chat answered",
				n1+n2, mib(slices.Min(sent)), mib(slices.Max(sent)), mib(total), mib(base), mib(hwm), mib(hwm-base))
		})
	}
	t.Run("1_MiB_chunk", func(t *testing.T) {
		r := startRouter(t)
		n := mustDialNode(t, r, freshIP())
		n.serve(func(req request) {
			_ = n.chunk(req.ID, wire.Chunk{Message: &wire.ChunkMessage{Role: "assistant", Content: strings.Repeat("m", 1<<20)}})
		})
		if err := n.register("megachunk", 2, model("mega:1", 1e9)); err != nil {
			t.Fatal(err)
		}
		a, err := r.chat(context.Background(), clientFrom(freshIP()), "v1", chatBody("v1", "mega:1", "one big chunk", nil), nil)
		code, reason, cerr := n.closeStatus(10 * time.Second)
		if cerr != nil || code != websocket.StatusMessageTooBig {
			t.Errorf("a 1 MiB chunk: link closed %d %q %v; want 1009", code, reason, cerr)
		}
		if err != nil || a.Content != "" || len(a.Errors) != 1 {
			t.Errorf("the consumer of the 1 MiB chunk got %d %q errors %q %v", a.Status, a.Content, a.Errors, err)
		}
		observe(t, "a node sends a 1 MiB chunk", "256 KiB per node frame", "link closed %d %q; its consumer got %d with %q", code, reason, a.Status, a.Errors)
	})
}
