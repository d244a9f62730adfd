package webtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/server"
)

// postChat sends a chat to the router as another consumer; cancel ends it.
func postChat(t *testing.T, base, model, text string) (resp chan *http.Response, cancel context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	body := `{"model":` + jsString(model) + `,"messages":[{"role":"user","content":` + jsString(text) + `}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/chat", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp = make(chan *http.Response, 1)
	go func() {
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			resp <- nil
			return
		}
		resp <- r
	}()
	t.Cleanup(cancel)
	return resp, cancel
}

// TestNetworkPageLive watches the network page while a node joins, serves
// and leaves: the counts, the models and their free slots, the requests in
// flight and the tokens/s follow, without a reload.
func TestNetworkPageLive(t *testing.T) {
	hold := make(chan struct{})
	o := fakeOllama(t, nil)
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	p := newPage(t, base, "/network", 1280, 800)
	p.waitJS(`document.getElementById("s-nodes").textContent === "1" && document.getElementById("live-text").textContent === "1 node"`, "one node")
	if got := p.text("#models-body"); got != "stories:latest112–0 of 1" {
		t.Errorf("models table %q", got)
	}
	if got := p.text("#share-cmd"); got != "idleclaw contribute --server "+base {
		t.Errorf("share command %q, want it to name this router", got)
	}

	// A second node joins with a model that thinks, and takes a request.
	o2 := fakeOllama(t, func(r ollamatest.ChatRequest) ollamatest.Reply {
		<-hold
		return ollamatest.Reply{Tokens: []string{"a", "b", "c", "d"}}
	}, demoModels[0])
	n2 := startNode(t, base, o2.URL, 2, "--max-concurrent", "1")
	p.waitJS(`document.getElementById("s-nodes").textContent === "2" && document.getElementById("s-models").textContent === "2"`, "two nodes")
	p.waitJS(`[...document.querySelectorAll("#models-body tr")].some(r => r.textContent === "qwen3:0.6b111tools, thinking0 of 1")`, "the new node's model")
	resp, cancel := postChat(t, base, "qwen3:0.6b", "hi")
	waitStarted(t, o2)
	p.waitJS(`document.getElementById("s-active").textContent === "1"`, "the request in flight")
	p.waitJS(`[...document.querySelectorAll("#models-body tr")].some(r => r.textContent === "qwen3:0.6b100tools, thinking0 of 1")`, "the busy node's free slots")
	// A second request for the busy model waits.
	_, cancelWaiting := postChat(t, base, "qwen3:0.6b", "me too")
	p.waitJS(`document.getElementById("s-queued").textContent === "1"`, "the waiting request")
	cancelWaiting()
	p.waitJS(`document.getElementById("s-queued").textContent === "0"`, "the queue to empty")
	close(hold)
	r := <-resp
	if r == nil {
		t.Fatal("chat failed")
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	cancel()
	p.waitJS(`document.getElementById("s-active").textContent === "0" && parseFloat(document.getElementById("s-tps").textContent) > 0`, "the tokens/s")

	// The node leaves.
	n2.stop(t)
	p.waitJS(`document.getElementById("s-nodes").textContent === "1" && document.querySelectorAll("#models-body tr").length === 1`, "the node to go")
	if got := p.text("#live-text"); got != "1 node" {
		t.Errorf("live label %q", got)
	}
}

// TestNetworkPollFallback opens more network pages from one address than
// the router streams to (server.EventsPerIP): the one refused falls back to
// polling /api/network and still shows the network.
func TestNetworkPollFallback(t *testing.T) {
	o := fakeOllama(t, nil)
	base := startRouter(t)
	startNode(t, base, o.URL, 1)
	var pages []*page
	for i := 0; i <= server.EventsPerIP; i++ {
		p := newPage(t, base, "/network", 800, 600)
		p.waitJS(`document.getElementById("s-nodes").textContent === "1"`, "the network")
		pages = append(pages, p)
	}
	for i, p := range pages {
		live := strings.HasSuffix(p.text("#net-updated"), ", live")
		if live != (i < server.EventsPerIP) {
			t.Errorf("page %d: %q", i, p.text("#net-updated"))
		}
	}
	last := pages[len(pages)-1]
	if got := last.text("#net-updated"); !strings.HasSuffix(got, ", every 10 s") {
		t.Errorf("the refused page says %q, want that it polls", got)
	}
	if !eval[bool](last, `document.getElementById("live").classList.contains("up")`) {
		t.Error("the polling page's dot is not up")
	}
}
