package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/client"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// maxPromptBytes bounds what `--prompt -` reads from stdin, and one line
// of a conversation read from stdin.
const maxPromptBytes = 1 << 20

// maxHistory bounds the messages a conversation keeps and sends again
// (the router's own --max-messages is 50; its --max-history sends the last
// 20 to the node).
const maxHistory = 40

// exitInterrupted is the shell's code for a command ended by SIGINT.
const exitInterrupted = 130

// consumeConfig is what `idleclaw consume` runs with.
type consumeConfig struct {
	server string
	model  string // "" means the network's default, models[0]
	// prompt is the one message to send; conversation (no --prompt) reads
	// messages from stdin instead, one a line, keeping the history.
	prompt       string
	conversation bool
	think        bool
	system       string
	stats        bool
	seed         optInt
	temperature  optFloat
	maxTokens    optInt
	timeout      time.Duration // 0 means none; in a conversation, per answer
	// public: --server was not given; the prompt goes to DefaultServer.
	public bool
}

// parseConsume turns args and env into a config. It returns -1 to go on, or
// the exit code (0 for -h, 2 for a usage error, already reported).
func parseConsume(args []string, env Env, s Streams) (consumeConfig, int) {
	var cfg consumeConfig
	f := newFlags("consume", env, s.Stderr)
	server := f.String("server", "IDLECLAW_SERVER", DefaultServer, "router: http(s)://host[:port], or host:port for http")
	model := f.String("model", "IDLECLAW_MODEL", "", "model to ask, as the network lists it or without its :latest (default: the network's first model)")
	prompt := f.String("prompt", "", "", "the message to send; - reads it from standard input (without --prompt: a conversation, one message a line of standard input)")
	think := f.Bool("think", "", false, "ask a thinking-capable model to think; its thinking goes to stderr")
	system := f.String("system", "", "", "a system message, placed after the router's safety prompt (ext)")
	stats := f.Bool("stats", "", false, "print tokens, tokens/s and the router's usage to stderr at the end of each answer")
	f.Var(&cfg.maxTokens, "max-tokens", "longest answer, in tokens (num_predict; ext)")
	f.Var(&cfg.seed, "seed", "sampling seed for reproducible answers (ext; 0 sends none)")
	f.Var(&cfg.temperature, "temperature", "sampling temperature, 0 or more (ext; not sent unless given)")
	timeout := f.Duration("timeout", "IDLECLAW_TIMEOUT", 10*time.Minute, "limit for the whole request, answer included (0: none)")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return cfg, code
	}
	usageErr := func(format string, a ...any) (consumeConfig, int) {
		fmt.Fprintf(s.Stderr, "idleclaw: "+format+"\n", a...)
		return cfg, 2
	}
	if f.NArg() > 0 {
		return usageErr("unexpected argument %q (put the message in --prompt)", f.Arg(0))
	}
	cfg.model, cfg.think, cfg.timeout = strings.TrimSpace(*model), *think, *timeout
	cfg.system, cfg.stats = *system, *stats
	addr, err := routerAddr(*server, false)
	if err == nil {
		_, err = client.New(addr, nil)
	}
	if err != nil {
		return usageErr("invalid --server: %v", err)
	}
	cfg.server, cfg.public = addr, !f.isGiven("server")
	if cfg.model != "" {
		if err := validConsumeModel(cfg.model); err != nil {
			return usageErr("%v", err)
		}
	}
	if cfg.timeout < 0 {
		return usageErr("invalid --timeout %v: must be 0 or more", cfg.timeout)
	}
	if cfg.temperature.set && !(cfg.temperature.v >= 0) {
		return usageErr("invalid --temperature %v: must be 0 or more", cfg.temperature.v)
	}
	if cfg.maxTokens.set && cfg.maxTokens.v <= 0 {
		return usageErr("invalid --max-tokens %d: must be 1 or more", cfg.maxTokens.v)
	}
	switch {
	case !f.isGiven("prompt"):
		cfg.conversation = true
		return cfg, -1
	case *prompt == "-":
		p, err := readPrompt(s.Stdin)
		if err != nil {
			return usageErr("%v", err)
		}
		cfg.prompt = p
	default:
		cfg.prompt = *prompt
	}
	if strings.TrimSpace(cfg.prompt) == "" {
		return usageErr("the prompt is empty")
	}
	return cfg, -1
}

