# Shared by the VM test cases: source "$ROOT/tests/vm/lib.sh". Each case
# runs in its own `bash -euo pipefail` inside the VM, with the release
# binaries on PATH and a tmpfs on /tmp.

fail() {
    echo "FAILED: $*" >&2
    exit 1
}

log() {
    echo "--- $*" >&2
}

# make_vg VG MIB: a volume group on a loop device backed by a file in /tmp.
# Removed (with everything in it) when the case exits.
make_vg() {
    local vg=$1 mib=$2 img=/tmp/$1.pv
    truncate -s "${mib}M" "$img"
    local dev
    dev=$(losetup -f --show "$img")
    pvcreate -q "$dev" >/dev/null
    vgcreate -q "$vg" "$dev" >/dev/null
    VM_CLEANUP+=("vgremove -q -f $vg >/dev/null 2>&1; losetup -d $dev; rm -f $img")
    trap vm_cleanup EXIT
}

VM_CLEANUP=()
vm_cleanup() {
    local i
    for ((i = ${#VM_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${VM_CLEANUP[i]}" || true
    done
}

# at_exit CMD: runs CMD when the case exits (before the VGs are removed).
at_exit() {
    VM_CLEANUP+=("$1")
    trap vm_cleanup EXIT
}

# snapshots VG: the names of the snapshots in VG, one per line.
snapshots() {
    lvs --noheadings -o lv_name,origin "$1" | awk '$2 != "" { print $1 }'
}

# assert_no_snapshots VG
assert_no_snapshots() {
    local left
    left=$(snapshots "$1")
    [[ -z $left ]] || fail "snapshots left in $1: $left"
}

# start_writer DEV BLOCKS: keeps writing random 4 KiB blocks into the first
# BLOCKS blocks of DEV until the case exits.
start_writer() {
    local dev=$1 blocks=$2
    (
        while :; do
            dd if=/dev/urandom of="$dev" bs=4096 count=1 seek=$((RANDOM % blocks)) \
                conv=notrunc oflag=direct status=none 2>/dev/null || true
        done
    ) &
    local pid=$!
    at_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
}

# md5 FILE: its MD5 hex digest.
md5() {
    md5sum "$1" | cut -d' ' -f1
}

# backups_equal_snapshots VG KIND: three backups of VG/data (KIND "thick"
# or "thin") while a writer keeps writing to its first 8 MiB, each with
# --keep-snapshot so that the snapshot's checksum can be taken; then a
# normal run, which must remove its snapshot (thin: retain it as the
# tracking base, then a --no-track run removes it) and log its fill; then every
# generation restored and compared with its snapshot's checksum.
backups_equal_snapshots() {
    local vg=$1 kind=$2 store=/tmp/store-$1/data gen snap got
    local -A sums
    mkdir -p "/tmp/store-$vg"
    at_exit "rm -rf /tmp/store-$vg /tmp/restored-$vg"
    dd if=/dev/urandom of="/dev/$vg/data" bs=1M count=32 oflag=direct status=none
    start_writer "/dev/$vg/data" 2048
    for gen in 1 2 3; do
        blockdiff-backup "$store" --lvm "$vg/data" --snapshot-size 50% --keep-snapshot --fill-interval 0.5
        snap=$(snapshots "$vg")
        [[ $(wc -w <<<"$snap") -eq 1 ]] || fail "expected one kept snapshot, found: $snap"
        # The snapshot's content is what generation $gen must restore to.
        sums[$gen]=$(md5 "/dev/$vg/$snap")
        lvremove -q -f "$vg/$snap" >/dev/null
        sleep 1
    done
    [[ $(cat "$store.ver") == 3 ]] || fail "NAME.ver is $(cat "$store.ver"), not 3"
    [[ ${sums[1]} != "${sums[3]}" ]] || fail "the writer changed nothing between generations"

    # A run without --keep-snapshot removes its snapshot and says so; a
    # thin one is kept, deactivated, as the base of the next run's change
    # tracking, and a --no-track run then removes both.
    local last=4
    blockdiff-backup "$store" --lvm "/dev/$vg/data" --snapshot-size 50% --fill-interval 0.5 2>"/tmp/$vg.log"
    cat "/tmp/$vg.log"
    grep -q "created $kind snapshot $vg/data-bd-" "/tmp/$vg.log" || fail "no 'created $kind snapshot' line"
    if [[ $kind == thin ]]; then
        grep -Eq "kept snapshot $vg/data-bd-.* as the base of the next run's tracking; peak fill [0-9.]+%" "/tmp/$vg.log" ||
            fail "no 'kept snapshot … as the base … peak fill' line"
        snap=$(snapshots "$vg")
        [[ $(wc -w <<<"$snap") -eq 1 ]] || fail "expected one retained snapshot, found: $snap"
        lvs --noheadings -o lv_tags "$vg/$snap" | grep -q blockdiff-retained ||
            fail "$vg/$snap is not tagged blockdiff-retained"
        grep -q '"snapshot_peak_fill_percent"' "$store.4.meta.json" || fail "no peak fill in $store.4.meta.json"
        last=5
        blockdiff-backup "$store" --lvm "/dev/$vg/data" --snapshot-size 50% --fill-interval 0.5 --no-track 2>"/tmp/$vg.log"
        cat "/tmp/$vg.log"
    fi
    grep -Eq "removed snapshot $vg/data-bd-.* after [0-9.]+ s; peak fill [0-9.]+%" "/tmp/$vg.log" ||
        fail "no 'removed … peak fill' line"
    grep -q '"snapshot_peak_fill_percent"' "$store.$last.meta.json" || fail "no peak fill in $store.$last.meta.json"
    assert_no_snapshots "$vg"

    for gen in 1 2 3; do
        blockdiff-restore "/tmp/restored-$vg" --from "$store" --generation "$gen"
        got=$(md5 "/tmp/restored-$vg")
        [[ $got == "${sums[$gen]}" ]] || fail "generation $gen restores to $got, its snapshot was ${sums[$gen]}"
        rm -f "/tmp/restored-$vg"
    done
}
