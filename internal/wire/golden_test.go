package wire

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.json from the encoder")

type goldenCase struct {
	name     string
	fromNode bool // node→router (DecodeNodeFrame) or router→node (DecodeRouterFrame)
	msg      any
}

// goldenCases is every message of protocol §2.1 and §2.2 as our encoder
// writes it. Each becomes testdata/golden/<name>.json.
func goldenCases() []goldenCase {
	return []goldenCase{
		// §2.1 node → router
		{"register", true, Register{
			Type: TypeRegister, NodeID: "node-7f3e", MaxConcurrent: 3, OllamaVersion: "0.12.6",
			Protocol: ProtocolVersion, Agent: "idleclaw-go/0.1.0",
			Models: []Model{
				{Name: "qwen3:32b", Size: 20201253588, Digest: "030ee887880f", Capabilities: []string{"completion", "tools", "thinking"},
					Quantization: "Q4_K_M", ParameterSize: "32.8B", ContextLength: 40960, Family: "qwen3"},
				{Name: "llama3.2:3b", Size: 2019393189, Digest: "a80c4f17acd5", Capabilities: []string{"completion", "tools"},
					Quantization: "Q4_K_M", ParameterSize: "3.2B", ContextLength: 131072, Family: "llama"},
			},
		}},
		{"register_v1_shape", true, Register{
			Type: TypeRegister, NodeID: "node-7f3e", MaxConcurrent: 2, OllamaVersion: "0.6.2",
			Models: []Model{{Name: "llama3.2:3b", Size: 2019393189}},
		}},
		{"heartbeat", true, Heartbeat{
			Type: TypeHeartbeat, NodeID: "node-7f3e", ActiveRequests: 1, Available: true,
			LoadedModels: []string{"qwen3:32b"},
		}},
		{"heartbeat_unavailable", true, Heartbeat{
			Type: TypeHeartbeat, NodeID: "node-7f3e", ActiveRequests: 0, Available: false,
		}},
		{"inference_chunk_content", true, InferenceChunk{
			Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
			Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: "Hel"}},
		}},
		{"inference_chunk_thinking", true, InferenceChunk{
			Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
			Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: "", Thinking: "The user asks"}},
		}},
		{"inference_chunk_tool_call", true, InferenceChunk{
			Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
			Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: "", ToolCalls: []ollama.ToolCall{
				{Function: ollama.ToolFunction{Name: "web_search", Arguments: raw(`{"query":"weather Paris today"}`)}},
			}}},
		}},
		{"inference_chunk_final", true, InferenceChunk{
			Type: TypeInferenceChunk, RequestID: "req-3f2a9c1b7d4e",
			Chunk: Chunk{
				Message: &ChunkMessage{Role: "assistant", Content: ""},
				Done:    true, DoneReason: "stop",
				Metrics: ollama.Metrics{
					TotalDuration: 5191566416, LoadDuration: 2154458, PromptEvalCount: 26,
					PromptEvalDuration: 383809000, EvalCount: 298, EvalDuration: 4799921000,
				},
			},
		}},
		{"inference_error_invalid_request", true, InferenceError{Type: TypeInferenceError, RequestID: "req-3f2a9c1b7d4e", Error: ErrInvalidRequest}},
		{"inference_error_ollama_unavailable", true, InferenceError{Type: TypeInferenceError, RequestID: "req-3f2a9c1b7d4e", Error: ErrOllamaUnavailable}},
		{"inference_error_ollama_error", true, InferenceError{Type: TypeInferenceError, RequestID: "req-3f2a9c1b7d4e", Error: ErrOllamaError}},
		{"inference_error_ollama_busy", true, InferenceError{Type: TypeInferenceError, RequestID: "req-3f2a9c1b7d4e", Error: ErrOllamaBusy}},
		{"models_update", true, ModelsUpdate{Type: TypeModelsUpdate, Models: []Model{
			{Name: "llama3.2:3b", Size: 2019393189, Digest: "a80c4f17acd5", Capabilities: []string{"completion", "tools"}},
			{Name: "gemma3:4b", Size: 3338801804, Capabilities: []string{"completion", "vision"}},
		}}},
		// §2.2 router → node
		{"registered", false, Registered{Type: TypeRegistered, NodeID: "node-7f3e"}},
		{"inference_request", false, InferenceRequest{Type: TypeInferenceReq, RequestID: "req-3f2a9c1b7d4e", OllamaParams: realisticParams()}},
		{"cancel_request", false, CancelRequest{Type: TypeCancelRequest, RequestID: "req-3f2a9c1b7d4e"}},
	}
}

