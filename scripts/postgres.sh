#!/usr/bin/env bash
# A throwaway PostgreSQL for the store agent's POS-capture tests (logical replication).
#
#   scripts/postgres.sh up       initdb (once per run), start, wait; prints the URL
#   scripts/postgres.sh down     stop it and delete its data
#   scripts/postgres.sh status
#   scripts/postgres.sh pid      the postmaster's process id
#
# It plays the POS's own database: the agent reads a sales table from it by logical
# replication (pgoutput), so the server runs with wal_level=logical and a small
# max_slot_wal_keep_size, which lets a test invalidate a slot on purpose. It listens on
# 127.0.0.1:$POSTGRES_PORT (default 15432) only, with its socket in the run directory, and
# keeps its data there too. Debian's postgresql package provides the server (the test
# command installs it); run as root, the server runs as the `postgres` user.
#
# The tests run it without fsync (their data is thrown away). POSTGRES_DURABLE=1 keeps
# PostgreSQL's defaults instead (fsync, full-page writes, synchronous commit), for
# scripts/bench-pg.sh, whose baseline must make every commit durable as stockflow does.
set -euo pipefail

PORT="${POSTGRES_PORT:-15432}"
RUN="${POSTGRES_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-postgres-$PORT}"
USER_NAME="stockflow"

bin_dir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/pg_ctl" ]] && { echo "$dir"; return; }
    done
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return; }
    echo "postgres.sh: no PostgreSQL server found: install Debian's postgresql package" >&2
    exit 1
}

# Runs a server binary as the `postgres` user when we are root (initdb refuses root).
as_owner() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() {
    echo "postgresql://$USER_NAME@127.0.0.1:$PORT/postgres"
}

up() {
    local bin
    bin="$(bin_dir)"
    if [[ -f "$RUN/data/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$RUN/data" status >/dev/null 2>&1; then
        url
        return
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN"
    [[ $(id -u) == 0 ]] && chown postgres "$RUN"
    # Trust on 127.0.0.1 and the private socket only: a test server, never reachable
    # from another host.
    as_owner "$bin/initdb" -D "$RUN/data" -U "$USER_NAME" --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$RUN/initdb.log" 2>&1 || { cat "$RUN/initdb.log" >&2; exit 1; }
    cat >>"$RUN/data/pg_hba.conf" <<HBA
host replication $USER_NAME 127.0.0.1/32 trust
HBA
    local durability="-c fsync=off -c full_page_writes=off"
    [[ "${POSTGRES_DURABLE:-0}" == 1 ]] && durability=""
    as_owner "$bin/pg_ctl" -D "$RUN/data" -l "$RUN/server.log" -w -t 60 start -o \
        "-p $PORT -k $RUN -c listen_addresses=127.0.0.1 -c wal_level=logical \
         -c max_replication_slots=20 -c max_wal_senders=20 -c max_slot_wal_keep_size=64MB \
         -c max_connections=200 $durability" >/dev/null \
        || { cat "$RUN/server.log" >&2; exit 1; }
    echo "postgres.sh: PostgreSQL on 127.0.0.1:$PORT (data in $RUN)" >&2
    url
}

down() {
    local bin
    bin="$(bin_dir)"
    if [[ -d "$RUN/data" ]]; then
        as_owner "$bin/pg_ctl" -D "$RUN/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$RUN"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) as_owner "$(bin_dir)/pg_ctl" -D "$RUN/data" status ;;
    pid) head -1 "$RUN/data/postmaster.pid" ;;
    *) echo "usage: $0 up|down|status|pid" >&2; exit 2 ;;
esac
