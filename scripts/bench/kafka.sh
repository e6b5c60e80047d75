#!/usr/bin/env bash
# Kafka: one processor's rate from a 6-partition topic on the test broker, and how groups of 2
# and 3 processors share the partitions, with the results of every group checked equal.
#
#   scripts/bench/kafka.sh [EVENTS] [PARTITIONS]      # 500 000 events, 6 partitions
#
# Starts tansu (the test broker, in memory) on 127.0.0.1, produces EVENTS seeded events (100 a
# second of event time, ending about now) into a topic of PARTITIONS partitions once, then for 1, 2 and 3 processors: a consumer group of
# its own reads the whole topic into a SQLite store of its own (one file the group's processors
# share). The rate is the events over the time from the first stored to the last, read from
# `/api/v1/stats` every 0.1 s; each processor's share is its `citystream_records_total`. The
# results (stats, and every city's newest windows) must equal the single processor's.
# Needs the release build and tansu (scripts/install-test-services.sh installs it).
set -euo pipefail
events=${1:-500000}
partitions=${2:-6}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CITYSTREAM_BIN:-$root/target/release/citystream}
tansu=${TANSU:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}
port=${PORT:-19392}
brokers=127.0.0.1:$port
work=$(mktemp -d /var/tmp/citystream-kafka-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
[[ -x $tansu ]] || { echo "kafka: tansu is missing (scripts/install-test-services.sh)" >&2; exit 1; }

"$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
broker=$!
pids+=($broker)
# CPU seconds a process has used.
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat"; }
listening=no
for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { listening=yes; break; }; sleep 0.1; done
[[ $listening == yes ]] || { echo "kafka: tansu did not listen on $brokers within 30 s" >&2; exit 1; }

# tansu 0.6.0 answers a fetch from inside a record batch with the next batch, so a processor
# that takes over a partition at a committed offset would skip records: one record a batch.
t0=$(date +%s.%N)
start=$(date -u -d "-$((events / 100)) seconds" +%Y-%m-%dT%H:%M:%SZ)
"$bin" produce --brokers "$brokers" --partitions "$partitions" --count "$events" --seed 7 \
  --rate 100 --start-time "$start" --burst --kafka-option batch.num.messages=1 \
  --listen 127.0.0.1:0 --log warn
t1=$(date +%s.%N)
echo "kafka produce events=$events partitions=$partitions seconds=$(echo "$t1 - $t0" | bc)"

stats() { curl -fsS --max-time 5 "http://127.0.0.1:$1/api/v1/stats" 2>/dev/null || true; }
processed() { python3 -c 'import json,sys
try: s=json.load(sys.stdin); print(s["total_events_processed"]+s["late_events"]+s["dead_letters"])
except Exception: print(0)'; }

run_group() {
  local n=$1 data=$work/group-$n api=$((port + 10 + n)) started="" t_first="" t_last
  mkdir -p "$data"
  local members=() broker_cpu; broker_cpu=$(cpu "$broker")
  started=$(date +%s.%N)
  for i in $(seq "$n"); do
    "$bin" process --brokers "$brokers" --partitions "$partitions" --group "bench-$n" \
      --data-dir "$data" --listen "127.0.0.1:$((port + 20 + 10 * n + i))" --log warn &
    members+=($!); pids+=($!)
    # The first makes the store; serve opens it.
    [[ $i == 1 ]] && for _ in $(seq 100); do [[ -f $data/citystream.db ]] && break; sleep 0.05; done
  done
  "$bin" serve --data-dir "$data" --listen "127.0.0.1:$api" --log warn &
  pids+=($!)
  while :; do
    local done_now; done_now=$(stats "$api" | processed)
    local now; now=$(date +%s.%N)
    [[ -z $t_first && $done_now -gt 0 ]] && t_first=$now
    if [[ $done_now -ge $events ]]; then t_last=$now; break; fi
    if [[ $(echo "$now - $started > 600" | bc) == 1 ]]; then echo "kafka: group of $n stuck at $done_now" >&2; exit 1; fi
    sleep 0.1
  done
  local shares=() cpus=()
  for p in "${members[@]}"; do cpus+=("$(cpu "$p")"); done
  for i in $(seq "$n"); do
    shares+=("$(curl -fsS --max-time 5 "http://127.0.0.1:$((port + 20 + 10 * n + i))/metrics" \
      | awk '/^citystream_records_total/ {print $2}')")
  done
  local seconds; seconds=$(echo "$t_last - $t_first" | bc)
  echo "kafka group=$n events=$events seconds=$seconds events_per_s=$(echo "$events / $seconds" | bc) records_per_processor=$(IFS=,; echo "${shares[*]}") joined_after_s=$(echo "$t_first - $started" | bc) cpu_s_per_processor=$(IFS=,; echo "${cpus[*]}") broker_cpu_s=$(echo "$(cpu "$broker") - $broker_cpu" | bc)"
  for c in NYC LA Chicago SF Boston Seattle; do
    curl -fsS --max-time 5 "http://127.0.0.1:$api/api/v1/aggregations?city=$c&limit=100"
  done | md5sum | cut -c1-12 >"$work/windows-$n"
  stats "$api" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["total_events_processed"], s["late_events"], s["dead_letters"], s["high_severity_alerts"], s["critical_alerts"])' >"$work/stats-$n"
  for p in "${members[@]}"; do kill "$p"; done
}

for n in 1 2 3; do
  run_group "$n"
  if [[ $n -gt 1 ]]; then
    cmp -s "$work/windows-1" "$work/windows-$n" && cmp -s "$work/stats-1" "$work/stats-$n" \
      || { echo "kafka: the group of $n differs from one processor" >&2; exit 1; }
  fi
  echo "kafka group=$n stats=\"$(cat "$work/stats-$n")\" windows_md5=$(cat "$work/windows-$n") same_as_one=yes"
done