// TestGolden: the encoder's bytes are pinned, and decoding them gives the
// message back. Run with -update to rewrite the goldens after a deliberate
// change (and review the diff: these bytes are the contract with v1 peers).
func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := mustMarshal(t, tc.msg)
			path := filepath.Join("testdata", "golden", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := mustRead(t, path)
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed\n got: %s\nwant: %s", got, want)
			}

			var back any
			if tc.fromNode {
				f, err := DecodeNodeFrame(got)
				if err != nil {
					t.Fatalf("DecodeNodeFrame: %v", err)
				}
				back = nodeView(f)
			} else {
				f, err := DecodeRouterFrame(got)
				if err != nil {
					t.Fatalf("DecodeRouterFrame: %v", err)
				}
				var ok bool
				if back, ok = routerView(f); !ok {
					t.Fatalf("ollama_params refused")
				}
			}
			if !reflect.DeepEqual(back, tc.msg) {
				t.Fatalf("decode(encode(x)) != x\n got: %#v\nwant: %#v", back, tc.msg)
			}
		})
	}
}

// TestGoldenFilesCovered: no stray golden without a case (a renamed case
// would otherwise leave a stale file behind).
func TestGoldenFilesCovered(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range goldenCases() {
		names[filepath.Join("testdata", "golden", tc.name+".json")] = true
	}
	for _, f := range testdataFiles(t, "golden") {
		if !names[f] {
			t.Errorf("%s has no golden case", f)
		}
	}
}

// TestV1Examples decodes the examples quoted in protocol.md §2 (copied into
// testdata/v1; where the doc elides a value with {...} or [...] a realistic
// v1 value is filled in) and checks that re-encoding them gives the same
// JSON object: frames of v1 peers round-trip through our types.
func TestV1Examples(t *testing.T) {
	node := map[string]NodeFrame{
		"register.json": {Type: TypeRegister, NodeID: "<id>", Models: []Model{{Name: "llama3.2:3b", Size: 2019393189}},
			MaxConcurrent: ptr(2), OllamaVersion: "0.6.2"},
		"heartbeat.json": {Type: TypeHeartbeat, NodeID: "<id>", ActiveRequests: 0, Available: ptr(true)},
		"inference_chunk.json": {Type: TypeInferenceChunk, RequestID: "<id>",
			Chunk: &Chunk{Message: &ChunkMessage{Role: "assistant", Content: "Hel"}}},
		"inference_chunk_tool_call.json": {Type: TypeInferenceChunk, RequestID: "<id>",
			Chunk: &Chunk{Message: &ChunkMessage{Role: "assistant", ToolCalls: []ollama.ToolCall{
				{Function: ollama.ToolFunction{Name: "web_search", Arguments: raw(`{"query":"..."}`)}}}}}},
		"inference_error.json": {Type: TypeInferenceError, RequestID: "<id>", Error: ErrOllamaError},
		"models_update.json":   {Type: TypeModelsUpdate, Models: []Model{{Name: "llama3.2:3b", Size: 2019393189}}},
	}
	router := map[string]RouterFrame{
		"registered.json": {Type: TypeRegistered, NodeID: "<id>"},
		"inference_request.json": {Type: TypeInferenceReq, RequestID: "<id>",
			OllamaParams: raw(`{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}],"stream":true,"think":false}`)},
		"cancel_request.json": {Type: TypeCancelRequest, RequestID: "<id>"},
	}
	files := testdataFiles(t, "v1")
	if len(files) != len(node)+len(router) {
		t.Fatalf("testdata/v1 has %d files, test expects %d", len(files), len(node)+len(router))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			in := mustRead(t, path)
			var view any
			if want, ok := node[name]; ok {
				f, err := DecodeNodeFrame(in)
				if err != nil {
					t.Fatalf("DecodeNodeFrame: %v", err)
				}
				if !reflect.DeepEqual(f, want) {
					t.Fatalf("decoded\n got: %#v\nwant: %#v", f, want)
				}
				view = nodeView(f)
			} else if want, ok := router[name]; ok {
				f, err := DecodeRouterFrame(in)
				if err != nil {
					t.Fatalf("DecodeRouterFrame: %v", err)
				}
				if !reflect.DeepEqual(f, want) {
					t.Fatalf("decoded\n got: %#v\nwant: %#v", f, want)
				}
				if view, ok = routerView(f); !ok {
					t.Fatal("ollama_params refused")
				}
			} else {
				t.Fatalf("no expectation for %s", name)
			}
			out := mustMarshal(t, view)
			if got, want := asMap(t, out), asMap(t, in); !reflect.DeepEqual(got, want) {
				t.Fatalf("re-encoding changed the frame\n  in: %s\n out: %s", bytes.TrimSpace(in), out)
			}
		})
	}
}

