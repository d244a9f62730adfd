package filter

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPClassifier(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Kind Kind   `json:"kind"`
			Text string `json:"text"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch {
		case in.Text == "status":
			http.Error(w, "down", http.StatusInternalServerError)
		case in.Text == "garbage":
			_, _ = w.Write([]byte("not json"))
		case in.Text == "empty":
			_, _ = w.Write([]byte("{}"))
		case in.Text == "slow":
			<-r.Context().Done()
		default:
			allowed := !strings.Contains(in.Text, "evil") && in.Kind != ""
			_ = json.NewEncoder(w).Encode(map[string]bool{"allowed": allowed})
		}
	}))
	defer srv.Close()
	c := &HTTPClassifier{URL: srv.URL}
	ctx := context.Background()
	for _, tc := range []struct {
		kind    Kind
		text    string
		allowed bool
		err     bool
	}{
		{KindPrompt, "hello", true, false},
		{KindAnswer, "an evil plan", false, false},
		{KindPrompt, "status", false, true},
		{KindPrompt, "garbage", false, true},
		{KindPrompt, "empty", false, true},
	} {
		ok, err := c.Allow(ctx, tc.kind, tc.text)
		if ok != tc.allowed || (err != nil) != tc.err {
			t.Errorf("Allow(%s, %q) = %v, %v; want %v, error %v", tc.kind, tc.text, ok, err, tc.allowed, tc.err)
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	if ok, err := c.Allow(tctx, KindPrompt, "slow"); ok || err == nil {
		t.Errorf("a classifier that does not answer: %v, %v", ok, err)
	}
	if el := time.Since(began); el > 5*time.Second {
		t.Errorf("Allow returned %v after its context ended", el)
	}
	// Its own Timeout bounds a verdict when the caller's context does not.
	bounded := &HTTPClassifier{URL: srv.URL, Timeout: 100 * time.Millisecond}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if ok, err := bounded.Allow(ctx, KindPrompt, "slow"); ok || err == nil {
			t.Errorf("a classifier that does not answer, with Timeout: %v, %v", ok, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Allow with Timeout 100ms and a background context has not returned in a minute")
	}
}
