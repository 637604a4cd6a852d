#!/usr/bin/env bash
# Lints and renders the operator chart with helm, built once from its Go module and cached
# in ~/.cache/stockflow/helm-<version> (no release binaries are downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSION="${HELM_VERSION:-3.22.0}"
bin_dir="${STOCKFLOW_CACHE:-$HOME/.cache/stockflow}/helm-$HELM_VERSION"
helm="$bin_dir/helm"
if [[ ! -x "$helm" ]]; then
    echo "chart-check.sh: building helm v$HELM_VERSION (once)" >&2
    mkdir -p "$bin_dir"
    GOBIN="$bin_dir" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi
"$helm" lint --strict charts/stockflow-operator
rendered="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system --include-crds)"
for kind in CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service; do
    grep -q "^kind: $kind\$" <<<"$rendered" || { echo "chart-check.sh: rendered chart lacks a $kind" >&2; exit 1; }
done
# The RBAC stays least-privilege: the operator never reads Secrets.
if grep -A3 'resources:' <<<"$rendered" | grep -q secrets; then
    echo "chart-check.sh: the operator's RBAC must not grant Secrets" >&2; exit 1
fi
echo "chart-check.sh: helm lint and template are clean"
