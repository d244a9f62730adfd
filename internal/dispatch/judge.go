package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/filter"
)

// maxJudgedBytes bounds the answer text a classifier is shown: past it,
// the most recent part.
const maxJudgedBytes = 32 << 10

// errWithheld ends a round whose answer the classifier refused.
var errWithheld = errors.New("answer refused by the classifier")

// answerJudge runs the optional classifier over a request's answer as it
// grows, off the event path: the relay hands it the answer so far only when
// it is ready for more — one copy per verdict, none while it thinks, so
// the classifier's speed sets how often — and learns the verdict at its
// next chunk. A classifier that fails lets the rest of the answer through
// unjudged: asking again at every token would cost a call, a copy and a log
// line per token while it is down. It owns one goroutine, ended by stop.
type answerJudge struct {
	c       filter.Classifier
	log     *slog.Logger
	next    chan string // one slot: the text to judge next; the relay fills it only when empty
	refused atomic.Bool
	gaveUp  atomic.Bool // the classifier failed: add keeps and offers nothing more
	text    []byte      // the relay's copy of the answer's tail, up to 2*maxJudgedBytes (relay goroutine only)
	cancel  context.CancelFunc
	done    chan struct{}
}

func newAnswerJudge(ctx context.Context, c filter.Classifier, log *slog.Logger) *answerJudge {
	ctx, cancel := context.WithCancel(ctx)
	j := &answerJudge{c: c, log: log, next: make(chan string, 1), cancel: cancel, done: make(chan struct{})}
	go j.run(ctx)
	return j
}

func (j *answerJudge) run(ctx context.Context) {
	defer close(j.done)
	for {
		var text string
		select {
		case <-ctx.Done():
			return
		case text = <-j.next:
		}
		ok, err := j.c.Allow(ctx, filter.KindAnswer, text)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			j.log.Warn("answer classifier failed; the rest of the answer goes on unjudged", "err", err)
			j.gaveUp.Store(true)
			return
		case !ok:
			j.refused.Store(true)
			return
		}
	}
}

// add appends answer (or thinking) text, and offers the answer so far to
// the classifier if it is waiting for work. Relay goroutine only.
func (j *answerJudge) add(s string) {
	if j == nil || s == "" || j.gaveUp.Load() {
		return
	}
	j.text = append(j.text, s...)
	if len(j.text) > 2*maxJudgedBytes {
		// Drop the old text once per maxJudgedBytes, not per token.
		j.text = append(j.text[:0], j.tail()...)
	}
	j.offer()
}

// tail is the answer's last maxJudgedBytes at most, from a rune's start.
func (j *answerJudge) tail() []byte {
	start := max(len(j.text)-maxJudgedBytes, 0)
	for start < len(j.text) && !utf8.RuneStart(j.text[start]) {
		start++
	}
	return j.text[start:]
}

// offer hands the answer's tail to the classifier unless it already has
// text waiting; the relay is the only sender, so the check cannot race.
func (j *answerJudge) offer() {
	if len(j.next) == 0 && len(j.text) > 0 {
		j.next <- string(j.tail())
	}
}

// refusedNow reports whether the classifier refused the answer.
func (j *answerJudge) refusedNow() bool { return j != nil && j.refused.Load() }

// stop ends the judge's goroutine and waits for it.
func (j *answerJudge) stop() {
	if j == nil {
		return
	}
	j.cancel()
	<-j.done
}
