#!/usr/bin/env bash
# Builds blockdiff-agent, the dump helper that blockdiff-backup copies to
# remote hosts, as a statically linked x86-64 Linux executable (glibc with
# crt-static: no dynamic loader, no shared libraries), so that it runs on any
# x86-64 Linux host whatever its distribution.
#
#   scripts/build-agent.sh [OUT]     # default OUT: target/agent/blockdiff-agent
#
# Install it beside blockdiff-backup (e.g. /usr/local/bin/blockdiff-agent), or
# point to it with --agent PATH or $BLOCKDIFF_AGENT.
#
# The build uses its own target directory (target/agent-build) because
# RUSTFLAGS with crt-static must not reach the host's build scripts and proc
# macros; --target keeps them apart.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/agent/blockdiff-agent}
triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=$root/target/agent-build
# No debug info and no symbols: the agent crosses the network on its first run.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --manifest-path "$root/Cargo.toml" --release --locked \
    --target "$triple" -p blockdiff-tools --bin blockdiff-agent
mkdir -p "$(dirname "$out")"
install -m 755 "$CARGO_TARGET_DIR/$triple/release/blockdiff-agent" "$out"
if LC_ALL=C readelf -l "$out" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "build-agent: $out is not static" >&2
    exit 1
fi
echo "build-agent: $out ($(du -h "$out" | cut -f1), static, sha256 $(sha256sum "$out" | cut -c1-16)…)"
