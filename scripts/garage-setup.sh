#!/usr/bin/env bash
# Installs Garage (https://garagehq.deuxfleurs.fr), the S3-compatible
# distributed object store that the object-storage tests and benchmark run
# against, and rclone and restic (Debian packages) that the benchmark compares
# with. Garage has no Debian package and no prebuilt binary reachable here, so
# it is built from crates.io once, into a cached directory, and reused:
#
#   $GARAGE_HOME (default ~/.cache/blockdiff/garage-$VERSION)/bin/garage
#
# Prints the binary's path on stdout as its last line. Safe to run again: a
# binary already there is kept (the build takes about 15 minutes on two idle
# cores; only the features the tests use are built: sqlite metadata, bundled
# libraries, the Prometheus metrics endpoint).
set -euo pipefail

version=2.5.0
home=${GARAGE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/blockdiff/garage-$version}
bin=$home/bin/garage

need_pkgs=()
command -v rclone >/dev/null 2>&1 || need_pkgs+=(rclone)
command -v restic >/dev/null 2>&1 || need_pkgs+=(restic)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "garage-setup: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "garage-setup: $("$bin" --version 2>/dev/null | head -1) already at $bin" >&2
    echo "$bin"
    exit 0
fi

echo "garage-setup: building garage $version from crates.io into $home (once; about 15 minutes)" >&2
start=$(date +%s)
build_dir=$(mktemp -d "${TMPDIR:-/tmp}/garage-build.XXXXXX")
trap 'rm -rf "$build_dir"' EXIT
mkdir -p "$home"
CARGO_TARGET_DIR=$build_dir cargo install garage --version "=$version" --locked \
    --no-default-features --features bundled-libs,sqlite,metrics \
    --root "$home" --quiet
"$bin" --version >/dev/null
echo "garage-setup: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
