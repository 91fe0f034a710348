#!/usr/bin/env bash
# shellcheck disable=SC2016 # the bash -c scripts below expand their own "$1"
# End-to-end benchmark of blockdiff-dump against the machine's limits.
#
# Usage (from anywhere; the script moves to the repository root itself):
#   benches/run.sh
#   BENCH_SIZE_MIB=256 BENCH_DIR=/mnt/fast/bench benches/run.sh
#
# Environment:
#   BENCH_SIZE_MIB  size of the test file in MiB (default 2048)
#   BENCH_DIR       work directory (default bench-work/ at the repository root)
#   CARGO_TARGET_DIR  honoured as cargo does (binaries are looked up there)
#
# It builds the release tools, writes a file of incompressible data, warms the
# page cache and times, in one run:
#   md5sum FILE                 one core's MD5 throughput (the reference)
#   cat FILE > /dev/null        the read limit
#   cat FILE > copy             the write limit
#   blockdiff-dump (full)       every block to a diff file + new digest
#   blockdiff-dump (incr.)      the unchanged file against that digest
#   blockdiff-restore           the full diff back into a file (information)
# then prints a table and the performance targets with PASS/FAIL:
#   (a) incremental dump throughput >= 1.8 x md5sum's
#   (b) full dump time <= 1.5 x (time of cat > copy + md5sum time / nproc)
#   (c) peak RSS of each dump < 256 MiB
# A missed target only prints FAIL. A correctness failure (incremental diff
# not empty, restored file different from the source, digests differing)
# makes the script exit with status 1. Large files are removed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

SIZE_MIB=${BENCH_SIZE_MIB:-2048}
WORK=${BENCH_DIR:-$ROOT/bench-work}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

