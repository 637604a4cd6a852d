#!/usr/bin/env bash
# The webhook end-to-end test's receiver verifies deliveries with the official
# `standardwebhooks` library from PyPI (pinned). This installs it into a virtualenv under
# ~/.cache/stockflow, keyed by its version, and prints the virtualenv's python, which
# tests/webhooks.rs reads from STOCKFLOW_WEBHOOK_PYTHON:
#
#   export STOCKFLOW_WEBHOOK_PYTHON="$(scripts/webhook-tools.sh)"
#   cargo test -p stockflow-e2e --test webhooks
set -euo pipefail

STANDARDWEBHOOKS_VERSION=1.3.0
CACHE="${STOCKFLOW_CACHE_DIR:-$HOME/.cache/stockflow}"
VENV="$CACHE/webhook-tools-sw$STANDARDWEBHOOKS_VERSION"

if ! "$VENV/bin/python" -c "import standardwebhooks" >/dev/null 2>&1; then
    echo "installing standardwebhooks $STANDARDWEBHOOKS_VERSION into $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "standardwebhooks==$STANDARDWEBHOOKS_VERSION" >&2
fi
echo "$VENV/bin/python"
