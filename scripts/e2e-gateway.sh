#!/usr/bin/env bash
# The fallback gateway against a real Ollama (issue 15): a pinned Ollama
# serves the tiny model; `idleclaw serve` and `idleclaw contribute` make
# the network; a fake paid provider (internal/providertest/cmd/
# fakeprovider) stands for the user's own API; `idleclaw gateway` sits in
# front of both. While the provider has credit the gateway's answer is the
# provider's; once the provider answers OpenAI's 429 insufficient_quota,
# the gateway's answer, streamed and not, equals Ollama's direct answer to
# the same request, and the next requests skip the provider; when the
# credit is back, a probe finds it. Every answer says who served it.
# Runs alone; needs Go, gcc, node, curl and jq (as scripts/e2e-ollama.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

e2e_init "gateway"

ollama_install
go build -o "$work/idleclaw" ./cmd/idleclaw
go build -o "$work/fakeprovider" ./internal/providertest/cmd/fakeprovider
ic="$work/idleclaw"
ollama_start "$work" "$shared/models"
pids+=("$OLLAMA_PID")

# The network: a router that puts this system prompt first (so that the
# direct request below can be the same request), and one node that does
# not watch for its owner (this script asks Ollama directly).
system="You are a storyteller."
port=$(free_port)
router="http://127.0.0.1:$port"
"$ic" serve --records none --listen "127.0.0.1:$port" --system-prompt "$system" --log-format json \
	--max-concurrent-chat-per-ip 0 --rate-limit-chat-rpm 0 --rate-limit-default-rpm 0 >"$work/serve.out" 2>"$work/serve.log" &
pids+=("$!")
wait_for "$router/health" 30 || fail "router did not start"
"$ic" contribute --owner-poll 0 --node-id gateway-e2e --server "$router" --ollama "$OLLAMA_URL" \
	>"$work/contribute.out" 2>"$work/contribute.log" &
pids+=("$!")
for _ in $(seq 1 100); do
	curl -sf "$router/api/models" | jq -e '.models | index("stories:latest") != null' >/dev/null 2>&1 && break
	sleep 0.2
done
curl -sf "$router/api/models" | jq -e '.models | index("stories:latest") != null' >/dev/null || fail "the node did not register"
ok "network up: router $router, one node over Ollama $OLLAMA_VERSION"

# The user's provider, with credit for now.
key="sk-e2e-gateway-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
pport=$(free_port)
provider="http://127.0.0.1:$pport"
"$work/fakeprovider" --listen "127.0.0.1:$pport" --mode ok --key "$key" >"$work/provider.out" 2>"$work/provider.log" &
pids+=("$!")
wait_for_provider() {
	for _ in $(seq 1 50); do
		curl -s -o /dev/null -H "Authorization: Bearer $key" "$provider/v1/models" && return 0
		sleep 0.2
	done
	return 1
}
wait_for_provider || fail "fake provider did not start"
provider_calls() { curl -sf "$provider/control/count"; }

# The gateway: probes every $probe s in a quota cooldown, so that the
# script sees the provider come back without waiting ten minutes.
probe=15
gport=$(free_port)
gw="http://127.0.0.1:$gport"
IDLECLAW_PROVIDER_KEY="$key" "$ic" gateway --listen "127.0.0.1:$gport" --provider-url "$provider/v1" --network "$router" \
	--map gpt-4o-mini=stories --probe-every "${probe}s" >"$work/gateway.out" 2>"$work/gateway.log" &
pids+=("$!")
wait_for "$gw/health" 30 || fail "gateway did not start"
grep -q "OPENAI_BASE_URL=$gw/v1" "$work/gateway.out" || fail "the gateway does not say where to point programs"
ok "gateway up at $gw/v1 in front of the fake provider and the network"

prompt="Once upon a time"
request() { # request STREAM: the client's request, as an OpenAI SDK sends it
	jq -nc --arg p "$prompt" --argjson s "$1" '{model:"gpt-4o-mini",messages:[{role:"user",content:$p}],stream:$s,seed:42,temperature:0}'
}
# chat NAME STREAM: POST to the gateway; headers in NAME.h, body in NAME.body.
chat() {
	curl -sS -N -D "$work/$1.h" -o "$work/$1.body" -H "Content-Type: application/json" -H "Authorization: Bearer sk-placeholder" \
		"$gw/v1/chat/completions" -d "$(request "$2")" || fail "request $1"
}
route() { tr -d '\r' <"$work/$1.h" | sed -n 's/^[Xx]-[Ii]dle[Cc]law-[Rr]oute: //p'; }
reason() { tr -d '\r' <"$work/$1.h" | sed -n 's/^[Xx]-[Ii]dle[Cc]law-[Rr]eason: //p'; }
text_of() { jq -j '.choices[0].message.content' "$work/$1.body"; }
stream_text() { sed -n 's/^data: \({.*\)$/\1/p' "$work/$1.body" | jq -j '.choices[0].delta.content // empty'; }

