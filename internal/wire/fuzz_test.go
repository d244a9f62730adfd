package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

// Fuzz targets. Run one at a time, for example:
//
//	go test -run='^$' -fuzz=FuzzDecodeNodeFrame -fuzztime=30s ./internal/wire/
//
// Invariants: no panic; an accepted frame's typed view survives
// encode→decode unchanged (up to encoding/json's canonical form: compacted
// RawMessage, omitempty dropping empty slices); DecodeOllamaParams never
// returns more than MaxMessages messages or a message over MaxMessageChars.

// seedFuzz adds every golden and v1 example, plus inline edge cases.
func seedFuzz(f *testing.F, extra ...string) {
	for _, dir := range []string{"golden", "v1"} {
		for _, path := range testdataFiles(f, dir) {
			f.Add(mustRead(f, path))
		}
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// canon gives a raw JSON value the form json.Marshal writes it in.
func canon(r json.RawMessage) json.RawMessage {
	if r == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // r came from a successful decode
	}
	return b
}

func canonModels(ms []Model) []Model {
	if ms == nil {
		return nil
	}
	out := make([]Model, len(ms))
	for i, m := range ms {
		if len(m.Capabilities) == 0 {
			m.Capabilities = nil
		}
		out[i] = m
	}
	return out
}

func canonToolCalls(tcs []ollama.ToolCall) []ollama.ToolCall {
	if len(tcs) == 0 {
		return nil
	}
	out := make([]ollama.ToolCall, len(tcs))
	for i, tc := range tcs {
		tc.Function.Arguments = canon(tc.Function.Arguments)
		if tc.Function.Arguments == nil { // no omitempty: absent is written as null
			tc.Function.Arguments = raw("null")
		}
		out[i] = tc
	}
	return out
}

// canonNodeView is what a typed node view must look like after one
// encode/decode cycle.
func canonNodeView(v any) any {
	switch v := v.(type) {
	case Register:
		v.Models = canonModels(v.Models)
		return v
	case ModelsUpdate:
		v.Models = canonModels(v.Models)
		return v
	case Heartbeat:
		if len(v.LoadedModels) == 0 {
			v.LoadedModels = nil
		}
		return v
	case InferenceChunk:
		if m := v.Chunk.Message; m != nil {
			mc := *m
			mc.ToolCalls = canonToolCalls(mc.ToolCalls)
			v.Chunk.Message = &mc
		}
		return v
	}
	return v
}

func canonChatRequest(r ollama.ChatRequest) ollama.ChatRequest {
	if r.Messages != nil {
		ms := make([]ollama.Message, len(r.Messages))
		for i, m := range r.Messages {
			if len(m.Images) == 0 {
				m.Images = nil
			}
			m.ToolCalls = canonToolCalls(m.ToolCalls)
			ms[i] = m
		}
		r.Messages = ms
	}
	r.Think, r.KeepAlive, r.Options = canon(r.Think), canon(r.KeepAlive), canon(r.Options)
	r.Tools, r.Format = canon(r.Tools), canon(r.Format)
	return r
}

func FuzzDecodeNodeFrame(f *testing.F) {
	seedFuzz(f,
		`{"type":"heartbeat","node_id":"n1","active_requests":2}`,
		`{"type":"heartbeat","node_id":"n1","loaded_models":["a","b c"]}`,
		`{"type":"proof","signature":"AAAA"}`,
		`{"type":"proof","signature":""}`,
		`{"type":"register","node_id":"key-abc","key":"ed25519:AAAA","models":[{"name":"m","size":1}]}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"done":true,"done_reason":"<x>","eval_count":-1,"eval_duration":-9}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"content":"<x>"},"done":true,"eval_count":1e30,"Eval_Duration":2.5,"total_duration":"x"}}`,
		`{"type":"register","node_id":"n1","models":[{"name":"m","size":9223372036854775807,"capabilities":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}]}`,
		`{"type":"register","node_id":"n1","models":[{"name":"m","size":1,"capabilities":[]}],"max_concurrent":99}`,
		`{"type":"register","node_id":"","models":[],"max_concurrent":0}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","images":["x"],"tool_calls":[{"id":"c1","function":{"index":1,"name":"f","arguments": { "a" : [1, "<&>"] }}}]},"done":false}}`,
		`{"type":"inference_chunk","request_id":"r","chunk":{"message":{"role":"assistant","content":"","tool_calls":[]},"done":true,"eval_count":1}}`,
		`{"type":"models_update","models":[]}`,
		`{"type":"node_stats","x":1}`,
		"{\"type\":\"inference_error\",\"request_id\":\"\xff\",\"error\":\"x\"}",
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeNodeFrame(data)
		if err != nil {
			return
		}
		switch fr.Type {
		case "":
			t.Fatal("accepted a frame without type")
		case TypeInferenceChunk:
			if fr.RequestID == "" || fr.Chunk == nil {
				t.Fatalf("accepted chunk without request_id/chunk: %s", data)
			}
			if m := fr.Chunk.Message; m != nil {
				if len(m.ToolCalls) > MaxToolCallsChunk {
					t.Fatalf("accepted %d tool calls", len(m.ToolCalls))
				}
				for _, tc := range m.ToolCalls {
					if !isJSONObject(tc.Function.Arguments) || !json.Valid(tc.Function.Arguments) || !ValidToolName(tc.Function.Name) {
						t.Fatalf("accepted tool call %q(%q)", tc.Function.Name, tc.Function.Arguments)
					}
				}
			}
			if m := fr.Chunk.Metrics; m != plausibleMetrics(m) {
				t.Fatalf("implausible metrics kept: %+v", m)
			}
			if d := fr.Chunk.DoneReason; d != "" && !token(d, MaxDoneReasonLen) {
				t.Fatalf("done_reason %q kept", d)
			}
		case TypeHeartbeat:
			if !loadedOK(fr.LoadedModels) {
				t.Fatalf("loaded_models %q kept", fr.LoadedModels)
			}
		case TypeInferenceError:
			if fr.RequestID == "" {
				t.Fatal("accepted inference_error without request_id")
			}
		case TypeRegister:
			r := fr.RegisterFrame()
			if r.MaxConcurrent < MinMaxConcurrent || r.MaxConcurrent > MaxMaxConcurrent {
				t.Fatalf("max_concurrent %d not clamped", r.MaxConcurrent)
			}
			_ = ValidateRegister(r)
		case TypeModelsUpdate:
			_ = ValidateModels(fr.Models)
		}
		v1 := nodeView(fr)
		if v1 == nil {
			return
		}
		enc1, err := json.Marshal(v1)
		if err != nil {
			t.Fatalf("encode %#v: %v", v1, err)
		}
		fr2, err := DecodeNodeFrame(enc1)
		if err != nil {
			t.Fatalf("our own encoding is refused: %v\n in: %s\nenc: %s", err, data, enc1)
		}
		v2 := nodeView(fr2)
		if want := canonNodeView(v1); !reflect.DeepEqual(v2, want) {
			t.Fatalf("decode(encode(x)) != x\n  in: %s\n enc: %s\n got: %#v\nwant: %#v", data, enc1, v2, want)
		}
		if enc2, _ := json.Marshal(v2); !bytes.Equal(enc1, enc2) {
			t.Fatalf("encoding not stable\nenc1: %s\nenc2: %s", enc1, enc2)
		}
		if r, ok := v1.(Register); ok && ValidateRegister(r) != ValidateRegister(v2.(Register)) {
			t.Fatalf("validation changed across round trip: %s", data)
		}
	})
}

