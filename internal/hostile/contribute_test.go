package hostile

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
)

// contributor is the real `idleclaw contribute` relaying to a fake Ollama:
// the suite's honest node. It connects from 127.0.0.1.
type contributor struct {
	id     string
	ollama *ollamatest.Server
	log    *lineLog
	exited chan struct{}
}

// keyFile makes a node key in the test's temporary directory and returns
// its path and node id (so that a router can be told to trust it).
func keyFile(t *testing.T) (path, id string) {
	t.Helper()
	k, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "node.key")
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	return path, k.NodeID()
}

// startContributor runs contribute against r with a fake Ollama of cfg.
// key is a key file ("" runs keyless under id). It waits until the router
// lists the node.
func startContributor(t *testing.T, r *router, cfg ollamatest.Config, key, id string, flags ...string) *contributor {
	t.Helper()
	ol := ollamatest.NewServer(cfg)
	t.Cleanup(ol.Close)
	args := []string{"contribute", "--server", r.base, "--ollama", ol.URL, "--control", "none",
		"--owner-poll", "0", "--owner-processes=false", "--log-format", "json"}
	if key != "" {
		args = append(args, "--identity", key)
	} else {
		args = append(args, "--identity", "none", "--node-id", id)
	}
	cmd := exec.Command(binary, append(args, flags...)...)
	cmd.Env = childEnv(t)
	c := &contributor{id: id, ollama: ol, log: newLineLog(), exited: make(chan struct{})}
	cmd.Stderr = c.log
	cmd.Stdout = newLineLog()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start contribute: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-c.exited
		}
	})
	admin := clientFrom(freshIP())
	eventually(t, "the contributor to register", 15*time.Second, func() bool {
		nodes, err := r.adminNodes(admin)
		_, ok := findNode(nodes, id)
		return err == nil && ok
	})
	return c
}