if ! [[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: BENCH_SIZE_MIB must be a positive number of MiB, not '$SIZE_MIB'" >&2
    exit 2
fi

log() { printf '==> %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------

for tool in cargo md5sum awk cmp dd; do
    if ! command -v "$tool" >/dev/null; then
        echo "run.sh: '$tool' is required but not installed" >&2
        exit 2
    fi
done

# GNU time, for the peak resident set size (%M).
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (Debian package 'time')"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when the package cannot be found.
    if ! "${SUDO[@]}" apt-get install -y time; then
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" apt-get install -y time
    fi
fi

log "building release binaries (cargo build --release -p blockdiff-tools)"
cargo build --release -p blockdiff-tools
for b in blockdiff-dump blockdiff-restore; do
    if [[ ! -x $BIN/$b ]]; then
        echo "run.sh: $BIN/$b was not built" >&2
        exit 2
    fi
done

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

cleanup() {
    # The digests (16 bytes per 16 KiB block) and the empty diff are small
    # and kept for inspection; everything of the size of the source goes.
    rm -f "$DATA" "$COPY" "$DIFF" "$RESTORED" "$RESTORED".* "$TIMES"
}
trap cleanup EXIT
cleanup
rm -f "$DIFF2" "$D1" "$D2"

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
NPROC=$(nproc)

log "writing $SIZE_MIB MiB of random data to $DATA"
dd if=/dev/urandom of="$DATA" bs=1M count="$SIZE_MIB" iflag=fullblock status=none
actual=$(stat -c %s "$DATA")
if [[ $actual -ne $SIZE_BYTES ]]; then
    echo "run.sh: $DATA has $actual bytes, expected $SIZE_BYTES" >&2
    exit 1
fi

# CPU time used by the whole machine so far, in clock ticks (user, nice,
# system, irq, softirq, steal): compared with a command's own CPU time it
# shows whether other processes competed with it.
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

log "warming the page cache"
cat "$DATA" >/dev/null

# --- measurements -----------------------------------------------------------

NAMES=()
declare -A SECS CPU RSS OTHER

now() { date +%s.%N; }

# measure NAME COMMAND [ARGS...]: wall time (date), CPU time and peak RSS
# (GNU time) of one run of COMMAND, and the share of the machine's CPU
# capacity other processes used meanwhile. Dirty pages are written back
# first so that an earlier write does not slow the command down.
measure() {
    local name=$1 t0 t1 b0 b1 user sys rss
    shift
    sync
    log "timing: $name"
    b0=$(busy_ticks)
    t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$TIMES" "$@"
    t1=$(now)
    b1=$(busy_ticks)
    NAMES+=("$name")
    SECS[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    read -r user sys rss <"$TIMES"
    CPU[$name]=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    RSS[$name]=$rss
    OTHER[$name]=$(awk -v b0="$b0" -v b1="$b1" -v hz="$HZ" -v c="${CPU[$name]}" \
        -v t="${SECS[$name]}" -v n="$NPROC" 'BEGIN {
        o = (b1 - b0) / hz - c; if (o < 0) o = 0
        printf "%.0f", (t > 0) ? 100 * o / (t * n) : 0 }')
}

MD5="md5sum FILE"
READ="cat FILE > /dev/null"
WRITE="cat FILE > copy"
FULL="blockdiff-dump full"
INCR="blockdiff-dump incremental"
RESTORE="blockdiff-restore (info)"

measure "$MD5" bash -c 'md5sum "$1" > /dev/null' _ "$DATA"
measure "$READ" bash -c 'cat "$1" > /dev/null' _ "$DATA"
measure "$WRITE" bash -c 'cat "$1" > "$2"' _ "$DATA" "$COPY"
rm -f "$COPY"
measure "$FULL" "$BIN/blockdiff-dump" --new-digest "$D1" -o "$DIFF" "$DATA"
measure "$INCR" "$BIN/blockdiff-dump" --old-digest "$D1" --new-digest "$D2" -o "$DIFF2" "$DATA"
measure "$RESTORE" bash -c '"$1" -q "$2" < "$3"' _ "$BIN/blockdiff-restore" "$RESTORED" "$DIFF"

# --- correctness --------------------------------------------------------------

FAILURES=()
fail() {
    FAILURES+=("$1")
    printf '\n!!! CORRECTNESS FAILURE: %s\n' "$1" >&2
}

size2=$(stat -c %s "$DIFF2")
if [[ $size2 -ne 4 ]]; then
    fail "the incremental diff of the unchanged file has $size2 bytes, not just the 4-byte header"
fi
if ! cmp -s "$D1" "$D2"; then
    fail "the incremental dump's digest differs from the full dump's ($D1, $D2)"
fi
if [[ ! -f $RESTORED ]] || ! cmp "$DATA" "$RESTORED"; then
    fail "blockdiff-restore of the full diff does not reproduce the source"
fi
DIFF_BYTES=$(stat -c %s "$DIFF")

# --- report -------------------------------------------------------------------

t_md5=${SECS[$MD5]}
t_copy=${SECS[$WRITE]}
t_full=${SECS[$FULL]}
t_incr=${SECS[$INCR]}

echo
echo "blockdiff end-to-end benchmark"
echo "  date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "  commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "  cpu:      $NPROC x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "  kernel:   $(uname -r)"
echo "  file:     $SIZE_MIB MiB of random data in $WORK ($(df -hT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }'))"
echo "  diff:     full $DIFF_BYTES bytes, incremental $size2 bytes"
echo
echo "(cpu s: user + system CPU seconds of the command; others: share of the"
echo " machine's CPU capacity used by other processes while it ran, - if too short to tell)"
printf '%-28s %9s %8s %10s %8s %9s %7s\n' "name" "seconds" "GiB/s" "x md5sum" "cpu s" "RSS MiB" "others"
contended=0
for name in "${NAMES[@]}"; do
    awk -v name="$name" -v t="${SECS[$name]}" -v m="$t_md5" -v mib="$SIZE_MIB" \
        -v c="${CPU[$name]}" -v r="${RSS[$name]}" -v o="${OTHER[$name]}" -v n="$NPROC" 'BEGIN {
        if (t <= 0) t = 0.001
        # Under 1 CPU-second of capacity, clock ticks are too coarse.
        others = (t * n >= 1) ? sprintf("%6d%%", o) : "      -"
        printf "%-28s %9.3f %8.3f %10.2f %8.2f %9.1f %s\n", name, t, mib / 1024 / t, m / t, c, r / 1024, others }'
    if awk -v t="${SECS[$name]}" -v n="$NPROC" -v o="${OTHER[$name]}" \
        'BEGIN { exit !(t * n >= 1 && o > 10) }'; then
        contended=1
    fi
done
if ((contended)); then
    echo "WARNING: other processes used the CPUs during some measurements; those timings are pessimistic"
fi

echo
echo "targets:"
verdict() { if [[ $1 == 1 ]]; then echo PASS; else echo FAIL; fi; }

ratio=$(awk -v m="$t_md5" -v t="$t_incr" 'BEGIN { printf "%.2f", m / t }')
ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 1.8) ? 1 : 0 }')
printf '  (a) incremental dump >= 1.8 x md5sum throughput: %s x  %s\n' "$ratio" "$(verdict "$ok")"

limit=$(awk -v c="$t_copy" -v m="$t_md5" -v n="$NPROC" 'BEGIN { printf "%.3f", 1.5 * (c + m / n) }')
ok=$(awk -v f="$t_full" -v l="$limit" 'BEGIN { print (f <= l) ? 1 : 0 }')
printf '  (b) full dump <= 1.5 x (cat > copy + md5sum / %d cores): %s s <= %s s  %s\n' "$NPROC" "$t_full" "$limit" "$(verdict "$ok")"

for name in "$FULL" "$INCR"; do
    mib=$(awk -v r="${RSS[$name]}" 'BEGIN { printf "%.1f", r / 1024 }')
    ok=$(awk -v r="${RSS[$name]}" 'BEGIN { print (r < 256 * 1024) ? 1 : 0 }')
    printf '  (c) peak RSS of %s < 256 MiB: %s MiB  %s\n' "$name" "$mib" "$(verdict "$ok")"
done

echo
if ((${#FAILURES[@]} > 0)); then
    echo "correctness: FAILED"
    for f in "${FAILURES[@]}"; do echo "  - $f"; done
    exit 1
fi
echo "correctness: OK (incremental diff is the 4-byte header, digests agree, restore reproduces the source)"