// TestNodeFrameV1Compat covers the v1 defaults and the tolerance rules:
// missing optional keys, clamping, unknown keys and unknown types.
func TestNodeFrameV1Compat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any    // typed view after defaults; nil for ignored types
		out  string // exact re-encoding of the view ("" = skip)
	}{
		{
			name: "heartbeat without available means available",
			in:   `{"type":"heartbeat","node_id":"n1","active_requests":2}`,
			want: Heartbeat{Type: TypeHeartbeat, NodeID: "n1", ActiveRequests: 2, Available: true},
			out:  `{"type":"heartbeat","node_id":"n1","active_requests":2,"available":true}`,
		},
		{
			name: "heartbeat available null means available",
			in:   `{"type":"heartbeat","node_id":"n1","active_requests":0,"available":null}`,
			want: Heartbeat{Type: TypeHeartbeat, NodeID: "n1", Available: true},
		},
		{
			name: "heartbeat available false honoured",
			in:   `{"type":"heartbeat","node_id":"n1","active_requests":0,"available":false}`,
			want: Heartbeat{Type: TypeHeartbeat, NodeID: "n1", Available: false},
			out:  `{"type":"heartbeat","node_id":"n1","active_requests":0,"available":false}`,
		},
		{
			name: "heartbeat loaded_models ext",
			in:   `{"type":"heartbeat","node_id":"n1","active_requests":1,"available":true,"loaded_models":["qwen3:32b"]}`,
			want: Heartbeat{Type: TypeHeartbeat, NodeID: "n1", ActiveRequests: 1, Available: true, LoadedModels: []string{"qwen3:32b"}},
		},
		{
			name: "register without max_concurrent defaults to 2",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}]}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 2},
			out:  `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":2}`,
		},
		{
			name: "register max_concurrent null defaults to 2",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":null}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 2},
		},
		{
			name: "register max_concurrent 0 clamped to 1",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":0}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 1},
		},
		{
			name: "register max_concurrent negative clamped to 1",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":-7}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 1},
		},
		{
			name: "register max_concurrent 99 clamped to 10",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":99}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 10},
			out:  `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":10}`,
		},
		{
			name: "register max_concurrent 1 kept",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":1}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 1},
		},
		{
			name: "register max_concurrent 10 kept",
			in:   `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":10}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 10},
		},
		{
			name: "register unknown keys ignored",
			in: `{"type":"register","node_id":"n1","hostname":"secret-box","gpu":{"name":"RTX 4090","vram":24},` +
				`"models":[{"name":"m:1","size":1,"modified_at":"2025-01-01T00:00:00Z","details":{"family":"llama"}}],"max_concurrent":1}`,
			want: Register{Type: TypeRegister, NodeID: "n1", Models: []Model{{Name: "m:1", Size: 1}}, MaxConcurrent: 1},
			out:  `{"type":"register","node_id":"n1","models":[{"name":"m:1","size":1}],"max_concurrent":1}`,
		},
		{
			name: "heartbeat unknown keys ignored",
			in:   `{"type":"heartbeat","node_id":"n1","active_requests":0,"available":true,"cpu_temp":71.5,"extra":{"a":[1,2]}}`,
			want: Heartbeat{Type: TypeHeartbeat, NodeID: "n1", Available: true},
			out:  `{"type":"heartbeat","node_id":"n1","active_requests":0,"available":true}`,
		},
		{
			name: "chunk message extra keys dropped",
			in: `{"type":"inference_chunk","request_id":"r1","model":"m:1","created_at":"2025-01-01T00:00:00Z",` +
				`"chunk":{"model":"m:1","created_at":"x","message":{"role":"assistant","content":"Hi","images":["aGVsbG8="],"secret":"k3y","tool_name":"x"},"done":false,"context":[1,2,3]}}`,
			want: InferenceChunk{Type: TypeInferenceChunk, RequestID: "r1", Chunk: Chunk{Message: &ChunkMessage{Role: "assistant", Content: "Hi"}}},
			out:  `{"type":"inference_chunk","request_id":"r1","chunk":{"message":{"role":"assistant","content":"Hi"},"done":false}}`,
		},
		{
			name: "final chunk without message",
			in:   `{"type":"inference_chunk","request_id":"r1","chunk":{"done":true,"done_reason":"length","eval_count":3}}`,
			want: InferenceChunk{Type: TypeInferenceChunk, RequestID: "r1", Chunk: Chunk{Done: true, DoneReason: "length", Metrics: ollama.Metrics{EvalCount: 3}}},
			out:  `{"type":"inference_chunk","request_id":"r1","chunk":{"done":true,"done_reason":"length","eval_count":3}}`,
		},
		{
			name: "tool call arguments with whitespace are an object",
			in:   `{"type":"inference_chunk","request_id":"r1","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"web_search","arguments": {"query" : "x"}}}]},"done":false}}`,
			want: InferenceChunk{Type: TypeInferenceChunk, RequestID: "r1", Chunk: Chunk{Message: &ChunkMessage{Role: "assistant",
				ToolCalls: []ollama.ToolCall{{Function: ollama.ToolFunction{Name: "web_search", Arguments: raw(`{"query" : "x"}`)}}}}}},
			out: `{"type":"inference_chunk","request_id":"r1","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"web_search","arguments":{"query":"x"}}}]},"done":false}}`,
		},
		{
			name: "inference_error unknown code passes through",
			in:   `{"type":"inference_error","request_id":"r1","error":"gpu_on_fire","detail":"x"}`,
			want: InferenceError{Type: TypeInferenceError, RequestID: "r1", Error: "gpu_on_fire"},
			out:  `{"type":"inference_error","request_id":"r1","error":"gpu_on_fire"}`,
		},
		{
			name: "unknown type ignored",
			in:   `{"type":"node_stats","node_id":"n1","gpu_util":0.5,"temps":[60,61]}`,
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeNodeFrame([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeNodeFrame: %v", err)
			}
			got := nodeView(f)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("view\n got: %#v\nwant: %#v", got, tc.want)
			}
			if tc.out != "" {
				if b := mustMarshal(t, got); string(b) != tc.out {
					t.Fatalf("re-encoded\n got: %s\nwant: %s", b, tc.out)
				}
			}
		})
	}
}

func TestDecodeNodeFrameRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"not json", `hello`, ErrMalformed},
		{"truncated", `{"type":"heartbeat"`, ErrMalformed},
		{"array", `[{"type":"heartbeat"}]`, ErrMalformed},
		{"type not a string", `{"type":5}`, ErrMalformed},
		{"max_concurrent not a number", `{"type":"register","node_id":"n","models":[],"max_concurrent":"2"}`, ErrMalformed},
		{"empty object", `{}`, ErrInvalid},
		{"null", `null`, ErrInvalid},
		{"empty type", `{"type":"","node_id":"n"}`, ErrInvalid},
		{"chunk without request_id", `{"type":"inference_chunk","chunk":{"done":true}}`, ErrInvalid},
		{"chunk without chunk", `{"type":"inference_chunk","request_id":"r"}`, ErrInvalid},
		{"chunk null", `{"type":"inference_chunk","request_id":"r","chunk":null}`, ErrInvalid},
		{"tool call arguments string", `{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]}}}`, ErrInvalid},
		{"tool call arguments array", `{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":[1]}}]}}}`, ErrInvalid},
		{"tool call arguments null", `{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":null}}]}}}`, ErrInvalid},
		{"tool call arguments missing", `{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f"}}]}}}`, ErrInvalid},
		{"error without request_id", `{"type":"inference_error","error":"ollama_error"}`, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeNodeFrame([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(f, NodeFrame{}) {
				t.Fatalf("frame not zero on error: %#v", f)
			}
		})
	}
}

