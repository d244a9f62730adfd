// Package cli owns the idleclaw command line: one file per subcommand turns
// flags and environment into component configs and runs the component. No
// business logic lives here.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Version is the idleclaw version, announced to routers as the agent name.
const Version = "0.1.0"

// DefaultServer is the public IdleClaw router.
const DefaultServer = "https://api.idleclaw.com"

// Env looks up an environment variable ("" when unset).
type Env func(key string) string

// Streams are a command's standard streams.
type Streams struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	name     string
	summary  string
	examples []string
	run      func(ctx context.Context, args []string, env Env, s Streams) int
}

func commands() []command {
	return []command{
		{"serve", "run the routing server", []string{
			"idleclaw serve",
			"idleclaw serve --listen 127.0.0.1:8000 --config router.conf",
		}, runServe},
		{"contribute", "share your local Ollama models with the network", []string{
			"idleclaw contribute --server http://127.0.0.1:8000",
			"idleclaw contribute --models stories --max-concurrent 1 -v",
			"idleclaw contribute pause --for 1h",
		}, runContribute},
		{"consume", "ask the network a question and stream the answer", []string{
			`idleclaw consume --server 127.0.0.1:8000 --model stories --prompt "Once upon a time"`,
			`echo "Summarize this" | idleclaw consume --prompt -`,
			"idleclaw consume --model stories --stats      # a conversation: one message a line",
		}, runConsume},
		{"status", "show the network's nodes and models", []string{
			"idleclaw status",
			"idleclaw status --server 127.0.0.1:8000 --json",
		}, runStatus},
		{"bench", "measure the router's overhead, throughput and memory", []string{
			"idleclaw bench --quick",
			"idleclaw bench --json out.json --png out.png",
		}, runBench},
		{"gateway", "your own API first, the network when your credit runs out", []string{
			"IDLECLAW_PROVIDER_URL=https://api.openai.com/v1 IDLECLAW_PROVIDER_KEY=sk-... idleclaw gateway --network http://127.0.0.1:8000",
			"idleclaw gateway --map gpt-4o-mini=stories",
		}, runGateway},
		{"completion", "print a shell completion script: bash, zsh or fish", []string{
			`source <(idleclaw completion bash)`,
			"idleclaw completion zsh > \"${fpath[1]}/_idleclaw\"",
			"idleclaw completion fish > ~/.config/fish/completions/idleclaw.fish",
		}, runCompletion},
		{"version", "print the idleclaw version", []string{"idleclaw version"}, runVersion},
	}
}

// subcommands are the verbs under a command, with their summaries.
var subcommands = map[string][][2]string{
	"contribute": {
		{"pause", "stop taking requests from the network for a while"},
		{"resume", "take requests again"},
		{"status", "show whether the running node serves, and why not"},
	},
}

// helpFor is the description and examples of a command by its name as
// newFlags gets it ("contribute pause" included).
func helpFor(name string) (summary string, examples []string) {
	top, verb, _ := strings.Cut(name, " ")
	for _, c := range commands() {
		if c.name != top {
			continue
		}
		if verb == "" {
			return c.summary, c.examples
		}
		for _, sc := range subcommands[top] {
			if sc[0] == verb {
				return sc[1], []string{"idleclaw " + name}
			}
		}
	}
	return "", nil
}

// Run runs the idleclaw command line and returns the process exit code.
// ctx is canceled on the first interrupt; main exits at once on a second.
func Run(ctx context.Context, args []string, env Env, s Streams) int {
	if env == nil {
		env = func(string) string { return "" }
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return Run(ctx, []string{args[1], "-h"}, env, s)
		}
		usage(s.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "-v", "--version", "-version":
		return runVersion(ctx, args[1:], env, s)
	case "bench-relay": // a child of `idleclaw bench`, not listed
		return runBenchRelay(ctx, args[1:], env, s)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], env, s)
		}
	}
	fmt.Fprintf(s.Stderr, "idleclaw: unknown command %q\n\n", args[0])
	usage(s.Stderr)
	return 2
}

func runVersion(ctx context.Context, args []string, env Env, s Streams) int {
	f := newFlags("version", env, s.Stderr)
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	if f.NArg() > 0 {
		fmt.Fprintf(s.Stderr, "idleclaw: unexpected argument %q\n", f.Arg(0))
		return 2
	}
	fmt.Fprintln(s.Stdout, "idleclaw", Version)
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "idleclaw: a community inference network for Ollama")
	fmt.Fprintln(w, "\nusage: idleclaw <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nexamples (a whole network on one machine, in three terminals):")
	fmt.Fprintln(w, "  idleclaw serve")
	fmt.Fprintln(w, "  idleclaw contribute --server http://127.0.0.1:8000")
	fmt.Fprintln(w, `  idleclaw consume --server http://127.0.0.1:8000 --model stories --prompt "Once upon a time"`)
	fmt.Fprintln(w, "\n-v, --version prints the version. Run 'idleclaw <command> -h' for a command's flags.")
}

