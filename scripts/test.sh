#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain.
# Installs what the tests need beyond it, then runs them. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- extra tools (each step installs only what is missing) ----------------------
# (sections are added here by the features that need them)

# ---- the Rust test suite -----------------------------------------------------------
cargo test
