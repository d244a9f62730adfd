package web

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func serve(t *testing.T, h http.Handler, method, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func newHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var assetRef = regexp.MustCompile(`"(/assets/[a-z]+\.(?:js|css|svg))\?v=([0-9a-f]{12})"`)

// TestPage checks what the page is served as: the same document at / and
// /network, its assets named with their hashes, and every answer with the
// security headers.
func TestPage(t *testing.T) {
	h := newHandler(t)
	root := serve(t, h, http.MethodGet, "/")
	network := serve(t, h, http.MethodGet, "/network")
	if root.Code != http.StatusOK || root.Header().Get("Content-Type") != "text/html; charset=utf-8" || root.Body.String() != network.Body.String() {
		t.Fatalf("/: %d %q; /network the same page: %v", root.Code, root.Header().Get("Content-Type"), root.Body.String() == network.Body.String())
	}
	if root.Header().Get("Cache-Control") != "no-cache" || root.Header().Get("ETag") == "" {
		t.Errorf("/ cache headers: %v", root.Header())
	}
	refs := assetRef.FindAllStringSubmatch(root.Body.String(), -1)
	if len(refs) != 3 {
		t.Fatalf("the page names %d versioned assets, want 3 (app.js, style.css, icon.svg): %q", len(refs), refs)
	}
	if strings.Contains(root.Body.String(), "<script>") || strings.Contains(root.Body.String(), " style=") || regexp.MustCompile(`\son[a-z]+=`).MatchString(root.Body.String()) {
		t.Error("the page has inline script, style or handlers, which its CSP refuses")
	}
	for _, ref := range refs {
		w := serve(t, h, http.MethodGet, ref[1]+"?v="+ref[2])
		if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("%s: %d, Cache-Control %q", ref[1], w.Code, w.Header().Get("Cache-Control"))
		}
		if !strings.HasPrefix(w.Header().Get("ETag"), `"`+ref[2]) {
			t.Errorf("%s: ETag %q is not the hash %s the page names", ref[1], w.Header().Get("ETag"), ref[2])
		}
		// Without the hash (or with an old one) the asset is revalidated.
		for _, q := range []string{"", "?v=000000000000"} {
			if w := serve(t, h, http.MethodGet, ref[1]+q); w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-cache" {
				t.Errorf("%s%s: %d, Cache-Control %q", ref[1], q, w.Code, w.Header().Get("Cache-Control"))
			}
		}
	}
	for _, path := range []string{"/", "/network", "/assets/app.js", "/assets/style.css", "/nope", "/assets/", "/index.html"} {
		w := serve(t, h, http.MethodGet, path)
		want := map[string]string{
			"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
			"Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin",
		}
		for k, v := range want {
			if got := w.Header().Get(k); got != v {
				t.Errorf("%s: %s %q, want %q", path, k, got, v)
			}
		}
	}
	for _, dir := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "img-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(CSP, dir) {
			t.Errorf("CSP lacks %s", dir)
		}
	}
	if strings.Contains(CSP, "unsafe") || strings.Contains(CSP, "http") {
		t.Errorf("CSP allows unsafe code or another origin: %s", CSP)
	}
}

// TestNotFoundAndMethods checks that paths the page does not have are the
// API's 404, and that only GET and HEAD are served.
func TestNotFoundAndMethods(t *testing.T) {
	h := newHandler(t)
	for _, path := range []string{"/nope", "/assets/", "/assets/missing.js", "/index.html", "/static/index.html", "/network/"} {
		w := serve(t, h, http.MethodGet, path)
		if w.Code != http.StatusNotFound || w.Body.String() != `{"detail":"Not Found"}`+"\n" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %q %q", path, w.Code, w.Body.String(), w.Header().Get("Content-Type"))
		}
	}
	w := serve(t, h, http.MethodPost, "/")
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
	head := serve(t, h, http.MethodHead, "/")
	get := serve(t, h, http.MethodGet, "/")
	if head.Code != http.StatusOK || head.Body.Len() != 0 || head.Header().Get("Content-Length") != get.Header().Get("Content-Length") {
		t.Errorf("HEAD /: %d, %d body bytes, Content-Length %q (GET %q)", head.Code, head.Body.Len(), head.Header().Get("Content-Length"), get.Header().Get("Content-Length"))
	}
}

// TestGzipAndRevalidation checks the precompressed bodies and 304s.
func TestGzipAndRevalidation(t *testing.T) {
	h := newHandler(t)
	plain := serve(t, h, http.MethodGet, "/assets/app.js")
	gz := serve(t, h, http.MethodGet, "/assets/app.js", "Accept-Encoding", "br, gzip;q=0.8")
	if gz.Header().Get("Content-Encoding") != "gzip" || gz.Header().Get("Vary") != "Accept-Encoding" || gz.Body.Len() >= plain.Body.Len() {
		t.Fatalf("gzip: encoding %q, vary %q, %d bytes (plain %d)", gz.Header().Get("Content-Encoding"), gz.Header().Get("Vary"), gz.Body.Len(), plain.Body.Len())
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, plain.Body.Bytes()) {
		t.Fatalf("gunzipped body differs from the plain one (err %v)", err)
	}
	if w := serve(t, h, http.MethodGet, "/assets/app.js", "Accept-Encoding", "gzip;q=0"); w.Header().Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refused it")
	}
	etag := plain.Header().Get("ETag")
	for _, inm := range []string{etag, `W/` + etag, `"x", ` + etag, "*"} {
		if w := serve(t, h, http.MethodGet, "/assets/app.js", "If-None-Match", inm); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: %d, %d bytes", inm, w.Code, w.Body.Len())
		}
	}
	if w := serve(t, h, http.MethodGet, "/assets/app.js", "If-None-Match", `"other"`); w.Code != http.StatusOK {
		t.Errorf("a stale ETag: %d", w.Code)
	}
}

// TestWeight keeps the page small: what a first visit fetches, measured.
func TestWeight(t *testing.T) {
	w := newHandler(t).Weight()
	t.Logf("page weight: %d bytes, %d gzipped", w.Raw, w.Gzip)
	if w.Raw > 64<<10 || w.Gzip > 20<<10 {
		t.Errorf("the page weighs %d bytes (%d gzipped): over the budget of 64 KiB (20 KiB gzipped)", w.Raw, w.Gzip)
	}
	if w.Gzip >= w.Raw || w.Raw < 10<<10 {
		t.Errorf("implausible weight %+v", w)
	}
}

// TestNewFrom checks the build from a folder: an asset of no known type
// is refused, and one the page does not name is served unversioned.
func TestNewFrom(t *testing.T) {
	if _, err := newFrom(fstest.MapFS{"index.html": {Data: []byte("x")}, "assets/a.exe": {Data: []byte("x")}}); err == nil {
		t.Error("an asset of no known type was accepted")
	}
	if _, err := newFrom(fstest.MapFS{"assets/a.js": {Data: []byte("x")}}); err == nil {
		t.Error("a folder without index.html was accepted")
	}
	h, err := newFrom(fstest.MapFS{
		"index.html":  {Data: []byte(`<script src="/assets/a.js"></script>`)},
		"assets/a.js": {Data: []byte("1")}, "assets/b.css": {Data: []byte("2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !h.files["/assets/a.js"].versioned || h.files["/assets/b.css"].versioned {
		t.Error("versioned: want a.js (named by the page) and not b.css")
	}
	if w := h.Weight(); w.Raw != len(h.files["/"].body)+1 {
		t.Errorf("weight %+v counts an asset the page does not load", w)
	}
}
