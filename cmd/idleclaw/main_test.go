package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestSecondInterruptWhenInheritedIgnored starts this test binary as a
// helper with SIGINT ignored (as a background job of a script is), sends it
// one SIGINT (it begins a shutdown that never ends) and then another: the
// second must end the process with 130.
func TestSecondInterruptWhenInheritedIgnored(t *testing.T) {
	if os.Getenv("IDLECLAW_SIGNAL_HELPER") == "1" {
		ignored := signal.Ignored(os.Interrupt)
		ctx, _ := interruptContext(os.Stderr, os.Exit)
		fmt.Printf("ready ignored=%v\n", ignored)
		<-ctx.Done()
		fmt.Println("draining")
		select {} // a shutdown that hangs
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to start the helper with SIGINT ignored")
	}
	cmd := exec.Command("sh", "-c", `trap "" INT; exec "$0" -test.run='^TestSecondInterruptWhenInheritedIgnored$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "IDLECLAW_SIGNAL_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("helper said %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("helper never said %q", want)
		}
	}
	expect("ready ignored=true")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	expect("draining")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("helper ended with %v, want exit 130", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second SIGINT did not end the process")
	}
}
