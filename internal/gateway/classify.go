package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind is what a provider's answer means for routing.
type Kind int

const (
	// OK: the provider answered; the answer goes to the client.
	OK Kind = iota
	// Quota: the credit or quota is gone; retrying is pointless. The
	// request goes to the network and the provider cools down for long.
	Quota
	// RateLimit: too many requests for now; waiting cures it.
	RateLimit
	// Unavailable: a 5xx, a timeout, a refused connection; the request
	// goes to the network and the provider cools down briefly.
	Unavailable
	// ClientError: the request itself was wrong (a bad key, a bad model,
	// a malformed body); the provider's answer goes to the client as is.
	ClientError
)

func (k Kind) String() string {
	switch k {
	case OK:
		return "ok"
	case Quota:
		return "quota"
	case RateLimit:
		return "rate limit"
	case Unavailable:
		return "unavailable"
	case ClientError:
		return "client error"
	}
	return "unknown"
}

// Verdict is a classified provider answer.
type Verdict struct {
	Kind   Kind
	Status int
	// Code is the provider's error code or type, when it is a safe
	// identifier ([a-z0-9_.-], at most 64 bytes): it goes into logs and
	// headers. Messages never do; they may quote the request.
	Code string
	// RetryAfter is how long the provider asks to wait (0: unknown).
	RetryAfter time.Duration
}

// Why is a short, log-safe description: "429 insufficient_quota".
func (v Verdict) Why() string {
	s := strconv.Itoa(v.Status)
	if v.Code != "" {
		s += " " + v.Code
	}
	return s
}

// MaxErrorBody is how much of a provider's error answer is read.
const MaxErrorBody = 64 << 10

// maxMatched is how much of an error message is searched for words.
const maxMatched = 2048

// providerError is the part of an error body that classification uses.
type providerError struct {
	Type    string
	Code    string // a string code, or a numeric one in decimal
	Message string
}

// DecodeProviderError reads the error bodies providers send: OpenAI's
// {"error":{"message","type","param","code"}} (code a string, a number or
// null), Anthropic's {"type":"error","error":{"type","message"}},
// OpenRouter's nested {"error":{"error":{...},"code":402}}, a bare
// {"error":"text"}, {"message":...} or {"detail":...}, and Google's list
// [{"error":{"code":429,"status":"RESOURCE_EXHAUSTED",...}}]. Anything
// else gives the zero value. body is at most MaxErrorBody bytes.
func DecodeProviderError(body []byte) providerError {
	if len(body) > MaxErrorBody {
		body = body[:MaxErrorBody]
	}
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var list []json.RawMessage
		if json.Unmarshal(body, &list) != nil || len(list) == 0 {
			return providerError{}
		}
		body = list[0]
	}
	return decodeErrorObject(body, 0)
}

type errorObject struct {
	Error   json.RawMessage `json:"error"`
	Type    json.RawMessage `json:"type"`
	Code    json.RawMessage `json:"code"`
	Status  json.RawMessage `json:"status"`
	Message json.RawMessage `json:"message"`
	Detail  json.RawMessage `json:"detail"`
}

func decodeErrorObject(raw []byte, depth int) providerError {
	var o errorObject
	if json.Unmarshal(raw, &o) != nil {
		return providerError{}
	}
	pe := providerError{Type: scalar(o.Type), Code: scalar(o.Code), Message: scalar(o.Message)}
	if pe.Code == "" {
		pe.Code = scalar(o.Status)
	}
	if pe.Message == "" {
		pe.Message = scalar(o.Detail)
	}
	if len(o.Error) > 0 && depth < 2 {
		if s := scalar(o.Error); s != "" && o.Error[0] == '"' {
			if pe.Message == "" {
				pe.Message = s
			}
			return pe
		}
		inner := decodeErrorObject(o.Error, depth+1)
		// The inner object is the error; the outer keys fill its gaps
		// (Anthropic's outer "type" is the constant "error").
		if inner.Code == "" {
			inner.Code = pe.Code
		}
		if inner.Message == "" {
			inner.Message = pe.Message
		}
		if inner.Type == "" && pe.Type != "error" {
			inner.Type = pe.Type
		}
		return inner
	}
	return pe
}

// scalar is a JSON string's text or a number's digits ("" otherwise).
func scalar(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String()
		}
	}
	return ""
}

