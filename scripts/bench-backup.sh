#!/usr/bin/env bash
# Times backup, restore and rebuilding the read models of a region holding KEYS stock keys
# (default 100,000: KEYS/4 SKUs at 4 warehouses), on both backends:
#
#   embedded  `stockflow backup` while `stockflow dev` serves, `stockflow restore`,
#             `stockflow rebuild-read-models` on the restored directory
#   ScyllaDB  `scripts/keyspace-backup.sh snapshot` while the platform serves, `... restore`
#             (nodetool import of every table, then the rebuild), and the rebuild alone again
#
# The keys are loaded with one bulk import (`POST /v1/imports`, unpaced). Correctness is
# the tests' job (tests/backup.rs, tests/scylla_backup.rs); this prints the times.
# Usage: scripts/bench-backup.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-100000}"
skus=$((keys / 4))
export CASSANDRA_PORT="${CASSANDRA_PORT:-19142}"
export CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17142}"
nodes="127.0.0.1:$CASSANDRA_PORT"
addr="127.0.0.1:${BENCH_PORT:-18184}"

cargo build --release --locked -p stockflow --bin stockflow
bin="$PWD/target/release/stockflow"
work="$(mktemp -d)"
server=""
cassandra=""
stop_server() {
    if [[ -n "$server" ]]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
    if [[ -n "$cassandra" ]]; then ./scripts/cassandra.sh down; fi
}
trap cleanup EXIT

# Seconds since `start`, to two decimals.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

wait_ready() {
    for _ in $(seq 600); do
        curl -fs "http://$addr/readyz" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench-backup.sh: stockflow did not become ready" >&2
    exit 1
}

# One NDJSON file: the 4 warehouses, then a count for every key.
rows="$work/keys.ndjson"
awk -v skus="$skus" 'BEGIN {
    for (l = 1; l <= 4; l++)
        printf "{\"type\":\"location\",\"location\":\"wh%d\",\"region\":\"north\",\"kind\":\"warehouse\",\"name\":\"wh%d\"}\n", l, l
    for (s = 0; s < skus; s++)
        for (l = 1; l <= 4; l++)
            printf "{\"type\":\"count\",\"sku\":\"B%06d\",\"location\":\"wh%d\",\"on_hand\":%d}\n", s, l, 10 + (s + l) % 90
}' > "$rows"

# Imports the file into the platform at $addr and waits for the job to finish.
load_keys() {
    local t0 id answer status
    t0="$(now)"
    answer="$(curl -fsS -XPOST "http://$addr/v1/imports" -H "Idempotency-Key: bench-backup-$1" \
        -H 'Content-Type: application/x-ndjson' --data-binary @"$rows")"
    id="$(jq -r .id <<<"$answer")"
    while :; do
        answer="$(curl -fsS "http://$addr/v1/imports/$id")"
        status="$(jq -r .status <<<"$answer")"
        [[ "$status" == done ]] && break
        sleep 1
    done
    if [[ "$(jq -r .failed <<<"$answer")" != 0 ]]; then
        echo "bench-backup.sh: rows refused: $answer" >&2
        exit 1
    fi
    echo "loaded $(jq -r .rows_done <<<"$answer") rows in $(since "$t0") s"
}

echo "=== embedded: $keys keys ($skus SKUs x 4 warehouses) ==="
RUST_LOG=warn "$bin" dev --data-dir "$work/data" --listen "$addr" \
    --import-rows-per-second 1000000 &
server=$!
wait_ready
load_keys embedded
t0="$(now)"
"$bin" backup --data-dir "$work/data" --to "$work/backup"
echo "backup (online, while serving): $(since "$t0") s, $(du -sh "$work/backup" | cut -f1)"
stop_server
t0="$(now)"
"$bin" restore --from "$work/backup" --data-dir "$work/restored"
echo "restore: $(since "$t0") s"
t0="$(now)"
"$bin" rebuild-read-models --data-dir "$work/restored" 2>&1 | tail -1
echo "rebuild-read-models: $(since "$t0") s"
rm -rf "$work/data" "$work/restored" "$work/backup"

echo "=== ScyllaDB (Cassandra 5.0.8, one node): $keys keys ==="
./scripts/cassandra.sh up
cassandra=yes
export NODETOOL="bash $PWD/scripts/cassandra.sh nodetool"
CASSANDRA_DATA_DIR="$(./scripts/cassandra.sh data-dir)"
export CASSANDRA_DATA_DIR STOCKFLOW="$bin" STOCKFLOW_SCYLLA_NODES="$nodes" \
    STOCKFLOW_SCYLLA_REPLICATION=datacenter1:1
"$bin" migrate --scylla-keyspace bench_backup >/dev/null
RUST_LOG=warn "$bin" dev --store scylla --scylla-keyspace bench_backup \
    --data-dir "$work/scylla" --listen "$addr" --import-rows-per-second 1000000 &
server=$!
wait_ready
load_keys scylla
t0="$(now)"
./scripts/keyspace-backup.sh snapshot bench_backup "$work/snapshot"
echo "snapshot (online, while serving): $(since "$t0") s, $(du -sh "$work/snapshot" | cut -f1)"
stop_server
t0="$(now)"
./scripts/keyspace-backup.sh restore "$work/snapshot" bench_restored 2>&1 | tail -1
echo "restore (nodetool import of every table, then the rebuild): $(since "$t0") s"
t0="$(now)"
"$bin" rebuild-read-models --store scylla --scylla-keyspace bench_restored 2>&1 | tail -1
echo "rebuild-read-models alone: $(since "$t0") s"
