package hostile

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// slowPost opens a connection from ip, sends the headers of a POST with
// a Content-Length of declared bytes and the first bytes of the body, then
// one byte per trickle (none with trickle 0) until the router answers. It
// returns the answer's status line and how long it took.
func slowPost(r *router, ip, path string, declared int, trickle time.Duration, header string) (string, time.Duration, error) {
	wait, err := startSlowPost(r, ip, path, declared, trickle, header)
	if err != nil {
		return "", 0, err
	}
	return wait()
}

// startSlowPost is slowPost in two steps: it returns once the headers
// and the start of the body are sent, and wait returns the answer.
func startSlowPost(r *router, ip, path string, declared int, trickle time.Duration, header string) (wait func() (string, time.Duration, error), err error) {
	conn, err := dialerFrom(ip).Dial("tcp", r.host)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n{\"model\":", path, r.host, declared, header)
	if err != nil {
		conn.Close()
		return nil, err
	}
	status := make(chan string, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, rerr := bufio.NewReader(conn).ReadString('\n')
		if rerr != nil && line == "" {
			line = fmt.Sprintf("(no answer: %v after %s)", rerr, time.Since(start))
		}
		status <- strings.TrimSpace(line)
	}()
	return func() (string, time.Duration, error) {
		defer conn.Close()
		var tick <-chan time.Time
		if trickle > 0 {
			t := time.NewTicker(trickle)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case s := <-status:
				return s, time.Since(start), nil
			case <-tick:
				_, _ = conn.Write([]byte(" "))
			}
		}
	}, nil
}

// holdSlots holds n of an address's slots with slow bodies sent to path,
// until full says (from a request of the same address) that they are all
// taken. A slow body that arrived while full's own request held a slot is
// refused (at once): another takes its place. The returned wait waits
// for the n bodies to be cut (408).
func holdSlots(t *testing.T, r *router, ip, path, header string, n int, full func() bool) (wait func()) {
	t.Helper()
	type res struct {
		status string
		err    error
	}
	held := make(chan res, 2*n)
	hold := func() {
		w, err := startSlowPost(r, ip, path, 1000, 0, header)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			s, _, err := w()
			held <- res{s, err}
		}()
	}
	for range n {
		hold()
	}
	check := func(h res) bool {
		switch {
		case strings.Contains(h.status, " 408 "):
			return true
		case strings.Contains(h.status, " 429 "):
			return false
		}
		t.Fatalf("a held %s: %q %v", path, h.status, h.err)
		return false
	}
	cut := 0
	until(t, fmt.Sprintf("%d slow bodies to hold the slots", n), 15, func() bool {
		if full() {
			return true
		}
		for {
			select {
			case h := <-held:
				if check(h) {
					cut++
				} else {
					hold()
				}
				continue
			default:
			}
			return false
		}
	})
	return func() {
		for cut < n {
			if check(<-held) {
				cut++
			}
		}
	}
}

// until tries cond every 100 ms, at most tries times: for conditions
// whose every check costs the client a token of its rate bucket.
func until(t *testing.T, what string, tries int, cond func() bool) {
	t.Helper()
	for range tries {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond) // polling another process, within the client's rate budget
	}
	t.Fatalf("%s: not after %d tries", what, tries)
}

