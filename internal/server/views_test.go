package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

func TestHealth(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *harnessConfig) { c.server.Now = clock.Now })
	h.registerNode(t, "a", 1, model("m:latest", 1))
	h.registerNode(t, "b", 1, model("m:latest", 1))
	clock.Advance(1234*time.Second + 900*time.Millisecond)
	resp, body := h.get(t, "/health")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/health: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"status": "healthy", "uptime_seconds": float64(1234), "node_count": float64(2)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("/health %s = %v, want %v (body %s)", k, got[k], v, body)
		}
	}
}

func TestModelsView(t *testing.T) {
	t.Run("empty network", func(t *testing.T) {
		h := newHarness(t)
		resp, body := h.get(t, "/api/models")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		if string(raw["models"]) != "[]" || string(raw["capabilities"]) != "{}" || len(raw) != 2 {
			t.Errorf("empty network: %s, want {\"models\":[],\"capabilities\":{}}", body)
		}
	})
	t.Run("most servable first, reported capabilities, v1 heuristic", func(t *testing.T) {
		h := newHarness(t)
		h.registerNode(t, "a", 2,
			model("small:1b", 1_000_000_000),
			model("qwen3:8b", 5_000_000_000),                          // reports nothing: name heuristic
			model("qwen3-custom:latest", 6_000_000_000, "completion"), // reported caps beat the name
			model("llama3.2:3b", 2_000_000_000),
		)
		h.registerNode(t, "b", 2,
			model("big:70b", 40_000_000_000, "completion", "tools", "thinking"),
			model("small:1b", 1_000_000_000),
			model("vision:latest", 3_000_000_000, "completion", "vision"),
		)
		got := h.models(t)
		// Both nodes share an address: free slots decide (small:1b has
		// two nodes), then names. Reported sizes order nothing.
		wantOrder := []string{"small:1b", "big:70b", "llama3.2:3b", "qwen3-custom:latest", "qwen3:8b", "vision:latest"}
		if !reflect.DeepEqual(got.Models, wantOrder) {
			t.Errorf("models %v, want %v", got.Models, wantOrder)
		}
		wantCaps := map[string]map[string]bool{
			"big:70b":             {"thinking": true, "tool_calls": true},
			"qwen3-custom:latest": {"thinking": false, "tool_calls": false},
			"qwen3:8b":            {"thinking": true, "tool_calls": true},
			"vision:latest":       {"thinking": false, "tool_calls": false},
			"llama3.2:3b":         {"thinking": false, "tool_calls": true},
			"small:1b":            {"thinking": false, "tool_calls": false},
		}
		if !reflect.DeepEqual(got.Capabilities, wantCaps) {
			t.Errorf("capabilities %v, want %v", got.Capabilities, wantCaps)
		}
	})
}

func TestMetricsJSON(t *testing.T) {
	h := newHarness(t)
	n := h.registerNode(t, "a", 2, model("m:latest", 1), model("n:latest", 1))
	// One answered chat and one refused for lack of a node.
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := n.expect(wire.TypeInferenceReq)
	n.content(req.RequestID, "ok")
	n.finish(req.RequestID, 1, 1)
	tr := streamc.wait(t).all(t)
	h.registerNode(t, "b", 2, model("m:latest", 1))
	if tr.Content != "ok" {
		t.Fatalf("chat: %+v", tr)
	}
	if st, _, _ := h.chatStatus(t, userChat("nosuch", "hi")); st != http.StatusServiceUnavailable {
		t.Fatalf("status %d", st)
	}
	eventually(t, "no request active", func() bool { return h.api.metrics.requestsActive.Load() == 0 })

	_, body := h.get(t, "/metrics")
	var got map[string]json.RawMessage
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wantKeys := []string{"models_available", "nodes_connected", "nodes_registered_total", "requests_active",
		"requests_errors_total", "requests_total", "uptime_seconds"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("/metrics keys %v, want exactly %v", keys, wantKeys)
	}
	for k, want := range map[string]string{
		"nodes_connected": "2", "nodes_registered_total": "2", "requests_total": "2",
		"requests_active": "0", "requests_errors_total": "1",
	} {
		if string(got[k]) != want {
			t.Errorf("%s = %s, want %s", k, got[k], want)
		}
	}
	var models []map[string]any
	if err := json.Unmarshal(got["models_available"], &models); err != nil {
		t.Fatal(err)
	}
	byName := map[string]float64{}
	for _, m := range models {
		if len(m) != 2 {
			t.Errorf("models_available entry %v, want exactly name and node_count", m)
		}
		byName[m["name"].(string)] = m["node_count"].(float64)
	}
	if !reflect.DeepEqual(byName, map[string]float64{"m:latest": 2, "n:latest": 1}) {
		t.Errorf("models_available %s", got["models_available"])
	}
}

