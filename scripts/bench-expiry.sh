#!/usr/bin/env bash
# Expiry at scale, on a fresh `stockflow dev` (release build, temporary data directory,
# 127.0.0.1). Two scenarios, RESERVATIONS each:
#  1. a burst of abandoned carts: reservations with a 1 s TTL made as fast as possible,
#     expiring while more are made; reports when all have expired and how late the latest
#     expiry was;
#  2. a backlog all overdue at once: reservations with a 60 s TTL, the server stopped
#     before any is due and started again after all are; reports how long the new process
#     takes to expire them all.
# For each server process: resident memory before, at its peak (VmHWM) and at the end.
# Usage: scripts/bench-expiry.sh [reservations] [connections] [skus]
set -euo pipefail
cd "$(dirname "$0")/.."
reservations="${1:-100000}"
connections="${2:-64}"
skus="${3:-100}"
addr="127.0.0.1:${BENCH_PORT:-18182}"

cargo build --release --locked -p stockflow -p stockflow-bench --bins
bench_bin=target/release/stockflow-bench
bin=target/release/stockflow
data="$(mktemp -d)"
server=
start() {
    RUST_LOG=warn "$bin" dev --data-dir "$data" --listen "$addr" &
    server=$!
    for _ in $(seq 200); do
        curl -fs "http://$addr/readyz" >/dev/null 2>&1 && return
        sleep 0.05
    done
    echo "stockflow dev did not become ready" >&2
    exit 1
}
stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}
trap 'stop; rm -rf "$data"' EXIT
rss() { awk -v k="$1" '$1 == k":" {printf "%.0f MiB", $2 / 1024}' "/proc/$server/status"; }
bench() {
    "$bench_bin" http --target "$addr" --workload expiry --reservations "$reservations" \
        --connections "$connections" --skus "$skus" "$@"
}

echo "== 1. burst: $reservations reservations with a 1 s TTL"
start
before="$(rss VmRSS)"
bench --ttl-seconds 1
echo "  server memory: before $before, peak $(rss VmHWM), after $(rss VmRSS)"
stop

echo
echo "== 2. backlog: $reservations reservations overdue at once after a restart"
rm -rf "$data" && mkdir -p "$data"
start
run="backlog$(date +%s)"
bench --ttl-seconds 60 --expiry-phase make --run-id "$run"
stop
# Every deadline is at most 60 s after the last reservation was made.
sleep 61
start
before="$(rss VmRSS)"
bench --expiry-phase wait --run-id "$run"
echo "  server memory: after start $before, peak $(rss VmHWM), after $(rss VmRSS)"
