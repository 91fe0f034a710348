# Opening a generation without restoring it, with the kernel's own
# interfaces: a Xen-style domU disk (MBR, ext4 in partition 1 at 1 MiB) on
# an LV, backed up three times with --lvm as its files change; one file of
# generation 2 copied out through blockdiff-mount --fs 1 (FUSE and a loop
# device); then generation 2 attached by the kernel's NBD client through
# blockdiff-nbd, its partition mounted and the file read back. Nothing is
# left after either.
source "$ROOT/tests/vm/lib.sh"
VG=vgexp
make_vg $VG 48
modprobe fuse
modprobe nbd nbds_max=2 max_part=4
LOOPS=$(losetup -a | wc -l)

lvcreate -q -L 16M -n domu $VG >/dev/null
printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q --no-reread --no-tell-kernel /dev/$VG/domu
part=$(losetup --find --show --offset $((2048 * 512)) /dev/$VG/domu)
at_exit "losetup -d $part"
mkfs.ext4 -q "$part"
mkdir -p /tmp/domu /tmp/store
STORE=/tmp/store/domu
for g in 1 2 3; do
    mount "$part" /tmp/domu
    mkdir -p /tmp/domu/etc
    echo "config of generation $g" >/tmp/domu/etc/app.conf
    head -c 300K /dev/urandom >"/tmp/data-$g.bin"
    cp "/tmp/data-$g.bin" /tmp/domu/
    umount /tmp/domu
    log "backup $g"
    blockdiff-backup -q "$STORE" --lvm "$VG/domu"
done
LOOPS=$(losetup -a | wc -l)

log "blockdiff-mount --fs 1 of generation 2"
STATE=/tmp/mount-state
mkdir -p /tmp/m
blockdiff-mount --state-dir "$STATE" "$STORE" -g 2 --fs 1 /tmp/m
[[ $(cat /tmp/m/etc/app.conf) == "config of generation 2" ]] || fail "app.conf of generation 2: $(cat /tmp/m/etc/app.conf)"
cmp /tmp/m/data-2.bin /tmp/data-2.bin || fail "data-2.bin differs"
[[ ! -e /tmp/m/data-3.bin ]] || fail "generation 3's file is in generation 2"
cp /tmp/m/etc/app.conf /tmp/restored.conf
blockdiff-umount --state-dir "$STATE" /tmp/m
! findmnt /tmp/m >/dev/null || fail "still mounted at /tmp/m"
[[ $(losetup -a | wc -l) -eq $LOOPS ]] || fail "loop devices left: $(losetup -a)"
! pgrep -f 'blockdiff-mount.*serve-child' >/dev/null || fail "the mount's server is still running"
[[ $(cat /tmp/restored.conf) == "config of generation 2" ]] || fail "the copied file"

log "blockdiff-nbd of generation 2, attached by nbd-client"
mkdir -p /tmp/n
blockdiff-nbd "$STORE" -g 2 --socket /tmp/domu.nbd --run '
    set -e
    nbd-client -unix "$unixsocket" /dev/nbd0 -readonly
    for i in $(seq 1 100); do [ -b /dev/nbd0p1 ] && break; sleep 0.1; done
    mount -o ro,noload /dev/nbd0p1 /tmp/n
    cat /tmp/n/etc/app.conf >/tmp/nbd.conf
    cmp /tmp/n/data-2.bin /tmp/data-2.bin
    umount /tmp/n
    nbd-client -d /dev/nbd0
' || fail "the NBD export of generation 2 (status $?)"
[[ $(cat /tmp/nbd.conf) == "config of generation 2" ]] || fail "app.conf over NBD: $(cat /tmp/nbd.conf)"
! findmnt /tmp/n >/dev/null || fail "still mounted at /tmp/n"
! pgrep -x nbdkit >/dev/null || fail "nbdkit is still running"
echo "ok"
