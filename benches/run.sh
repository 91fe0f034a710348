#!/usr/bin/env bash
# shellcheck disable=SC2016 # the bash -c scripts below expand their own "$1"
# End-to-end benchmark of the blockdiff tools against the machine's limits.
#
# Usage (from anywhere; the script moves to the repository root itself):
#   benches/run.sh
#   BENCH_SIZE_MIB=256 BENCH_IMAGE_MIB=512 BENCH_CHAIN_MIB=128 benches/run.sh
#   BENCH_PARTS=B BENCH_IMAGE_MIB=512 benches/run.sh   (part 2 B alone, smaller image)
#
# Environment:
#   BENCH_SIZE_MIB     size of the random test file in MiB (default 2048)
#   BENCH_IMAGE_MIB    size of the ext4 image of part B in MiB (default 2048)
#   BENCH_STAGE_MIB    MiB of /usr copied into that image (default 9/16 of
#                      the image: 1152 MiB, about 1.2 GB, for 2 GiB)
#   BENCH_CHAIN_MIB    size of the volume of the restore chain (default 1024)
#   BENCH_CHAIN_GENERATIONS  generations in that chain (default 30)
#   BENCH_DIR          work directory (default bench-work/ at the repository root)
#   BENCH_PARTS        the parts to run, among 1 A B C E F G below (default all:
#                      "1 A B C E F G"; e.g. BENCH_PARTS=B for part 2 B alone;
#                      F reads C's chain, so F needs C)
#   BENCH_FOLD_DAYS    days of nightly backups in part G (default 90)
#   BENCH_REPEAT       runs of each measured command (default 3); with more than one,
#                      the run with the median time is reported, and the
#                      fastest and slowest times are shown beside it
#   BENCH_LOAD_MAX     a measurement starts once the 1-minute load average is
#                      below this (default 0.5) ...
#   BENCH_LOAD_QUIET   ... for this many seconds in a row (default 5) ...
#   BENCH_LOAD_WAIT    ... or, with a warning, after this many seconds (default 600)
#   BENCH_HOG          1: after part A, measure the scans again beside a
#                      memory-bandwidth hog (stress-ng --stream 1, installed
#                      from Debian if missing), with the same ratios (default
#                      1 when parts 1 and A both run, else 0)
#   BENCH_RT           1: run each measured command with real-time priority
#                      (chrt -f 10, root only), so that other processes of a
#                      shared machine do not take the CPUs from it; they keep
#                      what the kernel's RT throttling leaves (5%) while it
#                      runs (default 0)
#   CARGO_TARGET_DIR   honoured as cargo does (binaries are looked up there)
#
# Part 1, the issue-2 figures (the legacy format: MD5, as the original
# blockdiff, so that the dumps compare with md5sum), on a file of random data
# with a warm page cache:
#   md5sum FILE                 one core's MD5 throughput (the reference)
#   cat FILE > /dev/null        the read limit
#   cat FILE > copy             the write limit (page cache)
#   dd bs=1M conv=fsync         the write limit of a restore (to the disk)
#   blockdiff-dump (full)       --format legacy: every block + new digest
#   blockdiff-dump (incr.)      --format legacy: the unchanged file against that digest
#   blockdiff-restore           the full diff back into a file (information,
#                               beside dd conv=fsync)
# targets:
#   (a) incremental dump throughput >= 1.8 x md5sum's (two cores: at most 2 x)
#   (b) full dump time <= 1.5 x (time of cat > copy + md5sum time / nproc)
#   (c) peak RSS of each dump < 256 MiB
#
# Part 2, the v2 format:
#   A. v2 --hash blake3: full dump, then the incremental dump of the unchanged
#      file (warm cache) at >= 0.8 x the throughput of cat > /dev/null (and
#      with --threads 2: the default is never slower than it); its diff must
#      hold no frame (header + index + footer = 256 bytes). Beside it the
#      limits: b3sum --num-threads NPROC (BLAKE3 over the file, one tree) and
#      the read-limit probe (target/release/read-limit, benches/src/bin):
#      every byte brought through the cores by pread of 128 KiB pieces into
#      one buffer per thread (the dump's design), by pread of 1 MiB into a
#      pool of buffers (the design before, which leaves the L2 cache), and
#      from a memory map.
#   H. (BENCH_HOG=1) the scans of parts 1 and A, md5sum, cat and the probes
#      again with stress-ng --stream 1 running beside them (the machine's
#      memory bandwidth contended), and the same ratios.
#   B. an ext4 image (mkfs.ext4 -d) holding a copy of part of /usr, free
#      space zero: a full v2 dump with --zstd-level 1 at >= 1.5 x the
#      throughput of zstd -1 -T0 on the same image, and a compression ratio
#      at least 95% of zstd's (a better ratio passes too).
#   C. a chain of 30 generations of a 1 GiB volume (generation 1: the start
#      of that ext4 image; then ~1% of the blocks at random plus a hot region
#      rewritten per generation, by benches/chain_mutate.py): restoring
#      generation 1 at >= 0.8 x the throughput of dd bs=1M conv=fsync of the
#      same bytes (CPU seconds per GiB shown), and the last generation in
#      <= 1.1 x the time of generation 1 (page cache dropped before each,
#      when root).
#   E. encryption (issue 15): the ext4 image of part B backed up into a new
#      chain plain and with --encrypt --key-file (warm page cache), then an
#      incremental of the unchanged image into each, then a restore of each
#      chain's last generation: every encrypted figure >= 0.9 x the plain
#      one of the same run. Beside them the limit: one core sealing and
#      opening AES-256-GCM segments in memory (target/release/aead-limit).
#   F. the last generation of C's chain mounted with blockdiff-mount (FUSE,
#      issue 16): a sequential read of its image (cat, page cache dropped)
#      at >= 0.5 x the throughput of C's restore of the same generation,
#      and the median and p99 latency of 2000 random 4 KiB reads with
#      O_DIRECT, the store's page cache warm (target/release/random-read;
#      target p99 <= 5 ms); and blockdiff-nbd (nbdkit and the plugin): the
#      time from its start to the first 4 KiB a client (qemu-io) read,
#      target <= 1 s.
#   G. retention by folding (issue 17): BENCH_FOLD_DAYS nights (dates set
#      with faketime, from 2026-01-01 at 02:30 UTC) of the 1 GiB volume of
#      C with ~1% of its blocks rewritten each day (chain_mutate.py), backed
#      up each night into one chain pruned with --keep-daily 7
#      --keep-weekly 4 --keep-monthly 3, and into monthly chains pruned with
#      --keep 3, as the two contrib schedules do: bytes stored by the one
#      chain <= 0.5 x the monthly chains'; the restore of its newest
#      generation <= 1.2 x the restore of a single full (generation 1 of the
#      last monthly chain), page cache dropped; and the throughput of a
#      prune folding the whole chain into its newest generation (bytes of
#      the diffs folded per second) beside cat of the same files.
# And over every part: the peak RSS of every blockdiff command < 256 MiB.
#
# Before each measurement the script waits for the machine to be quiet (see
# BENCH_LOAD_*); the load at the start of each is in the tables. A missed
# target only prints FAIL. A correctness failure (an incremental diff not
# empty, a restored file different from its source, digests differing) makes
# the script exit with status 1. Large files are removed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SIZE_MIB=${BENCH_SIZE_MIB:-2048}
IMAGE_MIB=${BENCH_IMAGE_MIB:-2048}
STAGE_MIB=${BENCH_STAGE_MIB:-$((IMAGE_MIB * 9 / 16))}
CHAIN_MIB=${BENCH_CHAIN_MIB:-1024}
CHAIN_GENS=${BENCH_CHAIN_GENERATIONS:-30}
REPEAT=${BENCH_REPEAT:-3}
PARTS=${BENCH_PARTS:-1 A B C E F G}
FOLD_DAYS=${BENCH_FOLD_DAYS:-90}
RT_ON=${BENCH_RT:-0}
if [[ " $PARTS " == *" 1 "* && " $PARTS " == *" A "* ]]; then HOG_DEFAULT=1; else HOG_DEFAULT=0; fi
HOG=${BENCH_HOG:-$HOG_DEFAULT}
WORK=${BENCH_DIR:-$ROOT/bench-work}
LOAD_MAX=${BENCH_LOAD_MAX:-0.5}
LOAD_QUIET=${BENCH_LOAD_QUIET:-5}
LOAD_WAIT=${BENCH_LOAD_WAIT:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

for var in SIZE_MIB IMAGE_MIB STAGE_MIB CHAIN_MIB CHAIN_GENS LOAD_QUIET REPEAT; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "run.sh: BENCH_${var/CHAIN_GENS/CHAIN_GENERATIONS} must be a positive whole number, not '${!var}'" >&2
        exit 2
    fi
done
PARTS=${PARTS//,/ }
for part in $PARTS; do
    if ! [[ $part =~ ^(1|A|B|C|E|F|G)$ ]]; then
        echo "run.sh: BENCH_PARTS lists parts among 1, A, B, C, E, F and G, not '$part'" >&2
        exit 2
    fi
done
if [[ " $PARTS " == *" F "* && " $PARTS " != *" C "* ]]; then
    echo "run.sh: part F reads part C's chain: list C too (BENCH_PARTS='C F')" >&2
    exit 2
fi
if [[ -z ${PARTS// /} ]]; then
    echo "run.sh: BENCH_PARTS names no part" >&2
    exit 2
fi
RT=()
case $RT_ON in
0) ;;
1)
    if ! chrt -f 10 true 2>/dev/null; then
        echo "run.sh: BENCH_RT=1 needs chrt and the right to use SCHED_FIFO (root)" >&2
        exit 2
    fi
    RT=(chrt -f 10)
    ;;
*)
    echo "run.sh: BENCH_RT must be 0 or 1, not '$RT_ON'" >&2
    exit 2
    ;;
esac
case $HOG in
0 | 1) ;;
*)
    echo "run.sh: BENCH_HOG must be 0 or 1, not '$HOG'" >&2
    exit 2
    ;;
