#!/usr/bin/env bash
# Regenerates every generated file: the InventoryRegion CRD in crds/ and its copy in the
# Helm chart, and the references rendered from the code (docs/reference/: every setting of
# the binary, every field of the CRD). `scripts/generate.sh --check` fails if a committed
# file differs from what the code renders.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo run --quiet --locked -p stockflow-operator -- crd > "$work/crd.yaml"
cargo run --quiet --locked -p stockflow-operator -- crd-reference > "$work/inventoryregion.md"
cargo run --quiet --locked -p stockflow --bin stockflow -- reference > "$work/cli.md"
# generated file <- what renders it
pairs=(
    "crds/inventoryregions.stockflow.dev.yaml:$work/crd.yaml"
    "charts/stockflow-operator/crds/inventoryregions.stockflow.dev.yaml:$work/crd.yaml"
    "docs/reference/inventoryregion.md:$work/inventoryregion.md"
    "docs/reference/cli.md:$work/cli.md"
)
status=0
for pair in "${pairs[@]}"; do
    target="${pair%%:*}" fresh="${pair#*:}"
    if [[ "${1:-}" == "--check" ]]; then
        if ! diff -u "$target" "$fresh"; then
            echo "generate.sh: $target is out of date; run scripts/generate.sh (or just generate)" >&2
            status=1
        fi
    else
        mkdir -p "$(dirname "$target")"
        cp "$fresh" "$target"
    fi
done
exit $status
