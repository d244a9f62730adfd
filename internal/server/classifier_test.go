package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// testClassifier refuses prompts that mention "forbidden" and answers that
// mention "secret", and fails on prompts that mention "flaky".
type testClassifier struct{}

func (testClassifier) Allow(_ context.Context, kind filter.Kind, text string) (bool, error) {
	switch {
	case kind == filter.KindPrompt && strings.Contains(text, "flaky"):
		return false, errors.New("classifier down")
	case kind == filter.KindPrompt:
		return !strings.Contains(text, "forbidden"), nil
	default:
		return !strings.Contains(text, "secret"), nil
	}
}

// TestClassifierPlugIn: a classifier plugged in behind filter.Classifier
// refuses prompts on every dialect as the patterns do, lets requests
// through when it fails, and ends an answer it refuses part-way, through
// the real node agent and fake Ollama.
func TestClassifierPlugIn(t *testing.T) {
	e := newCompatEnv(t, func(c *compatSetup) {
		c.server.Classifier = testClassifier{}
		c.dispatch.Classifier = testClassifier{}
		// The fake echoes the prompt a word per token; 20 ms apart, so the
		// classifier's verdict lands while the answer is still streaming.
		c.ollama.Respond = func(req ollamatest.ChatRequest) ollamatest.Reply {
			rep := ollamatest.DefaultRespond(req)
			rep.Delay = 20 * time.Millisecond
			return rep
		}
	})
	user := func(s string) []any { return []any{map[string]any{"role": "user", "content": s}} }
	resp, body := e.post("/api/chat", map[string]any{"model": "stories", "messages": user("a forbidden topic")})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Message content not allowed") {
		t.Errorf("/api/chat: %d %s", resp.StatusCode, body)
	}
	resp, body = e.post("/v1/chat/completions", map[string]any{"model": "stories", "messages": user("a forbidden topic")})
	checkOpenAIError(t, resp, body, 400, "invalid_request_error", "", "Message content not allowed")
	resp, body = e.post("/ollama/api/chat", map[string]any{"model": "stories", "messages": user("a forbidden topic")})
	checkOllamaError(t, resp, body, 400, "Message content not allowed")

	// The classifier, a remote call, comes after the cheap checks: a model
	// no node has is a 404 whatever the classifier would say.
	resp, body = e.post("/v1/chat/completions", map[string]any{"model": "nosuch", "messages": user("a forbidden topic")})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown model with a prompt the classifier refuses: %d %s, want 404", resp.StatusCode, body)
	}
	// v1's answer for it is its 503.
	resp, body = e.post("/api/chat", map[string]any{"model": "nosuch", "messages": user("a forbidden topic")})
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "No nodes available with model nosuch") {
		t.Errorf("v1, unknown model with a prompt the classifier refuses: %d %s, want 503", resp.StatusCode, body)
	}

	// A failing classifier does not stop a request the patterns let pass.
	resp, body = e.post("/v1/chat/completions", map[string]any{"model": "stories", "messages": user("a flaky day")})
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Echo: a flaky day") {
		t.Errorf("with a failing classifier: %d %s", resp.StatusCode, body)
	}

	// An answer the classifier refuses ends part-way with the notice.
	resp, body = e.post("/api/chat", map[string]any{"model": "stories", "messages": user("tell the secret then a b c d e f g h i j k l m n o zq")})
	text := string(body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(text, "withheld by the content filter") || strings.Contains(text, " zq") {
		t.Errorf("refused answer: %d %s", resp.StatusCode, body)
	}
}
