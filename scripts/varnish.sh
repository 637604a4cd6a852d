#!/usr/bin/env bash
# A throwaway Varnish in front of stockflow's query API, for the edge-cache tests and demos.
#
#   scripts/varnish.sh up       render the sample VCL, start varnishd, wait; prints its URL
#   scripts/varnish.sh down     stop it and delete its run directory
#   scripts/varnish.sh status
#
# It runs config/samples/varnish/stockflow.vcl (xkey purges, grace for stale-if-error and
# stale-while-revalidate, a probe on the backend) with the backend at
# 127.0.0.1:$VARNISH_BACKEND_PORT (default 8080, `stockflow dev`'s port). Varnish listens
# on 127.0.0.1:$VARNISH_PORT (default 16081) only, its admin interface on
# 127.0.0.1:$VARNISH_ADMIN_PORT (default 16082); its working directory (shared memory log,
# compiled VCL, secret) lives in the run directory, outside the repository. Debian's
# `varnish` and `varnish-modules` packages provide it; as root they are installed here when
# missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${VARNISH_PORT:-16081}"
ADMIN_PORT="${VARNISH_ADMIN_PORT:-16082}"
BACKEND_PORT="${VARNISH_BACKEND_PORT:-8080}"
RUN="${VARNISH_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-varnish-$PORT}"
VCL="$ROOT/config/samples/varnish/stockflow.vcl"

install_if_missing() {
    if command -v varnishd >/dev/null 2>&1 && compgen -G "/usr/lib/*/varnish/vmods/libvmod_xkey.so" >/dev/null; then
        return
    fi
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "varnish.sh: installing varnish and varnish-modules" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq varnish varnish-modules >/dev/null
    else
        echo "varnish.sh: varnishd or vmod_xkey missing: install Debian's varnish and varnish-modules" >&2
        exit 1
    fi
}

varnishd_bin() {
    command -v varnishd 2>/dev/null || echo /usr/sbin/varnishd
}

running() {
    [[ -f "$RUN/varnishd.pid" ]] && kill -0 "$(cat "$RUN/varnishd.pid")" 2>/dev/null
}

up() {
    install_if_missing
    if running; then
        echo "http://127.0.0.1:$PORT"
        return
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN/work"
    # The sample with this run's backend port; nothing else changes.
    sed -E "s/^([[:space:]]*\.port = )\"8080\";/\1\"$BACKEND_PORT\";/" "$VCL" >"$RUN/stockflow.vcl"
    grep -q "\.port = \"$BACKEND_PORT\";" "$RUN/stockflow.vcl" || {
        echo "varnish.sh: could not set the backend port in $RUN/stockflow.vcl" >&2
        exit 1
    }
    # -j none: no privilege separation, so a test run by any user can read the working
    # directory (varnishstat) and nothing needs the varnish system users.
    "$(varnishd_bin)" -j none \
        -a "127.0.0.1:$PORT" -T "127.0.0.1:$ADMIN_PORT" \
        -n "$RUN/work" -f "$RUN/stockflow.vcl" -P "$RUN/varnishd.pid" \
        -s malloc,64m \
        >"$RUN/varnishd.log" 2>&1 || { cat "$RUN/varnishd.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
        if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "varnish.sh: Varnish on 127.0.0.1:$PORT in front of 127.0.0.1:$BACKEND_PORT (run dir $RUN)" >&2
            echo "http://127.0.0.1:$PORT"
            return
        fi
        sleep 0.1
    done
    echo "varnish.sh: varnishd did not listen on 127.0.0.1:$PORT" >&2
    cat "$RUN/varnishd.log" >&2
    exit 1
}

down() {
    if running; then
        local pid
        pid="$(cat "$RUN/varnishd.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) running && echo "running (pid $(cat "$RUN/varnishd.pid"))" || { echo "not running"; exit 1; } ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
