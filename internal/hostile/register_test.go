package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// registerAttack is a first frame a hostile node sends, and the close the
// router must answer it with.
type registerAttack struct {
	name   string
	frame  []byte // nil: send nothing (the registration timeout)
	binary bool
	code   websocket.StatusCode
	reason string // "" for 1009, whose reason is the library's
}

func registerFrame(id string, models any, extra map[string]any) []byte {
	m := map[string]any{"type": "register", "node_id": id, "models": models, "max_concurrent": 2}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func registerAttacks() []registerAttack {
	caps := make([]string, 20_000)
	for i := range caps {
		caps[i] = fmt.Sprintf("c%d", i)
	}
	manyModels := func(n int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			out[i] = map[string]any{"name": fmt.Sprintf("m%d:1", i), "size": 1}
		}
		return out
	}
	one := func(m map[string]any) []map[string]any {
		if m["name"] == nil {
			m["name"] = "flood:1"
		}
		m["size"] = 1
		return []map[string]any{m}
	}
	deep := []byte(`{"type":"register","node_id":"deep","models":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`)
	return []registerAttack{
		{name: "20,000 capability strings on one model", frame: registerFrame("caps", one(map[string]any{"capabilities": caps}), nil),
			code: websocket.StatusPolicyViolation, reason: wire.CloseInvalidModel},
		{name: "5,000 models", frame: registerFrame("models", manyModels(5_000), nil),
			code: websocket.StatusPolicyViolation, reason: wire.CloseTooManyModels},
		{name: "12,000 models (a 300 KB frame)", frame: registerFrame("models", manyModels(12_000), nil),
			code: websocket.StatusMessageTooBig},
		{name: "a 100,000-character model name", frame: registerFrame("name", one(map[string]any{"name": strings.Repeat("a", 100_000)}), nil),
			code: websocket.StatusPolicyViolation, reason: wire.CloseInvalidModelName},
		{name: "a 10,000-character node_id", frame: registerFrame(strings.Repeat("n", 10_000), one(map[string]any{}), nil),
			code: websocket.StatusPolicyViolation, reason: wire.CloseInvalidNodeID},
		{name: "a 200 KB model family (details)", frame: registerFrame("family", one(map[string]any{"family": strings.Repeat("f", 200_000)}), nil),
			code: websocket.StatusPolicyViolation, reason: wire.CloseInvalidModel},
		{name: "a 100 KB ollama_version", frame: registerFrame("version", one(map[string]any{}), map[string]any{"ollama_version": strings.Repeat("v", 100_000)}),
			code: websocket.StatusPolicyViolation, reason: wire.CloseInvalidRegister},
		{name: "models nested 100,000 arrays deep", frame: deep,
			code: websocket.StatusPolicyViolation, reason: wire.CloseExpectedRegister},
		{name: "a 1 MiB first frame", frame: registerFrame("big", one(map[string]any{"family": strings.Repeat("f", 1<<20)}), nil),
			code: websocket.StatusMessageTooBig},
		{name: "a heartbeat instead of register", frame: []byte(`{"type":"heartbeat","node_id":"hb"}`),
			code: websocket.StatusPolicyViolation, reason: wire.CloseExpectedRegister},
		{name: "a binary first frame", frame: []byte{0xff, 0xfe, 0}, binary: true,
			code: websocket.StatusPolicyViolation, reason: wire.CloseExpectedRegister},
		{name: "no frame at all", code: websocket.StatusPolicyViolation, reason: wire.CloseRegistrationTimeout},
	}
}

