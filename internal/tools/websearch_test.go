package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWebSearchDefinition(t *testing.T) {
	var w WebSearch
	def := w.Definition()
	var d struct {
		Type     string `json:"type"`
		Function struct {
			Name        string `json:"name"`
			Description string `json:"description"`
			Parameters  struct {
				Type       string `json:"type"`
				Properties map[string]struct {
					Type      string `json:"type"`
					MinLength int    `json:"minLength"`
					MaxLength int    `json:"maxLength"`
				} `json:"properties"`
				Required             []string `json:"required"`
				AdditionalProperties *bool    `json:"additionalProperties"`
			} `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(def, &d); err != nil {
		t.Fatalf("Definition is not valid JSON: %v", err)
	}
	f := d.Function
	if d.Type != "function" || f.Name != WebSearchName || f.Description == "" {
		t.Fatalf("bad definition %s", def)
	}
	q, ok := f.Parameters.Properties["query"]
	if f.Parameters.Type != "object" || !ok || q.Type != "string" || q.MinLength != 1 || q.MaxLength != MaxQueryLen ||
		len(f.Parameters.Properties) != 1 || !reflect.DeepEqual(f.Parameters.Required, []string{"query"}) ||
		f.Parameters.AdditionalProperties == nil || *f.Parameters.AdditionalProperties {
		t.Fatalf("bad parameters schema %s", def)
	}
	def[0] = 'X' // the caller owns its copy
	if json.Valid(def) == json.Valid(w.Definition()) {
		t.Fatal("Definition returns shared storage")
	}
	if p := w.Prompt(); !strings.Contains(p, `<tool_call>{"name": "web_search", "arguments": {"query": `) || !strings.Contains(p, "</tool_call>") {
		t.Fatalf("Prompt lacks the tag format: %q", p)
	}
}

func TestParseArgs(t *testing.T) {
	long := strings.Repeat("é", MaxQueryLen)
	tests := []struct {
		args    string
		want    string
		wantErr string // substring; "" means accepted
	}{
		{`{"query":"golang generics"}`, "golang generics", ""},
		{` { "query" : "  padded\t" } `, "padded", ""},
		{`{"query":"caf\u00e9 \"quoted\""}`, `café "quoted"`, ""},
		{`{"query":"日本の天気"}`, "日本の天気", ""},
		{`{"query":"` + long + `"}`, long, ""},
		{`{"query":"  ` + long + `  "}`, long, ""},
		{``, "", "must be a JSON object"},
		{`null`, "", "must be a JSON object"},
		{`[]`, "", "must be a JSON object"},
		{`["query"]`, "", "must be a JSON object"},
		{`"golang"`, "", "must be a JSON object"},
		{`42`, "", "must be a JSON object"},
		{`{`, "", "must be a JSON object"},
		{`{"query":"a"`, "", "must be a JSON object"},
		{`{"query":"a",}`, "", "must be a JSON object"},
		{`{"query" "a"}`, "", "must be a JSON object"},
		{`{"query":"a"}x`, "", "single JSON object"},
		{`{"query":"a"}{}`, "", "single JSON object"},
		{`{}`, "", `missing required argument "query"`},
		{`{"query":""}`, "", "must not be empty"},
		{`{"query":" \n\t "}`, "", "must not be empty"},
		{`{"query":1}`, "", `"query" must be a string`},
		{`{"query":null}`, "", `"query" must be a string`},
		{`{"query":true}`, "", `"query" must be a string`},
		{`{"query":["a"]}`, "", `"query" must be a string`},
		{`{"query":{"q":"a"}}`, "", `"query" must be a string`},
		{`{"query":"a","limit":3}`, "", `unknown argument "limit"`},
		{`{"limit":3,"query":"a"}`, "", `unknown argument "limit"`},
		{`{"Query":"a"}`, "", `unknown argument "Query"`},
		{`{"q":"a"}`, "", `unknown argument "q"`},
		{`{"` + strings.Repeat("k", 1000) + `":1}`, "", `unknown argument "` + strings.Repeat("k", maxKeyInError) + `"`},
		{`{"query":"a","query":"b"}`, "", `duplicate argument "query"`},
		{`{"query":"` + long + `x"}`, "", "too long (501 characters, max 500)"},
	}
	var w WebSearch
	for _, tt := range tests {
		name := tt.args
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			got, err := w.ParseArgs(json.RawMessage(tt.args))
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParseArgs(%s) = %q, %v; want %q", tt.args, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseArgs(%s) = %q, want error %q", tt.args, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidArguments) ||
				!strings.HasPrefix(err.Error(), "web_search: invalid arguments: ") {
				t.Fatalf("ParseArgs(%s) error %q, want it to contain %q", tt.args, err, tt.wantErr)
			}
			if len(err.Error()) > 120 {
				t.Fatalf("error text too long: %q", err)
			}
		})
	}
}

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		`{"query":"golang"}`, `{"query":"  x  "}`, `{}`, `{"query":1}`, `{"query":"a","x":1}`,
		`{"query":"a","query":"b"}`, `[]`, `null`, `{"query":"\u00e9\ud83c"}`, `{"query":"a"} `,
	} {
		f.Add([]byte(s))
	}
	var w WebSearch
	f.Fuzz(func(t *testing.T, args []byte) {
		q, err := w.ParseArgs(args)
		if err != nil {
			if q != "" || !errors.Is(err, ErrInvalidArguments) || len(err.Error()) > 200 {
				t.Fatalf("ParseArgs(%q) = %q, %v", args, q, err)
			}
			return
		}
		var m map[string]any
		if json.Unmarshal(args, &m) != nil || len(m) != 1 {
			t.Fatalf("accepted %q, which is not a one-key object", args)
		}
		s, ok := m["query"].(string)
		if !ok || strings.TrimSpace(s) != q {
			t.Fatalf("accepted %q with query %q", args, q)
		}
		if n := utf8.RuneCountInString(q); n < 1 || n > MaxQueryLen || q != strings.TrimSpace(q) {
			t.Fatalf("accepted query %q (%d runes)", q, n)
		}
	})
}

// searxResult builds one result the way SearXNG's JSON output has it.
func fakeResult(i int, content string) map[string]any {
	return map[string]any{
		"url":           fmt.Sprintf("https://example.org/page%d", i),
		"title":         fmt.Sprintf("Result %d", i),
		"content":       content,
		"engine":        "duckduckgo",
		"parsed_url":    []string{"https", "example.org", fmt.Sprintf("/page%d", i), "", "", ""},
		"template":      "default.html",
		"engines":       []string{"duckduckgo", "brave"},
		"positions":     []int{i, i + 1},
		"publishedDate": nil,
		"score":         2.5 / float64(i),
		"category":      "general",
		"priority":      "",
	}
}

func fakeBody(query string, results ...map[string]any) string {
	if results == nil {
		results = []map[string]any{}
	}
	b, _ := json.Marshal(map[string]any{
		"query":                query,
		"number_of_results":    0,
		"results":              results,
		"answers":              []any{},
		"corrections":          []any{},
		"infoboxes":            []any{},
		"suggestions":          []string{"other"},
		"unresponsive_engines": []any{},
	})
	return string(b)
}

type fakeSearx struct {
	t       *testing.T
	path    string // expected path
	query   string // expected q
	status  int
	body    string
	block   bool          // wait for the request context to end
	started chan struct{} // closed (once) when a blocking request arrived
}

func (f *fakeSearx) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	want := url.Values{"q": {f.query}, "format": {"json"}, "categories": {"general"}}
	if r.Method != http.MethodGet || r.URL.Path != f.path || !reflect.DeepEqual(r.URL.Query(), want) {
		f.t.Errorf("fake SearXNG got %s %s, want GET %s?%s", r.Method, r.URL.RequestURI(), f.path, want.Encode())
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	if f.block {
		close(f.started)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
			f.t.Errorf("request context did not end")
		}
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	if f.status != 0 {
		rw.WriteHeader(f.status)
	}
	_, _ = rw.Write([]byte(f.body))
}

func TestWebSearchRun(t *testing.T) {
	long := strings.Repeat("日本語のテキスト ", 60) // multi-byte, far over 200 runes
	tests := []struct {
		name       string
		query      string // as passed to Run
		wantQ      string // as SearXNG must receive it
		basePath   string // path part of BaseURL
		status     int
		body       string
		block      bool
		cancel     bool // cancel the caller's context once the request arrived
		want       string
		wantReason string
		wantIs     error
	}{
		{
			name: "top 3 of 5", query: "golang & generics?", wantQ: "golang & generics?",
			body: fakeBody("golang & generics?", fakeResult(1, "First snippet."), fakeResult(2, "Second\n  snippet\twith   space."),
				fakeResult(3, ""), fakeResult(4, "Fourth."), fakeResult(5, "Fifth.")),
			want: "1. Result 1\nhttps://example.org/page1\nFirst snippet.\n\n" +
				"2. Result 2\nhttps://example.org/page2\nSecond snippet with space.\n\n" +
				"3. Result 3\nhttps://example.org/page3",
		},
		{
			name: "long snippet cut to 200 runes", query: "  日本  ", wantQ: "日本", basePath: "/searx",
			body: fakeBody("日本", fakeResult(1, long)),
			want: "1. Result 1\nhttps://example.org/page1\n" + string([]rune(collapse(long))[:200]),
		},
		{
			name: "skips empty results", query: "q", wantQ: "q",
			body: fakeBody("q", map[string]any{"url": "", "title": "", "content": "junk"},
				map[string]any{"url": "https://a.example/", "content": "no title"}),
			want: "1. (untitled)\nhttps://a.example/\nno title",
		},
		{name: "empty results", query: "nothing", wantQ: "nothing", body: fakeBody("nothing"), want: "No results."},
		{name: "null results", query: "nothing", wantQ: "nothing", body: `{"query":"nothing","results":null}`, want: "No results."},
		{name: "HTTP 500", query: "q", wantQ: "q", status: 500, body: "Internal Server Error", wantReason: "HTTP 500"},
		{name: "HTTP 429", query: "q", wantQ: "q", status: 429, body: "Too Many Requests", wantReason: "HTTP 429"},
		{name: "invalid JSON", query: "q", wantQ: "q", body: `<html>not json</html>`, wantReason: "invalid response"},
		{name: "wrong JSON shape", query: "q", wantQ: "q", body: `{"results":[{"title":5}]}`, wantReason: "invalid response"},
		{name: "too large", query: "q", wantQ: "q", body: `{"results":[],"pad":"` + strings.Repeat("x", maxResponseBytes) + `"}`, wantReason: "response too large"},
		{name: "slower than Timeout", query: "q", wantQ: "q", block: true, wantReason: "timed out", wantIs: context.DeadlineExceeded},
		{name: "caller cancels", query: "q", wantQ: "q", block: true, cancel: true, wantReason: "canceled", wantIs: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeSearx{t: t, path: tt.basePath + "/search", query: tt.wantQ, status: tt.status, body: tt.body,
				block: tt.block, started: make(chan struct{})}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			w := &WebSearch{BaseURL: srv.URL + tt.basePath, Client: srv.Client(), Timeout: 5 * time.Second}
			if tt.block && !tt.cancel {
				w.Timeout = 100 * time.Millisecond
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				go func() {
					<-fake.started
					cancel()
				}()
			}
			start := time.Now()
			got, err := w.Run(ctx, tt.query)
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("Run took %v", elapsed)
			}
			if tt.wantReason == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Run = %q, %v\nwant %q", got, err, tt.want)
				}
				return
			}
			checkSearchError(t, err, srv.URL, tt.wantReason)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v does not match %v", err, tt.wantIs)
			}
			if got != "" {
				t.Fatalf("Run returned text %q with an error", got)
			}
		})
	}
}

func checkSearchError(t *testing.T, err error, serverURL, wantReason string) {
	t.Helper()
	var se *SearchError
	if err == nil || !errors.Is(err, ErrSearchFailed) || !errors.As(err, &se) || se.Reason != wantReason {
		t.Fatalf("error %v, want a SearchError with reason %q wrapping ErrSearchFailed", err, wantReason)
	}
	if err.Error() != "web search: "+wantReason {
		t.Fatalf("error text %q", err)
	}
	u, _ := url.Parse(serverURL)
	if strings.Contains(err.Error(), serverURL) || strings.Contains(err.Error(), u.Host) || strings.Contains(err.Error(), u.Hostname()) {
		t.Fatalf("error text %q leaks the SearXNG address", err)
	}
}

func TestWebSearchRunErrors(t *testing.T) {
	// A closed server: connection refused.
	srv := httptest.NewServer(http.NotFoundHandler())
	closedURL := srv.URL
	srv.Close()

	tests := []struct {
		name       string
		base       string
		query      string
		wantReason string
		wantIs     error
	}{
		{"connection refused", closedURL, "q", "request failed", nil},
		{"no base URL", "", "q", "not configured", nil},
		{"bad scheme", "ftp://127.0.0.1:1", "q", "not configured", nil},
		{"unparsable base URL", "http://[::1", "q", "not configured", nil},
		{"empty query", closedURL, "   ", "invalid query", ErrInvalidArguments},
		{"too long query", closedURL, strings.Repeat("a", MaxQueryLen+1), "invalid query", ErrInvalidArguments},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &WebSearch{BaseURL: tt.base, Timeout: 2 * time.Second}
			got, err := w.Run(context.Background(), tt.query)
			if got != "" {
				t.Fatalf("got text %q", got)
			}
			checkSearchError(t, err, closedURL, tt.wantReason)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v does not match %v", err, tt.wantIs)
			}
		})
	}

	t.Run("caller context already canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := &WebSearch{BaseURL: closedURL}
		_, err := w.Run(ctx, "q")
		checkSearchError(t, err, closedURL, "canceled")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v is not context.Canceled", err)
		}
	})
}

// TestWebSearchConcurrent runs many searches on one WebSearch with the
// default client (run with -race).
func TestWebSearchConcurrent(t *testing.T) {
	fake := &fakeSearx{t: t, path: "/search", query: "q", body: fakeBody("q", fakeResult(1, "x"))}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	w := &WebSearch{BaseURL: srv.URL + "/"}
	errs := make(chan error, 16)
	for range cap(errs) {
		go func() {
			got, err := w.Run(context.Background(), "q")
			if err == nil && !strings.HasPrefix(got, "1. Result 1\n") {
				err = fmt.Errorf("got %q", got)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestShorten(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""}, {"abc", 3, "abc"}, {"abcd", 3, "abc"}, {"日本語です", 2, "日本"}, {"a\xffb", 2, "a\xff"},
	} {
		if got := shorten(tt.in, tt.n); got != tt.want {
			t.Errorf("shorten(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
