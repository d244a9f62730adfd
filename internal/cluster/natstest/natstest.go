// Package natstest runs a real nats-server, as a separate process, for
// tests: built once per test binary from the module's own dependency (a
// go.mod tool), started on a free loopback port with JetStream, bounded in
// time, killed at the end.
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Build builds nats-server (once) and returns its path.
func Build() (string, error) {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "natstest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build nats-server: %v: %s", err, out)
		}
	})
	return binPath, buildErr
}

// Cleanup removes what Build made; call it at the end of TestMain.
func Cleanup() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// Server is one nats-server process.
type Server struct {
	Port  int
	URL   string
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	t     testing.TB
	bin   string
	store string
	args  []string // more of nats-server's flags (StartTLS)
	noJS  bool     // a leaf node without JetStream of its own (StartLeaf)
}

// Start starts a nats-server with JetStream on a free loopback port; it
// is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "nats")
}

// StartTLS starts one that takes only TLS connections with a client
// certificate signed by the CA in caFile, its own certificate and key
// in certFile and keyFile (PEM). Its URL is tls://.
func StartTLS(t testing.TB, certFile, keyFile, caFile string) *Server {
	t.Helper()
	return start(t, "tls", "--tls", "--tlscert", certFile, "--tlskey", keyFile, "--tlscacert", caFile, "--tlsverify")
}

// StartCluster starts n nats-servers with JetStream routed into one NATS
// cluster on loopback; each is killed when the test ends.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	routes := make([]string, n)
	for i := range routes {
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	out := make([]*Server, n)
	for i := range out {
		out[i] = start(t, "nats", "-n", "s"+strconv.Itoa(i), "--cluster_name", "idleclaw-test",
			"--cluster", routes[i], "--routes", strings.Join(routes, ","))
	}
	return out
}

// StartHub starts a nats-server with JetStream, in the domain "main",
// that takes leaf node connections at the returned URL (for StartLeaf).
func StartHub(t testing.TB) (hub *Server, leafURL string) {
	t.Helper()
	leafURL = "nats-leaf://127.0.0.1:" + strconv.Itoa(freePort(t))
	conf := filepath.Join(t.TempDir(), "hub.conf")
	if err := os.WriteFile(conf, []byte("jetstream { domain: \"main\" }\nleafnodes { listen: \""+strings.TrimPrefix(leafURL, "nats-leaf://")+"\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return start(t, "nats", "-c", conf), leafURL
}

// StartLeaf starts a nats-server with no JetStream of its own, a leaf
// node of the hub at leafURL: its clients' subjects and JetStream
// requests cross to the hub, as in a second region.
func StartLeaf(t testing.TB, leafURL string) *Server {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "leaf.conf")
	if err := os.WriteFile(conf, []byte("leafnodes { remotes: [ { url: \""+leafURL+"\" } ] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startWith(t, "nats", true, "-c", conf)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func start(t testing.TB, scheme string, args ...string) *Server {
	t.Helper()
	return startWith(t, scheme, false, args...)
}

func startWith(t testing.TB, scheme string, noJS bool, args ...string) *Server {
	t.Helper()
	bin, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := &Server{Port: port, URL: scheme + "://127.0.0.1:" + strconv.Itoa(port), t: t, bin: bin, store: t.TempDir(), args: args, noJS: noJS}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
	if !s.noJS {
		args = append(args, "-js", "-sd", s.store)
	}
	cmd := exec.Command(s.bin, append(args, s.args...)...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.Port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-done:
			s.t.Fatalf("nats-server exited at start")
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("nats-server did not listen within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills the server (SIGKILL) and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Restart kills the server and starts it again on the same port, with a
// fresh store (a server that kept nothing).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.store = s.t.TempDir()
	s.start()
}
