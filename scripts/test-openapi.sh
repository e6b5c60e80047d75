#!/usr/bin/env bash
# The OpenAPI tier: schemathesis (installed here into a virtualenv under target/) generates
# requests from /api/v1/openapi.json of a real `serve` over a store holding an hour of hostile
# traffic, and fails on any 5xx or any response that breaks the document (every event of the
# live stream included). The changes take the admin token. Then the `standardwebhooks` package
# (an implementation apart from ours) verifies the signature of every alert `up` delivers.
# Nothing is skipped: if schemathesis cannot be installed or the server cannot start, the tier
# fails.
#
#   scripts/test-openapi.sh [BINARY]      (default: target/debug/citystream)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${1:-target/debug/citystream}")
SCHEMATHESIS_VERSION=4.32.5
STANDARDWEBHOOKS_VERSION=1.3.0
VENV=target/schemathesis-venv
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" ||
  ! "$VENV/bin/pip" show standardwebhooks 2>/dev/null | grep -q "^Version: $STANDARDWEBHOOKS_VERSION"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION and standardwebhooks into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits for the API on port $1 of process $2.
wait_api() {
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$1/api/v1/health" >/dev/null && return
    kill -0 "$2" || { echo "citystream exited" >&2; exit 1; }
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$1/api/v1/health" >/dev/null
}

echo "== data: an hour of events, with hostile, out-of-order and late ones"
start=$(date -u -d '-60 min' +%Y-%m-%dT%H:%M:%S.000Z)
"$BIN" produce --count 3600 --rate 1 --burst --seed 12 --hostile 0.05 \
  --out-of-order 0.02 --late 0.01 --start-time "$start" >"$WORK/events.jsonl" 2>/dev/null
# Its alerts owe a sink that is never there: the outbox holds pending deliveries to list.
"$BIN" process --input "$WORK/events.jsonl" --data-dir "$WORK/data" --log warn \
  --webhook http://127.0.0.1:9/hook --delivery-drain 0s

port=$(free_port)
printf '[[rules]]\nid = "severity-high"\nseverity = "high"\n' >"$WORK/rules.toml"
# One key for every operation that needs one: sending events and changing rules.
key=$("$BIN" keys create --data-dir "$WORK/data" --name openapi --scope ingest,admin \
  --rate 1000000 --burst 1000000 | tail -n 1)
# `up` without a generator takes events over HTTP only: every operation is served.
"$BIN" up --no-generator --data-dir "$WORK/data" --listen "127.0.0.1:$port" --log warn \
  --rules "$WORK/rules.toml" &
PIDS+=($!)
wait_api "$port" "${PIDS[-1]}"

echo "== schemathesis against http://127.0.0.1:$port/api/v1/openapi.json"
# Every path, the live stream included (its settings: tests/openapi/schemathesis.toml).
"$VENV/bin/schemathesis" --config-file tests/openapi/schemathesis.toml \
  run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples 100 --request-timeout 10 --seed 1 \
  --report junit --report-dir "target/schemathesis"

echo "== Standard Webhooks: every alert delivered verifies with the standardwebhooks package"
secret="whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
"$VENV/bin/python" tests/webhooks/receiver.py "$secret" "$WORK/hook.port" "$WORK/hook.json" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $WORK/hook.port ]] && break; sleep 0.1; done
up_port=$(free_port)
"$BIN" up --data-dir "$WORK/up" --listen "127.0.0.1:$up_port" --log warn --burst --rate 500 \
  --count 2000 --seed 4 --webhook "http://127.0.0.1:$(cat "$WORK/hook.port")/hook" \
  --webhook-secret "$secret" &
PIDS+=($!)
wait_api "$up_port" "${PIDS[-1]}"
python3 tests/webhooks/check.py "$up_port" "$WORK/hook.json"
