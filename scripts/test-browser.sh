#!/usr/bin/env bash
# The dashboard's browser test: the binary given serves the page, Debian's Chromium (installed
# here when missing) loads it through playwright-core. Usage: scripts/test-browser.sh BINARY
# (e.g. target/debug/citystream). Screenshots go to target/browser-screenshots/.
# Everything it needs must start: nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BINARY" >&2
  exit 2
fi
bin="$(realpath "$1")"
if [[ ! -x "$bin" ]]; then
  echo "$bin is not an executable" >&2
  exit 1
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "== installing chromium"
  if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
fi

echo "== npm ci (tests/browser)"
(cd tests/browser && npm ci --silent --no-audit --no-fund)

echo "== browser tests"
CITYSTREAM_BIN="$bin" node --test tests/browser/
