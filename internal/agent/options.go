package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// Limits are what the contributor lets a router ask of their machine. The
// router is not trusted with the owner's hardware: a request's options are
// cut down to the sampling options and clamped to these, and whatever
// chooses hardware or memory (num_gpu, num_thread, main_gpu, use_mmap,
// use_mlock, numa, num_batch, low_vram, ...) is never forwarded. Zero
// fields take the defaults noted.
type Limits struct {
	// MaxContext bounds num_ctx, the context window Ollama allocates
	// (default 8192 tokens). A request that asks for none gets Ollama's
	// own default, which is smaller.
	MaxContext int
	// MaxPredict bounds num_predict, the answer length in tokens (default
	// 2048); a request that asks for no limit (-1, -2, or none) gets this.
	MaxPredict int
	// MaxKeepAlive bounds keep_alive, how long Ollama keeps the model
	// loaded after the request (default 5m); "forever" (a negative value)
	// becomes this too.
	MaxKeepAlive time.Duration
	// AllowImages lets images through to models with the vision
	// capability (default off: a request with images is refused).
	AllowImages bool
}

// Defaults of Limits.
const (
	DefaultMaxContext   = 8192
	DefaultMaxPredict   = 2048
	DefaultMaxKeepAlive = 5 * time.Minute
)

func (l Limits) withDefaults() Limits {
	if l.MaxContext <= 0 {
		l.MaxContext = DefaultMaxContext
	}
	if l.MaxPredict <= 0 {
		l.MaxPredict = DefaultMaxPredict
	}
	if l.MaxKeepAlive <= 0 {
		l.MaxKeepAlive = DefaultMaxKeepAlive
	}
	return l
}

// maxStops and maxStopLen bound the stop sequences forwarded.
const (
	maxStops   = 8
	maxStopLen = 256
	maxTools   = 128
)

// numeric options forwarded, with the range each is clamped to.
var floatOptions = map[string][2]float64{
	"temperature":       {0, 5},
	"top_p":             {0, 1},
	"min_p":             {0, 1},
	"typical_p":         {0, 1},
	"repeat_penalty":    {0, 5},
	"presence_penalty":  {-5, 5},
	"frequency_penalty": {-5, 5},
}

// shape applies the contributor's limits to a request the router sent (its
// messages already checked by wire.DecodeOllamaParams): options are
// rebuilt from the allowed keys, clamped; keep_alive is clamped;
// think, format and tools are kept only in the forms Ollama takes.
// vision reports whether the model has the vision capability, predict is
// the model's own num_predict (0 for none): a request that sets no answer
// length gets it, within MaxPredict, so that the network answers as the
// contributor's Ollama would directly. It returns
// an error wrapping wire.ErrRefused for a request the node must refuse.
func (l Limits) shape(req *ollama.ChatRequest, vision bool, predict int) error {
	for i, m := range req.Messages {
		if len(m.Images) == 0 {
			continue
		}
		if !l.AllowImages || !vision {
			return fmt.Errorf("shape request: %w: message %d has images, which this node does not take for %s", wire.ErrRefused, i, req.Model)
		}
	}
	opts, err := l.options(req.Options, predict)
	if err != nil {
		return fmt.Errorf("shape request: %w: options: %v", wire.ErrRefused, err)
	}
	req.Options = opts
	req.KeepAlive = l.keepAlive(req.KeepAlive)
	req.Think = think(req.Think)
	req.Format = format(req.Format)
	req.Tools = toolList(req.Tools)
	return nil
}

