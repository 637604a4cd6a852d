# stockflow workflows. `just --list` shows them all.

# What `deploy-deps` installs on kind, pinned (bump them here, together).
cert_manager_version := "v1.16.2"
scylla_operator_version := "v1.15.0"
fluvio_version := "0.18.1"

# List the recipes
default:
    @just --list

# Run the whole platform on the embedded backend (127.0.0.1:8080, data in ./stockflow-data)
dev *ARGS:
    cargo run --release -p stockflow -- dev {{ARGS}}

# Run the whole test suite exactly as CI does
test:
    ./scripts/test.sh

# Run only the fast unit and contract tests
test-unit:
    cargo test -p stockflow-domain -p stockflow-storage --lib

# Format all code
fmt:
    cargo fmt --all

# Lint with warnings as errors
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark a fresh embedded platform: reserve+confirm and queries at 64 connections
bench connections="64" duration="20" skus="1000":
    ./scripts/bench.sh {{connections}} {{duration}} {{skus}}

# Sustained reserve+confirm load on a fresh embedded platform, printing WAL and data-directory sizes over time
bench-wal duration="600" connections="64" skus="1000":
    ./scripts/bench-wal.sh {{duration}} {{connections}} {{skus}}

# Expiry at scale: a 1 s TTL burst, then a backlog overdue at once after a restart.
bench-expiry reservations="100000" connections="64" skus="100":
    ./scripts/bench-expiry.sh {{reservations}} {{connections}} {{skus}}

# One hour of mixed load; RSS and disk sampled each minute must stay flat after warm-up
soak minutes="60" rate="300":
    ./scripts/soak.sh {{minutes}} {{rate}}

# Print the OpenAPI document of a running platform
openapi addr="127.0.0.1:8080":
    curl -s http://{{addr}}/openapi.json

# Delete the local dev data directory
clean-data:
    rm -rf stockflow-data

# Start a single-node Cassandra (ScyllaDB stand-in) on 127.0.0.1:9042; jars cached in ~/.cache/stockflow
cassandra-up:
    ./scripts/cassandra.sh up

# Stop the Cassandra started by cassandra-up and delete its data
cassandra-down:
    ./scripts/cassandra.sh down

# Start a single-node Kafka (KRaft) on 127.0.0.1:9092; jars cached in ~/.cache/stockflow
kafka-up:
    ./scripts/kafka.sh up

# Stop the Kafka started by kafka-up and delete its data
kafka-down:
    ./scripts/kafka.sh down

# Start Varnish (sample VCL, xkey) on 127.0.0.1:16081 in front of stockflow dev on :8080
varnish-up:
    ./scripts/varnish.sh up

# Stop the Varnish started by varnish-up and delete its run directory
varnish-down:
    ./scripts/varnish.sh down

# Run the whole platform in one process behind the local Varnish, purging and warming it
dev-edge:
    cargo run --release -p stockflow -- dev --edge-purge-url http://127.0.0.1:16081/ --edge-ttl-seconds 300

# Run the whole platform in one process with the events on a local Kafka topic
dev-kafka brokers="127.0.0.1:9092":
    cargo run --release -p stockflow -- dev --bus kafka --kafka-brokers {{brokers}}

# Run the platform with the write and read sides on a local Cassandra/ScyllaDB
dev-scylla nodes="127.0.0.1:9042" keyspace="stockflow":
    cargo run --release -p stockflow -- dev --store scylla --scylla-nodes {{nodes}} --scylla-keyspace {{keyspace}}

# Benchmark --store scylla on a local Cassandra, with the raw LWT ceiling beside it
bench-scylla connections="64" duration="20":
    ./scripts/bench-scylla.sh {{connections}} {{duration}}

# The same checkout as transactions on a throwaway durable PostgreSQL (the baseline)
bench-pg connections="64" duration="20":
    ./scripts/bench-pg.sh {{connections}} {{duration}}

# The bus alone: Kafka (16 partitions) and `stockflow projector` as its own process on Cassandra
bench-bus duration="20" skus="1000":
    ./scripts/bench-bus.sh {{duration}} {{skus}}

# Every cost-per-command figure in one run, each beside its baseline
bench-all connections="64" duration="20":
    ./scripts/bench-all.sh {{connections}} {{duration}}

# Backup, restore and rebuild times for a region of N keys, embedded and on Cassandra
bench-backup keys="100000":
    ./scripts/bench-backup.sh {{keys}}

# Regenerate crds/ (and the chart's copy) from the operator's CRD types
generate:
    ./scripts/generate.sh

# Validate the events' AsyncAPI document with the official parser (@asyncapi/parser, cached)
asyncapi-check:
    cargo build -p stockflow --bin stockflow
    ./scripts/asyncapi-check.sh target/debug/stockflow

# Build the kube-apiserver and kine used by the operator tests (cached in ~/.cache/stockflow)
apiserver-build:
    ./scripts/kube-apiserver.sh build

# Start a real kube-apiserver over kine on 127.0.0.1 and print the kubeconfig path
apiserver-up:
    ./scripts/kube-apiserver.sh up

# Stop the kube-apiserver started by apiserver-up
apiserver-down:
    ./scripts/kube-apiserver.sh down

# Create the local kind cluster from kind-config.yaml
kind-up:
    kind create cluster --config kind-config.yaml

# Delete the local kind cluster
kind-down:
    kind delete cluster --name stockflow

# Build the stockflow and operator images and load them into kind
images tag="0.1.0":
    docker build -t stockflow/stockflow:{{tag}} .
    docker build -t stockflow/stockflow-operator:{{tag}} -f operator/Dockerfile .
    kind load docker-image --name stockflow stockflow/stockflow:{{tag}} stockflow/stockflow-operator:{{tag}}

# Install on kind, at the pinned versions above: cert-manager (the scylla-operator's
# webhooks need it), the scylla-operator and a one-node ScyllaDB cluster from its charts, and
# a Fluvio cluster (`config/samples/north.yaml` uses Fluvio) with the fluvio CLI of that version.
deploy-deps:
    helm repo add scylla https://scylla-operator-charts.storage.googleapis.com/stable
    helm repo add jetstack https://charts.jetstack.io
    helm repo update
    helm upgrade --install cert-manager jetstack/cert-manager --version {{cert_manager_version}} --namespace cert-manager --create-namespace --set crds.enabled=true --wait
    helm upgrade --install scylla-operator scylla/scylla-operator --version {{scylla_operator_version}} --namespace scylla-operator --create-namespace --wait
    helm upgrade --install scylla scylla/scylla --version {{scylla_operator_version}} --namespace scylla --create-namespace --set datacenter=datacenter1 --set racks[0].name=rack1 --set racks[0].members=1 --wait
    fluvio version | grep -q 'Fluvio CLI *: *{{fluvio_version}}' || { echo "deploy-deps needs the fluvio CLI {{fluvio_version}} (fvm install {{fluvio_version}})" >&2; exit 1; }
    fluvio cluster start --k8s --namespace fluvio

# Install the operator chart (CRDs, RBAC, Deployment) into kind
deploy tag="0.1.0":
    helm upgrade --install stockflow-operator charts/stockflow-operator --namespace stockflow-system --create-namespace --set image.tag={{tag}} --wait

# End-to-end test on kind: apply a region, wait for Available, reserve and confirm, delete
e2e:
    cargo test -p stockflow-e2e --test kind -- --ignored --nocapture

# Lint and render the operator chart (helm built from its Go module, cached)
chart-check:
    ./scripts/chart-check.sh
