#!/usr/bin/env bash
# The whole Keayl test suite: Rust unit/integration/doc tests, then the Node
# tests that drive the demo and fixture servers with real JavaScript clients.
# Installs what the tests need (npm packages from the lockfile).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build (binaries used by the Node tests)"
cargo build --workspace --bins

echo "==> cargo test --workspace"
# Tests that need a missing service print a loud `SKIPPED (…)` banner and
# pass; the log is kept to count them in the summary at the end.
rust_log="$(mktemp)"
trap 'rm -f "$rust_log"' EXIT
cargo test --workspace 2>&1 | tee "$rust_log"

echo "==> npm packages for the demo page (apps/keayl-demo/web)"
(cd apps/keayl-demo/web && { [ -d node_modules/@anycable/web ] || npm ci --no-audit --no-fund; })

echo "==> Node tests (tests/node)"
(
  cd tests/node
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
  KEAYL_DEMO_BIN="$PWD/../../target/debug/keayl-demo" npm test
)

echo "==> Browser tests (tests/browser, headless Chromium)"
KEAYL_DEMO_BIN="$PWD/target/debug/keayl-demo" ./tests/browser/run.sh

skipped=$(grep -c '^SKIPPED (' "$rust_log" || true)
passed=$(grep -E '^test result: ok\.' "$rust_log" | awk '{n += $4} END {print n + 0}')
echo "==> Rust tests: $passed passed, $skipped skipped for a missing service"
if [ "$skipped" -gt 0 ]; then
  grep '^SKIPPED (' "$rust_log" | sort | uniq -c | sed 's/^/    /'
  echo "    (KEAYL_REQUIRE_SERVICES=1 turns these into failures, as in CI)"
fi
