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