func validConsumeModel(name string) error {
	if !wire.ValidModelName(name) {
		return fmt.Errorf("invalid model name %q: use 1 to %d letters, digits and . _ : / -, starting with a letter or digit", name, wire.MaxModelName)
	}
	return nil
}

// readPrompt reads all of r, less one trailing newline.
func readPrompt(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("--prompt -: no standard input")
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPromptBytes+1))
	if err != nil {
		return "", fmt.Errorf("--prompt -: read standard input: %v", err)
	}
	if len(b) > maxPromptBytes {
		return "", fmt.Errorf("--prompt -: standard input is larger than %d bytes", maxPromptBytes)
	}
	if !utf8.Valid(b) {
		return "", errors.New("--prompt -: standard input is not UTF-8 text")
	}
	p := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(p, "\r"), nil
}

func runConsume(ctx context.Context, args []string, env Env, s Streams) int {
	cfg, code := parseConsume(args, env, s)
	if code >= 0 {
		return code
	}
	c, err := client.New(cfg.server, &http.Client{})
	if err != nil { // already validated
		fmt.Fprintln(s.Stderr, "idleclaw:", err)
		return 2
	}
	if cfg.public {
		fmt.Fprintf(s.Stderr, "idleclaw: your prompt goes to the public router %s (--server URL or IDLECLAW_SERVER chooses another)\n", DefaultServer)
	}
	cs := &consumer{cfg: cfg, c: c, s: s, now: time.Now}
	if cfg.conversation {
		return cs.converse(ctx)
	}
	return cs.exitCode(ctx, cs.turn(ctx, []client.Message{{Role: "user", Content: cfg.prompt}}, nil))
}

// consumer runs the turns of one consume.
type consumer struct {
	cfg      consumeConfig
	c        *client.Client
	s        Streams
	now      func() time.Time
	resolved bool // model and think are settled against the network's list
}

// turnError is a failed turn, with the context it ran under.
type turnError struct {
	err    error
	reqCtx context.Context
	model  string
}

// turn asks the network one question (msgs, the conversation so far) and
// streams the answer. keep, when set, receives the answer text.
func (cs *consumer) turn(ctx context.Context, msgs []client.Message, keep *strings.Builder) *turnError {
	reqCtx := ctx
	if cs.cfg.timeout > 0 {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, cs.cfg.timeout)
		defer cancel()
	}
	if !cs.resolved {
		if err := cs.resolve(reqCtx); err != nil {
			return &turnError{err: err, reqCtx: reqCtx}
		}
		cs.resolved = true
	}
	p := &answerPrinter{out: cs.s.Stdout, diag: cs.s.Stderr, keep: keep, now: cs.now}
	start := cs.now()
	err := cs.chat(reqCtx, msgs, p)
	p.finish()
	if err == nil && cs.cfg.stats {
		fmt.Fprintln(cs.s.Stderr, statsLine(p, start, cs.now()))
	}
	if err != nil {
		return &turnError{err: err, reqCtx: reqCtx, model: cs.cfg.model}
	}
	return nil
}

// exitCode reports a turn's failure on stderr and returns the exit code.
func (cs *consumer) exitCode(ctx context.Context, te *turnError) int {
	if te == nil {
		return 0
	}
	stderr := cs.s.Stderr
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "idleclaw: interrupted")
		return exitInterrupted
	case errors.Is(te.err, context.DeadlineExceeded) && te.reqCtx.Err() != nil:
		fmt.Fprintf(stderr, "idleclaw: no complete answer within %v (--timeout)\n", cs.cfg.timeout)
		return 1
	}
	var noNode *noNodeError
	if errors.As(te.err, &noNode) {
		if noNode.reason != "" {
			fmt.Fprintln(stderr, "idleclaw:", noNode.reason)
			return 1
		}
		fmt.Fprintln(stderr, "idleclaw:", noNodeMessage(te.reqCtx, cs.c, noNode.model))
		return 1
	}
	fmt.Fprintln(stderr, "idleclaw:", describeError(te.err))
	return 1
}

