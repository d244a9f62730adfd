package webtest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/dispatch"
)

// TestRealOllama asks the page against a real Ollama (the tiny model of
// ../shared/models, temperature 0) and compares its answer with Ollama's
// own for the same messages. scripts/e2e-web.sh sets it up.
func TestRealOllama(t *testing.T) {
	ollamaURL := os.Getenv("IDLECLAW_E2E_OLLAMA_URL")
	if ollamaURL == "" {
		t.Skip("IDLECLAW_E2E_OLLAMA_URL is not set: scripts/e2e-web.sh runs this against a real Ollama")
	}
	model := os.Getenv("IDLECLAW_E2E_OLLAMA_MODEL")
	if model == "" {
		model = "stories"
	}
	base := startRouter(t)
	startNode(t, base, ollamaURL, 1)
	p := newPage(t, base, "/", 1280, 800)
	p.pickModel(model + ":latest")
	const prompt = "Once upon a time"
	p.send(prompt)
	p.waitIdle()
	if e := p.text("#log .msg.assistant:last-child .err"); e != "" {
		t.Fatalf("the page shows an error: %q", e)
	}
	// What the page received, as it keeps it, and what it shows.
	received := eval[string](p, `JSON.parse(localStorage.getItem("idleclaw.chats.v1"))[0].messages[1].content`)
	shown := p.lastAnswer()

	body, _ := json.Marshal(map[string]any{"model": model, "stream": false, "messages": []map[string]string{
		{"role": "system", "content": dispatch.DefaultSystemPrompt}, {"role": "user", "content": prompt}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(ollamaURL, "/")+"/api/chat", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("ask Ollama directly: %v", err)
	}
	defer resp.Body.Close()
	var direct struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&direct); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("Ollama's direct answer: HTTP %d, %v", resp.StatusCode, err)
	}
	if direct.Message.Content == "" {
		t.Fatal("Ollama answered nothing")
	}
	if received != direct.Message.Content {
		t.Errorf("the page received %q\nOllama answers %q", received, direct.Message.Content)
	}
	// The page shows the same words (Markdown turns line breaks into
	// elements, so spacing is compared loosely).
	if strings.Join(strings.Fields(shown), " ") != strings.Join(strings.Fields(direct.Message.Content), " ") {
		t.Errorf("the page shows %q\nOllama answers %q", shown, direct.Message.Content)
	}
	t.Logf("the page's answer equals Ollama's direct answer (%d bytes): %.60q...", len(received), received)
}
