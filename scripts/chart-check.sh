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
# The alert rules: valid for Prometheus, and doing what their unit tests say.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-0.316.0}"
promtool_dir="${STOCKFLOW_CACHE:-$HOME/.cache/stockflow}/promtool-$PROMETHEUS_VERSION"
promtool="$promtool_dir/promtool"
if [[ ! -x "$promtool" ]]; then
    echo "chart-check.sh: building promtool v$PROMETHEUS_VERSION (once)" >&2
    mkdir -p "$promtool_dir"
    GOBIN="$promtool_dir" CGO_ENABLED=0 go install "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_VERSION"
fi
"$promtool" check rules charts/stockflow-operator/files/stockflow-alerts.yaml
"$promtool" test rules tests/alerts/stockflow-alerts.test.yaml
monitored="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system \
    --api-versions monitoring.coreos.com/v1/PrometheusRule)"
grep -q '^kind: PrometheusRule$' <<<"$monitored" || { echo "chart-check.sh: no PrometheusRule where its CRD exists" >&2; exit 1; }
grep -q 'alert: StockflowProjectionOffsetGap' <<<"$monitored" || { echo "chart-check.sh: the PrometheusRule lacks its alerts" >&2; exit 1; }
rendered="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system --include-crds)"
for kind in CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service; do
    grep -q "^kind: $kind\$" <<<"$rendered" || { echo "chart-check.sh: rendered chart lacks a $kind" >&2; exit 1; }
done
# The RBAC stays least-privilege: the operator never reads Secrets.
if grep -A3 'resources:' <<<"$rendered" | grep -q secrets; then
    echo "chart-check.sh: the operator's RBAC must not grant Secrets" >&2; exit 1
fi
grep -q '^kind: PrometheusRule$' <<<"$rendered" && { echo "chart-check.sh: a PrometheusRule rendered without its CRD" >&2; exit 1; }
echo "chart-check.sh: helm lint and template are clean; the alert rules pass promtool"
