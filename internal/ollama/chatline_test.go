package ollama

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// A typical streamed token line, as Ollama writes it.
const benchLine = `{"model":"stories:latest","created_at":"2026-01-01T00:00:00.123456789Z","message":{"role":"assistant","content":" the"},"done":false}`

// A final line, with its metrics.
const finalLine = `{"model":"stories:latest","created_at":"2026-01-01T00:00:01.5Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":1234567890,"load_duration":2345678,"prompt_eval_count":26,"prompt_eval_duration":3456789,"eval_count":259,"eval_duration":987654321}`

// sameAsJSON checks the fast path against encoding/json on one line: when
// the fast path takes it, encoding/json must succeed and decode the same.
// It reports whether the fast path took the line.
func sameAsJSON(t *testing.T, line []byte, model string) bool {
	t.Helper()
	fast, ok := decodeChatLineFast(line, model)
	if !ok {
		return false
	}
	var slow ChatResponse
	if err := json.Unmarshal(line, &slow); err != nil {
		t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, line)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path differs for %q\nfast: %#v\njson: %#v", line, fast, slow)
	}
	return true
}

func TestDecodeChatLineFast(t *testing.T) {
	for _, tc := range []struct {
		line string
		take bool
	}{
		{benchLine, true},
		{finalLine, true},
		{`{"model":"m","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}`, true},
		{` { "done" : false , "message" : { "content" : "a\nb \"q\" \u00e9\u003c\/" , "role" : "assistant" } , "model" : "m" } `, true},
		{`{"message":{"role":"assistant","content":"héllo 😀"},"done":false}`, true},
		{`{"message":{"content":"\u0000"}}`, true},
		{`{"message":{}}`, true},
		{`{}`, true},
		{`{"done":true,"eval_count":-0,"total_duration":9223372036854775807,"load_duration":-9223372036854775808}`, true},

		// Everything else goes to encoding/json.
		{`{"error":"model crashed"}`, false},
		{`{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":false}`, false},
		{`{"message":{"role":"user","content":"x","images":["aGk="]}}`, false},
		{`{"message":{"content":"x","tool_name":"f"}}`, false},
		{`{"model":"m","remote_model":"r"}`, false},
		{`{"Model":"m"}`, false}, // encoding/json matches keys case-insensitively
		{`{"model":"m","model":"n"}`, false},
		{`{"message":{"content":"a"},"message":{"role":"assistant"}}`, false},
		{`{"message":{"content":"a","content":"b"}}`, false},
		{`{"done":true,"done":false}`, false},
		{`{"eval_count":1,"eval_count":2}`, false},
		{`{"model":null}`, false},
		{`{"message":null}`, false},
		{`{"done":null}`, false},
		{`{"eval_count":null}`, false},
		{`{"done":"true"}`, false},
		{`{"model":1}`, false},
		{`{"message":"x"}`, false},
		{`{"eval_count":"5"}`, false},
		{`{"eval_count":1.0}`, false},
		{`{"eval_count":1.5}`, false},
		{`{"eval_count":1e3}`, false},
		{`{"eval_count":01}`, false},
		{`{"eval_count":+1}`, false},
		{`{"total_duration":9223372036854775808}`, false},
		{`{"eval_count":-9223372036854775809}`, false},
		{"{\"message\":{\"content\":\"\xff\"}}", false},
		{"{\"message\":{\"content\":\"a\tb\"}}", false},
		{`{"message":{"content":"\ud83d\ude00"}}`, false},
		{`{"message":{"content":"\q"}}`, false},
		{`{"done":false} x`, false},
		{`{"done":false}{}`, false},
		{`{"done":false`, false},
		{`[]`, false},
		{``, false},
	} {
		if took := sameAsJSON(t, []byte(tc.line), "m"); took != tc.take {
			t.Errorf("fast path took=%v, want %v: %s", took, tc.take, tc.line)
		}
	}
}

func TestDecodeChatLineFastFields(t *testing.T) {
	cr, ok := decodeChatLineFast([]byte(finalLine), "stories:latest")
	want := ChatResponse{
		Model:      "stories:latest",
		Message:    Message{Role: "assistant"},
		Done:       true,
		DoneReason: "stop",
		Metrics: Metrics{TotalDuration: 1234567890, LoadDuration: 2345678, PromptEvalCount: 26,
			PromptEvalDuration: 3456789, EvalCount: 259, EvalDuration: 987654321},
	}
	if !ok || !reflect.DeepEqual(cr, want) {
		t.Fatalf("final line = %#v, %v\nwant %#v", cr, ok, want)
	}
}

