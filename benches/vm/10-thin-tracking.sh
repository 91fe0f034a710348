# Benchmark, run in the LVM VM by benches/vm-bench.sh (not a test: it
# prints figures, each beside its limit from the same run, as ratios).
#
# 1. A thin LV of BENCH_THIN_MIB (512) MiB (a random 64 KiB repeated, so
#    that its chain stays small; a larger LV makes the fixed cost of a
#    run's LVM commands, seconds under emulation, small beside the scan:
#    BENCH_THIN_MIB=8192 VM_MEMORY=12G VM_TMPFS=10G); generation 1 keeps
#    its snapshot. Each round rewrites 1% of its 64 KiB chunks at random
#    and backs up with --full-scan (a full-scan incremental), then rewrites
#    another 1% and backs up with tracking. Medians
#    of BENCH_ROUNDS (3) rounds: wall time and bytes read, tracked against
#    full scan (targets: time <= 0.10, bytes <= 0.02). Each round also
#    times a tracked run after no change: the fixed cost of a run (LVM
#    commands, which software emulation makes slow), and the ratio beyond
#    it.
# 2. Four equal thin LVs of BENCH_JOBS_MIB (128) MiB backed up with --each
#    --no-track into new chains, --jobs 1 then --jobs 2 (target: <= 0.65).
source "$ROOT/tests/vm/lib.sh"
mib=${BENCH_THIN_MIB:-512}
rounds=${BENCH_ROUNDS:-3}
jobs_mib=${BENCH_JOBS_MIB:-128}
make_vg vgbench $((mib + 4 * jobs_mib + 160))
lvcreate -q -L $((mib + 4 * jobs_mib + 96))M -T vgbench/pool --chunksize 64k >/dev/null
lvcreate -q -V ${mib}M -T vgbench/pool -n data >/dev/null
dev=/dev/vgbench/data
store=/tmp/bench/data
mkdir -p /tmp/bench
at_exit "rm -rf /tmp/bench"
# One random 64 KiB piece, sixteen times a MiB: hashed like random data,
# but each 1 MiB frame of its chain compresses about sixteen times, so
# that a large LV's backups fit in the guest's /tmp beside the VG.
python3 - "$dev" "$mib" <<'EOF'
import os, sys
dev, mib = sys.argv[1], int(sys.argv[2])
piece = os.urandom(64 << 10) * 16
with open(dev, "wb", buffering=0) as f:
    for _ in range(mib):
        f.write(piece)
    os.fsync(f.fileno())
EOF

now() { date +%s.%N; }
# field FILE EXPR: a field of a --json summary.
field() { python3 -c "import json; r=json.load(open('$1')); print($2)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

blockdiff-backup "$store" --lvm vgbench/data -q
chunks=$((mib * 16))
# change: rewrites 1% of the LV's 64 KiB chunks (distinct, at random), in
# one process (a dd per chunk costs more than the backup under emulation).
change() {
    python3 - "$dev" "$chunks" <<'EOF'
import os, random, sys
dev, chunks = sys.argv[1], int(sys.argv[2])
fd = os.open(dev, os.O_WRONLY)
for chunk in random.sample(range(chunks), chunks // 100):
    os.pwrite(fd, os.urandom(65536), chunk * 65536)
os.fsync(fd)
os.close(fd)
EOF
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# timed KIND [ARGS…]: one backup, its summary in /tmp/bench/KIND.json and
# its wall time in seconds on stdout.
timed() {
    local kind=$1 t0 t1
    shift
    t0=$(now)
    blockdiff-backup "$store" --lvm vgbench/data -q --json "$@" >/tmp/bench/$kind.json
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}
declare -a t_tracked t_full t_idle b_tracked b_full
for round in $(seq 1 "$rounds"); do
    # The cost every run pays whatever changed (snapshot, thin_delta, the
    # LVM commands that retain and remove bases): a tracked run after no
    # change at all.
    sync
    echo 3 >/proc/sys/vm/drop_caches
    t_idle+=("$(timed idle)")
    # The same work for both: 1% of the chunks changed since the last
    # generation; the full scan reads everything (and checks the pool).
    change
    t_full+=("$(timed full --full-scan)")
    change
    t_tracked+=("$(timed tracked)")
    [[ $(field /tmp/bench/tracked.json 'r["tracking"]["scan"]') == tracked ]] || fail "round $round was not tracked"
    [[ $(field /tmp/bench/full.json 'r["tracking"]["untracked_changes"]') == 0 ]] || fail "round $round: the pool missed changes"
    b_tracked+=("$(field /tmp/bench/tracked.json 'r["bytes_read"]')")
    b_full+=("$(field /tmp/bench/full.json 'r["bytes_read"]')")
    echo "round $round: tracked ${t_tracked[-1]} s, ${b_tracked[-1]} bytes read, $(field /tmp/bench/tracked.json 'r["blocks_changed"]') blocks changed; full scan ${t_full[-1]} s, ${b_full[-1]} bytes read, $(field /tmp/bench/full.json 'r["blocks_changed"]') blocks changed"
done
tt=$(median "${t_tracked[@]}") tf=$(median "${t_full[@]}")
bt=$(median "${b_tracked[@]}") bf=$(median "${b_full[@]}")
echo "RESULT thin LV ${mib} MiB, 1% of its chunks rewritten: tracked incremental ${tt} s vs full-scan incremental ${tf} s: $(ratio "$tt" "$tf") (target <= 0.10)"
echo "RESULT bytes read: tracked ${bt} vs full scan ${bf}: $(ratio "$bt" "$bf") (target <= 0.02)"
ti=$(median "${t_idle[@]}")
echo "RESULT a run with nothing changed: ${ti} s, $(ratio "$ti" "$tf") of the full-scan incremental; beyond it, tracked $(python3 -c "print(f'{$tt - $ti:.2f}')") s vs full scan $(python3 -c "print(f'{$tf - $ti:.2f}')") s: $(ratio "($tt - $ti)" "($tf - $ti)")"

# Room for part 2: the first chain, the LV and its kept snapshot go.
rm -rf /tmp/bench/data*
for lv in $(lvs --noheadings -o lv_name vgbench | grep -E '^ *data'); do
    lvremove -q -f "vgbench/$lv" >/dev/null
done
for i in 1 2 3 4; do
    lvcreate -q -V ${jobs_mib}M -T vgbench/pool -n vol-$i >/dev/null
    dd if=/dev/urandom of=/dev/vgbench/vol-$i bs=1M count=$jobs_mib oflag=direct status=none
done
declare -A t_jobs
for jobs in 1 2; do
    rm -rf /tmp/bench/jobs
    echo 3 >/proc/sys/vm/drop_caches
    t0=$(now)
    blockdiff-backup /tmp/bench/jobs --each 'vgbench/vol-*' --no-track --jobs $jobs -q
    t1=$(now)
    t_jobs[$jobs]=$(python3 -c "print($t1 - $t0)")
done
echo "RESULT four ${jobs_mib} MiB volumes: --jobs 2 ${t_jobs[2]} s vs --jobs 1 ${t_jobs[1]} s: $(ratio "${t_jobs[2]}" "${t_jobs[1]}") (target <= 0.65)"
