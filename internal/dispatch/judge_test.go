package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/filter"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// classifierFunc adapts a function to filter.Classifier.
type classifierFunc func(ctx context.Context, kind filter.Kind, text string) (bool, error)

func (f classifierFunc) Allow(ctx context.Context, kind filter.Kind, text string) (bool, error) {
	return f(ctx, kind, text)
}

// TestClassifierWithholdsAnswer: once the classifier refuses the answer so
// far, the stream ends at the node's next chunk with the withheld notice,
// the node is told to stop, and nothing after the notice reaches the
// consumer.
func TestClassifierWithholdsAnswer(t *testing.T) {
	h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1})
	var calls atomic.Int64
	judge := classifierFunc(func(_ context.Context, kind filter.Kind, text string) (bool, error) {
		calls.Add(1)
		if kind != filter.KindAnswer {
			t.Errorf("kind %q", kind)
		}
		return !strings.Contains(text, "evil"), nil
	})
	d := New(Config{Classifier: judge}, h)
	r := startChat(t, d, userReq("m:latest", "hi"))
	req := node.next()
	node.chunk(req.RequestID, text("a good start, "))
	node.chunk(req.RequestID, text("then evil"))
	// The node goes on answering until the router cancels the request.
	canceled := false
	for i := 0; i < 500 && !canceled; i++ {
		node.chunk(req.RequestID, text(" more"))
		select {
		case f := <-node.frames:
			canceled = f.Type == wire.TypeCancelRequest && f.RequestID == req.RequestID
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !canceled {
		t.Fatal("the router never canceled the refused answer")
	}
	evs := r.collect(t)
	content, notice := answerAndNotice(t, evs)
	if notice != msgWithheld || !strings.HasPrefix(content, "a good start, then evil") {
		t.Errorf("content %q, notice %q; events %+v", content, notice, evs)
	}
	if last := evs[len(evs)-1]; last.Kind != Done || last.FinishReason != "error" {
		t.Errorf("last event %+v", last)
	}
	if calls.Load() == 0 {
		t.Error("the classifier was never asked")
	}
}

// TestClassifierNeverHoldsUpTheAnswer: a classifier that does not answer
// (until its timeout) and one that fails do not delay or end the stream.
func TestClassifierNeverHoldsUpTheAnswer(t *testing.T) {
	for name, c := range map[string]filter.Classifier{
		"stuck": classifierFunc(func(ctx context.Context, _ filter.Kind, _ string) (bool, error) {
			<-ctx.Done()
			return false, ctx.Err()
		}),
		"failing": classifierFunc(func(context.Context, filter.Kind, string) (bool, error) {
			return false, context.DeadlineExceeded
		}),
	} {
		t.Run(name, func(t *testing.T) {
			asked := make(chan struct{})
			var once sync.Once
			judged := classifierFunc(func(ctx context.Context, kind filter.Kind, s string) (bool, error) {
				once.Do(func() { close(asked) })
				return c.Allow(ctx, kind, s)
			})
			h, node := newNodeHub(t, wire.Model{Name: "m:latest", Size: 1})
			d := New(Config{Classifier: judged}, h)
			r := startChat(t, d, userReq("m:latest", "hi"))
			req := node.next()
			began := time.Now()
			node.chunk(req.RequestID, text("one"))
			// The rest comes once the classifier has the answer in hand.
			select {
			case <-asked:
			case <-time.After(10 * time.Second):
				t.Fatal("the classifier was never asked")
			}
			for _, s := range []string{" two", " three"} {
				node.chunk(req.RequestID, text(s))
			}
			done := text("")
			done.Done = true
			node.chunk(req.RequestID, done)
			evs := r.collect(t)
			if el := time.Since(began); el > 2*time.Second {
				t.Errorf("the answer took %v with a %s classifier", el, name)
			}
			var content string
			for _, ev := range evs {
				if ev.Kind == Content {
					content += ev.Text
				}
			}
			if last := evs[len(evs)-1]; content != "one two three" || last.Kind != Done || last.FinishReason != "stop" {
				t.Errorf("content %q, last %+v", content, last)
			}
		})
	}
}

// TestJudgeGivesUpWhenTheClassifierFails: after the classifier fails, the
// judge asks it nothing more for this answer and stops copying the text.
func TestJudgeGivesUpWhenTheClassifierFails(t *testing.T) {
	var calls atomic.Int64
	failing := classifierFunc(func(context.Context, filter.Kind, string) (bool, error) {
		calls.Add(1)
		return false, errors.New("connection refused")
	})
	j := newAnswerJudge(context.Background(), failing, slog.New(slog.DiscardHandler))
	defer j.stop()
	j.add("one")
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the judge goes on after the classifier failed")
	}
	j.add(" two")
	if len(j.next) != 0 || len(j.text) != len("one") || calls.Load() != 1 || j.refusedNow() {
		t.Errorf("after the failure: %d offers waiting, %d bytes kept, %d calls, refused %v", len(j.next), len(j.text), calls.Load(), j.refusedNow())
	}
}

// TestJudgeKeepsTheTail: the text shown to the classifier is bounded, and
// cut on a character boundary.
func TestJudgeKeepsTheTail(t *testing.T) {
	j := &answerJudge{next: make(chan string, 1)}
	j.add(strings.Repeat("é", maxJudgedBytes)) // 2 bytes each
	if got := <-j.next; got != strings.Repeat("é", maxJudgedBytes/2) {
		t.Errorf("first offer was %d bytes, want the last %d", len(got), maxJudgedBytes)
	}
	j.add("end")
	if got := <-j.next; len(got) > maxJudgedBytes || !strings.HasSuffix(got, "end") || !strings.HasPrefix(got, "é") {
		t.Errorf("second offer: %d bytes, starting %q", len(got), got[:4])
	}
	// A long answer, token by token: every offer is the latest tail, and
	// the judge keeps at most twice the bound (plus one token).
	// Every 512th token the classifier is ready again (the slot emptied).
	for i := range 3 * maxJudgedBytes / 4 {
		ready := i%512 == 0
		if ready {
			select {
			case <-j.next:
			default:
			}
		}
		tok := fmt.Sprintf("w%03d", i%1000)
		j.add(tok)
		if ready {
			got := <-j.next
			if len(got) > maxJudgedBytes || !strings.HasSuffix(got, tok) {
				t.Fatalf("token %d: offer of %d bytes ending %q, want at most %d ending %q", i, len(got), got[max(len(got)-4, 0):], maxJudgedBytes, tok)
			}
		}
		if len(j.text) > 2*maxJudgedBytes+4 {
			t.Fatalf("token %d: the judge keeps %d bytes", i, len(j.text))
		}
	}
}
