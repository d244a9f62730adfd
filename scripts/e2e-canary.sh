#!/usr/bin/env bash
# Canaries against real Ollamas (issue 13): two honest Ollamas with
# different settings serve the tiny model (the same digest), a third serves
# the same weights configured differently and lies about its digest (a
# proxy in the test rewrites /api/tags). TestCanariesRealOllama sends at
# least IDLECLAW_CANARY_COUNT (200) canaries and checks that the liar is
# quarantined and the honest nodes never are; it prints a CANARY REPORT
# line with the figures. Called by scripts/e2e-ollama.sh; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

work=$(mktemp -d)
ollamas=()
cleanup() {
	for p in "${ollamas[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

ollama_install
# Honest A: one request at a time, no flash attention.
OLLAMA_NUM_PARALLEL=1 OLLAMA_FLASH_ATTENTION=0 ollama_start "$work/a" "$shared/models"
ollamas+=("$OLLAMA_PID")
a=$OLLAMA_URL
# Honest B: two at a time, flash attention, a quantized KV cache; the same
# model store as A (a model created twice gets two digests, as a model
# pulled twice from a registry does not).
mkdir -p "$work/b"
cp -a "$work/a/ollama-models" "$work/b/ollama-models"
port=$(free_port)
OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$work/b/ollama-models" OLLAMA_NUM_PARALLEL=2 OLLAMA_FLASH_ATTENTION=1 \
	OLLAMA_KV_CACHE_TYPE=q8_0 "$OLLAMA_BIN" serve >"$work/b/ollama.log" 2>&1 &
ollamas+=("$!")
b="http://127.0.0.1:$port"
wait_for "$b/api/version" 60
# The liar: the same weights under another template (it continues every
# prompt from a different opening), so its answers are another model's.
mkdir -p "$work/liar-model"
ln -s "$shared/models/stories260K.gguf" "$work/liar-model/stories260K.gguf"
sed 's/^TEMPLATE .*/TEMPLATE """One day, a big red truck {{ .Prompt }}"""/' "$shared/models/Modelfile" >"$work/liar-model/Modelfile"
ollama_start "$work/c" "$work/liar-model"
ollamas+=("$OLLAMA_PID")
c=$OLLAMA_URL

IDLECLAW_CANARY_OLLAMAS="$a,$b,$c" IDLECLAW_REQUIRE_OLLAMA=1 \
	go test -count=1 -timeout 15m -run '^TestCanariesRealOllama$' -v ./internal/canary/ 2>&1 | tee "$work/canary.log" | grep -E "^(--- |ok|FAIL|CANARY|    ollama_test)" || true
grep -q "^--- PASS: TestCanariesRealOllama" "$work/canary.log" || { tail -40 "$work/canary.log" >&2; echo "FAIL: canaries against real Ollamas" >&2; exit 1; }
grep "CANARY REPORT" "$work/canary.log"
echo "ok: canaries against real Ollamas"
