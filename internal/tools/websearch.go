package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// WebSearchName is the name of the web_search tool.
const WebSearchName = "web_search"

const (
	// DefaultWebSearchTimeout applies when WebSearch.Timeout is 0.
	DefaultWebSearchTimeout = 15 * time.Second
	// MaxQueryLen is the longest accepted query, in characters (runes),
	// after trimming surrounding white space.
	MaxQueryLen = 500

	maxResults       = 3
	maxSnippetRunes  = 200
	maxTitleRunes    = 200
	maxURLRunes      = 500
	maxResponseBytes = 1 << 20
	maxKeyInError    = 40
)

// ErrSearchFailed is wrapped by every error WebSearch.Run returns. Such an
// error's text never contains the SearXNG URL or host, but callers may still
// prefer to show a fixed message.
var ErrSearchFailed = errors.New("web search failed")

// ErrInvalidArguments is wrapped by the errors of WebSearch.ParseArgs, and by
// WebSearch.Run for an invalid query. Their text is safe to give back to the
// model (it echoes no more than a short, quoted argument name).
var ErrInvalidArguments = errors.New("invalid arguments")

// SearchError is the type of the errors WebSearch.Run returns. Its Error text
// is "web search: <Reason>" and is safe to show; Err, the underlying cause,
// may contain the SearXNG URL and is meant for logs only. It matches
// ErrSearchFailed and Err (e.g. context.DeadlineExceeded) with errors.Is.
type SearchError struct {
	Reason string // e.g. "timed out", "HTTP 500", "invalid response"
	Err    error  // may be nil
}

func (e *SearchError) Error() string { return "web search: " + e.Reason }

// Unwrap returns ErrSearchFailed and the cause.
func (e *SearchError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrSearchFailed}
	}
	return []error{ErrSearchFailed, e.Err}
}

// WebSearch is the web_search tool backed by SearXNG. Safe for concurrent use.
type WebSearch struct {
	BaseURL string        // SearXNG base URL, e.g. http://127.0.0.1:8888
	Client  *http.Client  // nil means a package-private client with its own transport
	Timeout time.Duration // per call; 0 (or less) means 15s
}

var webSearchDefinition = json.RawMessage(`{"type":"function","function":{"name":"web_search",` +
	`"description":"Search the web for current information. Returns the top results, each with a title, a URL and a short snippet.",` +
	`"parameters":{"type":"object","properties":{"query":{"type":"string","description":"The search query, in plain words.","minLength":1,"maxLength":500}},` +
	`"required":["query"],"additionalProperties":false}}}`)

// Definition returns the tool as one entry of an Ollama /api/chat `tools`
// array. The caller owns the returned slice.
func (w *WebSearch) Definition() json.RawMessage {
	return append(json.RawMessage(nil), webSearchDefinition...)
}

// Prompt returns system-prompt text that offers the tool to a model without
// native tool support, telling it to answer with a <tool_call> tag.
func (w *WebSearch) Prompt() string {
	return `You can search the web with the tool "web_search". Use it when the question needs current or factual information you do not reliably know; otherwise answer directly.
To search, reply with exactly this and nothing else:
<tool_call>{"name": "web_search", "arguments": {"query": "your search query"}}</tool_call>
The search results will then be given to you in the next message. Use them to answer, and cite the URLs you relied on.`
}

// ParseArgs checks tool-call arguments against the tool's schema: a JSON
// object with exactly one key, "query", whose value is a string of 1..500
// characters after trimming white space. Unknown and duplicate keys are
// refused. It returns the trimmed query; errors wrap ErrInvalidArguments.
func (w *WebSearch) ParseArgs(args json.RawMessage) (query string, err error) {
	dec := json.NewDecoder(strings.NewReader(string(args)))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return "", argsError("arguments must be a JSON object")
	}
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", argsError("arguments must be a JSON object")
		}
		key, _ := tok.(string)
		if key != "query" {
			return "", argsError(fmt.Sprintf("unknown argument %q", shorten(key, maxKeyInError)))
		}
		if seen {
			return "", argsError(`duplicate argument "query"`)
		}
		seen = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", argsError("arguments must be a JSON object")
		}
		if err := json.Unmarshal(raw, &query); err != nil || raw[0] != '"' {
			return "", argsError(`"query" must be a string`)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", argsError("arguments must be a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", argsError("arguments must be a single JSON object")
	}
	if !seen {
		return "", argsError(`missing required argument "query"`)
	}
	return checkQuery(query)
}

