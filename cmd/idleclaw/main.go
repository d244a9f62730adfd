// Command idleclaw is the IdleClaw network in one binary: the routing server
// (serve), the node agent (contribute) and the consumer tools (consume,
// status). main only wires the process to cli.Run.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/idleclaw/idleclaw/internal/cli"
)

func main() {
	ctx, stop := interruptContext(os.Stderr, os.Exit)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, cli.Streams{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// interruptContext returns a context canceled on the first SIGINT or
// SIGTERM; a second one calls exit (130 or 143) at once. The handler stays
// installed after the first signal rather than restoring the default:
// restoring would put back what the process inherited, and a process
// started with SIGINT ignored (a background job of a script) would then
// ignore the second Ctrl+C. stop removes the handler.
func interruptContext(stderr io.Writer, exit func(int)) (context.Context, func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			fmt.Fprintln(stderr, "idleclaw: second signal: exiting at once")
			code := 130
			if sig == syscall.SIGTERM {
				code = 143
			}
			exit(code)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}
