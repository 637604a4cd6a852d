#!/usr/bin/env bash
# Benchmarks `--store scylla` on a local single-node Cassandra: the HTTP reserve+confirm
# path over 1,000 SKUs and over one hot SKU, and beside each the raw LWT ceiling (the same
# conditional batch from a minimal loop, same server, same run).
# Usage: scripts/bench-scylla.sh [connections] [seconds]
# BENCH_DEV_ARGS adds arguments to `stockflow dev`, e.g. `--bus kafka --kafka-brokers ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20}"
export CASSANDRA_PORT="${CASSANDRA_PORT:-19142}"
export CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17142}"
nodes="127.0.0.1:$CASSANDRA_PORT"
addr="127.0.0.1:${BENCH_PORT:-18183}"

cargo build --release --locked -p stockflow -p stockflow-bench --bins
bench_bin=target/release/stockflow-bench
# BENCH_STOCKFLOW_BIN runs another build of the server (an A/B under the same bench client).
bin="${BENCH_STOCKFLOW_BIN:-target/release/stockflow}"
data="$(mktemp -d)"
server=""
cleanup() {
    [[ -n "$server" ]] && { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
    rm -rf "$data"
    ./scripts/cassandra.sh down
}
trap cleanup EXIT
./scripts/cassandra.sh up

# shellcheck disable=SC2086 # BENCH_DEV_ARGS is a list of arguments
RUST_LOG=warn "$bin" dev --store scylla --scylla-nodes "$nodes" --scylla-keyspace bench \
    --data-dir "$data" --listen "$addr" ${BENCH_DEV_ARGS:-} &
server=$!
for _ in $(seq 300); do curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

# CPU per command of the server and of Cassandra, and Cassandra's per bare conditional
# batch: the ratio of the two Cassandra figures is the one that carries to a real cluster.
cassandra="cassandra=$(./scripts/cassandra.sh pid)"
# A freshly started JVM compiles as it goes: warm it up before anything is measured.
"$bench_bin" lwt --scylla-nodes "$nodes" --connections "$connections" --duration 10 --skus 1000 >/dev/null
for skus in 1000 1; do
    echo "=== $skus SKU(s) ==="
    "$bench_bin" http --target "$addr" --connections "$connections" --duration "$duration" --skus "$skus" \
        --workload reserve --cpu "stockflow=$server" --cpu "$cassandra"
    "$bench_bin" lwt --scylla-nodes "$nodes" --connections "$connections" --duration "$duration" --skus "$skus" \
        --cpu "$cassandra"
done
