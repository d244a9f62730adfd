// Package wire owns the router↔node WebSocket protocol (docs/protocol.md §2–3):
// the JSON messages both sides exchange, their decoding from untrusted bytes,
// and the limits every side enforces. It does no I/O.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

// Limits shared by router, node and consumer (protocol §3).
const (
	MaxMessages       = 50
	MaxMessageChars   = 10_000
	MaxTotalChars     = 100_000
	MaxModelName      = 64
	MaxModelsPerNode  = 20
	MaxNodeID         = 64
	MaxNodesPerIP     = 3
	MinMaxConcurrent  = 1
	MaxMaxConcurrent  = 10
	DefaultConcurrent = 2
	// MaxFrameBytes bounds one WebSocket message from the router to a
	// node. A full request (100,000 characters, escaped) fits; anything
	// larger is refused.
	MaxFrameBytes = 1 << 20
	// MaxNodeFrameBytes bounds one WebSocket message from a node to the
	// router. A token frame is tens of bytes and a registration a few KiB;
	// a larger frame closes the link (1009).
	MaxNodeFrameBytes = 256 << 10
	// ProtocolVersion is the version this implementation announces (ext).
	ProtocolVersion = 2
)

// Message types.
const (
	TypeRegister       = "register"
	TypeHeartbeat      = "heartbeat"
	TypeInferenceChunk = "inference_chunk"
	TypeInferenceError = "inference_error"
	TypeModelsUpdate   = "models_update"
	TypeRegistered     = "registered"
	TypeInferenceReq   = "inference_request"
	TypeCancelRequest  = "cancel_request"

	// Extensions: a node that registers with a key is challenged
	// (router → node) and answers with the signed challenge (node →
	// router) before "registered".
	TypeChallenge = "challenge"
	TypeProof     = "proof"
)

// Error codes a node sends in inference_error.
const (
	ErrInvalidRequest    = "invalid_request"
	ErrOllamaUnavailable = "ollama_unavailable"
	ErrOllamaError       = "ollama_error"
	// ErrOllamaBusy is an extension: Ollama answered 503 (its queue is full).
	ErrOllamaBusy = "ollama_busy"
)

// Close reasons (with code 1008 unless noted).
const (
	CloseRegistrationTimeout = "registration timeout"
	CloseExpectedRegister    = "expected register message"
	CloseInvalidNodeID       = "invalid node_id"
	CloseNoModels            = "no models provided"
	CloseTooManyModels       = "too many models"
	CloseInvalidModelName    = "invalid model name"
	CloseTooManyNodesFromIP  = "too many nodes from this IP"
	CloseReRegistered        = "re-registered"     // code 1000, sent to the old connection
	CloseHeartbeatTimeout    = "heartbeat timeout" // code 1000

	// Extensions (code 1008). A v1 node treats them as any other refusal.
	CloseNodeIDInUse        = "node_id in use" // a live connection holds the id: the newcomer is refused
	CloseInvalidModel       = "invalid model"  // a model field out of bounds (size, digest, capabilities, details)
	CloseInvalidRegister    = "invalid register"
	CloseTooManyConnections = "too many connections from this IP"
	CloseTooManyInvalid     = "too many invalid frames"
	CloseInvalidKey         = "invalid key"                      // not an Ed25519 key, or node_id not derived from it
	CloseReservedNodeID     = "node_id reserved for keyed nodes" // a keyless node announced a key-derived id
	CloseProofFailed        = "identity proof failed"            // no proof, or a bad signature
	CloseBanned             = "banned"                           // the operator banned the key or the node
)

// Model is one model a node offers. Name and Size are v1; the rest is ext.
type Model struct {
	Name          string   `json:"name"`
	Size          int64    `json:"size"`
	Digest        string   `json:"digest,omitempty"`
	Capabilities  []string `json:"capabilities,omitempty"`
	Quantization  string   `json:"quantization,omitempty"`
	ParameterSize string   `json:"parameter_size,omitempty"`
	ContextLength int      `json:"context_length,omitempty"`
	Family        string   `json:"family,omitempty"`
}

// Register is the first frame a node sends.
type Register struct {
	Type          string  `json:"type"`
	NodeID        string  `json:"node_id"`
	Models        []Model `json:"models"`
	MaxConcurrent int     `json:"max_concurrent"`
	OllamaVersion string  `json:"ollama_version,omitempty"`
	Protocol      int     `json:"protocol,omitempty"`
	Agent         string  `json:"agent,omitempty"`
	// Key (ext) is the node's public key ("ed25519:<base64>"); NodeID is
	// then the id derived from it and the router challenges the node.
	Key string `json:"key,omitempty"`
}

