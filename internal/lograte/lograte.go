// Package lograte owns rate-limited logging of events that an untrusted
// party can provoke at will (a node's refused frames, a consumer's refused
// requests): each (source, kind) pair may log a few lines in a burst and
// then one per interval, and the next line that passes says how many were
// suppressed meanwhile. A hostile node can then fill neither the disk nor
// the operator's screen, and the operator still learns how often it tried.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Config tunes a Limiter. Zero fields take the defaults noted.
type Config struct {
	Burst    int           // lines a key may log at once (default 3)
	Interval time.Duration // one more line per interval after the burst (default 10 s)
	MaxKeys  int           // keys remembered (default 10,000); past it new keys share one budget
	Now      func() time.Time
}

// Limiter logs through an slog.Logger with a budget per key. Safe for
// concurrent use; the zero value is not usable, call New.
type Limiter struct {
	log *slog.Logger
	cfg Config

	mu       sync.Mutex // guards the following fields
	keys     map[key]*bucket
	overflow bucket // shared by keys that found the map full
}

type key struct{ source, kind string }

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// New returns a Limiter writing to log (nil: discard).
func New(log *slog.Logger, cfg Config) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 3
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{log: log, cfg: cfg, keys: map[key]*bucket{}}
}

// Log writes msg at level unless source has used up its budget for kind;
// kind is also added to the line as "event". A line that passes after
// suppressed ones carries "suppressed" with their count.
func (l *Limiter) Log(level slog.Level, source, kind, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	n, ok := l.take(key{source, kind})
	if !ok {
		return
	}
	args = append(args, "event", kind)
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Warn is Log at slog.LevelWarn.
func (l *Limiter) Warn(source, kind, msg string, args ...any) {
	l.Log(slog.LevelWarn, source, kind, msg, args...)
}

// Info is Log at slog.LevelInfo.
func (l *Limiter) Info(source, kind, msg string, args ...any) {
	l.Log(slog.LevelInfo, source, kind, msg, args...)
}

// take spends one token of k's bucket; it reports whether a line may be
// written and how many were suppressed before it.
func (l *Limiter) take(k key) (suppressed int, ok bool) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[k]
	if b == nil {
		if len(l.keys) >= l.cfg.MaxKeys {
			l.sweepLocked(now)
		}
		if len(l.keys) >= l.cfg.MaxKeys {
			b = &l.overflow
		} else {
			b = &bucket{tokens: float64(l.cfg.Burst), last: now}
			l.keys[k] = b
		}
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(l.cfg.Burst), b.tokens+float64(el)/float64(l.cfg.Interval))
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		return 0, false
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return n, true
}

// sweepLocked forgets keys whose bucket is full again and owes no count.
func (l *Limiter) sweepLocked(now time.Time) {
	full := time.Duration(l.cfg.Burst) * l.cfg.Interval
	for k, b := range l.keys {
		if b.suppressed == 0 && now.Sub(b.last) >= full {
			delete(l.keys, k)
		}
	}
}
