#!/usr/bin/env bash
# Every cost-per-command figure in one run, each beside its baseline, measured in the same
# session (on a shared 2-core machine commands/s moves from run to run; the ratios and the
# CPU per command are what compare):
#
#   embedded   reserve+confirm over 1,000 SKUs, one hot SKU and 100,000 SKUs
#              (scripts/bench.sh), with the server's CPU per command
#   PostgreSQL the same transactions on a durable PostgreSQL (scripts/bench-pg.sh)
#   ScyllaDB   the same over a local Cassandra, with Cassandra's CPU per command beside its
#              CPU per bare conditional batch (scripts/bench-scylla.sh)
#   bus path   the embedded write side over Kafka: outbox → publisher → Kafka → projector;
#              and the bus alone with the projector as its own process on Cassandra
#              (scripts/bench-bus.sh): events/s and lag of the transport and of the projector
#
# Each part's whole output is kept in the directory printed at the end.
# Usage: scripts/bench-all.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20}"
logs="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-bench-all.XXXXXX")"

cargo build --release --locked -p stockflow -p stockflow-bench --bins

run() {
    local name=$1
    shift
    echo "--- $name"
    "$@" >"$logs/$name.log" 2>&1 || { cat "$logs/$name.log" >&2; exit 1; }
    grep -E "commands/s|events/s|latency|lag|CPU|ceiling|===" "$logs/$name.log" || true
}

BENCH_WORKLOAD=reserve run embedded-1000 scripts/bench.sh "$connections" "$duration" 1000
BENCH_WORKLOAD=reserve run embedded-1 scripts/bench.sh "$connections" "$duration" 1
BENCH_WORKLOAD=reserve run embedded-100000 scripts/bench.sh "$connections" "$duration" 100000
run postgres scripts/bench-pg.sh "$connections" "$duration"
run scylla scripts/bench-scylla.sh "$connections" "$duration"
run bus scripts/bench-bus.sh "$duration"

export KAFKA_PORT="${BENCH_KAFKA_PORT:-19192}" KAFKA_CONTROLLER_PORT="${BENCH_KAFKA_CONTROLLER_PORT:-19193}" \
    KAFKA_SASL_PORT="${BENCH_KAFKA_SASL_PORT:-19194}"
./scripts/kafka.sh up >/dev/null
trap './scripts/kafka.sh down' EXIT
BENCH_WORKLOAD=reserve \
    BENCH_DEV_ARGS="--bus kafka --kafka-brokers 127.0.0.1:$KAFKA_PORT --bus-topic bench-all-$$" \
    run embedded-kafka scripts/bench.sh "$connections" "$duration" 1000

# The first number on the first line matching $2 in log $1, within the section of SKU
# count $3 when given (the logs that measure 1,000 SKUs and one).
figure() {
    local log="$logs/$1.log" text
    if [[ -n "${3:-}" ]]; then
        text="$(awk -v want="=== $3 SKU" 'index($0, "===") == 1 { on = index($0, want) == 1 } on' "$log")"
    else
        text="$(cat "$log")"
    fi
    grep -m1 -- "$2" <<<"$text" | sed -E 's/^[^0-9]*//' | grep -oE '^[0-9]+(\.[0-9]+)?' || echo "?"
}
# The p99 on the first line matching $2 in log $1.
p99() { grep -m1 -- "$2" "$logs/$1.log" | grep -oE 'p99 [0-9.]+' | cut -d' ' -f2 || echo "?"; }
# From the bus log: the $1-th line matching $2, its first number before $3.
bus_figure() {
    grep -- "$2" "$logs/bus.log" | sed -n "${1}p" | grep -oE "[0-9.]+ $3" | head -1 | cut -d' ' -f1 || echo "?"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "?" }'; }

e1000="$(figure embedded-1000 'commands/s')"
e1="$(figure embedded-1 'commands/s')"
e100k="$(figure embedded-100000 'commands/s')"
p1000="$(figure postgres 'commands/s' 1000)"
p1="$(figure postgres 'commands/s' 1)"
s1000_cass="$(figure scylla 'cassandra CPU' 1000)"
lwt1000_cass="$(awk '/raw LWT ceiling/ { on = 1 } on' "$logs/scylla.log" | grep -m1 'cassandra CPU' | sed -E 's/^[^0-9]*//' | grep -oE '^[0-9]+' || echo "?")"

echo
echo "=== summary ($connections connections, $duration s each; logs in $logs) ==="
printf '%-58s %s\n' \
    "embedded, 1,000 SKUs: commands/s" "$e1000" \
    "embedded, 1,000 SKUs: server CPU per command (µs)" "$(figure embedded-1000 'stockflow CPU')" \
    "embedded, 1,000 SKUs: reserve p99 (ms)" "$(p99 embedded-1000 'reserve latency')" \
    "embedded, 1,000 SKUs: projection lag p99 (ms)" "$(p99 embedded-1000 'projection lag')" \
    "embedded, one SKU: commands/s" "$e1" \
    "embedded, 100,000 SKUs: commands/s" "$e100k" \
    "embedded, 100,000 SKUs: reserve p99 (ms)" "$(p99 embedded-100000 'reserve latency')" \
    "embedded 100,000 ÷ 1,000 SKUs" "$(ratio "$e100k" "$e1000")" \
    "PostgreSQL, 1,000 SKUs: commands/s" "$p1000" \
    "PostgreSQL, one SKU: commands/s" "$p1" \
    "embedded ÷ PostgreSQL, 1,000 SKUs" "$(ratio "$e1000" "$p1000")" \
    "embedded ÷ PostgreSQL, one SKU" "$(ratio "$e1" "$p1")" \
    "ScyllaDB, 1,000 SKUs: commands/s" "$(figure scylla 'commands/s' 1000)" \
    "ScyllaDB, 1,000 SKUs: Cassandra CPU per command (µs)" "$s1000_cass" \
    "bare conditional batch: Cassandra CPU per batch (µs)" "$lwt1000_cass" \
    "ScyllaDB command ÷ bare conditional batch (Cassandra CPU)" "$(ratio "$s1000_cass" "$lwt1000_cass")" \
    "ScyllaDB, 1,000 SKUs: projection lag p99 (ms)" "$(p99 scylla 'projection lag')" \
    "embedded over Kafka, 1,000 SKUs: events/s (= commands/s)" "$(figure embedded-kafka 'commands/s')" \
    "embedded over Kafka, 1,000 SKUs: projection lag p99 (ms)" "$(p99 embedded-kafka 'projection lag')" \
    "bus alone (Kafka, 16 partitions): events/s appended and read" "$(bus_figure 1 'read within' 'events/s')" \
    "bus alone at half that rate: lag p99 (ms)" "$(bus_figure 2 'bus lag' 'ms  max')" \
    "projector process on Cassandra: events/s sustained" "$(bus_figure 1 'until caught up' 'events/s until')" \
    "projector process at half that rate: lag p99 (ms, from buckets)" "$(bus_figure 2 'projection lag (decided' 'ms  within')"
