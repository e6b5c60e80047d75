#!/usr/bin/env bash
# Installs the services the integration tests run against, when they are not installed yet:
# - tansu 0.6.0, an Apache Kafka-compatible broker written in Rust (the first build takes
#   about 15 minutes on 2 cores; later runs reuse the binary).
# The tests find tansu on PATH, in $CARGO_HOME/bin, or at $CITYSTREAM_TANSU.
set -euo pipefail

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
tansu="${CITYSTREAM_TANSU:-}"
if [ -z "$tansu" ]; then
  if command -v tansu >/dev/null 2>&1; then tansu=$(command -v tansu); else tansu="$cargo_bin/tansu"; fi
fi
if [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "0\.6\.0"; then
  echo "== tansu: $("$tansu" --version)"
else
  echo "== installing tansu 0.6.0 (first time only; about 15 minutes)"
  cargo install tansu --version 0.6.0 --features dynostore,libsql --locked
fi

# - dynoxide 1.2.1, a DynamoDB-compatible server (Rust + SQLite), one static binary from the npm
#   registry, installed under .test-services/ (git-ignored). The tests find it there, on PATH,
#   or at $CITYSTREAM_DYNOXIDE.
here="$(cd "$(dirname "$0")/.." && pwd)"
dynoxide="${CITYSTREAM_DYNOXIDE:-$here/.test-services/node_modules/@dynoxide/linux-x64/dynoxide}"
if [ -x "$dynoxide" ]; then
  echo "== dynoxide: $("$dynoxide" --version 2>/dev/null || echo installed)"
else
  echo "== installing dynoxide 1.2.1"
  npm install --silent --no-audit --no-fund --prefix "$here/.test-services" @dynoxide/linux-x64@1.2.1
fi
