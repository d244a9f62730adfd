package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

// TestProviderAnswers runs every way a provider answers, streamed and
// not, through a gateway in front of the fake provider and a real
// network (router, node, fake Ollama), and checks where the request went,
// what the client got, what the provider and the network saw, the
// provider's state after, and the request line.
func TestProviderAnswers(t *testing.T) {
	nw := startNetwork(t)
	rl := func(d time.Duration) providertest.Reply { return providertest.RateLimited(d, true) }
	ok := providertest.Reply{Tokens: providerTokens}
	fallback := func(c *Config) { c.OnRateLimit = "fallback" }
	hangFast := func(c *Config) { c.HeaderTimeout = 300 * time.Millisecond }
	wrongKey := func(c *Config) { c.ProviderKey = "sk-wrong-key-0000000000" }
	cases := []struct {
		name    string
		replies []providertest.Reply
		opts    func(*Config)
		route   string
		status  int
		why     string // in X-IdleClaw-Reason and the request line
		calls   int    // requests the provider got
		sleeps  []time.Duration
		passed  bool // the provider's error body reached the client unchanged
		quota   bool // the provider is in a quota cooldown after
		cooling bool // in any cooldown after
	}{
		{name: "answer", replies: []providertest.Reply{ok}, route: "provider", status: 200, why: "provider answered", calls: 1},
		{name: "openai insufficient_quota", replies: []providertest.Reply{providertest.InsufficientQuota()}, route: "network", status: 200,
			why: "out of credit (429 insufficient_quota)", calls: 1, quota: true, cooling: true},
		{name: "openrouter 402", replies: []providertest.Reply{providertest.PaymentRequired()}, route: "network", status: 200,
			why: "out of credit (402)", calls: 1, quota: true, cooling: true},
		{name: "openrouter 402 max_tokens", replies: []providertest.Reply{providertest.PaymentRequiredMaxTokens()}, route: "network", status: 200,
			why: "out of credit (402)", calls: 1, quota: true, cooling: true},
		{name: "deepseek 402", replies: []providertest.Reply{providertest.InsufficientBalance()}, route: "network", status: 200,
			why: "out of credit (402 invalid_request_error)", calls: 1, quota: true, cooling: true},
		{name: "openai billing hard limit", replies: []providertest.Reply{providertest.BillingHardLimit()}, route: "network", status: 200,
			why: "out of credit (400 billing_hard_limit_reached)", calls: 1, quota: true, cooling: true},
		{name: "anthropic credit too low", replies: []providertest.Reply{providertest.CreditTooLow()}, route: "network", status: 200,
			why: "out of credit (400 invalid_request_error)", calls: 1, quota: true, cooling: true},
		{name: "rate limit, retried after Retry-After", replies: []providertest.Reply{rl(2 * time.Second), ok}, route: "provider", status: 200,
			why: "after a rate-limit wait of 2s", calls: 2, sleeps: []time.Duration{2 * time.Second}},
		{name: "rate limit, wait too long", replies: []providertest.Reply{rl(20 * time.Second)}, route: "network", status: 200,
			why: "rate limited (429 rate_limit_exceeded, asks 20s)", calls: 1, cooling: true},
		{name: "rate limit, fallback chosen", replies: []providertest.Reply{rl(2 * time.Second)}, opts: fallback, route: "network", status: 200,
			why: "rate limited (429 rate_limit_exceeded, asks 2s)", calls: 1, cooling: true},
		{name: "rate limit twice", replies: []providertest.Reply{rl(2 * time.Second), rl(3 * time.Second)}, route: "network", status: 200,
			why: "asks 3s, again after waiting 2s", calls: 2, sleeps: []time.Duration{2 * time.Second}, cooling: true},
		{name: "tokens rate limit, wait from the message", replies: []providertest.Reply{providertest.TokensRateLimited(634 * time.Millisecond), ok},
			route: "provider", status: 200, why: "wait of 634ms", calls: 2, sleeps: []time.Duration{634 * time.Millisecond}},
		{name: "500", replies: []providertest.Reply{providertest.ServerError()}, route: "network", status: 200,
			why: "provider failed (500 server_error)", calls: 1, cooling: true},
		{name: "503 overloaded", replies: []providertest.Reply{providertest.Overloaded()}, route: "network", status: 200,
			why: "provider failed (503 server_error)", calls: 1, cooling: true},
		{name: "anthropic 529", replies: []providertest.Reply{providertest.AnthropicOverloaded()}, route: "network", status: 200,
			why: "provider failed (529 overloaded_error)", calls: 1, cooling: true},
		{name: "502 page", replies: []providertest.Reply{providertest.BadGateway()}, route: "network", status: 200,
			why: "provider failed (502)", calls: 1, cooling: true},
		{name: "timeout", replies: []providertest.Reply{{Hang: true}}, opts: hangFast, route: "network", status: 200,
			why: "provider no answer in 300ms", calls: 1, cooling: true},
		{name: "bad request", replies: []providertest.Reply{providertest.BadRequest("messages", "Invalid 'messages': empty array.")},
			route: "provider", status: 400, why: "refused the request (400 invalid_request_error)", calls: 1, passed: true},
		{name: "context length", replies: []providertest.Reply{providertest.ContextLengthExceeded()},
			route: "provider", status: 400, why: "(400 context_length_exceeded)", calls: 1, passed: true},
		{name: "model not found", replies: []providertest.Reply{providertest.ModelNotFound("gpt-4o-mini")},
			route: "provider", status: 404, why: "(404 model_not_found)", calls: 1, passed: true},
		{name: "wrong key", opts: wrongKey, route: "provider", status: 401, why: "(401 invalid_api_key)", calls: 1, passed: true},
	}
	for _, tc := range cases {
		for _, stream := range []bool{false, true} {
			name := tc.name + map[bool]string{false: "/whole", true: "/stream"}[stream]
			t.Run(name, func(t *testing.T) {
				opts := []func(*Config){}
				if tc.opts != nil {
					opts = append(opts, tc.opts)
				}
				replies := tc.replies
				if len(replies) == 0 {
					replies = []providertest.Reply{ok}
				}
				r := newRig(t, nw, sequence(replies...), opts...)
				netBefore, hdrBefore := nw.chats(), len(nw.chatHeaders())
				res := r.chat(t, "gpt-4o-mini", stream)
				if res.status != tc.status {
					t.Fatalf("status %d, want %d; body %s", res.status, tc.status, res.body)
				}
				if got := res.header.Get(HeaderRoute); got != tc.route {
					t.Errorf("%s %q, want %q", HeaderRoute, got, tc.route)
				}
				if got := res.header.Get(HeaderReason); !strings.Contains(got, tc.why) {
					t.Errorf("%s %q, want it to hold %q", HeaderReason, got, tc.why)
				}
				if n := r.provider.Count(); n != tc.calls {
					t.Errorf("the provider got %d requests, want %d", n, tc.calls)
				}
				if got := r.clock.Sleeps(); !slices.Equal(got, tc.sleeps) {
					t.Errorf("rate-limit waits %v, want %v", got, tc.sleeps)
				}
				for _, pr := range r.provider.Requests() {
					if want := "Bearer " + r.gw.cfg.ProviderKey; pr.Authorization != want {
						t.Errorf("the provider got Authorization %q, want the gateway's key", pr.Authorization)
					}
					if pr.Model != "gpt-4o-mini" || pr.Stream != stream {
						t.Errorf("the provider got model %q stream %v", pr.Model, pr.Stream)
					}
				}
				switch tc.route {
				case "provider":
					if nw.chats() != netBefore {
						t.Errorf("the network got a request for an answer the provider gave")
					}
					if tc.passed {
						want := replies[len(replies)-1].Body
						if tc.name == "wrong key" {
							want = providertest.InvalidAPIKey(r.gw.cfg.ProviderKey).Body
						}
						if res.body != want {
							t.Errorf("the client got %q, want the provider's body %q", res.body, want)
						}
						if res.header.Get("X-Request-Id") != "req_fake0123456789" {
							t.Errorf("the provider's headers did not reach the client: %v", res.header)
						}
					} else if res.text != providerText {
						t.Errorf("the client got %q, want the provider's %q", res.text, providerText)
					}
				case "network":
					if res.text != networkText {
						t.Errorf("the client got %q, want the network's %q (body %s)", res.text, networkText, res.body)
					}
					if got := res.header.Get(HeaderModel); got != "stories" {
						t.Errorf("%s %q, want stories", HeaderModel, got)
					}
					reqs := nw.ollama.Requests()
					if len(reqs) != netBefore+1 || !strings.HasPrefix(reqs[len(reqs)-1].Model, "stories") {
						t.Errorf("the network's Ollama got %d new requests (want 1) for %v", len(reqs)-netBefore, reqs[len(reqs)-1].Model)
					}
					hdrs := nw.chatHeaders()
					if len(hdrs) != hdrBefore+1 {
						t.Fatalf("the router got %d chat requests, want 1", len(hdrs)-hdrBefore)
					}
					if a := hdrs[len(hdrs)-1].Get("Authorization"); a != "" {
						t.Errorf("the network got an Authorization header %q: no key may leave for the network", a)
					}
				}
				snap := r.gw.State().Snapshot(r.clock.Now())
				if snap.Quota != tc.quota || snap.Cooling != tc.cooling {
					t.Errorf("state after: %+v, want quota %v cooling %v", snap, tc.quota, tc.cooling)
				}
				line := r.lastLine(t)
				for _, want := range []string{"route=" + tc.route + " ", "status=" + itoa(tc.status), "why=", "model=gpt-4o-mini", "duration="} {
					if !strings.Contains(line, want) {
						t.Errorf("request line %q lacks %q", line, want)
					}
				}
				if !strings.Contains(line, tc.why) {
					t.Errorf("request line %q lacks the reason %q", line, tc.why)
				}
				if strings.Contains(r.out.String(), r.gw.cfg.ProviderKey) {
					t.Errorf("the key is in the request lines: %s", r.out.String())
				}
			})
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestUnreachableProvider: a provider that refuses connections sends the
// request to the network, and the provider cools down briefly.
func TestUnreachableProvider(t *testing.T) {
	nw := startNetwork(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/v1"
	dead.Close()
	r := newRig(t, nw, providerOK, func(c *Config) { c.ProviderURL = deadURL })
	for _, stream := range []bool{false, true} {
		res := r.chat(t, "gpt-4o-mini", stream)
		if res.status != 200 || res.text != networkText || res.header.Get(HeaderRoute) != "network" {
			t.Fatalf("stream %v: %d %s %q: %s", stream, res.status, res.header.Get(HeaderRoute), res.header.Get(HeaderReason), res.body)
		}
		r.clock.Advance(time.Minute) // past the short cooldown
	}
	if why := r.lastLine(t); !strings.Contains(why, "provider unreachable") {
		t.Errorf("request line %q does not say the provider was unreachable", why)
	}
}

// TestMidStream: once the provider's stream reached the client, a
// failure ends it with an error event after the provider's own tokens,
// and the network is not asked: an answer is never spliced.
func TestMidStream(t *testing.T) {
	nw := startNetwork(t)
	cases := []struct {
		name      string
		reply     providertest.Reply
		errorWant string // in the last error event's message
		ownError  bool   // the provider's own error event, passed on
	}{
		{name: "cut", reply: providertest.Reply{Tokens: providerTokens, Cut: true}, errorWant: "the connection closed mid-answer"},
		{name: "stall", reply: providertest.Reply{Tokens: providerTokens, Stall: true}, errorWant: "no data in 300ms"},
		{name: "provider error event", reply: providertest.Reply{Tokens: providerTokens, ErrorEvent: providertest.StreamFailed(502, "Upstream error")},
			errorWant: "Upstream error", ownError: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nw, func(providertest.Request) providertest.Reply { return tc.reply },
				func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
			before := nw.chats()
			res := r.chat(t, "gpt-4o-mini", true)
			if res.status != 200 || res.header.Get(HeaderRoute) != "provider" {
				t.Fatalf("%d %s: %s", res.status, res.header.Get(HeaderRoute), res.body)
			}
			if res.text != providerText {
				t.Errorf("the client got %q, want the provider's tokens %q and nothing else", res.text, providerText)
			}
			if nw.chats() != before {
				t.Errorf("the network was asked after the provider's stream began")
			}
			n := len(res.events)
			if n < 2 || res.events[n-1] != "[DONE]" {
				t.Fatalf("the stream does not end with an error event and [DONE]: %q", res.events)
			}
			var ev struct {
				Error struct {
					Message string `json:"message"`
					Code    any    `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(res.events[n-2]), &ev); err != nil || !strings.Contains(ev.Error.Message, tc.errorWant) {
				t.Fatalf("the last event %q is not an error saying %q", res.events[n-2], tc.errorWant)
			}
			if !tc.ownError && ev.Error.Code != "stream_interrupted" {
				t.Errorf("error code %v, want stream_interrupted", ev.Error.Code)
			}
			errors := 0
			for _, e := range res.events {
				if strings.HasPrefix(e, `{"error"`) {
					errors++
				}
			}
			if errors != 1 {
				t.Errorf("%d error events, want exactly one: %q", errors, res.events)
			}
			if !strings.Contains(r.lastLine(t), "stream_error=") {
				t.Errorf("the request line does not note the broken stream: %s", r.lastLine(t))
			}
		})
	}
}

// TestBrokenBeforeTheClient: a provider that fails before any byte has
// reached the client (a whole answer cut or stalled half way, a stream
// whose first event is a credit error) still falls back to the network.
func TestBrokenBeforeTheClient(t *testing.T) {
	nw := startNetwork(t)
	cases := []struct {
		name   string
		reply  providertest.Reply
		stream bool
		why    string
		quota  bool
	}{
		{name: "whole answer cut", reply: providertest.Reply{Tokens: providerTokens, Cut: true}, why: "broke off before any of it was sent"},
		{name: "whole answer stalled", reply: providertest.Reply{Tokens: providerTokens, Stall: true}, why: "no data in 300ms"},
		{name: "stream opens with a 402 event", reply: providertest.Reply{ErrorEvent: providertest.StreamFailed(402, "Insufficient credits")}, stream: true,
			why: "stream began with an error (402)", quota: true},
		{name: "stream opens with a 502 event", reply: providertest.Reply{ErrorEvent: providertest.StreamFailed(502, "Provider returned error")}, stream: true,
			why: "stream began with an error (502)"},
		{name: "stream cut after its opening chunk", reply: providertest.Reply{Cut: true, Tokens: nil}, stream: true,
			why: "stream failed before its first token (the connection closed mid-answer)"},
		{name: "stream stalled after its opening chunk", reply: providertest.Reply{Stall: true, Tokens: nil}, stream: true,
			why: "stream failed before its first token (no data in 300ms)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nw, func(providertest.Request) providertest.Reply { return tc.reply },
				func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
			res := r.chat(t, "gpt-4o-mini", tc.stream)
			if res.status != 200 || res.header.Get(HeaderRoute) != "network" || res.text != networkText {
				t.Fatalf("%d %s %q: %s", res.status, res.header.Get(HeaderRoute), res.header.Get(HeaderReason), res.body)
			}
			if got := res.header.Get(HeaderReason); !strings.Contains(got, tc.why) {
				t.Errorf("reason %q, want %q", got, tc.why)
			}
			if q := r.gw.State().Snapshot(r.clock.Now()).Quota; q != tc.quota {
				t.Errorf("quota cooldown %v, want %v", q, tc.quota)
			}
		})
	}
}
