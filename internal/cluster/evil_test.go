package cluster_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestNoSpliceFromAnEvilRouter plays a router that claims free slots,
// accepts a request, sends part of an answer (or its failure), then says
// it found no node after all: the consumer's router must end the stream
// there with an error, never let another router's answer follow.
func TestNoSpliceFromAnEvilRouter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames []string
	}{
		{"content, then no node", []string{`{"s":1,"e":{"k":1,"t":"EVIL"}}`, `{"end":"no_node"}`}},
		{"a failure, then silence", []string{`{"s":1,"e":{"k":6,"t":"the node failed"}}`}},
		{"content, then a frame out of order", []string{`{"s":1,"e":{"k":1,"t":"EVIL"}}`, `{"s":5,"e":{"k":1,"t":"x"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nats := natstest.Start(t)
			a := newRouter(t, nats.URL, "a")
			c := newRouter(t, nats.URL, "c")
			serve(t, c, "m:latest", 1)

			nc, js := natsJS(t, nats.URL)
			sub, err := nc.Subscribe("idleclaw.dispatch.evil", func(m *natsgo.Msg) {
				var r struct {
					Events string `json:"events"`
				}
				_ = json.Unmarshal(m.Data, &r)
				_ = m.Respond([]byte(`{"ok":true}`))
				for _, f := range tc.frames {
					_ = nc.Publish(r.Events, []byte(f))
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			// The evil router's summary: one node with many free slots, so
			// that a tries it first.
			m := hub.ModelInfo{Model: wire.Model{Name: "m:latest"}, Nodes: 1, Origins: 1, FreeSlots: 10}
			announce(t, js, a, cluster.Summary{Router: "evil", Nodes: 1, All: []hub.ModelInfo{m}, Now: []hub.ModelInfo{m}}, 2)
			_, _, text := chatTimes(t, a.url, "m")
			if strings.Contains(text, "Echo") {
				t.Fatalf("router c's answer was spliced after the evil router's: %q", text)
			}
			if !strings.Contains(text, "[Error: ") {
				t.Errorf("the stream did not end with an error: %q", text)
			}
		})
	}
}

// TestHeldEventGoesOutOnAHeartbeat: the consumer's router holds an
// event unflushed only while another has already arrived; when what
// arrived is a heartbeat, the event must still reach the consumer at
// once, not with whatever comes next. The scripted router sends a token
// and a heartbeat together, then nothing until the consumer has the
// token.
func TestHeldEventGoesOutOnAHeartbeat(t *testing.T) {
	nats := natstest.Start(t)
	a := newRouter(t, nats.URL, "a")
	nc, js := natsJS(t, nats.URL)
	gates := make(chan chan struct{}, 1) // per answer: closed when the consumer has the token
	sub, err := nc.Subscribe("idleclaw.dispatch.script", func(m *natsgo.Msg) {
		var r struct {
			Events string `json:"events"`
		}
		_ = json.Unmarshal(m.Data, &r)
		got := <-gates
		_ = m.Respond([]byte(`{"ok":true}`))
		_ = nc.Publish(r.Events, []byte(`{"s":1,"e":{"k":1,"t":"one"}}`))
		_ = nc.Publish(r.Events, []byte(`{"b":true}`))
		_ = nc.Flush()
		select {
		case <-got:
		case <-time.After(5 * time.Second): // the test fails below, this ends the script
		}
		_ = nc.Publish(r.Events, []byte(`{"s":2,"e":{"k":7,"fr":"stop","u":{}}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	m := hub.ModelInfo{Model: wire.Model{Name: "m:latest"}, Nodes: 1, Origins: 1, FreeSlots: 1}
	announce(t, js, a, cluster.Summary{Router: "script", Nodes: 1, All: []hub.ModelInfo{m}, Now: []hub.ModelInfo{m}}, 1)
	// Whether the heartbeat is already in the inbox when the relay reads
	// the token is up to the NATS client's reader (it nearly always is):
	// every answer must keep the rule, and one of a few must have held
	// the token, so the path is known to be taken.
	for attempt := 1; ; attempt++ {
		got := make(chan struct{})
		gates <- got
		resp, err := http.Post(a.url+"/api/chat", "application/json",
			strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		var lines []string
		for sc.Scan() {
			l := sc.Text()
			if l != "" {
				lines = append(lines, l)
			}
			if strings.Contains(l, `"content":"one"`) {
				close(got)
			}
		}
		resp.Body.Close()
		all := strings.Join(lines, "\n")
		if !strings.Contains(all, `"content":"one"`) || strings.Contains(all, "stopped answering") ||
			lines[len(lines)-1] != "data: [DONE]" {
			t.Fatalf("the token waited for the next event (or the stream broke):\n%s", all)
		}
		if strings.Contains(all, ": ping") { // held, and sent with a keep-alive by the heartbeat
			return
		}
		if attempt == 10 {
			t.Fatalf("in %d answers the token was never held behind the heartbeat", attempt)
		}
	}
}