// TestSlowBodies: a body held back or trickled is cut at --body-timeout
// with 408 in every dialect, and while it is held it costs its address
// one of its slots: the per-IP concurrency bounds chats (3) and reads (8),
// and the slots come back.
func TestSlowBodies(t *testing.T) {
	const bodyTimeout = 2 * time.Second
	r := startRouter(t, "--body-timeout", bodyTimeout.String())
	honestNode(t, r, freshIP(), "honest-slow", model("echo:1", 1e9))
	paths := []string{"/api/chat", "/v1/chat/completions", "/ollama/api/chat"}
	type res struct {
		status string
		took   time.Duration
		err    error
	}
	var wg sync.WaitGroup
	results := make([]res, 2*len(paths))
	for i, p := range paths {
		for j, trickle := range []time.Duration{0, 300 * time.Millisecond} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, took, err := slowPost(r, freshIP(), p, 1000, trickle, "")
				results[2*i+j] = res{s, took, err}
			}()
		}
	}
	wg.Wait()
	worst := time.Duration(0)
	for k, rs := range results {
		what := fmt.Sprintf("%s (trickle %v)", paths[k/2], k%2 == 1)
		if rs.err != nil || !strings.Contains(rs.status, " 408 ") || rs.took < bodyTimeout || rs.took > bodyTimeout+2*time.Second {
			t.Errorf("%s: %q after %s (%v); want 408 at %s", what, rs.status, ms(rs.took), rs.err, bodyTimeout)
		}
		worst = max(worst, rs.took)
	}
	observe(t, "slowloris bodies, held or trickled 1 byte/300 ms, in the 3 dialects", fmt.Sprintf("--body-timeout %s", bodyTimeout),
		"all %d answered %q, the last after %s", len(results), results[0].status, ms(worst))

	// Three slow chats hold an address's chat slots; the fourth is refused
	// at once; once they are cut, the address chats again.
	ip := freshIP()
	c := clientFrom(ip)
	var refused answer
	holdSlots(t, r, ip, "/api/chat", "", 3, func() bool {
		a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "echo:1", "let me in", nil), nil)
		refused = a
		return err == nil && a.Status == http.StatusTooManyRequests && strings.Contains(a.Body, "Too many concurrent requests")
	})()
	a, err := r.chat(context.Background(), c, "v1", chatBody("v1", "echo:1", "now", nil), nil)
	if err != nil || a.Content != "honest: now" {
		t.Errorf("the address after its slow chats were cut: %+v %v", a, err)
	}
	observe(t, "3 slow chat bodies from one address, then a 4th chat", "3 concurrent chats per IP",
		"4th refused %d %s; after the 408s the address chats again", refused.Status, strings.TrimSpace(refused.Body))

	// Eight slow bodies on a read endpoint (an admin POST) hold an
	// address's read slots: /health from it is refused, from others not.
	ip = freshIP()
	var code int
	wait := holdSlots(t, r, ip, "/admin/bans", "Authorization: Bearer "+adminToken+"\r\n", 8, func() bool {
		code, _ = r.get(clientFrom(ip), "/health", nil)
		return code == http.StatusTooManyRequests
	})
	other, err := r.get(clientFrom(freshIP()), "/health", nil)
	if err != nil || other != http.StatusOK {
		t.Errorf("/health from another address: %d %v", other, err)
	}
	wait()
	after, err := r.get(clientFrom(ip), "/health", nil)
	if err != nil || after != http.StatusOK {
		t.Errorf("/health from the address after its slow reads were cut: %d %v", after, err)
	}
	observe(t, "8 slow bodies on a read endpoint from one address, then /health", "8 requests in flight per IP on reads",
		"/health from it %d, from another address %d; after the 408s %d", code, other, after)
}

// TestHostileBodies: bodies too large, nested too deep, with too many or
// too long messages, invalid UTF-8 or huge unknown fields, in every
// dialect: each is refused (or, where harmless, served) fast, and no node
// sees what was refused.
func TestHostileBodies(t *testing.T) {
	r := startRouter(t)
	node := honestNode(t, r, freshIP(), "honest-bodies", model("echo:1", 1e9))
	msgs := func(n, size int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			role := "user"
			if i%2 == 1 {
				role = "assistant"
			}
			out[i] = map[string]any{"role": role, "content": strings.Repeat("w", size)}
		}
		return out
	}
	deep := `{"model":"echo:1","messages":` + strings.Repeat("[", 400_000) + strings.Repeat("]", 400_000) + `}`
	bodies := []struct {
		name   string
		body   func(dialect string) any
		served bool // the router may serve it (harmless)
	}{
		{"a 2 MiB body", func(d string) any { return chatBody(d, "echo:1", strings.Repeat("a", 2<<20), nil) }, false},
		{"JSON nested 400,000 deep", func(string) any { return deep }, false},
		{"51 messages", func(d string) any { return map[string]any{"model": "echo:1", "messages": msgs(51, 1)} }, false},
		{"20,000 messages", func(d string) any { return map[string]any{"model": "echo:1", "messages": msgs(20_000, 1)} }, false},
		{"a 10,001-character message", func(d string) any { return chatBody(d, "echo:1", strings.Repeat("é", 10_001), nil) }, false},
		{"11 messages of 9,500 characters (104,500 in all)", func(d string) any { return map[string]any{"model": "echo:1", "messages": msgs(11, 9_500)} }, false},
		{"a 900 KB unknown field", func(d string) any {
			return chatBody(d, "echo:1", "hi", map[string]any{"padding": strings.Repeat("p", 900_000)})
		}, true},
		{"invalid UTF-8 in the content", func(d string) any {
			return []byte(`{"model":"echo:1","messages":[{"role":"user","content":"bad \xff\xfe bytes"}]}`)
		}, true},
		{"a model name of 10,000 characters", func(d string) any { return chatBody(d, strings.Repeat("m", 10_000), "hi", nil) }, false},
	}
	for _, b := range bodies {
		var got []string
		worst := time.Duration(0)
		for _, dialect := range []string{"v1", "openai", "ollama"} {
			before := node.requests.Load()
			c := clientFrom(freshIP())
			start := time.Now()
			a, err := r.chat(context.Background(), c, dialect, b.body(dialect), nil)
			took := time.Since(start)
			worst = max(worst, took)
			reached := node.requests.Load() - before
			switch {
			case err != nil:
				t.Errorf("%s, %s: %v", b.name, dialect, err)
			case b.served && a.Status == http.StatusOK:
				if !utf8.ValidString(a.Content) || !strings.HasPrefix(a.Content, "honest: ") {
					t.Errorf("%s, %s: served %q", b.name, dialect, a.Content)
				}
			case a.Status < 400 || a.Status >= 500 || reached != 0:
				t.Errorf("%s, %s: %d (%d node requests) %.200q; want a 4xx and no node request", b.name, dialect, a.Status, reached, a.Body)
			}
			if took > time.Second {
				t.Errorf("%s, %s: took %s", b.name, dialect, ms(took))
			}
			got = append(got, fmt.Sprintf("%s %d", dialect, a.Status))
		}
		observe(t, "consumer body: "+b.name, "1 MiB body, 50 messages, 10,000 / 100,000 characters, model name 64",
			"%s, within %s", strings.Join(got, ", "), ms(worst))
	}
	if h, err := r.get(clientFrom(freshIP()), "/health", nil); err != nil || h != http.StatusOK {
		t.Errorf("/health after the bodies: %d %v", h, err)
	}
}

