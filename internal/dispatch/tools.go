package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/tools"
)

var errToolRate = errors.New("tool rate limit")

// runTools executes the server-side tool calls of one round and returns the
// messages that continue the conversation: the assistant's turn with its
// tool calls, then one tool message per call. Only web_search exists; a call
// of any other tool is answered with an error message to the model.
func (d *Dispatcher) runTools(ctx context.Context, r *relay, nodeID string, out roundResult) ([]ollama.Message, error) {
	assistant := ollama.Message{Role: "assistant", Content: out.text}
	var results []ollama.Message
	for i, c := range out.calls {
		assistant.ToolCalls = append(assistant.ToolCalls, ollama.ToolCall{
			Function: ollama.ToolFunction{Index: i, Name: c.Name, Arguments: c.Arguments}})
		if c.Name != tools.WebSearchName {
			results = append(results, ollama.Message{Role: "tool", ToolName: c.Name, Content: "Error: unknown tool " + jsonString(c.Name)})
			continue
		}
		query, err := d.cfg.Search.ParseArgs(c.Arguments)
		if err != nil {
			results = append(results, ollama.Message{Role: "tool", ToolName: c.Name, Content: "Error: invalid arguments: " + err.Error()})
			continue
		}
		if !d.toolLimiter(nodeID).Allow() {
			return nil, errToolRate
		}
		if err := r.send(Event{Kind: ToolState, Tool: c.Name, Status: "executing"}); err != nil {
			return nil, err
		}
		text, err := d.cfg.Search.Run(ctx, query)
		if err != nil {
			d.log.Warn("web search failed", "err", err)
			text = "Error: the search failed."
		}
		if err := r.send(Event{Kind: ToolState, Tool: c.Name, Status: "done"}); err != nil {
			return nil, err
		}
		results = append(results, ollama.Message{Role: "tool", ToolName: c.Name, Content: text})
	}
	return append([]ollama.Message{assistant}, results...), nil
}

// toolLimiter returns the per-node tool-call limiter.
func (d *Dispatcher) toolLimiter(nodeID string) *rate.Limiter {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.toolRate[nodeID]
	if l == nil {
		if len(d.toolRate) >= 100_000 {
			clear(d.toolRate) // bounded: forget old nodes wholesale
		}
		per := time.Minute / time.Duration(d.cfg.ToolCallsPerMinute)
		l = rate.NewLimiter(rate.Every(per), d.cfg.ToolCallsPerMinute)
		d.toolRate[nodeID] = l
	}
	return l
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
