// Package web is the router's web page: a chat and a live network view,
// served at / and /network by `idleclaw serve` (--web). The page is three
// static files embedded in the binary (static/index.html, app.js,
// style.css, plus an icon): no build step, no outside fonts, scripts or
// CDNs. It talks to the router only through its public APIs (/api/models,
// /api/network, /api/network/events, /api/chat), under the same rate
// limits as any client.
//
// Every answer carries a strict Content-Security-Policy (scripts, styles,
// images and connections from this origin only; no inline code; Trusted
// Types required, so that no string can reach innerHTML) and the usual
// security headers. Assets are precompressed with gzip once, at New, and
// named in the page with a hash of their content, so that a browser keeps
// them until they change.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every answer of the handler.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// asset is one file as served: its bytes, gzipped bytes (nil when gzip
// does not make it smaller), type and validator.
type asset struct {
	body, gz  []byte
	ctype     string
	etag      string
	versioned bool // named with its hash in the page: cache for a year
}

// Handler serves the page. Safe for concurrent use.
type Handler struct {
	files map[string]*asset // by URL path
}

// Weight is the size of the page as a browser fetches it: every file a
// first visit loads, raw and as gzip sends it.
type Weight struct {
	Raw, Gzip int
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// New builds the handler from the embedded files.
func New() (*Handler, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: embedded files: %w", err)
	}
	return newFrom(sub)
}

// newFrom builds the handler from fsys (index.html and the files under
// assets/ it names).
func newFrom(fsys fs.FS) (*Handler, error) {
	h := &Handler{files: map[string]*asset{}}
	index, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		return nil, fmt.Errorf("web: read index.html: %w", err)
	}
	names, err := fs.Glob(fsys, "assets/*")
	if err != nil {
		return nil, fmt.Errorf("web: list assets: %w", err)
	}
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("web: read %s: %w", name, err)
		}
		a, err := newAsset(name, b)
		if err != nil {
			return nil, err
		}
		// The page names each asset with its hash, so that a browser may
		// keep it; a request without the hash (or an old one) is answered
		// too, revalidated each time.
		ref := `"/` + name + `"`
		if bytes.Contains(index, []byte(ref)) {
			index = bytes.ReplaceAll(index, []byte(ref), []byte(`"/`+name+`?v=`+a.etag[1:13]+`"`))
			a.versioned = true
		}
		h.files["/"+name] = a
	}
	page, err := newAsset("index.html", index)
	if err != nil {
		return nil, err
	}
	h.files["/"] = page
	h.files["/network"] = page
	return h, nil
}

func newAsset(name string, b []byte) (*asset, error) {
	ext := name[strings.LastIndexByte(name, '.'):]
	ctype, ok := types[ext]
	if !ok {
		return nil, fmt.Errorf("web: %s: no content type for %q", name, ext)
	}
	sum := sha256.Sum256(b)
	a := &asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("web: gzip %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("web: gzip %s: %w", name, err)
	}
	if buf.Len() < len(b) {
		a.gz = buf.Bytes()
	}
	return a, nil
}

// Weight measures the page: index.html and every asset it names.
func (h *Handler) Weight() Weight {
	var w Weight
	for path, a := range h.files {
		if path == "/network" || (path != "/" && !a.versioned) {
			continue
		}
		w.Raw += len(a.body)
		if a.gz != nil {
			w.Gzip += len(a.gz)
		} else {
			w.Gzip += len(a.body)
		}
	}
	return w
}

// SetHeaders sets the security headers of every answer of the page.
func SetHeaders(hdr http.Header) {
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	hdr.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
}

// ServeHTTP serves GET and HEAD of / and /network (the page) and
// /assets/*. Any other path is the API's 404, {"detail":"Not Found"}.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	SetHeaders(hdr)
	a, ok := h.files[r.URL.Path]
	if !ok {
		hdr.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"detail":"Not Found"}` + "\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		hdr.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"detail":"Method Not Allowed"}` + "\n"))
		return
	}
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("ETag", a.etag)
	hdr.Set("Vary", "Accept-Encoding")
	if a.versioned && r.URL.Query().Get("v") == a.etag[1:13] {
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hdr.Set("Cache-Control", "no-cache")
	}
	if etagMatch(r.Header.Get("If-None-Match"), a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		hdr.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	hdr.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// etagMatch reports whether an If-None-Match list names etag (or is *).
func etagMatch(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding value allows gzip (and
// does not refuse it with q=0).
func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
