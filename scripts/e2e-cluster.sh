#!/usr/bin/env bash
# Two routers on NATS against a real Ollama (issue 17): a real nats-server
# (built from the Go module), routers A and B joined through it, and one
# node, on B only, in front of a real Ollama serving the tiny model. A
# consumer at A is served by B's node over NATS, and the answer equals the
# one Ollama gives directly to the same request. Called by
# scripts/e2e-ollama.sh; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

e2e_init "cluster"

ollama_install
go build -o "$work/idleclaw" ./cmd/idleclaw
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
ic="$work/idleclaw"
ollama_start "$work" "$shared/models"
pids+=("$OLLAMA_PID")

nats_port=$(free_port)
"$work/nats-server" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
	sleep 0.1
done
nats="nats://127.0.0.1:$nats_port"

serve() { # id port
	"$ic" serve --records none --listen "127.0.0.1:$2" --nats "$nats" --router-id "$1" --system-prompt - \
		--canary-share 0 --rate-limit-default-rpm 0 --log-format json >"$work/serve-$1.out" 2>"$work/serve-$1.log" &
	pids+=("$!")
	wait_for "http://127.0.0.1:$2/health" 30 || fail "router $1 did not start"
}
port_a=$(free_port)
serve a "$port_a"
port_b=$(free_port)
serve b "$port_b"
a="http://127.0.0.1:$port_a"
b="http://127.0.0.1:$port_b"

"$ic" contribute --owner-poll 0 --identity none --control none --server "$b" --ollama "$OLLAMA_URL" \
	>"$work/contribute.out" 2>"$work/contribute.log" &
pids+=("$!")
# A lists the model once B's share of the view reaches it.
for _ in $(seq 1 150); do
	curl -sf "$a/api/models" | jq -e '.models | index("stories:latest") != null' >/dev/null 2>&1 && break
	sleep 0.2
done
curl -sf "$a/api/models" | jq -e '.models | index("stories:latest") != null' >/dev/null ||
	fail "router a never listed the model of router b's node: $(curl -s "$a/api/models")"
[ "$(curl -sf "$a/health" | jq .node_count)" = 1 ] || fail "router a does not count router b's node: $(curl -s "$a/health")"

prompt="Once upon a time"
"$ic" consume --server "$a" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/network.txt" 2>"$work/consume.err" ||
	fail "consume through router a: $(cat "$work/consume.err")"
body=$(jq -nc --arg p "$prompt" '{model:"stories",messages:[{role:"user",content:$p}],stream:true,options:{seed:42,temperature:0}}')
curl -sf "$OLLAMA_URL/api/chat" -d "$body" | jq -j 'select(.done==false) | .message.content' >"$work/direct.txt"
[ -s "$work/direct.txt" ] || fail "Ollama answered nothing"
if ! diff <(cat "$work/direct.txt"; echo) "$work/network.txt" >"$work/diff.txt" && ! diff "$work/direct.txt" "$work/network.txt" >/dev/null; then
	fail "the answer through router a differs from Ollama's: $(cat "$work/diff.txt")"
fi
grep -q '"msg":"chat"' "$work/serve-b.log" || fail "router b did not run the request"
grep -q "stories:latest" "$work/contribute.out" || fail "the node did not print its request"
ok "a consumer at router a, served by router b's node over NATS, got Ollama's direct answer ($(wc -c <"$work/direct.txt") bytes)"
