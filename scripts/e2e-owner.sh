#!/usr/bin/env bash
# Owner first against a real Ollama (issue 16): a node serves the network
# from a real Ollama; the machine's "owner" then asks that Ollama directly.
# The node must pause within PAUSE_WITHIN seconds (it looks every 500 ms
# here), say so, become unservable on the router, take no network work
# while paused (checked from the router's side and the node's counters),
# let a network request in flight finish whole (--owner-yield finish), and
# serve again once the owner has been quiet for --owner-quiet (4 s here).
# Called by scripts/e2e-ollama.sh; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

PAUSE_WITHIN=${PAUSE_WITHIN:-3}
QUIET=4

e2e_init "owner"
now_ms() { date +%s%3N; }

ollama_install
go build -o "$work/idleclaw" ./cmd/idleclaw
ic="$work/idleclaw"
ollama_start "$work" "$shared/models"
pids+=("$OLLAMA_PID")

port=$(free_port)
router="http://127.0.0.1:$port"
"$ic" serve --records none --listen "127.0.0.1:$port" --log-format json \
	--max-concurrent-chat-per-ip 0 --rate-limit-chat-rpm 0 --rate-limit-default-rpm 0 >"$work/serve.out" 2>"$work/serve.log" &
pids+=("$!")
wait_for "$router/health" 30 || fail "router did not start"

sock="$work/control.sock"
"$ic" contribute --node-id owner-e2e --server "$router" --ollama "$OLLAMA_URL" \
	--owner-poll 500ms --owner-quiet "${QUIET}s" --owner-yield finish --control "$sock" \
	>"$work/contribute.out" 2>"$work/contribute.log" &
pids+=("$!")

status() { "$ic" contribute status --control "$sock" --json 2>/dev/null; }
servable() { curl -sf "$router/api/network" | jq '[.models[].servable] | add // 0'; }
# until SECONDS_MAX CMD...: run CMD every 100 ms until it succeeds.
until_ok() {
	local deadline=$(($(now_ms) + $1 * 1000))
	shift
	until "$@"; do
		[ "$(now_ms)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}
state_is() { [ "$(status | jq -r .state)" = "$1" ]; }
in_flight_is() { [ "$(status | jq .in_flight)" = "$1" ]; }
servable_is() { [ "$(servable)" = "$1" ]; }
requests() { status | jq .total.requests; }
owner_ask() { # an owner's own request straight to Ollama, N tokens
	curl -sf "$OLLAMA_URL/api/chat" -d "$(jq -nc --argjson n "$1" '{model:"stories",messages:[{role:"user",content:"Once upon a time"}],stream:false,options:{num_predict:$n}}')" >/dev/null
}

until_ok 30 state_is serving || fail "the node never served: $(status)"
until_ok 10 servable_is 1 || fail "the router never saw the node servable"
"$ic" consume --server "$router" --model stories --prompt "Once upon a time" >"$work/before.txt" 2>"$work/consume.err" ||
	fail "consume before the owner came: $(cat "$work/consume.err")"
ok "the node serves the network ($(wc -c <"$work/before.txt") bytes answered)"

# 1. The owner asks Ollama while the node is idle.
t0=$(now_ms)
owner_ask 16 || fail "the owner's request to Ollama"
until_ok "$PAUSE_WITHIN" state_is paused || fail "the node did not pause within ${PAUSE_WITHIN}s of the owner's request: $(status)"
paused_ms=$(($(now_ms) - t0))
until_ok 2 grep -q "paused: " "$work/contribute.out" || fail "the node did not print that it paused"
until_ok 2 servable_is 0 || fail "the router still counts the paused node servable"
ok "owner request straight to Ollama: the node paused after ${paused_ms} ms ($(status | jq -c .why)) and the router counts it unservable"

# 2. While paused the router sends it nothing: a consumer fails at once
# with the reason, and the node's count of requests does not move.
before=$(requests)
t0=$(now_ms)
if "$ic" consume --server "$router" --model stories --prompt "Once upon a time" >/dev/null 2>"$work/paused.err"; then
	fail "a request while the only node is paused succeeded"
fi
refused_ms=$(($(now_ms) - t0))
[ "$refused_ms" -lt 3000 ] || fail "a request while paused took ${refused_ms} ms to fail"
grep -q "now" "$work/paused.err" || fail "the consumer was not told why: $(cat "$work/paused.err")"
[ "$(requests)" = "$before" ] || fail "the paused node was sent work ($before → $(requests))"
grep -q '"outcome":"unavailable"' "$work/serve.log" || fail "the router did not log the request as unavailable"
ok "while paused: a consumer fails after ${refused_ms} ms with \"$(head -1 "$work/paused.err")\"; the node was sent nothing"

# 3. After the quiet period the node serves again by itself.
t0=$(now_ms)
until_ok $((QUIET + 4)) state_is serving || fail "the node did not resume after ${QUIET}s of quiet: $(status)"
resumed_ms=$(($(now_ms) - t0))
until_ok 2 grep -q "serving the network again" "$work/contribute.out" || fail "the node did not print that it serves again"
until_ok 5 servable_is 1 || fail "the router did not see the node servable again"
"$ic" consume --server "$router" --model stories --prompt "Once upon a time" >"$work/after.txt" 2>"$work/consume.err" ||
	fail "consume after the quiet period: $(cat "$work/consume.err")"
cmp -s "$work/before.txt" "$work/after.txt" || fail "the answer after the pause differs"
ok "the node served again ${resumed_ms} ms after the pause was noticed (quiet ${QUIET}s), same answer"

# 4. The owner asks while a network request is in flight: the node
# pauses, and the request finishes whole (finish mode). The request's own
# stop sequence replaces the model's, so that it runs to max_tokens
# (seconds) instead of stopping at the story's end.
curl -sfN "$router/v1/chat/completions" -H 'Content-Type: application/json' \
	-d '{"model":"stories","stream":true,"max_tokens":1500,"stop":["never-in-a-story"],"messages":[{"role":"user","content":"Once upon a time"}]}' \
	>"$work/inflight.sse" 2>"$work/inflight.err" &
inflight=$!
until_ok 10 in_flight_is 1 || fail "the network request never reached the node: $(status) $(cat "$work/inflight.err"; tail -c 200 "$work/inflight.sse")"
t0=$(now_ms)
owner_ask 300 &
owner=$!
until_ok "$PAUSE_WITHIN" state_is paused || fail "the node did not pause within ${PAUSE_WITHIN}s of an overlapping owner request: $(status)"
overlap_ms=$(($(now_ms) - t0))
wait "$owner" || fail "the owner's request during the network's"
wait "$inflight" || fail "the network request in flight failed: $(cat "$work/inflight.err")"
grep -qE '"finish_reason":"(stop|length)"' "$work/inflight.sse" && grep -q '^data: \[DONE\]' "$work/inflight.sse" ||
	fail "the network request in flight did not finish whole: $(tail -c 300 "$work/inflight.sse")"
chunks=$(grep -c '"content":"' "$work/inflight.sse" || true)
ok "owner request overlapping the network's: paused after ${overlap_ms} ms; the request in flight finished whole ($chunks chunks, $(grep -oE '"finish_reason":"[a-z]+"' "$work/inflight.sse"))"
until_ok $((QUIET + 4)) state_is serving || fail "the node did not resume after the overlapping request"
ok "served again after the quiet period; node totals $(status | jq -c .total)"
