# A snapshot too small for the writes during the dump: LVM invalidates it,
# the generation is not committed, NAME.ver is unchanged and the snapshot
# is removed.
source "$ROOT/tests/vm/lib.sh"
make_vg vgover 160
lvcreate -q -L 64M -n data vgover >/dev/null
dd if=/dev/urandom of=/dev/vgover/data bs=1M count=64 oflag=direct status=none
store=/tmp/store-over/data
mkdir -p /tmp/store-over
at_exit "rm -rf /tmp/store-over"
blockdiff-backup "$store" --lvm vgover/data --snapshot-size 4M
[[ $(cat "$store.ver") == 1 ]] || fail "generation 1 was not committed"
# The store's files and their content (the lock file is rewritten by every
# run and holds nothing of the chain).
store_state() { (cd /tmp/store-over && md5sum $(ls | grep -v '\.lock$')); }
store_state > /tmp/over-before

# Heavy writes over the whole volume: 4 MiB of copy-on-write space lasts
# a fraction of a second.
(
    while :; do
        dd if=/dev/urandom of=/dev/vgover/data bs=1M count=64 oflag=direct status=none 2>/dev/null || true
    done
) &
writer=$!
at_exit "kill $writer 2>/dev/null; wait $writer 2>/dev/null"
set +e
blockdiff-backup "$store" --lvm vgover/data --snapshot-size 4M --fill-interval 0.2 2>/tmp/over.log
status=$?
set -e
kill $writer; wait $writer 2>/dev/null || true
cat /tmp/over.log
[[ $status -eq 1 ]] || fail "exit status $status, not 1"
grep -q 'overflowed' /tmp/over.log || fail "the error does not say the snapshot overflowed"
[[ $(cat "$store.ver") == 1 ]] || fail "NAME.ver changed to $(cat "$store.ver")"
store_state | diff /tmp/over-before - || fail "the store's files changed"
assert_no_snapshots vgover