func TestDecodeRouterFrame(t *testing.T) {
	ok := []struct {
		name string
		in   string
		want RouterFrame
	}{
		{"registered unknown keys", `{"type":"registered","node_id":"n1","server_version":"1.2","motd":{"x":1}}`,
			RouterFrame{Type: TypeRegistered, NodeID: "n1"}},
		{"cancel unknown keys", `{"type":"cancel_request","request_id":"r1","reason":"client gone"}`,
			RouterFrame{Type: TypeCancelRequest, RequestID: "r1"}},
		{"unknown type", `{"type":"router_notice","text":"maintenance at 02:00"}`,
			RouterFrame{Type: "router_notice"}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeRouterFrame([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f, tc.want) {
				t.Fatalf("got %#v, want %#v", f, tc.want)
			}
		})
	}
	bad := []struct {
		name string
		in   string
		want error
	}{
		{"not json", `{`, ErrMalformed},
		{"type not a string", `{"type":true}`, ErrMalformed},
		{"missing type", `{"request_id":"r"}`, ErrInvalid},
		{"request without request_id", `{"type":"inference_request","ollama_params":{"model":"m"}}`, ErrInvalid},
		{"request without params", `{"type":"inference_request","request_id":"r"}`, ErrInvalid},
		{"cancel without request_id", `{"type":"cancel_request"}`, ErrInvalid},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeRouterFrame([]byte(tc.in)); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestUnknownTypeWithForeignShapes: protocol.md says peers ignore unknown
// message types whatever they carry. A future extension may reuse a key name
// that NodeFrame/RouterFrame decode with another JSON type.
func TestUnknownTypeWithForeignShapes(t *testing.T) {
	node := []string{
		`{"type":"node_stats","models":{"qwen3:32b":{"tps":41.2}}}`,
		`{"type":"node_stats","error":{"code":1,"msg":"x"}}`,
		`{"type":"node_stats","chunk":"abc","available":"yes"}`,
	}
	router := []string{
		`{"type":"router_notice","request_id":42}`,
		`{"type":"router_notice","node_id":{"new":"n2"}}`,
	}
	var failed []string
	for _, in := range node {
		if f, err := DecodeNodeFrame([]byte(in)); err != nil || f.Type != "node_stats" {
			failed = append(failed, "node: "+in+": "+errString(err))
		}
	}
	for _, in := range router {
		if f, err := DecodeRouterFrame([]byte(in)); err != nil || f.Type != "router_notice" {
			failed = append(failed, "router: "+in+": "+errString(err))
		}
	}
	if len(failed) > 0 {
		for _, s := range failed {
			t.Log(s)
		}
		t.Fatal("unknown message types whose keys collide with NodeFrame/RouterFrame fields must be ignored, not refused as malformed")
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
