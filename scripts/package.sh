#!/usr/bin/env bash
# Build the Debian package into target/debian/: the release binary, then the man
# page and shell completions generated from that very binary (target/package-assets/),
# then `cargo deb --no-build` ([package.metadata.deb] in Cargo.toml, packaging/).
# Installs cargo-deb (pinned) when missing. Prints the path of the .deb last.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi
for tool in dpkg-deb gzip strip; do
    command -v "$tool" >/dev/null || { echo "scripts/package.sh: $tool is needed (apt-get install dpkg-dev binutils gzip)" >&2; exit 1; }
done

echo "== cargo build --release --bin oidcvault"
cargo build --release --bin oidcvault
bin=target/release/oidcvault

echo "== man page and completions from $bin"
assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets"
"$bin" man > "$assets/oidcvault.1"
gzip -9n < "$assets/oidcvault.1" > "$assets/oidcvault.1.gz"
"$bin" completions bash > "$assets/oidcvault.bash"
"$bin" completions zsh > "$assets/_oidcvault"
"$bin" completions fish > "$assets/oidcvault.fish"
for f in oidcvault.1 oidcvault.bash _oidcvault oidcvault.fish; do
    [ -s "$assets/$f" ] || { echo "scripts/package.sh: $assets/$f is empty" >&2; exit 1; }
done

echo "== cargo deb"
mkdir -p target/debian
rm -f target/debian/oidcvault_*.deb
cargo deb --no-build --output target/debian/ >/dev/null
deb=$(ls target/debian/oidcvault_*.deb)
echo "built $deb ($(du -k "$deb" | cut -f1) KiB)"
