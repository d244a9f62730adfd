package server

import (
	"net/http"

	"github.com/coder/websocket"
)

// handleNode upgrades /ws/node for a node agent and hands the connection to
// the hub. A refused upgrade answers plain HTTP 429.
func (s *Server) handleNode(w http.ResponseWriter, r *http.Request) {
	ip := s.clientIP(r)
	if ok, retry := s.wsRate.Allow(ip); !ok {
		tooMany(w, "Too many requests", retry)
		return
	}
	// Nodes are programs, not browsers: no cookies or credentials ride on
	// this socket, so any Origin is accepted.
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("node upgrade failed", "err", err)
		return
	}
	s.hub.ServeNode(r.Context(), conn, ip, r.Host)
}
