#!/usr/bin/env bash
# End to end against a real Ollama: a pinned Ollama serves the tiny model from
# ../shared/models; `idleclaw serve` and `idleclaw contribute` run as separate
# processes; `idleclaw status` and `idleclaw consume` check the network, and
# the answer through the network must equal, token for token, the answer
# Ollama gives directly to the same request.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -n "${OLLAMA_PID:-}" ] && kill "$OLLAMA_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	if [ "${keep_logs:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	keep_logs=1
	for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 40 "$f" >&2; done
	exit 1
}
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

ollama_install
go build -o "$work/idleclaw" ./cmd/idleclaw
ic="$work/idleclaw"
ollama_start "$work" "$shared/models"
ok "real Ollama $OLLAMA_VERSION serving the tiny model at $OLLAMA_URL"

system="You are a storyteller."
port=$(free_port)
router="http://127.0.0.1:$port"
"$ic" serve --listen "127.0.0.1:$port" --system-prompt "$system" --log-format json >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
wait_for "$router/health" 30 || fail "router did not start"

# Before any node: consume fails clearly.
if "$ic" consume --server "$router" --model stories --prompt "hi" >"$work/none.out" 2>"$work/none.err"; then
	fail "consume succeeded with no node"
fi
grep -q "stories" "$work/none.err" || fail "no-node error does not name the model: $(cat "$work/none.err")"
ok "consume with no node fails with: $(head -1 "$work/none.err")"

"$ic" contribute --server "$router" --ollama "$OLLAMA_URL" >"$work/contribute.out" 2>"$work/contribute.log" &
node_pid=$!
pids+=("$node_pid")
for _ in $(seq 1 100); do
	"$ic" status --server "$router" --json >"$work/status.json" 2>/dev/null && jq -e '.models | map(.name) | index("stories:latest")' "$work/status.json" >/dev/null && break
	sleep 0.2
done
jq -e '.reachable == true and .node_count == 1 and .models[0].name == "stories:latest"' "$work/status.json" >/dev/null || fail "status: $(cat "$work/status.json")"
ok "status --json: $(jq -c . "$work/status.json")"
"$ic" status --server "$router" >"$work/status.txt" || fail "status (human) failed"
grep -q "stories:latest" "$work/status.txt" || fail "status output: $(cat "$work/status.txt")"
ok "status (human) lists stories:latest"
grep -q "stories:latest" "$work/contribute.out" || fail "contribute did not print its models"
ok "contribute prints its models: $(grep stories "$work/contribute.out" | head -1)"

prompt="Once upon a time"
# Through the network, with the CLI.
"$ic" consume --server "$router" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/network.txt" 2>"$work/consume.err" || fail "consume: $(cat "$work/consume.err")"
# Directly against Ollama, the same request the router builds.
body=$(jq -nc --arg s "$system" --arg p "$prompt" '{model:"stories",messages:[{role:"system",content:$s},{role:"user",content:$p}],stream:true,options:{seed:42,temperature:0}}')
curl -sf "$OLLAMA_URL/api/chat" -d "$body" >"$work/direct.ndjson" || fail "direct Ollama call"
jq -j 'select(.done==false) | .message.content' "$work/direct.ndjson" >"$work/direct.txt"
direct_tokens=$(jq -s '[.[] | select(.done==false and .message.content != "")] | length' "$work/direct.ndjson")
direct_eval=$(jq -s 'map(select(.done)) | .[0].eval_count' "$work/direct.ndjson")
[ -s "$work/direct.txt" ] || fail "Ollama answered nothing"
# consume ends the answer with a newline if it lacked one.
if ! diff <(cat "$work/direct.txt"; echo) "$work/network.txt" >"$work/diff.txt" && ! diff "$work/direct.txt" "$work/network.txt" >/dev/null; then
	fail "network answer differs from direct answer: $(cat "$work/diff.txt")"
fi
ok "consume answer equals Ollama's direct answer ($(wc -c <"$work/direct.txt") bytes, $direct_tokens tokens): $(head -c 60 "$work/direct.txt")..."

# The raw SSE stream: same tokens, same count, usage from the node's metrics.
curl -sfN "$router/api/chat" -d "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}],\"options\":{\"seed\":42,\"temperature\":0}}" >"$work/network.sse" || fail "SSE request"
grep -q '^data: \[DONE\]$' "$work/network.sse" || fail "SSE without [DONE]"
sed -n 's/^data: \({.*\)$/\1/p' "$work/network.sse" >"$work/network.events"
jq -j '.choices[0].delta.content // empty' "$work/network.events" >"$work/sse.txt"
cmp -s "$work/direct.txt" "$work/sse.txt" || fail "SSE text differs from direct"
usage=$(jq -s 'map(select(.usage)) | .[0].usage.completion_tokens' "$work/network.events")
[ "$usage" = "$direct_eval" ] || fail "usage.completion_tokens $usage != Ollama eval_count $direct_eval"
ok "SSE stream: same text, usage.completion_tokens=$usage equals Ollama's eval_count"

# Default model (models[0]) and stdin prompt.
echo "$prompt" | "$ic" consume --server "$router" --prompt - --seed 42 --temperature 0 >"$work/default.txt" 2>"$work/default.err" || fail "consume default model: $(cat "$work/default.err")"
cmp -s "$work/network.txt" "$work/default.txt" || fail "default-model answer differs"
ok "consume without --model uses models[0] and reads --prompt - from stdin"

# Unknown model: exit 1 and the list of models.
if "$ic" consume --server "$router" --model nosuch --prompt hi >/dev/null 2>"$work/nosuch.err"; then fail "unknown model succeeded"; fi
grep -q "stories:latest" "$work/nosuch.err" || fail "unknown-model error lacks the model list: $(cat "$work/nosuch.err")"
ok "unknown model: $(head -1 "$work/nosuch.err")"

# Clean shutdown of both processes.
kill -TERM "$node_pid"
wait "$node_pid" && node_rc=0 || node_rc=$?
[ "$node_rc" = 0 ] || fail "contribute exited $node_rc on SIGTERM"
ok "contribute exits 0 on SIGTERM"
kill -TERM "$serve_pid"
wait "$serve_pid" && serve_rc=0 || serve_rc=$?
[ "$serve_rc" = 0 ] || fail "serve exited $serve_rc on SIGTERM"
ok "serve exits 0 on SIGTERM"
if "$ic" status --server "$router" >/dev/null 2>&1; then fail "status succeeded with the router down"; fi
ok "status exits 1 when the router is unreachable"
grep -qi "$prompt" "$work/serve.log" "$work/contribute.log" "$work/contribute.out" && fail "prompt text found in logs"
grep -qF "$(head -c 30 "$work/direct.txt")" "$work/serve.log" "$work/contribute.log" "$work/contribute.out" && fail "answer text found in logs"
ok "no prompt or answer text in router or node logs"
echo "$pass passed, 0 failed"
