#!/usr/bin/env bash
# The benchmarks that need LVM (benches/vm/NN-*.sh): run in the test VM of
# scripts/vm-test.sh, with more memory and a larger /tmp, and their
# "RESULT" lines printed at the end. Each figure is a ratio against its
# limit measured in the same run (the VM runs under software emulation
# here, so absolute times mean little).
#
#   benches/vm-bench.sh                 every VM benchmark
#   benches/vm-bench.sh thin            those whose name matches
#   BENCH_THIN_MIB=1024 benches/vm-bench.sh   a larger thin LV (needs VM_MEMORY, VM_TMPFS)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
VM_CASES=benches/vm VM_MEMORY=${VM_MEMORY:-4G} VM_TMPFS=${VM_TMPFS:-3G} \
    VM_CASE_TIMEOUT=${VM_CASE_TIMEOUT:-5400} VM_TIMEOUT=${VM_TIMEOUT:-5700} \
    VM_KEEP_LOGS=$logs "$ROOT/scripts/vm-test.sh" "${1:-}" || status=$?
echo
echo "== VM benchmark results"
cat "$logs"/*.log 2>/dev/null | grep -E '^(round|RESULT)' || echo "(none)"
exit "$status"
