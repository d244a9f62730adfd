package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// answer streams one /api/chat answer and returns its text; it ends
// with the stream or ctx.
func answer(ctx context.Context, base, prompt string) string {
	body := `{"model":"m","messages":[{"role":"user","content":"` + prompt + `"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", strings.NewReader(body))
	if err != nil {
		return "error: " + err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if i := strings.Index(l, `"content":"`); i >= 0 {
			rest := l[i+len(`"content":"`):]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				b.WriteString(rest[:j])
			}
		}
	}
	return b.String()
}

// goAnswer runs answer in a goroutine wg waits for; its text comes on
// the channel.
func goAnswer(ctx context.Context, wg *sync.WaitGroup, base, prompt string) <-chan string {
	out := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		out <- answer(ctx, base, prompt)
	}()
	return out
}

// firstHeld is a fake Ollama serving m whose first answer (first) waits
// until release is closed (or done is); the others (rest) come at once.
func firstHeld(t *testing.T, done <-chan struct{}, first, rest string) (o *ollamatest.Server, release chan struct{}) {
	release = make(chan struct{})
	var taken atomic.Bool
	o = ollamatest.NewServer(ollamatest.Config{NoRecord: true, Models: []ollamatest.Model{{Name: "m:latest"}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			if !taken.Swap(true) {
				select {
				case <-release:
				case <-done:
				}
				return ollamatest.Reply{Tokens: []string{first}}
			}
			return ollamatest.Reply{Tokens: []string{rest}}
		}})
	t.Cleanup(o.Close)
	return o, release
}

func localFree(r *router) int {
	info, _ := r.h.Model("m:latest")
	return info.FreeSlots
}

func freeSlots(ms []hub.ModelInfo, name string) int {
	n := 0
	for _, m := range ms {
		if m.Name == name {
			n += m.FreeSlots
		}
	}
	return n
}

// TestWaiterMovesToAFreeNodeElsewhere: a request waiting at router a,
// whose own node is busy, is served by router b's node as soon as that
// one comes free (before a's node does): the routers' queues for a model
// act as one.
func TestWaiterMovesToAFreeNodeElsewhere(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	b := newRouter(t, nats.URL, "b")
	done := make(chan struct{})
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	oa := ollamatest.NewServer(ollamatest.Config{NoRecord: true, Models: []ollamatest.Model{{Name: "m:latest"}},
		Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
			return ollamatest.Reply{Tokens: []string{"from a"}, Hang: true} // a's node stays busy
		}})
	t.Cleanup(oa.Close)
	ob, release := firstHeld(t, done, "held", "from b")
	node(t, a, oa, 1)
	node(t, b, ob, 1)
	t.Cleanup(func() { // first: the agents drain their requests as they stop
		cancel()
		close(done)
		wg.Wait()
	})
	eventually(t, "the routers never saw each other's nodes", func() bool {
		return a.h.NodeCount() == 1 && b.h.NodeCount() == 1 && a.c.NodeCount() == 1 && b.c.NodeCount() == 1
	})
	run := func(base, prompt string) <-chan string { return goAnswer(ctx, &wg, base, prompt) }
	run(a.url, "one") // holds a's node to the end
	eventually(t, "a's node never got busy", func() bool { return localFree(a) == 0 })
	two := run(b.url, "two") // holds b's node until release
	eventually(t, "b's node never got busy", func() bool { return localFree(b) == 0 })
	eventually(t, "a's view of b still shows a free slot", func() bool { return freeSlots(a.c.Models(false), "m:latest") == 0 })
	three := run(a.url, "three")
	eventually(t, "the third request never waited at a", func() bool { return a.h.Waiting() == 1 })

	// b learns that requests wait at a from a's summary.
	_, js := natsJS(t, nats.URL)
	eventually(t, "a's summary never said a request waits there", func() bool {
		kv, err := js.KeyValue(ctx, "idleclaw_routers")
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, "a")
		if err != nil {
			return false
		}
		var s cluster.Summary
		return json.Unmarshal(e.Value(), &s) == nil && s.Waiting == 1
	})
	// The web page and status at b count the request waiting at a.
	eventually(t, "b's /api/network never counted the request waiting at a", func() bool {
		resp, err := http.Get(b.url + "/api/network")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v struct {
			Queued int `json:"requests_queued"`
		}
		return json.NewDecoder(resp.Body).Decode(&v) == nil && v.Queued == 1
	})
	released := time.Now()
	close(release)
	if got := <-two; got != "held" {
		t.Fatalf("second answer %q", got)
	}
	got := <-three
	if got != "from b" {
		t.Fatalf("the waiting request at a got %q, want b's node's answer", got)
	}
	t.Logf("the request waiting at a was answered by b's node %v after that node came free",
		time.Since(released).Round(time.Millisecond))
	if localFree(a) != 0 {
		t.Fatal("a's node came free: the test proves nothing")
	}
}

// TestWaiterMovesAreBounded plays a router that claims free slots over
// and over and refuses every request sent to it: a request waiting at a
// moves to it a bounded number of times, is back in a's queue each time
// (at its head: hub's TestOffload), and is served when a's node frees.
func TestWaiterMovesAreBounded(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	done := make(chan struct{})
	o, release := firstHeld(t, done, "first", "from a")
	node(t, a, o, 1)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(func() {
		cancel()
		close(done)
		wg.Wait()
	})

	nc, js := natsJS(t, nats.URL)
	var asked atomic.Int32
	sub, err := nc.Subscribe("idleclaw.dispatch.liar", func(m *natsgo.Msg) {
		asked.Add(1)
		_ = m.Respond([]byte(`{"ok":false,"reason":"busy"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	mi := hub.ModelInfo{Model: wire.Model{Name: "m:latest"}, Nodes: 1, Origins: 1, FreeSlots: 10}
	sum, _ := json.Marshal(cluster.Summary{Router: "liar", Nodes: 1, All: []hub.ModelInfo{mi}, Now: []hub.ModelInfo{mi}})
	var lies atomic.Int32
	wg.Add(1)
	go func() { // the liar's summary, again and again
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if kv, err := js.KeyValue(ctx, "idleclaw_routers"); err == nil {
				if _, err := kv.Put(ctx, "liar", sum); err == nil {
					lies.Add(1)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	eventually(t, "a never saw its node and the liar", func() bool { return a.h.NodeCount() == 1 && a.c.NodeCount() == 1 })
	run := func(prompt string) <-chan string { return goAnswer(ctx, &wg, a.url, prompt) }
	one := run("one")
	eventually(t, "a's node never got busy", func() bool {
		info, _ := a.h.Model("m:latest")
		return info.FreeSlots == 0
	})
	two := run("two")
	// The request asks the liar once as it arrives, then once per move
	// (3 at most); then the liar goes on lying, and nobody asks it.
	eventually(t, "the waiting request never moved 3 times", func() bool { return asked.Load() >= 1+3 })
	after := lies.Load()
	eventually(t, "the liar stopped lying", func() bool { return lies.Load() >= after+10 })
	if n := asked.Load(); n != 1+3 {
		t.Fatalf("the liar was asked %d times for one request, want 1 + 3 moves", n)
	}
	if a.h.Waiting() != 1 {
		t.Fatalf("Waiting() = %d: the request is not back in a's queue", a.h.Waiting())
	}
	close(release)
	if got := <-one; got != "first" {
		t.Fatalf("first answer %q", got)
	}
	if got := <-two; got != "from a" {
		t.Fatalf("the waiting request got %q, want a's node's answer", got)
	}
}
