package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
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

// TestRefusalBeforeTheBodyIsAnswered: a request refused before its body is
// read (a 429 for the per-IP chat slots, a 401, a 404, a 405) gets its
// answer at once even when the client holds its body back, and the
// connection is closed after it. Before, net/http drained the unread body
// before writing the answer, with no deadline: the client that held its
// body got nothing for as long as it held the connection. A body read to
// its end keeps the connection for the next request.
func TestRefusalBeforeTheBodyIsAnswered(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.server.BodyTimeout = waitFor // far: only the refusals may answer
		c.server.MaxConcurrentChatPerIP = 1
		c.server.AdminToken = "secret"
	})
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	slow := func(method, path string) (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":", method, path)
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		return conn, bufio.NewReader(conn)
	}
	// The one chat slot of 127.0.0.1, held by a slow body. (Asking with
	// whole bodies whether it is taken raced: a request that asked took
	// the slot for a moment, and the slow one, arriving then, was refused.)
	slow("POST", "/api/chat")
	eventually(t, "the slot to be taken", func() bool { return h.api.chatConc.InFlight("127.0.0.1") == 1 })
	if code, _, _ := h.chatStatus(t, map[string]any{}); code != http.StatusTooManyRequests {
		t.Fatalf("a chat with the slot taken: %d, want 429", code)
	}
	for _, tc := range []struct{ method, path, status string }{
		{"POST", "/v1/chat/completions", "429"},
		{"POST", "/ollama/api/chat", "429"},
		{"POST", "/admin/bans", "401"},
		{"POST", "/no/such/path", "404"},
		{"PUT", "/api/chat", "404"},
	} {
		_, br := slow(tc.method, tc.path)
		status, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 "+tc.status+" ") {
			t.Errorf("%s %s with its body held: %q %v; want %s at once", tc.method, tc.path, status, err, tc.status)
			continue
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Errorf("%s %s: the connection was not closed after the answer: %v", tc.method, tc.path, err)
		}
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	br := bufio.NewReader(conn)
	for i := range 2 {
		body := `{"node_id":"n"}`
		fmt.Fprintf(conn, "POST /admin/bans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d on a kept connection: %v %v", i, resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
