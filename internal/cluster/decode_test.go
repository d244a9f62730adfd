package cluster

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// checkSummary fails t unless s keeps every bound decodeSummary promises.
func checkSummary(t *testing.T, key string, s Summary) {
	t.Helper()
	if s.Router != key || !summaryURLOK(s.URL) || s.Nodes < 0 || s.Nodes > maxNodesPerRouter ||
		s.Waiting < 0 || s.Waiting > maxNodesPerRouter || len(s.All) > maxSummaryModels || len(s.Now) > maxSummaryModels {
		t.Fatalf("summary out of bounds: %+v", s)
	}
	for _, list := range [][]hub.ModelInfo{s.All, s.Now} {
		names := map[string]bool{}
		for _, m := range list {
			if !wire.ValidNormalizedName(m.Name) || names[m.Name] || !wire.ValidModelFields(m.Model) || len(m.Model.Capabilities) > 0 {
				t.Fatalf("model refused by the protocol's checks kept: %+v", m.Model)
			}
			names[m.Name] = true
			if got := wire.CapabilitiesOf(m.Capabilities).Names(); !slices.Equal(got, m.Capabilities) {
				t.Fatalf("capabilities %q kept, want only known ones, once: %q", m.Capabilities, got)
			}
			if m.Nodes < 0 || m.Nodes > s.Nodes || m.Origins < 0 || m.Origins > m.Nodes ||
				m.FreeSlots < 0 || m.FreeSlots > 10*m.Nodes || m.Verified < 0 || m.Verified > s.Nodes ||
				m.Unverified < 0 || m.Unverified > s.Nodes || m.Quarantined < 0 || m.Quarantined > s.Nodes ||
				len(m.Digests) > maxSummaryDigests {
				t.Fatalf("counts out of bounds: %+v", m)
			}
			for d, n := range m.Digests {
				if !digestKeyOK(d) || n.Nodes < 0 || n.Nodes > s.Nodes || n.Verified < 0 || n.Verified > n.Nodes {
					t.Fatalf("digest out of bounds: %q %+v", d, n)
				}
			}
		}
	}
}

// TestHostileSummaryBounded plays a router whose summary claims what it
// cannot have. The counts are clamped where they are decoded, so that
// summing the network's summaries cannot overflow or go negative; a
// model no node could register, or listed twice, is dropped with the
// rest of the summary kept (a router must not vanish for one model);
// digests not in the hub's form, unknown capabilities and a URL that is
// not a printable http(s) one are dropped; a model's digests are cut to
// maxSummaryDigests.
func TestHostileSummaryBounded(t *testing.T) {
	good := hub.ModelInfo{Model: wire.Model{Name: "good:latest"}, Nodes: 1}
	huge := hub.ModelInfo{Model: wire.Model{Name: "m:latest"}, Nodes: math.MaxInt, Origins: math.MaxInt,
		FreeSlots: math.MaxInt, Verified: math.MaxInt, Unverified: math.MaxInt, Quarantined: -5,
		Digests: map[string]hub.DigestInfo{strings.Repeat("a", 64): {Nodes: math.MaxInt, Verified: -1}}}
	b, _ := json.Marshal(Summary{Router: "evil", Nodes: math.MaxInt, Waiting: -3, All: []hub.ModelInfo{huge}, Now: []hub.ModelInfo{huge}})
	s, dropped, ok := decodeSummary("evil", b)
	if !ok || dropped != 0 {
		t.Fatalf("a summary with overlarge counts: ok %v, %d dropped; want clamped", ok, dropped)
	}
	checkSummary(t, "evil", s)
	if m := s.All[0]; s.Nodes != maxNodesPerRouter || m.Nodes != maxNodesPerRouter || m.Verified != maxNodesPerRouter {
		t.Fatalf("clamped to %d nodes, model %+v", s.Nodes, m)
	}

	for name, bad := range map[string]hub.ModelInfo{
		"a name no node sends":  {Model: wire.Model{Name: "\x1b[2Jx"}},
		"a name not normalized": {Model: wire.Model{Name: "m"}},
		"a name too long":       {Model: wire.Model{Name: strings.Repeat("x", wire.MaxModelName+1) + ":latest"}},
		"the good model again":  good,
		"a bad detail":          {Model: wire.Model{Name: "d:latest", Quantization: strings.Repeat("q", 1000)}},
	} {
		b, _ := json.Marshal(Summary{Router: "evil", Nodes: 2, All: []hub.ModelInfo{good, bad}, Now: []hub.ModelInfo{good, bad}})
		s, dropped, ok := decodeSummary("evil", b)
		if !ok || dropped != 2 || len(s.All) != 1 || len(s.Now) != 1 || s.All[0].Name != "good:latest" {
			t.Errorf("%s: ok %v, %d dropped, kept %+v; want the good model only", name, ok, dropped, s.All)
		}
	}

	odd := hub.ModelInfo{Model: wire.Model{Name: "m:latest", Capabilities: []string{"\x1b[2J"}}, Nodes: 1,
		Capabilities: []string{"tools", strings.Repeat("z", 5000), "tools", "vision"},
		Digests:      map[string]hub.DigestInfo{"sha256:" + strings.Repeat("a", 64): {}, "ABC": {}, "abc": {Nodes: 1}}}
	b, _ = json.Marshal(Summary{Router: "evil", URL: "http://x/\x1b[2J", Nodes: 1, All: []hub.ModelInfo{odd}})
	s, _, ok = decodeSummary("evil", b)
	if !ok {
		t.Fatal("a summary with odd fields refused whole")
	}
	checkSummary(t, "evil", s)
	if m := s.All[0]; s.URL != "" || !slices.Equal(m.Capabilities, []string{"tools", "vision"}) || len(m.Digests) != 1 {
		t.Fatalf("kept URL %q, capabilities %q, digests %v", s.URL, m.Capabilities, m.Digests)
	}
	if _, _, ok := decodeSummary("evil", []byte(`{"router":"other"}`)); ok {
		t.Error("a summary filed under another router's id accepted")
	}

	many := hub.ModelInfo{Model: wire.Model{Name: "m:latest"}, Nodes: 1, Digests: map[string]hub.DigestInfo{}}
	for i := range maxSummaryDigests + 1 {
		many.Digests[fmt.Sprintf("%064x", i)] = hub.DigestInfo{}
	}
	b, _ = json.Marshal(Summary{Router: "evil", Nodes: 1, All: []hub.ModelInfo{many}})
	if len(b) > maxSummaryBytes {
		t.Fatal("the digests test summary is over the byte bound")
	}
	s, _, ok = decodeSummary("evil", b)
	if !ok {
		t.Fatalf("a model with %d digests refused, not cut", len(many.Digests))
	}
	if n := len(s.All[0].Digests); n != maxSummaryDigests {
		t.Errorf("a model with %d digests kept %d", len(many.Digests), n)
	}
}