func FuzzDecodeRouterFrame(f *testing.F) {
	seedFuzz(f,
		`{"type":"inference_request","request_id":"r","ollama_params":null}`,
		`{"type":"inference_request","request_id":"r","ollama_params": [1, 2]}`,
		`{"type":"cancel_request","request_id":"r","extra":{}}`,
		`{"type":"challenge","nonce":"AAAA"}`,
		`{"type":"challenge"}`,
		`{"type":"registered","node_id":"n","protocol":2}`,
		`{"type":"router_notice","text":"x"}`,
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeRouterFrame(data)
		if err != nil {
			return
		}
		switch fr.Type {
		case "":
			t.Fatal("accepted a frame without type")
		case TypeInferenceReq:
			if !ValidRequestID(fr.RequestID) || len(fr.RequestID) > MaxRequestIDLen || len(fr.OllamaParams) == 0 || !json.Valid(fr.OllamaParams) {
				t.Fatalf("accepted inference_request with request_id %q params %q", fr.RequestID, fr.OllamaParams)
			}
		case TypeCancelRequest:
			if !ValidRequestID(fr.RequestID) {
				t.Fatalf("accepted cancel_request with request_id %q", fr.RequestID)
			}
		}
		// Wire-level view: the frame as a router would write it.
		var v1 any
		switch fr.Type {
		case TypeRegistered:
			v1 = Registered{Type: fr.Type, NodeID: fr.NodeID}
		case TypeCancelRequest:
			v1 = CancelRequest{Type: fr.Type, RequestID: fr.RequestID}
		case TypeInferenceReq:
			v1 = struct {
				Type         string          `json:"type"`
				RequestID    string          `json:"request_id"`
				OllamaParams json.RawMessage `json:"ollama_params"`
			}{fr.Type, fr.RequestID, fr.OllamaParams}
		default:
			return
		}
		enc1, err := json.Marshal(v1)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		fr2, err := DecodeRouterFrame(enc1)
		if err != nil {
			t.Fatalf("our own encoding is refused: %v\n in: %s\nenc: %s", err, data, enc1)
		}
		want := fr
		switch fr.Type {
		case TypeRegistered:
			want = RouterFrame{Type: fr.Type, NodeID: fr.NodeID}
		case TypeCancelRequest:
			want = RouterFrame{Type: fr.Type, RequestID: fr.RequestID}
		case TypeInferenceReq:
			want = RouterFrame{Type: fr.Type, RequestID: fr.RequestID, OllamaParams: canon(fr.OllamaParams)}
		}
		if !reflect.DeepEqual(fr2, want) {
			t.Fatalf("decode(encode(x)) != x\n  in: %s\n got: %#v\nwant: %#v", data, fr2, want)
		}
		// The typed view a node builds from it must be stable too.
		if tv1, ok := routerView(fr); ok {
			tv2, ok2 := routerView(fr2)
			if !ok2 {
				t.Fatalf("params accepted once, refused after round trip: %s", data)
			}
			// Only the raw params were re-encoded (compacted), so compare
			// both typed views in canonical form.
			if r1, isReq := tv1.(InferenceRequest); isReq {
				r2 := tv2.(InferenceRequest)
				r1.OllamaParams = canonChatRequest(r1.OllamaParams)
				r2.OllamaParams = canonChatRequest(r2.OllamaParams)
				tv1, tv2 = r1, r2
			}
			if !reflect.DeepEqual(tv1, tv2) {
				t.Fatalf("typed view changed\n got: %#v\nwant: %#v", tv2, tv1)
			}
		}
	})
}

