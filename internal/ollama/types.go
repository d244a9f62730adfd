// Package ollama owns the Ollama HTTP API as IdleClaw uses it: the request
// and response types of /api/chat and friends, and a small typed client that
// streams NDJSON through a callback per line.
package ollama

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// ChatRequest is the body of Ollama's POST /api/chat. Only the keys a node
// may forward are fields, so decoding an untrusted body into it drops every
// other key (protocol §2.2: model, messages, stream, think, keep_alive,
// options, tools, format).
type ChatRequest struct {
	Model     string          `json:"model"`
	Messages  []Message       `json:"messages"`
	Stream    *bool           `json:"stream,omitempty"`
	Think     json.RawMessage `json:"think,omitempty"`
	KeepAlive json.RawMessage `json:"keep_alive,omitempty"`
	Options   json.RawMessage `json:"options,omitempty"`
	Tools     json.RawMessage `json:"tools,omitempty"`
	Format    json.RawMessage `json:"format,omitempty"`
}

// Message is one chat message.
type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	Thinking  string     `json:"thinking,omitempty"`
	Images    []string   `json:"images,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	ToolName  string     `json:"tool_name,omitempty"`
}

// ToolCall is a model's request to run a tool. Arguments is a JSON object.
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Function ToolFunction `json:"function"`
}

// ToolFunction names the tool and carries its arguments.
type ToolFunction struct {
	Index     int             `json:"index,omitempty"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// Metrics are the counters Ollama puts on the final (done) chunk.
// Durations are integer nanoseconds.
type Metrics struct {
	TotalDuration      int64 `json:"total_duration,omitempty"`
	LoadDuration       int64 `json:"load_duration,omitempty"`
	PromptEvalCount    int   `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64 `json:"prompt_eval_duration,omitempty"`
	EvalCount          int   `json:"eval_count,omitempty"`
	EvalDuration       int64 `json:"eval_duration,omitempty"`
}

// TokensPerSecond is eval_count / eval_duration, or 0 when unknown.
func (m Metrics) TokensPerSecond() float64 {
	if m.EvalDuration <= 0 {
		return 0
	}
	return float64(m.EvalCount) / (float64(m.EvalDuration) / float64(time.Second))
}

// ChatResponse is one NDJSON line of a streaming /api/chat answer.
type ChatResponse struct {
	Model      string  `json:"model"`
	Message    Message `json:"message"` // created_at is not kept: nothing reads it
	Done       bool    `json:"done"`
	DoneReason string  `json:"done_reason,omitempty"`
	Error      string  `json:"error,omitempty"`
	Metrics
	// More is set by Client.Chat when the stream's next line had already
	// arrived when this one was handed over: a relay may send the two
	// together without making either wait.
	More bool `json:"-"`
}

// ModelDetails is the "details" object of /api/tags, /api/show and /api/ps.
type ModelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// TagsModel is one entry of GET /api/tags.
type TagsModel struct {
	Name       string       `json:"name"`
	Model      string       `json:"model"`
	ModifiedAt time.Time    `json:"modified_at"`
	Size       int64        `json:"size"`
	Digest     string       `json:"digest"`
	Details    ModelDetails `json:"details"`
}

// TagsResponse is the body of GET /api/tags.
type TagsResponse struct {
	Models []TagsModel `json:"models"`
}

// ShowResponse is the part of POST /api/show that IdleClaw reads.
type ShowResponse struct {
	Details      ModelDetails   `json:"details"`
	ModelInfo    map[string]any `json:"model_info"`
	Capabilities []string       `json:"capabilities"`
	// Parameters is the Modelfile's PARAMETER lines, one "name value"
	// per line.
	Parameters string `json:"parameters"`
}

// NumPredict is the model's own num_predict (its Modelfile's answer
// length in tokens), or 0 when it sets none or a limitless one.
func (s ShowResponse) NumPredict() int {
	for line := range strings.Lines(s.Parameters) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "num_predict" {
			if n, err := strconv.Atoi(f[1]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// ContextLength finds "<arch>.context_length" in model_info, or 0.
func (s ShowResponse) ContextLength() int {
	arch, _ := s.ModelInfo["general.architecture"].(string)
	if v, ok := s.ModelInfo[arch+".context_length"].(float64); ok && arch != "" {
		return int(v)
	}
	for k, v := range s.ModelInfo {
		if f, ok := v.(float64); ok && len(k) > len(".context_length") && k[len(k)-len(".context_length"):] == ".context_length" {
			return int(f)
		}
	}
	return 0
}

// PSModel is one entry of GET /api/ps (a model loaded in memory).
type PSModel struct {
	Name      string    `json:"name"`
	Model     string    `json:"model"`
	Size      int64     `json:"size"`
	Digest    string    `json:"digest"`
	ExpiresAt time.Time `json:"expires_at"`
	SizeVRAM  int64     `json:"size_vram"`
}

// PSResponse is the body of GET /api/ps.
type PSResponse struct {
	Models []PSModel `json:"models"`
}
