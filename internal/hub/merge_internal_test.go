package hub

// In-package tests of the records other routers share (MergeRecord): the
// decoder's bounds, the merge rule, and a fuzz test of the decoder.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// bareKey is the record key of a keyless node registered by registerBare.
func bareKey(id string) string { return "a:192.0.2.1\x00" + id }

func encode(tb testing.TB, d recordData) []byte {
	tb.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// quarantinedFor is canary evidence that took a node out of rotation for
// model at last.
func quarantinedFor(model string, last time.Time) map[string]*evidence {
	return map[string]*evidence{model: {Verdicts: []bool{false, false, false, false}, Quarantined: true, Last: last}}
}

func tierOf(h *Hub, id, model string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tierLocked(h.nodes[id], model)
}

// TestMaxRecordBytes: the largest record the router can write (every
// string at its longest and escaped, every model with a full canary
// window, numbers and times at their longest) fits MaxRecordBytes, and
// the bound is not much larger than that.
func TestMaxRecordBytes(t *testing.T) {
	zone := time.FixedZone("", -7*3600)
	at := time.Date(2026, 12, 6, 20, 0, 0, 123456789, zone)
	ip := strings.Repeat("<", maxRecordIP)
	r := &record{key: "a:" + ip + "\x00" + strings.Repeat("<", wire.MaxNodeID), ip: ip,
		state: breakerHalfOpen, failures: 1<<63 - 1, openedAt: at,
		ok: 49.99999999999999, bad: 49.99999999999999, tps: 1234567.8901234567, updated: at,
		canary: map[string]*evidence{}}
	for i := range maxSeenModels {
		model := strings.Repeat("<", maxModelKey-2) + string(rune('a'+i/10)) + string(rune('a'+i%10))
		e := &evidence{Last: at}
		for range canaryWindow {
			e.Verdicts = append(e.Verdicts, false)
		}
		r.canary[model] = e
	}
	b, err := json.Marshal(r.data())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst case %d bytes, bound %d (%.1f%%)", len(b), MaxRecordBytes, 100*float64(len(b))/float64(MaxRecordBytes))
	if len(b) > MaxRecordBytes {
		t.Fatalf("the largest record is %d bytes, over MaxRecordBytes %d", len(b), MaxRecordBytes)
	}
	if len(b) < MaxRecordBytes*9/10 {
		t.Errorf("MaxRecordBytes %d is loose: the largest record is %d bytes", MaxRecordBytes, len(b))
	}
	if _, ok := decodeRecord(r.key, b, at.Add(time.Hour)); !ok {
		t.Error("the largest record is refused by the decoder")
	}
}

// TestMergeRecordRefuses: damaged, oversized, misfiled and out-of-bounds
// records are refused; times from the future are taken as now.
func TestMergeRecordRefuses(t *testing.T) {
	h := newBareHub(t)
	now := time.Now()
	key := bareKey("n")
	good := recordData{Key: key, IP: "192.0.2.1", OK: 1, Updated: now}
	for name, tc := range map[string]struct {
		key  string
		data []byte
	}{
		"not json":       {key, []byte(`{"key":`)},
		"not an object":  {key, []byte(`[1,2]`)},
		"another key":    {bareKey("m"), encode(t, good)},
		"another ip":     {key, encode(t, recordData{Key: key, IP: "192.0.2.2", Updated: now})},
		"unknown prefix": {"x:n", encode(t, recordData{Key: "x:n", Updated: now})},
		"empty id":       {"k:", encode(t, recordData{Key: "k:", Updated: now})},
		"negative ok":    {key, encode(t, recordData{Key: key, IP: "192.0.2.1", OK: -1, Updated: now})},
		"huge bad":       {key, encode(t, recordData{Key: key, IP: "192.0.2.1", Bad: 1e300, Updated: now})},
		"huge tps":       {key, encode(t, recordData{Key: key, IP: "192.0.2.1", TPS: 1e12, Updated: now})},
		"negative fails": {key, encode(t, recordData{Key: key, IP: "192.0.2.1", Failures: -3, Updated: now})},
		"oversized": {key, []byte(`{"key":"` + strings.ReplaceAll(key, "\x00", `\u0000`) + `","ip":"192.0.2.1","pad":"` +
			strings.Repeat("x", MaxRecordBytes) + `"}`)},
		"long key": {"k:" + strings.Repeat("x", 200), encode(t, recordData{Key: "k:" + strings.Repeat("x", 200), Updated: now})},
	} {
		if h.MergeRecord(tc.key, tc.data) {
			t.Errorf("%s: merged", name)
		}
	}
	if n := h.RecordCount(); n != 0 {
		t.Fatalf("%d records after refused merges", n)
	}

	future := good
	future.Updated = now.Add(100 * 365 * 24 * time.Hour)
	future.Canary = quarantinedFor("x:1", future.Updated)
	future.Canary["long"+strings.Repeat("y", maxModelKey)] = &evidence{Verified: true}
	if !h.MergeRecord(key, encode(t, future)) {
		t.Fatal("a record from the future was refused")
	}
	h.mu.Lock()
	r := h.records[key]
	if r.updated.After(time.Now()) || r.canary["x:1"].Last.After(time.Now()) {
		t.Errorf("times from the future kept: updated %v, last %v", r.updated, r.canary["x:1"].Last)
	}
	if len(r.canary) != 1 {
		t.Errorf("a canary model name over the bound kept: %d models", len(r.canary))
	}
	h.mu.Unlock()
}

// TestMergeRecordRule: a record the router does not have is taken, a
// newer one replaces an idle one, an older one does not; none is marked
// changed (so none goes back to the network); MaxRecords holds.
func TestMergeRecordRule(t *testing.T) {
	st := &memStore{}
	h := New(Config{MaxNodesPerIP: -1, HeartbeatTimeout: time.Hour, Store: st, FlushInterval: time.Hour, MaxRecords: 3})
	t.Cleanup(h.Close)
	now := time.Now()
	key := bareKey("n")
	older := recordData{Key: key, IP: "192.0.2.1", State: breakerOpen, Failures: 3, OpenedAt: now.Add(-time.Second),
		OK: 1, Bad: 3, Updated: now.Add(-time.Second), Canary: quarantinedFor("x:1", now.Add(-time.Second))}
	if !h.MergeRecord(key, encode(t, older)) {
		t.Fatal("an unknown record was not taken")
	}
	newer := recordData{Key: key, IP: "192.0.2.1", OK: 5, Updated: now}
	if !h.MergeRecord(key, encode(t, newer)) {
		t.Fatal("a newer record did not replace an idle one")
	}
	if h.MergeRecord(key, encode(t, older)) {
		t.Fatal("an older record replaced a newer one")
	}
	h.mu.Lock()
	r := h.records[key]
	if r.state != breakerClosed || r.ok != 5 || r.quarantined("x:1") || r.dirty {
		t.Errorf("after the newer record: state %d ok %v quarantined %v dirty %v", r.state, r.ok, r.quarantined("x:1"), r.dirty)
	}
	h.mu.Unlock()
	h.flush()
	if len(st.saved) != 0 {
		t.Errorf("merged records were saved again: %v", st.saved)
	}
	for _, id := range []string{"a", "b", "c"} {
		d := recordData{Key: bareKey(id), IP: "192.0.2.1", Updated: now}
		h.MergeRecord(d.Key, encode(t, d))
	}
	if n := h.RecordCount(); n != 3 {
		t.Errorf("%d records with MaxRecords 3", n)
	}
}

// TestMergeRecordIntoALiveNode: a node connected here keeps this
// router's observations; of another router's record only what it saw
// against the node later applies (an open breaker, a quarantine, a lower
// reputation), and nothing another router saw clears a quarantine seen
// here or raises the reputation.
func TestMergeRecordIntoALiveNode(t *testing.T) {
	h := newBareHub(t)
	registerBare(t, h, "n", 1, "x:1", "y:1")
	key := bareKey("n")
	earlier := time.Now().Add(-time.Hour) // before the registration: the record here is newer
	for range 4 {
		h.Judge("n", "y:1", false)
	}
	if tier := tierOf(h, "n", "y:1"); tier != TierQuarantined {
		t.Fatalf("tier %s after 4 disagreements", tier)
	}
	h.mu.Lock()
	rep := h.records[key].reputation()
	h.mu.Unlock()
	later := time.Now().Add(time.Millisecond)
	clean := map[string]*evidence{"y:1": {Verdicts: []bool{true, true, true}, Verified: true, Last: later}}
	maps := quarantinedFor("x:1", earlier)
	maps["y:1"] = clean["y:1"]
	d := recordData{Key: key, IP: "192.0.2.1", State: breakerOpen, Failures: 3, OpenedAt: earlier, OK: 0, Bad: 40,
		Updated: earlier, Canary: maps}
	if !h.MergeRecord(key, encode(t, d)) {
		t.Fatal("nothing of the other record applied")
	}
	if tier := tierOf(h, "n", "x:1"); tier != TierQuarantined {
		t.Errorf("x:1: tier %s; want the quarantine seen elsewhere", tier)
	}
	if tier := tierOf(h, "n", "y:1"); tier != TierQuarantined {
		t.Errorf("y:1: tier %s; a verdict elsewhere cleared the quarantine seen here", tier)
	}
	info := h.Nodes()[0]
	if info.Breaker != "open" {
		t.Errorf("breaker %s; want the one opened elsewhere", info.Breaker)
	}
	if info.Reputation >= rep {
		t.Errorf("reputation %v; want the lower one of the failures elsewhere (ours %v)", info.Reputation, rep)
	}
	better := d
	better.OK, better.Bad, better.Updated = 40, 0, later
	h.MergeRecord(key, encode(t, better))
	if again := h.Nodes()[0].Reputation; again != info.Reputation {
		t.Errorf("reputation %v after a better record elsewhere; want %v kept", again, info.Reputation)
	}
	if mi, ok := h.Model("x:1"); !ok || mi.Quarantined != 1 {
		t.Errorf("the model view does not count the node quarantined for x:1: %+v", mi)
	}
	if h.MergeRecord(key, encode(t, d)) {
		t.Error("the same record applied twice")
	}
}

// memStore is a RecordStore in memory that keeps what was saved.
type memStore struct{ saved map[string][]byte }

func (s *memStore) LoadRecords(func(string, []byte) error) error { return nil }
func (s *memStore) SaveRecords(b map[string][]byte) error {
	if s.saved == nil {
		s.saved = map[string][]byte{}
	}
	for k, v := range b {
		s.saved[k] = v
	}
	return nil
}
func (s *memStore) LoadBans() ([]string, error) { return nil, nil }
func (s *memStore) PutBan(string, bool) error   { return nil }

// FuzzMergeRecord feeds the decoder of other routers' records anything:
// it must not panic, and what it takes is within the bounds of a record
// (encodes within MaxRecordBytes, at most maxSeenModels canary models of
// at most canaryWindow verdicts) and under the key it came with.
func FuzzMergeRecord(f *testing.F) {
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	seed := func(d recordData) {
		b, _ := json.Marshal(d)
		f.Add(d.Key, b)
	}
	seed(recordData{Key: "k:node", IP: "192.0.2.1", State: breakerOpen, Failures: 3, OpenedAt: now, OK: 2, Bad: 3, TPS: 40,
		Updated: now, Canary: quarantinedFor("x:latest", now)})
	seed(recordData{Key: bareKey("n"), IP: "192.0.2.1", Updated: now})
	f.Add("k:node", []byte(`{"key":"k:node","canary":{"m":null,"n":{"verdicts":[true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true,true]}}}`))
	f.Add("k:node", []byte(`{"key":"k:node","ok":1e400}`))
	f.Add("k:node", []byte(`{"key":"k:other"}`))
	f.Add("a:\x00", []byte(`{"key":"a:\u0000"}`))
	f.Add("k:node", []byte(`null`))
	f.Add("", []byte(``))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		h := New(Config{MaxNodesPerIP: -1, HeartbeatTimeout: time.Hour, Now: func() time.Time { return now }, MaxRecords: 2})
		defer h.Close()
		if !h.MergeRecord(key, data) {
			if h.RecordCount() != 0 {
				t.Fatal("a refused record was kept")
			}
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		r := h.records[key]
		if r == nil || r.key != key || len(h.records) != 1 {
			t.Fatalf("merged under the wrong key: %v", h.records)
		}
		if len(r.canary) > maxSeenModels {
			t.Fatalf("%d canary models", len(r.canary))
		}
		for m, e := range r.canary {
			if e == nil || len(e.Verdicts) > canaryWindow || len(m) > maxModelKey {
				t.Fatalf("canary evidence out of bounds: %q %v", m, e)
			}
		}
		if r.updated.After(now) || r.openedAt.After(now) {
			t.Fatal("a time from the future kept")
		}
		b, err := json.Marshal(r.data())
		if err != nil || len(b) > MaxRecordBytes {
			t.Fatalf("the merged record encodes in %d bytes (%v)", len(b), err)
		}
	})
}
