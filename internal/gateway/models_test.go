package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

// TestModelMapping: once the provider is out of credit, a mapped model
// goes to its network model, a model the network serves keeps its name,
// and any other goes to "*" or, without one, the network's default (the
// first of /api/models).
func TestModelMapping(t *testing.T) {
	nw := startNetwork(t)
	quota := func(providertest.Request) providertest.Reply { return providertest.InsufficientQuota() }
	cases := []struct {
		name   string
		models map[string]string
		asked  string
		want   string // the model the network's Ollama got
		header string // X-IdleClaw-Model
	}{
		{"mapped", map[string]string{"gpt-4o-mini": "stories"}, "gpt-4o-mini", "stories:latest", "stories"},
		{"mapped to a tag", map[string]string{"gpt-4o": "qwen3:0.6b"}, "gpt-4o", "qwen3:0.6b", "qwen3:0.6b"},
		{"served by the network", nil, "stories", "stories:latest", "stories"},
		{"the network's default", nil, "gpt-4.1", "qwen3:0.6b", "qwen3:0.6b"}, // the largest model is /api/models' first
		{"the star", map[string]string{"*": "stories"}, "o3", "stories:latest", "stories"},
		{"no model at all", nil, "", "qwen3:0.6b", "qwen3:0.6b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nw, quota, func(c *Config) { c.Models = tc.models })
			res := r.chat(t, tc.asked, false)
			if res.status != 200 || res.text != networkText {
				t.Fatalf("%d: %s", res.status, res.body)
			}
			reqs := nw.ollama.Requests()
			if got := reqs[len(reqs)-1].Model; got != tc.want {
				t.Errorf("the network's Ollama got model %q, want %q", got, tc.want)
			}
			if got := res.header.Get(HeaderModel); got != tc.header {
				t.Errorf("%s %q, want %q", HeaderModel, got, tc.header)
			}
			var body struct{ Model string }
			_ = json.Unmarshal([]byte(res.body), &body)
			if body.Model != tc.header {
				t.Errorf("the answer names model %q, want the network's %q", body.Model, tc.header)
			}
		})
	}
}

// TestNoNetworkModel: a network with no model to answer with is a 503
// that says so.
func TestNoNetworkModel(t *testing.T) {
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"models":[],"capabilities":{}}`)
	}))
	defer empty.Close()
	nw := &network{url: empty.URL}
	r := newRig(t, nw, func(providertest.Request) providertest.Reply { return providertest.PaymentRequired() },
		func(c *Config) { c.Models = nil })
	res := r.chat(t, "gpt-4o-mini", true)
	if res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, "no node serves a model now") ||
		!strings.Contains(res.body, "out of credit (402)") || res.header.Get(HeaderRoute) != "network" {
		t.Fatalf("%d %s: %s", res.status, res.header.Get(HeaderRoute), res.body)
	}
}

// TestNetworkDown: provider out of credit and network unreachable: a 502
// that names both.
func TestNetworkDown(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	nw := &network{url: dead.URL}
	r := newRig(t, nw, func(providertest.Request) providertest.Reply { return providertest.InsufficientQuota() })
	res := r.chat(t, "gpt-4o-mini", false)
	if res.status != http.StatusBadGateway || !strings.Contains(res.body, "insufficient_quota") ||
		!strings.Contains(res.body, "the IdleClaw network did not either (unreachable") {
		t.Fatalf("%d: %s", res.status, res.body)
	}
}

func TestModelList(t *testing.T) {
	nw := startNetwork(t)
	list := func(t *testing.T, r *rig) ([]string, map[string]string, http.Header) {
		t.Helper()
		resp, err := http.Get(r.url + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Object string
			Data   []ModelEntry
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.Object != "list" {
			t.Fatalf("%d %+v %v", resp.StatusCode, out, err)
		}
		var ids []string
		owners := map[string]string{}
		for _, m := range out.Data {
			ids = append(ids, m.ID)
			owners[m.ID] = m.OwnedBy
		}
		return ids, owners, resp.Header
	}
	r := newRig(t, nw, providerOK)
	ids, owners, h := list(t, r)
	if strings.Join(ids, ",") != "gpt-4o-mini,gpt-4o,qwen3:0.6b,stories:latest" || owners["gpt-4o"] != "system" || owners["stories:latest"] != "idleclaw" {
		t.Fatalf("ids %v owners %v", ids, owners)
	}
	if h.Get(HeaderRoute) != "provider,network" {
		t.Errorf("%s %q", HeaderRoute, h.Get(HeaderRoute))
	}
	// A provider that refuses the key: the network's models alone.
	r = newRig(t, nw, providerOK, func(c *Config) { c.ProviderKey = "sk-wrong-000000000" })
	ids, _, h = list(t, r)
	if strings.Join(ids, ",") != "qwen3:0.6b,stories:latest" || h.Get(HeaderRoute) != "network" || !strings.Contains(h.Get(HeaderReason), "provider: status 401") {
		t.Fatalf("ids %v, %s %q %q", ids, HeaderRoute, h.Get(HeaderRoute), h.Get(HeaderReason))
	}
}

// TestRequestBounds: the gateway refuses what it will not carry, before
// the provider sees it.
func TestRequestBounds(t *testing.T) {
	nw := startNetwork(t)
	r := newRig(t, nw, providerOK, func(c *Config) { c.MaxBodyBytes = 1024 })
	big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("a", 2000) + `"}]}`
	for _, tc := range []struct {
		body   string
		status int
		msg    string
	}{
		{big, 413, "over 1024 bytes"},
		{`{"model":"gpt-4o-mini",`, 400, "invalid JSON body"},
		{`{"model":["gpt"]}`, 400, "model: must be a string"},
		{`"hello"`, 400, "must be a JSON object"},
	} {
		res := r.post(t, []byte(tc.body))
		if res.status != tc.status || !strings.Contains(res.body, tc.msg) || !strings.Contains(res.body, `"type":"invalid_request_error"`) {
			t.Errorf("%.30q: %d %s", tc.body, res.status, res.body)
		}
	}
	if n := r.provider.Count(); n != 0 {
		t.Errorf("the provider got %d refused requests", n)
	}
}