// quotaCodes are error codes and types that mean the money is gone.
var quotaCodes = map[string]bool{
	"insufficient_quota":         true,
	"insufficient_credits":       true,
	"insufficient_balance":       true,
	"billing_hard_limit_reached": true,
	"billing_not_active":         true,
	"credit_balance_too_low":     true,
	"payment_required":           true,
}

// rateCodes are error codes and types of a plain rate limit.
var rateCodes = map[string]bool{
	"rate_limit_exceeded": true,
	"rate_limit_error":    true,
	"requests":            true, // OpenAI's type of an RPM limit
	"tokens":              true, // and of a TPM limit
}

// creditPhrases, in a 4xx other than 429, mean the credit is gone even
// though the status says "bad request" (Anthropic says 400).
var creditPhrases = []string{
	"credit balance is too low",
	"insufficient credit",
	"insufficient balance",
	"insufficient funds",
	"out of credits",
	"exceeded your current quota",
	"billing hard limit",
	"purchase credits",
}

// quotaWords, in a 429 without a rate-limit code, mean the quota is gone.
var quotaWords = []string{"credit", "quota", "billing", "balance"}

// Classify says what a provider's non-2xx answer means. body is the
// start of the error body (at most MaxErrorBody bytes); now resolves an
// HTTP-date Retry-After.
func Classify(status int, h http.Header, body []byte, now time.Time) Verdict {
	pe := DecodeProviderError(body)
	v := Verdict{Status: status, Code: safeCode(pe.Code)}
	if v.Code == strconv.Itoa(status) {
		v.Code = "" // OpenRouter's numeric code repeats the status
	}
	if v.Code == "" {
		v.Code = safeCode(pe.Type)
	}
	code, typ := strings.ToLower(pe.Code), strings.ToLower(pe.Type)
	msg := strings.ToLower(pe.Message)
	if len(msg) > maxMatched {
		msg = msg[:maxMatched]
	}
	switch {
	case status >= 200 && status < 300:
		v.Kind = OK
	case status == http.StatusPaymentRequired, quotaCodes[code], quotaCodes[typ]:
		v.Kind = Quota
	case status == http.StatusTooManyRequests:
		v.Kind = RateLimit
		if !rateCodes[code] && !rateCodes[typ] && containsAny(msg, quotaWords) {
			v.Kind = Quota // "You exceeded your current quota" without a code
		}
	case status >= 400 && status < 500 && containsAny(msg, creditPhrases):
		v.Kind = Quota
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status >= 500:
		v.Kind = Unavailable
	case status >= 400 && status < 500:
		v.Kind = ClientError
	default: // 1xx, 3xx: a base URL that is not an API
		v.Kind = Unavailable
	}
	if v.Kind == RateLimit {
		v.RetryAfter = retryAfter(h, pe.Message, now)
	}
	return v
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// safeCode keeps an identifier fit for a log line or header.
func safeCode(s string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ""
		}
	}
	return strings.ToLower(s)
}

// maxHint caps any wait a provider names, so arithmetic cannot overflow.
const maxHint = time.Hour

var tryAgainRE = regexp.MustCompile(`try again in ((?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+)`)

// retryAfter is the wait a 429 asks for, from (in order) retry-after-ms,
// Retry-After (seconds or an HTTP date), the x-ratelimit-reset-* header
// of a limit with nothing remaining, or the message's "try again in 20s".
// 0 when none says.
func retryAfter(h http.Header, msg string, now time.Time) time.Duration {
	clamp := func(d time.Duration) time.Duration { return max(0, min(d, maxHint)) }
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < float64(maxHint/time.Millisecond) {
			return clamp(time.Duration(ms * float64(time.Millisecond)))
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			if s > maxHint.Seconds() {
				return maxHint
			}
			return clamp(time.Duration(s * float64(time.Second)))
		}
		if t, err := http.ParseTime(v); err == nil {
			return clamp(t.Sub(now))
		}
	}
	var reset time.Duration
	for _, kind := range []string{"Requests", "Tokens"} {
		if strings.TrimSpace(h.Get("X-Ratelimit-Remaining-"+kind)) != "0" {
			continue
		}
		if d, err := time.ParseDuration(strings.TrimSpace(h.Get("X-Ratelimit-Reset-" + kind))); err == nil {
			reset = max(reset, clamp(d))
		}
	}
	if reset > 0 {
		return reset
	}
	if len(msg) > maxMatched {
		msg = msg[:maxMatched]
	}
	if m := tryAgainRE.FindStringSubmatch(msg); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			return clamp(d)
		}
	}
	return 0
}
