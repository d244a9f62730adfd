package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name  string
		reply providertest.Reply
		kind  Kind
		code  string
		wait  time.Duration
	}{
		{"openai insufficient_quota", providertest.InsufficientQuota(), Quota, "insufficient_quota", 0},
		{"openai rate limit with Retry-After-Ms", providertest.RateLimited(1500*time.Millisecond, true), RateLimit, "rate_limit_exceeded", 1500 * time.Millisecond},
		{"openai rate limit, reset header only", providertest.RateLimited(6*time.Minute, false), RateLimit, "rate_limit_exceeded", 6 * time.Minute},
		{"openai tokens limit, message only", providertest.TokensRateLimited(18642 * time.Millisecond), RateLimit, "rate_limit_exceeded", 18642 * time.Millisecond},
		{"openai billing hard limit", providertest.BillingHardLimit(), Quota, "billing_hard_limit_reached", 0},
		{"openrouter 402", providertest.PaymentRequired(), Quota, "", 0},
		{"openrouter 402 max_tokens", providertest.PaymentRequiredMaxTokens(), Quota, "", 0},
		{"deepseek 402", providertest.InsufficientBalance(), Quota, "invalid_request_error", 0},
		{"anthropic credit too low", providertest.CreditTooLow(), Quota, "invalid_request_error", 0},
		{"500", providertest.ServerError(), Unavailable, "server_error", 0},
		{"503", providertest.Overloaded(), Unavailable, "server_error", 0},
		{"529", providertest.AnthropicOverloaded(), Unavailable, "overloaded_error", 0},
		{"502 html", providertest.BadGateway(), Unavailable, "", 0},
		{"400", providertest.BadRequest("messages", "Invalid 'messages': empty array."), ClientError, "invalid_request_error", 0},
		{"context length", providertest.ContextLengthExceeded(), ClientError, "context_length_exceeded", 0},
		{"404", providertest.ModelNotFound("gpt-9"), ClientError, "model_not_found", 0},
		{"401", providertest.InvalidAPIKey("sk-proj-abcdefghijkl"), ClientError, "invalid_api_key", 0},
		// Bodies seen elsewhere.
		{"openai insufficient_quota with a null code", providertest.Reply{Status: 429,
			Body: `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":null}}`}, Quota, "insufficient_quota", 0},
		{"a 429 that only says quota", providertest.Reply{Status: 429, Body: `{"error":{"message":"Quota exceeded for this month"}}`}, Quota, "", 0},
		{"a 429 without a body", providertest.Reply{Status: 429}, RateLimit, "", 0},
		{"openrouter nested 402", providertest.Reply{Status: 402,
			Body: `{"error":{"error":{"message":"More credits are required to run this request.","code":402},"code":402}}`}, Quota, "", 0},
		{"a gateway's insufficient_credits 402", providertest.Reply{Status: 402,
			Body: `{"error":{"message":"Insufficient credits","type":"insufficient_quota","code":"insufficient_credits"}}`}, Quota, "insufficient_credits", 0},
		{"google resource exhausted", providertest.Reply{Status: 429,
			Body: `[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]`}, Quota, "", 0},
		{"a 403 billing code", providertest.Reply{Status: 403, Body: `{"error":{"message":"Your account is not active","type":"billing_not_active","code":null}}`}, Quota, "billing_not_active", 0},
		{"ollama's string error", providertest.Reply{Status: 400, Body: `{"error":"invalid model name"}`}, ClientError, "", 0},
		{"408", providertest.Reply{Status: 408}, Unavailable, "", 0},
		{"a redirect", providertest.Reply{Status: 301}, Unavailable, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.reply.Header
			if h == nil {
				h = http.Header{}
			}
			v := Classify(tc.reply.Status, h, []byte(tc.reply.Body), t0)
			if v.Kind != tc.kind || v.Code != tc.code || v.RetryAfter != tc.wait || v.Status != tc.reply.Status {
				t.Fatalf("got %v code %q wait %v status %d, want %v %q %v", v.Kind, v.Code, v.RetryAfter, v.Status, tc.kind, tc.code, tc.wait)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	cases := []struct {
		name string
		h    http.Header
		msg  string
		want time.Duration
	}{
		{"seconds", http.Header{"Retry-After": {"7"}}, "", 7 * time.Second},
		{"fractional seconds", http.Header{"Retry-After": {"1.5"}}, "", 1500 * time.Millisecond},
		{"an HTTP date", http.Header{"Retry-After": {t0.Add(90 * time.Second).Format(http.TimeFormat)}}, "", 90 * time.Second},
		{"a date in the past", http.Header{"Retry-After": {t0.Add(-time.Hour).Format(http.TimeFormat)}}, "", 0},
		{"milliseconds first", http.Header{"Retry-After": {"7"}, "Retry-After-Ms": {"250"}}, "", 250 * time.Millisecond},
		{"huge", http.Header{"Retry-After": {"1e300"}}, "", time.Hour},
		{"negative", http.Header{"Retry-After": {"-5"}}, "", 0},
		{"the exhausted limit's reset", http.Header{"X-Ratelimit-Remaining-Requests": {"5"}, "X-Ratelimit-Reset-Requests": {"1s"},
			"X-Ratelimit-Remaining-Tokens": {"0"}, "X-Ratelimit-Reset-Tokens": {"6m0s"}}, "", 6 * time.Minute},
		{"the message", http.Header{}, "Please try again in 1m30.5s. Visit", 90500 * time.Millisecond},
		{"milliseconds in the message", http.Header{}, "try again in 634ms.", 634 * time.Millisecond},
		{"nothing", http.Header{}, "slow down", 0},
		{"garbage", http.Header{"Retry-After": {"soon"}}, "", 0},
	}
	for _, tc := range cases {
		if got := retryAfter(tc.h, tc.msg, t0); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDecodeChatRequest(t *testing.T) {
	cases := []struct {
		body   string
		model  string
		stream bool
		bad    bool
	}{
		{body: `{"model":"gpt-4o-mini","stream":true,"messages":[]}`, model: "gpt-4o-mini", stream: true},
		{body: `{"messages":[]}`},
		{body: `{"model":null,"stream":null}`},
		{body: `{"model":5}`, bad: true},
		{body: `{"stream":"yes"}`, bad: true},
		{body: `[1,2]`, bad: true},
		{body: `null`, bad: true},
		{body: `{"model":"x"`, bad: true},
		{body: ``, bad: true},
		{body: `{"model":"` + string(make([]byte, 300)) + `"}`, bad: true},
	}
	for _, tc := range cases {
		r, err := DecodeChatRequest([]byte(tc.body))
		if (err != nil) != tc.bad || r.Model != tc.model || r.Stream != tc.stream {
			t.Errorf("%.40q: %+v, %v", tc.body, r, err)
		}
	}
	out, err := withModel([]byte(`{"model":"gpt-4o-mini","tools":[{"type":"function"}],"stream":true}`), "stories")
	if err != nil || string(out) != `{"model":"stories","stream":true,"tools":[{"type":"function"}]}` {
		t.Fatalf("withModel: %s, %v", out, err)
	}
	out, err = withModel([]byte(`{"model":"m","messages":[{"role":"user","content":"is 1 < 2 && 3 > 2?"}]}`), "stories")
	if err != nil || !strings.Contains(string(out), `"is 1 < 2 && 3 > 2?"`) {
		t.Fatalf("withModel escaped the client's text: %s, %v", out, err)
	}
}

func TestParseFileAndMap(t *testing.T) {
	f, err := ParseFile([]byte(`{"provider_url":"https://openrouter.ai/api/v1","provider_key":"sk-or-1","network":"http://127.0.0.1:8000",
		"models":{"gpt-4o-mini":"stories","*":"llama3.2:3b"},"on_rate_limit":"fallback","quota_cooldown":"2h","probe_every":"5m"}`))
	if err != nil {
		t.Fatal(err)
	}
	if *f.ProviderURL != "https://openrouter.ai/api/v1" || *f.ProviderKey != "sk-or-1" || f.Models["*"] != "llama3.2:3b" ||
		*f.OnRateLimit != "fallback" || time.Duration(*f.QuotaCooldown) != 2*time.Hour || time.Duration(*f.ProbeEvery) != 5*time.Minute ||
		f.ErrorCooldown != nil || f.MaxRetryWait != nil {
		t.Fatalf("%+v", f)
	}
	for _, bad := range []string{
		`{"provider_url":"ftp://x"}`, `{"network":"api.idleclaw.com"}`, `{"provider_key":"sk with space"}`,
		`{"on_rate_limit":"wait"}`, `{"quota_cooldown":"forever"}`, `{"probe_every":"-1m"}`, `{"probe_every":5}`,
		`{"models":{"gpt-4o":"not a model!"}}`, `{"unknown":1}`, `{} {}`, `[]`, `{"provider_url":"https://user:pw@x/v1"}`,
	} {
		if _, err := ParseFile([]byte(bad)); err == nil {
			t.Errorf("ParseFile(%s) accepted", bad)
		}
	}
	m, err := ParseModelMap(" gpt-4o-mini = stories , *=llama3.2:3b,")
	if err != nil || len(m) != 2 || m["gpt-4o-mini"] != "stories" || m["*"] != "llama3.2:3b" {
		t.Fatalf("ParseModelMap: %v %v", m, err)
	}
	for _, bad := range []string{"gpt-4o", "=stories", "gpt-4o=", "gpt 4o=stories", "a=b c"} {
		if _, err := ParseModelMap(bad); err == nil {
			t.Errorf("ParseModelMap(%q) accepted", bad)
		}
	}
}
