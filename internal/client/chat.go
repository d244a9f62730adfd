package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// MaxLineBytes bounds one line of a chat stream. A longer line fails the
// stream instead of growing a buffer without end.
const MaxLineBytes = 4 << 20

// ChatRequest is the body of POST /api/chat.
type ChatRequest struct {
	Model    string    `json:"model"`
	Messages []Message `json:"messages"`
	Think    bool      `json:"think"`
	// System (ext) is a system message the router places after its own
	// safety prompt; "" sends none. v1 routers ignore it.
	System string `json:"system,omitempty"`
	// Options (ext) carries sampling options; nil sends none. v1 routers
	// ignore it.
	Options *Options `json:"options,omitempty"`
}

// Message is one chat message; Role is "user" or "assistant".
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Options are sampling options (ext). A nil field is not sent.
type Options struct {
	Seed        *int     `json:"seed,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	NumPredict  *int     `json:"num_predict,omitempty"` // the longest answer, in tokens
}

// Event is one decoded chunk of a chat stream.
type Event struct {
	Content      string    // answer or thinking text; may be empty
	Reasoning    bool      // Content is thinking text
	ToolCall     *ToolCall // a server-side tool started or finished
	FinishReason string    // ext: "stop", "length" or "error" on the final chunk
	Usage        *Usage    // ext: token counts on the final chunk
	// Queued is the request's 1-based place in the router's queue while
	// every node that serves the model is busy (a ": queued position=N"
	// comment); 0 for every other event.
	Queued int
}

// ToolCall reports a server-side tool: Status is "executing" or "done".
type ToolCall struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// Usage is the token count of a request (ext).
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Chat sends req and calls fn for each event of the answer, in order, as it
// arrives. It returns nil after the final "data: [DONE]"; fn's own error as
// is; *StreamError when the router reports an error inside the stream (the
// error text is never passed to fn); ErrEndedEarly when the stream ends
// without [DONE]; *APIError for an HTTP error answer; an error wrapping
// ErrUnreachable when the router cannot be reached; ctx.Err() (wrapped) when
// ctx ends first.
func (c *Client) Chat(ctx context.Context, req ChatRequest, fn func(Event) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("chat: encode request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/api/chat", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	resp, err := c.do(ctx, hreq)
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chat: %w", newAPIError(resp))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("chat: answer is %q, not an event stream (is %s an IdleClaw router?)", resp.Header.Get("Content-Type"), c.BaseURL)
	}
	var fnErr error
	err = readSSE(resp.Body, func(ev Event) error {
		fnErr = fn(ev)
		return fnErr
	})
	switch {
	case err == nil:
		return nil
	case fnErr != nil:
		return fnErr
	case ctx.Err() != nil:
		return fmt.Errorf("chat: %w", ctx.Err())
	}
	var se *StreamError
	if errors.As(err, &se) {
		return se
	}
	return fmt.Errorf("chat: %w", err)
}

var (
	dataPrefix = []byte("data: ")
	doneMarker = []byte("[DONE]")
)

// queuedPrefix starts the comment line the router sends while a request
// waits in its queue.
var queuedPrefix = []byte(": queued position=")

const (
	errorPrefix = "\n\n[Error: "
	errorSuffix = "]"
)

// readSSE reads an IdleClaw event stream line by line: a ": queued
// position=N" comment is passed to fn as Queued, other comment lines and
// lines other than "data: ..." are skipped, each data payload is decoded
// and passed to fn, "data: [DONE]" ends it.
func readSSE(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, queuedPrefix); ok {
			if n, err := strconv.Atoi(string(bytes.TrimSpace(rest))); err == nil && n > 0 {
				if err := fn(Event{Queued: n}); err != nil {
					return err
				}
			}
			continue
		}
		if !bytes.HasPrefix(line, dataPrefix) {
			continue // blank separators, ": ping" comments, event:/id:/retry: fields
		}
		payload := line[len(dataPrefix):]
		if bytes.Equal(bytes.TrimSpace(payload), doneMarker) {
			return nil
		}
		ev, err := decodeEvent(payload)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("read stream: a line is longer than %d bytes", MaxLineBytes)
		}
		return fmt.Errorf("read stream: %w", err)
	}
	return ErrEndedEarly
}

// chunk is the JSON payload of one data line.
type chunk struct {
	Choices []struct {
		Delta struct {
			Content   string    `json:"content"`
			Reasoning bool      `json:"reasoning"`
			ToolCall  *ToolCall `json:"tool_call"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage `json:"usage"`
}

// decodeEvent decodes one data payload. An in-stream error delta is returned
// as *StreamError.
func decodeEvent(payload []byte) (Event, error) {
	var ch chunk
	if err := json.Unmarshal(payload, &ch); err != nil {
		return Event{}, fmt.Errorf("bad event payload: %v", err)
	}
	ev := Event{Usage: ch.Usage}
	if len(ch.Choices) > 0 {
		c := ch.Choices[0]
		ev.Content = c.Delta.Content
		ev.Reasoning = c.Delta.Reasoning
		ev.ToolCall = c.Delta.ToolCall
		ev.FinishReason = c.FinishReason
	}
	if !ev.Reasoning && strings.HasPrefix(ev.Content, errorPrefix) && strings.HasSuffix(ev.Content, errorSuffix) &&
		len(ev.Content) >= len(errorPrefix)+len(errorSuffix) {
		msg := ev.Content[len(errorPrefix) : len(ev.Content)-len(errorSuffix)]
		return Event{}, &StreamError{Message: truncate(Sanitize(msg), maxDetail)}
	}
	return ev, nil
}