// TestRegistrationFloods: nodes that register tens of thousands of
// capabilities, huge model lists, long names and huge details — three at a
// time, each from a fresh address, for a few seconds — are each closed
// with the protocol's reason, while /health and /api/models keep answering
// and an honest node keeps serving chats.
func TestRegistrationFloods(t *testing.T) {
	const regTimeout = 2 * time.Second
	r := startRouter(t, "--registration-timeout", regTimeout.String())
	honestNode(t, r, freshIP(), "honest-reg", model("honest:1", 1e9))
	base := r.rss()
	probe := r.probe(20*time.Millisecond, "/health", "/api/models")

	attacks := registerAttacks()
	type result struct {
		n          int
		worst      time.Duration
		code       websocket.StatusCode
		reason     string
		unexpected string
	}
	var mu sync.Mutex
	results := map[string]*result{}
	for _, a := range attacks {
		results[a.name] = &result{}
	}
	floodFor := 4 * time.Second
	stop := time.Now().Add(floodFor)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(stop); i++ {
				a := attacks[i%len(attacks)]
				n, err := dialNode(t, r, freshIP(), true)
				if err != nil {
					mu.Lock()
					results[a.name].unexpected = err.Error()
					mu.Unlock()
					continue
				}
				start := time.Now()
				switch {
				case a.frame == nil:
				case a.binary:
					_ = n.conn.Write(context.Background(), websocket.MessageBinary, a.frame)
				default:
					_ = n.sendRaw(a.frame) // the router may close before the frame is all sent
				}
				code, reason, err := n.closeStatus(regTimeout + 10*time.Second)
				took := time.Since(start)
				_ = n.conn.CloseNow()
				mu.Lock()
				res := results[a.name]
				res.n++
				res.worst = max(res.worst, took)
				res.code, res.reason = code, reason
				if err != nil || code != a.code || (a.reason != "" && reason != a.reason) {
					res.unexpected = fmt.Sprintf("closed %d %q (%v)", code, reason, err)
				}
				mu.Unlock()
			}
		}()
	}
	// An honest consumer chats all along.
	chats, honest := 0, 0
	c := clientFrom(freshIP())
	for time.Now().Before(stop) {
		if chats%15 == 14 {
			c = clientFrom(freshIP()) // stay under the chat bucket (20/min)
		}
		q := fmt.Sprintf("question %d", chats)
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "honest:1", q, nil), nil)
		chats++
		if err == nil && a.Content == "honest: "+q && a.Done && a.Finish == "stop" {
			honest++
		} else {
			t.Errorf("chat %d during the flood: %+v %v", chats, a, err)
		}
	}
	wg.Wait()
	probe.stop()
	hwm := r.hwm()

	for _, a := range attacks {
		res := results[a.name]
		if res.n == 0 {
			t.Errorf("%s: never sent", a.name)
			continue
		}
		if res.unexpected != "" {
			t.Errorf("%s: want close %d %q, got %s", a.name, a.code, a.reason, res.unexpected)
		}
		bound := fmt.Sprintf("close %d %q", a.code, a.reason)
		if a.code == websocket.StatusMessageTooBig {
			bound = "256 KiB per node frame: close 1009"
		} else if a.frame == nil {
			bound = fmt.Sprintf("--registration-timeout %s: close 1008 %q", regTimeout, a.reason)
		}
		observe(t, "register: "+a.name, bound, "closed %d %q, %d times, within %s at worst", res.code, res.reason, res.n, ms(res.worst))
	}
	p99h, maxh, _ := probe.lat["/health"].pct(99)
	p99m, maxm, _ := probe.lat["/api/models"].pct(99)
	if probe.bad.Load() > 0 {
		t.Errorf("%d probes failed during the flood, last: %v", probe.bad.Load(), probe.lastBad.Load())
	}
	if p99h > freezeP99 || p99m > freezeP99 {
		t.Errorf("p99 during the flood: /health %s, /api/models %s; want under %s", ms(p99h), ms(p99m), ms(freezeP99))
	}
	if maxh > time.Second || maxm > time.Second {
		t.Errorf("a read froze during the flood: /health max %s, /api/models max %s", ms(maxh), ms(maxm))
	}
	models, err := r.models(clientFrom(freshIP()))
	if err != nil || len(models) != 1 || models[0] != "honest:1" {
		t.Errorf("/api/models after the flood: %v %v; want only honest:1", models, err)
	}
	observe(t, "register floods, 3 at a time for "+floodFor.String(), "/health, /api/models answer; chats served",
		"/health %s; /api/models %s; %d/%d honest chats answered; /api/models lists only the honest model; VmRSS %s before, VmHWM %s after",
		probe.summary("/health"), probe.summary("/api/models"), honest, chats, mib(base), mib(hwm))
}

