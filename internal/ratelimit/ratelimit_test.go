package ratelimit

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// clock is an injected clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// step is one action of a bucket script: advance the clock, then call
// Allow and expect ok / retryAfter.
type step struct {
	advance time.Duration
	key     string
	ok      bool
	retry   time.Duration
	times   int // repeat the step; 0 means once
}

func TestBuckets(t *testing.T) {
	tests := []struct {
		name      string
		perMinute int
		steps     []step
	}{
		{
			name: "burst of perMinute, then refused with Retry-After", perMinute: 60,
			steps: []step{
				{key: "a", ok: true, times: 60},
				{key: "a", ok: false, retry: time.Second},
			},
		},
		{
			name: "refill is continuous, not per minute", perMinute: 60,
			steps: []step{
				{key: "a", ok: true, times: 60},
				{advance: 10 * time.Second, key: "a", ok: true, times: 10},
				{key: "a", ok: false, retry: time.Second},
				{advance: 500 * time.Millisecond, key: "a", ok: false, retry: time.Second}, // half a token: rounds up
				{advance: 500 * time.Millisecond, key: "a", ok: true},
			},
		},
		{
			name: "Retry-After rounds up to whole seconds", perMinute: 7, // one token every 8.571s
			steps: []step{
				{key: "a", ok: true, times: 7},
				{key: "a", ok: false, retry: 9 * time.Second},
				{advance: 100 * time.Millisecond, key: "a", ok: false, retry: 9 * time.Second},
				{advance: 7900 * time.Millisecond, key: "a", ok: false, retry: time.Second},
				{advance: 571 * time.Millisecond, key: "a", ok: false, retry: time.Second},
				{advance: time.Millisecond, key: "a", ok: true},
			},
		},
		{
			name: "a refused request does not consume a token", perMinute: 2, // one token every 30s
			steps: []step{
				{key: "a", ok: true, times: 2},
				{key: "a", ok: false, retry: 30 * time.Second, times: 5},
				{advance: 30 * time.Second, key: "a", ok: true},
				{key: "a", ok: false, retry: 30 * time.Second},
			},
		},
		{
			name: "keys are independent", perMinute: 3,
			steps: []step{
				{key: "10.0.0.1", ok: true, times: 3},
				{key: "10.0.0.1", ok: false, retry: 20 * time.Second},
				{key: "10.0.0.2", ok: true, times: 3},
				{key: "10.0.0.2", ok: false, retry: 20 * time.Second},
				{key: "::1", ok: true},
			},
		},
		{
			name: "never more than perMinute banked", perMinute: 5,
			steps: []step{
				{key: "a", ok: true},
				{advance: time.Hour, key: "a", ok: true, times: 5},
				{key: "a", ok: false, retry: 12 * time.Second},
			},
		},
		{name: "off at 0", perMinute: 0, steps: []step{{key: "a", ok: true, times: 1000}}},
		{name: "off when negative", perMinute: -1, steps: []step{{key: "a", ok: true, times: 1000}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			b := NewBuckets(tc.perMinute, c.now)
			for i, s := range tc.steps {
				c.advance(s.advance)
				for n := range max(1, s.times) {
					ok, retry := b.Allow(s.key)
					if ok != s.ok || retry != s.retry {
						t.Fatalf("step %d call %d (%s): Allow = %v, %v; want %v, %v", i, n, s.key, ok, retry, s.ok, s.retry)
					}
				}
			}
			if tc.perMinute <= 0 && b.Len() != 0 {
				t.Errorf("a limit that is off tracks %d keys", b.Len())
			}
		})
	}
}

func TestBucketsNil(t *testing.T) {
	var b *Buckets
	if ok, retry := b.Allow("x"); !ok || retry != 0 {
		t.Errorf("nil Buckets: Allow = %v, %v; want true, 0", ok, retry)
	}
}

func TestBucketsDefaultClock(t *testing.T) {
	b := NewBuckets(1, nil)
	if ok, _ := b.Allow("a"); !ok {
		t.Fatal("first request refused")
	}
	ok, retry := b.Allow("a")
	if ok || retry < 59*time.Second || retry > 60*time.Second {
		t.Errorf("second request: %v, %v; want refused with about 60s", ok, retry)
	}
}

