# Full and incremental backups of a thin LV while another process keeps
# writing to it: every restored generation equals its snapshot's content,
# and a normal run removes its snapshot and logs its fill.
source "$ROOT/tests/vm/lib.sh"
make_vg vgthin 96
lvcreate -q -L 64M -T vgthin/pool >/dev/null
lvcreate -q -V 32M -T vgthin/pool -n data >/dev/null
dd if=/dev/urandom of=/dev/vgthin/data bs=1M count=32 oflag=direct status=none
# A thin snapshot shares the pool; writes land in the first 8 MiB.
start_writer /dev/vgthin/data 2048
store=/tmp/store-thin/data
mkdir -p /tmp/store-thin
at_exit "rm -rf /tmp/store-thin /tmp/restored-thin"
declare -A sums
for gen in 1 2 3; do
    blockdiff-backup "$store" --lvm vgthin/data --snapshot-size 50% --keep-snapshot --fill-interval 0.5
    snap=$(snapshots vgthin)
    [[ $(wc -w <<<"$snap") -eq 1 ]] || fail "expected one kept snapshot, found: $snap"
    # The snapshot's content is what generation $gen must restore to.
    sums[$gen]=$(md5 "/dev/vgthin/$snap")
    lvremove -q -f "vgthin/$snap" >/dev/null
    sleep 1
done
[[ $(cat "$store.ver") == 3 ]] || fail "NAME.ver is $(cat "$store.ver"), not 3"
[[ ${sums[1]} != "${sums[3]}" ]] || fail "the writer changed nothing between generations"

# A run without --keep-snapshot removes it and says so.
blockdiff-backup "$store" --lvm /dev/vgthin/data --snapshot-size 50% --fill-interval 0.5 2>/tmp/thin.log
cat /tmp/thin.log
grep -q 'created thin snapshot vgthin/data-bd-' /tmp/thin.log || fail "no 'created' line"
grep -Eq 'removed snapshot vgthin/data-bd-.* after [0-9.]+ s; peak fill [0-9.]+%' /tmp/thin.log || fail "no 'removed … peak fill' line"
assert_no_snapshots vgthin

for gen in 1 2 3; do
    blockdiff-restore /tmp/restored-thin --from "$store" --generation "$gen"
    got=$(md5 /tmp/restored-thin)
    [[ $got == "${sums[$gen]}" ]] || fail "generation $gen restores to $got, its snapshot was ${sums[$gen]}"
    rm -f /tmp/restored-thin
done