// converse reads messages from stdin, one a line, and asks each with the
// conversation so far. Blank lines are skipped; end of input ends it. A
// failed turn is reported and left out of the history; the exit code is 1
// when any turn failed.
func (cs *consumer) converse(ctx context.Context) int {
	stdin := cs.s.Stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	tty := isTerminal(stdin)
	if tty {
		fmt.Fprintln(cs.s.Stderr, "idleclaw: type a message and press Enter; Ctrl+D ends the conversation")
	}
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() { // stays blocked on a terminal read after an interrupt; the process ends
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 0, 4096), maxPromptBytes)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSuffix(sc.Text(), "\r"):
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()
	var history []client.Message
	asked, failed := 0, false
	for {
		if tty {
			fmt.Fprint(cs.s.Stderr, ">>> ")
		}
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-ctx.Done():
			fmt.Fprintln(cs.s.Stderr, "\nidleclaw: interrupted")
			return exitInterrupted
		}
		if !ok {
			break
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !utf8.ValidString(line) {
			fmt.Fprintln(cs.s.Stderr, "idleclaw: a line of standard input is not UTF-8 text; skipped")
			failed = true
			continue
		}
		asked++
		history = append(history, client.Message{Role: "user", Content: line})
		var answer strings.Builder
		if te := cs.turn(ctx, history, &answer); te != nil {
			if code := cs.exitCode(ctx, te); code == exitInterrupted {
				return code
			}
			history, failed = history[:len(history)-1], true
			continue
		}
		if a := answer.String(); strings.TrimSpace(a) != "" {
			history = append(history, client.Message{Role: "assistant", Content: a})
		}
		if n := len(history); n > maxHistory {
			history = history[n-maxHistory:]
			for len(history) > 0 && history[0].Role != "user" {
				history = history[1:]
			}
		}
	}
	if tty {
		fmt.Fprintln(cs.s.Stderr)
	}
	if err := <-readErr; err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line is longer than %d bytes", maxPromptBytes)
		}
		fmt.Fprintln(cs.s.Stderr, "idleclaw: read standard input:", err)
		return 1
	}
	if asked == 0 && !failed {
		fmt.Fprintln(cs.s.Stderr, "idleclaw: no prompt: give --prompt TEXT, --prompt - for all of standard input, or messages on standard input, one a line")
		return 2
	}
	if failed {
		return 1
	}
	return 0
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// noNodeError is a 503 from /api/chat: no node serves the model, or
// (reason set) the router said why the nodes that serve it cannot now.
type noNodeError struct {
	model  string
	reason string
}

func (e *noNodeError) Error() string { return "no node serves model " + e.model }

// resolve settles the model against the network's list: the default when
// none is given; the name as the network lists it when the given one
// differs only by the implicit ":latest" (a v1 router matches names
// exactly); and --think dropped, with a warning, for a model the network
// says cannot think. Without the list, a given model is sent as it is.
func (cs *consumer) resolve(ctx context.Context) error {
	m, err := cs.c.Models(ctx)
	if err != nil {
		if cs.cfg.model == "" {
			return err
		}
		return nil
	}
	if cs.cfg.model == "" {
		if len(m.Models) == 0 || m.Models[0] == "" {
			return errors.New("no models available on the network")
		}
		cs.cfg.model = m.Models[0]
		fmt.Fprintf(cs.s.Stderr, "[model: %s]\n", client.Sanitize(cs.cfg.model))
	} else if !slices.Contains(m.Models, cs.cfg.model) {
		want := wire.NormalizeModel(cs.cfg.model)
		for _, name := range m.Models {
			if wire.ValidModelName(name) && wire.NormalizeModel(name) == want {
				cs.cfg.model = name
				break
			}
		}
	}
	if caps, listed := m.Capabilities[cs.cfg.model]; cs.cfg.think && listed && !caps.Thinking {
		fmt.Fprintf(cs.s.Stderr, "idleclaw: %s cannot think (the network lists no thinking capability for it); asking without --think\n", client.Sanitize(cs.cfg.model))
		cs.cfg.think = false
	}
	return nil
}