# 1. With credit: the provider answers.
chat credit false
[ "$(route credit)" = provider ] || fail "with credit, route $(route credit) ($(reason credit))"
[ "$(text_of credit)" = "Echo: $prompt" ] || fail "with credit, the answer is $(text_of credit)"
ok "with credit: X-IdleClaw-Route: provider ($(reason credit)): $(text_of credit)"

# The answer Ollama gives directly to the request the network builds: the
# router's system prompt first, the client's seed and temperature.
direct=$(jq -nc --arg s "$system" --arg p "$prompt" '{model:"stories",messages:[{role:"system",content:$s},{role:"user",content:$p}],stream:false,options:{seed:42,temperature:0}}')
curl -sf "$OLLAMA_URL/api/chat" -d "$direct" | jq -j '.message.content' >"$work/direct.txt" || fail "direct Ollama call"
[ -s "$work/direct.txt" ] || fail "Ollama answered nothing"

# 2. The credit runs out: OpenAI's 429 insufficient_quota.
curl -sf -X POST "$provider/control/mode" -d insufficient_quota >/dev/null || fail "switch the provider"
quota_at=$(date +%s%3N)
chat empty false
[ "$(route empty)" = network ] || fail "out of credit, route $(route empty) ($(reason empty)): $(cat "$work/empty.body")"
reason empty | grep -q "out of credit (429 insufficient_quota)" || fail "reason: $(reason empty)"
text_of empty >"$work/empty.txt"
cmp -s "$work/direct.txt" "$work/empty.txt" || fail "the gateway's answer differs from Ollama's direct one:
direct:  $(cat "$work/direct.txt")
gateway: $(cat "$work/empty.txt")"
ok "out of credit: X-IdleClaw-Route: network ($(reason empty)); the answer equals Ollama's direct answer ($(wc -c <"$work/direct.txt") bytes): $(head -c 60 "$work/direct.txt")..."

# 3. Streamed, in the cooldown: straight to the network, the same answer.
# (On a machine so slow that the probe period is over already, this
# request is the probe, which finds the credit still gone.)
calls_before=$(provider_calls)
since=$(($(date +%s%3N) - quota_at))
chat stream true
[ "$(route stream)" = network ] || fail "streamed in the cooldown, route $(route stream)"
if [ "$since" -lt $((probe * 1000 - 1000)) ]; then
	reason stream | grep -q "cooling down until" || fail "streamed reason: $(reason stream)"
	[ "$(provider_calls)" = "$calls_before" ] || fail "the provider was asked in the cooldown"
elif [ "$since" -gt $((probe * 1000 + 1000)) ]; then
	reason stream | grep -q "probe: provider still out of credit" || fail "streamed reason: $(reason stream)"
fi
grep -q '^data: \[DONE\]' "$work/stream.body" || fail "the stream has no [DONE]"
stream_text stream >"$work/stream.txt"
cmp -s "$work/direct.txt" "$work/stream.txt" || fail "the streamed answer differs from Ollama's direct one: $(cat "$work/stream.txt")"
ok "streamed in the cooldown: X-IdleClaw-Route: network ($(reason stream)); the same answer, token for token"

# 4. The credit is back: the next probe finds it. /health says when the
# next probe is due.
curl -sf -X POST "$provider/control/mode" -d ok >/dev/null || fail "switch the provider back"
next=$(curl -sf "$gw/health" | jq -r '.provider.next_probe // empty | sub("\\.[0-9]+"; "") | fromdateiso8601')
[ -n "$next" ] || fail "/health names no next probe: $(curl -s "$gw/health")"
while [ "$(date +%s)" -le "$next" ]; do sleep 0.2; done
chat back false
[ "$(route back)" = provider ] || fail "credit back, route $(route back) ($(reason back))"
reason back | grep -q "probe" || fail "credit back, reason $(reason back)"
ok "credit back: X-IdleClaw-Route: provider ($(reason back))"

# One line per request, with the route and why; no key anywhere.
[ "$(grep -c ' route=' "$work/gateway.out")" = 4 ] || fail "want 4 request lines: $(grep ' route=' "$work/gateway.out")"
grep -q 'route=network why="provider out of credit (429 insufficient_quota), cooling down 1h0m0s" model=gpt-4o-mini->stories status=200' "$work/gateway.out" ||
	fail "no out-of-credit line: $(cat "$work/gateway.out")"
if grep -q "$key" "$work/gateway.out" "$work/gateway.log" "$work/serve.log" "$work/contribute.log"; then fail "the provider key is in a log"; fi
ok "request lines:"
grep ' route=' "$work/gateway.out" | sed 's/^/    /'
ok "against a real Ollama"
