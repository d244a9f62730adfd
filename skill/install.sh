#!/usr/bin/env bash
# Installs the idleclaw binary with the Go toolchain and checks for Ollama.
# contribute needs a running Ollama with at least one model; consume and
# status need nothing else.
#
# From a checkout of the repository it builds that checkout; elsewhere it
# installs the published module. GOBIN chooses where the binary goes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v go >/dev/null 2>&1; then
	echo "idleclaw install: the Go toolchain (1.26 or newer) is required: https://go.dev/dl/" >&2
	exit 1
fi
if [ -f "$here/../go.mod" ] && grep -q '^module github.com/idleclaw/idleclaw$' "$here/../go.mod"; then
	(cd "$here/.." && go install ./cmd/idleclaw)
else
	# Outside a checkout: the published module, through the Go module proxy.
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	if ! go install github.com/idleclaw/idleclaw/cmd/idleclaw@latest 2>"$log"; then
		tail -n 5 "$log" >&2
		cat >&2 <<EOF

idleclaw install: 'go install github.com/idleclaw/idleclaw/cmd/idleclaw@latest' failed:
the module could not be downloaded (no network, or the module proxy refused it,
e.g. 403 Forbidden; GOPROXY is $(go env GOPROXY)). Then either:
  - check the network, or try without the proxy:
      GOPROXY=direct bash install.sh
  - or build from a checkout of the repository:
      git clone https://github.com/idleclaw/idleclaw && bash idleclaw/skill/install.sh
  - or put a prebuilt idleclaw binary on your PATH.
EOF
		exit 1
	fi
fi
bin=$(go env GOBIN)
[ -n "$bin" ] || bin="$(go env GOPATH)/bin"
echo "installed: $("$bin/idleclaw" version) at $bin/idleclaw"
case ":$PATH:" in
*":$bin:"*) ;;
*) echo "note: $bin is not on your PATH; add it, or run $bin/idleclaw" ;;
esac

host=${OLLAMA_HOST:-http://localhost:11434}
case "$host" in http://* | https://*) ;; *) host="http://$host" ;; esac
if command -v curl >/dev/null 2>&1 && curl -sf --max-time 3 "$host/api/version" >/dev/null 2>&1; then
	echo "Ollama: reachable at $host (contribute mode will share its models)"
elif command -v ollama >/dev/null 2>&1; then
	echo "Ollama: installed but not answering at $host; start it with 'ollama serve' before 'idleclaw contribute'"
else
	echo "Ollama: not found. Contribute mode needs it (https://ollama.com); consume and status work without it."
fi
