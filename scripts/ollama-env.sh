# shellcheck shell=bash
# Sourced by scripts that need a real Ollama: builds a pinned Ollama with the
# Go toolchain (cached outside the work tree, so a fresh clone on the same
# machine does not rebuild it), serves it on a loopback port with a private
# model store, and loads the tiny model from ../shared/models.
#
# After `ollama_start`, OLLAMA_URL is set and OLLAMA_PID names the server.

OLLAMA_VERSION="${OLLAMA_VERSION:-v0.9.6}"
IDLECLAW_CACHE="${IDLECLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idleclaw}"
OLLAMA_BIN="${OLLAMA_BIN:-$IDLECLAW_CACHE/ollama-$OLLAMA_VERSION/ollama}"

ollama_install() {
	if [ -x "$OLLAMA_BIN" ]; then
		return 0
	fi
	echo "building Ollama $OLLAMA_VERSION with the Go toolchain (about 5 minutes on 2 cores)..." >&2
	mkdir -p "$(dirname "$OLLAMA_BIN")"
	GOBIN="$(dirname "$OLLAMA_BIN")" GOFLAGS=-buildvcs=false go install "github.com/ollama/ollama@$OLLAMA_VERSION"
}

# free_port prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_for URL [seconds]: poll until URL answers 2xx.
wait_for() {
	local url=$1 deadline=$((SECONDS + ${2:-60}))
	until curl -sf -o /dev/null "$url"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out waiting for $url" >&2
			return 1
		fi
		sleep 0.2
	done
}

# ollama_start WORKDIR MODELS_DIR: serve Ollama and create the tiny model "stories".
ollama_start() {
	local work=$1 models=$2
	local port
	port=$(free_port)
	OLLAMA_URL="http://127.0.0.1:$port"
	mkdir -p "$work/ollama-models"
	OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$work/ollama-models" OLLAMA_NUM_PARALLEL="${OLLAMA_NUM_PARALLEL:-2}" \
		"$OLLAMA_BIN" serve >"$work/ollama.log" 2>&1 &
	OLLAMA_PID=$!
	wait_for "$OLLAMA_URL/api/version" 60
	(cd "$models" && OLLAMA_HOST="127.0.0.1:$port" "$OLLAMA_BIN" create stories -f Modelfile >"$work/ollama-create.log" 2>&1)
	export OLLAMA_URL OLLAMA_PID
}

# e2e_init NAME: what every end-to-end script starts with: a work
# directory ($work), processes to stop at exit (add their pids to
# "pids"), and fail / ok lines that name the part ("FAIL: NAME: ...").
# fail shows the tails of $work's *.log and *.out and keeps them.
e2e_init() {
	e2e_name=$1
	work=$(mktemp -d)
	pids=()
	trap e2e_cleanup EXIT
}

e2e_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${keep_logs:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}

fail() {
	echo "FAIL: $e2e_name: $*" >&2
	keep_logs=1
	for f in "$work"/*.log "$work"/*.out; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
	exit 1
}

ok() { echo "ok: $e2e_name: $*"; }
