package canary

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
)

// TestCanariesRealOllama runs the canaries against real Ollamas serving
// the tiny model, as scripts/e2e-ollama.sh sets them up:
// IDLECLAW_CANARY_OLLAMAS is "honestA,honestB,liar" — two Ollamas with
// different settings (parallelism, flash attention, KV-cache type) serving
// the same model (the same digest), and one serving the same weights
// configured differently, behind a proxy that reports the honest digest
// (a liar about what it serves). Without the variable the test is not
// run; with IDLECLAW_REQUIRE_OLLAMA=1 its absence fails.
func TestCanariesRealOllama(t *testing.T) {
	urls := strings.Split(os.Getenv("IDLECLAW_CANARY_OLLAMAS"), ",")
	if len(urls) != 3 || urls[0] == "" {
		if os.Getenv("IDLECLAW_REQUIRE_OLLAMA") == "1" {
			t.Fatal("IDLECLAW_CANARY_OLLAMAS is not set (IDLECLAW_REQUIRE_OLLAMA=1)")
		}
		t.Skip("IDLECLAW_CANARY_OLLAMAS is not set: scripts/e2e-ollama.sh runs this test against real Ollamas")
	}
	want := 200
	if v, err := strconv.Atoi(os.Getenv("IDLECLAW_CANARY_COUNT")); err == nil && v > 0 {
		want = v
	}
	honestDigest := digestOf(t, urls[0], "stories:latest")
	if d := digestOf(t, urls[1], "stories:latest"); d != honestDigest {
		t.Fatalf("the honest Ollamas disagree on the digest: %s and %s", honestDigest, d)
	}
	liarURL := lyingProxy(t, urls[2], honestDigest)

	nw := newNetwork(t, hub.Config{})
	start := func(octet, ollamaURL string) string {
		k, _ := identity.New()
		a, err := agent.New(agent.Config{Server: nw.url, Ollama: &ollama.Client{BaseURL: ollamaURL}, Identity: k, MaxConcurrent: 2,
			Owner:      agent.Owner{Poll: -1}, // the test, not an owner, is the only other client of these Ollamas
			HTTPClient: &http.Client{Transport: &headerTransport{octet: octet}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = a.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-done })
		return k.NodeID()
	}
	honestA, honestB, liar := start("1", urls[0]), start("2", urls[1]), start("3", liarURL)
	deadline := time.Now().Add(30 * time.Second)
	for len(nw.hub.Nodes()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("nodes did not register")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	for _, n := range nw.hub.Nodes() {
		if d := n.Tiers["stories:latest"]; d != hub.TierUnverified {
			t.Fatalf("node %s starts as %s", n.NodeID, d)
		}
	}

	r := New(Config{Share: 1, Tokens: 48, Parallel: 1}, nw.hub, nw.d)
	sentAtQuarantine := int64(0)
	honestDisagreed := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for round := 1; r.Stats().Sent < int64(want); round++ {
		if ctx.Err() != nil {
			t.Fatalf("ran out of time after %d canaries", r.Stats().Sent)
		}
		rs := time.Now()
		before := r.Stats().Sent
		r.Round(ctx)
		if round%10 == 1 {
			t.Logf("round %d: %d canaries in %s", round, r.Stats().Sent-before, time.Since(rs).Round(time.Millisecond))
		}
		if sentAtQuarantine == 0 && tierOf(nw, liar) == hub.TierQuarantined {
			sentAtQuarantine = r.Stats().Sent
			t.Logf("CANARY liar quarantined after round %d, %d canaries sent in all", round, sentAtQuarantine)
		}
		for _, id := range []string{honestA, honestB} {
			if tierOf(nw, id) == hub.TierQuarantined {
				t.Fatalf("round %d: the honest node %s was quarantined (a false positive)", round, id)
			}
		}
	}
	ha, hd := r.Verdicts(honestA)
	hb, hbd := r.Verdicts(honestB)
	la, ld := r.Verdicts(liar)
	honestDisagreed = hd + hbd
	t.Logf("CANARY verdicts: honestA %d agreed %d disagreed; honestB %d/%d; liar %d/%d", ha, hd, hb, hbd, la, ld)
	st := r.Stats()
	t.Logf("CANARY totals: %s; honest verdicts that disagreed: %d; tiers: honestA %s, honestB %s, liar %s",
		st, honestDisagreed, tierOf(nw, honestA), tierOf(nw, honestB), tierOf(nw, liar))
	if sentAtQuarantine == 0 {
		t.Errorf("the liar was never quarantined in %d canaries", st.Sent)
	}
	if tierOf(nw, honestA) != hub.TierVerified || tierOf(nw, honestB) != hub.TierVerified {
		t.Errorf("the honest nodes end %s and %s, want verified", tierOf(nw, honestA), tierOf(nw, honestB))
	}
	fmt.Fprintf(os.Stderr, "CANARY REPORT: canaries=%d judged=%d agreed=%d liar_quarantined_after=%d honest_disagreements=%d slot_time=%s\n",
		st.Sent, st.Judged, st.Agreed, sentAtQuarantine, honestDisagreed, st.SlotTime.Round(time.Millisecond))
}

// digestOf asks an Ollama for a model's digest.
func digestOf(t *testing.T, base, model string) string {
	t.Helper()
	resp, err := http.Get(base + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tags ollama.TagsResponse
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil {
		t.Fatal(err)
	}
	for _, m := range tags.Models {
		if m.Name == model {
			return m.Digest
		}
	}
	t.Fatalf("%s has no %s", base, model)
	return ""
}

// lyingProxy fronts an Ollama and rewrites the digests /api/tags reports,
// so that a node over it claims to serve the honest model.
func lyingProxy(t *testing.T, base, digest string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	p.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/api/tags" {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var tags map[string]any
		if json.Unmarshal(b, &tags) == nil {
			if ms, ok := tags["models"].([]any); ok {
				for _, m := range ms {
					if mm, ok := m.(map[string]any); ok {
						mm["digest"] = digest
					}
				}
			}
			b, _ = json.Marshal(tags)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}
