#!/usr/bin/env bash
# The previous release's `stockflow` binary, for the rolling-upgrade test (tests/upgrade.rs),
# which runs it beside this checkout's build on one keyspace. Built once from git history
# into ~/.cache/stockflow, keyed by commit (reusing this checkout's compiled dependencies, so
# only the workspace's own crates compile), and printed:
#
#   export STOCKFLOW_PREVIOUS_BIN="$(scripts/previous-release.sh)"
#   cargo test -p stockflow-e2e --test upgrade
#
# The pin is the oldest build the current schema admits (`readers_from` of the newest
# migration in services/storage/src/scylla/cql/schema.rs): d4a43e6 is schema 14, and
# schemas 15 and 16 only add tables it never reads. A migration that raises readers_from
# moves the pin to the first build on that schema; the test fails until it does (the old
# build reports not ready).
set -euo pipefail
cd "$(dirname "$0")/.."

PREVIOUS_RELEASE=d4a43e6e8000836cb0074f7b8fe1192273bf5993
CACHE="${STOCKFLOW_CACHE_DIR:-$HOME/.cache/stockflow}"
OUT="$CACHE/previous-${PREVIOUS_RELEASE:0:12}"

if [[ ! -x "$OUT/stockflow" ]]; then
    if ! git cat-file -e "$PREVIOUS_RELEASE^{commit}" 2>/dev/null; then
        # A shallow clone lacks it: fetch that one commit from where this clone came from.
        echo "fetching the previous release $PREVIOUS_RELEASE" >&2
        git fetch --quiet --depth=1 origin "$PREVIOUS_RELEASE" >&2 || {
            echo "commit $PREVIOUS_RELEASE (the previous release) is not in this clone and could not be fetched: clone with history" >&2
            exit 1
        }
    fi
    echo "building the previous release's stockflow ($PREVIOUS_RELEASE) into $OUT" >&2
    # Cargo names a workspace crate's artifacts by its path inside the workspace, so the old
    # sources built in this checkout's target directory would overwrite this build's
    # artifacts and leave them looking fresh. They build in a target directory of their own
    # instead, seeded with hard links to this checkout's dependency artifacts (the same
    # crates at the same versions, so only the workspace's own crates compile) minus the
    # workspace's, which the old build writes anew and never through a link.
    work="$PWD/target/previous-release"
    rm -rf "$work"
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/src" "$work/target/debug"
    git archive "$PREVIOUS_RELEASE" | tar -x -C "$work/src"
    for dir in deps build .fingerprint; do
        if [[ -d "target/debug/$dir" ]]; then
            cp -al "target/debug/$dir" "$work/target/debug/"
        fi
    done
    rm -rf "$work/target/debug/"{deps,build,.fingerprint}/*stockflow*
    CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$work/target" cargo build --quiet --locked \
        --manifest-path "$work/src/Cargo.toml" -p stockflow --bin stockflow >&2
    mkdir -p "$OUT"
    cp "$work/target/debug/stockflow" "$OUT/stockflow.partial"
    mv "$OUT/stockflow.partial" "$OUT/stockflow"
fi
echo "$OUT/stockflow"