esac
# has_part P: true when part P (1, A, B or C) is to run.
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
if ! [[ $LOAD_WAIT =~ ^[0-9]+$ ]]; then
    echo "run.sh: BENCH_LOAD_WAIT must be a number of seconds, not '$LOAD_WAIT'" >&2
    exit 2
fi
if ! [[ $LOAD_MAX =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "run.sh: BENCH_LOAD_MAX must be a number, not '$LOAD_MAX'" >&2
    exit 2
fi
if ! [[ $FOLD_DAYS =~ ^[0-9]+$ ]] || ((FOLD_DAYS < 35)); then
    echo "run.sh: BENCH_FOLD_DAYS must be a number of days, at least 35 (two monthly chains)" >&2
    exit 2
fi
if ((CHAIN_GENS < 2)); then
    echo "run.sh: BENCH_CHAIN_GENERATIONS must be at least 2" >&2
    exit 2
fi
if ((STAGE_MIB >= IMAGE_MIB * 7 / 8)); then
    echo "run.sh: BENCH_STAGE_MIB ($STAGE_MIB) does not fit an image of $IMAGE_MIB MiB" >&2
    exit 2
fi

log() { printf '==> %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------

SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
APT_UPDATED=0
# apt_install PACKAGE: refreshes the package lists only when the package
# cannot be found.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing the Debian package '$1'"
    if ! "${SUDO[@]}" apt-get install -y "$1"; then
        if ((APT_UPDATED == 0)); then
            "${SUDO[@]}" apt-get update
            APT_UPDATED=1
        fi
        "${SUDO[@]}" apt-get install -y "$1"
    fi
}

for tool in cargo md5sum awk cmp dd python3 truncate du find; do
    if ! command -v "$tool" >/dev/null; then
        echo "run.sh: '$tool' is required but not installed" >&2
        exit 2
    fi
done
# GNU time, for the peak resident set size (%M).
[[ -x /usr/bin/time ]] || apt_install time
command -v zstd >/dev/null || apt_install zstd
command -v b3sum >/dev/null || apt_install b3sum
if ((HOG)); then command -v stress-ng >/dev/null || apt_install stress-ng; fi
if has_part G; then command -v faketime >/dev/null || apt_install faketime; fi
# mkfs.ext4 -d (populate from a directory) needs e2fsprogs >= 1.43.
if ! PATH=$PATH:/sbin:/usr/sbin command -v mkfs.ext4 >/dev/null; then
    apt_install e2fsprogs
fi
MKFS=$(PATH=$PATH:/sbin:/usr/sbin command -v mkfs.ext4)
MKFS_USAGE=$("$MKFS" 2>&1 || true)
if ! grep -q -- '-d ' <<<"$MKFS_USAGE"; then
    echo "run.sh: $MKFS has no -d option (e2fsprogs >= 1.43 needed)" >&2
    exit 2
fi

log "building release binaries (cargo build --release -p blockdiff-tools -p blockdiff-benches --bins)"
cargo build --release -p blockdiff-tools -p blockdiff-benches --bins
for b in blockdiff-dump blockdiff-restore blockdiff-backup blockdiff-info blockdiff-key read-limit aead-limit; do
    if [[ ! -x $BIN/$b ]]; then
        echo "run.sh: $BIN/$b was not built" >&2
        exit 2
    fi
done

CAN_DROP=0
if [[ -w /proc/sys/vm/drop_caches ]]; then CAN_DROP=1; fi

# --- work files ---------------------------------------------------------------

mkdir -p "$WORK"
DATA=$WORK/source.img
COPY=$WORK/copy.img
DIFF=$WORK/full.diff
DIFF2=$WORK/incremental.diff
D1=$WORK/full.md5
D2=$WORK/incremental.md5
RESTORED=$WORK/restored.img
TIMES=$WORK/time.out
# part A
V2FULL=$WORK/v2-full.diff
V2INCR=$WORK/v2-incremental.diff
V2D1=$WORK/v2-full.digest
V2D2=$WORK/v2-incremental.digest
# part B
STAGE=$WORK/usr-stage
IMAGE=$WORK/ext4.img
IMAGE_ZST=$WORK/ext4.img.zst
IMAGE_DIFF=$WORK/ext4.diff
IMAGE_DIGEST=$WORK/ext4.digest
IMAGE_RESTORED=$WORK/ext4-restored.img
# part E
ENC_DIR=$WORK/encryption
ENC_KEY=$WORK/encryption.key
ENC_RESTORED=$WORK/encryption-restored.img
# part C
CHAIN_DIR=$WORK/chain
CHAIN=$CHAIN_DIR/volume
CHAIN_SRC=$WORK/chain-source.img
CHAIN_GEN1=$WORK/chain-generation-1.img
CHAIN_RESTORED=$WORK/chain-restored.img
MOUNT_DIR=$WORK/mount
MOUNT_STATE=$WORK/mount-state
# part G
FOLD_DIR=$WORK/fold
FOLD_SRC=$WORK/fold-source.img

cleanup() {
    if [[ -d $MOUNT_STATE ]]; then
        "$BIN/blockdiff-umount" -q --state-dir "$MOUNT_STATE" "$MOUNT_DIR" 2>/dev/null || true
        rm -rf "$MOUNT_STATE"
    fi
    # The legacy digests (16 bytes per 16 KiB block) and the empty diffs
    # are small and kept for inspection; everything else goes.
    rm -f "$DATA" "$COPY" "$DIFF" "$RESTORED" "$RESTORED".* "$TIMES" \
        "$V2FULL" "$V2D1" "$V2D2" \
        "$IMAGE" "$IMAGE_ZST" "$IMAGE_DIFF" "$IMAGE_DIGEST" "$IMAGE_RESTORED" "$IMAGE_RESTORED".* \
        "$CHAIN_SRC" "$CHAIN_GEN1" "$CHAIN_RESTORED" "$CHAIN_RESTORED".*
    rm -rf "$STAGE" "$CHAIN_DIR" "$FOLD_DIR"
    rm -f "$FOLD_SRC"
}
trap cleanup EXIT
cleanup
rm -f "$DIFF2" "$D1" "$D2" "$V2INCR"

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
IMAGE_BYTES=$((IMAGE_MIB * 1024 * 1024))
CHAIN_BYTES=$((CHAIN_MIB * 1024 * 1024))
NPROC=$(nproc)

# CPU time used by the whole machine so far, in clock ticks (user, nice,
# system, irq, softirq, steal): compared with a command's own CPU time it
# shows whether other processes competed with it.
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
load1() { awk '{ print $1 }' /proc/loadavg; }

# --- waiting for a quiet machine ------------------------------------------------

# wait_for_quiet NAME: returns once the 1-minute load average has been below
# LOAD_MAX for LOAD_QUIET seconds in a row, or after LOAD_WAIT seconds (with
# a warning). Sets WAITED (seconds) and GAVE_UP (0 or 1).
WAITED=0
GAVE_UP=0
WAIT_WARNINGS=()
wait_for_quiet() {
    local name=$1 start=$SECONDS quiet=0 load noted=-1 elapsed
    GAVE_UP=0
    while :; do
        load=$(load1)
        if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; then
            quiet=$((quiet + 1))
            if ((quiet >= LOAD_QUIET)); then break; fi
        else
            quiet=0
        fi
        elapsed=$((SECONDS - start))
        if ((elapsed >= LOAD_WAIT)); then
            GAVE_UP=1
            log "WARNING: the load average is still $load after ${elapsed}s; measuring '$name' anyway"
            WAIT_WARNINGS+=("$name: load $load after waiting ${elapsed}s")
            break
        fi
        if ((quiet == 0 && (noted < 0 || elapsed - noted >= 30))); then
            log "waiting for the 1-minute load average ($load) to stay below $LOAD_MAX before '$name' (${elapsed}s so far, up to ${LOAD_WAIT}s)"
            noted=$elapsed
        fi
        sleep 1
    done
    WAITED=$((SECONDS - start))
}

# --- measurements -----------------------------------------------------------

NAMES=()
declare -A SECS CPU RSS OTHER LOAD WAIT MIB SPREAD

now() { date +%s.%N; }

# measure NAME MIB COMMAND [ARGS...]: wall time (date), CPU time and peak RSS
# (GNU time) of COMMAND over MIB MiB of data, and the share of the machine's
# CPU capacity other processes used meanwhile. COMMAND runs REPEAT times
# and the run with the median wall time is kept (its load, wait, CPU time
# and others; the peak RSS is the largest of all). Before each run: the
# command BEFORE_EACH (an array, e.g. removing the previous output) runs,
# dirty pages are written back so that an earlier write does not slow the
# command down, the script waits for a quiet machine, and with
# DROP_CACHES=1 the page cache is emptied.
DROP_CACHES=0
BEFORE_EACH=()
# NO_WAIT=1: measure at once (beside the hog, the load never falls).
NO_WAIT=0
# The measurements of blockdiff's own commands (for the RSS target).
OURS=()
measure() {
    local name=$1 mib=$2 t0 t1 b0 b1 user sys rss r runs=() med load wait of=""
    local -a best
    shift 2
    for ((r = 1; r <= REPEAT; r++)); do
        if ((${#BEFORE_EACH[@]} > 0)); then "${BEFORE_EACH[@]}"; fi
        sync
        if ((NO_WAIT)); then
            WAITED=0
            GAVE_UP=0
        else
            wait_for_quiet "$name"
        fi
        if ((DROP_CACHES)); then
            sync
            echo 3 >/proc/sys/vm/drop_caches
        fi
        load=$(load1)
        wait=$WAITED
        if ((GAVE_UP)); then wait+='!'; fi
        if ((REPEAT > 1)); then of=" (run $r of $REPEAT)"; fi
        log "timing: $name$of (load $load)"
        b0=$(busy_ticks)
        t0=$(now)
        "${RT[@]}" /usr/bin/time -f '%U %S %M' -o "$TIMES" "$@"
        t1=$(now)
        b1=$(busy_ticks)
        read -r user sys rss <"$TIMES"
        # seconds cpu rss others load wait
        runs+=("$(awk -v a="$t0" -v b="$t1" -v u="$user" -v s="$sys" -v r="$rss" \
            -v b0="$b0" -v b1="$b1" -v hz="$HZ" -v n="$NPROC" -v l="$load" -v w="$wait" 'BEGIN {
            t = b - a; c = u + s
            o = (b1 - b0) / hz - c; if (o < 0) o = 0
            printf "%.3f %.2f %d %.0f %s %s", t, c, r, (t > 0) ? 100 * o / (t * n) : 0, l, w }')")
    done
    med=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | awk -v m=$(((REPEAT + 1) / 2)) 'NR == m')
    read -r -a best <<<"$med"
    NAMES+=("$name")
    case $1 in "$BIN"/blockdiff-*) OURS+=("$name") ;; esac
    if [[ $1 == bash && ${5:-} == "$BIN"/blockdiff-* ]]; then OURS+=("$name"); fi
    MIB[$name]=$mib
    SECS[$name]=${best[0]}
    CPU[$name]=${best[1]}
    RSS[$name]=$(printf '%s\n' "${runs[@]}" | awk '$3 > m { m = $3 } END { print m }')
    OTHER[$name]=${best[3]}
    LOAD[$name]=${best[4]}
    WAIT[$name]=${best[5]}
    SPREAD[$name]=$(printf '%s\n' "${runs[@]}" | awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 }
        END { printf "%.2f-%.2f", lo, hi }')
}

FAILURES=()
fail() {
    FAILURES+=("$1")
    printf '\n!!! CORRECTNESS FAILURE: %s\n' "$1" >&2
}

# print_table MD5_SECONDS NAME...: one row per measurement; the x md5sum
# column only when MD5_SECONDS is not empty.
CONTENDED=0
print_table() {
    local m=$1 name spread_head=""
    shift
    if ((REPEAT > 1)); then spread_head=$(printf '  %-13s' "min-max s"); fi
    if [[ -n $m ]]; then
        printf '%-34s %7s %9s %8s %9s %8s %8s %6s %7s %7s%s\n' "name" "MiB" "seconds" "GiB/s" "x md5sum" "cpu s" "RSS MiB" "load" "wait s" "others" "$spread_head"
    else
        printf '%-34s %7s %9s %8s %8s %8s %6s %7s %7s%s\n' "name" "MiB" "seconds" "GiB/s" "cpu s" "RSS MiB" "load" "wait s" "others" "$spread_head"
    fi
    for name in "$@"; do
        awk -v name="$name" -v t="${SECS[$name]}" -v m="$m" -v mib="${MIB[$name]}" \
            -v c="${CPU[$name]}" -v r="${RSS[$name]}" -v o="${OTHER[$name]}" -v n="$NPROC" \
            -v l="${LOAD[$name]}" -v w="${WAIT[$name]}" -v sp="${SPREAD[$name]}" -v rep="$REPEAT" 'BEGIN {
            if (t <= 0) t = 0.001
            # Under 1 CPU-second of capacity, clock ticks are too coarse.
            others = (t * n >= 1) ? sprintf("%6d%%", o) : "      -"
            spread = (rep > 1) ? sprintf("  %-13s", sp) : ""
            if (m != "")
                printf "%-34s %7d %9.3f %8.3f %9.2f %8.2f %8.1f %6.2f %7s %s%s\n", name, mib, t, mib / 1024 / t, m / t, c, r / 1024, l, w, others, spread
            else
                printf "%-34s %7d %9.3f %8.3f %8.2f %8.1f %6.2f %7s %s%s\n", name, mib, t, mib / 1024 / t, c, r / 1024, l, w, others, spread }'
        if awk -v t="${SECS[$name]}" -v n="$NPROC" -v o="${OTHER[$name]}" \
            'BEGIN { exit !(t * n >= 1 && o > 10) }'; then
            CONTENDED=1
        fi
    done
}

verdict() { if [[ $1 == 1 ]]; then echo PASS; else echo FAIL; fi; }

# =============================================================================
# Part 1: the issue-2 figures (legacy format, MD5)
# =============================================================================

if has_part 1 || has_part A; then
    log "writing $SIZE_MIB MiB of random data to $DATA"
    dd if=/dev/urandom of="$DATA" bs=1M count="$SIZE_MIB" iflag=fullblock status=none
    actual=$(stat -c %s "$DATA")
    if [[ $actual -ne $SIZE_BYTES ]]; then
        echo "run.sh: $DATA has $actual bytes, expected $SIZE_BYTES" >&2
        exit 1
    fi

    log "warming the page cache"
    cat "$DATA" >/dev/null
fi

if has_part 1; then
    MD5="md5sum FILE"
    READ="cat FILE > /dev/null"
    WRITE="cat FILE > copy"
    DDSYNC="dd bs=1M conv=fsync FILE copy"
    FULL="blockdiff-dump full"
    INCR="blockdiff-dump incremental"
    RESTORE="blockdiff-restore (info)"

    measure "$MD5" "$SIZE_MIB" bash -c 'md5sum "$1" > /dev/null' _ "$DATA"
    measure "$READ" "$SIZE_MIB" bash -c 'cat "$1" > /dev/null' _ "$DATA"
    # Each writing command starts from no output file, as on the first run.
    BEFORE_EACH=(rm -f "$COPY")
    measure "$WRITE" "$SIZE_MIB" bash -c 'cat "$1" > "$2"' _ "$DATA" "$COPY"
    measure "$DDSYNC" "$SIZE_MIB" dd if="$DATA" of="$COPY" bs=1M conv=fsync status=none
    rm -f "$COPY"
    BEFORE_EACH=(rm -f "$DIFF")
    measure "$FULL" "$SIZE_MIB" "$BIN/blockdiff-dump" --format legacy --new-digest "$D1" -o "$DIFF" "$DATA"
    BEFORE_EACH=(rm -f "$DIFF2")
    measure "$INCR" "$SIZE_MIB" "$BIN/blockdiff-dump" --format legacy --old-digest "$D1" --new-digest "$D2" -o "$DIFF2" "$DATA"
    BEFORE_EACH=(rm -f "$RESTORED")
    measure "$RESTORE" "$SIZE_MIB" bash -c '"$1" -q "$2" < "$3"' _ "$BIN/blockdiff-restore" "$RESTORED" "$DIFF"
    BEFORE_EACH=()
    PART1=("${NAMES[@]}")

    size2=$(stat -c %s "$DIFF2")
    if [[ $size2 -ne 4 ]]; then
        fail "the legacy incremental diff of the unchanged file has $size2 bytes, not just the 4-byte header"
    fi
    if ! cmp -s "$D1" "$D2"; then
        fail "the legacy incremental dump's digest differs from the full dump's ($D1, $D2)"
    fi
    if [[ ! -f $RESTORED ]] || ! cmp "$DATA" "$RESTORED"; then
        fail "blockdiff-restore of the legacy full diff does not reproduce the source"
    fi
    DIFF_BYTES=$(stat -c %s "$DIFF")
    # Free the page cache of what part 2 does not read.
    rm -f "$DIFF" "$RESTORED"
fi

# =============================================================================
# Part 2 A: v2 with BLAKE3, unchanged incremental scan
# =============================================================================

if has_part A; then
    A_FULL="A: v2 blake3 full dump (info)"
    A_READ="A: cat FILE > /dev/null"
    A_INCR="A: v2 blake3 incremental dump"
    A_INCR2="A: v2 blake3 incremental --threads 2"
    A_INCRP="A: v2 blake3 incremental --no-mmap"
    A_B3="A: b3sum --num-threads $NPROC"
    A_PIECE="A: read-limit pread 128K/thread"
    A_POOL="A: read-limit pread 1M pool"
    A_MMAP="A: read-limit mmap"

    BEFORE_EACH=(rm -f "$V2FULL")
    measure "$A_FULL" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --new-digest "$V2D1" -o "$V2FULL" "$DATA"
    rm -f "$V2FULL"
    BEFORE_EACH=()
    measure "$A_READ" "$SIZE_MIB" bash -c 'cat "$1" > /dev/null' _ "$DATA"
    BEFORE_EACH=(rm -f "$V2INCR")
    measure "$A_INCR" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --old-digest "$V2D1" --new-digest "$V2D2" -o "$V2INCR" "$DATA"
    measure "$A_INCR2" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --threads 2 --old-digest "$V2D1" --new-digest "$V2D2" -o "$V2INCR" "$DATA"
    measure "$A_INCRP" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --no-mmap --old-digest "$V2D1" --new-digest "$V2D2" -o "$V2INCR" "$DATA"
    BEFORE_EACH=()
    measure "$A_B3" "$SIZE_MIB" bash -c 'b3sum --num-threads "$2" "$1" > /dev/null' _ "$DATA" "$NPROC"
    measure "$A_PIECE" "$SIZE_MIB" bash -c '"$1" pread-piece "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"
    measure "$A_POOL" "$SIZE_MIB" bash -c '"$1" pread-pool "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"
    measure "$A_MMAP" "$SIZE_MIB" bash -c '"$1" mmap "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"

    V2INCR_BYTES=$(stat -c %s "$V2INCR")
    if [[ $V2INCR_BYTES -ne 256 ]]; then
        fail "the v2 incremental diff of the unchanged file has $V2INCR_BYTES bytes, not 256 (header 128 + index 96 + footer 32): it holds frames"
    fi
    # The headers differ (the incremental is generation 2 of the chain, and the
    # fingerprint in the trailer covers the generation): compare the entries,
    # between the 64-byte header and the 56-byte trailer.
    v2d1_bytes=$(stat -c %s "$V2D1")
    if [[ $(stat -c %s "$V2D2") -ne $v2d1_bytes ]] ||
        ! cmp -s -i 64 -n $((v2d1_bytes - 64 - 56)) "$V2D1" "$V2D2"; then
        fail "the v2 incremental dump's digest entries differ from the full dump's ($V2D1, $V2D2)"
    fi
fi

# =============================================================================
# Part H: the scans again, beside a memory-bandwidth hog
# =============================================================================

HOG_NAMES=()
if ((HOG)) && has_part 1 && has_part A; then
    H_MD5="H: md5sum FILE"
    H_READ="H: cat FILE > /dev/null"
    H_INCR1="H: legacy md5 incremental dump"
    H_INCRA="H: v2 blake3 incremental dump"
    H_INCRP="H: v2 blake3 incremental --no-mmap"
    H_PIECE="H: read-limit pread 128K/thread"
    H_POOL="H: read-limit pread 1M pool"
    H_MMAP="H: read-limit mmap"
    wait_for_quiet "the hog"
    log "starting a memory-bandwidth hog: stress-ng --stream 1"
    stress-ng --stream 1 --quiet &
    HOG_PID=$!
    # Its first seconds allocate and fill its arrays.
    sleep 5
    NO_WAIT=1
    measure "$H_MD5" "$SIZE_MIB" bash -c 'md5sum "$1" > /dev/null' _ "$DATA"
    measure "$H_READ" "$SIZE_MIB" bash -c 'cat "$1" > /dev/null' _ "$DATA"
    BEFORE_EACH=(rm -f "$DIFF2")
    measure "$H_INCR1" "$SIZE_MIB" "$BIN/blockdiff-dump" --format legacy --old-digest "$D1" --new-digest "$D2" -o "$DIFF2" "$DATA"
    BEFORE_EACH=(rm -f "$V2INCR")
    measure "$H_INCRA" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --old-digest "$V2D1" --new-digest "$V2D2" -o "$V2INCR" "$DATA"
    measure "$H_INCRP" "$SIZE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --no-mmap --old-digest "$V2D1" --new-digest "$V2D2" -o "$V2INCR" "$DATA"
    BEFORE_EACH=()
    measure "$H_PIECE" "$SIZE_MIB" bash -c '"$1" pread-piece "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"
    measure "$H_POOL" "$SIZE_MIB" bash -c '"$1" pread-pool "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"
    measure "$H_MMAP" "$SIZE_MIB" bash -c '"$1" mmap "$2" > /dev/null' _ "$BIN/read-limit" "$DATA"
    NO_WAIT=0
    kill "$HOG_PID"
    wait "$HOG_PID" 2>/dev/null || true
    HOG_NAMES=("$H_MD5" "$H_READ" "$H_INCR1" "$H_INCRA" "$H_INCRP" "$H_PIECE" "$H_POOL" "$H_MMAP")
    if [[ $(stat -c %s "$DIFF2") -ne 4 || $(stat -c %s "$V2INCR") -ne 256 ]]; then
        fail "an incremental diff of the unchanged file beside the hog is not empty"
    fi
fi
if has_part 1 || has_part A; then
    rm -f "$DATA" "$V2D1" "$V2D2"
fi

# =============================================================================
# Part 2 B: an ext4 image of part of /usr, v2 --zstd-level 1 against zstd -1 -T0
# =============================================================================

if has_part B || has_part C || has_part E || has_part G; then
    # Stage about STAGE_MIB of /usr: whole subdirectories of /usr/lib and
    # /usr/share, taken alternately from each (largest first) if they still fit,
    # for a mix of libraries and executables with text, docs and translations.
    log "choosing about $STAGE_MIB MiB of /usr/lib and /usr/share to copy"
    STAGE_BUDGET=$((STAGE_MIB * 1024 * 1024))
    STAGED=()
    # usr_dirs PARENT PARITY: "RANK BYTES DIR" for PARENT's subdirectories,
    # largest first, ranked 2, 4, 6 ... (PARITY 0) or 3, 5, 7 ... (PARITY 1).
    usr_dirs() {
        find "$1" -mindepth 1 -maxdepth 1 -type d -print0 |
            xargs -0 -r du -sb -x 2>/dev/null | sort -rn |
            awk -v p="$2" '{ print 2 * NR + p " " $0 }' || true
    }
    while read -r _ bytes dir; do
        if ((bytes <= STAGE_BUDGET)); then
            STAGED+=("$dir")
            STAGE_BUDGET=$((STAGE_BUDGET - bytes))
        fi
        if ((STAGE_BUDGET < STAGE_MIB * 1024 * 1024 / 100)); then break; fi
    done < <({
        usr_dirs /usr/lib 0
        usr_dirs /usr/share 1
    } | sort -n)
    if ((${#STAGED[@]} == 0)); then
        echo "run.sh: found nothing under /usr/lib or /usr/share to copy" >&2
        exit 1
    fi
    log "copying ${#STAGED[@]} directories to $STAGE"
    mkdir -p "$STAGE"
    for dir in "${STAGED[@]}"; do
        dest=$STAGE${dir#/usr}
        mkdir -p "$(dirname "$dest")"
        cp -a "$dir" "$dest"
    done
    STAGE_BYTES=$(du -sb "$STAGE" | awk '{ print $1 }')
    STAGE_FILES=$(find "$STAGE" | wc -l)

    # mke2fs gives one inode per 16 KiB by default; many small files need more.
    MKFS_INODES=()
    if ((STAGE_FILES * 5 / 4 > IMAGE_BYTES / 16384)); then
        MKFS_INODES=(-N $((STAGE_FILES * 5 / 4 + 1024)))
    fi
    log "making a $IMAGE_MIB MiB ext4 image of $STAGE_BYTES bytes in $STAGE_FILES files"
    "$MKFS" -q -F "${MKFS_INODES[@]}" -d "$STAGE" "$IMAGE" "${IMAGE_MIB}M" >&2
    rm -rf "$STAGE"
    IMAGE_ALLOC=$(($(stat -c '%b * %B' "$IMAGE")))
    if [[ $(stat -c %s "$IMAGE") -ne $IMAGE_BYTES ]]; then
        echo "run.sh: $IMAGE is not $IMAGE_BYTES bytes" >&2
        exit 1
    fi
    # The chain of part C starts from the first CHAIN_MIB MiB of the image.
    cp --sparse=always "$IMAGE" "$CHAIN_SRC"
    truncate -s "$CHAIN_BYTES" "$CHAIN_SRC"
    if has_part G; then cp --sparse=always "$CHAIN_SRC" "$FOLD_SRC"; fi
fi

# =============================================================================
# Part 2 E: encryption, on the ext4 image (before part B removes it)
# =============================================================================

if has_part E; then
    E_FULL_P="E: backup full, plain"
    E_FULL_E="E: backup full, encrypted"
    E_INCR_P="E: backup incremental, plain"
    E_INCR_E="E: backup incremental, encrypted"
    E_REST_P="E: restore, plain"
    E_REST_E="E: restore, encrypted"
    rm -rf "$ENC_DIR" "$ENC_KEY"
    "$BIN/blockdiff-key" new "$ENC_KEY" 2>/dev/null
    # e_reset: empty chains, for each run of a full backup.
    e_reset() {
        rm -rf "$ENC_DIR"
        mkdir -p "$ENC_DIR"
    }
    log "warming the page cache"
    cat "$IMAGE" >/dev/null
    BEFORE_EACH=(e_reset)
    measure "$E_FULL_P" "$IMAGE_MIB" "$BIN/blockdiff-backup" -q "$ENC_DIR/plain" "$IMAGE"
    measure "$E_FULL_E" "$IMAGE_MIB" "$BIN/blockdiff-backup" -q --encrypt --key-file "$ENC_KEY" "$ENC_DIR/enc" "$IMAGE"
    BEFORE_EACH=()
    # One chain of each kind for the incrementals and restores.
    "$BIN/blockdiff-backup" -q "$ENC_DIR/plain" "$IMAGE"
    E_DIFF_P=$(stat -c %s "$ENC_DIR/plain.1")
    E_DIFF_E=$(stat -c %s "$ENC_DIR/enc.1")
    measure "$E_INCR_P" "$IMAGE_MIB" "$BIN/blockdiff-backup" -q "$ENC_DIR/plain" "$IMAGE"
    measure "$E_INCR_E" "$IMAGE_MIB" "$BIN/blockdiff-backup" -q --encrypt --key-file "$ENC_KEY" "$ENC_DIR/enc" "$IMAGE"
    BEFORE_EACH=(rm -f "$ENC_RESTORED")
    measure "$E_REST_P" "$IMAGE_MIB" "$BIN/blockdiff-restore" -q "$ENC_RESTORED" --from "$ENC_DIR/plain"
    if ! cmp "$IMAGE" "$ENC_RESTORED"; then
        fail "the plain chain of part E does not restore the image"
    fi
    measure "$E_REST_E" "$IMAGE_MIB" "$BIN/blockdiff-restore" -q --key-file "$ENC_KEY" "$ENC_RESTORED" --from "$ENC_DIR/enc"
    if ! cmp "$IMAGE" "$ENC_RESTORED"; then
        fail "the encrypted chain of part E does not restore the image"
    fi
    BEFORE_EACH=()
    read -r _ E_SEAL_S E_SEAL_GIBS < <("$BIN/aead-limit" 1024 | grep '^seal')
    read -r _ E_OPEN_S E_OPEN_GIBS < <("$BIN/aead-limit" 1024 | grep '^open')
    rm -rf "$ENC_DIR" "$ENC_RESTORED" "$ENC_KEY"
fi

if has_part B; then
    B_ZSTD="B: zstd -1 -T0 image"
    B_DUMP="B: v2 zstd-1 full dump of image"

    log "warming the page cache"
    cat "$IMAGE" >/dev/null
    BEFORE_EACH=(rm -f "$IMAGE_ZST")
    measure "$B_ZSTD" "$IMAGE_MIB" zstd -1 -T0 -q -f "$IMAGE" -o "$IMAGE_ZST"
    ZST_BYTES=$(stat -c %s "$IMAGE_ZST")
    rm -f "$IMAGE_ZST"
    cat "$IMAGE" >/dev/null
    BEFORE_EACH=(rm -f "$IMAGE_DIFF")
    measure "$B_DUMP" "$IMAGE_MIB" "$BIN/blockdiff-dump" -q --format v2 --hash blake3 --zstd-level 1 --new-digest "$IMAGE_DIGEST" -o "$IMAGE_DIFF" "$IMAGE"
    IMAGE_DIFF_BYTES=$(stat -c %s "$IMAGE_DIFF")

    log "checking that the image's diff restores the image"
    if ! "$BIN/blockdiff-restore" -q "$IMAGE_RESTORED" -i "$IMAGE_DIFF" || ! cmp "$IMAGE" "$IMAGE_RESTORED"; then
        fail "blockdiff-restore of the ext4 image's v2 diff does not reproduce the image"
    fi
    rm -f "$IMAGE" "$IMAGE_DIFF" "$IMAGE_DIGEST" "$IMAGE_RESTORED"
fi

# =============================================================================
# Part 2 C: restore time of a chain of CHAIN_GENS generations
# =============================================================================

if has_part C; then
    mkdir -p "$CHAIN_DIR"
    log "building a chain of $CHAIN_GENS generations of $CHAIN_MIB MiB in $CHAIN_DIR"
    t0=$(now)
    "$BIN/blockdiff-backup" -q "$CHAIN" "$CHAIN_SRC"
    t1=$(now)
    CHAIN_T1=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    cp --sparse=always "$CHAIN_SRC" "$CHAIN_GEN1"
    MUTATE_LOG=()
    t0=$(now)
    for ((g = 2; g <= CHAIN_GENS; g++)); do
        MUTATE_LOG+=("$(python3 "$ROOT/benches/chain_mutate.py" "$CHAIN_SRC" "$g")")
        "$BIN/blockdiff-backup" -q "$CHAIN" "$CHAIN_SRC"
    done
    t1=$(now)
    CHAIN_TREST=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    CHAIN_INFO=$("$BIN/blockdiff-info" "$CHAIN")
    CHAIN_DISK=$(du -sb "$CHAIN_DIR" | awk '{ print $1 }')

    C_FIRST="C: restore generation 1"
    C_LAST="C: restore generation $CHAIN_GENS"
    C_DD="C: dd bs=1M conv=fsync generation 1"

    DROP_CACHES=$CAN_DROP
    BEFORE_EACH=(rm -f "$CHAIN_RESTORED")
    measure "$C_FIRST" "$CHAIN_MIB" "$BIN/blockdiff-restore" -q "$CHAIN_RESTORED" --from "$CHAIN" --generation 1
    if ! cmp "$CHAIN_GEN1" "$CHAIN_RESTORED"; then
        fail "the restored generation 1 differs from generation 1's source"
    fi
    measure "$C_LAST" "$CHAIN_MIB" "$BIN/blockdiff-restore" -q "$CHAIN_RESTORED" --from "$CHAIN" --generation "$CHAIN_GENS"
    if ! cmp "$CHAIN_SRC" "$CHAIN_RESTORED"; then
        fail "the restored generation $CHAIN_GENS differs from the final source"
    fi
    # The write limit of a restore: the same bytes (generation 1, read from
    # the disk as the chain is) written and synced by dd.
    measure "$C_DD" "$CHAIN_MIB" dd if="$CHAIN_GEN1" of="$CHAIN_RESTORED" bs=1M conv=fsync status=none
    DROP_CACHES=0
    BEFORE_EACH=()
    rm -f "$CHAIN_RESTORED"
fi

# =============================================================================
# Part 2 F: the last generation of the chain, mounted (FUSE)
# =============================================================================

if has_part F; then
    F_SEQ="F: cat of the mounted generation $CHAIN_GENS"
    mkdir -p "$MOUNT_DIR"
    "$BIN/blockdiff-mount" --state-dir "$MOUNT_STATE" "$CHAIN" "$MOUNT_DIR" 2>/dev/null
    DROP_CACHES=$CAN_DROP
    measure "$F_SEQ" "$CHAIN_MIB" bash -c 'cat "$1" >/dev/null' _ "$MOUNT_DIR/image"
    DROP_CACHES=0
    if ! cmp "$MOUNT_DIR/image" "$CHAIN_SRC"; then
        fail "the mounted generation $CHAIN_GENS differs from the final source"
    fi
    log "random 4 KiB reads of the mounted image (O_DIRECT)"
    cat "$CHAIN_DIR"/* >/dev/null
    read -r _ F_READS _ F_MEDIAN _ F_P99 _ F_MAX < <("$BIN/random-read" "$MOUNT_DIR/image" 2000)
    "$BIN/blockdiff-umount" -q --state-dir "$MOUNT_STATE" "$MOUNT_DIR"
    rm -rf "$MOUNT_STATE"
    # NBD: from blockdiff-nbd's start to the first 4 KiB read by a client
    # (qemu-io started by --run once the server is ready), best of 3.
    F_NBD_FIRST=
    for _ in 1 2 3; do
        t0=$(now)
        "$BIN/blockdiff-nbd" "$CHAIN" --socket "$WORK/nbd.sock" \
            --run 'qemu-io -r -f raw -c "read 0 4096" "$uri" >/dev/null' 2>/dev/null
        t1=$(now)
        F_NBD_FIRST=$(awk -v a="$t0" -v b="$t1" -v m="$F_NBD_FIRST" 'BEGIN { t = b - a; if (m == "" || t < m) m = t; printf "%.3f", m }')
    done
    rm -f "$WORK/nbd.sock"
fi

# =============================================================================
# Part 2 G: retention by folding against monthly chains
# =============================================================================

if has_part G; then
    mkdir -p "$FOLD_DIR/one" "$FOLD_DIR/monthly"
    FOLD_ONE=$FOLD_DIR/one/volume
    FOLD_MONTHLY=$FOLD_DIR/monthly/volume
    FOLD_POLICY=(--keep-daily 7 --keep-weekly 4 --keep-monthly 3)
    log "G: $FOLD_DAYS nights of backups into one chain (pruned with ${FOLD_POLICY[*]}) and into monthly chains (--keep 3)"
    G_PRUNE_SECS=0
    t0=$(now)
    for ((d = 1; d <= FOLD_DAYS; d++)); do
        day=$(date -u -d "2026-01-01 +$((d - 1)) days" +%F)
        if ((d > 1)); then python3 "$ROOT/benches/chain_mutate.py" "$FOLD_SRC" "$d" >/dev/null; fi
        TZ=UTC faketime "$day 02:30:00" "$BIN/blockdiff-backup" -q "$FOLD_ONE" "$FOLD_SRC"
        p0=$(now)
        TZ=UTC faketime "$day 02:40:00" "$BIN/blockdiff-prune" -q "$FOLD_ONE" "${FOLD_POLICY[@]}"
        p1=$(now)
        G_PRUNE_SECS=$(awk -v s="$G_PRUNE_SECS" -v a="$p0" -v b="$p1" 'BEGIN { printf "%.2f", s + b - a }')
        TZ=UTC faketime "$day 02:30:00" "$BIN/blockdiff-backup" -q --chain monthly "$FOLD_MONTHLY" "$FOLD_SRC"
        TZ=UTC faketime "$day 02:40:00" "$BIN/blockdiff-prune" -q "$FOLD_MONTHLY" --keep 3
    done
    t1=$(now)
    G_NIGHTS_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    G_ONE_BYTES=$(du -sb "$FOLD_DIR/one" | awk '{ print $1 }')
    G_MONTHLY_BYTES=$(du -sb "$FOLD_DIR/monthly" | awk '{ print $1 }')
    G_KEPT=$("$BIN/blockdiff-info" --json "$FOLD_ONE" | python3 -c 'import json, sys; print(" ".join(str(g["generation"]) for g in json.load(sys.stdin)["generations"]))')
    G_CHAINS=$(cd "$FOLD_DIR/monthly" && ls ./*.ver | sed 's|^\./||; s|\.ver$||' | tr '\n' ' ')
    G_LAST_MONTH=$(cd "$FOLD_DIR/monthly" && ls ./*.ver | sort | tail -n 1 | sed 's|^\./||; s|\.ver$||')

    G_REST_ONE="G: restore newest, folded chain"
    G_REST_FULL="G: restore a single full"
    G_RESTORED=$WORK/fold-restored.img
    DROP_CACHES=$CAN_DROP
    BEFORE_EACH=(rm -f "$G_RESTORED")
    measure "$G_REST_ONE" "$CHAIN_MIB" "$BIN/blockdiff-restore" -q "$G_RESTORED" --from "$FOLD_ONE"
    if ! cmp "$FOLD_SRC" "$G_RESTORED"; then
        fail "the folded chain's newest generation differs from the last night's source"
    fi
    measure "$G_REST_FULL" "$CHAIN_MIB" "$BIN/blockdiff-restore" -q "$G_RESTORED" --from "$FOLD_DIR/monthly/$G_LAST_MONTH" --generation 1
    rm -f "$G_RESTORED"

    # A prune that folds the whole chain into its newest generation, on a
    # copy; beside it cat of the same diffs (page cache warm for both).
    G_COPY=$WORK/fold-copy
    G_DIFFS=()
    for g in $G_KEPT; do G_DIFFS+=("$FOLD_ONE.$g"); done
    G_DIFF_BYTES=$(cat "${G_DIFFS[@]}" | wc -c)
    G_DIFF_MIB=$((G_DIFF_BYTES / 1048576))
    G_FOLD="G: prune --keep-last 1 (fold all)"
    G_CAT="G: cat of the diffs folded"
    DROP_CACHES=0
    BEFORE_EACH=(bash -c 'rm -rf "$1" && cp -a "$2" "$1" && cat "$1"/* >/dev/null' _ "$G_COPY" "$FOLD_DIR/one")
    measure "$G_FOLD" "$G_DIFF_MIB" "$BIN/blockdiff-prune" -q "$G_COPY/volume" --keep-last 1
    BEFORE_EACH=()
    measure "$G_CAT" "$G_DIFF_MIB" bash -c 'cat "$@" >/dev/null' _ "${G_DIFFS[@]}"
    rm -rf "$G_COPY"
    DROP_CACHES=0
fi

PART2=()
if has_part A; then PART2+=("$A_FULL" "$A_READ" "$A_INCR" "$A_INCR2" "$A_INCRP" "$A_B3" "$A_PIECE" "$A_POOL" "$A_MMAP"); fi
if has_part B; then PART2+=("$B_ZSTD" "$B_DUMP"); fi
if has_part C; then PART2+=("$C_FIRST" "$C_LAST" "$C_DD"); fi
if has_part E; then PART2+=("$E_FULL_P" "$E_FULL_E" "$E_INCR_P" "$E_INCR_E" "$E_REST_P" "$E_REST_E"); fi
if has_part F; then PART2+=("$F_SEQ"); fi
if has_part G; then PART2+=("$G_REST_ONE" "$G_REST_FULL" "$G_FOLD" "$G_CAT"); fi

# =============================================================================
# Report
# =============================================================================

if has_part 1; then
    t_md5=${SECS[$MD5]}
    t_copy=${SECS[$WRITE]}
    t_full=${SECS[$FULL]}
    t_incr=${SECS[$INCR]}
fi

echo
echo "blockdiff end-to-end benchmark"
echo "  date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "  commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "  cpu:      $NPROC x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "  memory:   $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "  kernel:   $(uname -r)"
echo "  work dir: $WORK ($(df -hT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }'))"
echo "  tools:    $(zstd --version | sed 's/^\*\** *//; s/ *\**$//'); $("$MKFS" -V 2>&1 | head -1)"
if ((REPEAT > 1)); then
    echo "  repeat:   each command ran $REPEAT times; the run with the median time is shown (min-max s: all runs)"
fi
echo "  quiet:    each run waited for the 1-minute load average < $LOAD_MAX for ${LOAD_QUIET}s (at most ${LOAD_WAIT}s)"
if ((${#RT[@]} > 0)); then
    echo "  priority: each measured command ran with real-time priority (BENCH_RT=1: ${RT[*]})"
fi
echo "            'load' = 1-minute load average when the measurement started, 'wait s' = seconds waited (! = gave up)"
echo "  columns:  cpu s = user + system CPU seconds of the command; others = share of the machine's"
echo "            CPU capacity used by other processes while it ran (- if too short to tell)"

if has_part 1; then
    echo
    echo "--- Part 1: issue-2 figures (blockdiff-dump --format legacy: MD5, the original format) ---"
    echo "  file:     $SIZE_MIB MiB of random data, page cache warm"
    echo "  diff:     full $DIFF_BYTES bytes, incremental $size2 bytes"
    echo
    print_table "$t_md5" "${PART1[@]}"
fi

if ((${#PART2[@]} > 0)); then
    echo
    echo "--- Part 2: v2 format ---"
    if has_part A; then
        echo "  A: the same $SIZE_MIB MiB random file, page cache warm; v2 --hash blake3 --zstd-level 1 (default)"
        echo "     incremental diff: $V2INCR_BYTES bytes (no frames = header 128 + index 96 + footer 32 = 256)"
    fi
    if has_part B; then
        echo "  B: ext4 image of $IMAGE_MIB MiB (mkfs.ext4 -d) holding $(awk -v b="$STAGE_BYTES" 'BEGIN { printf "%.0f MiB (%.2f GB)", b / 1048576, b / 1e9 }') in $STAGE_FILES files and directories,"
        echo "     copied from: ${STAGED[*]}"
        echo "     $(awk -v a="$IMAGE_ALLOC" -v s="$IMAGE_BYTES" 'BEGIN { printf "%.0f MiB allocated of %.0f MiB", a / 1048576, s / 1048576 }'): the image is a sparse file, so its free space is zero already"
        echo "     (mkfs.ext4 writes only metadata and file data; unallocated ranges read as zeros, nothing extra zeroed)"
        echo "     both commands read the image with the page cache warm and write their output to a file in $WORK"
    fi
    if has_part C; then
        echo "  C: chain of $CHAIN_GENS generations of a $CHAIN_MIB MiB volume (v2, blake3, zstd-1, 16 KiB blocks):"
        echo "     generation 1 = first $CHAIN_MIB MiB of the ext4 image ($(awk -v a="$IMAGE_MIB" -v c="$CHAIN_MIB" 'BEGIN { if (c > a) print "extended with zeros"; else print "truncated" }')),"
        echo "     generations 2..$CHAIN_GENS by benches/chain_mutate.py (seeded): ~1% of blocks at random + 64 hot blocks each;"
        echo "     e.g. ${MUTATE_LOG[0]}"
        echo "     backup of generation 1 ${CHAIN_T1} s; mutate + backup of generations 2..$CHAIN_GENS ${CHAIN_TREST} s in all; chain on disk $(awk -v b="$CHAIN_DISK" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
        if ((CAN_DROP)); then
            echo "     page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before each restore; target file deleted before each"
        else
            echo "     page cache NOT dropped before the restores (/proc/sys/vm/drop_caches is not writable: not root)"
        fi
        echo "     blockdiff-info $CHAIN (last 3 lines):"
        printf '%s\n' "$CHAIN_INFO" | tail -n 3 | sed 's/^/       /'
    fi
    if has_part F; then
        echo "  F: generation $CHAIN_GENS of C's chain mounted with blockdiff-mount (FUSE); cat of its image,"
        echo "     page cache dropped before each run (the store's and the mount's)"
    fi
    if has_part G; then
        echo "  G: $FOLD_DAYS nights of the $CHAIN_MIB MiB volume (~1% of blocks + 64 hot blocks rewritten a day), 2026-01-01 on:"
        echo "     one chain pruned nightly with ${FOLD_POLICY[*]}: generations kept: $G_KEPT"
        echo "     monthly chains pruned nightly with --keep 3: $G_CHAINS"
        echo "     $FOLD_DAYS nights (mutate, 2 backups, 2 prunes) ${G_NIGHTS_SECS} s, of which the nightly folds ${G_PRUNE_SECS} s"
        echo "     restores: page cache dropped before each; the fold and cat: page cache warm, the chain copied afresh before each fold"
    fi
    echo
    print_table "" "${PART2[@]}"
fi

if ((${#HOG_NAMES[@]} > 0)); then
    echo
    echo "--- Part H: the scans beside a memory-bandwidth hog (stress-ng --stream 1 running throughout) ---"
    echo "  the same $SIZE_MIB MiB file, page cache warm; measured at once (the hog keeps the load up);"
    echo "  'others' includes the hog, which takes one core's worth of CPU"
    echo
    print_table "${SECS[$H_MD5]}" "${HOG_NAMES[@]}"
fi

if ((CONTENDED)); then
    echo
    echo "WARNING: other processes used the CPUs during some measurements; those timings are pessimistic"
fi
if ((${#WAIT_WARNINGS[@]} > 0)); then
    echo
    echo "WARNING: the machine did not become quiet before some measurements:"
    for w in "${WAIT_WARNINGS[@]}"; do echo "  - $w"; done
fi

if has_part 1; then
    echo
    echo "targets (issue 2, legacy format):"

    ratio=$(awk -v m="$t_md5" -v t="$t_incr" 'BEGIN { printf "%.2f", m / t }')
    ok=$(awk -v m="$t_md5" -v t="$t_incr" 'BEGIN { print (m >= 1.8 * t) ? 1 : 0 }')
    printf '  (a) incremental dump >= 1.8 x md5sum throughput: %s x  %s\n' "$ratio" "$(verdict "$ok")"

    limit=$(awk -v c="$t_copy" -v m="$t_md5" -v n="$NPROC" 'BEGIN { printf "%.3f", 1.5 * (c + m / n) }')
    ok=$(awk -v f="$t_full" -v l="$limit" 'BEGIN { print (f <= l) ? 1 : 0 }')
    printf '  (b) full dump <= 1.5 x (cat > copy + md5sum / %d cores): %s s <= %s s  %s\n' "$NPROC" "$t_full" "$limit" "$(verdict "$ok")"

    for name in "$FULL" "$INCR"; do
        mib=$(awk -v r="${RSS[$name]}" 'BEGIN { printf "%.1f", r / 1024 }')
        ok=$(awk -v r="${RSS[$name]}" 'BEGIN { print (r < 256 * 1024) ? 1 : 0 }')
        printf '  (c) peak RSS of %s < 256 MiB: %s MiB  %s\n' "$name" "$mib" "$(verdict "$ok")"
    done
    printf '  (info) restore of the full legacy diff: %s s, %s x the throughput of dd bs=1M conv=fsync (%s s); %s CPU s per GiB\n' \
        "${SECS[$RESTORE]}" "$(awk -v d="${SECS[$DDSYNC]}" -v r="${SECS[$RESTORE]}" 'BEGIN { printf "%.2f", d / r }')" \
        "${SECS[$DDSYNC]}" "$(awk -v c="${CPU[$RESTORE]}" -v m="$SIZE_MIB" 'BEGIN { printf "%.2f", c / (m / 1024) }')"
fi

if ((${#PART2[@]} > 0)); then
    echo
    echo "targets (v2):"
fi
# ratio A B: how many times B's time A's throughput is (B's time / A's time).
ratio() { awk -v a="${SECS[$1]}" -v b="${SECS[$2]}" 'BEGIN { printf "%.2f", b / a }'; }
if has_part A; then
    a_gibs=$(awk -v s="$SIZE_MIB" -v t="${SECS[$A_INCR]}" 'BEGIN { printf "%.2f", s / 1024 / t }')
    a_cat=$(ratio "$A_INCR" "$A_READ")
    ok=$(awk -v r="$a_cat" 'BEGIN { print (r >= 0.8) ? 1 : 0 }')
    printf '  A. v2 blake3 incremental scan of an unchanged file >= 0.8 x cat > /dev/null: %s x (%s GiB/s)  %s\n' \
        "$a_cat" "$a_gibs" "$(verdict "$ok")"
    printf '     the same with --no-mmap (pread of 128 KiB pieces): %s x cat\n' "$(ratio "$A_INCRP" "$A_READ")"
    printf '     beside the limits of the same run: %s x b3sum --num-threads %d, %s x pread 128K/thread, %s x pread 1M pool, %s x mmap\n' \
        "$(ratio "$A_INCR" "$A_B3")" "$NPROC" "$(ratio "$A_INCR" "$A_PIECE")" "$(ratio "$A_INCR" "$A_POOL")" "$(ratio "$A_INCR" "$A_MMAP")"
    ok=$(awk -v d="${SECS[$A_INCR]}" -v t="${SECS[$A_INCR2]}" 'BEGIN { print (d <= 1.1 * t) ? 1 : 0 }')
    printf '  A. the default thread count (%d workers here) no slower than --threads 2 (10%% for noise): %s s vs %s s  %s\n' \
        "$NPROC" "${SECS[$A_INCR]}" "${SECS[$A_INCR2]}" "$(verdict "$ok")"
fi
if has_part B; then
    b_ratio=$(awk -v z="${SECS[$B_ZSTD]}" -v d="${SECS[$B_DUMP]}" 'BEGIN { printf "%.2f", z / d }')
    printf '  B. v2 zstd-1 full dump >= 1.5 x zstd -1 -T0 throughput: %s x (%s s, %s GiB/s vs zstd %s s, %s GiB/s)  %s\n' \
        "$b_ratio" "${SECS[$B_DUMP]}" \
        "$(awk -v s="$IMAGE_MIB" -v t="${SECS[$B_DUMP]}" 'BEGIN { printf "%.2f", s / 1024 / t }')" \
        "${SECS[$B_ZSTD]}" \
        "$(awk -v s="$IMAGE_MIB" -v t="${SECS[$B_ZSTD]}" 'BEGIN { printf "%.2f", s / 1024 / t }')" \
        "$(verdict "$(awk -v z="${SECS[$B_ZSTD]}" -v d="${SECS[$B_DUMP]}" 'BEGIN { print (z >= 1.5 * d) ? 1 : 0 }')")"
    cr_diff=$(awk -v s="$IMAGE_BYTES" -v d="$IMAGE_DIFF_BYTES" 'BEGIN { printf "%.3f", s / d }')
    cr_zstd=$(awk -v s="$IMAGE_BYTES" -v d="$ZST_BYTES" 'BEGIN { printf "%.3f", s / d }')
    cr_rel=$(awk -v a="$cr_diff" -v b="$cr_zstd" 'BEGIN { printf "%+.1f", 100 * (a / b - 1) }')
    printf '  B. compression ratio within 5%% of zstd -1 (>= 0.95 x): %s (diff %s bytes) vs zstd %s (.zst %s bytes): %s%%  %s\n' \
        "$cr_diff" "$IMAGE_DIFF_BYTES" "$cr_zstd" "$ZST_BYTES" "$cr_rel" \
        "$(verdict "$(awk -v d="$IMAGE_DIFF_BYTES" -v z="$ZST_BYTES" 'BEGIN { print (1 / d >= 0.95 / z) ? 1 : 0 }')")"
fi

if has_part C; then
    c_dd=$(ratio "$C_FIRST" "$C_DD")
    printf '  C. restore of generation 1 >= 0.8 x dd bs=1M conv=fsync of the same bytes: %s x (%s s vs %s s); CPU %s s per GiB  %s\n' \
        "$c_dd" "${SECS[$C_FIRST]}" "${SECS[$C_DD]}" \
        "$(awk -v c="${CPU[$C_FIRST]}" -v m="$CHAIN_MIB" 'BEGIN { printf "%.2f", c / (m / 1024) }')" \
        "$(verdict "$(awk -v r="$c_dd" 'BEGIN { print (r >= 0.8) ? 1 : 0 }')")"
    c_ratio=$(awk -v a="${SECS[$C_FIRST]}" -v b="${SECS[$C_LAST]}" 'BEGIN { printf "%.2f", b / a }')
    printf '  C. restore of generation %d <= 1.1 x restore of generation 1: %s s vs %s s = %s x; CPU %s s per GiB  %s\n' \
        "$CHAIN_GENS" "${SECS[$C_LAST]}" "${SECS[$C_FIRST]}" "$c_ratio" \
        "$(awk -v c="${CPU[$C_LAST]}" -v m="$CHAIN_MIB" 'BEGIN { printf "%.2f", c / (m / 1024) }')" \
        "$(verdict "$(awk -v a="${SECS[$C_FIRST]}" -v b="${SECS[$C_LAST]}" 'BEGIN { print (b <= 1.1 * a) ? 1 : 0 }')")"
fi
if has_part E; then
    for pair in "$E_FULL_P|$E_FULL_E" "$E_INCR_P|$E_INCR_E" "$E_REST_P|$E_REST_E"; do
        plain=${pair%%|*}
        enc=${pair#*|}
        r=$(ratio "$enc" "$plain")
        printf '  E. %s >= 0.9 x plain: %s x (%s s vs %s s)  %s\n' "${enc#E: }" "$r" "${SECS[$enc]}" "${SECS[$plain]}" \
            "$(verdict "$(awk -v r="$r" 'BEGIN { print (r >= 0.9) ? 1 : 0 }')")"
    done
    printf '     the limit, one core: AES-256-GCM seal %s GiB/s, open %s GiB/s (aead-limit, 1 GiB in 64 KiB segments); the image %s GiB/s full, diff %s bytes plain, %s sealed\n' \
        "$E_SEAL_GIBS" "$E_OPEN_GIBS" \
        "$(awk -v s="$IMAGE_MIB" -v t="${SECS[$E_FULL_E]}" 'BEGIN { printf "%.2f", s / 1024 / t }')" "$E_DIFF_P" "$E_DIFF_E"
fi
if has_part F; then
    r=$(ratio "$F_SEQ" "$C_LAST")
    printf '  F. sequential read of the mounted generation %d >= 0.5 x the throughput of its restore: %s x (%s s vs %s s)  %s\n' \
        "$CHAIN_GENS" "$r" "${SECS[$F_SEQ]}" "${SECS[$C_LAST]}" \
        "$(verdict "$(awk -v r="$r" 'BEGIN { print (r >= 0.5) ? 1 : 0 }')")"
    printf '  F. %s random 4 KiB reads of it (O_DIRECT, store cache warm): median %s us, p99 %s us (<= 5000), max %s us  %s\n' \
        "$F_READS" "$F_MEDIAN" "$F_P99" "$F_MAX" \
        "$(verdict "$(awk -v p="$F_P99" 'BEGIN { print (p <= 5000) ? 1 : 0 }')")"
    printf '  F. blockdiff-nbd start to the first 4 KiB read by qemu-io (best of 3) <= 1 s: %s s  %s\n' \
        "$F_NBD_FIRST" "$(verdict "$(awk -v t="$F_NBD_FIRST" 'BEGIN { print (t <= 1) ? 1 : 0 }')")"
fi
if has_part G; then
    r=$(awk -v a="$G_ONE_BYTES" -v b="$G_MONTHLY_BYTES" 'BEGIN { printf "%.3f", a / b }')
    printf '  G. bytes stored, one folded chain <= 0.5 x monthly chains (--keep 3): %s x (%s vs %s MiB)  %s\n' \
        "$r" "$((G_ONE_BYTES / 1048576))" "$((G_MONTHLY_BYTES / 1048576))" \
        "$(verdict "$(awk -v r="$r" 'BEGIN { print (r <= 0.5) ? 1 : 0 }')")"
    r=$(awk -v a="${SECS[$G_REST_ONE]}" -v b="${SECS[$G_REST_FULL]}" 'BEGIN { printf "%.3f", a / b }')
    printf '  G. restore of the newest generation after the prunes <= 1.2 x the time of a single full: %s x (%s s vs %s s)  %s\n' \
        "$r" "${SECS[$G_REST_ONE]}" "${SECS[$G_REST_FULL]}" \
        "$(verdict "$(awk -v r="$r" 'BEGIN { print (r <= 1.2) ? 1 : 0 }')")"
    printf '  G. fold throughput (diffs folded per second): %s MiB/s, %s x cat of the same %s MiB of diffs (no target)\n' \
        "$(awk -v m="$G_DIFF_MIB" -v t="${SECS[$G_FOLD]}" 'BEGIN { printf "%.0f", m / t }')" \
        "$(awk -v a="${SECS[$G_FOLD]}" -v b="${SECS[$G_CAT]}" 'BEGIN { printf "%.3f", b / a }')" "$G_DIFF_MIB"
fi
if ((${#OURS[@]} > 0)); then
    worst=$(for name in "${OURS[@]}"; do printf '%s\t%s\n' "${RSS[$name]}" "$name"; done | sort -n | tail -n 1)
    printf '  peak RSS of every blockdiff command < 256 MiB: largest %s MiB (%s)  %s\n' \
        "$(awk -v r="${worst%%$'\t'*}" 'BEGIN { printf "%.1f", r / 1024 }')" "${worst#*$'\t'}" \
        "$(verdict "$(awk -v r="${worst%%$'\t'*}" 'BEGIN { print (r < 256 * 1024) ? 1 : 0 }')")"
fi
if ((${#HOG_NAMES[@]} > 0)); then
    echo
    echo "targets beside the memory-bandwidth hog (the same, informative: the design should keep its lead):"
    printf '  H. legacy MD5 incremental >= 1.8 x md5sum: %s x (without the hog: %s x)  %s\n' \
        "$(ratio "$H_INCR1" "$H_MD5")" "$(ratio "$INCR" "$MD5")" \
        "$(verdict "$(awk -v r="$(ratio "$H_INCR1" "$H_MD5")" 'BEGIN { print (r >= 1.8) ? 1 : 0 }')")"
    printf '  H. v2 blake3 incremental >= 0.8 x cat > /dev/null: %s x (without the hog: %s x)  %s\n' \
        "$(ratio "$H_INCRA" "$H_READ")" "$(ratio "$A_INCR" "$A_READ")" \
        "$(verdict "$(awk -v r="$(ratio "$H_INCRA" "$H_READ")" 'BEGIN { print (r >= 0.8) ? 1 : 0 }')")"
    printf '     --no-mmap beside the hog: %s x cat\n' "$(ratio "$H_INCRP" "$H_READ")"
    printf '     probes beside the hog: pread 128K/thread %s x cat, pread 1M pool %s x cat, mmap %s x cat\n' \
        "$(ratio "$H_PIECE" "$H_READ")" "$(ratio "$H_POOL" "$H_READ")" "$(ratio "$H_MMAP" "$H_READ")"
fi


echo
if ((${#FAILURES[@]} > 0)); then
    echo "correctness: FAILED"
    for f in "${FAILURES[@]}"; do echo "  - $f"; done
    exit 1
fi
echo "correctness: OK (parts run: $PARTS)"
if has_part 1; then
    echo "  - the legacy incremental diff of the unchanged file is empty, its digest is the full dump's,"
    echo "    and the legacy full diff restores exactly"
fi
if has_part A; then
    echo "  - the v2 incremental diff of the unchanged file is empty and its digest's hashes are the full dump's"
fi
if has_part B; then echo "  - the ext4 image's v2 diff restores exactly"; fi
if has_part C; then echo "  - the chain's generations 1 and $CHAIN_GENS restore exactly"; fi
if has_part E; then echo "  - the plain and the encrypted chain of part E restore the image exactly"; fi
if has_part F; then echo "  - the mounted image of generation $CHAIN_GENS equals its source"; fi
if has_part G; then echo "  - the folded chain's newest generation equals the last night's source"; fi