// Challenge (ext) asks a node that registered with a key to sign Nonce
// (standard base64 of 32 random bytes).
type Challenge struct {
	Type  string `json:"type"`
	Nonce string `json:"nonce"`
}

// Proof (ext) is a node's signature of a challenge (standard base64).
type Proof struct {
	Type      string `json:"type"`
	Signature string `json:"signature"`
}

// Heartbeat is sent by a node every 15 s.
type Heartbeat struct {
	Type           string   `json:"type"`
	NodeID         string   `json:"node_id"`
	ActiveRequests int      `json:"active_requests"`
	Available      bool     `json:"available"`
	LoadedModels   []string `json:"loaded_models,omitempty"`
}

// ChunkMessage is the whitelisted part of an Ollama response message.
type ChunkMessage struct {
	Role      string            `json:"role"`
	Content   string            `json:"content"`
	Thinking  string            `json:"thinking,omitempty"`
	ToolCalls []ollama.ToolCall `json:"tool_calls,omitempty"`
}

// Chunk is the whitelisted part of one Ollama /api/chat response line.
type Chunk struct {
	Message    *ChunkMessage `json:"message,omitempty"`
	Done       bool          `json:"done"`
	DoneReason string        `json:"done_reason,omitempty"`
	ollama.Metrics
}

// InferenceChunk carries one piece of a streamed answer.
type InferenceChunk struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	Chunk     Chunk  `json:"chunk"`
}

// InferenceError ends a request with an error code.
type InferenceError struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	Error     string `json:"error"`
}

// ModelsUpdate (ext) replaces the node's model list without reconnecting.
type ModelsUpdate struct {
	Type   string  `json:"type"`
	Models []Model `json:"models"`
}

// Registered acknowledges a registration. Protocol (ext) is the router's
// protocol version; a v1 router sends none.
type Registered struct {
	Type     string `json:"type"`
	NodeID   string `json:"node_id"`
	Protocol int    `json:"protocol,omitempty"`
}

// InferenceRequest asks a node to run an Ollama /api/chat call.
type InferenceRequest struct {
	Type         string             `json:"type"`
	RequestID    string             `json:"request_id"`
	OllamaParams ollama.ChatRequest `json:"ollama_params"`
}

// CancelRequest asks a node to stop a request and send nothing more for it.
type CancelRequest struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
}

// NodeFrame is any frame a node may send, decoded in one pass. Which fields
// are meaningful depends on Type. Unknown types decode without error so that
// callers can ignore them, as v1 peers do.
type NodeFrame struct {
	Type           string   `json:"type"`
	NodeID         string   `json:"node_id"`
	Models         []Model  `json:"models"`
	MaxConcurrent  *int     `json:"max_concurrent"`
	OllamaVersion  string   `json:"ollama_version"`
	Protocol       int      `json:"protocol"`
	Agent          string   `json:"agent"`
	ActiveRequests int      `json:"active_requests"`
	Available      *bool    `json:"available"`
	LoadedModels   []string `json:"loaded_models"`
	RequestID      string   `json:"request_id"`
	Chunk          *Chunk   `json:"chunk"`
	Error          string   `json:"error"`
	Key            string   `json:"key"`
	Signature      string   `json:"signature"`
}

// Errors returned by the decoders; callers branch on them.
var (
	ErrMalformed = errors.New("malformed frame")
	ErrInvalid   = errors.New("invalid frame")
)

// DecodeNodeFrame decodes and checks one frame from a node. It checks the
// shape of inference frames; registration rules (which carry close reasons)
// are checked by ValidateRegister.
func DecodeNodeFrame(data []byte) (NodeFrame, error) {
	if f, ok := decodeChunkFast(data); ok {
		return f, nil
	}
	return decodeNodeFrameJSON(data)
}

