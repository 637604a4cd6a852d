#!/usr/bin/env bash
# A long soak of `stockflow dev` (not part of CI): mixed load at a steady rate (the bench's
# `soak` workload, which also checks every SKU's stock is exact at the end), with the
# server's memory and disk sampled each minute. Retention is shortened so every store
# reaches its bound well inside the run; after the warm-up, RSS and disk must stay flat.
#
# Usage: scripts/soak.sh [minutes] [carts per second]
#   SOAK_RETENTION_SECONDS  how long rows are retained (default 300)
#   SOAK_WARMUP_MINUTES     samples ignored by the flatness check (default 15)
#   SOAK_TOLERANCE          growth allowed over the checked window, as a fraction of the
#                           level (default 0.10)
# Writes target/soak/<time>.csv (minute, rss_kib, hwm_kib, disk_kib, wal_kib, retained
# rows, anon_huge_kib) and prints the curve and a verdict; exits non-zero when the load saw
# an error, the stock was not exact, or RSS or disk kept growing.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
rate="${2:-200}"
retention="${SOAK_RETENTION_SECONDS:-300}"
warmup="${SOAK_WARMUP_MINUTES:-15}"
tolerance="${SOAK_TOLERANCE:-0.10}"
addr="127.0.0.1:${SOAK_PORT:-18191}"
skus=1000

cargo build --release --locked -p stockflow -p stockflow-bench --bins
bench_bin=target/release/stockflow-bench
bin=target/release/stockflow
mkdir -p target/soak
out="target/soak/$(date -u +%Y%m%dT%H%M%SZ)"
data="$(mktemp -d)"
RUST_LOG=warn STOCKFLOW_SOAK_RETENTION_SECONDS="$retention" \
    "$bin" dev --data-dir "$data" --listen "$addr" >"$out.server.log" 2>&1 &
server=$!
bench=""
sampler=""
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
    [ -n "$bench" ] && kill "$bench" 2>/dev/null || true
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

retained() {
    curl -fs "http://$addr/metrics" |
        awk -v t="$1" '$0 ~ "^stockflow_retained_rows\\{table=\"" t "\"\\}" { printf "%d", $2; found=1 }
                       END { if (!found) printf "0" }'
}
sample() {
    local minute="$1" rss hwm disk wal
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server/status")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status")
    disk=$(du -sk "$data" | cut -f1)
    wal=$(find "$data" -name '*-wal' -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s / 1024 }')
    # Transparent huge pages in the RSS: an allocator whose heap khugepaged collapses into
    # 2 MiB pages shows RSS steps that are not the program's memory.
    huge=$(awk '/^AnonHugePages:/ { print $2 }' "/proc/$server/smaps_rollup")
    echo "$minute,$rss,$hwm,$disk,$wal,$(retained idempotency),$(retained final_reservations),$(retained log_records),$huge" >>"$out.csv"
}
echo "minute,rss_kib,hwm_kib,disk_kib,wal_kib,idempotency_rows,final_reservation_rows,log_rows,anon_huge_kib" >"$out.csv"
(
    for m in $(seq 1 "$minutes"); do
        sleep 60
        sample "$m"
    done
) &
sampler=$!

"$bench_bin" http --target "$addr" --workload soak --connections 16 --skus "$skus" \
    --rate "$rate" --duration $((minutes * 60)) | tee "$out.bench.log" &
bench=$!
load=0
wait "$bench" || load=$?
bench=""
wait "$sampler" 2>/dev/null || true
sampler=""

echo
echo "curve ($out.csv):"
column -s, -t "$out.csv"
echo
# Least-squares slope of each column over the samples after the warm-up, projected over
# that window, against the column's mean there.
verdict=0
for col in 2:rss 4:disk; do
    n="${col%%:*}" name="${col##*:}"
    line=$(awk -F, -v c="$n" -v w="$warmup" -v tol="$tolerance" -v name="$name" '
        NR > 1 && $1 > w { x[++k] = $1; y[k] = $c }
        END {
            if (k < 3) { print "too-short " name ": fewer than 3 samples after the warm-up"; exit }
            for (i = 1; i <= k; i++) { sx += x[i]; sy += y[i] }
            mx = sx / k; my = sy / k
            for (i = 1; i <= k; i++) { num += (x[i] - mx) * (y[i] - my); den += (x[i] - mx) ^ 2 }
            slope = num / den; growth = slope * (x[k] - x[1])
            state = (growth <= tol * my) ? "flat" : "growing"
            printf "%s %s: mean %.1f MiB, slope %+.2f MiB/h, %+.1f%% over minutes %d-%d\n",
                state, name, my / 1024, slope * 60 / 1024, 100 * growth / my, x[1], x[k]
        }' "$out.csv")
    echo "$line"
    case "$line" in flat*) ;; *) verdict=1 ;; esac
done
if [ "$load" -ne 0 ]; then
    echo "the load failed (exit $load): see $out.bench.log"
    exit 1
fi
exit "$verdict"
