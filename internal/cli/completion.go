package cli

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// flagTableKey, looked up in a command's Env, makes its -h print its flag
// table (one "name bool|value usage" a line) instead of the usage text.
// It holds a NUL, so no real environment variable can set it.
const flagTableKey = "\x00idleclaw-flag-table"

func writeFlagTable(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(fl *flag.Flag) {
		kind := "value"
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			kind = "bool"
		}
		usage, _, _ := strings.Cut(fl.Usage, "\n")
		fmt.Fprintf(w, "%s %s %s\n", fl.Name, kind, usage)
	})
}

// dashed is a flag as it is typed: -v, --name.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

type flagInfo struct {
	name, usage string
	isBool      bool
}

type completionCommand struct {
	name, summary string
	flags         []flagInfo
	words         [][2]string // subcommands or argument words, with summaries
}

// completionTable is every command with its flags, read from the
// commands' own flag sets (each asked for its table through -h).
func completionTable() []completionCommand {
	var out []completionCommand
	env := func(k string) string {
		if k == flagTableKey {
			return "1"
		}
		return ""
	}
	for _, c := range commands() {
		cc := completionCommand{name: c.name, summary: c.summary, words: subcommands[c.name]}
		if c.name == "completion" {
			cc.words = [][2]string{{"bash", "bash script"}, {"zsh", "zsh script"}, {"fish", "fish script"}}
		}
		var table bytes.Buffer
		c.run(context.Background(), []string{"-h"}, env, Streams{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &table})
		sc := bufio.NewScanner(&table)
		for sc.Scan() {
			name, rest, _ := strings.Cut(sc.Text(), " ")
			kind, usage, _ := strings.Cut(rest, " ")
			cc.flags = append(cc.flags, flagInfo{name: name, usage: usage, isBool: kind == "bool"})
		}
		cc.flags = append(cc.flags, flagInfo{name: "help", usage: "show the command's flags", isBool: true})
		out = append(out, cc)
	}
	return out
}

func runCompletion(ctx context.Context, args []string, env Env, s Streams) int {
	f := newFlags("completion", env, s.Stderr)
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	shells := []string{"bash", "zsh", "fish"}
	if f.NArg() != 1 || !slices.Contains(shells, f.Arg(0)) {
		fmt.Fprintln(s.Stderr, "idleclaw: completion needs one shell: bash, zsh or fish (e.g. source <(idleclaw completion bash))")
		return 2
	}
	table := completionTable()
	var script string
	switch f.Arg(0) {
	case "bash":
		script = bashCompletion(table)
	case "zsh":
		script = zshCompletion(table)
	case "fish":
		script = fishCompletion(table)
	}
	io.WriteString(s.Stdout, script)
	return 0
}

func bashCompletion(table []completionCommand) string {
	var b strings.Builder
	b.WriteString("# bash completion for idleclaw: source <(idleclaw completion bash)\n")
	b.WriteString("_idleclaw() {\n")
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words\n")
	b.WriteString("\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n")
	names := []string{"help"}
	for _, c := range table {
		names = append(names, c.name)
	}
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W '%s --help --version' -- \"$cur\"))\n\t\treturn\n\tfi\n", strings.Join(names, " "))
	b.WriteString("\tcase ${COMP_WORDS[1]} in\n")
	for _, c := range table {
		var flags, values []string
		for _, fl := range c.flags {
			flags = append(flags, dashed(fl.name))
			if !fl.isBool {
				values = append(values, dashed(fl.name))
			}
		}
		var words []string
		for _, w := range c.words {
			words = append(words, w[0])
		}
		fmt.Fprintf(&b, "\t%s)\n", c.name)
		if len(values) > 0 {
			// A flag that takes a value: no words (bash's default, file names).
			fmt.Fprintf(&b, "\t\tcase $prev in %s) return ;; esac\n", strings.Join(values, "|"))
		}
		if len(words) > 0 {
			fmt.Fprintf(&b, "\t\tif [ \"$COMP_CWORD\" -eq 2 ]; then words='%s'; fi\n", strings.Join(words, " "))
		}
		fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W \"$words %s\" -- \"$cur\"))\n\t\t;;\n", strings.Join(flags, " "))
	}
	b.WriteString("\tesac\n}\ncomplete -o default -F _idleclaw idleclaw\n")
	return b.String()
}

