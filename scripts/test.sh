#!/usr/bin/env bash
# CityStream's whole test suite, as CI runs it: formatting, lints, then every test tier
# (unit, property, store, API and end-to-end tests against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test
