#!/usr/bin/env bash
# DynamoDB throughput and write units per event, against dynoxide behind a proxy that adds a
# real table's round trip (8 ms) to every request.
#
#   scripts/bench/dynamodb.sh [EVENTS] [PROCESSORS]
#
# 1. `bench --store dynamodb`: PROCESSORS processors (default 1), each over its own file of
#    EVENTS events (default 100 000) at once, as fast as they go: events/s each and in all,
#    and the CPU seconds of dynoxide and of each processor (what bounds the figure here).
#    DELAY=0ms leaves the round trip out.
# 2. `up --store dynamodb --rate 1000` for 60 s: write units per event at 1 000 events/s with
#    the generator's mix (2% of events out of order, 0.5% late), per kind of item, from
#    `citystream_dynamodb_write_units_total`.
#
# Needs a release build and the test services (scripts/install-test-services.sh).
set -euo pipefail
events=${1:-100000}
processors=${2:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CITYSTREAM_BIN:-$root/target/release/citystream}
proxy=$root/target/release/examples/latency_proxy
dynoxide=${CITYSTREAM_DYNOXIDE:-$root/.test-services/node_modules/@dynoxide/linux-x64/dynoxide}
port=${PORT:-18400}
delay=${DELAY:-8ms}
work=$(mktemp -d)
pids=()
cleanup() {
  # Newest first: `up` writes what it holds before dynoxide goes.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  tail -n 3 "$work"/*.log >&2 || true
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && cargo build --release --quiet --bin citystream --example latency_proxy)

"$dynoxide" serve --host 127.0.0.1 --port "$port" >"$work/dynoxide.log" 2>&1 &
dyno=$!
pids+=("$dyno")
"$proxy" "127.0.0.1:$((port + 1))" "127.0.0.1:$port" "$delay" 2>"$work/proxy.log" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null && break
  sleep 0.1
done
export CITYSTREAM_REGION=us-east-2 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export CITYSTREAM_DYNAMODB_ENDPOINT=http://127.0.0.1:$((port + 1))

cpu_seconds() { # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

echo "== bench --store dynamodb: $processors processor(s) x $events events, +$delay per request"
for i in $(seq "$processors"); do
  "$bin" produce --count "$events" --burst --seed "$i" --rate 1000 \
    --start-time 2026-11-25T08:00:00Z --out-of-order 0.02 --late 0.005 > "$work/events-$i.jsonl"
done
"$bin" init --table-prefix bench- >/dev/null
dyno_before=$(cpu_seconds "$dyno")
started=$(date +%s.%N)
for i in $(seq "$processors"); do
  /usr/bin/time -f "processor $i cpu_s=%U+%S" \
    "$bin" bench --store dynamodb --table-prefix bench- --max-batch 5000 \
    --input "$work/events-$i.jsonl" > "$work/bench-$i.out" 2> "$work/bench-$i.err" &
done
wait_status=0
for job in $(jobs -p); do
  case " ${pids[*]} " in *" $job "*) continue ;; esac
  wait "$job" || wait_status=$?
done
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
for i in $(seq "$processors"); do
  cat "$work/bench-$i.out"
  grep -E "^processor|Error|error" "$work/bench-$i.err" || true
done
[ "$wait_status" = 0 ] || { echo "dynamodb bench: a processor failed" >&2; exit 1; }
echo "all: events=$((events * processors)) seconds=$elapsed events_per_s=$(echo "$events * $processors / $elapsed" | bc) dynoxide_cpu_s=$(echo "$(cpu_seconds "$dyno") - $dyno_before" | bc)"

echo "== up --store dynamodb --rate 1000 for 60 s: write units per event"
"$bin" init --table-prefix rate- >/dev/null
"$bin" up --store dynamodb --table-prefix rate- --rate 1000 --count 60000 --seed 7 \
  --out-of-order 0.02 --late 0.005 \
  --listen "127.0.0.1:$((port + 2))" --log warn &
up=$!
pids+=("$up")
metrics=http://127.0.0.1:$((port + 2))/metrics
for _ in $(seq 1200); do
  sleep 0.5
  stored=$(curl -fsS "$metrics" 2>/dev/null | awk '/^citystream_records_total/ {s += $2} END {print s + 0}')
  [ "${stored:-0}" -ge 60000 ] && break
done
# Records count when their batch is sent; wait until the units of the last one are in too.
units() { curl -fsS "$metrics" | awk '/^citystream_dynamodb_write_units_total/ {s += $2} END {print s + 0}'; }
last=-1
while [ "$(units)" != "$last" ]; do last=$(units); sleep 2; done
curl -fsS "$metrics" | awk '
  /^citystream_records_total/ { records += $2 }
  /^citystream_dynamodb_write_units_total/ {
    match($0, /kind="[a-z]+"/); kind = substr($0, RSTART + 6, RLENGTH - 7); units[kind] += $2; total += $2
  }
  END {
    printf "records=%d write_units=%d write_units_per_event=%.3f", records, total, total / records
    for (k in units) printf " %s=%.3f", k, units[k] / records
    printf "\n"
  }'
