package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// TestRegisterBoundsPlayTheAttacker registers what a hostile node would:
// every field a node says about itself is bounded where it is decoded.
func TestRegisterBoundsPlayTheAttacker(t *testing.T) {
	caps := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("cap%d", i)
		}
		return out
	}
	model := func(f func(*Model)) []Model {
		m := Model{Name: "stories:latest", Size: 1 << 20, Digest: strings.Repeat("a", 64), Capabilities: []string{"completion", "tools"}}
		f(&m)
		return []Model{m}
	}
	tests := []struct {
		name string
		reg  Register
		want string
	}{
		{"honest", Register{NodeID: "n1", Models: model(func(*Model) {}), OllamaVersion: "0.9.6", Agent: "idleclaw-go/0.1.0"}, ""},
		{"tens of thousands of capabilities", Register{NodeID: "n1", Models: model(func(m *Model) { m.Capabilities = caps(40000) })}, CloseInvalidModel},
		{"17 capabilities", Register{NodeID: "n1", Models: model(func(m *Model) { m.Capabilities = caps(17) })}, CloseInvalidModel},
		{"16 capabilities", Register{NodeID: "n1", Models: model(func(m *Model) { m.Capabilities = caps(16) })}, ""},
		{"a capability of 1 MB", Register{NodeID: "n1", Models: model(func(m *Model) { m.Capabilities = []string{strings.Repeat("x", 1<<20)} })}, CloseInvalidModel},
		{"a capability with markup", Register{NodeID: "n1", Models: model(func(m *Model) { m.Capabilities = []string{"<script>"} })}, CloseInvalidModel},
		{"size 2^63-1", Register{NodeID: "n1", Models: model(func(m *Model) { m.Size = math.MaxInt64 })}, CloseInvalidModel},
		{"size just past the bound", Register{NodeID: "n1", Models: model(func(m *Model) { m.Size = MaxModelBytes + 1 })}, CloseInvalidModel},
		{"digest of 1 MB", Register{NodeID: "n1", Models: model(func(m *Model) { m.Digest = strings.Repeat("a", 1<<20) })}, CloseInvalidModel},
		{"digest not hex", Register{NodeID: "n1", Models: model(func(m *Model) { m.Digest = "sha256:zz" })}, CloseInvalidModel},
		{"digest with prefix", Register{NodeID: "n1", Models: model(func(m *Model) { m.Digest = "sha256:" + strings.Repeat("f", 64) })}, ""},
		{"quantization of 1 KB", Register{NodeID: "n1", Models: model(func(m *Model) { m.Quantization = strings.Repeat("q", 1024) })}, CloseInvalidModel},
		{"family with a newline", Register{NodeID: "n1", Models: model(func(m *Model) { m.Family = "llama\nforged log line" })}, CloseInvalidModel},
		{"context length 2^31", Register{NodeID: "n1", Models: model(func(m *Model) { m.ContextLength = math.MaxInt32 })}, CloseInvalidModel},
		{"negative context length", Register{NodeID: "n1", Models: model(func(m *Model) { m.ContextLength = -1 })}, CloseInvalidModel},
		{"ollama_version of 1 KB", Register{NodeID: "n1", Models: model(func(*Model) {}), OllamaVersion: strings.Repeat("9", 1024)}, CloseInvalidRegister},
		{"agent with an escape sequence", Register{NodeID: "n1", Models: model(func(*Model) {}), Agent: "x\x1b[2J"}, CloseInvalidRegister},
		{"node_id with a newline", Register{NodeID: "n1\nnode registered node_id=victim", Models: model(func(*Model) {})}, CloseInvalidNodeID},
		{"node_id with C1 control", Register{NodeID: "n1\u009b", Models: model(func(*Model) {})}, CloseInvalidNodeID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidateRegister(tt.reg); got != tt.want {
				t.Errorf("ValidateRegister = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestChunkBoundsPlayTheAttacker sends the chunks a hostile node would.
func TestChunkBoundsPlayTheAttacker(t *testing.T) {
	call := func(name, args string) string {
		return `{"function":{"name":"` + name + `","arguments":` + args + `}}`
	}
	calls := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = call("web_search", `{"query":"x"}`)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	frame := func(chunk string) []byte {
		return []byte(`{"type":"inference_chunk","request_id":"r1","chunk":` + chunk + `}`)
	}
	refused := []struct{ name, chunk string }{
		{"17 tool calls", `{"message":{"role":"assistant","content":"","tool_calls":` + calls(17) + `},"done":false}`},
		{"750k tool calls", `{"message":{"role":"assistant","content":"","tool_calls":` + calls(20000) + `},"done":false}`},
		{"tool name with spaces", `{"message":{"tool_calls":[` + call("rm -rf", `{}`) + `]},"done":false}`},
		{"tool name of 65 bytes", `{"message":{"tool_calls":[` + call(strings.Repeat("a", 65), `{}`) + `]},"done":false}`},
		{"arguments over 64 KiB", `{"message":{"tool_calls":[` + call("f", `{"a":"`+strings.Repeat("x", 64<<10)+`"}`) + `]},"done":false}`},
		{"arguments not an object", `{"message":{"tool_calls":[` + call("f", `[1]`) + `]},"done":false}`},
	}
	for _, tt := range refused {
		if _, err := DecodeNodeFrame(frame(tt.chunk)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tt.name, err)
		}
	}
	f, err := DecodeNodeFrame(frame(`{"message":{"tool_calls":` + calls(16) + `},"done":false}`))
	if err != nil || len(f.Chunk.Message.ToolCalls) != 16 {
		t.Fatalf("16 tool calls: %v, want them kept", err)
	}

	// Claims that cannot be true are zeroed (unknown), never passed on.
	f, err = DecodeNodeFrame(frame(`{"done":true,"done_reason":"<b>stop</b>","eval_count":-5,"prompt_eval_count":99999999999,"eval_duration":-1,"total_duration":1000000000000000000}`))
	if err != nil {
		t.Fatal(err)
	}
	c := f.Chunk
	if c.EvalCount != 0 || c.PromptEvalCount != 0 || c.EvalDuration != 0 || c.TotalDuration != 0 || c.DoneReason != "" {
		t.Errorf("implausible metrics kept: %+v", c)
	}
	// So are numbers no integer holds: the chunk and its text are kept.
	for _, bad := range []string{`1e30`, `2.5`, `99999999999999999999`, `"soon"`, `{}`} {
		f, err = DecodeNodeFrame(frame(`{"message":{"role":"assistant","content":"last words"},"done":true,"done_reason":"stop",` +
			`"eval_count":` + bad + `,"prompt_eval_count":7,"eval_duration":` + bad + `,"total_duration":` + bad + `,"load_duration":12}`))
		if err != nil {
			t.Fatalf("metrics %s: %v; want the chunk kept", bad, err)
		}
		if c := f.Chunk; c.Message.Content != "last words" || !c.Done || c.EvalCount != 0 || c.EvalDuration != 0 ||
			c.TotalDuration != 0 || c.PromptEvalCount != 7 || c.LoadDuration != 12 {
			t.Errorf("metrics %s: %+v; want the bad ones unknown, the rest kept", bad, c)
		}
	}
	if f, err := DecodeNodeFrame(frame(`{"message":{"content":"x"},"done":true,"Eval_Count":1e30,"EVAL_DURATION":2.5}`)); err != nil ||
		f.Chunk.EvalCount != 0 || f.Chunk.EvalDuration != 0 || f.Chunk.Message.Content != "x" {
		t.Errorf("metrics spelled in other cases: %+v %v; want them unknown, the chunk kept", f.Chunk, err)
	}
	// Only metrics are forgiven: another mistyped field still refuses the frame.
	if _, err := DecodeNodeFrame(frame(`{"done":"yes","eval_count":1e30}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("a mistyped done with bad metrics: err %v, want ErrMalformed", err)
	}
	f, err = DecodeNodeFrame(frame(`{"done":true,"done_reason":"length","eval_count":12,"eval_duration":34000000}`))
	if err != nil || f.Chunk.EvalCount != 12 || f.Chunk.EvalDuration != 34000000 || f.Chunk.DoneReason != "length" {
		t.Errorf("plausible metrics: %+v %v", f.Chunk, err)
	}

	// A heartbeat's loaded_models is bounded like a model list.
	many := make([]string, MaxLoadedModels+1)
	for i := range many {
		many[i] = fmt.Sprintf("m%d", i)
	}
	b, _ := json.Marshal(map[string]any{"type": "heartbeat", "node_id": "n", "available": true, "loaded_models": many})
	if _, err := DecodeNodeFrame(b); !errors.Is(err, ErrInvalid) {
		t.Errorf("%d loaded models: err %v, want ErrInvalid", len(many), err)
	}
	b, _ = json.Marshal(map[string]any{"type": "heartbeat", "node_id": "n", "loaded_models": []string{"bad name"}})
	if _, err := DecodeNodeFrame(b); !errors.Is(err, ErrInvalid) {
		t.Errorf("a loaded model with a bad name: err %v, want ErrInvalid", err)
	}
}

func TestCapabilities(t *testing.T) {
	c := CapabilitiesOf([]string{"tools", "unknown", "thinking", "tools"})
	if !c.Has(CapTools) || !c.Has(CapThinking) || c.Has(CapVision) {
		t.Errorf("CapabilitiesOf = %v", c.Names())
	}
	if got := strings.Join(c.Names(), ","); got != "tools,thinking" {
		t.Errorf("Names = %q", got)
	}
}
