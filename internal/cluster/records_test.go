package cluster_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// newRecordsRouter is newRouter with the records shared: the hub's store
// is the cluster's (no store of its own, as with --records none), saved
// every 50ms. hc may set more of the hub's configuration.
func newRecordsRouter(tb testing.TB, natsURL, id string, hc hub.Config) *router {
	tb.Helper()
	rec := cluster.NewRecords(nil)
	hc.Store, hc.FlushInterval = rec, 50*time.Millisecond
	return routerOf(tb, hc, cluster.Config{URL: natsURL, RouterID: id, Records: rec})
}

// keyedNode links an agent with key k, relaying to o, to r; the returned
// function unlinks it and waits until it stopped.
func keyedNode(tb testing.TB, r *router, o *ollamatest.Server, k *identity.Key) (stop func()) {
	tb.Helper()
	a, err := agent.New(agent.Config{Server: r.url, Ollama: &ollama.Client{BaseURL: o.URL}, Identity: k, MaxConcurrent: 1})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	tb.Cleanup(stop)
	return stop
}

// linkKeyed links a node with a key of its own, serving m on a fake
// Ollama, to r, and waits until it is registered.
func linkKeyed(t *testing.T, r *router) *identity.Key {
	t.Helper()
	o := ollamatest.NewServer(ollamatest.Config{Models: []ollamatest.Model{{Name: "m:latest"}}})
	t.Cleanup(o.Close)
	key, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	keyedNode(t, r, o, key)
	eventually(t, "the node never registered", func() bool { return r.h.NodeCount() == 1 })
	return key
}

// recordsBucket waits for a router to make the records' bucket.
func recordsBucket(t *testing.T, js jetstream.JetStream, what string) jetstream.KeyValue {
	t.Helper()
	var kv jetstream.KeyValue
	eventually(t, what, func() bool {
		var err error
		kv, err = js.KeyValue(t.Context(), "idleclaw_records")
		return err == nil
	})
	return kv
}

// nodeInfo is what r's hub shows of node id (zero if not connected).
func nodeInfo(r *router, id string) hub.NodeInfo {
	for _, n := range r.h.Nodes() {
		if n.NodeID == id {
			return n
		}
	}
	return hub.NodeInfo{}
}