// options rebuilds the options object from the allowed keys. num_predict
// is always set: a request that asks for no limit gets MaxPredict, one
// that says nothing the model's own (modelPredict, when positive) within
// MaxPredict.
func (l Limits) options(raw json.RawMessage, modelPredict int) (json.RawMessage, error) {
	in := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, fmt.Errorf("not an object")
		}
	}
	out := map[string]any{}
	for k, v := range in {
		if r, ok := floatOptions[k]; ok {
			if f, ok := number(v); ok {
				out[k] = math.Min(math.Max(f, r[0]), r[1])
			}
			continue
		}
		switch k {
		case "top_k":
			if n, ok := integer(v); ok {
				out[k] = min(max(n, 0), 1000)
			}
		case "seed":
			if n, ok := integer(v); ok {
				out[k] = n
			}
		case "repeat_last_n":
			if n, ok := integer(v); ok {
				out[k] = min(max(n, -1), int64(l.MaxContext))
			}
		case "num_ctx":
			if n, ok := integer(v); ok && n > 0 {
				out[k] = min(n, int64(l.MaxContext))
			}
		case "stop":
			var stops []string
			if json.Unmarshal(v, &stops) == nil {
				var kept []string
				for _, s := range stops {
					if s != "" && len(s) <= maxStopLen && len(kept) < maxStops {
						kept = append(kept, s)
					}
				}
				if len(kept) > 0 {
					out[k] = kept
				}
			}
		}
		// num_predict is set below; anything else is dropped.
	}
	predict := int64(l.MaxPredict)
	if n, ok := integer(in["num_predict"]); ok {
		if n > 0 {
			predict = min(n, predict)
		}
	} else if modelPredict > 0 {
		predict = min(int64(modelPredict), predict)
	}
	out["num_predict"] = predict
	return json.Marshal(out)
}

// number reads a JSON number that is finite.
func number(v json.RawMessage) (float64, bool) {
	var f float64
	if json.Unmarshal(v, &f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// integer reads a JSON number that is a whole number within int64 (a
// fraction is cut toward zero).
func integer(v json.RawMessage) (int64, bool) {
	f, ok := number(v)
	if !ok || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// minKeepAlive is the shortest keep_alive a request of the network gets
// (unless the owner's bound is shorter).
const minKeepAlive = time.Minute

// keepAlive clamps a keep_alive (a duration string, a number of seconds,
// or absent) to the contributor's bound, and always sends one: Ollama's
// own default could be longer than the owner allows. A keep_alive of at
// least 2×ownKeepAliveMark is shortened by the mark, so that the expiry
// the node's requests give a model differs from the one an owner's
// request ending at the same moment with a round keep_alive gives it.
func (l Limits) keepAlive(raw json.RawMessage) json.RawMessage {
	d, ok := parseKeepAlive(raw)
	if !ok || d < 0 || d > l.MaxKeepAlive {
		d = l.MaxKeepAlive
	}
	// Not shorter than minKeepAlive either: a keep_alive of 0 would
	// unload the model at once, one the owner may be using.
	d = max(d, min(minKeepAlive, l.MaxKeepAlive))
	if d >= 2*ownKeepAliveMark {
		d -= ownKeepAliveMark
	}
	return json.RawMessage(strconv.Quote(d.String()))
}

// parseKeepAlive reads keep_alive as Ollama does: a number is seconds, a
// string a Go duration (or a plain number of seconds).
func parseKeepAlive(raw json.RawMessage) (time.Duration, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		if d, err := time.ParseDuration(s); err == nil {
			return d, true
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, false
		}
		return secs(f)
	}
	f, ok := number(raw)
	if !ok {
		return 0, false
	}
	return secs(f)
}

func secs(f float64) (time.Duration, bool) {
	if f > float64(math.MaxInt64)/float64(time.Second) {
		return time.Duration(math.MaxInt64), true
	}
	if f < float64(math.MinInt64)/float64(time.Second) {
		return -1, true
	}
	return time.Duration(f * float64(time.Second)), true
}

// think keeps true, false, "low", "medium" or "high".
func think(raw json.RawMessage) json.RawMessage {
	switch strings.TrimSpace(string(raw)) {
	case "true", "false", `"low"`, `"medium"`, `"high"`:
		return json.RawMessage(strings.TrimSpace(string(raw)))
	}
	return nil
}

// format keeps "json" or a JSON schema object.
func format(raw json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(raw)
	switch {
	case string(t) == `"json"`:
		return t
	case len(t) > 0 && t[0] == '{' && json.Valid(t):
		return t
	}
	return nil
}

// toolList keeps a tools array of at most maxTools entries.
func toolList(raw json.RawMessage) json.RawMessage {
	var tools []json.RawMessage
	if len(bytes.TrimSpace(raw)) == 0 || json.Unmarshal(raw, &tools) != nil || len(tools) == 0 || len(tools) > maxTools {
		return nil
	}
	return raw
}
