# Two backups of different LVs of one VG at the same time: both succeed,
# their snapshots do not collide, none is left.
source "$ROOT/tests/vm/lib.sh"
make_vg vgtwo 128
for lv in one two; do
    lvcreate -q -L 24M -n $lv vgtwo >/dev/null
    dd if=/dev/urandom of=/dev/vgtwo/$lv bs=1M count=24 oflag=direct status=none
done
mkdir -p /tmp/store-two
at_exit "rm -rf /tmp/store-two"
blockdiff-backup /tmp/store-two/one --lvm vgtwo/one --zstd-level 3 2>/tmp/one.log &
a=$!
blockdiff-backup /tmp/store-two/two --lvm vgtwo/two --zstd-level 3 2>/tmp/two.log &
b=$!
wait $a || { cat /tmp/one.log; fail "the backup of vgtwo/one failed"; }
wait $b || { cat /tmp/two.log; fail "the backup of vgtwo/two failed"; }
cat /tmp/one.log /tmp/two.log
assert_no_snapshots vgtwo
for lv in one two; do
    blockdiff-restore /tmp/store-two/$lv.img --from /tmp/store-two/$lv
    [[ $(md5 /tmp/store-two/$lv.img) == $(md5 /dev/vgtwo/$lv) ]] || fail "$lv restores wrongly"
done
