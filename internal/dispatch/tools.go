package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/tools"
	"github.com/idleclaw/idleclaw/internal/wire"
)

var errToolRate = errors.New("tool rate limit")

// runTools executes the server-side tool calls of one round and returns the
// messages that continue the conversation: the assistant's turn with its
// tool calls, then one tool message per call. Only web_search exists; a call
// of any other tool is answered with an error message to the model.
func (d *Dispatcher) runTools(ctx context.Context, out *sink, origin string, r round) ([]ollama.Message, error) {
	assistant := ollama.Message{Role: "assistant", Content: r.text}
	var results []ollama.Message
	for i, c := range r.calls {
		assistant.ToolCalls = append(assistant.ToolCalls, ollama.ToolCall{
			Function: ollama.ToolFunction{Index: i, Name: c.Name, Arguments: c.Arguments}})
		if c.Name != tools.WebSearchName {
			results = append(results, ollama.Message{Role: "tool", ToolName: toolName(c.Name), Content: "Error: unknown tool " + jsonString(shortName(c.Name))})
			continue
		}
		query, err := d.cfg.Search.ParseArgs(c.Arguments)
		if err != nil {
			results = append(results, ollama.Message{Role: "tool", ToolName: c.Name, Content: "Error: invalid arguments: " + err.Error()})
			continue
		}
		if !d.toolLimiter(origin).Allow() {
			return nil, errToolRate
		}
		if err := out.send(Event{Kind: ToolState, Tool: c.Name, Status: "executing"}); err != nil {
			return nil, err
		}
		text, err := d.cfg.Search.Run(ctx, query)
		if err != nil {
			d.log.Warn("web search failed", "err", err)
			text = "Error: the search failed."
		}
		if err := out.send(Event{Kind: ToolState, Tool: c.Name, Status: "done"}); err != nil {
			return nil, err
		}
		results = append(results, ollama.Message{Role: "tool", ToolName: c.Name, Content: text})
	}
	return append([]ollama.Message{assistant}, results...), nil
}

// toolLimiter returns the tool-call limiter of a node's origin (its
// address, for a keyless node), so that reconnecting under another id
// does not refill the budget.
func (d *Dispatcher) toolLimiter(origin string) *rate.Limiter {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.toolRate[origin]
	if l == nil {
		if len(d.toolRate) >= 100_000 {
			clear(d.toolRate) // bounded: forget old nodes wholesale
		}
		per := time.Minute / time.Duration(d.cfg.ToolCallsPerMinute)
		l = rate.NewLimiter(rate.Every(per), d.cfg.ToolCallsPerMinute)
		d.toolRate[origin] = l
	}
	return l
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// toolName is a called tool's name as it may go back to the node: a name
// a text-form call invented is not echoed unless it is a proper name.
func toolName(name string) string {
	if wire.ValidToolName(name) {
		return name
	}
	return "unknown"
}

// shortName bounds a tool name quoted back to the model.
func shortName(name string) string {
	return truncateRunes(name, wire.MaxToolNameLen)
}