// decodeNodeFrameJSON is DecodeNodeFrame through encoding/json.
func decodeNodeFrameJSON(data []byte) (NodeFrame, error) {
	var f NodeFrame
	if err := json.Unmarshal(data, &f); err != nil {
		// Unknown types are ignored whatever their keys carry.
		t := frameType(data)
		if t != "" && !isNodeType(t) {
			return NodeFrame{Type: t}, nil
		}
		// A chunk's counter or duration that no integer holds (1e30, 2.5)
		// is as implausible as a negative one: unknown, not a reason to
		// drop the chunk and the text it carries.
		fixed := []byte(nil)
		if t == TypeInferenceChunk {
			fixed = withoutBadMetrics(data)
		}
		if fixed == nil || json.Unmarshal(fixed, &f) != nil {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: %v", ErrMalformed, err)
		}
	}
	switch f.Type {
	case TypeInferenceChunk:
		if f.RequestID == "" || f.Chunk == nil {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: inference_chunk needs request_id and chunk", ErrInvalid)
		}
		if !checkChunk(f.Chunk) {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: tool calls over %d, or one with a bad name or arguments (a JSON object of at most %d bytes)", ErrInvalid, MaxToolCallsChunk, MaxToolArgsBytes)
		}
	case TypeInferenceError:
		if f.RequestID == "" {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: inference_error needs request_id", ErrInvalid)
		}
	case TypeProof:
		if f.Signature == "" || len(f.Signature) > MaxSignatureLen {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: proof needs a signature of at most %d bytes", ErrInvalid, MaxSignatureLen)
		}
	case TypeHeartbeat:
		if !loadedOK(f.LoadedModels) {
			return NodeFrame{}, fmt.Errorf("decode node frame: %w: loaded_models: at most %d valid model names", ErrInvalid, MaxLoadedModels)
		}
	case "":
		return NodeFrame{}, fmt.Errorf("decode node frame: %w: missing type", ErrInvalid)
	}
	return f, nil
}

// RegisterFrame returns the register message carried by f, with
// max_concurrent defaulted and clamped.
func (f NodeFrame) RegisterFrame() Register {
	mc := DefaultConcurrent
	if f.MaxConcurrent != nil {
		mc = min(max(*f.MaxConcurrent, MinMaxConcurrent), MaxMaxConcurrent)
	}
	return Register{Type: TypeRegister, NodeID: f.NodeID, Models: f.Models, MaxConcurrent: mc,
		OllamaVersion: f.OllamaVersion, Protocol: f.Protocol, Agent: f.Agent, Key: f.Key}
}

// HeartbeatFrame returns the heartbeat carried by f; a heartbeat without
// "available" (v1) means available.
func (f NodeFrame) HeartbeatFrame() Heartbeat {
	avail := f.Available == nil || *f.Available
	return Heartbeat{Type: TypeHeartbeat, NodeID: f.NodeID, ActiveRequests: f.ActiveRequests,
		Available: avail, LoadedModels: f.LoadedModels}
}

// ValidateRegister checks a registration and returns the close reason that
// protocol §2.3 prescribes, or "" when it is acceptable.
func ValidateRegister(r Register) string {
	if r.NodeID == "" || utf8.RuneCountInString(r.NodeID) > MaxNodeID || !printable(r.NodeID, 4*MaxNodeID) {
		return CloseInvalidNodeID
	}
	if reason := ValidateModels(r.Models); reason != "" {
		return reason
	}
	if !printable(r.OllamaVersion, MaxVersionLen) || !printable(r.Agent, MaxAgentLen) || len(r.Key) > MaxKeyLen {
		return CloseInvalidRegister
	}
	return ""
}

// ValidateModels checks a model list (register or models_update) and returns
// the close reason for the first violation, or "".
func ValidateModels(models []Model) string {
	if len(models) == 0 {
		return CloseNoModels
	}
	if len(models) > MaxModelsPerNode {
		return CloseTooManyModels
	}
	for _, m := range models {
		if !ValidModelName(m.Name) {
			return CloseInvalidModelName
		}
		if !modelFieldsOK(m) {
			return CloseInvalidModel
		}
	}
	return ""
}

var modelNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._:/-]*$`)

// ValidModelName reports whether name is 1..64 characters of the protocol's
// model-name pattern.
func ValidModelName(name string) bool {
	return name != "" && len(name) <= MaxModelName && modelNameRE.MatchString(name)
}

// NormalizeModel gives a model name its implicit tag, as Ollama does:
// "llama3.2" means "llama3.2:latest".
func NormalizeModel(name string) string {
	last := name[strings.LastIndexByte(name, '/')+1:]
	if last != "" && !strings.Contains(last, ":") {
		return name + ":latest"
	}
	return name
}

// RouterFrame is any frame the router may send, decoded in one pass.
type RouterFrame struct {
	Type         string          `json:"type"`
	NodeID       string          `json:"node_id"`
	Protocol     int             `json:"protocol"`
	Nonce        string          `json:"nonce"`
	RequestID    string          `json:"request_id"`
	OllamaParams json.RawMessage `json:"ollama_params"`
}

// ValidRequestID reports whether id can name a request between router and
// node: 1..MaxRequestIDLen printable ASCII bytes, spaces included. The
// node repeats it in every frame of the answer (and in its log), so a
// longer one would make each of them larger than it may be.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// DecodeRouterFrame decodes one frame from a router.
func DecodeRouterFrame(data []byte) (RouterFrame, error) {
	var f RouterFrame
	if err := json.Unmarshal(data, &f); err != nil {
		// Unknown types are ignored whatever their keys carry.
		if t := frameType(data); t != "" && t != TypeRegistered && t != TypeInferenceReq && t != TypeCancelRequest && t != TypeChallenge {
			return RouterFrame{Type: t}, nil
		}
		return RouterFrame{}, fmt.Errorf("decode router frame: %w: %v", ErrMalformed, err)
	}
	switch f.Type {
	case TypeInferenceReq:
		if !ValidRequestID(f.RequestID) || len(f.OllamaParams) == 0 {
			return RouterFrame{}, fmt.Errorf("decode router frame: %w: inference_request needs a request_id (1..%d printable bytes) and ollama_params", ErrInvalid, MaxRequestIDLen)
		}
	case TypeCancelRequest:
		if !ValidRequestID(f.RequestID) {
			return RouterFrame{}, fmt.Errorf("decode router frame: %w: cancel_request needs a request_id (1..%d printable bytes)", ErrInvalid, MaxRequestIDLen)
		}
	case TypeChallenge:
		if f.Nonce == "" || len(f.Nonce) > MaxNonceLen {
			return RouterFrame{}, fmt.Errorf("decode router frame: %w: challenge needs a nonce of at most %d bytes", ErrInvalid, MaxNonceLen)
		}
	case "":
		return RouterFrame{}, fmt.Errorf("decode router frame: %w: missing type", ErrInvalid)
	}
	return f, nil
}

// ErrRefused marks a request a node must refuse with invalid_request.
var ErrRefused = errors.New("request refused")

// NodeRoles are the roles a node accepts in a request.
var nodeRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// DecodeOllamaParams decodes the ollama_params of an inference_request the
// way a node must: only whitelisted keys survive (decoding into
// ollama.ChatRequest drops the rest), and the message limits are enforced.
// served reports whether the node registered the model.
func DecodeOllamaParams(raw json.RawMessage, served func(model string) bool) (ollama.ChatRequest, error) {
	var req ollama.ChatRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: %v", ErrRefused, err)
	}
	if !served(req.Model) {
		return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: model not served here", ErrRefused)
	}
	if len(req.Messages) == 0 || len(req.Messages) > MaxMessages {
		return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: %d messages (1..%d)", ErrRefused, len(req.Messages), MaxMessages)
	}
	total := 0
	for i, m := range req.Messages {
		if !nodeRoles[m.Role] {
			return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: message %d role %q", ErrRefused, i, m.Role)
		}
		n := utf8.RuneCountInString(m.Content)
		if n > MaxMessageChars {
			return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: message %d over %d characters", ErrRefused, i, MaxMessageChars)
		}
		if m.Role == "user" || m.Role == "assistant" {
			// The conversation's own text; the router's system prompt and
			// tool results ride on top of the consumer's 100,000.
			total += n
		}
	}
	if total > MaxTotalChars {
		return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: %d characters in total (max %d)", ErrRefused, total, MaxTotalChars)
	}
	if string(req.Options) == "null" {
		req.Options = nil
	}
	if len(req.Options) > 0 && !isJSONObject(req.Options) {
		return ollama.ChatRequest{}, fmt.Errorf("decode ollama_params: %w: options must be an object", ErrRefused)
	}
	stream := true
	req.Stream = &stream
	return req, nil
}

func isJSONObject(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}

// withoutBadMetrics returns a chunk frame without the counters and
// durations whose values do not decode as integers, or nil when it has
// none (the frame is malformed for another reason).
func withoutBadMetrics(data []byte) []byte {
	var top map[string]json.RawMessage
	var chunk map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil || json.Unmarshal(top["chunk"], &chunk) != nil {
		return nil
	}
	removed := false
	for k, v := range chunk {
		// encoding/json matches keys regardless of case: so does this.
		var bad bool
		switch strings.ToLower(k) {
		case "eval_count", "prompt_eval_count":
			var n int
			bad = json.Unmarshal(v, &n) != nil
		case "total_duration", "load_duration", "prompt_eval_duration", "eval_duration":
			var n int64
			bad = json.Unmarshal(v, &n) != nil
		}
		if bad {
			delete(chunk, k)
			removed = true
		}
	}
	if !removed {
		return nil
	}
	var err error
	if top["chunk"], err = json.Marshal(chunk); err != nil {
		return nil
	}
	out, err := json.Marshal(top)
	if err != nil {
		return nil
	}
	return out
}

// frameType reads only the "type" of a frame, or "".
func frameType(data []byte) string {
	var head struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(data, &head) != nil {
		return ""
	}
	return head.Type
}

func isNodeType(t string) bool {
	switch t {
	case TypeRegister, TypeHeartbeat, TypeInferenceChunk, TypeInferenceError, TypeModelsUpdate, TypeProof:
		return true
	}
	return false
}