// chat streams one answer into p.
func (cs *consumer) chat(ctx context.Context, msgs []client.Message, p *answerPrinter) error {
	cfg := cs.cfg
	req := client.ChatRequest{Model: cfg.model, Messages: msgs, Think: cfg.think, System: cfg.system}
	if cfg.seed.set && cfg.seed.v != 0 || cfg.temperature.set || cfg.maxTokens.set {
		req.Options = &client.Options{}
		if cfg.seed.set && cfg.seed.v != 0 {
			req.Options.Seed = &cfg.seed.v
		}
		if cfg.temperature.set {
			req.Options.Temperature = &cfg.temperature.v
		}
		if cfg.maxTokens.set {
			req.Options.NumPredict = &cfg.maxTokens.v
		}
	}
	err := cs.c.Chat(ctx, req, p.event)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
		// The router's detail says more than "no node" when nodes serve
		// the model but none takes requests now (paused, busy, failing).
		reason := ""
		if _, why, ok := strings.Cut(ae.Detail, ": "); ok {
			reason = "no node can serve model " + client.Sanitize(cfg.model) + " now: " + why
		} else if strings.Contains(ae.Detail, "busy") {
			reason = ae.Detail
		}
		return &noNodeError{model: cfg.model, reason: reason}
	}
	return err
}

// statsLine is the --stats line of one answer: its tokens (the router's
// usage when it sent one, else the answer chunks), tokens/s from the first
// token to the end (only for 2 tokens or more over 50 ms or more), the
// time to the first token and in all, and the usage as the router gave it.
func statsLine(p *answerPrinter, start, end time.Time) string {
	var b strings.Builder
	b.WriteString("[stats: ")
	tokens, unit := p.chunks, "chunks"
	if u := p.usage; u != nil && u.CompletionTokens > 0 {
		tokens, unit = u.CompletionTokens, "tokens"
	}
	fmt.Fprintf(&b, "%d answer %s", tokens, unit)
	if !p.first.IsZero() {
		if d := end.Sub(p.first); tokens >= 2 && d >= 50*time.Millisecond {
			fmt.Fprintf(&b, ", %.1f %s/s", float64(tokens)/d.Seconds(), unit)
		}
		fmt.Fprintf(&b, "; first token after %.2f s", p.first.Sub(start).Seconds())
	}
	fmt.Fprintf(&b, "; %.2f s in all", end.Sub(start).Seconds())
	if u := p.usage; u != nil {
		if u.PromptTokens > 0 || u.TotalTokens > 0 {
			fmt.Fprintf(&b, "; usage: prompt %d, completion %d, total %d tokens", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
		} else {
			fmt.Fprintf(&b, "; usage: completion %d tokens", u.CompletionTokens)
		}
	} else {
		b.WriteString("; the router sent no usage")
	}
	b.WriteString("]")
	return b.String()
}

// noNodeMessage explains a 503 with the models the network does serve.
func noNodeMessage(ctx context.Context, c *client.Client, model string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	list := "none"
	if m, err := c.Models(ctx); err != nil {
		list = "unknown (" + describeError(err) + ")"
	} else if len(m.Models) > 0 {
		list = client.Sanitize(strings.Join(m.Models, ", "))
	}
	return fmt.Sprintf("no node serves model %s; models on the network: %s", client.Sanitize(model), list)
}

// describeError renders a client error for a person at a terminal.
func describeError(err error) string {
	var ae *client.APIError
	var se *client.StreamError
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, client.ErrUnreachable):
		// "cannot reach the router at URL: cause", without the operation.
		msg := err.Error()
		return msg[max(strings.Index(msg, client.ErrUnreachable.Error()), 0):]
	case errors.Is(err, client.ErrEndedEarly):
		return "stream ended early: the router closed the answer before its end"
	case errors.As(err, &ae):
		switch ae.Status {
		case http.StatusTooManyRequests:
			msg := "rate limited by the router; retry "
			if ae.RetryAfter > 0 {
				msg += fmt.Sprintf("in %d s", int64(math.Ceil(ae.RetryAfter.Seconds())))
			} else {
				msg += "in a moment"
			}
			if ae.Detail != "" {
				msg += " (" + ae.Detail + ")"
			}
			return msg
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
			detail := ae.Detail
			if detail == "" {
				detail = http.StatusText(ae.Status)
			}
			return fmt.Sprintf("the router refused the request (%d): %s", ae.Status, detail)
		}
		return ae.Error()
	}
	return err.Error()
}

