#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit, contract,
# integration and end-to-end tests. Everything the tests need is set up here.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1
# A clean clone gains nothing from incremental compilation, which about doubles target/
# (a checker whose disk was nearly full ran out of space 387 s into a run).
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step() { printf '\n==> %s\n' "$*"; }

# Java 17 and Maven run the test Cassandra and Kafka; install them where they are missing.
if ! { command -v mvn >/dev/null && ls /usr/lib/jvm/java-17-openjdk*/bin/java >/dev/null 2>&1; }; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        step "installing OpenJDK 17 and Maven (for the test Cassandra and Kafka)"
        apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
    fi
fi

# librdkafka's TLS and SCRAM link the system OpenSSL: headers and pkg-config to build.
if ! pkg-config --exists openssl 2>/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        step "installing libssl-dev and pkg-config (librdkafka's TLS and SCRAM)"
        apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
    else
        echo "OpenSSL headers not found: install libssl-dev and pkg-config" >&2
        exit 1
    fi
fi

# The store agent's tests: its POS capture reads a real PostgreSQL (logical replication), and
# its status page is loaded in a real headless Chromium. The edge-cache test runs Varnish
# with xkey (tests/edge_cache.rs starts it through scripts/varnish.sh). All Debian packages.
missing=()
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
{ command -v varnishd >/dev/null && compgen -G "/usr/lib/*/varnish/vmods/libvmod_xkey.so" >/dev/null; } \
    || missing+=(varnish varnish-modules)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        step "installing ${missing[*]} (POS capture, status page and edge-cache tests)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing ${missing[*]}: install Debian's packages of that name" >&2
        exit 1
    fi
fi

# A fresh run writes about 8 GB (7 GB of target/, the servers and tools cached beside it);
# say so before cargo fails on it.
mkdir -p target
free_gb="$(df -Pk target | awk 'NR == 2 { print int($4 / 1048576) }')"
step "disk: ${free_gb} GB free where target/ lives (a fresh run writes about 8 GB)"
if ((free_gb < 10)); then
    echo "warning: under 10 GB free; a fresh build may run out of space" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "generated files are up to date (crds/, chart CRDs)"
./scripts/generate.sh --check

step "helm lint and template of the operator chart"
./scripts/chart-check.sh

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the stockflow binary (end-to-end tests run it)"
cargo build --locked -p stockflow --bin stockflow

step "the previous release's stockflow, which tests/upgrade.rs runs beside this one (built once, cached)"
STOCKFLOW_PREVIOUS_BIN="$(./scripts/previous-release.sh)"
export STOCKFLOW_PREVIOUS_BIN

step "the HTTP contract: schemathesis and a generated client against stockflow dev"
./scripts/api-contract.sh target/debug/stockflow

step "the events' AsyncAPI document through the official parser (@asyncapi/parser)"
./scripts/asyncapi-check.sh target/debug/stockflow

cleanup() {
    ./scripts/cassandra.sh down || true
    ./scripts/kafka.sh down || true
    ./scripts/kube-apiserver.sh down || true
    ./scripts/postgres.sh down || true
    [[ -n "${STOCKFLOW_TEST_TLS_DIR:-}" ]] && rm -rf "$STOCKFLOW_TEST_TLS_DIR"
}
trap cleanup EXIT

step "test TLS material (a test CA and the servers' certificate, made with keytool)"
export STOCKFLOW_TEST_TLS_DIR="${TMPDIR:-/tmp}/stockflow-tls-$$"
./scripts/tls.sh "$STOCKFLOW_TEST_TLS_DIR"
export CASSANDRA_TLS_DIR="$STOCKFLOW_TEST_TLS_DIR" KAFKA_TLS_DIR="$STOCKFLOW_TEST_TLS_DIR"

step "start Cassandra (the CQL/LWT stand-in for ScyllaDB; plain and TLS clients) on 127.0.0.1"
export CASSANDRA_PORT="${CASSANDRA_PORT:-19042}"
export CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17042}"
./scripts/cassandra.sh up
export STOCKFLOW_CQL_NODES="127.0.0.1:$CASSANDRA_PORT"

step "start Kafka (KRaft, single node; PLAINTEXT and SASL_SSL listeners) on 127.0.0.1"
export KAFKA_PORT="${KAFKA_PORT:-19092}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
export KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-19094}"
./scripts/kafka.sh up
export STOCKFLOW_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# Not STOCKFLOW_KAFKA_*: those are the binary's own settings, which every process the tests
# start would read.
export STOCKFLOW_TEST_KAFKA_SASL_SSL_BROKERS="127.0.0.1:$KAFKA_SASL_PORT"
# The bus-outage test freezes this broker with SIGSTOP (and thaws it).
STOCKFLOW_KAFKA_PID="$(cat "${KAFKA_RUN_DIR:-${TMPDIR:-/tmp}/stockflow-kafka-$KAFKA_PORT}/pid")"
export STOCKFLOW_KAFKA_PID

step "start a real kube-apiserver over kine on 127.0.0.1 (built once, cached)"
export KUBE_API_PORT="${KUBE_API_PORT:-16443}"
export KINE_PORT="${KINE_PORT:-12379}"
STOCKFLOW_KUBECONFIG="$(./scripts/kube-apiserver.sh up)"
export STOCKFLOW_KUBECONFIG

step "start PostgreSQL (the POS database the store agent captures sales from) on 127.0.0.1"
export POSTGRES_PORT="${POSTGRES_PORT:-15432}"
STOCKFLOW_TEST_POSTGRES_URL="$(./scripts/postgres.sh up)"
export STOCKFLOW_TEST_POSTGRES_URL

step "install the webhook receiver's verifier (standardwebhooks from PyPI) for tests/webhooks.rs"
STOCKFLOW_WEBHOOK_PYTHON="$(./scripts/webhook-tools.sh)"
export STOCKFLOW_WEBHOOK_PYTHON

step "cargo test (embedded, contract, Cassandra, Kafka, PostgreSQL, end-to-end)"
test_log="${TMPDIR:-/tmp}/stockflow-cargo-test-$$.log"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$test_log"
# Nothing is skipped silently: every test that did not run says why.
skipped="$(grep -E '^test .* \.\.\. ignored' "$test_log" | sed -E 's/^test (.*) \.\.\. ignored(, )?/  \1: /' || true)"
rm -f "$test_log"
if [[ -n "$skipped" ]]; then
    step "not run here, and why"
    printf '%s\n' "$skipped"
fi

# No registry ships Fluvio's server, so CI has none; where a cluster is reachable, its
# adapter runs the same contract and the region runs on it end to end.
if [[ -n "${FLUVIO_ENDPOINT:-}" ]]; then
    step "Fluvio: the event-log contract and the four roles on $FLUVIO_ENDPOINT"
    cargo test --locked -p stockflow-bus --test fluvio -- --ignored
    cargo test --locked -p stockflow-e2e --test roles -- --ignored
    cargo test --locked -p stockflow-e2e --test cloudevents -- --ignored
fi
