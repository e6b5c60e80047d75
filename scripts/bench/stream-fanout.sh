#!/usr/bin/env bash
# What the live stream's clients cost: `up --rate 1000` (release build) with N `curl -N`
# clients on /api/v1/stream, measured over 30 s after 10 s of warm-up: the process's CPU (as a
# share of one core, from /proc) and how often it read alerts from the store (from /metrics).
#
#   scripts/bench/stream-fanout.sh [N ...]      (default: 0 1 200)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/citystream
port=18399
ticks_per_s=$(getconf CLK_TCK)

reads() {
  curl -fsS "http://127.0.0.1:$port/metrics" |
    awk '/^citystream_store_call_seconds_count\{op="alerts"\}/ {print $2; found=1} END {if (!found) print 0}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local n=$1 data up clients=()
  data=$(mktemp -d)
  "$bin" up --rate 1000 --listen "127.0.0.1:$port" --data-dir "$data" --log warn >/dev/null 2>&1 &
  up=$!
  sleep 5
  for _ in $(seq "$n"); do
    curl -sN "http://127.0.0.1:$port/api/v1/stream" >/dev/null &
    clients+=($!)
  done
  sleep 5
  local r0 t0 r1 t1
  r0=$(reads); t0=$(cpu_ticks "$up")
  sleep 30
  r1=$(reads); t1=$(cpu_ticks "$up")
  python3 -c "print(f'clients=$n cpu_of_one_core={($t1 - $t0) / $ticks_per_s / 30:.0%} alert_reads_per_s={($r1 - $r0) / 30:.2f}')"
  kill "${clients[@]}" 2>/dev/null || true
  kill "$up"; wait "$up" 2>/dev/null || true
  rm -rf "$data"
}

counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(0 1 200)
for n in "${counts[@]}"; do run "$n"; done
