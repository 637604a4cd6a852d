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
# The dashboard: valid JSON whose every query is valid PromQL (checked by promtool as
# recording rules, with Grafana's variables bound), over metrics the code emits.
dashboard=charts/stockflow-operator/files/stockflow-dashboard.json
dashboard_rules="$(mktemp)"
trap 'rm -f "$dashboard_rules"' EXIT
python3 - "$dashboard" >"$dashboard_rules" <<'PY'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
if not exprs:
    sys.exit("the dashboard has no queries")
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    e = e.replace("$__rate_interval", "5m").replace("$namespace", ".*")
    print(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}")
PY
"$promtool" check rules "$dashboard_rules" >/dev/null
missing=""
for metric in $(grep -ohE 'stockflow_[a-z0-9_]+' "$dashboard" charts/stockflow-operator/files/stockflow-alerts.yaml |
    sed -E 's/_(bucket|sum|count)$//' | sort -u); do
    grep -rqF "\"$metric\"" services operator --include=*.rs || missing="$missing $metric"
done
[[ -z "$missing" ]] || { echo "chart-check.sh: the dashboard or alerts use metrics no code emits:$missing" >&2; exit 1; }
monitored="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system \
    --api-versions monitoring.coreos.com/v1/PrometheusRule)"
grep -q '^kind: PrometheusRule$' <<<"$monitored" || { echo "chart-check.sh: no PrometheusRule where its CRD exists" >&2; exit 1; }
grep -q 'alert: StockflowProjectionOffsetGap' <<<"$monitored" || { echo "chart-check.sh: the PrometheusRule lacks its alerts" >&2; exit 1; }
monitored="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system \
    --api-versions monitoring.coreos.com/v1/PodMonitor --api-versions monitoring.coreos.com/v1/ServiceMonitor)"
for kind in PodMonitor ServiceMonitor; do
    grep -q "^kind: $kind\$" <<<"$monitored" || { echo "chart-check.sh: no $kind where its CRD exists" >&2; exit 1; }
done
rendered="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system)"
# The CRD is a template (upgraded by helm upgrade), kept on uninstall, and can be left out.
grep -q 'helm.sh/resource-policy: keep' <<<"$rendered" || { echo "chart-check.sh: the CRD template is not kept on uninstall" >&2; exit 1; }
"$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system --set crds.install=false |
    grep -q '^kind: CustomResourceDefinition$' && { echo "chart-check.sh: crds.install=false still renders the CRD" >&2; exit 1; }
for kind in CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service ConfigMap; do
    grep -q "^kind: $kind\$" <<<"$rendered" || { echo "chart-check.sh: rendered chart lacks a $kind" >&2; exit 1; }
done
# The RBAC stays least-privilege: on Secrets, `get` alone (the operator reads their labels
# with metadata-only requests), never list or watch.
secret_rules="$(grep -c 'resources: \[.*"secrets".*\]' <<<"$rendered" || true)"
secret_verbs="$(grep -A1 'resources: \[.*"secrets".*\]' <<<"$rendered" | grep 'verbs:' || true)"
if [[ "$secret_rules" != 1 || "$secret_verbs" != *'verbs: ["get"]' ]]; then
    echo "chart-check.sh: the operator's RBAC may grant Secrets only get (found $secret_rules rule(s): $secret_verbs)" >&2; exit 1
fi
prefixed="$("$helm" template stockflow-operator charts/stockflow-operator --namespace stockflow-system \
    --set 'allowedImagePrefixes={registry.example.com/stockflow/,stockflow/stockflow:}')"
grep -q -- '- "--allowed-image-prefix=registry.example.com/stockflow/"' <<<"$prefixed" &&
    grep -q -- '- "--allowed-image-prefix=stockflow/stockflow:"' <<<"$prefixed" ||
    { echo "chart-check.sh: allowedImagePrefixes do not reach the operator's args" >&2; exit 1; }
for kind in PrometheusRule PodMonitor ServiceMonitor; do
    grep -q "^kind: $kind\$" <<<"$rendered" && { echo "chart-check.sh: a $kind rendered without its CRD" >&2; exit 1; }
done
grep -q 'grafana_dashboard: "1"' <<<"$rendered" || { echo "chart-check.sh: the dashboard ConfigMap lacks the sidecar label" >&2; exit 1; }
echo "chart-check.sh: helm lint and template are clean; the alert rules and the dashboard queries pass promtool"
