package agent

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// procTCP writes a /proc/net/tcp-like file; each entry is local, peer,
// state, inode.
func procTCP(t *testing.T, root, name string, entries ...[3]string) {
	t.Helper()
	text := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for i, e := range entries {
		text += fmt.Sprintf("%4d: %s %s %s 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 20 4 30 10 -1\n", i, e[0], e[1], e[2], 100+i)
	}
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "net", name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConnWatchFake: a connection to Ollama's port that is not one the
// node dialed is the owner's, once, open or closed (TIME_WAIT); the
// node's own (both sides), listening sockets and other ports are not.
func TestConnWatchFake(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("the fake /proc below is written in little-endian order")
	}
	root := t.TempDir()
	own := newDialLog(time.Now)
	own.conns[netip.MustParseAddrPort("127.0.0.1:40000")] = time.Time{}
	w := newConnWatch("http://127.0.0.1:12000", own)
	if w == nil {
		t.Fatal("no watch for a loopback Ollama")
	}
	listen := [3]string{"0100007F:2EE0", "00000000:0000", "0A"}
	mineClient := [3]string{"0100007F:9C40", "0100007F:2EE0", "01"} // 127.0.0.1:40000 → :12000
	mineServer := [3]string{"0100007F:2EE0", "0100007F:9C40", "01"}
	otherPort := [3]string{"0100007F:1F90", "0100007F:9C41", "01"}
	procTCP(t, root, "tcp", listen, mineClient, mineServer, otherPort)
	if w.look(root) {
		t.Fatal("the first look saw the owner")
	}
	if w.look(root) {
		t.Fatal("the node's own connection counted as the owner's")
	}
	// A connection from :40001, both its sides listed.
	procTCP(t, root, "tcp", listen, mineClient, mineServer, otherPort,
		[3]string{"0100007F:2EE0", "0100007F:9C41", "01"}, [3]string{"0100007F:9C41", "0100007F:2EE0", "01"})
	if !w.look(root) {
		t.Fatal("a new connection to Ollama from elsewhere was not seen")
	}
	if w.look(root) {
		t.Fatal("the same (idle keep-alive) connection counted twice")
	}
	// Closed already (TIME_WAIT on the client's side), between two looks.
	procTCP(t, root, "tcp", listen, mineClient, mineServer, [3]string{"0100007F:9C42", "0100007F:2EE0", "06"})
	if !w.look(root) {
		t.Fatal("a request that came and went between two looks was not seen")
	}
	// The same over IPv6, an IPv4-mapped peer.
	procTCP(t, root, "tcp6", [3]string{"0000000000000000FFFF00000100007F:2EE0", "0000000000000000FFFF00000200007F:C350", "01"})
	if !w.look(root) {
		t.Fatal("a new IPv6 connection was not seen")
	}
	for _, base := range []string{"http://gpu-box:11434", "http://10.1.2.3:11434", "http://127.0.0.1", "::"} {
		if newConnWatch(base, own) != nil {
			t.Errorf("watching connections to %s, which is not a local Ollama with a port", base)
		}
	}
}

// TestConnWatchRealProc: against this machine's /proc, a connection from
// another process to a local server is seen, the node's own are not.
func TestConnWatchRealProc(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp on this system")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	own := newDialLog(time.Now)
	w := newConnWatch(srv.URL, own)
	w.look("/proc")
	// The node's own requests, on fresh connections each (closed ones stay
	// listed, in TIME_WAIT), and one kept open.
	tr := &http.Transport{DisableKeepAlives: true}
	own.wrap(tr)
	for range 3 {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	held, err := tr.DialContext(t.Context(), "tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if w.look("/proc") {
		t.Fatal("the node's own connections counted as the owner's")
	}
	// Another process dials and holds its connection until told.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "IDLECLAW_DIAL_AND_HOLD="+srv.Listener.Addr().String())
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "dialed\n" {
		t.Fatalf("helper process said %q", line)
	}
	if !w.look("/proc") {
		t.Fatal("another process's connection to the server was not seen")
	}
	if w.look("/proc") {
		t.Fatal("the same connection counted twice")
	}
}

// TestMain makes the test binary TestConnWatchRealProc's other process
// when IDLECLAW_DIAL_AND_HOLD names an address: it dials it and holds the
// connection until its stdin closes.
func TestMain(m *testing.M) {
	if addr := os.Getenv("IDLECLAW_DIAL_AND_HOLD"); addr != "" {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("dialed")
		bufio.NewReader(os.Stdin).ReadString('\n')
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
