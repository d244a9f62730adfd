package dispatch

import (
	"errors"
	"time"

	"github.com/idleclaw/idleclaw/internal/hub"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// sink is the consumer's side of one request: it passes events to the
// dialect's emit and remembers what the Chat loop decides on — whether
// anything was emitted (then every failure is reported in the stream),
// whether any answer reached the consumer (then no failover: two answers
// are never spliced), whether anything went out since the last keep-alive
// check, and the consumer's own error, which ends the request.
type sink struct {
	emit     func(Event) error
	err      error
	emitted  bool
	answered bool // answer text, thinking or tool calls reached the consumer
	sent     bool // something was emitted since the last keep-alive check
	more     bool // the node's next chunk is already waiting (Event.More)
	start    time.Time
	first    time.Duration // time to the first answer text
	tier     string        // the trust tier of the node answering now
}

// queued reports the request's place in the queue to the consumer.
func (o *sink) queued(position int) error {
	return o.send(Event{Kind: KeepAlive, Position: position})
}

func (o *sink) send(ev Event) error {
	if o.err != nil {
		return o.err
	}
	switch ev.Kind {
	case Content, Thinking:
		ev.More = o.more
		ev.Tier = o.tier
	case ToolCalls, Done, Failed:
		ev.Tier = o.tier
	}
	if err := o.emit(ev); err != nil {
		o.err = err
		return err
	}
	o.emitted, o.sent = true, true
	switch ev.Kind {
	case Content, Thinking, ToolCalls:
		o.answered = true
	}
	return nil
}

// text emits text of kind k, if any.
func (o *sink) text(k Kind, text string) error {
	if text == "" {
		return nil
	}
	if k == Content && o.first == 0 {
		o.first = time.Since(o.start)
	}
	return o.send(Event{Kind: k, Text: text})
}

// finish ends the stream with its reason and usage.
func (o *sink) finish(reason string, usage Usage) (Result, error) {
	if reason == "" || reason == "load" || reason == "unload" {
		reason = "stop"
	}
	outcome := "ok"
	if reason == "length" {
		outcome = "length"
	}
	if err := o.send(Event{Kind: Done, FinishReason: reason, Usage: usage}); err != nil {
		return Result{Outcome: "canceled", Tokens: usage.CompletionTokens}, err
	}
	return Result{Outcome: outcome, Tokens: usage.CompletionTokens, FirstToken: o.first, Tier: o.tier}, nil
}

// failWith ends the stream with the safe message for why a round failed.
func (o *sink) failWith(err error, usage Usage) (Result, error) {
	switch {
	case errors.Is(err, errFirstToken):
		return o.failAs("first_token_timeout", msgFirstToken, FailNode, usage)
	case errors.Is(err, errStall):
		return o.failAs("stall_timeout", msgStall, FailNode, usage)
	case errors.Is(err, errWithheld):
		return o.failAs("withheld", msgWithheld, FailNode, usage)
	}
	return o.failOn(err, usage)
}

// fail ends a started stream with a safe error message.
func (o *sink) fail(msg string, kind Failure, usage Usage) (Result, error) {
	return o.failAs("error", msg, kind, usage)
}

// failAs is fail with a specific outcome for logs and metrics.
func (o *sink) failAs(outcome, msg string, kind Failure, usage Usage) (Result, error) {
	res := Result{Outcome: outcome, Tokens: usage.CompletionTokens, FirstToken: o.first, ErrorMessage: msg}
	if err := o.send(Event{Kind: Failed, Text: msg, Failure: kind}); err != nil {
		return Result{Outcome: "canceled", Tokens: usage.CompletionTokens}, err
	}
	if err := o.send(Event{Kind: Done, FinishReason: "error", Usage: usage}); err != nil {
		return Result{Outcome: "canceled", Tokens: usage.CompletionTokens}, err
	}
	return res, nil
}

// failOn ends the stream with the consumer's side of err (failureOf).
func (o *sink) failOn(err error, usage Usage) (Result, error) {
	msg, kind := failureOf(err)
	return o.fail(msg, kind, usage)
}

// failureOf is what a consumer is told of a node's or the hub's failure:
// a fixed text with nothing of the node in it, and its kind (a busy
// Ollama or a router shutting down may serve a retry).
func failureOf(err error) (msg string, kind Failure) {
	var ne *hub.NodeError
	switch {
	case errors.As(err, &ne):
		switch ne.Code {
		case wire.ErrInvalidRequest:
			return msgInvalidParam, FailNode
		case wire.ErrOllamaBusy:
			return msgNodeBusy, FailRetry
		}
		return msgNodeFailed, FailNode
	case errors.Is(err, hub.ErrNodeGone), errors.Is(err, hub.ErrNodeBusy):
		return msgNodeGone, FailNode
	case errors.Is(err, hub.ErrShutdown):
		return msgShutdown, FailRetry
	case errors.Is(err, hub.ErrSlowConsumer):
		return msgTooSlow, FailNode
	case errors.Is(err, errToolRate):
		return "too many web searches; please wait a minute", FailNode
	case errors.Is(err, errTooManyCalls):
		return msgToolCalls, FailNode
	case errors.Is(err, errTooLarge):
		return msgTooLarge, FailNode
	}
	return msgNodeFailed, FailNode
}
