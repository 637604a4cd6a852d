#!/usr/bin/env bash
# Sustained-load bench of the embedded backend's disk use: starts a fresh `stockflow dev`
# (release build, temporary data directory, 127.0.0.1), drives it with the reserve+confirm
# workload for the given time, and every few seconds prints the size of each SQLite WAL and
# of the data directory. Ends with the bench report and the WAL metrics.
# Usage: scripts/bench-wal.sh [seconds] [connections] [skus] [sample-every-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-600}"
connections="${2:-64}"
skus="${3:-1000}"
every="${4:-10}"
addr="127.0.0.1:${BENCH_PORT:-18182}"

# STOCKFLOW_BIN benches another build (e.g. an older commit's) instead of this tree's.
if [[ -z "${STOCKFLOW_BIN:-}" ]]; then
    cargo build --release --locked -p stockflow --bin stockflow
fi
bin="${STOCKFLOW_BIN:-target/release/stockflow}"
cargo build --release --locked -p stockflow-bench
bench_bin=target/release/stockflow-bench
data="$(mktemp -d)"
RUST_LOG=warn "$bin" dev --data-dir "$data" --listen "$addr" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
size() { stat -c %s "$1" 2>/dev/null || echo 0; }

report="$(mktemp)"
"$bench_bin" http --target "$addr" --connections "$connections" --duration "$duration" \
    --skus "$skus" --workload reserve >"$report" 2>&1 &
bench=$!
printf '%6s %12s %12s %12s %12s %14s\n' "t (s)" "write-wal MiB" "log-wal MiB" "read-wal MiB" "max-wal MiB" "data dir MiB"
start=$(date +%s)
peak=0
while kill -0 "$bench" 2>/dev/null; do
    w=$(size "$data/write.db-wal"); l=$(size "$data/log.db-wal"); r=$(size "$data/read.db-wal")
    m=$(( w > l ? w : l )); m=$(( m > r ? m : r )); (( m > peak )) && peak=$m
    total=$(du -sb "$data" | cut -f1)
    printf '%6d %12s %12s %12s %12s %14s\n' $(( $(date +%s) - start )) \
        "$(mib "$w")" "$(mib "$l")" "$(mib "$r")" "$(mib "$m")" "$(mib "$total")"
    sleep "$every"
done
wait "$bench"
cat "$report"
echo
echo "largest WAL seen at any sample: $(mib "$peak") MiB"
echo "data directory after the run:"
ls -l "$data"
echo
echo "server metrics (WAL and checkpoints):"
curl -s "http://$addr/metrics" | grep -E '^stockflow_sqlite_(wal|checkpoint)' || true
