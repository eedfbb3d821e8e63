#!/usr/bin/env bash
# Run the Keayl demo server (in-memory pub/sub, no services needed).
# Installs the official @anycable/web client for the demo pages from npm
# on first use, then starts keayl-demo on 127.0.0.1:3000 (pass --addr to change).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d apps/keayl-demo/web/node_modules/@anycable/web ]; then
  (cd apps/keayl-demo/web && npm ci --no-audit --no-fund)
fi
exec cargo run --release -p keayl-demo --bin keayl-demo -- "$@"