// TestStalledReadersLoseTheirSlot: a consumer that stops reading its
// stream loses it after --write-stall, and its address's chat slot with
// it.
func TestStalledReadersLoseTheirSlot(t *testing.T) {
	const stall = 2 * time.Second
	r := startRouter(t, "--write-stall", stall.String(), "--max-response-chars", "0", "--response-timeout", "0")
	startFlooder(t, r, freshIP(), "flooder-stall", 10, 64<<20)
	honestNode(t, r, freshIP(), "honest-stall", model("echo:1", 1e9))
	ip := freshIP()
	start := time.Now()
	sc := stalledClient(ip)
	var resps []*http.Response
	for i := range 3 {
		resp, err := r.post(context.Background(), sc, "/api/chat", chatBody("v1", "flood:1", fmt.Sprintf("stall %d", i), nil), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stalled stream %d: %v %v", i, resp, err)
		}
		resps = append(resps, resp)
	}
	defer func() {
		for _, resp := range resps {
			_ = resp.Body.Close()
		}
	}()
	a, err := r.chat(context.Background(), clientFrom(ip), "v1", chatBody("v1", "echo:1", "me too", nil), nil)
	if err != nil || a.Status != http.StatusTooManyRequests {
		t.Fatalf("a fourth chat beside three stalled streams: %d %v", a.Status, err)
	}
	var freed time.Duration
	eventually(t, "the stalled streams to lose their slots", stall+15*time.Second, func() bool {
		a, err := r.chat(context.Background(), clientFrom(ip), "v1", chatBody("v1", "echo:1", "me too", nil), nil)
		freed = time.Since(start)
		return err == nil && a.Content == "honest: me too"
	})
	if freed < stall {
		t.Errorf("the slots came back after %s, before the write stall (%s)", ms(freed), stall)
	}
	observe(t, "3 streams from one address stop reading (4 KiB socket buffers)", fmt.Sprintf("--write-stall %s", stall),
		"a 4th chat refused 429; the address chats again %s after the streams began", ms(freed))
}

// TestManyIdleConnections: a few addresses open thousands of connections
// and send nothing (or half a request line). The router has no cap on
// connections of its own (a reverse proxy in front is expected to have
// one): what bounds them is the time they may idle before their headers
// (ReadHeaderTimeout, 10 s) and what each costs. /health keeps answering
// meanwhile.
func TestManyIdleConnections(t *testing.T) {
	const conns = 2000
	r := startRouter(t)
	base, baseFDs := r.rss(), r.fds()
	probe := r.probe(50*time.Millisecond, "/health")
	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	start := time.Now()
	for i := range conns {
		c, err := dialerFrom(fmt.Sprintf("127.8.%d.%d", i/100, i%100+1)).Dial("tcp", r.host)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i%2 == 1 {
			_, _ = fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: %s\r\n", r.host)
		}
		open = append(open, c)
	}
	eventually(t, "the router to accept them all", 10*time.Second, func() bool { return r.fds() >= baseFDs+conns })
	held, fds := r.rss(), r.fds()
	// They are all closed once their headers are late.
	closed := make(chan time.Duration, conns)
	for _, c := range open {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = bufio.NewReader(c).ReadString('\n')
			closed <- time.Since(start)
		}()
	}
	var last time.Duration
	for range conns {
		last = max(last, <-closed)
	}
	probe.stop()
	if last > 15*time.Second {
		t.Errorf("the last idle connection was closed after %s", ms(last))
	}
	if held-base > 64<<20 {
		t.Errorf("%d idle connections cost the router %s", conns, mib(held-base))
	}
	p99, _, _ := probe.lat["/health"].pct(99)
	if probe.bad.Load() > 0 || p99 > freezeP99 {
		t.Errorf("/health with %d idle connections: %s, %d failed (%v)", conns, probe.summary("/health"), probe.bad.Load(), probe.lastBad.Load())
	}
	observe(t, fmt.Sprintf("%d idle connections from 20 addresses (half send part of a request)", conns), "ReadHeaderTimeout 10 s; no connection cap in the router",
		"all accepted (%d open files), costing %s of VmRSS (%s → %s); all closed by the router, the last after %s; /health %s",
		fds, mib(held-base), mib(base), mib(held), ms(last), probe.summary("/health"))
}
