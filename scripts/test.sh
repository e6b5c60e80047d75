#!/usr/bin/env bash
# CityStream's whole test suite, as CI runs it: formatting, lints, then every test tier
# (unit, property, store, API, end-to-end against the real binary, Kafka against a real
# Kafka-protocol broker, DynamoDB against a DynamoDB-compatible server), then the OpenAPI tier
# (schemathesis against a real `serve`), the browser tier (the dashboard in Chromium, driven
# by playwright-core) and the compose tier (the Docker image and compose.yaml, run for real in
# a Docker engine of its own). What they need is installed here when missing; the tests start
# it on 127.0.0.1 and stop it themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test -- --skip ::about_time::
# Tests whose assertions are about time run after the rest, one at a time: the load of the
# others must not decide them.
echo "== cargo test: the tests about time, one at a time"
cargo test --test tests -- ::about_time:: --test-threads=1
echo "== OpenAPI tier"
scripts/test-openapi.sh target/debug/citystream
echo "== dashboard unit tests"
node --test tests/dashboard/
echo "== browser tier"
scripts/test-browser.sh target/debug/citystream
echo "== compose tier"
scripts/test-compose.sh target/debug/citystream
