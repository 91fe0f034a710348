# blockdiff-lvm mount/umount of a partition inside an LV (a Xen domU
# disk): an MBR disk and a GPT disk made by sfdisk, each with ext4 at a
# non-zero offset, mounted and written to (so the on-disk journal needs
# recovery) while blockdiff-lvm snapshots them; fsck replays the journal on
# the snapshot, the file reads back intact, and umount leaves nothing. Then
# the --each form with one volume that fails, cleanup of a stale snapshot,
# and failures that must leave nothing behind.
source "$ROOT/tests/vm/lib.sh"
VG=vgpart
STATE=/tmp/bd-state
make_vg $VG 64
bdl() { blockdiff-lvm --state-dir "$STATE" "$@"; }

# make_disk LV LABEL START SIZE: a 12 MiB LV with a partition table of
# LABEL (dos or gpt) whose partition 2 (sectors START, SIZE) holds ext4,
# mounted at /tmp/origin-LV with a 3 MiB file written and synced: the
# journal is committed but not checkpointed, and needs_recovery is set.
make_disk() {
    local lv=$1 label=$2 start=$3 size=$4 first
    lvcreate -q -L 12M -n "$lv" $VG >/dev/null
    if [[ $label == dos ]]; then first=82; else first=U; fi
    printf 'label: %s\nstart=2048, size=2048, type=%s\nstart=%s, size=%s, type=%s\n' \
        "$label" "$first" "$start" "$size" "$([[ $label == dos ]] && echo 83 || echo L)" |
        sfdisk -q --no-reread --no-tell-kernel "/dev/$VG/$lv" >/dev/null
    local loop
    loop=$(losetup --find --show --offset $((start * 512)) --sizelimit $((size * 512)) "/dev/$VG/$lv")
    mkfs.ext4 -q "$loop"
    mkdir -p "/tmp/origin-$lv"
    mount "$loop" "/tmp/origin-$lv"
    at_exit "umount /tmp/origin-$lv; losetup -d $loop"
    head -c 3M /dev/urandom >"/tmp/origin-$lv/data.bin"
    sync
    # Captured first (see 00-lvm-works.sh: grep -q closing the pipe early
    # fails a pipefail pipeline at random).
    features=$(dumpe2fs -h "$loop" 2>/dev/null)
    grep -q needs_recovery <<<"$features" ||
        fail "the mounted origin $lv does not need recovery: the test would prove nothing"
}

# assert_nothing_left DIR...: no snapshot, no extra loop device, no mount
# at DIR, no state file.
assert_nothing_left() {
    assert_no_snapshots $VG
    [[ $(losetup -a | wc -l) -eq $LOOPS ]] || fail "loop devices left: $(losetup -a)"
    local dir
    for dir in "$@"; do
        ! findmnt "$dir" >/dev/null || fail "still mounted at $dir"
    done
    [[ -z $(ls -A "$STATE" 2>/dev/null) ]] || fail "state files left: $(ls "$STATE")"
}

# same_file A B
same_file() {
    [[ $(md5 "$1") == $(md5 "$2") ]] || fail "$1 differs from $2"
}

make_disk domu-a dos 4096 18432 # partition 2 at 2 MiB
make_disk domu-b gpt 6144 16384 # partition 2 at 3 MiB
lvcreate -q -L 4M -n domu-c $VG >/dev/null # no table, no filesystem
lvcreate -q -L 4M -n other $VG >/dev/null
LOOPS=$(losetup -a | wc -l)

log "mount of the MBR disk: the only Linux partition, journal replayed"
mkdir -p /tmp/mnt-a
out=$(bdl mount $VG/domu-a /tmp/mnt-a 2>&1) || fail "mount failed: $out"
echo "$out"
grep -q 'dos partition table on vgpart/domu-a: partition 2: Linux, 9 MiB at offset 2097152' <<<"$out" ||
    fail "not partition 2 at 2 MiB"
grep -q 'fsck -y /dev/loop[0-9]*: exit status [012]: .*recovering journal' <<<"$out" ||
    fail "fsck did not replay the journal"
