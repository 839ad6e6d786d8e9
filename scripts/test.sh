#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain.
# Installs what the tests need beyond it, then runs them. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- extra tools (each step installs only what is missing) ----------------------
# (sections are added here by the features that need them)

# The admin page's browser test: Debian's headless Chromium (+ chromedriver) and
# playwright-core from npm, pinned by tests/browser/package-lock.json.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi
command -v npm >/dev/null || { echo "scripts/test.sh: node and npm (20 or later) are needed for the browser test" >&2; exit 1; }
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

# The discovery tests' OpenID Provider: panva's oidc-provider from npm, pinned by
# tests/oidc-provider/package-lock.json.
if [ ! -f tests/oidc-provider/node_modules/oidc-provider/package.json ]; then
  (cd tests/oidc-provider && npm ci --no-audit --no-fund)
fi

# ---- the Rust test suite -----------------------------------------------------------
cargo test

# ---- the admin page in headless Chromium, against the binary cargo just built ------
cargo test --test integration browser:: -- --ignored --nocapture

# ---- discovery and the connection test against a real OpenID Provider on loopback --
cargo test --test integration discovery::provider -- --ignored
