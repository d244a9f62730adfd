#!/usr/bin/env bash
# The web page against a real Ollama (issue 14): a router and a node in
# front of a real Ollama serving the tiny model, the page driven in
# Debian's headless chromium; the answer the page shows must equal the
# one Ollama gives directly for the same messages (the model runs at
# temperature 0). The browser test itself is TestRealOllama in
# internal/webtest; this script builds Ollama, serves the model, installs
# chromium when it is missing, and points the test at that Ollama.
# Runs alone; scripts/e2e-ollama.sh may call it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=${IDLECLAW_SHARED:-$root/../shared}
. scripts/ollama-env.sh

e2e_init "web"

if ! [ -x /usr/bin/chromium ]; then
	echo "== installing chromium"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

ollama_install
ollama_start "$work" "$shared/models"
pids+=("$OLLAMA_PID")

IDLECLAW_E2E_OLLAMA_URL="$OLLAMA_URL" IDLECLAW_REQUIRE_BROWSER=1 \
	go test -count=1 -timeout 5m -run '^TestRealOllama$' -v ./internal/webtest/ >"$work/test.out" 2>&1 ||
	fail "the page against a real Ollama"
# The test skips without its variable: make sure it ran and passed.
grep -q -- '--- PASS: TestRealOllama' "$work/test.out" || fail "TestRealOllama did not run"
ok "$(grep -o "the page's answer equals Ollama's direct answer.*" "$work/test.out")"
