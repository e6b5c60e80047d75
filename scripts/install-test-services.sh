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
