package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/idleclaw/idleclaw/internal/dispatch"
	"github.com/idleclaw/idleclaw/internal/hub"
)

// TestWebMount checks Config.Web: it answers the GET and HEAD requests no
// API route takes, under the default bucket; everything else stays the API's.
func TestWebMount(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Page", "1")
		w.WriteHeader(http.StatusTeapot)
	})
	h := hub.New(hub.Config{})
	defer h.Close()
	clock := newFakeClock()
	with := New(Config{Web: page, RateDefaultRPM: 4, Now: clock.Now}, h, dispatch.New(dispatch.Config{}, h), nil)
	without := New(Config{}, h, dispatch.New(dispatch.Config{}, h), nil)
	for _, c := range []struct {
		s            *Server
		method, path string
		status       int
		page         bool
	}{
		{with, http.MethodGet, "/", http.StatusTeapot, true},
		{with, http.MethodHead, "/network", http.StatusTeapot, true},
		{with, http.MethodGet, "/api/models", http.StatusOK, false},
		{with, http.MethodPost, "/", http.StatusNotFound, false},
		{with, http.MethodGet, "/", http.StatusTooManyRequests, false}, // the fifth request of the minute
		{without, http.MethodGet, "/", http.StatusNotFound, false},
		{without, http.MethodGet, "/network", http.StatusNotFound, false},
	} {
		rec := httptest.NewRecorder()
		c.s.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || (rec.Header().Get("X-Page") == "1") != c.page {
			t.Errorf("%s %s: %d, page %v; want %d, page %v", c.method, c.path, rec.Code, rec.Header().Get("X-Page") == "1", c.status, c.page)
		}
		if rec.Code == http.StatusNotFound && rec.Body.String() != `{"detail":"Not Found"}`+"\n" {
			t.Errorf("%s %s: body %q", c.method, c.path, rec.Body.String())
		}
	}
}
