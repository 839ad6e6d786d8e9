#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain.
# Installs what the tests need beyond it, then runs them. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- extra tools (each step installs only what is missing) ----------------------
# (sections are added here by the features that need them)

# Schemathesis (spec-driven fuzzing): a Python venv under target/, pinned version.
# python3 with venv comes with the machine; install Debian's if it is missing.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update && apt-get install -y python3 python3-venv
fi
bash scripts/schemathesis/install.sh

# The disk-full tests mount a small tmpfs; say so when this machine cannot.
if ! { [ "$(id -u)" = 0 ] && command -v mount >/dev/null; }; then
    echo "NOTE: not root: the disk-full tests (tests/disk_full.rs) will be SKIPPED"
fi

# ---- the Rust test suite -----------------------------------------------------------
cargo test

# ---- Schemathesis against the real binary (built by cargo test) -------------------------
bash scripts/schemathesis/run.sh target/debug/oidcvault
