package hub

// Exported for the external tests (package hub_test) only.

// CheckIndex compares the hub's per-model index with the one rebuilt from
// its registered nodes, and reports the first difference.
func CheckIndex(h *Hub) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checkIndexLocked()
}

// Queued is how many chunks wait in s for its reader.
func Queued(s *Stream) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.q) - s.head
}

// ConnsFrom counts the node connections from ip that ServeNode holds.
func (h *Hub) ConnsFrom(ip string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connsByIP[ip]
}
