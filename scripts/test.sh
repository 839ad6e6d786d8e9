#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain.
# Installs what the tests need beyond it, then runs them. README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- extra tools (each step installs only what is missing) ----------------------

# Debian packages: `apt-get update` once, before the first install.
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# The admin page's browser test: Debian's headless Chromium (+ chromedriver) and
# playwright-core from npm, pinned by tests/browser/package-lock.json.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver
fi

# The cluster tests (tests/cluster/) start their own three-member etcd clusters
# on loopback ports: Debian's etcd-server (etcd), and etcd-client (etcdctl) for
# looking into one. The package also enables a system etcd on 2379/2380; the
# tests do not use it, so it is stopped and disabled when systemd runs.
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  apt_install etcd-server etcd-client
  if [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service || true
  fi
fi
command -v npm >/dev/null || { echo "scripts/test.sh: node and npm (20 or later) are needed for the browser test" >&2; exit 1; }
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

# Schemathesis (spec-driven fuzzing): a Python venv under target/, pinned version.
# python3 with venv comes with the machine; install Debian's if it is missing.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
fi
bash scripts/schemathesis/install.sh

# The bench script's chart generator (Python standard library; no Rust build).
python3 scripts/test_bench_charts.py

# The disk-full tests mount a small tmpfs; say so when this machine cannot
# (with CI=true they fail instead of skipping: CI runs as root).
if ! { [ "$(id -u)" = 0 ] && command -v mount >/dev/null; }; then
    if [ "${CI:-}" = true ]; then
        echo "NOTE: not root and CI=true: the disk-full tests (tests/disk_full.rs) will FAIL"
    else
        echo "NOTE: not root: the disk-full tests (tests/disk_full.rs) will be SKIPPED"
    fi
fi

# The OpenID Provider of the discovery tests and the browser sign-in: panva's
# oidc-provider from npm, pinned by tests/oidc-provider/package-lock.json.
if [ ! -f tests/oidc-provider/node_modules/oidc-provider/package.json ]; then
  (cd tests/oidc-provider && npm ci --no-audit --no-fund)
fi

# ---- the Rust test suite -----------------------------------------------------------
# A debug build: it holds the failpoint hook the crash tests of tests/ops_rotation.rs
# and tests/ops_passphrase.rs use.
cargo test

# ---- the release build holds no fault-injection hook ----------------------------------
# The hook (src/vault/keys.rs) is compiled with debug_assertions only. The debug
# binary cargo test just ran must hold its strings (so the check can see them),
# the release binary none of them.
cargo build --release --bin oidcvault
for s in OIDCVAULT_FAILPOINT keyring-after-tmp reencrypt-after-first; do
    if ! grep -qaF -- "$s" target/debug/oidcvault; then
        echo "scripts/test.sh: the debug binary lacks the failpoint string $s: the check is blind" >&2
        exit 1
    fi
    if grep -qaF -- "$s" target/release/oidcvault; then
        echo "scripts/test.sh: the release binary holds the failpoint string $s" >&2
        exit 1
    fi
done
echo "release binary: no failpoint hook"

# ---- the admin page and a sign-in through the broker (at oidc-provider's login
# form) in headless Chromium, against the binary cargo just built ---------------------
cargo test --test integration browser:: -- --ignored --nocapture

# ---- Schemathesis against the real binary (built by cargo test) -------------------------
bash scripts/schemathesis/run.sh target/debug/oidcvault

# ---- discovery and the connection test against a real OpenID Provider on loopback --
cargo test --test integration discovery::provider -- --ignored