// TestLoop: a gateway whose provider URL points back at itself refuses
// its own request (508), takes that as a failing provider, and the
// request is still answered by the network.
func TestLoop(t *testing.T) {
	nw := startNetwork(t)
	srv := httptest.NewUnstartedServer(nil)
	self := "http://" + srv.Listener.Addr().String() + "/v1"
	gw, err := New(Config{ProviderURL: self, NetworkURL: nw.url, Models: map[string]string{"gpt-4o-mini": "stories"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = gw
	srv.Start()
	defer srv.Close()
	r := &rig{url: srv.URL}
	res := r.chat(t, "gpt-4o-mini", false)
	if res.status != 200 || res.text != networkText || !strings.Contains(res.header.Get(HeaderReason), "508 loop_detected") {
		t.Fatalf("%d %q: %s", res.status, res.header.Get(HeaderReason), res.body)
	}
}

// TestPassthrough: the provider's other endpoints pass through, key
// swapped in; the network is not involved.
func TestPassthrough(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}]}`)
	}))
	defer prov.Close()
	out := &syncBuffer{}
	gw, err := New(Config{ProviderURL: prov.URL + "/v1", ProviderKey: testKey, NetworkURL: "http://127.0.0.1:1", Out: out})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/embeddings?x=1", bytes.NewReader([]byte(`{"model":"text-embedding-3-small","input":"hi"}`)))
	req.Header.Set("Authorization", "Bearer client")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", "secret=1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"embedding"`) || resp.Header.Get(HeaderRoute) != "provider" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got.URL.Path != "/v1/embeddings" || got.URL.RawQuery != "x=1" || got.Header.Get("Authorization") != "Bearer "+testKey ||
		got.Header.Get("Cookie") != "" || string(gotBody) != `{"model":"text-embedding-3-small","input":"hi"}` {
		t.Fatalf("the provider got %s %s %v %s", got.URL.Path, got.URL.RawQuery, got.Header, gotBody)
	}
	if !strings.Contains(out.String(), `route=provider why="passed through: no network fallback for /v1/embeddings"`) {
		t.Errorf("request line: %s", out.String())
	}
}

// TestNoKeyForwardsTheClients: without a key of its own, the gateway
// passes the client's Authorization to the provider.
func TestNoKeyForwardsTheClients(t *testing.T) {
	nw := startNetwork(t)
	r := newRig(t, nw, providerOK, func(c *Config) { c.ProviderKey = "" })
	r.provider.SetRespond(providerOK)
	res := r.chat(t, "gpt-4o-mini", false)
	// The fake wants testKey; the client sent its placeholder: a 401
	// passed on shows whose key went.
	reqs := r.provider.Requests()
	if res.status != 401 || len(reqs) != 1 || reqs[0].Authorization != "Bearer the-clients-own-placeholder" {
		t.Fatalf("%d %v", res.status, reqs)
	}
}

// TestClientLeavesMidStream: a client that goes away ends the provider's
// stream.
func TestClientLeavesMidStream(t *testing.T) {
	nw := startNetwork(t)
	started := make(chan struct{}, 1)
	r := newRig(t, nw, func(providertest.Request) providertest.Reply {
		started <- struct{}{}
		return providertest.Reply{Tokens: []string{"a", "b", "c", "d", "e", "f", "g", "h"}, Delay: 200 * time.Millisecond}
	}, func(c *Config) { c.StallTimeout = 5 * time.Second })
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	req, _ := http.NewRequest(http.MethodPost, r.url+"/v1/chat/completions", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(r.out.String(), "route=provider") {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not end the request after the client left")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}
