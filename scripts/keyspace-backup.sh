#!/usr/bin/env bash
# Back up a region's keyspace with `nodetool snapshot` and restore it into a new keyspace
# with `nodetool import`, then rebuild the read models from the restored write side.
#
#   scripts/keyspace-backup.sh snapshot KEYSPACE DEST   snapshot every table, copy it to DEST
#   scripts/keyspace-backup.sh restore DEST KEYSPACE    create KEYSPACE's tables, import DEST,
#                                                       rebuild the read models
#
# For one node (a single-node ScyllaDB or Cassandra, and the test command's Cassandra). On a
# cluster, run `snapshot` on every node (each holds its token ranges) and restore with
# sstableloader or Scylla Manager, which stream each row to the nodes that own it; then
# run `stockflow rebuild-read-models` once. docs/backup.md says what each step keeps.
#
# Settings (environment):
#   NODETOOL           the nodetool command (default `nodetool`; the tests use
#                      `scripts/cassandra.sh nodetool`)
#   CASSANDRA_DATA_DIR the node's data directory (`data_file_directories`), where
#                      snapshots are written
#   STOCKFLOW          the stockflow binary (default `stockflow`)
#   STOCKFLOW_SCYLLA_NODES, STOCKFLOW_SCYLLA_REPLICATION, ...: as for `stockflow migrate`
set -euo pipefail

NODETOOL="${NODETOOL:-nodetool}"
STOCKFLOW="${STOCKFLOW:-stockflow}"

# Leases name the processes of the region that was snapshotted: a restored region's
# processes take fresh ones instead of waiting for those to expire.
SKIP_TABLES=" leases lease_members "

snapshot() {
    local keyspace=$1 dest=$2
    local data="${CASSANDRA_DATA_DIR:?set CASSANDRA_DATA_DIR to the node data directory}"
    local tag
    tag="stockflow-$(date -u +%Y%m%dT%H%M%SZ)-$$"
    if [[ -e "$dest" ]] && [[ -n "$(ls -A "$dest")" ]]; then
        echo "keyspace-backup.sh: $dest exists and is not empty" >&2; exit 1
    fi
    mkdir -p "$dest"
    # Flushes each table's memtable, then hard-links its SSTables: per table a consistent
    # copy, the tables at slightly different moments (the read models are rebuilt on
    # restore; see docs/backup.md for the write side).
    $NODETOOL snapshot -t "$tag" "$keyspace" >&2
    local copied=0
    for dir in "$data/$keyspace"/*/snapshots/"$tag"; do
        [[ -d "$dir" ]] || continue
        local table
        table="$(basename "$(dirname "$(dirname "$dir")")")"
        table="${table%-*}"
        cp -r "$dir" "$dest/$table"
        copied=$((copied + 1))
    done
    $NODETOOL clearsnapshot -t "$tag" -- "$keyspace" >&2
    if [[ $copied -eq 0 ]]; then
        echo "keyspace-backup.sh: no snapshot of $keyspace under $data" >&2; exit 1
    fi
    echo "keyspace-backup.sh: $copied tables of $keyspace in $dest (snapshot $tag)" >&2
}

restore() {
    local from=$1 keyspace=$2
    [[ -d "$from" ]] || { echo "keyspace-backup.sh: no backup at $from" >&2; exit 1; }
    # The tables, at the schema version of this binary (forward-only migrations: a backup
    # of an older schema gains the new columns, empty).
    "$STOCKFLOW" migrate --scylla-keyspace "$keyspace" >&2
    local imported=0
    for dir in "$from"/*/; do
        local table
        table="$(basename "$dir")"
        [[ "$SKIP_TABLES" == *" $table "* ]] && continue
        # import moves the files: work on a copy so the backup stays whole. It reads the
        # table from the directory's name and skips files elsewhere without a word, so
        # the copy is laid out as <keyspace>/<table>.
        local work
        work="$(mktemp -d)"
        mkdir -p "$work/$keyspace/$table"
        cp -r "$dir". "$work/$keyspace/$table/"
        rm -f "$work/$keyspace/$table/manifest.json" "$work/$keyspace/$table/schema.cql"
        if [[ -n "$(ls -A "$work/$keyspace/$table")" ]]; then
            $NODETOOL import "$keyspace" "$table" "$work/$keyspace/$table" >&2
            if [[ -n "$(ls -A "$work/$keyspace/$table")" ]]; then
                echo "keyspace-backup.sh: nodetool import left files of $table behind in $work" >&2
                exit 1
            fi
        fi
        rm -rf "$work"
        imported=$((imported + 1))
    done
    echo "keyspace-backup.sh: imported $imported tables into $keyspace" >&2
    "$STOCKFLOW" rebuild-read-models --store scylla --scylla-keyspace "$keyspace"
}

case "${1:-}" in
    snapshot) [[ $# -eq 3 ]] || { echo "usage: $0 snapshot KEYSPACE DEST" >&2; exit 2; }; snapshot "$2" "$3" ;;
    restore) [[ $# -eq 3 ]] || { echo "usage: $0 restore DEST KEYSPACE" >&2; exit 2; }; restore "$2" "$3" ;;
    *) echo "usage: $0 snapshot KEYSPACE DEST | restore DEST KEYSPACE" >&2; exit 2 ;;
esac
