# SIGTERM in the middle of a dump: the run stops, commits nothing and
# leaves no snapshot.
source "$ROOT/tests/vm/lib.sh"
make_vg vgterm 64
lvcreate -q -L 24M -n data vgterm >/dev/null
# Compressible text and zstd level 19 make the dump take minutes here.
# (base64 ends on SIGPIPE when head has enough: not a failure.)
(base64 -w 100 /dev/urandom || true) | head -c 24M |
    dd of=/dev/vgterm/data bs=1M oflag=direct status=none iflag=fullblock
store=/tmp/store-term/data
mkdir -p /tmp/store-term
at_exit "rm -rf /tmp/store-term"
blockdiff-backup "$store" --lvm vgterm/data --zstd-level 19 --fill-interval 0.5 2>/tmp/term.log &
pid=$!
for _ in $(seq 100); do
    [[ -n $(snapshots vgterm) ]] && break
    sleep 0.2
done
[[ -n $(snapshots vgterm) ]] || fail "the backup never created its snapshot"
sleep 2
kill -TERM $pid
set +e
wait $pid
status=$?
set -e
cat /tmp/term.log
[[ $status -eq 1 ]] || fail "exit status $status, not 1"
grep -q 'interrupted by SIGTERM' /tmp/term.log || fail "the error does not name SIGTERM"
grep -q 'removed snapshot' /tmp/term.log || fail "no 'removed snapshot' line"
[[ ! -e $store.ver ]] || fail "a generation was committed"
assert_no_snapshots vgterm
left=$(ls /tmp/store-term)
[[ -z $left || $left == data.lock ]] || fail "files left in the store: $left"
