package cli

import (
	"io"
	"sync"
)

// lockedWriter serialises whole writes from the agent's human lines and the
// CLI's own, so that lines do not interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
