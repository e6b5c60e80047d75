#!/usr/bin/env bash
# History at scale: a SQLite store holding a year of windows of 1 000 cities (examples/history.rs
# writes it, about 9 GB, once), the history read through the store's Reader, then the same
# reads over HTTP from a separate load generator.
#
#   scripts/bench/history.sh DIR [SECONDS]
#
# `citystream serve` runs pinned to CPU 0 and the load generators to CPU 1. For each request:
# wrk finds the most it serves (8 connections), then hey holds half of that rate and reports
# the latency percentiles there, and the server's share of its core during wrk's run (`cpu`, of
# which `kernel`, from /proc/PID/stat). Needs wrk and hey (apt-get install wrk hey) and a
# release build (cargo build --release --bin citystream --example history).
set -euo pipefail
dir=${1:?usage: history.sh DIR [SECONDS]}
seconds=${2:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/citystream
history=$root/target/release/examples/history
port=${PORT:-18083}
base=http://127.0.0.1:$port
for tool in wrk hey taskset; do
  command -v "$tool" >/dev/null || { echo "history: $tool is missing (apt-get install wrk hey)" >&2; exit 1; }
done

[[ -f $dir/citystream.db ]] || "$history" fixture "$dir" 1000 365
"$history" query "$dir" 2000 1000

taskset -c 0 "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" --log warn &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 300); do
  kill -0 "$server" 2>/dev/null || { echo "history: citystream serve exited" >&2; exit 1; }
  curl -fsS "$base/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done

# The server's CPU time so far, user and kernel, in clock ticks; and a share of a core over a
# run of `seconds` from two such totals.
cpu_ticks() { awk '{print $14, $15}' "/proc/$server/stat"; }
tick=$(getconf CLK_TCK)
share() { awk -v a="$1" -v b="$2" -v t="$tick" -v s="$seconds" 'BEGIN {printf "%.2f", (b - a) / t / s}'; }

from=$(date -u -d '-30 days' +%Y-%m-%dT%H:00:00Z)
# Each path as JSON, then gzipped (what a browser asks for: the answer is compressed once).
for path in \
  "/api/v1/aggregations?city=City0421&event_type=traffic&resolution=1h&from=$from&limit=1000" \
  "/api/v1/aggregations?city=City0421&event_type=traffic&resolution=1h&fields=window_start,event_count,severity_counts&from=$from&limit=1000" \
  "/api/v1/aggregations?city=City0421&resolution=1h&from=$from&limit=1000" \
  "/api/v1/aggregations?city=City0421&event_type=traffic&resolution=1d&limit=1000"; do
  windows=$(curl -fsS "$base$path" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  for encoding in identity gzip; do
    accept="Accept-Encoding: $encoding"
    bytes=$(curl -fsS -H "$accept" "$base$path" | wc -c)
    read -r user0 kernel0 < <(cpu_ticks)
    out=$(taskset -c 1 wrk -t1 -c8 -d"${seconds}s" --latency -H "$accept" "$base$path")
    read -r user1 kernel1 < <(cpu_ticks)
    cpu=$(share $((user0 + kernel0)) $((user1 + kernel1))) kernel=$(share "$kernel0" "$kernel1")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    half=$(awk -v r="$rps" 'BEGIN {printf "%d", r / 2}')
    lat=$(taskset -c 1 hey -z "${seconds}s" -c 4 -q "$(( half / 4 > 0 ? half / 4 : 1 ))" \
      -H "$accept" "$base$path")
    pcts=$(awk '/% in/ {gsub("%", "", $1); printf "p%s_ms=%.2f ", $1, $3 * 1000}' <<<"$lat" \
      | grep -oE "p(50|90|99)_ms=[0-9.]+" | tr '\n' ' ')
    codes=$(awk '/responses$/ {printf "%s:%s ", $1, $2}' <<<"$lat")
    echo "history path=${path%%&from=*} encoding=$encoding windows=$windows bytes=$bytes" \
      "max_rps=$rps cpu=$cpu kernel=$kernel half_rps=$half ${pcts}status=${codes% }"
  done
done