func FuzzDecodeOllamaParams(f *testing.F) {
	for _, path := range testdataFiles(f, "golden") {
		if fr, err := DecodeRouterFrame(mustRead(f, path)); err == nil && fr.Type == TypeInferenceReq {
			f.Add([]byte(fr.OllamaParams))
		}
	}
	for _, path := range testdataFiles(f, "v1") {
		if fr, err := DecodeRouterFrame(mustRead(f, path)); err == nil && fr.Type == TypeInferenceReq {
			f.Add([]byte(fr.OllamaParams))
		}
	}
	for _, s := range []string{
		`{"model":"m:1","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m:1","raw":true,"template":"x","system":"y","suffix":"z","messages":[{"role":"system","content":"s"},{"role":"tool","content":"t","tool_name":"w"}],"stream":false,"options":{}}`,
		`{"model":"m:1","messages":[{"role":"assistant","content":"","images":[],"tool_calls":[{"function":{"name":"f","arguments":{ }}}]}],"options":null}`,
		`{"model":"other","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m:1","messages":[{"role":"user","content":"héllo 😀"}],"think":"high","keep_alive":0,"format":{"type":"object"}}`,
	} {
		f.Add([]byte(s))
	}
	served := func(m string) bool { return m != "other" }
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeOllamaParams(data, served)
		if err != nil {
			return
		}
		if n := len(req.Messages); n < 1 || n > MaxMessages {
			t.Fatalf("accepted %d messages", n)
		}
		for i, m := range req.Messages {
			if n := utf8.RuneCountInString(m.Content); n > MaxMessageChars {
				t.Fatalf("message %d has %d characters", i, n)
			}
			if !nodeRoles[m.Role] {
				t.Fatalf("message %d role %q", i, m.Role)
			}
		}
		if !served(req.Model) {
			t.Fatalf("accepted unserved model %q", req.Model)
		}
		if req.Stream == nil || !*req.Stream {
			t.Fatal("stream not forced to true")
		}
		if len(req.Options) > 0 && !isJSONObject(req.Options) {
			t.Fatalf("options %q", req.Options)
		}
		enc1, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(enc1, &keys); err != nil {
			t.Fatal(err)
		}
		for k := range keys {
			switch k {
			case "model", "messages", "stream", "think", "keep_alive", "options", "tools", "format":
			default:
				t.Fatalf("non-whitelisted key %q forwarded", k)
			}
		}
		req2, err := DecodeOllamaParams(enc1, served)
		if err != nil {
			t.Fatalf("our own encoding is refused: %v\n in: %s\nenc: %s", err, data, enc1)
		}
		if want := canonChatRequest(req); !reflect.DeepEqual(req2, want) {
			t.Fatalf("decode(encode(x)) != x\n got: %#v\nwant: %#v", req2, want)
		}
		if enc2, _ := json.Marshal(req2); !bytes.Equal(enc1, enc2) {
			t.Fatalf("encoding not stable\nenc1: %s\nenc2: %s", enc1, enc2)
		}
	})
}

// TestRouterFrameRequestIDBounded plays a router whose request ids a node
// could not repeat: too long for the frames of the answer, or with bytes
// that would reach the contributor's terminal through the node's log.
func TestRouterFrameRequestIDBounded(t *testing.T) {
	for _, id := range []string{strings.Repeat("r", MaxRequestIDLen+1), "a\x1b[2Jb", "caf\u00e9", ""} {
		q, _ := json.Marshal(id)
		for _, frame := range []string{
			`{"type":"inference_request","request_id":` + string(q) + `,"ollama_params":{"model":"m"}}`,
			`{"type":"cancel_request","request_id":` + string(q) + `}`,
		} {
			if _, err := DecodeRouterFrame([]byte(frame)); !errors.Is(err, ErrInvalid) {
				t.Errorf("request id %q accepted (err %v): %s", id, err, frame)
			}
		}
	}
	ok := strings.Repeat("r", MaxRequestIDLen)
	if f, err := DecodeRouterFrame([]byte(`{"type":"cancel_request","request_id":"` + ok + `"}`)); err != nil || f.RequestID != ok {
		t.Errorf("a %d-byte request id refused: %v", len(ok), err)
	}
}