func TestMetricsPrometheus(t *testing.T) {
	h := newHarness(t)
	n := h.registerNode(t, "a", 2, model("m:latest", 1))
	streamc := h.openChatAsync(t, userChat("m", "hi"))
	req := n.expect(wire.TypeInferenceReq)
	n.content(req.RequestID, "ok")
	n.finish(req.RequestID, 3, 4)
	streamc.wait(t).all(t)
	eventually(t, "no request active", func() bool { return h.api.metrics.requestsActive.Load() == 0 })

	resp, body := h.get(t, "/metrics/prometheus")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	for _, want := range []string{
		"idleclaw_nodes_connected 1",
		"idleclaw_nodes_registered_total 1",
		"idleclaw_chat_requests_active 0",
		`idleclaw_chat_requests_total{dialect="v1",outcome="ok"} 1`,
		"idleclaw_completion_tokens_total 4",
		"idleclaw_time_to_first_token_seconds_count 1",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestAdminNodes(t *testing.T) {
	tests := []struct {
		name   string
		token  string // configured
		auth   string // Authorization header sent
		status int
	}{
		{"no token configured, none sent", "", "", 401},
		{"no token configured, empty bearer", "", "Bearer ", 401},
		{"no token configured, any bearer", "", "Bearer anything", 401},
		{"token configured, none sent", "s3cret", "", 401},
		{"wrong token", "s3cret", "Bearer s3cre", 401},
		{"longer wrong token", "s3cret", "Bearer s3cret2", 401},
		{"token without Bearer", "s3cret", "s3cret", 401},
		{"right token", "s3cret", "Bearer s3cret", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *harnessConfig) { c.server.AdminToken = tc.token })
			h.registerNode(t, "node-a", 3, model("m:latest", 1), model("n:7b", 2))
			var hdr []string
			if tc.auth != "" {
				hdr = []string{"Authorization", tc.auth}
			}
			resp, body := h.get(t, "/admin/nodes", hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.status == 401 {
				if string(body) != `{"detail":"Unauthorized"}`+"\n" {
					t.Errorf("body %s", body)
				}
				return
			}
			var got struct {
				Nodes []map[string]any `json:"nodes"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Nodes) != 1 {
				t.Fatalf("nodes %s", body)
			}
			nd := got.Nodes[0]
			for _, k := range []string{"node_id", "ip", "models", "connected_seconds", "active_requests", "ollama_version"} {
				if _, ok := nd[k]; !ok {
					t.Errorf("node lacks %q: %s", k, body)
				}
			}
			if nd["node_id"] != "node-a" || nd["ip"] != "127.0.x.x" || nd["ollama_version"] != "0.6.2" ||
				!reflect.DeepEqual(nd["models"], []any{"m:latest", "n:7b"}) {
				t.Errorf("node %v", nd)
			}
			if strings.Contains(string(body), "127.0.0.1") {
				t.Errorf("unmasked IP in %s", body)
			}
		})
	}
}

func TestMaskIP(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1":            "127.0.x.x",
		"203.0.113.77":         "203.0.x.x",
		"::ffff:192.0.2.1":     "192.0.x.x",
		"2001:db8:1:2::3":      "2001:db8:x:x:x:x:x:x",
		"::1":                  "0:0:x:x:x:x:x:x",
		"not an address":       "x",
		"":                     "x",
		"fe80::1%eth0":         "fe80:0:x:x:x:x:x:x",
		"2001:0db8:abcd::ffff": "2001:db8:x:x:x:x:x:x",
	}
	for in, want := range tests {
		if got := MaskIP(in); got != want {
			t.Errorf("MaskIP(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDefaultRateLimit(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *harnessConfig) { c.server.RateDefaultRPM = 3; c.server.Now = clock.Now })
	paths := []string{"/health", "/api/models", "/metrics"} // one bucket for every read
	for _, p := range paths {
		if resp, body := h.get(t, p); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	resp, body := h.get(t, "/health")
	if resp.StatusCode != http.StatusTooManyRequests || string(body) != `{"detail":"Too many requests"}`+"\n" {
		t.Fatalf("/health after the bucket: %d %s", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "20" {
		t.Errorf("Retry-After %q, want 20", ra)
	}
	// The chat bucket is another one.
	if st, _, _ := h.chatStatus(t, userChat("m", "hi")); st != http.StatusServiceUnavailable {
		t.Errorf("chat: %d, want 503 (not rate limited)", st)
	}
	clock.Advance(20 * time.Second)
	if resp, _ := h.get(t, "/health"); resp.StatusCode != http.StatusOK {
		t.Errorf("after 20s: %d", resp.StatusCode)
	}
}

func TestClientIP(t *testing.T) {
	prefixes := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"no proxy configured: header ignored", nil, "203.0.113.5:4242", []string{"1.2.3.4"}, "203.0.113.5"},
		{"untrusted peer: header ignored", prefixes("10.0.0.0/8"), "203.0.113.5:4242", []string{"1.2.3.4"}, "203.0.113.5"},
		{"trusted proxy", prefixes("10.0.0.0/8"), "10.0.0.1:4242", []string{"1.2.3.4"}, "1.2.3.4"},
		{"trusted proxy, no header", prefixes("10.0.0.0/8"), "10.0.0.1:4242", nil, "10.0.0.1"},
		{"chain: nearest untrusted hop", prefixes("10.0.0.0/8"), "10.0.0.1:4242", []string{"6.6.6.6, 1.2.3.4, 10.0.0.7"}, "1.2.3.4"},
		{"spoofed first hop does not win", prefixes("10.0.0.0/8"), "10.0.0.1:4242", []string{"6.6.6.6", "1.2.3.4"}, "1.2.3.4"},
		{"garbage hop: stop at the proxy", prefixes("10.0.0.0/8"), "10.0.0.1:4242", []string{"1.2.3.4, nonsense"}, "10.0.0.1"},
		{"every hop trusted", prefixes("10.0.0.0/8"), "10.0.0.1:4242", []string{"10.1.1.1"}, "10.0.0.1"},
		{"IPv6 peer", nil, "[2001:db8::1]:4242", nil, "2001:db8::1"},
		{"IPv4-mapped peer", prefixes("10.0.0.0/8"), "[::ffff:10.0.0.1]:4242", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
		{"trusted IPv6 proxy", prefixes("::1/128"), "[::1]:4242", []string{"2001:db8::9"}, "2001:db8::9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{TrustedProxies: tc.trusted}}
			r := httptest.NewRequest(http.MethodGet, "/health", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r); got != tc.want {
				t.Errorf("clientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestForwardedForEndToEnd: behind a trusted proxy each forwarded client
// has its own bucket; without trust the header changes nothing.
func TestForwardedForEndToEnd(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		name := "untrusted"
		if trusted {
			name = "trusted"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(c *harnessConfig) {
				c.server.RateChatRPM = 1
				if trusted {
					c.server.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
				}
			})
			st1, _, _ := h.chatStatus(t, userChat("m", "hi"), "X-Forwarded-For", "198.51.100.1")
			st2, _, _ := h.chatStatus(t, userChat("m", "hi"), "X-Forwarded-For", "198.51.100.2")
			want2 := http.StatusTooManyRequests
			if trusted {
				want2 = http.StatusServiceUnavailable
			}
			if st1 != http.StatusServiceUnavailable || st2 != want2 {
				t.Errorf("statuses %d, %d; want 503, %d", st1, st2, want2)
			}
		})
	}
}
