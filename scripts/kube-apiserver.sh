#!/usr/bin/env bash
# A real Kubernetes control plane for the operator tests, without Docker: kube-apiserver
# built from the k8s.io/kubernetes Go module over kine (etcd API on SQLite), both on
# 127.0.0.1. No kubelets, so Deployments get no pods; tests set status themselves.
#
#   scripts/kube-apiserver.sh build   build (once, cached by version) kube-apiserver and kine
#   scripts/kube-apiserver.sh up      start both; prints the kubeconfig path
#   scripts/kube-apiserver.sh down    stop both and delete their state
#
# Binaries live in ~/.cache/stockflow/kube-<k8s>-kine-<kine>/.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
KINE_VERSION="${KINE_VERSION:-0.17.5}"
API_PORT="${KUBE_API_PORT:-16443}"
KINE_PORT="${KINE_PORT:-12379}"
CACHE="${STOCKFLOW_CACHE:-$HOME/.cache/stockflow}/kube-$K8S_VERSION-kine-$KINE_VERSION"
RUN="${KUBE_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-kube-$API_PORT}"
TOKEN="stockflow-test-token"

build() {
    [[ -x "$CACHE/kube-apiserver" && -x "$CACHE/kine" ]] && return
    command -v go >/dev/null || { echo "kube-apiserver.sh: go not found" >&2; exit 1; }
    mkdir -p "$CACHE"
    local work
    work="$(mktemp -d)"
    echo "kube-apiserver.sh: building kine v$KINE_VERSION" >&2
    GOBIN="$CACHE" CGO_ENABLED=1 go install "github.com/k3s-io/kine@v$KINE_VERSION"
    echo "kube-apiserver.sh: building kube-apiserver v$K8S_VERSION (several minutes, once)" >&2
    # k8s.io/kubernetes requires its staging modules at v0.0.0; replace each with the
    # published v0.<minor>.<patch> (kubernetes/kubernetes#79384).
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    local staging_version="v0.${K8S_VERSION#1.}"
    local minor="${K8S_VERSION#1.}"
    minor="${minor%%.*}"
    (
        cd "$work"
        cat > go.mod <<MOD
module stockflow.dev/kubeapiserver

go 1.25

require k8s.io/kubernetes v$K8S_VERSION
MOD
        grep -E '^\s*k8s.io/[a-z-]+ => ./staging/src/k8s.io/' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
            echo "replace $m => $m $staging_version" >> go.mod
        done
        cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
        GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v$K8S_VERSION"
        CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$CACHE/kube-apiserver" \
            -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
            k8s.io/kubernetes/cmd/kube-apiserver
    )
    rm -rf "$work"
}

wait_port() {
    local port=$1 what=$2 pid=$3
    for _ in $(seq 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        kill -0 "$pid" 2>/dev/null || { echo "kube-apiserver.sh: $what exited:" >&2; tail -20 "$RUN/$what.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "kube-apiserver.sh: $what did not listen on $port" >&2; tail -20 "$RUN/$what.log" >&2; exit 1
}

up() {
    if [[ -f "$RUN/apiserver.pid" ]] && kill -0 "$(cat "$RUN/apiserver.pid")" 2>/dev/null; then
        echo "$RUN/kubeconfig"; return
    fi
    build
    rm -rf "$RUN"
    mkdir -p "$RUN/certs" "$RUN/kine"
    openssl genrsa -out "$RUN/certs/sa.key" 2048 2>/dev/null
    openssl rsa -in "$RUN/certs/sa.key" -pubout -out "$RUN/certs/sa.pub" 2>/dev/null
    echo "$TOKEN,stockflow-test,1,\"system:masters\"" > "$RUN/tokens.csv"
    "$CACHE/kine" --listen-address "127.0.0.1:$KINE_PORT" \
        --endpoint "sqlite://$RUN/kine/state.db?_journal=WAL&cache=shared" \
        --metrics-bind-address 127.0.0.1:0 >"$RUN/kine.log" 2>&1 &
    echo $! > "$RUN/kine.pid"
    wait_port "$KINE_PORT" kine "$(cat "$RUN/kine.pid")"
    "$CACHE/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$KINE_PORT" \
        --bind-address 127.0.0.1 --secure-port "$API_PORT" --cert-dir "$RUN/certs" \
        --token-auth-file "$RUN/tokens.csv" --authorization-mode RBAC \
        --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
        --disable-admission-plugins ServiceAccount \
        --service-account-issuer "https://127.0.0.1:$API_PORT" \
        --service-account-key-file "$RUN/certs/sa.pub" \
        --service-account-signing-key-file "$RUN/certs/sa.key" \
        --storage-media-type application/json --watch-cache=true \
        --profiling=false --v=1 >"$RUN/apiserver.log" 2>&1 &
    echo $! > "$RUN/apiserver.pid"
    wait_port "$API_PORT" apiserver "$(cat "$RUN/apiserver.pid")"
    cat > "$RUN/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$API_PORT
    insecure-skip-tls-verify: true
users:
- name: test
  user:
    token: $TOKEN
contexts:
- name: test
  context: {cluster: test, user: test, namespace: default}
current-context: test
KC
    # Ready when /readyz answers.
    for _ in $(seq 120); do
        if curl -fsk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
            echo "$RUN/kubeconfig"; return
        fi
        sleep 0.5
    done
    echo "kube-apiserver.sh: apiserver not ready" >&2; tail -30 "$RUN/apiserver.log" >&2; down; exit 1
}

down() {
    for p in apiserver kine; do
        if [[ -f "$RUN/$p.pid" ]]; then
            kill "$(cat "$RUN/$p.pid")" 2>/dev/null || true
        fi
    done
    sleep 1
    for p in apiserver kine; do
        [[ -f "$RUN/$p.pid" ]] && kill -9 "$(cat "$RUN/$p.pid")" 2>/dev/null || true
    done
    rm -rf "$RUN"
}

case "${1:-}" in
    build) build ;;
    up) up ;;
    down) down ;;
    *) echo "usage: $0 build|up|down" >&2; exit 2 ;;
esac