func checkQuery(q string) (string, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return "", argsError(`"query" must not be empty`)
	}
	if n := utf8.RuneCountInString(q); n > MaxQueryLen {
		return "", argsError(fmt.Sprintf(`"query" is too long (%d characters, max %d)`, n, MaxQueryLen))
	}
	return q, nil
}

func argsError(msg string) error {
	return fmt.Errorf("%s: %w: %s", WebSearchName, ErrInvalidArguments, msg)
}

var defaultClient = sync.OnceValue(func() *http.Client {
	var rt http.RoundTripper
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		rt = t.Clone()
	} else {
		rt = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	return &http.Client{Transport: rt}
})

func (w *WebSearch) client() *http.Client {
	if w.Client != nil {
		return w.Client
	}
	return defaultClient()
}

type searxResponse struct {
	Results []searxResult `json:"results"`
}

type searxResult struct {
	URL     string `json:"url"`
	Title   string `json:"title"`
	Content string `json:"content"`
}

// Run searches SearXNG for query and returns the top 3 results as a compact
// text block for a `tool` role message,
// "1. <title>\n<url>\n<snippet>\n\n2. <title>\n...", or "No results." when
// there are none. White space runs in each field become one space; snippets
// are cut to 200 characters, titles to 200, URLs to 500. Results with neither
// title nor URL are skipped.
// Every error wraps ErrSearchFailed and is a *SearchError.
func (w *WebSearch) Run(ctx context.Context, query string) (string, error) {
	query, err := checkQuery(query)
	if err != nil {
		return "", &SearchError{Reason: "invalid query", Err: err}
	}
	u, err := url.Parse(w.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", &SearchError{Reason: "not configured", Err: err}
	}
	u = u.JoinPath("search")
	u.RawQuery = url.Values{
		"q":          {query},
		"format":     {"json"},
		"categories": {"general"},
	}.Encode()
	u.Fragment = ""

	timeout := w.Timeout
	if timeout <= 0 {
		timeout = DefaultWebSearchTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", &SearchError{Reason: "not configured", Err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "idleclaw-router")

	resp, err := w.client().Do(req)
	if err != nil {
		return "", ctxError(parent, ctx, err, "request failed")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		return "", &SearchError{Reason: "HTTP " + strconv.Itoa(resp.StatusCode)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return "", ctxError(parent, ctx, err, "reading response failed")
	}
	if len(body) > maxResponseBytes {
		return "", &SearchError{Reason: "response too large"}
	}
	var sr searxResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		return "", &SearchError{Reason: "invalid response", Err: err}
	}
	return formatResults(sr.Results), nil
}

// ctxError classifies a transport error: the caller's context ending, the
// per-call timeout, or another failure.
func ctxError(parent, ctx context.Context, err error, reason string) error {
	switch {
	case parent.Err() != nil:
		if errors.Is(parent.Err(), context.Canceled) {
			return &SearchError{Reason: "canceled", Err: parent.Err()}
		}
		return &SearchError{Reason: "timed out", Err: parent.Err()}
	case ctx.Err() != nil:
		return &SearchError{Reason: "timed out", Err: ctx.Err()}
	}
	return &SearchError{Reason: reason, Err: err}
}

func formatResults(results []searxResult) string {
	var sb strings.Builder
	n := 0
	for _, r := range results {
		title := shorten(collapse(r.Title), maxTitleRunes)
		link := shorten(collapse(r.URL), maxURLRunes)
		if title == "" && link == "" {
			continue
		}
		if title == "" {
			title = "(untitled)"
		}
		n++
		if n > 1 {
			sb.WriteString("\n\n")
		}
		sb.WriteString(strconv.Itoa(n))
		sb.WriteString(". ")
		sb.WriteString(title)
		if link != "" {
			sb.WriteByte('\n')
			sb.WriteString(link)
		}
		if snippet := shorten(collapse(r.Content), maxSnippetRunes); snippet != "" {
			sb.WriteByte('\n')
			sb.WriteString(snippet)
		}
		if n == maxResults {
			break
		}
	}
	if n == 0 {
		return "No results."
	}
	return sb.String()
}

// collapse replaces every run of white space (including newlines) with one
// space and trims the ends, so each field stays on one line.
func collapse(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// shorten cuts s to at most n runes.
func shorten(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
