#!/usr/bin/env bash
# Benchmark of a rollback (issue 19), local case: a target of
# BENCH_DELTA_MIB (1024) MiB differing from a generation in 1% of its
# 16 KiB blocks (random ones), brought back to that generation
#   - by `blockdiff-restore TARGET --from NAME --delta` (reads the target,
#     writes only what differs, syncs, reads it again to verify), and
#   - by a full restore of the same generation to a new file,
# in the same run, the page cache dropped before each (as root), each
# BENCH_REPEAT (3) times, the median reported. Printed beside them: the
# read limit, `cat TARGET > /dev/null` with a cold cache (a delta restore
# reads the target twice: to compare, and to verify).
# Targets: delta time <= 0.25 x full restore; bytes written <= 3% of the
# target (the --json report's bytes_written).
#
#   benches/restore-delta.sh
#   BENCH_DELTA_MIB=256 BENCH_REPEAT=1 benches/restore-delta.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mib=${BENCH_DELTA_MIB:-1024}
repeat=${BENCH_REPEAT:-3}
work=${BENCH_DIR:-$ROOT/bench-work}/restore-delta
bin=${CARGO_TARGET_DIR:-$ROOT/target}/release
cargo build --release --quiet -p blockdiff-tools --bins
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

drop_caches() {
    sync
    if [[ $(id -u) == 0 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }

echo "restore-delta: a ${mib} MiB generation" >&2
head -c $((mib << 20)) /dev/urandom >"$work/source"
"$bin/blockdiff-backup" "$work/vol" "$work/source" -q
# damage FILE: rewrites 1% of its 16 KiB blocks (distinct, at random).
damage() {
    python3 - "$1" <<'EOF'
import os, random, sys
path = sys.argv[1]
blocks = os.path.getsize(path) // 16384
fd = os.open(path, os.O_WRONLY)
for b in random.sample(range(blocks), blocks // 100):
    os.pwrite(fd, os.urandom(16384), b * 16384)
os.fsync(fd)
os.close(fd)
EOF
}
cp "$work/source" "$work/target"
declare -a t_delta t_full t_cat written
for round in $(seq 1 "$repeat"); do
    damage "$work/target"
    drop_caches
    t0=$(now)
    cat "$work/target" >/dev/null
    t_cat+=("$(since "$t0")")
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$work/target" --from "$work/vol" --delta --json -q >"$work/delta.json"
    t_delta+=("$(since "$t0")")
    written+=("$(python3 -c "import json; print(json.load(open('$work/delta.json'))['bytes_written'])")")
    cmp -s "$work/target" "$work/source" || { echo "FAIL: the delta restore differs from the generation" >&2; exit 1; }
    rm -f "$work/full.img"
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$work/full.img" --from "$work/vol" -q
    t_full+=("$(since "$t0")")
    cmp -s "$work/full.img" "$work/source" || { echo "FAIL: the full restore differs from the generation" >&2; exit 1; }
    echo "round $round: delta ${t_delta[-1]} s (${written[-1]} bytes written), full ${t_full[-1]} s, cat ${t_cat[-1]} s"
done
td=$(median "${t_delta[@]}") tf=$(median "${t_full[@]}") tc=$(median "${t_cat[@]}")
bw=$(median "${written[@]}")
size=$((mib << 20))
echo "RESULT ${mib} MiB target, 1% of its blocks differing: --delta ${td} s vs full restore ${tf} s: $(ratio "$td" "$tf") (target <= 0.25)"
echo "RESULT bytes written: ${bw} of ${size}: $(ratio "$bw" "$size") (target <= 0.03)"
echo "RESULT --delta beside the read limit (cat TARGET, cold): ${td} s vs ${tc} s: $(ratio "$td" "$tc") (the delta reads the target twice: compare and verify)"
