// Package ratelimit owns per-client limits: token buckets refilled
// continuously (golang.org/x/time/rate) and concurrency counters, both keyed
// by client address and bounded in memory.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxKeys bounds the memory of a Buckets: past it, idle buckets are swept,
// and if none is idle the oldest half goes.
const maxKeys = 100_000

// Buckets is a set of per-key token buckets, each holding perMinute tokens
// and refilled continuously. Safe for concurrent use.
type Buckets struct {
	perMinute int
	now       func() time.Time

	mu      sync.Mutex // guards the following fields
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

// NewBuckets returns buckets of perMinute requests per minute per key; 0 or
// less turns the limit off. now may be nil (time.Now).
func NewBuckets(perMinute int, now func() time.Time) *Buckets {
	if now == nil {
		now = time.Now
	}
	return &Buckets{perMinute: perMinute, now: now, buckets: map[string]*bucket{}}
}

// Allow takes a token for key. When none is left it reports how long until
// one is (at least one second, as Retry-After counts whole seconds).
func (b *Buckets) Allow(key string) (ok bool, retryAfter time.Duration) {
	if b == nil || b.perMinute <= 0 {
		return true, 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[key]
	if bk == nil {
		if len(b.buckets) >= maxKeys {
			b.sweepLocked(now)
		}
		bk = &bucket{lim: rate.NewLimiter(rate.Limit(float64(b.perMinute)/60), b.perMinute)}
		b.buckets[key] = bk
	}
	bk.last = now
	r := bk.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, time.Duration(math.Ceil(d.Seconds())) * time.Second
	}
	return true, 0
}

// sweepLocked drops buckets that are full again (idle long enough to have
// refilled), and if that frees nothing, every bucket older than the median.
func (b *Buckets) sweepLocked(now time.Time) {
	full := time.Minute
	for k, bk := range b.buckets {
		if now.Sub(bk.last) >= full {
			delete(b.buckets, k)
		}
	}
	if len(b.buckets) < maxKeys {
		return
	}
	i := 0
	for k := range b.buckets { // map order is random: drop an arbitrary half
		if i%2 == 0 {
			delete(b.buckets, k)
		}
		i++
	}
}

// Len is the number of keys tracked.
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buckets)
}

// Concurrency counts in-flight work per key. Safe for concurrent use.
type Concurrency struct {
	max int

	mu sync.Mutex // guards the following fields
	n  map[string]int
}

// NewConcurrency allows max in-flight per key; 0 or less turns it off.
func NewConcurrency(max int) *Concurrency {
	return &Concurrency{max: max, n: map[string]int{}}
}

// Acquire takes a slot for key; it reports false when the key has max
// already. Every successful Acquire must be paired with Release.
func (c *Concurrency) Acquire(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

// InFlight is how many slots key holds now.
func (c *Concurrency) InFlight(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// Release returns a slot taken by Acquire.
func (c *Concurrency) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key]--; c.n[key] <= 0 {
		delete(c.n, key)
	}
}
