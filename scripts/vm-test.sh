#!/usr/bin/env bash
# Runs the LVM test suite in a VM: real device-mapper, real lvm2, the
# release binaries. This machine's own kernel has no device-mapper, so
# virtme-ng boots Debian's kernel over the host's root filesystem
# (read-only in the guest) and runs tests/vm/run-in-vm.sh there.
#
#   scripts/vm-test.sh            every test case, tests/vm/[0-9]*.sh
#   scripts/vm-test.sh thin       only the cases whose file name matches an
#   scripts/vm-test.sh '^(00|12)' extended regular expression
#
# Installs what is missing first (scripts/vm-setup.sh). KVM is used when a
# quick probe boot shows that it works; where it does not (as on the
# development machine: "failed to set MSR"), the VM runs under software
# emulation, which is slow: the volumes are kept to tens of MiB. Exit status: 0 if every case passed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILTER=${1:-}

bash "$ROOT/scripts/vm-setup.sh"
echo "vm-test: building the release binaries" >&2
(cd "$ROOT" && cargo build --release --quiet -p blockdiff-tools --bins)

KERNEL=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
# Not under /tmp, /var, /etc, /usr…: virtme-ng lays overlays over those in
# the guest (and the guest mounts a tmpfs on /tmp), hiding a shared
# directory there.
mkdir -p "$ROOT/target"
RESULTS=$(mktemp -d "$ROOT/target/vm-results.XXXXXX")
trap 'rm -rf "$RESULTS"' EXIT
if [[ -n ${VM_KEEP_LOGS:-} ]]; then
    trap 'mkdir -p "$VM_KEEP_LOGS" && cp "$RESULTS"/* "$VM_KEEP_LOGS"/ 2>/dev/null; rm -rf "$RESULTS"' EXIT
fi

# Time limits: each case has VM_CASE_TIMEOUT seconds (a hung case fails
# alone); the whole VM has VM_TIMEOUT, a backstop for a VM that hangs as a
# whole. Under software emulation the suite takes about 11 minutes on an
# idle machine and 25 to 30 with both cores loaded by other work (seen:
# one case took 517 s), so neither limit is near what a healthy run needs.
VM_CASE_TIMEOUT=${VM_CASE_TIMEOUT:-900}
VM_TIMEOUT=${VM_TIMEOUT:-2700}
# The cases' directory (benches/vm-bench.sh runs benches/vm), the guest's
# memory and its /tmp (a tmpfs holding the loop devices' files).
VM_CASES=${VM_CASES:-tests/vm}
VM_MEMORY=${VM_MEMORY:-1G}
VM_TMPFS=${VM_TMPFS:-512M}
# BENCH_* settings reach the guest through the shared directory.
: >"$RESULTS/env"
bench_vars=$(compgen -v BENCH_ || true)
if [[ -n $bench_vars ]]; then
    # shellcheck disable=SC2086 # one word per variable name
    declare -p $bench_vars >"$RESULTS/env"
fi

run_vm() {
    # The guest sees the host's / read-only and $RESULTS read-write. Its
    # console goes through a pipe: vng reopens its standard output and
    # error, which would truncate a log file they were redirected to.
    timeout "$VM_TIMEOUT" vng --run "$KERNEL" --user root --memory "$VM_MEMORY" --cpus 2 \
        --rwdir "$RESULTS" "$@" -- \
        bash "$ROOT/tests/vm/run-in-vm.sh" "$ROOT" "$RESULTS" "$FILTER" "$VM_CASE_TIMEOUT" \
        "$VM_CASES" "$VM_TMPFS" 2>&1 | cat
    return "${PIPESTATUS[0]}"
}

# kvm_works: whether KVM runs this kernel. Where it is broken, qemu fails
# at once ("failed to set MSR") or hangs, so a bare kernel is booted first
# with a time limit: it gets as far as its panic for lack of a root file
# system within seconds if KVM works.
kvm_works() {
    [[ ${VM_DISABLE_KVM:-} != 1 && -w /dev/kvm ]] || return 1
    timeout 15 qemu-system-x86_64 -enable-kvm -cpu host -m 256 -nodefaults \
        -display none -serial stdio -no-reboot -kernel "$KERNEL" \
        -append 'console=ttyS0 panic=-1 root=/dev/nonexistent' 2>&1 |
        grep -qE 'Kernel panic|VFS: Unable to mount'
}

start=$(date +%s)
set +e
if kvm_works; then
    echo "vm-test: KVM works; booting the VM with it" >&2
    run_vm
else
    echo "vm-test: KVM is not usable here; the VM runs under software emulation (slow)" >&2
    run_vm --disable-kvm
fi
status=$?
set -e
if [[ ! -e $RESULTS/started ]]; then
    echo "vm-test: the VM never started the test suite (exit status $status)" >&2
    exit 1
fi
if [[ ! -e $RESULTS/summary ]]; then
    echo "vm-test: the suite did not finish (exit status $status; VM_TIMEOUT=$VM_TIMEOUT s?)" >&2
    exit 1
fi
echo "vm-test: $(cat "$RESULTS/summary") in $(($(date +%s) - start)) s" >&2
grep -q '^0 failed' "$RESULTS/summary"
