#!/usr/bin/env bash
# Regenerates every generated file: the InventoryRegion CRD in crds/ and its copy in the
# Helm chart. `scripts/generate.sh --check` fails if the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
cargo run --quiet --locked -p stockflow-operator -- crd > "$tmp"
targets=(crds/inventoryregions.stockflow.dev.yaml charts/stockflow-operator/crds/inventoryregions.stockflow.dev.yaml)
if [[ "${1:-}" == "--check" ]]; then
    for t in "${targets[@]}"; do
        if ! diff -u "$t" "$tmp"; then
            echo "generate.sh: $t is out of date; run scripts/generate.sh (or just generate)" >&2
            exit 1
        fi
    done
    exit 0
fi
for t in "${targets[@]}"; do cp "$tmp" "$t"; done
