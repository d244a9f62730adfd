package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TestFloodIsQuiet plays a node that provokes 400,000 warnings in a row:
// the log gets the burst, then one line per interval with the count.
func TestFloodIsQuiet(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: 3, Interval: 10 * time.Second, Now: c.now})
	for i := 0; i < 400_000; i++ {
		l.Warn("node-a", "frame_refused", "node frame refused")
	}
	if got := lines(&buf); len(got) != 3 {
		t.Fatalf("%d lines for a burst of 400,000, want 3", len(got))
	}
	c.add(10 * time.Second)
	l.Warn("node-a", "frame_refused", "node frame refused")
	got := lines(&buf)
	if len(got) != 4 || !strings.Contains(got[3], "suppressed=399997") || !strings.Contains(got[3], "event=frame_refused") {
		t.Fatalf("after the interval: %q", got)
	}
	// Another node, or another kind, has a budget of its own.
	l.Warn("node-b", "frame_refused", "node frame refused")
	l.Warn("node-a", "models_update_refused", "refused")
	if got := lines(&buf); len(got) != 6 {
		t.Fatalf("other keys were suppressed: %q", got)
	}
}

// TestKeysBounded: a flood of distinct sources cannot grow the map past
// MaxKeys; the excess shares one budget.
func TestKeysBounded(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: 1, Interval: time.Minute, MaxKeys: 100, Now: c.now})
	for i := 0; i < 100_000; i++ {
		l.Warn(strings.Repeat("x", i%1000)+string(rune('a'+i%26)), "k", "m")
	}
	if n := len(l.keys); n > 100 {
		t.Fatalf("%d keys kept, bound 100", n)
	}
	if n := len(lines(&buf)); n > 101 {
		t.Fatalf("%d lines, want at most 100 keys + 1 shared", n)
	}
}

func TestDisabledLevelCostsNothing(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})), Config{})
	l.Warn("a", "k", "m")
	if buf.Len() != 0 || len(l.keys) != 0 {
		t.Fatalf("a disabled level was logged or counted")
	}
}