// FuzzDecodeSummary: whatever a router puts in the bucket, the summary
// decoded from it keeps every bound, or is refused.
func FuzzDecodeSummary(f *testing.F) {
	ok, _ := json.Marshal(Summary{Router: "r1", URL: "https://r1.example", Nodes: 3, Waiting: 1,
		All: []hub.ModelInfo{{Model: wire.Model{Name: "m:latest", Digest: "sha256:" + strings.Repeat("b", 64)}, Nodes: 3, Origins: 2, FreeSlots: 4,
			Verified: 1, Unverified: 2, Capabilities: []string{"tools"}, Digests: map[string]hub.DigestInfo{strings.Repeat("b", 64): {Nodes: 3, Verified: 1}}}},
		Now: []hub.ModelInfo{{Model: wire.Model{Name: "m:latest"}, Nodes: 3, FreeSlots: 4}}})
	f.Add("r1", ok)
	f.Add("r1", []byte(`{"router":"r1","nodes":-1,"all":[{"name":"m:latest","Nodes":9e18}],"now":null}`))
	f.Add("r1", []byte(`{"router":"r1","all":[{"name":"a"},{"name":"a"}],"now":[{"name":"b:latest","Capabilities":["x"],"capabilities":["y"]}]}`))
	f.Add("x.y", []byte(`{"router":"x.y"}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		s, _, ok := decodeSummary(key, data)
		if !ok {
			return
		}
		checkSummary(t, key, s)
	})
}

// FuzzDecodeRequest: a forwarded request is refused, or its id, sender
// and inbox can name only what they name in subjects.
func FuzzDecodeRequest(f *testing.F) {
	ok, _ := json.Marshal(request{ID: "abc123", From: "r1", Events: "_INBOX.x.y", Req: requestBody{Model: "m"}})
	f.Add(ok)
	f.Add([]byte(`{"id":"a.b","from":"r1","events":"_INBOX.x"}`))
	f.Add([]byte(`{"id":"a","from":"r1","events":"_INBOX.>"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, ok := decodeRequest(data)
		if !ok {
			return
		}
		if r.ID == "" || len(r.ID) > maxIDLen || strings.ContainsAny(r.ID, ".*> ") || !ValidRouterID(r.From) ||
			len(r.Events) > maxInboxLen || !strings.HasPrefix(r.Events, "_INBOX.") || strings.ContainsAny(r.Events, "*> ") {
			t.Fatalf("request out of bounds: %+v", r)
		}
	})
}

// FuzzDecodeFrame: a message of a forwarded answer is refused, or the
// event it carries is one this router's dialect writers can take: a known
// kind, finish reason and failure, at most 64 tool calls with names any
// dialect accepts, a bounded failure text and a known tier.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"s":1,"e":{"k":1,"t":"one"}}`))
	f.Add([]byte(`{"s":2,"e":{"k":7,"fr":"stop","u":{}}}`))
	f.Add([]byte(`{"s":3,"e":{"k":6,"t":"","f":2}}`))
	f.Add([]byte(`{"s":4,"e":{"k":3,"calls":[{"id":"c1","function":{"name":"get_weather","arguments":{"city":"x"}}}]}}`))
	f.Add([]byte(`{"b":true}`))
	f.Add([]byte(`{"end":"no_node"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, ok := decodeFrame(data)
		if !ok || fr.Ev == nil {
			return
		}
		ev, ok := fr.Ev.dispatch()
		if !ok {
			return
		}
		if ev.Kind < dispatch.Content || ev.Kind > dispatch.Done || ev.Position < 0 || len(ev.Calls) > 64 ||
			!finishReasons[ev.FinishReason] || !tiers[ev.Tier] || ev.Failure < dispatch.FailNode || ev.Failure > dispatch.FailTimeout {
			t.Fatalf("event out of bounds: %+v", ev)
		}
		if ev.Kind == dispatch.Failed && (ev.Text == "" || len(ev.Text) > maxFailedText) {
			t.Fatalf("failure text out of bounds: %q", ev.Text)
		}
		for _, c := range ev.Calls {
			if !wire.ValidToolName(c.Function.Name) || len(c.ID) > maxCallID || !json.Valid(orEmpty(c.Function.Arguments)) {
				t.Fatalf("tool call out of bounds: %+v", c)
			}
		}
	})
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// TestTrimDigests: nodes choose the digests they register a model with,
// so a router publishes, and keeps of another's summary, only the
// maxSummaryDigests digests with the most nodes, without touching the
// hub's own map.
func TestTrimDigests(t *testing.T) {
	ds := map[string]hub.DigestInfo{}
	for i := range 3 * maxSummaryDigests {
		ds[fmt.Sprintf("%064x", i)] = hub.DigestInfo{Nodes: 1}
	}
	popular := fmt.Sprintf("%064x", 3*maxSummaryDigests-1)
	ds[popular] = hub.DigestInfo{Nodes: 7, Verified: 2}
	got := trimDigests(ds)
	if len(got) != maxSummaryDigests || len(ds) != 3*maxSummaryDigests {
		t.Fatalf("kept %d of %d digests (the input now has %d)", len(got), 3*maxSummaryDigests, len(ds))
	}
	if got[popular] != ds[popular] {
		t.Fatalf("the digest with the most nodes was cut: %+v", got[popular])
	}
	if again := trimDigests(got); len(again) != maxSummaryDigests {
		t.Fatalf("trimming again kept %d", len(again))
	}
}

// TestBucketKeysHaveOneSpelling: a ban or a record is filed under the
// one base64 spelling of its id, so that lifting a ban (a delete of
// that key) lifts it; a key whose unused bits are set names nothing.
func TestBucketKeysHaveOneSpelling(t *testing.T) {
	for _, id := range []string{"n", "node-1", "key-abcdefghijklmnopqrstuvwxyz"} {
		k := banKey(id)
		if got, ok := banID(k); !ok || got != id {
			t.Fatalf("banID(banKey(%q)) = %q, %v", id, got, ok)
		}
		if got, ok := recordKeyOf(recordBucketKey(id)); !ok || got != id {
			t.Fatalf("recordKeyOf(recordBucketKey(%q)) = %q, %v", id, got, ok)
		}
	}
	// "n" is "bg"; "bh" decodes to "n" too when its unused bits are ignored.
	if id, ok := banID("bh"); ok {
		t.Errorf("banID(%q) = %q: a second spelling of a ban's key", "bh", id)
	}
	if id, ok := recordKeyOf("bh"); ok {
		t.Errorf("recordKeyOf(%q) = %q: a second spelling of a record's key", "bh", id)
	}
}