same_file /tmp/mnt-a/data.bin /tmp/origin-domu-a/data.bin
findmnt -n -o OPTIONS /tmp/mnt-a | grep -qw ro || fail "not mounted read-only"
loop=$(sed -n 's/.*"loop_device": "\(.*\)".*/\1/p' "$STATE"/*.json)
features=$(dumpe2fs -h "$loop" 2>/dev/null)
! grep -q needs_recovery <<<"$features" || fail "the snapshot still needs recovery"
[[ $(snapshots $VG | wc -l) -eq 1 ]] || fail "snapshots: $(snapshots $VG)"
bdl snapshots $VG | tee /tmp/list
grep -q "domu-a .*(gone) *mounted at /tmp/mnt-a" /tmp/list || fail "the mount is not listed"
bdl cleanup $VG 2>&1 | tee /tmp/cleanup
grep -q 'no stale snapshots' /tmp/cleanup || fail "cleanup touched the mounted snapshot"
bdl umount /tmp/mnt-a
assert_nothing_left /tmp/mnt-a

log "--each over domu-*: a and b mounted, c (no filesystem) fails and is undone"
mkdir -p /tmp/each
set +e
bdl mount --each "$VG/domu-*" --under /tmp/each 2>&1 | tee /tmp/each.log
status=${PIPESTATUS[0]}
set -e
[[ $status -eq 1 ]] || fail "mount --each: exit status $status, not 1"
grep -q 'gpt partition table on vgpart/domu-b: partition 2: Linux filesystem, 8 MiB at offset 3145728' /tmp/each.log ||
    fail "not the GPT's partition 2 at 3 MiB"
grep -q 'vgpart/domu-b: fsck -y .*recovering journal' /tmp/each.log || fail "domu-b: no journal replay"
grep -q 'could not mount 1 of 3 volumes: vgpart/domu-c' /tmp/each.log || fail "domu-c did not fail alone"
same_file /tmp/each/domu-a/data.bin /tmp/origin-domu-a/data.bin
same_file /tmp/each/domu-b/data.bin /tmp/origin-domu-b/data.bin
[[ ! -e /tmp/each/domu-c ]] || fail "domu-c's mount point left"
[[ $(snapshots $VG | wc -l) -eq 2 ]] || fail "snapshots: $(snapshots $VG)"
[[ $(ls "$STATE" | wc -l) -eq 2 ]] || fail "state files: $(ls "$STATE")"

log "cleanup removes a stale snapshot (owner gone) and keeps the mounted ones"
lvcreate -q -s -L 4M -n stale --addtag blockdiff --addtag blockdiff-pid-999999 $VG/other >/dev/null
bdl cleanup --dry-run $VG 2>&1 | tee /tmp/cleanup
grep -q "would remove $VG/stale" /tmp/cleanup || fail "dry run does not name the stale snapshot"
lvs $VG/stale >/dev/null 2>&1 || fail "the dry run removed it"
bdl cleanup $VG 2>&1 | tee /tmp/cleanup
[[ $(grep -c '^blockdiff-lvm: removed' /tmp/cleanup) -eq 1 ]] || fail "cleanup removed other than one"
! lvs $VG/stale >/dev/null 2>&1 || fail "the stale snapshot is still there"
[[ $(snapshots $VG | wc -l) -eq 2 ]] || fail "cleanup touched a mount: $(snapshots $VG)"

bdl umount --each "$VG/domu-*" --under /tmp/each
assert_nothing_left /tmp/each/domu-a /tmp/each/domu-b
[[ -z $(ls -A /tmp/each) ]] || fail "mount points left: $(ls /tmp/each)"

log "failures leave nothing behind"
set +e
bdl mount $VG/domu-a /tmp/does-not-exist 2>&1 | tee /tmp/fail.log
s1=${PIPESTATUS[0]}
mkdir -p /tmp/mnt-a
bdl mount $VG/domu-b /tmp/mnt-a --partition 7 2>&1 | tee -a /tmp/fail.log
s2=${PIPESTATUS[0]}
bdl umount /tmp/mnt-a 2>&1 | tee -a /tmp/fail.log
s3=${PIPESTATUS[0]}
bdl mount $VG/nope /tmp/mnt-a 2>&1 | tee -a /tmp/fail.log
s4=${PIPESTATUS[0]}
set -e
[[ "$s1 $s2 $s3 $s4" == "1 1 1 1" ]] || fail "exit statuses $s1 $s2 $s3 $s4, not 1 1 1 1"
grep -q 'the gpt partition table has no partition 7; it has 1: EFI System' /tmp/fail.log ||
    fail "no clear error for partition 7"
grep -q 'undo: removed snapshot vgpart/domu-b-bd-' /tmp/fail.log || fail "partition 7: no undo"
assert_nothing_left /tmp/mnt-a
echo "ok"
