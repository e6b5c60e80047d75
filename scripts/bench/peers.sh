#!/usr/bin/env bash
# Side by side with the peers: CityStream (null store, then SQLite with everything persisted),
# Spark 3.4.1 Structured Streaming and Flink 2.3 SQL, one after the other on the very same
# events file (the shared bench's gen_events.py, seeded), so only the system differs.
#
#   scripts/bench/peers.sh [EVENTS] [OUT_DIR]
#
# EVENTS defaults to 1000000, OUT_DIR to target/bench-peers. Writes OUT_DIR/peers.csv, every
# run's output as OUT_DIR/*.log, a Markdown table on stdout and OUT_DIR/peers.{svg,png}
# (scripts/bench/peers_chart.py). RUNS=N runs N rounds of every system and keeps each one's best
# run (default 1).
# CITYSTREAM_SHARED is the shared dir (default ../shared beside the repo); the peers' run.sh
# install pyspark and apache-flink into /tmp venvs on first use (minutes), and matplotlib goes
# into PEERS_VENV (default /tmp/citystream-plot-venv). Peers print no memory figure, so their
# peak_rss_mib stays empty. Needs a release build (cargo build --release).
set -euo pipefail
events=${1:-1000000}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${2:-$root/target/bench-peers}
runs=${RUNS:-1}
shared=${CITYSTREAM_SHARED:-$root/../shared}
venv=${PEERS_VENV:-/tmp/citystream-plot-venv}
bin=$root/target/release/citystream
[[ -x $bin ]] || { echo "peers: $bin is missing; run cargo build --release" >&2; exit 1; }
[[ -f $shared/bench/spark-baseline/gen_events.py ]] \
  || { echo "peers: no shared bench under $shared (set CITYSTREAM_SHARED)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

# gen_events.py is seeded, so a file of the right length is the same file.
input=$out/events-$events.jsonl
if [[ ! -f $input ]] || [[ $(wc -l <"$input") -ne $events ]]; then
  echo "peers: generating $events events into $input" >&2
  python3 "$shared/bench/spark-baseline/gen_events.py" "$events" "$input"
fi

# field NAME LINE: the value of NAME= in LINE, or nothing (peers print no peak_rss_mib).
field() { { grep -oE "(^| )$1=[0-9.]+" <<<"$2" || true; } | tail -n1 | cut -d= -f2; }

# run SYSTEM STORE ROUND COMMAND...: runs COMMAND once and keeps the best run of SYSTEM STORE.
declare -A best line
run() {
  local system=$1 store=$2 i=$3 key=$1,$2 rc=0
  shift 3
  local log=$out/$system-$store-$i.log
  echo "peers: $system ($store) run $i/$runs, log in $log" >&2
  local start=$SECONDS
  "$@" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    tail -n 20 "$log" >&2
    echo "peers: $system ($store) failed with exit $rc, see $log" >&2
    exit 1
  fi
  local got
  got=$(grep -E 'events_per_s=[0-9]' "$log" | tail -n1) \
    || { echo "peers: $system ($store) printed no events_per_s=, see $log" >&2; exit 1; }
  echo "peers:   $got ($((SECONDS - start)) s wall)" >&2
  if [[ -z ${best[$key]:-} ]] || (($(field events_per_s "$got") > best[$key])); then
    best[$key]=$(field events_per_s "$got") line[$key]=$got
  fi
}

# Each round runs every system once: the shared VM has slow minutes, and a round puts one on
# every system alike, where running one system's runs back to back would put it on that one
# (ours take seconds, a peer's a quarter of a minute each).
for ((i = 1; i <= runs; i++)); do
  run citystream null "$i" "$bin" bench --input "$input" --store null
  rm -rf "$out/sqlite-data"
  run citystream sqlite "$i" "$bin" bench --input "$input" --store sqlite --data-dir "$out/sqlite-data"
  rm -rf "$out/sqlite-data"
  run spark noop "$i" "$shared/bench/spark-baseline/run.sh" "$input" seed
  run flink blackhole "$i" "$shared/bench/flink-baseline/run.sh" "$input" seed
done
rows=
for key in citystream,null citystream,sqlite spark,noop flink,blackhole; do
  rows+="$key,$(field events "${line[$key]}"),${best[$key]},$(field peak_rss_mib "${line[$key]}")"$'\n'
done

csv=$out/peers.csv
awk -F, -v OFS=, '
  { row[NR] = $0; eps[NR] = $4; if ($1 != "citystream" && $4 > peer) peer = $4 }
  END {
    print "system,store,events,events_per_s,peak_rss_mib,ratio_to_best_peer"
    for (i = 1; i <= NR; i++) printf "%s,%.2f\n", row[i], eps[i] / peer
  }' <<<"${rows%$'\n'}" >"$csv"

date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(git -C "$root" rev-parse --short HEAD)
cpus=$(nproc)
echo "| system | store | events | events_per_s | peak_rss_mib | ratio_to_best_peer |"
echo "|---|---|---:|---:|---:|---:|"
tail -n +2 "$csv" | awk -F, '{ printf "| %s | %s | %s | %s | %s | %.1f× |\n", $1, $2, $3, $4, ($5 == "" ? "–" : $5), $6 }'
echo
echo "$date, commit $commit, nproc $cpus; $csv"

# The chart wants matplotlib, kept out of the system Python in a venv of its own.
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q matplotlib
fi
"$venv/bin/python" "$root/scripts/bench/peers_chart.py" "$csv" "$date" "$commit" "$cpus"