// TestDecodeChatLineFastTakesFakeOllama checks that the fast path takes
// the lines the fake Ollama streams for text and thinking, and the final
// one, and leaves tool calls and errors to encoding/json.
func TestDecodeChatLineFastTakesFakeOllama(t *testing.T) {
	for _, line := range fakeOllamaLines(t) {
		want := !bytes.Contains(line, []byte(`"tool_calls"`)) && !bytes.Contains(line, []byte(`"error"`))
		if took := sameAsJSON(t, line, "stories"); took != want {
			t.Errorf("fast path took=%v, want %v: %s", took, want, line)
		}
	}
}

// TestDecodeChatLineKnownModelAllocs: a line as Ollama streams it costs
// one allocation, its text; created_at and the strings every line repeats
// cost none.
func TestDecodeChatLineKnownModelAllocs(t *testing.T) {
	for _, tc := range []struct {
		line string
		want float64
	}{
		{`{"model":"stories:latest","created_at":"2026-01-01T00:00:00.123456789Z","message":{"role":"assistant","content":""},"done":false}`, 0},
		{benchLine, 1},
	} {
		line := []byte(tc.line)
		n := testing.AllocsPerRun(100, func() {
			if _, ok := decodeChatLineFast(line, "stories:latest"); !ok {
				t.Fatal("refused")
			}
		})
		if n != tc.want {
			t.Errorf("%s allocates %v times, want %v", tc.line, n, tc.want)
		}
	}
}

// fakeOllamaLines returns the lines the fake Ollama (internal/ollamatest)
// streams for a chat answer with thinking, text, a tool call and a final
// line, then for one that fails mid-stream.
func fakeOllamaLines(tb testing.TB) [][]byte {
	tb.Helper()
	var lines [][]byte
	for _, rep := range []ollamatest.Reply{
		{Thinking: []string{"hmm", "\n"}, Tokens: []string{"Hel", "lo \"w\"", " <b>&</b>", "é😀\u2028", "\x01"},
			ToolCalls: [][]ollamatest.ToolCall{{{Function: ollamatest.ToolCallFunction{Name: "web_search", Arguments: json.RawMessage(`{"query":"x"}`)}}}}},
		{Tokens: []string{"a"}, Error: "model runner crashed"},
	} {
		fake := ollamatest.NewServer(ollamatest.Config{
			Models:   []ollamatest.Model{{Name: "stories:latest"}},
			Respond:  func(ollamatest.ChatRequest) ollamatest.Reply { return rep },
			NoRecord: true,
		})
		resp, err := http.Post(fake.URL+"/api/chat", "application/json",
			strings.NewReader(`{"model":"stories","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			fake.Close()
			tb.Fatalf("post to the fake Ollama: %v", err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
		err = sc.Err()
		resp.Body.Close()
		fake.Close()
		if err != nil {
			tb.Fatalf("read the fake Ollama's stream: %v", err)
		}
	}
	if len(lines) < 9 {
		tb.Fatalf("fake Ollama streamed %d lines: %q", len(lines), lines)
	}
	return lines
}

// FuzzDecodeChatLineFast checks that the chat line fast path decodes
// exactly what encoding/json decodes, and only what it accepts:
//
//	go test -run='^$' -fuzz=FuzzDecodeChatLineFast -fuzztime=60s ./internal/ollama/
func FuzzDecodeChatLineFast(f *testing.F) {
	for _, line := range fakeOllamaLines(f) {
		f.Add(line, "stories")
	}
	for _, s := range []string{
		benchLine,
		finalLine,
		`{"model":"m","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}`,
		` { "done" : true , "message" : { "content" : "a\nb \"q\" \u00e9\u003c\/" } , "eval_count" : 3 } `,
		`{"message":{"content":"\ud83d\ude00"}}`,
		`{"message":{"content":"a"},"message":{"role":"assistant"}}`,
		`{"Model":"m","MESSAGE":{"Content":"x"}}`,
		`{"eval_count":1.0,"eval_duration":1e3,"total_duration":-0}`,
		`{"total_duration":9223372036854775808}`,
		`{"model":null,"message":null}`,
		`{"error":"boom"}`,
		"{\"message\":{\"content\":\"\xff\"}}",
		`{"done":false} x`,
	} {
		f.Add([]byte(s), "m")
	}
	f.Fuzz(func(t *testing.T, line []byte, model string) {
		sameAsJSON(t, line, model)
	})
}

// BenchmarkDecodeChatLine compares the node's decode of a typical token
// line with encoding/json's:
//
//	go test -run='^$' -bench=DecodeChatLine -benchmem ./internal/ollama/
func BenchmarkDecodeChatLine(b *testing.B) {
	line := []byte(benchLine)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			cr, err := decodeChatLine(line, "stories:latest")
			if err != nil || cr.Message.Content != " the" {
				b.Fatalf("decode: %v %#v", err, cr)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			var cr ChatResponse
			if err := json.Unmarshal(line, &cr); err != nil || cr.Message.Content != " the" {
				b.Fatalf("decode: %v %#v", err, cr)
			}
		}
	})
}
