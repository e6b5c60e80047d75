#!/usr/bin/env bash
# The OpenAPI tier: schemathesis (installed here into a virtualenv under target/) generates
# requests from /api/v1/openapi.json of a real `serve` over a store holding an hour of hostile
# traffic, and fails on any 5xx or any response that breaks the document (every event of the
# live stream included). Nothing is skipped:
# if schemathesis cannot be installed or the server cannot start, the tier fails.
#
#   scripts/test-openapi.sh [BINARY]      (default: target/debug/citystream)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${1:-target/debug/citystream}")
SCHEMATHESIS_VERSION=4.32.5
VENV=target/schemathesis-venv
WORK=$(mktemp -d)
SERVE_PID=
cleanup() {
  [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== data: an hour of events, with hostile, out-of-order and late ones"
start=$(date -u -d '-60 min' +%Y-%m-%dT%H:%M:%S.000Z)
"$BIN" produce --count 3600 --rate 1 --burst --seed 12 --hostile 0.05 \
  --out-of-order 0.02 --late 0.01 --start-time "$start" >"$WORK/events.jsonl" 2>/dev/null
"$BIN" process --input "$WORK/events.jsonl" --data-dir "$WORK/data" --log warn

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$port" --log warn &
SERVE_PID=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && break
  kill -0 "$SERVE_PID" || { echo "serve exited" >&2; exit 1; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null

echo "== schemathesis against http://127.0.0.1:$port/api/v1/openapi.json"
# Every path, the live stream included (its settings: tests/openapi/schemathesis.toml).
"$VENV/bin/schemathesis" --config-file tests/openapi/schemathesis.toml \
  run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples 100 --request-timeout 10 --seed 1 \
  --report junit --report-dir "target/schemathesis"
