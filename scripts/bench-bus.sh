#!/usr/bin/env bash
# The bus path with the roles as separate processes: a local Kafka (KRaft) and Cassandra,
# the region migrated with a topic of 16 partitions, `stockflow projector` running as its
# own process on it, and `stockflow-bench bus` appending events as the publisher does:
# first read back by the bench alone (the transport), then applied by the projector. Each
# at full speed, then at half that rate for the lag. CPU per event of the projector, Kafka
# and Cassandra is reported beside each phase.
# Usage: scripts/bench-bus.sh [seconds] [skus]
# BENCH_ARGS adds arguments to the bench, e.g. `--projector-rates 1000,2500` (the rates at
# which the projector's lag is measured; by default half of what it sustained).
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
skus="${2:-1000}"
partitions=16
export CASSANDRA_PORT="${CASSANDRA_PORT:-19142}"
export CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17142}"
export KAFKA_PORT="${BENCH_KAFKA_PORT:-19192}" KAFKA_CONTROLLER_PORT="${BENCH_KAFKA_CONTROLLER_PORT:-19193}" \
    KAFKA_SASL_PORT="${BENCH_KAFKA_SASL_PORT:-19194}"
addr="127.0.0.1:${BENCH_PORT:-18184}"
topic="bench-bus-$$"
keyspace="bench_bus_$$"

cargo build --release --locked -p stockflow -p stockflow-bench --bins
bench_bin=target/release/stockflow-bench
# BENCH_STOCKFLOW_BIN runs another build of the server (an A/B under the same bench client).
bin="${BENCH_STOCKFLOW_BIN:-target/release/stockflow}"

projector=""
cleanup() {
    [[ -n "$projector" ]] && { kill -TERM "$projector" 2>/dev/null || true; wait "$projector" 2>/dev/null || true; }
    ./scripts/kafka.sh down || true
    ./scripts/cassandra.sh down || true
}
trap cleanup EXIT
./scripts/cassandra.sh up
./scripts/kafka.sh up >/dev/null
kafka_pid="$(cat "${KAFKA_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-kafka-$KAFKA_PORT}/pid")"

# The region as the operator makes it: the migrate Job creates the keyspace and the topic.
region=(--region bench --partitions "$partitions"
    --scylla-nodes "127.0.0.1:$CASSANDRA_PORT" --scylla-keyspace "$keyspace"
    --bus kafka --kafka-brokers "127.0.0.1:$KAFKA_PORT" --bus-topic "$topic")
"$bin" migrate "${region[@]}" --scylla-replication datacenter1:1 >/dev/null
# Loopback only, read by this script alone: no tokens, no per-caller rate limit.
RUST_LOG=warn "$bin" projector "${region[@]}" --listen "$addr" --insecure-no-auth --rate-limit-per-second 0 &
projector=$!
for _ in $(seq 300); do curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://$addr/readyz" >/dev/null || { echo "the projector did not become ready" >&2; exit 1; }

# shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
"$bench_bin" bus --brokers "127.0.0.1:$KAFKA_PORT" --topic "$topic" --partitions "$partitions" \
    --skus "$skus" --duration "$duration" --region bench --projector "$addr" \
    --cpu "projector=$projector" --cpu "kafka=$kafka_pid" --cpu "cassandra=$(./scripts/cassandra.sh pid)" \
    ${BENCH_ARGS:-}