// post sends one chat to base and returns the status and body.
func post(tb testing.TB, base, model string) (int, string) {
	tb.Helper()
	body := `{"model":"` + model + `","stream":false,"messages":[{"role":"user","content":"hi"}]}`
	resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestRecordsAreShared: a node whose breaker opened and that canaries
// quarantined at router a starts with that record at router b, and at
// router c, which joined the network after the record was made.
func TestRecordsAreShared(t *testing.T) {
	nats := natstest.Start(t)
	a := newRecordsRouter(t, nats.URL, "a", hub.Config{})
	b := newRecordsRouter(t, nats.URL, "b", hub.Config{})
	models := []ollamatest.Model{{Name: "m:latest"}}
	failing := ollamatest.NewServer(ollamatest.Config{Models: models, Respond: func(ollamatest.ChatRequest) ollamatest.Reply {
		return ollamatest.Reply{Status: http.StatusInternalServerError, Error: "out of memory"}
	}})
	t.Cleanup(failing.Close)
	good := ollamatest.NewServer(ollamatest.Config{Models: models})
	t.Cleanup(good.Close)
	key, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	id := key.NodeID()

	stop := keyedNode(t, a, failing, key)
	eventually(t, "the node never registered at a", func() bool { return a.h.NodeCount() == 1 })
	for i := 0; i < 10 && nodeInfo(a, id).Breaker != "open"; i++ {
		post(t, a.url, "m")
	}
	if br := nodeInfo(a, id).Breaker; br != "open" {
		t.Fatalf("breaker %q at a after failed requests", br)
	}
	for range 4 {
		a.h.Judge(id, "m:latest", false)
	}
	if tier := nodeInfo(a, id).Tiers["m:latest"]; tier != hub.TierQuarantined {
		t.Fatalf("tier %q at a after 4 disagreeing canaries", tier)
	}
	eventually(t, "router b never got a's record", func() bool { return b.h.RecordCount() == 1 })
	stop()
	eventually(t, "the node stayed at a", func() bool { return a.h.NodeCount() == 0 })

	moved := func(r *router) {
		t.Helper()
		eventually(t, "the node did not register at the other router", func() bool { return r.h.NodeCount() == 1 })
		eventually(t, "the other router did not apply the node's record", func() bool {
			n := nodeInfo(r, id)
			return n.Breaker == "open" && n.Tiers["m:latest"] == hub.TierQuarantined
		})
		if n := nodeInfo(r, id); n.Reputation >= 0.5 {
			t.Errorf("reputation %.2f: the failures at a did not come along", n.Reputation)
		}
		if status, body := post(t, r.url, "m"); status == http.StatusOK {
			t.Errorf("the quarantined node with an open breaker served: %s", body)
		}
	}
	stop = keyedNode(t, b, good, key)
	moved(b)

	c := newRecordsRouter(t, nats.URL, "c", hub.Config{})
	eventually(t, "router c, joining later, never got the record", func() bool { return c.h.RecordCount() == 1 })
	stop()
	eventually(t, "the node stayed at b", func() bool { return b.h.NodeCount() == 0 })
	keyedNode(t, c, good, key)
	moved(c)
}

// TestGarbageRecordsAreSkipped plays a router that fills the records'
// bucket with damaged, oversized, misfiled entries and thousands of
// records: the router skips what is not a record, keeps at most
// MaxRecords, still serves, and still applies a good record after it all.
func TestGarbageRecordsAreSkipped(t *testing.T) {
	nats := natstest.Start(t)
	const maxRecords = 300
	a := newRecordsRouter(t, nats.URL, "a", hub.Config{MaxRecords: maxRecords})
	key := linkKeyed(t, a)

	_, js := natsJS(t, nats.URL)
	ctx := t.Context()
	kv := recordsBucket(t, js, "router a never made the records' bucket")
	bkey := func(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }
	entry := func(data string) []byte {
		b, _ := json.Marshal(map[string]any{"r": "evil", "d": json.RawMessage(data)})
		return b
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	record := func(k string, extra string) string {
		kj, _ := json.Marshal(k)
		return `{"key":` + string(kj) + `,"ok":1,"bad":0,"updated":"` + now + `"` + extra + `}`
	}
	for name, kvp := range map[string][2]string{
		"bad base64 key":     {"!!!", string(entry(record("k:x", "")))},
		"not json":           {bkey("k:x"), "{"},
		"not an envelope":    {bkey("k:x"), `[1]`},
		"not a record":       {bkey("k:x"), string(entry(`"hello"`))},
		"another key inside": {bkey("k:x"), string(entry(record("k:y", "")))},
		"negative counts":    {bkey("k:x"), string(entry(record("k:x", `,"ok":-5`)))},
	} {
		// Published as a router would put it, past the client's key check.
		if _, err := js.Publish(ctx, "$KV.idleclaw_records."+kvp[0], []byte(kvp[1])); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Oversized: the evil router raises the bucket's limit first (router
	// a sets it back whenever it makes sure of the bucket: try again).
	huge := entry(record("k:huge", `,"pad":"`+strings.Repeat("x", 100<<10)+`"`))
	eventually(t, "the evil router could not put an oversized entry", func() bool {
		st, err := js.Stream(ctx, "KV_idleclaw_records")
		if err != nil {
			t.Fatal(err)
		}
		sc := st.CachedInfo().Config
		sc.MaxMsgSize = 2 << 20
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
		_, err = kv.Put(ctx, bkey("k:huge"), huge)
		return err == nil
	})
	// A good record after the garbage: once it is taken, the garbage
	// before it was seen, and none of it was taken.
	if _, err := kv.Put(ctx, bkey("k:marker"), entry(record("k:marker", ""))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the good record after the garbage was not taken", func() bool { return a.h.RecordCount() >= 2 })
	if n := a.h.RecordCount(); n != 2 {
		t.Fatalf("%d records: some garbage was taken (want the node's and the good one)", n)
	}
	// A flood of records, far more than the router keeps.
	const flood = 3000
	for i := range flood {
		k := fmt.Sprintf("k:evil-%d", i)
		if _, err := js.PublishAsync("$KV.idleclaw_records."+bkey(k), entry(record(k, ""))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("the flood was not acknowledged")
	}
	eventually(t, "router a never filled its records", func() bool { return a.h.RecordCount() == maxRecords })
	if _, _, text := chatTimes(t, a.url, "m"); text != "Echo: hi" {
		t.Fatalf("router a does not serve after the flood: %q", text)
	}
	// A good record of the connected node, after it all: applied.
	id := key.NodeID()
	q := `,"canary":{"m:latest":{"verdicts":[false,false,false,false],"quarantined":true,"last":"` +
		time.Now().UTC().Format(time.RFC3339Nano) + `"}}`
	if _, err := kv.Put(ctx, bkey("k:"+id), entry(record("k:"+id, q))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the good record after the garbage was not applied", func() bool {
		return nodeInfo(a, id).Tiers["m:latest"] == hub.TierQuarantined
	})
	if n := a.h.RecordCount(); n > maxRecords {
		t.Errorf("%d records kept, over MaxRecords %d", n, maxRecords)
	}
}

// TestRecordsSharedAgainAfterNATSRestart: NATS restarted without its
// state (the bucket empty): the records of the nodes connected to a
// router are put again, so that a router joining afterwards gets them.
func TestRecordsSharedAgainAfterNATSRestart(t *testing.T) {
	nats := natstest.Start(t)
	a := newRecordsRouter(t, nats.URL, "a", hub.Config{})
	key := linkKeyed(t, a)
	for range 4 {
		a.h.Judge(key.NodeID(), "m:latest", false)
	}
	nc, err := natsgo.Connect(nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bkey := base64.RawURLEncoding.EncodeToString([]byte("k:" + key.NodeID()))
	eventually(t, "the record was never put", func() bool {
		kv, err := js.KeyValue(t.Context(), "idleclaw_records")
		if err != nil {
			return false
		}
		e, err := kv.Get(t.Context(), bkey)
		return err == nil && strings.Contains(string(e.Value()), `"quarantined":true`)
	})
	nc.Close()
	nats.Restart()
	b := newRecordsRouter(t, nats.URL, "b", hub.Config{})
	eventually(t, "router b never got a's record after the restart", func() bool { return b.h.RecordCount() == 1 })
}

// TestForgottenRecordsLeaveTheBucket: records a router forgets for room
// (MaxRecords) are deleted from the bucket, and the new node's record
// goes in.
func TestForgottenRecordsLeaveTheBucket(t *testing.T) {
	nats := natstest.Start(t)
	a := newRecordsRouter(t, nats.URL, "a", hub.Config{MaxRecords: 2})
	_, js := natsJS(t, nats.URL)
	kv := recordsBucket(t, js, "router a never made the records' bucket")
	bkey := func(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	for _, k := range []string{"k:old-0", "k:old-1"} {
		v := `{"r":"b","d":{"key":"` + k + `","ok":1,"bad":0,"updated":"` + old + `"}}`
		if _, err := kv.Put(t.Context(), bkey(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "router a never took b's records", func() bool { return a.h.RecordCount() == 2 })
	key := linkKeyed(t, a)
	gone := func(k string) bool {
		_, err := kv.Get(t.Context(), bkey(k))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}
	eventually(t, "the forgotten records stayed in the bucket", func() bool { return gone("k:old-0") && gone("k:old-1") })
	eventually(t, "the node's record never went in", func() bool { return !gone("k:" + key.NodeID()) })
	if n := a.h.RecordCount(); n != 1 {
		t.Errorf("%d records at a; want the node's only", n)
	}
}

// TestRecordsOfAnEarlierRunComeBack: a router restarted under the same
// id (and without a store of its own) takes the records its earlier run
// put: only its own puts of this run are skipped.
func TestRecordsOfAnEarlierRunComeBack(t *testing.T) {
	nats := natstest.Start(t)
	b := newRecordsRouter(t, nats.URL, "b", hub.Config{})
	_, js := natsJS(t, nats.URL)
	kv := recordsBucket(t, js, "router b never made the records' bucket")
	at := time.Now().UTC().Format(time.RFC3339Nano)
	v := `{"r":"a","i":"0123456789abcdef","d":{"key":"k:old","ok":0,"bad":3,"updated":"` + at + `"}}`
	if _, err := kv.Put(t.Context(), base64.RawURLEncoding.EncodeToString([]byte("k:old")), []byte(v)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "router b never took the record", func() bool { return b.h.RecordCount() == 1 })
	a := newRecordsRouter(t, nats.URL, "a", hub.Config{})
	eventually(t, "router a, restarted, never took what it put before", func() bool { return a.h.RecordCount() == 1 })
}
