#!/usr/bin/env bash
# Starts a fresh `stockflow dev` (release build, temporary data directory, 127.0.0.1),
# drives it with `stockflow-bench http`, prints the report, and stops it.
# Usage: scripts/bench.sh [connections] [seconds] [skus]
# BENCH_WORKLOAD picks the workload (default all; `sourcing` compares region-level and
# located reservations in one run; `import` measures checkouts beside a bulk import).
# BENCH_ARGS adds arguments to the bench client (e.g. `--import-rows 1000000`).
# BENCH_DEV_ARGS adds arguments to `stockflow dev`, e.g. a real bus:
#   BENCH_DEV_ARGS="--bus kafka --kafka-brokers 127.0.0.1:9092" scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20}"
skus="${3:-1000}"
addr="127.0.0.1:${BENCH_PORT:-18181}"

cargo build --release --locked -p stockflow -p stockflow-bench --bins
bench_bin=target/release/stockflow-bench
bin=target/release/stockflow
data="$(mktemp -d)"
# shellcheck disable=SC2086 # BENCH_DEV_ARGS is a list of arguments
RUST_LOG=warn "$bin" dev --data-dir "$data" --listen "$addr" ${BENCH_DEV_ARGS:-} &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
# shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
"$bench_bin" http --target "$addr" --connections "$connections" --duration "$duration" --skus "$skus" \
    --workload "${BENCH_WORKLOAD:-all}" --cpu "stockflow=$server" ${BENCH_ARGS:-}
echo
echo "server metrics (group commit; events through the bus over the whole run):"
curl -s "http://$addr/metrics" | grep -E '^stockflow_write_batch_size_(sum|count)|^stockflow_events_(published|projected)_total' || true
