package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idleclaw/idleclaw/internal/client"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// consumeModelRE is the seed client's model-name rule (alphanumeric, colons,
// periods, hyphens), stricter than the router's (protocol §3).
var consumeModelRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.:-]*$`)

// maxPromptBytes bounds what `--prompt -` reads from stdin.
const maxPromptBytes = 1 << 20

// exitInterrupted is the shell's code for a command ended by SIGINT.
const exitInterrupted = 130

// consumeConfig is what `idleclaw consume` runs with.
type consumeConfig struct {
	server      string
	model       string // "" means the network's default, models[0]
	prompt      string
	think       bool
	seed        optInt
	temperature optFloat
	timeout     time.Duration // 0 means none
	// public: --server was not given; the prompt goes to DefaultServer.
	public bool
}

// parseConsume turns args and env into a config. It returns -1 to go on, or
// the exit code (0 for -h, 2 for a usage error, already reported).
func parseConsume(args []string, env Env, s Streams) (consumeConfig, int) {
	var cfg consumeConfig
	f := newFlags("consume", env, s.Stderr)
	server := f.String("server", "IDLECLAW_SERVER", DefaultServer, "router: http(s)://host[:port], or host:port for http")
	model := f.String("model", "IDLECLAW_MODEL", "", "model to ask (default: the network's largest model)")
	prompt := f.String("prompt", "", "", "the message to send; - reads it from standard input")
	think := f.Bool("think", "", false, "ask a thinking-capable model to think; its thinking goes to stderr")
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
	switch *prompt {
	case "":
		return usageErr("--prompt is required (use --prompt - to read it from standard input)")
	case "-":
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
	if n := utf8.RuneCountInString(cfg.prompt); n > wire.MaxMessageChars {
		return usageErr("the prompt has %d characters; the network accepts at most %d", n, wire.MaxMessageChars)
	}
	return cfg, -1
}

func validConsumeModel(name string) error {
	if len(name) > wire.MaxModelName || !consumeModelRE.MatchString(name) {
		return fmt.Errorf("invalid model name %q: use 1 to %d letters, digits, colons, periods and hyphens, starting with a letter or digit", name, wire.MaxModelName)
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
	reqCtx := ctx
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	p := &answerPrinter{out: s.Stdout, diag: s.Stderr}
	err = consume(reqCtx, c, cfg, p)
	p.finish()
	if err == nil {
		return 0
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(s.Stderr, "idleclaw: interrupted")
		return exitInterrupted
	case errors.Is(err, context.DeadlineExceeded) && reqCtx.Err() != nil:
		fmt.Fprintf(s.Stderr, "idleclaw: no complete answer within %v (--timeout)\n", cfg.timeout)
		return 1
	}
	var noNode *noNodeError
	if errors.As(err, &noNode) {
		if noNode.reason != "" {
			fmt.Fprintln(s.Stderr, "idleclaw:", noNode.reason)
			return 1
		}
		fmt.Fprintln(s.Stderr, "idleclaw:", noNodeMessage(reqCtx, c, noNode.model))
		return 1
	}
	fmt.Fprintln(s.Stderr, "idleclaw:", describeError(err))
	return 1
}

// noNodeError is a 503 from /api/chat: no node serves the model, or
// (reason set) the router said why the nodes that serve it cannot now.
type noNodeError struct {
	model  string
	reason string
}

func (e *noNodeError) Error() string { return "no node serves model " + e.model }

// consume picks the model when none is given and streams the answer into p.
func consume(ctx context.Context, c *client.Client, cfg consumeConfig, p *answerPrinter) error {
	model := cfg.model
	if model == "" {
		m, err := c.Models(ctx)
		if err != nil {
			return err
		}
		if len(m.Models) == 0 || m.Models[0] == "" {
			return errors.New("no models available on the network")
		}
		model = m.Models[0]
		fmt.Fprintf(p.diag, "[model: %s]\n", client.Sanitize(model))
	}
	req := client.ChatRequest{
		Model:    model,
		Messages: []client.Message{{Role: "user", Content: cfg.prompt}},
		Think:    cfg.think,
	}
	if cfg.seed.set && cfg.seed.v != 0 || cfg.temperature.set {
		req.Options = &client.Options{}
		if cfg.seed.set && cfg.seed.v != 0 {
			req.Options.Seed = &cfg.seed.v
		}
		if cfg.temperature.set {
			req.Options.Temperature = &cfg.temperature.v
		}
	}
	err := c.Chat(ctx, req, p.event)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
		// The router's detail says more than "no node" when nodes serve
		// the model but none takes requests now (paused, busy, failing).
		reason := ""
		if _, why, ok := strings.Cut(ae.Detail, ": "); ok {
			reason = "no node can serve model " + client.Sanitize(model) + " now: " + why
		} else if strings.Contains(ae.Detail, "busy") {
			reason = ae.Detail
		}
		return &noNodeError{model: model, reason: reason}
	}
	return err
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

	thinking  bool // inside a [thinking] block on diag
	thinkNL   bool // the thinking text so far ends with a newline
	answered  bool // some answer text was written to out
	answerNL  bool // the answer so far ends with a newline
	truncated bool
}

func (p *answerPrinter) event(ev client.Event) error {
	text := client.Sanitize(ev.Content)
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
