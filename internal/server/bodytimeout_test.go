package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSlowBodyGets408: a client that sends the headers and part of a body,
// then nothing, gets 408 once BodyTimeout passes, on every endpoint that
// reads a body, and the connection is closed after it. Before, the
// server's attempt to drain the rest of the body (without a deadline, the
// handler having lifted its own) held the answer back for as long as the
// client held its connection.
func TestSlowBodyGets408(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newHarness(t, func(c *harnessConfig) {
		c.server.BodyTimeout = timeout
		c.server.AdminToken = "secret"
	})
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	for _, path := range []string{"/api/chat", "/v1/chat/completions", "/ollama/api/chat", "/ollama/api/generate", "/ollama/api/show", "/admin/bans"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":", path)
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		br := bufio.NewReader(conn)
		status, err := br.ReadString('\n')
		took := time.Since(start)
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 408 ") || took < timeout {
			t.Errorf("%s: %q %v after %v; want 408 after %v", path, status, err, took, timeout)
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Errorf("%s: the connection was not closed after the 408: %v", path, err)
		}
		conn.Close()
	}
}
