// Command idleclaw is the IdleClaw network in one binary: the routing server
// (serve), the node agent (contribute) and the consumer tools (consume,
// status). main only wires the process to cli.Run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/idleclaw/idleclaw/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling so that a
		// second Ctrl+C ends the process at once.
		<-ctx.Done()
		stop()
	}()
	code := cli.Run(ctx, os.Args[1:], os.Getenv, cli.Streams{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
