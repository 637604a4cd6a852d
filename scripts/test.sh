#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit, contract,
# integration and end-to-end tests. Everything the tests need is set up here.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the stockflow binary (end-to-end tests run it)"
cargo build --locked -p stockflow --bin stockflow

step "cargo test"
cargo test --workspace --locked
