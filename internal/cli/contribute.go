package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/agent"
	"github.com/idleclaw/idleclaw/internal/identity"
	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// runContribute shares the local Ollama's models with a router until ctx is
// canceled. Exit codes: 0 after a clean shutdown, 1 when Ollama cannot be
// used (unreachable, no models), 2 for bad usage.
func runContribute(ctx context.Context, args []string, env Env, s Streams) int {
	if len(args) > 0 {
		switch args[0] {
		case "pause", "resume", "status":
			return runContributeControl(ctx, args[0], args[1:], env, s)
		}
	}
	f := newFlags("contribute", env, s.Stderr)
	server := f.String("server", "IDLECLAW_SERVER", DefaultServer, "router: http(s)://host[:port], host:port for http, or ws(s)://host/ws/node; several, comma-separated, of one network: the node moves to the next when it loses its link")
	ollamaHost := f.String("ollama", "OLLAMA_HOST", "http://localhost:11434", "Ollama address: http://host:port, host:port, host or :port")
	maxConc := f.Int("max-concurrent", "IDLECLAW_MAX_CONCURRENT", wire.DefaultConcurrent, "requests served at once (1..10)")
	identityFile := f.String("identity", "IDLECLAW_IDENTITY", "", "the node's key file, made on first run (default: ~/.config/idleclaw/node.key); \"none\": a keyless node, as v1 nodes are")
	nodeID := f.String("node-id", "IDLECLAW_NODE_ID", "", "run keyless under this node id (a node with a key has the id derived from it)")
	drain := f.Duration("drain-grace", "IDLECLAW_DRAIN_GRACE", agent.DefaultDrainGrace, "time in-flight requests get to finish at shutdown")
	poll := f.Duration("models-poll", "IDLECLAW_MODELS_POLL", agent.DefaultModelsPollInterval, "how often Ollama's model list is checked for changes")
	maxCtx := f.Int("max-context", "IDLECLAW_MAX_CONTEXT", agent.DefaultMaxContext, "largest num_ctx (context window, tokens) a router may ask your Ollama for")
	maxPredict := f.Int("max-predict", "IDLECLAW_MAX_PREDICT", agent.DefaultMaxPredict, "longest answer (num_predict, tokens) a router may ask for; also the length of answers asked without a limit")
	maxKeep := f.Duration("max-keep-alive", "IDLECLAW_MAX_KEEP_ALIVE", agent.DefaultMaxKeepAlive, "longest a router may ask Ollama to keep a model loaded after a request")
	allowImages := f.Bool("allow-images", "IDLECLAW_ALLOW_IMAGES", false, "pass images to models with the vision capability (off: requests with images are refused)")
	models := f.String("models", "IDLECLAW_MODELS", "", "comma-separated models to share (default: every model Ollama has)")
	schedule := f.String("schedule", "IDLECLAW_SCHEDULE", "", "when to share, in this machine's time zone, e.g. \"Mon-Fri 22:00-08:00, Sat-Sun\" (default: always)")
	ownerPoll := f.Duration("owner-poll", "IDLECLAW_OWNER_POLL", 2*time.Second, "how often Ollama is watched for your own use of it (0: not watched)")
	ownerQuiet := f.Duration("owner-quiet", "IDLECLAW_OWNER_QUIET", 3*time.Minute, "how long after your last use of Ollama the node waits before serving again")
	ownerYield := f.String("owner-yield", "IDLECLAW_OWNER_YIELD", "finish", "when you use Ollama: \"finish\" lets the network's requests in flight finish, \"cancel\" ends them (the router moves those without a token)")
	ownerProcs := f.Bool("owner-processes", "IDLECLAW_OWNER_PROCESSES", true, "count an `ollama run` on this machine as your use (Linux)")
	ownerConns := f.Bool("owner-connections", "IDLECLAW_OWNER_CONNECTIONS", true, "count a new connection to a local Ollama that is not the node's as your use (Linux)")
	pauseCPU := f.Float("pause-cpu", "IDLECLAW_PAUSE_CPU", 0, "pause while other programs use more than this percent of the CPUs (0: off)")
	pauseGPU := f.Float("pause-gpu", "IDLECLAW_PAUSE_GPU", 0, "pause while the GPU is busier than this percent when the node has nothing to do (nvidia-smi; 0: off)")
	busyFor := f.Duration("busy-for", "IDLECLAW_BUSY_FOR", time.Minute, "how long the CPU or GPU must stay above (or below) its threshold before the node pauses (or serves again)")
	control := f.String("control", "IDLECLAW_CONTROL", "", "control socket for `contribute pause|resume|status` (default: $XDG_RUNTIME_DIR/idleclaw/contribute.sock or ~/.cache/idleclaw/contribute.sock; \"none\": off)")
	installSvc := f.Bool("install-service", "", false, "write a systemd user unit (Linux) or launchd agent (macOS) that runs contribute with these flags at login, and say how to start it")
	logFormat := f.String("log-format", "IDLECLAW_LOG_FORMAT", "text", "format of the structured logs: text or json (giving it turns them on, at info)")
	logLevel := f.String("log-level", "IDLECLAW_LOG_LEVEL", "", "structured logs on stderr from this level: debug, info, warn, error (default: none, only the lines on stdout)")
	verbose := f.Bool("verbose", "", false, "structured logs on stderr from debug up (same as --log-level debug)")
	f.BoolVar(verbose, "v", false, "same as --verbose")
	if code := f.parseOrExit(args, s.Stderr); code >= 0 {
		return code
	}
	bad := func(err error) int {
		fmt.Fprintln(s.Stderr, "idleclaw contribute:", err)
		return 2
	}
	if f.NArg() > 0 {
		return bad(fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	log, err := contributeLogger(s.Stderr, *logFormat, *logLevel, f.isGiven("log-format"), *verbose)
	if err != nil {
		return bad(err)
	}
	out := &lockedWriter{w: s.Stdout}
	// --server takes several routers of one network, comma-separated:
	// the node moves to the next when it loses the one it is linked to.
	var routerURL string
	var moreRouters []string
	for i, one := range strings.Split(*server, ",") {
		u, err := routerAddr(strings.TrimSpace(one), true)
		if err == nil {
			_, err = agent.NodeURL(u)
		}
		if err != nil {
			return bad(fmt.Errorf("invalid --server: %w", err))
		}
		if i == 0 {
			routerURL = u
		} else {
			moreRouters = append(moreRouters, u)
		}
	}
	base, err := ollama.BaseURL(*ollamaHost)
	if err != nil {
		return bad(fmt.Errorf("invalid --ollama: %w", err))
	}
	if *maxConc < wire.MinMaxConcurrent || *maxConc > wire.MaxMaxConcurrent {
		return bad(fmt.Errorf("invalid --max-concurrent %d: must be %d..%d", *maxConc, wire.MinMaxConcurrent, wire.MaxMaxConcurrent))
	}
	if len(*nodeID) > wire.MaxNodeID {
		return bad(fmt.Errorf("invalid --node-id: over %d characters", wire.MaxNodeID))
	}
	var key *identity.Key
	switch {
	case *nodeID != "" && *identityFile != "" && *identityFile != "none":
		return bad(fmt.Errorf("--node-id is for keyless nodes: a node with an identity key has the id derived from it"))
	case *nodeID != "":
		*identityFile = "none" // a chosen id: keyless, as before keys existed
	}
	if *identityFile != "none" {
		path := *identityFile
		if path == "" {
			if path, err = identity.DefaultPath(env); err != nil {
				fmt.Fprintln(s.Stderr, "idleclaw contribute: no home directory to keep a node identity in: running keyless (--identity FILE gives this node one)")
			}
		}
		if path != "" {
			var created bool
			key, created, err = identity.LoadOrCreate(path)
			if err != nil {
				fmt.Fprintln(s.Stderr, "idleclaw contribute:", err)
				return 1
			}
			if created {
				fmt.Fprintf(s.Stderr, "idleclaw contribute: created a node identity in %s (node id %s); keep it to keep this node's record\n", path, key.NodeID())
			}
		}
	}
	if *drain <= 0 {
		return bad(fmt.Errorf("invalid --drain-grace %s: must be positive", *drain))
	}
	if *poll <= 0 {
		return bad(fmt.Errorf("invalid --models-poll %s: must be positive", *poll))
	}
	if *maxCtx <= 0 || *maxPredict <= 0 || *maxKeep <= 0 {
		return bad(fmt.Errorf("invalid limits: --max-context, --max-predict and --max-keep-alive must be positive"))
	}
	sched, err := agent.ParseSchedule(*schedule)
	if err != nil {
		return bad(fmt.Errorf("invalid --schedule: %w", err))
	}
	if *ownerYield != "finish" && *ownerYield != "cancel" {
		return bad(fmt.Errorf("invalid --owner-yield %q: finish or cancel", *ownerYield))
	}
	if *pauseCPU < 0 || *pauseCPU > 100 || *pauseGPU < 0 || *pauseGPU > 100 {
		return bad(fmt.Errorf("invalid --pause-cpu or --pause-gpu: a percent, 0..100"))
	}
	if *installSvc {
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			return bad(fmt.Errorf("install service: cannot tell where this binary is: %w", err))
		}
		path, explain, err := installService(runtime.GOOS, env("HOME"), exe, serviceArgs(args))
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw contribute:", err)
			return 1
		}
		fmt.Fprintf(s.Stdout, "wrote %s\n%s\n", path, explain)
		return 0
	}
	ownerPollV := *ownerPoll
	if ownerPollV == 0 {
		ownerPollV = -1
	}

	noteDefaultRouter(f, s.Stderr, "sharing this machine's models with")
	a, err := agent.New(agent.Config{
		Server:             routerURL,
		Servers:            moreRouters,
		Ollama:             &ollama.Client{BaseURL: base}, // the agent sizes its pool to the slots
		Identity:           key,
		NodeID:             *nodeID,
		MaxConcurrent:      *maxConc,
		ModelsPollInterval: *poll,
		DrainGrace:         *drain,
		Limits:             agent.Limits{MaxContext: *maxCtx, MaxPredict: *maxPredict, MaxKeepAlive: *maxKeep, AllowImages: *allowImages},
		Owner:              agent.Owner{Poll: ownerPollV, Quiet: *ownerQuiet, Cancel: *ownerYield == "cancel", Processes: *ownerProcs, Connections: *ownerConns},
		Busy:               agent.Busy{CPU: *pauseCPU, GPU: *pauseGPU, For: *busyFor},
		Schedule:           sched,
		Models:             splitList(*models),
		JoinArrived:        true,
		AgentVersion:       Version,
		Logger:             log.With("component", "agent"),
		Out:                out,
		HTTPClient:         &http.Client{},
		Now:                time.Now,
	})
	if err != nil {
		return bad(err)
	}
	ctlPath := *control
	if ctlPath == "" {
		ctlPath = defaultControlPath(env)
	}
	var ctlDone chan struct{}
	if ctlPath != "" && ctlPath != "none" {
		ln, err := listenControl(ctlPath)
		if err != nil {
			fmt.Fprintln(s.Stderr, "idleclaw contribute:", err, "(running without it)")
		} else {
			cctx, stopCtl := context.WithCancel(context.Background())
			ctlDone = make(chan struct{})
			go func() {
				defer close(ctlDone)
				_ = a.ServeControl(cctx, ln)
				_ = os.Remove(ctlPath)
			}()
			defer func() { stopCtl(); <-ctlDone }()
		}
	}
	err = a.Run(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, agent.ErrNotARouter):
		// The agent's URL, in the form --server takes.
		u := strings.Replace(strings.Replace(a.URL(), "wss://", "https://", 1), "ws://", "http://", 1)
		fmt.Fprintf(s.Stderr, "idleclaw contribute: cannot connect: %s answered 404 Not Found: this is not an IdleClaw router (or not its node endpoint); check --server, e.g. --server http://127.0.0.1:8000\n", u)
	case errors.Is(err, agent.ErrOllamaUnreachable):
		log.Debug("startup failed", "err", err)
		fmt.Fprintf(s.Stderr, "idleclaw contribute: cannot reach Ollama at %s: is it running? (`ollama serve`)\n", base)
	case errors.Is(err, agent.ErrNoModels):
		fmt.Fprintln(s.Stderr, "idleclaw contribute: Ollama has no models: pull a model first: `ollama pull llama3.2:3b`")
	default:
		fmt.Fprintf(s.Stderr, "idleclaw contribute: %v\n", err)
	}
	return 1
}

// contributeLogger is contribute's structured logger. The node's human
// lines on stdout already say what happens, so by default there is none:
// --log-level, --verbose (-v) or --log-format turn the logs on, on stderr.
func contributeLogger(w io.Writer, format, level string, formatGiven, verbose bool) (*slog.Logger, error) {
	switch {
	case verbose:
		level = "debug"
	case level == "" && formatGiven:
		level = "info"
	}
	if level == "" {
		if format != "text" && format != "json" {
			return nil, fmt.Errorf("invalid log format %q (text or json)", format)
		}
		return slog.New(slog.DiscardHandler), nil
	}
	return newLogger(w, format, level)
}
