package wire

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/ollama"
)

// Bounds on what a node says about itself and its answers, beyond the v1
// limits of protocol §3. Every field a node sends is checked against them
// where it is decoded (DecodeNodeFrame, ValidateRegister, ValidateModels):
// a node's word never reaches the registry, the selection policy or a
// consumer unbounded.
const (
	MaxCapabilities   = 16      // capabilities per model
	MaxCapabilityLen  = 32      // bytes of one capability name
	MaxDigestLen      = 80      // "sha256:" and 64 hex digits, with room
	MaxDetailLen      = 32      // quantization, parameter_size
	MaxFamilyLen      = 64      // bytes
	MaxVersionLen     = 32      // ollama_version
	MaxAgentLen       = 64      // agent
	MaxModelBytes     = 1 << 42 // 4.4 TB: no real model file is larger
	MaxContextLength  = 1 << 24 // tokens of a model's context window
	MaxLoadedModels   = MaxModelsPerNode
	MaxToolCallsChunk = 16       // tool calls in one chunk
	MaxToolNameLen    = 64       // bytes of a tool's name
	MaxDoneReasonLen  = 16       // bytes of done_reason
	MaxTokenCount     = 1 << 24  // a plausible eval_count or prompt_eval_count
	MaxDurationNanos  = 1 << 45  // about 9.8 hours: a plausible Ollama duration
	MaxToolArgsBytes  = 64 << 10 // one tool call's arguments
	MaxKeyLen         = 64       // "ed25519:" and 44 base64 characters
	MaxSignatureLen   = 128      // 88 base64 characters
	MaxNonceLen       = 64       // 44 base64 characters
	MaxRequestIDLen   = 128      // a request id's bytes (this router's are 20)
	MaxURLLen         = 512      // a URL one router shows the others (its --public-url)
)

// Capability is one model capability the router acts on, as a bit.
type Capability uint8

// The capabilities Ollama reports in /api/show that the router knows.
const (
	CapCompletion Capability = 1 << iota
	CapTools
	CapThinking
	CapVision
	CapInsert
	CapEmbedding
)

var capNames = []struct {
	c    Capability
	name string
}{
	{CapCompletion, "completion"}, {CapTools, "tools"}, {CapThinking, "thinking"},
	{CapVision, "vision"}, {CapInsert, "insert"}, {CapEmbedding, "embedding"},
}

// CapabilitiesOf folds a (validated) capability list into the set the
// router knows; unknown names are ignored.
func CapabilitiesOf(names []string) Capability {
	var c Capability
	for _, n := range names {
		for _, k := range capNames {
			if n == k.name {
				c |= k.c
			}
		}
	}
	return c
}

// Names lists the capabilities of c in a fixed order.
func (c Capability) Names() []string {
	var out []string
	for _, k := range capNames {
		if c&k.c != 0 {
			out = append(out, k.name)
		}
	}
	return out
}

// Has reports whether c includes k.
func (c Capability) Has(k Capability) bool { return c&k == k }

// token reports whether s is 1..max bytes of [a-z0-9_.-] (capability
// names, done reasons).
func token(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// printable reports whether s is at most max bytes of valid UTF-8 without
// control characters (what may reach a log line or an admin view).
func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// digestOK accepts "", 1..64 hex digits, optionally after "sha256:".
func digestOK(d string) bool {
	if d == "" {
		return true
	}
	if len(d) > MaxDigestLen {
		return false
	}
	if len(d) > 7 && d[:7] == "sha256:" {
		d = d[7:]
	}
	if d == "" || len(d) > 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ValidHTTPURL reports whether u is an http(s) URL with a host, of at most
// MaxURLLen bytes, of printable characters other than spaces (valid
// UTF-8): what serve takes as a URL flag and a router takes of another's
// public URL, one rule on both sides.
func ValidHTTPURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || len(u) > MaxURLLen {
		return false
	}
	for _, r := range u {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// ValidModelFields reports whether m's extension fields pass the checks
// ValidateModels makes of each model a node registers (not its name).
func ValidModelFields(m Model) bool { return modelFieldsOK(m) }

// ValidNormalizedName reports whether name is what NormalizeModel makes of
// a name ValidModelName accepts: the names a router lists its models by.
// It may be longer than MaxModelName by the implicit ":latest".
func ValidNormalizedName(name string) bool {
	if ValidModelName(name) && NormalizeModel(name) == name {
		return true
	}
	raw, ok := strings.CutSuffix(name, ":latest")
	return ok && ValidModelName(raw) && NormalizeModel(raw) == name
}

// modelFieldsOK checks the extension fields of one model.
func modelFieldsOK(m Model) bool {
	if m.Size < 0 || m.Size > MaxModelBytes || m.ContextLength < 0 || m.ContextLength > MaxContextLength {
		return false
	}
	if !digestOK(m.Digest) || !printable(m.Quantization, MaxDetailLen) || !printable(m.ParameterSize, MaxDetailLen) ||
		!printable(m.Family, MaxFamilyLen) {
		return false
	}
	if len(m.Capabilities) > MaxCapabilities {
		return false
	}
	for _, c := range m.Capabilities {
		if !token(c, MaxCapabilityLen) {
			return false
		}
	}
	return true
}

// ValidToolName reports whether name is 1..64 bytes of [a-zA-Z0-9_.-], the
// tool names every dialect accepts.
func ValidToolName(name string) bool {
	if name == "" || len(name) > MaxToolNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// checkChunk bounds what a (JSON-decoded) chunk carries and makes its
// claims harmless: tool calls are counted and named properly, done_reason
// is a short token (or dropped), and metrics that cannot be true (negative,
// or past any plausible size) are zeroed, which every user reads as
// "unknown". It reports false for a chunk to refuse.
func checkChunk(c *Chunk) bool {
	if m := c.Message; m != nil {
		if len(m.ToolCalls) > MaxToolCallsChunk {
			return false
		}
		for _, tc := range m.ToolCalls {
			if !ValidToolName(tc.Function.Name) || len(tc.Function.Arguments) > MaxToolArgsBytes ||
				!isJSONObject(tc.Function.Arguments) || len(tc.ID) > MaxToolNameLen {
				return false
			}
		}
	}
	if c.DoneReason != "" && !token(c.DoneReason, MaxDoneReasonLen) {
		c.DoneReason = ""
	}
	c.Metrics = plausibleMetrics(c.Metrics)
	return true
}

// plausibleMetrics zeroes each counter or duration a node could not have
// measured.
func plausibleMetrics(m ollama.Metrics) ollama.Metrics {
	count := func(v int) int {
		if v < 0 || v > MaxTokenCount {
			return 0
		}
		return v
	}
	dur := func(v int64) int64 {
		if v < 0 || v > MaxDurationNanos {
			return 0
		}
		return v
	}
	m.EvalCount, m.PromptEvalCount = count(m.EvalCount), count(m.PromptEvalCount)
	m.EvalDuration, m.PromptEvalDuration = dur(m.EvalDuration), dur(m.PromptEvalDuration)
	m.LoadDuration, m.TotalDuration = dur(m.LoadDuration), dur(m.TotalDuration)
	return m
}

// loadedOK checks a heartbeat's loaded_models.
func loadedOK(names []string) bool {
	if len(names) > MaxLoadedModels {
		return false
	}
	for _, n := range names {
		if !ValidModelName(n) {
			return false
		}
	}
	return true
}
