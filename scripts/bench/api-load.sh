#!/usr/bin/env bash
# API throughput and latency over a store of stored events, from a separate load generator.
#
#   scripts/bench/api-load.sh DATA_DIR [SECONDS]
#
# DATA_DIR holds a SQLite store, e.g. from
#   citystream bench --input events.jsonl --store sqlite --data-dir DATA_DIR
# `citystream serve` runs pinned to CPU 0 and the load generators to CPU 1, so the req/s is
# what one core serves. For each endpoint: wrk finds the most it serves (32 connections),
# then hey holds half of that rate and reports the latency percentiles at that load.
# Needs wrk and hey (Debian: apt-get install wrk hey) and a release build.
set -euo pipefail
data=${1:?usage: api-load.sh DATA_DIR [SECONDS]}
seconds=${2:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CITYSTREAM_BIN:-$root/target/release/citystream}
port=${PORT:-18082}
base=http://127.0.0.1:$port
for tool in wrk hey taskset; do
  command -v "$tool" >/dev/null || { echo "api-load: $tool is missing (apt-get install wrk hey)" >&2; exit 1; }
done

taskset -c 0 "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --log warn &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do
  kill -0 "$server" 2>/dev/null || { echo "api-load: citystream serve exited (port $port taken?)" >&2; exit 1; }
  curl -fsS "$base/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/api/v1/stats" >/dev/null

for path in "/api/v1/events/Chicago?limit=20" "/api/v1/aggregations?city=Chicago" "/api/v1/stats"; do
  out=$(taskset -c 1 wrk -t1 -c32 -d"${seconds}s" --latency "$base$path")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  half=$(awk -v r="$rps" 'BEGIN {printf "%d", r / 2}')
  # hey: -q is per worker; 10 workers share the half rate.
  lat=$(taskset -c 1 hey -z "${seconds}s" -c 10 -q "$(( half / 10 ))" "$base$path")
  at_half=$(awk '/requests\/sec|Requests\/sec/ {print $2}' <<<"$lat")
  pcts=$(awk '/% in/ {gsub("%", "", $1); printf "p%s_ms=%.2f ", $1, $3 * 1000}' <<<"$lat" \
    | grep -oE "p(50|90|99)_ms=[0-9.]+" | tr '\n' ' ')
  codes=$(awk '/responses$/ {printf "%s:%s ", $1, $2}' <<<"$lat")
  echo "api-load path=$path max_rps=$rps max_p99=$p99 half_rps=$at_half ${pcts}status=${codes% } ${errors}"
done