// flags is a flag.FlagSet whose flags each have an environment twin. The
// order of precedence is: flag, then environment, then default.
type flags struct {
	*flag.FlagSet
	env   Env
	twins map[string]string // flag name → env var
	given map[string]bool   // flags set on the command line or by their twin
}

func newFlags(name string, env Env, stderr io.Writer) *flags {
	fs := flag.NewFlagSet("idleclaw "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{FlagSet: fs, env: env, twins: map[string]string{}, given: map[string]bool{}}
	fs.Usage = func() {
		if env(flagTableKey) != "" {
			writeFlagTable(stderr, fs)
			return
		}
		summary, examples := helpFor(name)
		if summary != "" {
			fmt.Fprintf(stderr, "idleclaw %s: %s\n\n", name, summary)
		}
		fmt.Fprintf(stderr, "usage: idleclaw %s [flags]\n", name)
		if subs := subcommands[name]; len(subs) > 0 {
			fmt.Fprintf(stderr, "       idleclaw %s <command> [flags]\n\ncommands:\n", name)
			for _, sc := range subs {
				fmt.Fprintf(stderr, "  %-8s %s\n", sc[0], sc[1])
			}
		}
		if len(examples) > 0 {
			fmt.Fprintln(stderr, "\nexamples:")
			for _, e := range examples {
				fmt.Fprintln(stderr, "  "+e)
			}
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n == 0 {
			return
		}
		fmt.Fprintln(stderr, "\nflags (environment twin in brackets):")
		fs.VisitAll(func(fl *flag.Flag) {
			twin := ""
			if e := f.twins[fl.Name]; e != "" {
				twin = " [" + e + "]"
			}
			def := ""
			if fl.DefValue != "" && fl.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", fl.DefValue)
			}
			fmt.Fprintf(stderr, "  %s%s%s\n      %s\n", dashed(fl.Name), twin, def, fl.Usage)
		})
	}
	return f
}

// String, Int, Bool, Duration, Float define a flag with an env twin.
func (f *flags) String(name, envName, def, usage string) *string {
	p := f.FlagSet.String(name, def, usage)
	f.maybeTwin(name, envName)
	return p
}

func (f *flags) Int(name, envName string, def int, usage string) *int {
	p := f.FlagSet.Int(name, def, usage)
	f.maybeTwin(name, envName)
	return p
}

func (f *flags) Bool(name, envName string, def bool, usage string) *bool {
	p := f.FlagSet.Bool(name, def, usage)
	f.maybeTwin(name, envName)
	return p
}

func (f *flags) Duration(name, envName string, def time.Duration, usage string) *time.Duration {
	p := f.FlagSet.Duration(name, def, usage)
	f.maybeTwin(name, envName)
	return p
}

func (f *flags) Float(name, envName string, def float64, usage string) *float64 {
	p := f.FlagSet.Float64(name, def, usage)
	f.maybeTwin(name, envName)
	return p
}

func (f *flags) maybeTwin(name, envName string) {
	if envName != "" {
		f.twins[name] = envName
	}
}

// parse parses args, then fills every flag not given on the command line
// from its environment twin. It returns a usage error for bad values.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	f.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })
	var errs []error
	f.VisitAll(func(fl *flag.Flag) {
		e := f.twins[fl.Name]
		if f.given[fl.Name] || e == "" {
			return
		}
		v := f.env(e)
		if v == "" {
			return
		}
		f.given[fl.Name] = true
		if err := fl.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("invalid %s=%q: %v", e, v, err))
		}
	})
	return errors.Join(errs...)
}

// isGiven reports whether the flag name was set on the command line or by
// its environment twin (after parse).
func (f *flags) isGiven(name string) bool { return f.given[name] }

// parseOrExit parses and reports the exit code to use when parsing failed:
// 0 for -h, 2 for bad usage, -1 to go on.
func (f *flags) parseOrExit(args []string, stderr io.Writer) int {
	err := f.parse(args)
	switch {
	case err == nil:
		return -1
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		if !strings.HasPrefix(err.Error(), "flag") {
			fmt.Fprintln(stderr, "idleclaw:", err)
		}
		return 2
	}
}

// newLogger builds the structured logger for long-running commands.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid log level %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid log format %q (text or json)", format)
}