// zshQuote quotes s for a zsh _arguments or _describe spec inside single
// quotes.
func zshQuote(s string) string {
	s = strings.NewReplacer(`\`, `\\`, "[", `\[`, "]", `\]`, ":", `\:`, "'", `'\''`).Replace(s)
	return s
}

// shortUsage is the first clause of a flag's usage, for a completion menu.
func shortUsage(s string) string {
	for _, sep := range []string{"; ", " (", ": "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	if r := []rune(s); len(r) > 70 {
		s = string(r[:70]) + "…"
	}
	return s
}

func zshCompletion(table []completionCommand) string {
	var b strings.Builder
	b.WriteString("#compdef idleclaw\n# zsh completion for idleclaw: idleclaw completion zsh > \"${fpath[1]}/_idleclaw\"\n")
	b.WriteString("_idleclaw() {\n\tlocal -a commands\n\tcommands=(\n")
	for _, c := range table {
		fmt.Fprintf(&b, "\t\t'%s:%s'\n", c.name, zshQuote(c.summary))
	}
	b.WriteString("\t)\n\tif (( CURRENT == 2 )); then\n\t\t_describe 'command' commands\n\t\treturn\n\tfi\n")
	b.WriteString("\tlocal cmd=$words[2]\n\tshift words\n\t(( CURRENT-- ))\n\tcase $cmd in\n")
	for _, c := range table {
		fmt.Fprintf(&b, "\t%s)\n\t\t_arguments -s \\\n", c.name)
		for _, fl := range c.flags {
			spec := dashed(fl.name) + "[" + zshQuote(shortUsage(fl.usage)) + "]"
			if !fl.isBool {
				spec += ":" + fl.name + ":_files"
			}
			fmt.Fprintf(&b, "\t\t\t'%s' \\\n", spec)
		}
		if len(c.words) > 0 {
			var ws []string
			for _, w := range c.words {
				desc := strings.NewReplacer(`"`, "", "'", "", `\`, "").Replace(w[1])
				ws = append(ws, w[0]+`\:"`+desc+`"`)
			}
			fmt.Fprintf(&b, "\t\t\t'1:%s:((%s))' \\\n", c.name, strings.Join(ws, " "))
		}
		b.WriteString("\t\t\t&& return\n\t\t;;\n")
	}
	b.WriteString("\tesac\n}\nif [ \"$funcstack[1]\" = _idleclaw ]; then\n\t_idleclaw \"$@\"\nelse\n\tcompdef _idleclaw idleclaw\nfi\n")
	return b.String()
}

// fishQuote quotes s in single quotes for fish.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func fishCompletion(table []completionCommand) string {
	var b strings.Builder
	b.WriteString("# fish completion for idleclaw: idleclaw completion fish > ~/.config/fish/completions/idleclaw.fish\n")
	b.WriteString("complete -c idleclaw -f\n")
	var names []string
	for _, c := range table {
		names = append(names, c.name)
	}
	for _, c := range table {
		fmt.Fprintf(&b, "complete -c idleclaw -n 'not __fish_seen_subcommand_from %s' -a %s -d %s\n", strings.Join(names, " "), c.name, fishQuote(c.summary))
	}
	b.WriteString("complete -c idleclaw -n __fish_use_subcommand -s v -l version -d 'print the version'\n")
	for _, c := range table {
		cond := fishQuote("__fish_seen_subcommand_from " + c.name)
		for _, w := range c.words {
			fmt.Fprintf(&b, "complete -c idleclaw -n %s -a %s -d %s\n", cond, w[0], fishQuote(w[1]))
		}
		for _, fl := range c.flags {
			opt := "-l " + fl.name
			if len(fl.name) == 1 {
				opt = "-s " + fl.name
			}
			req := ""
			if !fl.isBool {
				req = " -r -F"
			}
			fmt.Fprintf(&b, "complete -c idleclaw -n %s %s%s -d %s\n", cond, opt, req, fishQuote(shortUsage(fl.usage)))
		}
	}
	return b.String()
}
