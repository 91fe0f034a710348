#!/usr/bin/env bash
# The project's whole test suite, as CI runs it (.ci/run calls this).
# Installs nothing by hand: everything the tests need comes from here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "dependency policy (scripts/deny.sh: cargo deny check licenses bans sources, deny.toml)"
scripts/deny.sh

step "API documentation (cargo doc --no-deps, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "services the tests run for real (scripts/services-setup.sh: mariadb-server, cron, openssh-server)"
scripts/services-setup.sh

step "the static remote agent (scripts/build-agent.sh), which the ssh tests copy to the 'remote' host"
scripts/build-agent.sh target/agent/blockdiff-agent
export BLOCKDIFF_AGENT=$PWD/target/agent/blockdiff-agent

step "Garage, rclone and restic for the object-storage tests (scripts/garage-setup.sh: Garage built once into a cache)"
garage=$(scripts/garage-setup.sh | tail -n 1)
export BLOCKDIFF_GARAGE=$garage
echo "BLOCKDIFF_GARAGE=$BLOCKDIFF_GARAGE"

step "unit, integration, property and CLI tests (cargo test --workspace)"
cargo test --workspace

step "LVM in a VM (scripts/vm-test.sh: real device-mapper, lvm2 and the release binaries)"
if [[ ${BLOCKDIFF_SKIP_VM:-} == 1 ]]; then
    echo "VM tests skipped: BLOCKDIFF_SKIP_VM=1"
else
    scripts/vm-test.sh
fi

step "fuzzing (scripts/fuzz.sh 60: every fuzz target for 60 s; installs cargo-fuzz if missing)"
if [[ ${BLOCKDIFF_SKIP_FUZZ:-} == 1 ]]; then
    echo "fuzzing skipped: BLOCKDIFF_SKIP_FUZZ=1"
else
    scripts/fuzz.sh 60
fi
