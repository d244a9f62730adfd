#!/usr/bin/env bash
# End to end against a real Ollama: a pinned Ollama serves the tiny model from
# ../shared/models; `idleclaw serve` and `idleclaw contribute` run as separate
# processes; `idleclaw status` and `idleclaw consume` check the network, and
# the answer through the network must equal, token for token, the answer
# Ollama gives directly to the same request. Then the failures a real Ollama
# can provoke: Ollama frozen, stopped and restarted under the node, and
# Ollama's own 503 when its queue is full. Last, the bench's overhead
# comparison against this Ollama (a smoke run, no timing asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	# SIGCONT first: a frozen Ollama (failure scenario a1) ignores SIGTERM.
	[ -n "${OLLAMA_PID:-}" ] && kill -CONT "$OLLAMA_PID" 2>/dev/null && kill "$OLLAMA_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	if [ "${keep_logs:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	keep_logs=1
	for f in "$work"/*.log "$work"/*.out; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }; done
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
# A short first-token timeout, so that a frozen Ollama is noticed in seconds
# (the failure scenarios below); no per-IP chat limits, since every consumer
# here is 127.0.0.1 and the 503 scenario sends four requests at once; no
# limit on reads either, since the scenarios poll /health and /api/models
# from that one address (60 a minute would answer 429 to a poll).
"$ic" serve --records "$work/router.db" --listen "127.0.0.1:$port" --system-prompt "$system" --log-format json \
	--first-token-timeout 10s --max-concurrent-chat-per-ip 0 --rate-limit-chat-rpm 0 --rate-limit-default-rpm 0 >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
wait_for "$router/health" 30 || fail "router did not start"

# Before any node: consume fails clearly.
if "$ic" consume --server "$router" --model stories --prompt "hi" >"$work/none.out" 2>"$work/none.err"; then
	fail "consume succeeded with no node"
fi
grep -q "stories" "$work/none.err" || fail "no-node error does not name the model: $(cat "$work/none.err")"
ok "consume with no node fails with: $(head -1 "$work/none.err")"

# The node looks at its Ollama every second (default 30 s), so that the
# failure scenarios below see it notice Ollama going and coming back quickly.
# This script asks Ollama directly to compare answers, which a node that
# watches for its owner (scripts/e2e-owner.sh) would take for the owner's
# use and pause: here the nodes do not watch (--owner-poll 0).
"$ic" contribute --owner-poll 0 --identity "$work/node1.key" --server "$router" --ollama "$OLLAMA_URL" --models-poll 1s >"$work/contribute.out" 2>"$work/contribute.log" &
node_pid=$!
pids+=("$node_pid")
for _ in $(seq 1 100); do
	"$ic" status --server "$router" --json >"$work/status.json" 2>/dev/null && jq -e '.node_count == 1 and (.models | map(.name) | index("stories:latest") != null)' "$work/status.json" >/dev/null && break
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

# The official OpenAI and Ollama client libraries (clients/), unchanged, against the
# network and the real model. stories cannot call tools: with IDLECLAW_TOOL_MODEL unset
# the tool-call tests skip and say why (the fake-Ollama run in internal/cli/clients_test.go
# covers them); ROUTER_URL_LIMITED unset skips the 429 test.
[ -d clients/node_modules ] || bash scripts/clients.sh
ROUTER_URL="$router" IDLECLAW_MODEL=stories node --test clients/ >"$work/clients.log" 2>&1 ||
	fail "client libraries: $(grep -E '^not ok|^# (pass|fail)' "$work/clients.log" | head -20)"
ok "official openai/ollama clients against the real model: $(grep -E '^# (pass|fail|skipped) ' "$work/clients.log" | tr '\n' ' ')"

# ---- Failure scenarios the real Ollama can provoke ----
now_ms() { date +%s%3N; }
# forget PID: a process that was waited for is no longer killed at cleanup.
forget() {
	local keep=() p
	for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]}")
}
registrations() { grep -c '"msg":"node registered"' "$work/serve.log" || true; }
node_count() { curl -sf "${1:-$router}/health" | jq .node_count; } # [router URL]

# (a1) Ollama frozen under the node (SIGSTOP): the node's call hangs, the
# router's first-token timeout (10 s here) ends the request with a clear
# error instead of a hang; the node stays registered and serves again once
# Ollama continues.
kill -STOP "$OLLAMA_PID"
t0=$(now_ms)
if "$ic" consume --server "$router" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/frozen.out" 2>"$work/frozen.err"; then
	kill -CONT "$OLLAMA_PID"
	fail "consume succeeded while Ollama was frozen"
fi
frozen_ms=$(($(now_ms) - t0))
kill -CONT "$OLLAMA_PID"
grep -q "the node did not start answering in time" "$work/frozen.err" || fail "frozen Ollama: $(cat "$work/frozen.err")"
[ "$frozen_ms" -lt 20000 ] || fail "frozen Ollama: the error took ${frozen_ms} ms"
[ "$(node_count)" = 1 ] && [ "$(registrations)" = 1 ] || fail "the node lost its registration while Ollama was frozen"
ok "Ollama frozen (SIGSTOP): consume ends after ${frozen_ms} ms with: $(head -1 "$work/frozen.err"); the node stays registered"
"$ic" consume --server "$router" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/thawed.txt" 2>"$work/thawed.err" || fail "consume after SIGCONT: $(cat "$work/thawed.err")"
cmp -s "$work/network.txt" "$work/thawed.txt" || fail "answer after SIGCONT differs"
ok "Ollama continued (SIGCONT): the same node answers again, same answer"

# (a2) Ollama stopped and restarted on the same port with the same models:
# the node reports itself unavailable but keeps its registration; a
# request made meanwhile fails at once and says why (nothing can serve it
# now: waiting would be for nothing), and once Ollama is back the same
# node, still one registration, answers again.
ollama_port=${OLLAMA_URL##*:}
kill -TERM "$OLLAMA_PID"
wait "$OLLAMA_PID" 2>/dev/null || true
for _ in $(seq 1 100); do
	[ "$(curl -sf "$router/api/models" | jq '.models | length')" = 0 ] && break
	sleep 0.1
done
[ "$(curl -sf "$router/api/models" | jq '.models | length')" = 0 ] || fail "the node still offers its models with Ollama stopped"
[ "$(node_count)" = 1 ] || fail "the node unregistered when Ollama stopped"
ok "Ollama stopped: the node stays registered (node_count 1) and takes no new requests (/api/models empty)"
t0=$(now_ms)
if "$ic" consume --server "$router" --model stories --prompt "$prompt" --timeout 30s >/dev/null 2>"$work/down.err"; then
	fail "consume succeeded with the only node's Ollama stopped"
fi
down_ms=$(($(now_ms) - t0))
[ "$down_ms" -lt 3000 ] || fail "consume with the only node's Ollama stopped took ${down_ms} ms to fail"
grep -q "now" "$work/down.err" || fail "consume with Ollama stopped did not say why: $(cat "$work/down.err")"
ok "Ollama stopped: consume fails after ${down_ms} ms with: $(head -1 "$work/down.err")"
OLLAMA_HOST="127.0.0.1:$ollama_port" OLLAMA_MODELS="$work/ollama-models" OLLAMA_NUM_PARALLEL="${OLLAMA_NUM_PARALLEL:-2}" \
	"$OLLAMA_BIN" serve >>"$work/ollama.log" 2>&1 &
OLLAMA_PID=$!
wait_for "$OLLAMA_URL/api/version" 60 || fail "Ollama did not restart"
t0=$(now_ms)
for _ in $(seq 1 100); do
	[ "$(curl -sf "$router/api/models" | jq '.models | length')" = 1 ] && break
	sleep 0.1
done
restart_ms=$(($(now_ms) - t0))
"$ic" consume --server "$router" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/restart.txt" 2>"$work/restart.err" ||
	fail "consume after the Ollama restart: $(cat "$work/restart.err")"
cmp -s "$work/network.txt" "$work/restart.txt" || fail "answer after the Ollama restart differs"
[ "$(node_count)" = 1 ] && [ "$(registrations)" = 1 ] || fail "the node re-registered across the Ollama restart: node_count $(node_count), $(registrations) registrations"
ok "Ollama restarted: the node offered its model again ${restart_ms} ms later and gave the same answer; still one registration"

# (b) Ollama's own 503: a second Ollama that runs one request and queues one
# (OLLAMA_NUM_PARALLEL=1 OLLAMA_MAX_QUEUE=1), serving the same tiny model
# under another name ("tales", so that only the second node serves it and
# the two Ollamas never compute at once on this small machine), behind a
# second node that claims --max-concurrent 10. While Ollama loads the
# (unloaded) model it refuses further requests with 503: the node reports
# ollama_busy, the router counts a failure against it and, as no other node
# serves "tales", ends that consumer's stream with a clear error; the
# others get the whole answer. (Failover to another node on ollama_busy is
# covered by the Go tests.) Whether Ollama refuses depends on requests
# arriving during the load, so the round is repeated (model unloaded
# again) up to three times until a 503 happened.
ollama2_port=$(free_port)
ollama2_url="http://127.0.0.1:$ollama2_port"
mkdir -p "$work/ollama2-models"
OLLAMA_HOST="127.0.0.1:$ollama2_port" OLLAMA_MODELS="$work/ollama2-models" OLLAMA_NUM_PARALLEL=1 OLLAMA_MAX_QUEUE=1 \
	"$OLLAMA_BIN" serve >"$work/ollama2.log" 2>&1 &
ollama2_pid=$!
pids+=("$ollama2_pid")
wait_for "$ollama2_url/api/version" 60 || fail "second Ollama did not start"
# Short answers (8 tokens), so that the requests Ollama accepts finish fast
# even when the machine is busy, and none waits long in Ollama's queue.
sed -e "s|^FROM .*|FROM $shared/models/stories260K.gguf|" -e 's/^PARAMETER num_predict .*/PARAMETER num_predict 8/' \
	"$shared/models/Modelfile" >"$work/Modelfile.tales"
OLLAMA_HOST="127.0.0.1:$ollama2_port" "$OLLAMA_BIN" create tales -f "$work/Modelfile.tales" >>"$work/ollama2.log" 2>&1 || fail "create tales in the second Ollama"
"$ic" contribute --owner-poll 0 --identity "$work/node2.key" --server "$router" --ollama "$ollama2_url" --max-concurrent 10 --log-format json >"$work/contribute2.out" 2>"$work/contribute2.log" &
node2_pid=$!
pids+=("$node2_pid")
for _ in $(seq 1 100); do [ "$(node_count)" = 2 ] && break; sleep 0.1; done
[ "$(node_count)" = 2 ] || fail "second node did not register"
busy=0
for round in 1 2 3; do
	curl -sf "$ollama2_url/api/generate" -d '{"model":"tales","keep_alive":0}' >/dev/null || fail "unload on the second Ollama"
	for _ in $(seq 1 50); do [ "$(curl -sf "$ollama2_url/api/ps" | jq '.models | length')" = 0 ] && break; sleep 0.1; done
	t0=$(now_ms)
	cpids=()
	for i in 1 2 3 4; do
		"$ic" consume --server "$router" --model tales --prompt "$prompt" --seed 42 --temperature 0 --timeout 60s >"$work/busy$round-$i.txt" 2>"$work/busy$round-$i.err" &
		cpids+=($!)
	done
	answered=0 refused=0
	for i in 1 2 3 4; do
		if wait "${cpids[$((i - 1))]}"; then
			# The first 8 tokens of the same answer as before.
			ans=$(head -c -1 "$work/busy$round-$i.txt")
			[ -n "$ans" ] && [ "$(head -c ${#ans} "$work/network.txt")" = "$ans" ] || fail "round $round consumer $i: answer $(cat "$work/busy$round-$i.txt")"
			answered=$((answered + 1))
		else
			grep -q "the node is overloaded; please retry" "$work/busy$round-$i.err" || fail "round $round consumer $i: $(cat "$work/busy$round-$i.err")"
			refused=$((refused + 1))
		fi
	done
	busy_ms=$(($(now_ms) - t0))
	busy=$(grep -c '"code":"ollama_busy"' "$work/contribute2.log" || true)
	[ "$busy" -gt 0 ] && break
done
[ "$busy" -gt 0 ] || fail "Ollama's 503 was not provoked in 3 rounds (no ollama_busy in the second node's log)"
ollama503=$(grep -c '| 503 |' "$work/ollama2.log" || true)
[ "$refused" = "$busy" ] && [ "$ollama503" = "$busy" ] || fail "Ollama refused $ollama503, node reported ollama_busy $busy, consumers refused $refused: these must agree"
ok "Ollama's own 503 (round $round): Ollama refused $ollama503 of 4, the node reported ollama_busy, those consumers got \"the node is overloaded; please retry\"; the other $answered got the whole answer; all within ${busy_ms} ms"
kill -TERM "$node2_pid"
wait "$node2_pid" || fail "second contribute exited non-zero on SIGTERM"
forget "$node2_pid"
kill -TERM "$ollama2_pid"
wait "$ollama2_pid" 2>/dev/null || true
forget "$ollama2_pid"

# The optional classifier (--classifier-url), with a router and a node of its
# own: a small HTTP classifier (node.js) refuses prompts that say "forbidden"
# and every answer, so the real model's answer is cut at the first chunk after
# the verdict, with the notice, and never reaches its end.
cport=$(free_port)
node -e '
require("http").createServer((q, s) => {
	let b = "";
	q.on("data", (d) => (b += d));
	q.on("end", () => {
		const v = JSON.parse(b);
		const allowed = v.kind === "prompt" ? !v.text.includes("forbidden") : false;
		s.setHeader("Content-Type", "application/json");
		s.end(JSON.stringify({ allowed }));
	});
}).listen(Number(process.argv[1]), "127.0.0.1");
' "$cport" >"$work/classifier.log" 2>&1 &
pids+=($!)
cport2=$(free_port)
router3="http://127.0.0.1:$cport2"
"$ic" serve --records none --listen "127.0.0.1:$cport2" --system-prompt "$system" --log-format json \
	--classifier-url "http://127.0.0.1:$cport" >"$work/serve3.out" 2>"$work/serve3.log" &
serve3_pid=$!
pids+=("$serve3_pid")
wait_for "$router3/health" 30 || fail "classifier router did not start"
"$ic" contribute --owner-poll 0 --identity "$work/node3.key" --server "$router3" --ollama "$OLLAMA_URL" >"$work/contribute3.out" 2>"$work/contribute3.log" &
node3_pid=$!
pids+=("$node3_pid")
for _ in $(seq 1 100); do [ "$(node_count "$router3")" = 1 ] && break; sleep 0.1; done
[ "$(node_count "$router3")" = 1 ] || fail "the classifier router's node did not register"
if "$ic" consume --server "$router3" --model stories --prompt "a forbidden story" >"$work/forbidden.out" 2>"$work/forbidden.err"; then
	fail "a prompt the classifier refuses was answered"
fi
grep -q "not allowed" "$work/forbidden.err" || fail "classifier refusal: $(cat "$work/forbidden.err")"
if "$ic" consume --server "$router3" --model stories --prompt "$prompt" --seed 42 --temperature 0 >"$work/withheld.out" 2>"$work/withheld.err"; then
	fail "an answer the classifier refuses was streamed to its end"
fi
grep -q "withheld by the content filter" "$work/withheld.err" || fail "classifier answer refusal: $(cat "$work/withheld.err")"
got=$(wc -c <"$work/withheld.out")
[ "$got" -lt "$(wc -c <"$work/direct.txt")" ] || fail "the refused answer arrived whole"
ok "classifier: a refused prompt gets \"$(head -1 "$work/forbidden.err")\"; a refused answer stops after $got of $(wc -c <"$work/direct.txt") bytes with the notice"
kill -TERM "$node3_pid" "$serve3_pid"
wait "$node3_pid" "$serve3_pid" || true
forget "$node3_pid"
forget "$serve3_pid"

# The bench's overhead comparison against this real Ollama (issue 3): its own
# router and node agent, the same requests directly and through the network.
# A smoke run: what it measures is checked for consistency, never for speed.
"$ic" bench --nodes '' --streams '' --throughput '' --peers '' --peers-max '' --ollama "$OLLAMA_URL" --model stories \
	--ollama-rounds 2 --ollama-requests 2 --ollama-predict 32 --json "$work/bench.json" \
	>"$work/bench.out" 2>"$work/bench.log" || fail "bench against the real Ollama exited $?"
jq -e '.ollama as $o | $o.direct.requests == 4 and $o.network.requests == 4
	and $o.direct.errors == 0 and $o.network.errors == 0
	and $o.direct.model_tokens > 0 and $o.network.model_tokens == $o.direct.model_tokens
	and $o.ratio > 0' "$work/bench.json" >/dev/null ||
	fail "bench against the real Ollama: $(jq -c .ollama "$work/bench.json")"
grep -q "network ÷ direct" "$work/bench.out" || fail "bench printed no comparison: $(cat "$work/bench.out")"
ok "bench against the real Ollama: 4 requests each way, $(jq .ollama.direct.model_tokens "$work/bench.json") model tokens on both paths, $(grep 'network ÷ direct' "$work/bench.out") (a smoke run; figures in BENCHMARKS.md)"

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
logs=("$work/serve.log" "$work/contribute.log" "$work/contribute.out" "$work/contribute2.log" "$work/contribute2.out"
	"$work/serve3.log" "$work/contribute3.log" "$work/contribute3.out")
grep -qi "$prompt" "${logs[@]}" && fail "prompt text found in logs"
grep -qF "$(head -c 30 "$work/direct.txt")" "${logs[@]}" && fail "answer text found in logs"
ok "no prompt or answer text in router or node logs"

# Canaries: two honest Ollamas and a liar about its model (issue 13).
bash scripts/e2e-canary.sh || fail "canaries against real Ollamas"
ok "canaries: the liar quarantined, the honest nodes verified (figures in the CANARY REPORT line above)"
# The README's quick start, as written (issue 12).
bash scripts/e2e-quickstart.sh || fail "the README's quick start"
ok "the README's quick start runs as written"

# The web page in a real browser: its answer equals Ollama's (issue 14).
bash scripts/e2e-web.sh || fail "the web page against the real Ollama"
ok "the web page's answer equals Ollama's direct answer"

# The fallback gateway: out of credit at the provider, the network answers
# as Ollama does (issue 15).
bash scripts/e2e-gateway.sh || fail "the gateway against the real Ollama"
ok "the gateway's fallback answer equals Ollama's direct answer"

# Two routers on NATS: a consumer at one served by the other's node (issue 17).
bash scripts/e2e-cluster.sh || fail "two routers on NATS against the real Ollama"
ok "through router a to a node on router b: the answer equals Ollama's direct answer"

# The owner first: a node that pauses when its owner uses Ollama (issue 16).
bash scripts/e2e-owner.sh || fail "owner first against a real Ollama"
ok "owner first: pause on the owner's request, nothing sent while paused, in-flight finished, resumed after the quiet period"
echo "$pass passed, 0 failed"
