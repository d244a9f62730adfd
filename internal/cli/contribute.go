package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	f := newFlags("contribute", env, s.Stderr)
	server := f.String("server", "IDLECLAW_SERVER", DefaultServer, "router URL: http(s)://host or ws(s)://host/ws/node")
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
	logFormat := f.String("log-format", "IDLECLAW_LOG_FORMAT", "text", "log format: text or json")
	logLevel := f.String("log-level", "IDLECLAW_LOG_LEVEL", "info", "log level: debug, info, warn, error")
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
	log, err := newLogger(s.Stderr, *logFormat, *logLevel)
	if err != nil {
		return bad(err)
	}
	if _, err := agent.NodeURL(*server); err != nil {
		return bad(fmt.Errorf("invalid --server: %w", err))
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

	a, err := agent.New(agent.Config{
		Server:             *server,
		Ollama:             &ollama.Client{BaseURL: base}, // the agent sizes its pool to the slots
		Identity:           key,
		NodeID:             *nodeID,
		MaxConcurrent:      *maxConc,
		ModelsPollInterval: *poll,
		DrainGrace:         *drain,
		Limits:             agent.Limits{MaxContext: *maxCtx, MaxPredict: *maxPredict, MaxKeepAlive: *maxKeep, AllowImages: *allowImages},
		AgentVersion:       Version,
		Logger:             log.With("component", "agent"),
		Out:                s.Stdout,
		HTTPClient:         &http.Client{},
		Now:                time.Now,
	})
	if err != nil {
		return bad(err)
	}
	err = a.Run(ctx)
	switch {
	case err == nil:
		return 0
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
