#!/usr/bin/env bash
# Browser tests of keayl-demo in headless Chromium (Debian's /usr/bin/chromium,
# driven by playwright-core, which never downloads a browser).
# Needs the demo binary: `cargo build -p keayl-demo --bins` (or KEAYL_DEMO_BIN).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
web="$repo/apps/keayl-demo/web"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
if [ ! -d "$web/node_modules" ]; then
  (cd "$web" && npm ci --no-audit --no-fund)
fi

bin="${KEAYL_DEMO_BIN:-$repo/target/debug/keayl-demo}"
if [ ! -x "$bin" ]; then
  echo "run.sh: no demo binary at $bin; build it with: (cd $repo && cargo build -p keayl-demo --bins)" >&2
  exit 1
fi

cd "$here"
exec npm test
