# Full and incremental backups of a thick LV while another process keeps
# writing to it: every restored generation equals its snapshot's content,
# and a normal run removes its snapshot and logs its fill.
source "$ROOT/tests/vm/lib.sh"
make_vg vgthick 96
lvcreate -q -L 32M -n data vgthick >/dev/null
dd if=/dev/urandom of=/dev/vgthick/data bs=1M count=32 oflag=direct status=none
# Writes land in the first 8 MiB, so the 50% snapshot cannot overflow.
start_writer /dev/vgthick/data 2048
store=/tmp/store-thick/data
mkdir -p /tmp/store-thick
at_exit "rm -rf /tmp/store-thick /tmp/restored-thick"
declare -A sums
for gen in 1 2 3; do
    blockdiff-backup "$store" --lvm vgthick/data --snapshot-size 50% --keep-snapshot --fill-interval 0.5
    snap=$(snapshots vgthick)
    [[ $(wc -w <<<"$snap") -eq 1 ]] || fail "expected one kept snapshot, found: $snap"
    # The snapshot's content is what generation $gen must restore to.
    sums[$gen]=$(md5 "/dev/vgthick/$snap")
    lvremove -q -f "vgthick/$snap" >/dev/null
    sleep 1
done
[[ $(cat "$store.ver") == 3 ]] || fail "NAME.ver is $(cat "$store.ver"), not 3"
[[ ${sums[1]} != "${sums[3]}" ]] || fail "the writer changed nothing between generations"

# A run without --keep-snapshot removes it and says so.
blockdiff-backup "$store" --lvm /dev/vgthick/data --snapshot-size 50% --fill-interval 0.5 2>/tmp/thick.log
cat /tmp/thick.log
grep -q 'created thick snapshot vgthick/data-bd-' /tmp/thick.log || fail "no 'created' line"
grep -Eq 'removed snapshot vgthick/data-bd-.* after [0-9.]+ s; peak fill [0-9.]+%' /tmp/thick.log || fail "no 'removed … peak fill' line"
assert_no_snapshots vgthick

for gen in 1 2 3; do
    blockdiff-restore /tmp/restored-thick --from "$store" --generation "$gen"
    got=$(md5 /tmp/restored-thick)
    [[ $got == "${sums[$gen]}" ]] || fail "generation $gen restores to $got, its snapshot was ${sums[$gen]}"
    rm -f /tmp/restored-thick
done
