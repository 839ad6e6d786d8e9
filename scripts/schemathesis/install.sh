#!/usr/bin/env bash
# Install the pinned Schemathesis into target/schemathesis-venv, only if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ST_VERSION="4.32.5"
VENV="$ROOT/target/schemathesis-venv"
if "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
    exit 0
fi
echo "== installing schemathesis $ST_VERSION into $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
