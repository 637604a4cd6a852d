#!/usr/bin/env bash
# The HTTP contract, checked from outside the way client teams meet it:
#   1. schemathesis (pinned, from PyPI) runs every check and the stateful phase against a
#      fresh `stockflow dev` that requires tokens, with a fixed seed and bounded examples;
#      any failure fails this script;
#   2. a Python client generated from the same /openapi.json by openapi-python-client drives
#      catalog → adjustment → reserve → confirm → query through the generated code.
# The tools live in a virtualenv under ~/.cache/stockflow, keyed by their versions.
#
#   scripts/api-contract.sh [path/to/stockflow]   (default: target/debug/stockflow)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
CACHE="${STOCKFLOW_CACHE_DIR:-$HOME/.cache/stockflow}"
VENV="$CACHE/api-tools-st$SCHEMATHESIS_VERSION-opc$OPENAPI_PYTHON_CLIENT_VERSION"
BIN="${1:-target/debug/stockflow}"
PORT="${STOCKFLOW_CONTRACT_PORT:-18089}"
# Cases per operation and phase: enough to reach every documented constraint, few enough to
# keep the run to a minute or two on two cores.
MAX_EXAMPLES="${STOCKFLOW_CONTRACT_EXAMPLES:-100}"
SEED="${STOCKFLOW_CONTRACT_SEED:-20261202}"

if [[ ! -x "$VENV/bin/st" || ! -x "$VENV/bin/openapi-python-client" ]]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION and openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" \
        "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-contract.XXXXXX")"
dev_pid=""
stop() {
    if [[ -n "$dev_pid" ]]; then
        kill "$dev_pid" 2>/dev/null || true
        wait "$dev_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop EXIT

# A fresh platform that checks tokens, with the rate limit out of the way (schemathesis
# sends requests as fast as it can; the limiter's own answers are tested in Rust).
"$BIN" dev --data-dir "$work/data" --listen "127.0.0.1:$PORT" --auth-dev \
    --rate-limit-per-second 1000000 --rate-limit-burst 1000000 \
    >"$work/dev.log" 2>&1 &
dev_pid=$!
base="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    if ! kill -0 "$dev_pid" 2>/dev/null; then
        cat "$work/dev.log" >&2
        echo "stockflow dev exited before it was ready" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null
token="$("$BIN" token --data-dir "$work/data" --ttl 2h)"

# What the document's examples name (docs.rs), so the examples phase reaches success paths.
seed() {
    curl -fsS -o /dev/null -X "$1" "$base$2" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' ${3:+-H "Idempotency-Key: $3"} -d "$4"
}
seed PUT /v1/locations/store-1 "" '{"region":"north","kind":"store","name":"Store one"}'
seed PUT /v1/skus/SKU-1 "" '{"name":"Trail running shoe","attributes":{"brand":"Example"}}'
seed POST /v1/adjustments seed-1 '{"sku":"SKU-1","location":"store-1","delta":1000000,"reason":"receipt"}'

echo "==> schemathesis $SCHEMATHESIS_VERSION: all checks, every phase (seed $SEED, $MAX_EXAMPLES examples per operation)"
# Deterministic generation (which also keeps no example database between runs): the seed
# alone decides what is sent.
status=0
# From the scratch directory: schemathesis keeps a `.schemathesis/` cache in its working
# directory, which belongs to no one's checkout.
config="$PWD/tests/contract/schemathesis.toml"
# hooks.py registers the NDJSON serializer of the import upload.
hooks_dir="$PWD/tests/contract"
(cd "$work" && PYTHONPATH="$hooks_dir" SCHEMATHESIS_HOOKS=hooks "$VENV/bin/st" --config-file "$config" run "$base/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --header "Authorization: Bearer $token" \
    --seed "$SEED" \
    --max-examples "$MAX_EXAMPLES" \
    --generation-deterministic \
    --request-timeout 40 \
    --workers 1 \
    --no-color \
    --report junit --report-dir "$work/report") || status=$?
if [[ $status -ne 0 ]]; then
    echo "schemathesis found failures (exit $status); the platform's log ends with:" >&2
    tail -n 20 "$work/dev.log" >&2
    exit "$status"
fi

echo "==> a client generated from /openapi.json (openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION) drives reserve -> confirm -> query"
curl -fsS "$base/openapi.json" -o "$work/openapi.json"
# --fail-on-warning: a construct the generator cannot map fails the run.
"$VENV/bin/openapi-python-client" generate --path "$work/openapi.json" \
    --config tests/contract/openapi-python-client.yaml --meta none --fail-on-warning \
    --output-path "$work/stockflow_client" >/dev/null
PYTHONPATH="$work" STOCKFLOW_URL="$base" STOCKFLOW_TOKEN="$token" \
    "$VENV/bin/python" tests/contract/generated_client.py