// TestHugeSizeIsNotTheDefault: nodes that report the largest model there
// may be (and more) do not make it every client's default model; the
// model the network serves from more addresses is first.
func TestHugeSizeIsNotTheDefault(t *testing.T) {
	r := startRouter(t)
	// Three boasters, the per-IP maximum, from one address: the biggest
	// size the protocol takes, ten slots each.
	boastIP := freshIP()
	for i := range 3 {
		n := mustDialNode(t, r, boastIP)
		if err := n.register(fmt.Sprintf("boaster-%d", i), 10, model("boast:1", wire.MaxModelBytes, "completion", "tools", "thinking")); err != nil {
			t.Fatal(err)
		}
	}
	fourth := mustDialNode(t, r, boastIP)
	_ = fourth.send(map[string]any{"type": "register", "node_id": "boaster-3", "models": []wire.Model{model("boast:1", 1)}})
	if code, reason, err := fourth.closeStatus(10 * time.Second); err != nil || reason != wire.CloseTooManyNodesFromIP {
		t.Errorf("a fourth node from one address: %d %q %v; want 1008 %q", code, reason, err, wire.CloseTooManyNodesFromIP)
	} else {
		observe(t, "a fourth node from one address", "3 registered nodes per IP", "closed %d %q", code, reason)
	}
	for _, size := range []int64{1<<63 - 1, -1, wire.MaxModelBytes + 1} {
		n := mustDialNode(t, r, freshIP())
		_ = n.sendRaw([]byte(fmt.Sprintf(`{"type":"register","node_id":"size","models":[{"name":"boast:2","size":%d}]}`, size)))
		code, reason, err := n.closeStatus(10 * time.Second)
		if err != nil || code != websocket.StatusPolicyViolation || reason != wire.CloseInvalidModel {
			t.Errorf("size %d: closed %d %q %v; want 1008 %q", size, code, reason, err, wire.CloseInvalidModel)
		}
		if size == 1<<63-1 {
			observe(t, "a model size of 2^63-1", "size 0..2^42", "closed %d %q", code, reason)
		}
	}
	// The real model, from two addresses: the real node agent and an
	// in-test node.
	startContributor(t, r, ollamatest.Config{Models: []ollamatest.Model{{Name: "real:1", Size: 2e9}}}, "", "real-agent")
	honestNode(t, r, freshIP(), "real-test", model("real:1", 2e9))

	c := clientFrom(freshIP())
	models, err := r.models(c)
	if err != nil || len(models) != 2 || models[0] != "real:1" {
		t.Fatalf("/api/models = %v %v; want real:1 first", models, err)
	}
	var oa struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if code, err := r.get(c, "/v1/models", &oa); err != nil || code != http.StatusOK || len(oa.Data) != 2 || oa.Data[0].ID != "real:1" {
		t.Errorf("/v1/models = %+v %d %v; want real:1 first", oa, code, err)
	}
	// The CLI consumer's default model is the first listed.
	out, err := exec.Command(binary, "consume", "--server", r.base, "--prompt", "what is the default").Output()
	got := strings.TrimSpace(string(out))
	if err != nil || (got != "Echo: what is the default" && got != "honest: what is the default") {
		t.Errorf("idleclaw consume with the default model: %q %v; want an honest node's answer", got, err)
	}
	observe(t, "3 nodes report boast:1 at 2^42 bytes (4.4 TB), 10 slots each", "default = most addresses, then free slots",
		"/api/models %v: real:1 (2 addresses) first; `idleclaw consume` without --model got %q", models, got)
}
