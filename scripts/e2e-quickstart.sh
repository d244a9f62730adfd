#!/usr/bin/env bash
# The README's quick start, run as written (issue 12): the commands of its
# "three terminals" block are read from README.md and run against a real
# Ollama serving the tiny model, with the idleclaw binary on PATH. The
# only thing set beside them is OLLAMA_HOST (--ollama's environment twin),
# since this Ollama is not on its default port. The router listens where
# the README says (127.0.0.1:8000). Called by scripts/e2e-ollama.sh; runs
# alone too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

e2e_init "quick start"

# The block: from "# terminal 1" to the end of its code fence.
awk '/^# terminal 1/{on=1} on&&/^```/{exit} on' README.md >"$work/block.sh"
grep -q '^idleclaw serve' "$work/block.sh" || fail "README has no quick-start block with idleclaw serve"
serve_cmd=$(grep '^idleclaw serve' "$work/block.sh")
contribute_cmd=$(grep '^idleclaw contribute' "$work/block.sh")
consume_cmd=$(grep '^idleclaw consume' "$work/block.sh")
status_cmd=$(grep '^idleclaw status' "$work/block.sh" | sed 's/[[:space:]]*#.*$//')
[ -n "$contribute_cmd" ] && [ -n "$consume_cmd" ] && [ -n "$status_cmd" ] || fail "the block lacks a contribute, consume or status line: $(cat "$work/block.sh")"

if curl -s -o /dev/null "http://127.0.0.1:8000/health"; then
	fail "something already listens on 127.0.0.1:8000, where the quick start's router goes"
fi

ollama_install
mkdir -p "$work/bin"
go build -o "$work/bin/idleclaw" ./cmd/idleclaw
export PATH="$work/bin:$PATH"
ollama_start "$work" "$shared/models"
pids+=("$OLLAMA_PID")
export OLLAMA_HOST=${OLLAMA_URL#http://}
# The defaults a newcomer has: keys, records and the control socket under
# a home of its own.
export HOME="$work/home" XDG_RUNTIME_DIR=
mkdir -p "$HOME"

# terminal 1
eval "exec $serve_cmd" >"$work/serve.out" 2>"$work/serve.log" &
pids+=("$!")
wait_for "http://127.0.0.1:8000/health" 30 || fail "\`$serve_cmd\` did not listen on 127.0.0.1:8000"
# terminal 2
eval "exec $contribute_cmd" >"$work/contribute.out" 2>"$work/contribute.log" &
pids+=("$!")
for _ in $(seq 1 100); do
	curl -sf http://127.0.0.1:8000/api/models | jq -e '.models | index("stories:latest") != null' >/dev/null 2>&1 && break
	sleep 0.2
done
# terminal 3
eval "$consume_cmd" >"$work/answer.txt" 2>"$work/consume.log" || fail "\`$consume_cmd\` failed: $(cat "$work/consume.log")"
[ -s "$work/answer.txt" ] || fail "\`$consume_cmd\` printed no answer"
eval "$status_cmd" >"$work/status.out" 2>"$work/status.log" || fail "\`$status_cmd\` failed: $(cat "$work/status.log")"
grep -q "stories:latest" "$work/status.out" || fail "status does not list stories: $(cat "$work/status.out")"
grep -q "idleclaw contribute" "$work/serve.out" || fail "serve did not print what to run next"
ok "as written: $(wc -c <"$work/answer.txt") bytes answered ($(head -c 50 "$work/answer.txt" | tr '\n' ' ')...); status lists stories:latest"
