#!/usr/bin/env bash
# The AsyncAPI document of the events, checked by the official AsyncAPI parser
# (@asyncapi/parser, pinned, from npm): the document `stockflow asyncapi` prints (the one
# /asyncapi.json serves and docs/reference/asyncapi.json commits) must parse as AsyncAPI 3.0
# with no error; its warnings and hints are printed. The parser lives under ~/.cache/stockflow,
# keyed by its version, never in the repository.
#
#   scripts/asyncapi-check.sh [path/to/stockflow | path/to/document.json]
#                             (default: target/debug/stockflow)
set -euo pipefail
cd "$(dirname "$0")/.."

PARSER_VERSION=3.6.6
CACHE="${STOCKFLOW_CACHE_DIR:-$HOME/.cache/stockflow}"
TOOL="$CACHE/asyncapi-parser-$PARSER_VERSION"
INPUT="${1:-target/debug/stockflow}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing Node.js and npm (the AsyncAPI parser runs on them)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "node and npm are needed: install Debian's nodejs and npm packages" >&2
        exit 1
    fi
fi

if [[ ! -f "$TOOL/node_modules/@asyncapi/parser/package.json" ]]; then
    echo "installing @asyncapi/parser $PARSER_VERSION into $TOOL"
    rm -rf "$TOOL"
    mkdir -p "$TOOL"
    npm install --prefix "$TOOL" --no-save --no-audit --no-fund --loglevel=error \
        "@asyncapi/parser@$PARSER_VERSION" >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-asyncapi.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if [[ "$INPUT" == *.json ]]; then
    cp "$INPUT" "$work/asyncapi.json"
else
    "$INPUT" asyncapi >"$work/asyncapi.json"
fi

# The parser validates the document against the AsyncAPI 3.0 schema, every message payload
# against its schema format (JSON Schema draft-07), resolves every $ref, and runs the
# AsyncAPI ruleset; severity 0 is an error.
NODE_PATH="$TOOL/node_modules" node -e '
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");
const file = process.argv[1];
const names = ["error", "warning", "info", "hint"];
(async () => {
    const { document, diagnostics } = await new Parser().parse(fs.readFileSync(file, "utf8"), { source: file });
    for (const d of diagnostics) {
        console.log(`${names[d.severity] ?? d.severity} ${d.code} at /${d.path.join("/")}: ${d.message}`);
    }
    const errors = diagnostics.filter((d) => d.severity === 0).length;
    if (!document || errors > 0) {
        console.error(`asyncapi-check: the document is not valid AsyncAPI (${errors} errors)`);
        process.exit(1);
    }
    const messages = document.allMessages().length;
    console.log(`asyncapi-check: valid AsyncAPI ${document.version()}, ${document.allChannels().length} channel, ${document.allOperations().length} operation, ${messages} messages, ${diagnostics.length} diagnostics`);
})().catch((e) => { console.error(e); process.exit(1); });
' "$work/asyncapi.json"
