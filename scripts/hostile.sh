#!/usr/bin/env bash
# The hostile-node and hostile-consumer suite (internal/hostile) on its own:
# verbose, with the race detector, then its observations as a Markdown table
# (attack | bound | what the router did), the source of BENCHMARKS.md's
# "Hostile nodes and consumers". Extra arguments go to go test (-run ...).
# IDLECLAW_HOSTILE_SECONDS sets the load scenario's length (default 20);
# IDLECLAW_HOSTILE_REPORT keeps the table in that file.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
report="${IDLECLAW_HOSTILE_REPORT:-$(mktemp)}"
IDLECLAW_HOSTILE_REPORT="$report" go test -race -count=1 -timeout 10m -v ./internal/hostile/ "$@"
echo
cat "$report"
