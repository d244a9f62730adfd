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

// ErrElsewhere ends a wait that Offload moved: a node of another router
// of the network is free for the request now. It is not a failure.
var ErrElsewhere = errors.New("a node of another router is free")

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
	stay  bool // never offloaded (OpenRequest.Stay)
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

func (q *modelQueue) add(w *waiter, maxWaiting int, front bool) error {
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
	q.perIP[w.ip]++
	if front {
		q.waiters = append([]*waiter{w}, q.waiters...)
		for i, x := range q.waiters {
			notePosition(x, i+1)
		}
		return nil
	}
	q.waiters = append(q.waiters, w)
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

// Offload sends up to n of the model's waiters, from the head of its
// queue, elsewhere: their waits end with ErrElsewhere, for the caller
// (the network of routers) that saw n free slots for the model at
// another router. Only waiters that take any node of the model move (no
// tier or digest asked, no node excluded, not Stay). It returns how many
// moved. The work under the lock is bounded by the queue's length
// (Queue.MaxWaiting).
func (h *Hub) Offload(model string, n int) int {
	if n <= 0 || h.waiting.Load() == 0 {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[model]
	if q == nil {
		return 0
	}
	moved := 0
	for i := 0; i < len(q.waiters) && moved < n; {
		w := q.waiters[i]
		if w.stay || !w.want.open() {
			i++
			continue
		}
		q.remove(w)
		w.ch <- &grant{err: ErrElsewhere}
		moved++
	}
	if len(q.waiters) == 0 {
		delete(h.queues, model)
	}
	return moved
}
