package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/providertest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// The decoders of untrusted input: provider error bodies and headers,
// the client's request, the config file and model map, model lists, and
// event streams from the provider or the network.

func FuzzClassify(f *testing.F) {
	for _, r := range []providertest.Reply{
		providertest.InsufficientQuota(), providertest.RateLimited(20*time.Second, true), providertest.TokensRateLimited(time.Second),
		providertest.PaymentRequired(), providertest.InsufficientBalance(), providertest.CreditTooLow(), providertest.BillingHardLimit(),
		providertest.ServerError(), providertest.AnthropicOverloaded(), providertest.BadGateway(), providertest.ContextLengthExceeded(),
	} {
		f.Add(r.Status, []byte(r.Body), r.Header.Get("Retry-After"), r.Header.Get("X-Ratelimit-Reset-Requests"))
	}
	f.Add(429, []byte(`[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]`), "Wed, 21 Oct 2015 07:28:00 GMT", "1h2m3.5s")
	f.Add(402, []byte(`{"error":{"error":{"error":{"message":"x"}}}}`), "", "")
	f.Fuzz(func(t *testing.T, status int, body []byte, retry, reset string) {
		h := http.Header{"Retry-After": {retry}, "X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {reset}}
		v := Classify(status, h, body, t0)
		if v.Kind < OK || v.Kind > ClientError {
			t.Fatalf("kind %d", v.Kind)
		}
		if v.Code != safeCode(v.Code) {
			t.Fatalf("unsafe code %q", v.Code)
		}
		if v.RetryAfter < 0 || v.RetryAfter > maxHint || (v.Kind != RateLimit && v.RetryAfter != 0) {
			t.Fatalf("wait %v for %v", v.RetryAfter, v.Kind)
		}
		if strings.ContainsAny(v.Why(), "\r\n\"") {
			t.Fatalf("why %q", v.Why())
		}
		ev := classifyEvent(body, t0)
		if ev.Status < 400 || ev.Status > 599 {
			t.Fatalf("event status %d", ev.Status)
		}
	})
}

func FuzzDecodeChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":null}`))
	f.Add([]byte(`{"model":"a","model":"b"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeChatRequest(body)
		if err != nil {
			return
		}
		if len(r.Model) > maxModelName {
			t.Fatalf("model of %d bytes", len(r.Model))
		}
		out, err := withModel(body, "stories")
		if err != nil {
			t.Fatalf("a decoded body could not be rewritten: %v", err)
		}
		r2, err := DecodeChatRequest(out)
		if err != nil || r2.Model != "stories" || r2.Stream != r.Stream {
			t.Fatalf("rewritten: %+v, %v (was %+v)", r2, err, r)
		}
	})
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte(`{"provider_url":"https://api.openai.com/v1","provider_key":"sk-x","models":{"gpt-4o-mini":"stories"},"quota_cooldown":"1h"}`))
	f.Add([]byte(`{"on_rate_limit":"fallback","probe_every":"10m","error_cooldown":"0s","max_retry_wait":"5s","network":"http://127.0.0.1:8000"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseFile(data)
		if err != nil {
			return
		}
		if c.ProviderURL != nil && CheckBaseURL(*c.ProviderURL) != nil || c.Network != nil && CheckBaseURL(*c.Network) != nil {
			t.Fatalf("accepted a bad URL: %+v", c)
		}
		if c.ProviderKey != nil && checkKey(*c.ProviderKey) != nil {
			t.Fatalf("accepted a bad key")
		}
		for _, d := range []*Duration{c.QuotaCooldown, c.ProbeEvery, c.ErrorCooldown, c.MaxRetryWait} {
			if d != nil && (*d < 0 || time.Duration(*d) > 24*time.Hour) {
				t.Fatalf("duration %v", time.Duration(*d))
			}
		}
		for _, to := range c.Models {
			if !wire.ValidModelName(to) {
				t.Fatalf("network model %q", to)
			}
		}
	})
}

func FuzzParseModelMap(f *testing.F) {
	f.Add("gpt-4o-mini=stories,*=llama3.2:3b")
	f.Add("a=b=c")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseModelMap(s)
		if err != nil {
			return
		}
		if len(m) > maxMapEntries {
			t.Fatalf("%d entries", len(m))
		}
		for from, to := range m {
			if from == "" || !wire.ValidModelName(to) {
				t.Fatalf("%q=%q", from, to)
			}
		}
	})
}

func FuzzDecodeModelList(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"}]}`))
	f.Add([]byte(`{"data":[{"id":"x","created":"soon"},{"id":""},{"id":"a\u0000b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := DecodeModelList(data)
		if err != nil {
			return
		}
		if len(list) > maxModelEntries {
			t.Fatalf("%d entries", len(list))
		}
		for _, m := range list {
			if m.ID == "" || len(m.ID) > 256 || len(m.OwnedBy) > 256 || m.Object != "model" {
				t.Fatalf("entry %+v", m)
			}
		}
	})
}

func FuzzEventReader(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte(": OPENROUTER PROCESSING\r\n\r\ndata: {\"error\":{\"code\":402}}\r\n\r\n"))
	f.Add([]byte("\n\n\ndata: a\ndata: b\n"))
	f.Add([]byte("data: cut"))
	f.Fuzz(func(t *testing.T, data []byte) {
		er := newEventReader(bytes.NewReader(data))
		total := 0
		for {
			ev, err := er.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errEventTooLarge) {
					t.Fatalf("error %v", err)
				}
				break
			}
			if len(ev) > MaxEventBytes+1 || !bytes.HasSuffix(ev, []byte("\n")) {
				t.Fatalf("event %q", ev)
			}
			if total += len(ev); total > len(data)+1 {
				t.Fatalf("more out than in: %d of %d", total, len(data))
			}
			d := eventData(ev)
			_ = errorEvent(d)
			_ = emptyStart(d)
		}
	})
}
