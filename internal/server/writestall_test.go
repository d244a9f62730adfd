package server

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestWriteStallFreesTheSlot: a consumer that stops reading does not keep
// its per-IP stream slot: once a write to it has blocked for WriteStall, its
// handler gives up and the same IP can stream again.
func TestWriteStallFreesTheSlot(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.hub.StreamBufferBytes = 1024
		c.dispatch.MaxResponseChars = -1
		c.server.MaxConcurrentChatPerIP = 1
		c.server.RateChatRPM = 0
		c.server.WriteStall = 200 * time.Millisecond
		c.sockBuf = 32 << 10
	})
	node := h.registerNode(t, "n", 2, model("m:latest", 1))

	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body, _ := json.Marshal(userChat("m", "a"))
	fmt.Fprintf(conn, "POST /api/chat HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	req := node.expect(wire.TypeInferenceReq)

	// While the stalled stream holds the IP's only slot, a second request
	// is refused; a probe for a model nobody serves gets past the slot
	// check only when the slot is free (503 then).
	probe := func() int { code, _, _ := h.chatStatus(t, userChat("nosuch", "b")); return code }
	if code := probe(); code != http.StatusTooManyRequests {
		t.Fatalf("second request while the first holds the slot: %d, want 429", code)
	}
	// Fill the socket buffers and the request's buffer.
	big := strings.Repeat("x", 64<<10)
	for i := 0; i < 4000; i++ {
		node.content(req.RequestID, big)
		select {
		case f := <-node.frames:
			if f.Type == wire.TypeCancelRequest {
				i = 4000
			}
		default:
		}
	}
	start := time.Now()
	eventually(t, "the stalled stream's slot to be freed", func() bool { return probe() == http.StatusServiceUnavailable })
	t.Logf("slot freed %v after the router stopped relaying", time.Since(start).Round(10*time.Millisecond))
}
