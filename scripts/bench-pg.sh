#!/usr/bin/env bash
# The PostgreSQL baseline: the bench's checkout (reserve one unit, confirm it) as
# transactions on a throwaway, durable PostgreSQL from Debian's package (fsync, synchronous
# commit: every commit on disk before it is acknowledged, as stockflow's), over 1,000 SKUs
# and over one hot SKU, with PostgreSQL's CPU per command. Compare with scripts/bench.sh's
# figures from the same session (scripts/bench-all.sh runs both).
# Usage: scripts/bench-pg.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-64}"
duration="${2:-20}"
export POSTGRES_PORT="${BENCH_POSTGRES_PORT:-15532}" POSTGRES_DURABLE=1

cargo build --release --locked -p stockflow -p stockflow-bench --bins
trap './scripts/postgres.sh down' EXIT
url="$(./scripts/postgres.sh up)"
postgres="postgres=$(./scripts/postgres.sh pid)"
for skus in 1000 1; do
    echo "=== $skus SKU(s) ==="
    target/release/stockflow-bench pg --url "$url" --connections "$connections" \
        --duration "$duration" --skus "$skus" --cpu "$postgres"
done
