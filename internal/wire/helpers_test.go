package wire

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

// Helpers shared by the tests, fuzz targets and benchmarks of this package.

func ptr[T any](v T) *T { return &v }

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return b
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// asMap decodes a JSON object for semantic comparison.
func asMap(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

// testdataFiles lists testdata/<dir>/*.json, sorted.
func testdataFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// nodeView converts a decoded node frame into the typed message our encoder
// writes for its type, or nil for types a router ignores.
func nodeView(f NodeFrame) any {
	switch f.Type {
	case TypeRegister:
		return f.RegisterFrame()
	case TypeHeartbeat:
		return f.HeartbeatFrame()
	case TypeInferenceChunk:
		return InferenceChunk{Type: f.Type, RequestID: f.RequestID, Chunk: *f.Chunk}
	case TypeInferenceError:
		return InferenceError{Type: f.Type, RequestID: f.RequestID, Error: f.Error}
	case TypeModelsUpdate:
		return ModelsUpdate{Type: f.Type, Models: f.Models}
	}
	return nil
}

// routerView converts a decoded router frame into its typed message, or nil
// for types a node ignores. ollama_params are decoded the way a node does
// (DecodeOllamaParams, every model served); ok is false when they are refused.
func routerView(f RouterFrame) (v any, ok bool) {
	switch f.Type {
	case TypeRegistered:
		return Registered{Type: f.Type, NodeID: f.NodeID}, true
	case TypeCancelRequest:
		return CancelRequest{Type: f.Type, RequestID: f.RequestID}, true
	case TypeInferenceReq:
		p, err := DecodeOllamaParams(f.OllamaParams, func(string) bool { return true })
		if err != nil {
			return nil, false
		}
		return InferenceRequest{Type: f.Type, RequestID: f.RequestID, OllamaParams: p}, true
	}
	return nil, true
}

// webSearchTool is the tools array the router offers for web_search.
const webSearchTool = `[{"type":"function","function":{"name":"web_search","description":"Search the web","parameters":{"type":"object","properties":{"query":{"type":"string","description":"Search query"}},"required":["query"]}}}]`

// realisticParams is the ollama_params of a tool-using, thinking request.
func realisticParams() ollama.ChatRequest {
	return ollama.ChatRequest{
		Model: "qwen3:32b",
		Messages: []ollama.Message{
			{Role: "system", Content: "You are a helpful assistant. Answer concisely."},
			{Role: "user", Content: "What is the weather in Paris today?"},
			{Role: "assistant", Content: "", ToolCalls: []ollama.ToolCall{{Function: ollama.ToolFunction{
				Name: "web_search", Arguments: raw(`{"query":"weather Paris today"}`)}}}},
			{Role: "tool", Content: "Paris: 18°C, light rain <b>until</b> noon & wind.", ToolName: "web_search"},
		},
		Stream:    ptr(true),
		Think:     raw(`true`),
		KeepAlive: raw(`"5m"`),
		Options:   raw(`{"num_ctx":8192,"temperature":0.7,"top_p":0.9}`),
		Tools:     raw(webSearchTool),
	}
}
