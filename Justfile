# stockflow workflows. `just --list` shows them all.

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
    cargo test -p stockflow-domain -p stockflow-storage

# Format all code
fmt:
    cargo fmt --all

# Lint with warnings as errors
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark a fresh embedded platform: reserve+confirm and queries at 64 connections
bench connections="64" duration="20" skus="1000":
    ./scripts/bench.sh {{connections}} {{duration}} {{skus}}

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

# Run the platform with the write and read sides on a local Cassandra/ScyllaDB
dev-scylla nodes="127.0.0.1:9042" keyspace="stockflow":
    cargo run --release -p stockflow -- dev --store scylla --scylla-nodes {{nodes}} --scylla-keyspace {{keyspace}}

# Benchmark --store scylla on a local Cassandra, with the raw LWT ceiling beside it
bench-scylla connections="64" duration="20":
    ./scripts/bench-scylla.sh {{connections}} {{duration}}
