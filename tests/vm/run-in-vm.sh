#!/usr/bin/env bash
# Runs inside the test VM (see scripts/vm-test.sh): prepares the guest and
# runs each tests/vm/NN-*.sh case in its own bash, printing PASS/FAIL with
# the case's log on failure. Arguments: repository root, a results
# directory shared with the host, an optional filter on case names, the
# time limit of a case, the cases' directory (relative to the root;
# benches/vm for the VM benchmarks) and the size of the guest's /tmp.
set -u
ROOT=$1 RESULTS=$2 FILTER=${3:-} CASES=${5:-tests/vm} TMPFS=${6:-512M}
echo "run-in-vm: kernel $(uname -r), $(nproc) CPUs"
touch "$RESULTS/started" || { echo "run-in-vm: cannot write to $RESULTS" >&2; exit 1; }

# The host's root is read-only here and /tmp a small overlay: loop images
# go to a tmpfs mounted on /tmp. A checkout under /tmp (a CI clone) would
# be hidden by it, so it is bind-mounted elsewhere first (with the shared results
# directory mounted inside it).
case $ROOT/ in
/tmp/*)
    mkdir -p /run/blockdiff-root
    mount --rbind "$ROOT" /run/blockdiff-root || { echo "run-in-vm: cannot bind-mount $ROOT" >&2; exit 1; }
    RESULTS=/run/blockdiff-root/${RESULTS#"$ROOT"/}
    ROOT=/run/blockdiff-root
    ;;
esac
mount -t tmpfs -o size="$TMPFS" tmpfs /tmp
for m in loop dm-mod dm-snapshot dm-thin-pool; do
    modprobe "$m" || { echo "run-in-vm: modprobe $m failed" >&2; exit 1; }
done
mkdir -p /run/lock/lvm /run/lvm
export ROOT BIN=$ROOT/target/release LVM_SUPPRESS_FD_WARNINGS=1
# BENCH_* settings from the host (scripts/vm-test.sh).
if [[ -s $RESULTS/env ]]; then
    set -a
    source "$RESULTS/env"
    set +a
fi
export PATH=$BIN:$PATH

CASE_TIMEOUT=${4:-900}
passed=0 failed=0 names=()
for case in "$ROOT/$CASES"/[0-9]*.sh; do
    name=$(basename "$case" .sh)
    [[ -z $FILTER || $name =~ $FILTER ]] || continue
    log=/tmp/$name.log
    t0=$(date +%s)
    # A case that hangs fails alone (and the others still run): each has
    # VM_CASE_TIMEOUT seconds, ample even with the host's cores loaded.
    if (cd /tmp && timeout "$CASE_TIMEOUT" bash -euo pipefail "$case") >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "PASS $name ($(($(date +%s) - t0)) s)"
    else
        failed=$((failed + 1))
        names+=("$name")
        echo "FAIL $name ($(($(date +%s) - t0)) s); its log:"
        sed 's/^/    /' "$log"
    fi
    cp "$log" "$RESULTS/" 2>/dev/null || true
done
echo "$failed failed, $passed passed${names[*]:+ (failed: ${names[*]})}" | tee "$RESULTS/summary"
[[ $failed -eq 0 ]]
