#!/usr/bin/env bash
# Installs the official OpenAI and Ollama client libraries (exact versions
# from clients/package-lock.json) that internal/cli/clients_test.go runs
# against the router. CI runs it before `go test`.
set -euo pipefail
cd "$(dirname "$0")/../clients"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
