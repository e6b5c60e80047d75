#!/usr/bin/env bash
# Delivery latency: `citystream up --rate RATE` delivering every alert to a webhook receiver
# (examples/delivery_latency.rs) on 127.0.0.1, which prints the percentiles of event time →
# arrival; then, from the deliveries API, event time → the alert and its delivery stored.
# About half the generated events are alerts, so RATE 2000 is about 1 000 alerts a second.
#
#   scripts/bench/delivery.sh [RATE] [SECONDS]
#
# citystream runs pinned to CPU 0, the receiver to CPU 1. Needs a release build
# (cargo build --release --bin citystream --example delivery_latency).
set -euo pipefail
rate=${1:-2000}
seconds=${2:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/citystream
receiver=$root/target/release/examples/delivery_latency
data=$(mktemp -d)
port=${PORT:-18084}
hook_port=${HOOK_PORT:-18085}
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT

taskset -c 1 "$receiver" "127.0.0.1:$hook_port" "$((seconds + 5))" 5 &
hook=$!
sleep 0.5
taskset -c 0 "$bin" up --data-dir "$data" --listen "127.0.0.1:$port" --log warn --rate "$rate" \
  --webhook "http://127.0.0.1:$hook_port/" \
  --webhook-secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw &
up=$!
wait $hook

python3 - "http://127.0.0.1:$port" <<'PY'
import json, sys, urllib.request
from datetime import datetime

base = sys.argv[1]
def ms(t):
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000.0
stored, path = [], "/api/v1/deliveries?limit=1000"
while len(stored) < 200_000:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        page = json.load(r)
    stored += [ms(d["created_at"]) - ms(d["alert"]["event"]["timestamp"]) for d in page["deliveries"]]
    if not page["next_cursor"]:
        break
    path = f"/api/v1/deliveries?limit=1000&cursor={page['next_cursor']}"
stored.sort()
at = lambda p: stored[round((len(stored) - 1) * p)]
print(f"stored={len(stored)} event_to_stored_ms p50={at(0.5):.0f} p90={at(0.9):.0f} "
      f"p99={at(0.99):.0f} max={stored[-1]:.0f}")
PY
