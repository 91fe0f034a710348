# SIGTERM in the middle of a dump: the run stops, commits nothing and
# leaves no snapshot.
source "$ROOT/tests/vm/lib.sh"
make_vg vgterm 64
lvcreate -q -L 24M -n data vgterm >/dev/null
# (base64 ends on SIGPIPE when head has enough: not a failure.)
(base64 -w 100 /dev/urandom || true) | head -c 24M |
    dd of=/dev/vgterm/data bs=1M oflag=direct status=none iflag=fullblock
store=/tmp/store-term/data
mkdir -p /tmp/store-term
at_exit "rm -rf /tmp/store-term"
# The run stops at its step "backup:begun" (the snapshot taken, the
# generation's files created, nothing read yet) on the tools' test hook: it
# blocks reading the FIFO until this script opens it, so the signal arrives
# at a known point, not after a guessed sleep.
mkfifo /tmp/term.fifo
at_exit "rm -f /tmp/term.fifo"
BLOCKDIFF_TEST_STOP_AT=backup:begun=/tmp/term.fifo \
    blockdiff-backup "$store" --lvm vgterm/data --fill-interval 0.5 2>/tmp/term.log &
pid=$!
# Should the run end without reaching the step, this opens the FIFO in its
# place so that the open below returns and the case fails instead of hanging.
(while kill -0 $pid 2>/dev/null; do sleep 0.2; done; exec 4</tmp/term.fifo) &
at_exit "kill $! 2>/dev/null"
exec 3>/tmp/term.fifo # returns once the run waits at the step
kill -0 $pid 2>/dev/null || fail "the backup ended before its dump: $(cat /tmp/term.log)"
[[ -n $(snapshots vgterm) ]] || fail "the backup reached its dump without a snapshot"
kill -TERM $pid
exec 3>&- # lets it go on: it must stop at its first check
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