// TestBucketsMemoryBound: past maxKeys, idle (refilled) buckets are swept;
// when none is idle, half of them go. The table is filled directly (one
// shared bucket per fill) to keep the test fast; the sweep runs through
// Allow as in production.
func TestBucketsMemoryBound(t *testing.T) {
	c := newClock()
	b := NewBuckets(10, c.now)
	fill := func(prefix string, n int) {
		bk := &bucket{lim: rate.NewLimiter(rate.Limit(10.0/60), 10), last: c.now()}
		b.mu.Lock()
		for i := 0; i < n; i++ {
			b.buckets[prefix+strconv.Itoa(i)] = bk
		}
		b.mu.Unlock()
	}

	// Every bucket idle for a minute (so full again): a new key sweeps
	// them all.
	fill("idle", maxKeys)
	c.advance(time.Minute)
	b.Allow("recent")
	if b.Len() != 1 {
		t.Fatalf("after sweeping idle buckets Len = %d, want 1", b.Len())
	}

	// Half idle, half recently used: only the idle ones go.
	fill("old", maxKeys/2)
	c.advance(time.Minute)
	fill("new", maxKeys/2-1)
	b.Allow("another") // the table is at maxKeys: sweep
	// Gone: the "old" buckets and "recent" (last used a minute ago).
	// Kept: the "new" buckets, plus "another".
	if want := maxKeys / 2; b.Len() != want {
		t.Fatalf("after sweeping a mixed table Len = %d, want %d", b.Len(), want)
	}
	// A key in use keeps its state across sweeps.
	for range 10 {
		b.Allow("another")
	}
	if ok, _ := b.Allow("another"); ok {
		t.Fatal("a sweep reset an active key")
	}

	// Every bucket in use: the sweep frees half of them.
	fill("busy", maxKeys-b.Len())
	if b.Len() != maxKeys {
		t.Fatalf("Len = %d, want %d", b.Len(), maxKeys)
	}
	b.Allow("one more")
	if n := b.Len(); n != maxKeys/2+1 {
		t.Fatalf("after sweeping busy buckets Len = %d, want %d", n, maxKeys/2+1)
	}
}

func TestBucketsConcurrentUse(t *testing.T) {
	b := NewBuckets(100, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if ok, _ := b.Allow("shared"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
				b.Allow("own" + strconv.Itoa(g) + "-" + strconv.Itoa(i%3))
			}
		})
	}
	wg.Wait()
	// 400 attempts within well under a minute: the burst, plus at most a
	// few tokens refilled meanwhile.
	if allowed < 100 || allowed > 110 {
		t.Errorf("allowed %d of 400 concurrent requests, want about 100", allowed)
	}
}

func TestConcurrency(t *testing.T) {
	type op struct {
		acquire bool // false: release
		key     string
		want    bool // for acquire
	}
	tests := []struct {
		name string
		max  int
		ops  []op
	}{
		{name: "limit per key", max: 2, ops: []op{
			{true, "a", true}, {true, "a", true}, {true, "a", false},
			{true, "b", true}, {true, "b", true}, {true, "b", false},
		}},
		{name: "release frees a slot", max: 2, ops: []op{
			{true, "a", true}, {true, "a", true}, {true, "a", false},
			{false, "a", false}, {true, "a", true}, {true, "a", false},
			{false, "a", false}, {false, "a", false}, {true, "a", true}, {true, "a", true}, {true, "a", false},
		}},
		{name: "off at 0", max: 0, ops: []op{
			{true, "a", true}, {true, "a", true}, {true, "a", true}, {true, "a", true},
		}},
		{name: "off when negative", max: -1, ops: []op{
			{true, "a", true}, {true, "a", true}, {true, "a", true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConcurrency(tc.max)
			for i, o := range tc.ops {
				if !o.acquire {
					c.Release(o.key)
					continue
				}
				if got := c.Acquire(o.key); got != o.want {
					t.Fatalf("op %d: Acquire(%s) = %v, want %v", i, o.key, got, o.want)
				}
			}
		})
	}
}

// TestConcurrencyForgetsIdleKeys: a key with nothing in flight takes no
// memory.
func TestConcurrencyForgetsIdleKeys(t *testing.T) {
	c := NewConcurrency(3)
	for i := range 1000 {
		k := strconv.Itoa(i)
		c.Acquire(k)
		c.Acquire(k)
		c.Release(k)
		c.Release(k)
	}
	c.mu.Lock()
	n := len(c.n)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d idle keys remembered, want 0", n)
	}
}

func TestConcurrencyParallel(t *testing.T) {
	c := NewConcurrency(3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	inFlight, peak := 0, 0
	for range 16 {
		wg.Go(func() {
			for range 200 {
				if !c.Acquire("ip") {
					continue
				}
				mu.Lock()
				inFlight++
				peak = max(peak, inFlight)
				mu.Unlock()
				mu.Lock()
				inFlight--
				mu.Unlock()
				c.Release("ip")
			}
		})
	}
	wg.Wait()
	if peak > 3 {
		t.Errorf("peak %d in flight, want at most 3", peak)
	}
}