// answerPrinter writes a chat stream for a person: the answer to out as it
// arrives, thinking and tool activity to diag, each visibly set apart.
type answerPrinter struct {
	out, diag io.Writer
	queued    int // the last queue position said
	// keep, when set, receives the answer text (at most
	// wire.MaxMessageChars characters: what a message may carry).
	keep *strings.Builder
	now  func() time.Time // for first; nil: not timed

	first  time.Time     // the first answer text, thinking or tool call
	chunks int           // events with answer text
	usage  *client.Usage // from the final chunk, when the router sent it
	kept   int           // characters in keep

	thinking  bool // inside a [thinking] block on diag
	thinkNL   bool // the thinking text so far ends with a newline
	answered  bool // some answer text was written to out
	answerNL  bool // the answer so far ends with a newline
	truncated bool
}

func (p *answerPrinter) event(ev client.Event) error {
	if ev.Queued > 0 {
		// Every node that serves the model is busy: say where the
		// request stands, once per place.
		if ev.Queued != p.queued {
			p.queued = ev.Queued
			fmt.Fprintf(p.diag, "[waiting for a free node: position %d in the queue]\n", ev.Queued)
		}
		return nil
	}
	text := client.Sanitize(ev.Content)
	if ev.Usage != nil {
		p.usage = ev.Usage
	}
	if (text != "" || ev.ToolCall != nil) && p.first.IsZero() && p.now != nil {
		p.first = p.now()
	}
	if text != "" && !ev.Reasoning {
		p.chunks++
		if p.keep != nil && p.kept < wire.MaxMessageChars {
			r := []rune(text)
			r = r[:min(len(r), wire.MaxMessageChars-p.kept)]
			p.keep.WriteString(string(r))
			p.kept += len(r)
		}
	}
	switch {
	case ev.Reasoning && text != "":
		if !p.thinking {
			fmt.Fprintln(p.diag, "[thinking]")
			p.thinking = true
		}
		io.WriteString(p.diag, text)
		p.thinkNL = strings.HasSuffix(text, "\n")
	case text != "":
		p.endThinking()
		if _, err := io.WriteString(p.out, text); err != nil {
			return fmt.Errorf("write answer: %w", err)
		}
		p.answered = true
		p.answerNL = strings.HasSuffix(text, "\n")
	}
	if tc := ev.ToolCall; tc != nil {
		p.endThinking()
		fmt.Fprintln(p.diag, toolLine(tc))
	}
	if ev.FinishReason == "length" {
		p.truncated = true
	}
	return nil
}

func toolLine(tc *client.ToolCall) string {
	name := client.Sanitize(tc.Name)
	switch {
	case name == "web_search" && tc.Status == "executing":
		return "[searching the web…]"
	case name == "web_search" && tc.Status == "done":
		return "[search done]"
	case tc.Status == "executing":
		return "[running " + name + "…]"
	case tc.Status == "done":
		return "[" + name + " done]"
	}
	return "[" + name + ": " + client.Sanitize(tc.Status) + "]"
}

func (p *answerPrinter) endThinking() {
	if !p.thinking {
		return
	}
	if !p.thinkNL {
		fmt.Fprintln(p.diag)
	}
	fmt.Fprintln(p.diag, "[/thinking]")
	p.thinking = false
}

// finish closes an open thinking block and ends the answer with a newline.
func (p *answerPrinter) finish() {
	p.endThinking()
	if p.answered && !p.answerNL {
		io.WriteString(p.out, "\n")
		p.answerNL = true
	}
	if p.truncated {
		fmt.Fprintln(p.diag, "[the answer reached the length limit]")
	}
}

// optInt is an int flag that knows whether it was given.
type optInt struct {
	v   int
	set bool
}

func (o *optInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

func (o *optInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not an integer")
	}
	o.v, o.set = v, true
	return nil
}

// optFloat is a float flag that knows whether it was given.
type optFloat struct {
	v   float64
	set bool
}

func (o *optFloat) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatFloat(o.v, 'g', -1, 64)
}

func (o *optFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return errors.New("not a number")
	}
	o.v, o.set = v, true
	return nil
}
