package hub

import (
	"errors"
	"time"
)

// Queue errors; both mean "retry later" (503 with Retry-After).
var (
	ErrQueueFull    = errors.New("queue full")
	ErrQueueTimeout = errors.New("no node became free in time")
)

// QueueConfig bounds the wait for a busy model.
type QueueConfig struct {
	MaxWaiting int           // waiting requests per model (default 256; negative: no queue, 503 at once)
	MaxWait    time.Duration // longest wait for a node (default 30s)
}

// waiter is one request waiting for a node. The hub hands it a reserved
// node on ch (capacity 1) and its position on pos (capacity 1, latest wins).
type waiter struct {
	model string
	ip    string
	want  want
	ch    chan *grant
	pos   chan int
}

// grant is a node reserved for a waiter.
type grant struct {
	node     *Node // nil: the wait ended without a node, for err
	err      error // with node nil: why the wait ended
	trial    bool  // the node's half-open breaker trial
	model    string
	spelling string // the model as the node registered it
	claimed  bool   // the node claimed the model loaded
	tier     string // the node's trust tier for the model
}

// modelQueue is the FIFO of one model's waiters. Guarded by hub.mu.
type modelQueue struct {
	waiters []*waiter
	perIP   map[string]int
}

// fairShare is how many entries one client IP may hold in a queue of max
// entries when ips distinct IPs (itself included) are waiting: an equal
// share, so a lone client may use the whole queue but cannot crowd others
// out once they arrive.
func fairShare(limit, ips int) int {
	if ips < 1 {
		ips = 1
	}
	return max(1, (limit+ips-1)/ips)
}

func (q *modelQueue) add(w *waiter, maxWaiting int) error {
	if len(q.waiters) >= maxWaiting {
		return ErrQueueFull
	}
	ips := len(q.perIP)
	if q.perIP[w.ip] == 0 {
		ips++
	}
	if q.perIP[w.ip] >= fairShare(maxWaiting, ips) {
		return ErrQueueFull
	}
	q.waiters = append(q.waiters, w)
	q.perIP[w.ip]++
	notePosition(w, len(q.waiters))
	return nil
}

// remove takes w out of the queue; it reports whether w was still there.
func (q *modelQueue) remove(w *waiter) bool {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			if q.perIP[w.ip]--; q.perIP[w.ip] <= 0 {
				delete(q.perIP, w.ip)
			}
			for j := i; j < len(q.waiters); j++ {
				notePosition(q.waiters[j], j+1)
			}
			return true
		}
	}
	return false
}

// notePosition tells a waiter its 1-based position without blocking: the
// channel holds only the latest value.
func notePosition(w *waiter, p int) {
	select {
	case <-w.pos:
	default:
	}
	w.pos <- p
}
