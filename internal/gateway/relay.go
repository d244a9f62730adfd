package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"time"
)

// MaxEventBytes bounds one server-sent event of a relayed stream.
const MaxEventBytes = 1 << 20

// writeStall is the longest one write to the client may block.
const writeStall = 30 * time.Second

var errEventTooLarge = fmt.Errorf("an event over %d bytes", MaxEventBytes)

// eventReader reads a server-sent event stream one whole event at a
// time, so that a relay forwards only complete events and an error event
// of its own never lands inside one. Not safe for concurrent use.
type eventReader struct {
	br  *bufio.Reader
	buf []byte
}

func newEventReader(r io.Reader) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 32<<10)}
}

// next returns the next event, its blank line included. At the end of
// the stream it returns io.EOF, or io.ErrUnexpectedEOF when the stream
// stopped inside an event. The slice is valid until the next call.
func (e *eventReader) next() ([]byte, error) {
	e.buf = e.buf[:0]
	lineStart := 0
	for {
		chunk, err := e.br.ReadSlice('\n')
		if len(e.buf)+len(chunk) > MaxEventBytes {
			return nil, errEventTooLarge
		}
		e.buf = append(e.buf, chunk...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			if errors.Is(err, io.EOF) {
				switch {
				case len(bytes.TrimSpace(e.buf)) == 0:
					return nil, io.EOF
				case bytes.HasSuffix(e.buf, []byte("\n")):
					// Whole lines without the closing blank line: the
					// last event of a sender that leaves it out.
					return append(e.buf, '\n'), nil
				}
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		line := e.buf[lineStart:]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			if lineStart == 0 { // blank lines between events
				e.buf = e.buf[:0]
				continue
			}
			return e.buf, nil
		}
		lineStart = len(e.buf)
	}
}

// eventData is an event's data (its data: lines joined by newlines); nil
// for an event without data (a comment such as ": keep-alive").
func eventData(ev []byte) []byte {
	var out []byte
	found := false
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		line = bytes.TrimRight(line, "\r")
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if found {
				out = append(out, '\n')
			}
			found = true
			out = append(out, bytes.TrimPrefix(v, []byte(" "))...)
		}
	}
	if found && out == nil {
		out = []byte{}
	}
	return out
}

var finishRE = regexp.MustCompile(`"finish_reason"\s*:\s*"`)

// errorEvent is whether an event's data is an error object rather than a
// chunk: {"error": {...}} with a non-null error.
func errorEvent(data []byte) bool {
	if !bytes.Contains(data, []byte(`"error"`)) {
		return false
	}
	var o struct {
		Error json.RawMessage `json:"error"`
	}
	return json.Unmarshal(data, &o) == nil && len(o.Error) > 0 && string(o.Error) != "null"
}

// emptyStart is whether an event's data is a chunk that carries nothing
// yet: no choice, or one whose delta has only the role and empty fields,
// without finish_reason or usage (OpenAI's opening chunk, Azure's
// prompt-filter chunk).
func emptyStart(data []byte) bool {
	var c struct {
		Choices []struct {
			Delta        map[string]json.RawMessage `json:"delta"`
			FinishReason json.RawMessage            `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &c) != nil || len(c.Choices) > 1 || !nullish(c.Usage) || !nullish(c.Error) {
		return false
	}
	for _, ch := range c.Choices {
		if !nullish(ch.FinishReason) {
			return false
		}
		for k, v := range ch.Delta {
			if k != "role" && !nullish(v) && string(v) != `""` && string(v) != "[]" {
				return false
			}
		}
	}
	return true
}

func nullish(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// classifyEvent classifies an error event of a stream that has not
// reached the client yet: its numeric code, if one, stands for the status.
func classifyEvent(data []byte, now time.Time) Verdict {
	pe := DecodeProviderError(data)
	status := http.StatusBadGateway
	var n int
	if _, err := fmt.Sscanf(pe.Code, "%d", &n); err == nil && n >= 400 && n <= 599 {
		status = n
	}
	return Classify(status, nil, data, now)
}

// streamOut writes to the client, one flushed write at a time, each
// bounded by writeStall.
type streamOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newStreamOut(w http.ResponseWriter) *streamOut {
	return &streamOut{w: w, rc: http.NewResponseController(w)}
}

var errClientGone = errors.New("the client went away")

func (o *streamOut) write(b []byte) error {
	_ = o.rc.SetWriteDeadline(time.Now().Add(writeStall))
	if _, err := o.w.Write(b); err != nil {
		return errClientGone
	}
	if err := o.rc.Flush(); err != nil {
		return errClientGone
	}
	return nil
}

// errStreamIncomplete: the stream ended without [DONE] or a finish_reason.
var errStreamIncomplete = errors.New("the stream ended before the answer did")

// errUpstreamErrorEvent: the upstream stream ended with an error event
// of its own, which the client got as it was.
var errUpstreamErrorEvent = errors.New("the stream ended with an error event")

// relayEvents writes the held events, then every further event of er
// as it arrives, until [DONE], an error event or the stream's end. It
// returns nil after a complete answer, errClientGone when the client
// left, errUpstreamErrorEvent after an upstream error event, or what
// broke the upstream stream.
func relayEvents(out *streamOut, er *eventReader, held [][]byte) error {
	done, finished, failed := false, false, false
	see := func(ev []byte) {
		d := eventData(ev)
		switch {
		case bytes.Equal(bytes.TrimSpace(d), []byte("[DONE]")):
			done = true
		case errorEvent(d):
			failed = true
		case finishRE.Match(d):
			finished = true
		}
	}
	for _, ev := range held {
		see(ev)
		if err := out.write(ev); err != nil {
			return err
		}
	}
	for !done && !failed {
		ev, err := er.next()
		if errors.Is(err, io.EOF) {
			if finished {
				return nil // a provider that ends without [DONE]
			}
			return errStreamIncomplete
		}
		if err != nil {
			return err
		}
		see(ev)
		if err := out.write(ev); err != nil {
			return err
		}
	}
	if failed {
		// The error event ended the answer; [DONE] closes the stream for
		// clients that wait for it.
		if !done {
			if err := out.write([]byte("data: [DONE]\n\n")); err != nil {
				return err
			}
		}
		return errUpstreamErrorEvent
	}
	return nil
}

// errorEventBytes is the error event (and [DONE]) that ends a stream that
// broke off: what openai clients raise as an APIError.
func errorEventBytes(msg string) []byte {
	b := []byte("data: ")
	b = append(b, errorBody(msg, "api_error", "stream_interrupted")...)
	return append(b, "\n\ndata: [DONE]\n\n"...)
}

// errorBody is OpenAI's error shape.
func errorBody(msg, typ, code string) []byte {
	c := any(nil)
	if code != "" {
		c = code
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": c}})
	return b
}

// Timeouts and failures, in words fit for a log line and a client.
type timeoutError struct {
	what string
	d    time.Duration
}

func (e *timeoutError) Error() string { return fmt.Sprintf("%s in %s", e.what, e.d) }

// describe says in a few words why a call failed: never a URL, a key or
// an address.
func describe(err error) string {
	var te *timeoutError
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &te):
		return te.Error()
	case errors.Is(err, errStreamIncomplete), errors.Is(err, errEventTooLarge):
		return err.Error()
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the connection closed mid-answer"
	case errors.As(err, &dns):
		return "unreachable (DNS lookup failed)"
	case errors.As(err, &op) && op.Op == "dial":
		return "unreachable (connection refused or no route)"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return "the connection failed"
}
