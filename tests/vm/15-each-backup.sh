# blockdiff-backup --each: every LV of a VG matching a glob to its own
# chain NAME/LVNAME, one after another. An LV left out by the glob gets no
# chain, a snapshot matching it is skipped, a failing LV (its snapshot does
# not fit in the VG) is logged and the others still run; exit 1 naming it.
# Each chain restores to its LV's content. Volumes are kept tiny.
source "$ROOT/tests/vm/lib.sh"
make_vg vgeach 64
for lv in web-a web-b db; do
    lvcreate -q -L 4M -n $lv vgeach >/dev/null
    dd if=/dev/urandom of=/dev/vgeach/$lv bs=1M count=4 oflag=direct status=none
done
# Too big for a 100% snapshot in what is left of the VG.
lvcreate -q -L 24M -n web-a2 vgeach >/dev/null
# A snapshot (not blockdiff's) whose name matches the glob.
lvcreate -q -s -L 4M -n web-a-snap vgeach/web-a >/dev/null
store=/tmp/store-each
at_exit "rm -rf $store /tmp/restored-each"

set +e
blockdiff-backup "$store" --each 'vgeach/web-*' --snapshot-size 100% \
    --json --log /tmp/each.log >/tmp/each.json 2>/tmp/each.err
status=$?
set -e
cat /tmp/each.err
[[ $status -eq 1 ]] || fail "exit status $status, not 1"
tail -n 1 /tmp/each.err | grep -q 'could not back up 1 of 3 volumes: vgeach/web-a2' ||
    fail "the last line does not name the failed volume"
grep -q 'skipping vgeach/web-a-snap: a snapshot' /tmp/each.err || fail "the snapshot was not skipped"
grep -q 'error: vgeach/web-a2: ' /tmp/each.err || fail "the failing volume was not logged"
grep -q 'error: could not back up 1 of 3 volumes' /tmp/each.log || fail "the log file has no final error"
python3 - /tmp/each.json <<'EOF' || fail "wrong --json output: $(cat /tmp/each.json)"
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["name"].rsplit("/", 1)[1] for r in runs] == ["web-a", "web-a2", "web-b"], runs
assert [r["ok"] for r in runs] == [True, False, True], runs
assert runs[0]["generation"] == 1 and runs[0]["bytes_read"] == 4 << 20, runs[0]
assert runs[0]["snapshot_peak_fill_percent"] is not None, runs[0]
assert runs[1]["error"] and runs[1]["generation"] is None, runs[1]
EOF
[[ ! -e $store/web-a2.ver && ! -e $store/db.ver && ! -e $store/web-a-snap.ver ]] ||
    fail "chains of volumes that were not to be backed up: $(ls $store)"
[[ -z $(lvs --noheadings -o lv_name vgeach | grep -- '-bd-') ]] || fail "blockdiff snapshots left: $(lvs vgeach)"

# A glob that leaves web-a2 out: both others get generation 2, and exit 0.
dd if=/dev/urandom of=/dev/vgeach/web-a bs=16k count=1 seek=7 oflag=direct status=none
blockdiff-backup "$store" --each '/dev/vgeach/web-?' 2>/tmp/each2.err || {
    cat /tmp/each2.err
    fail "the second run failed"
}
cat /tmp/each2.err
grep -q '2 of 2 volumes backed up' /tmp/each2.err || fail "no '2 of 2 volumes backed up' line"
for lv in web-a web-b; do
    [[ $(cat "$store/$lv.ver") == 2 ]] || fail "$lv is at generation $(cat "$store/$lv.ver"), not 2"
    blockdiff-restore /tmp/restored-each --from "$store/$lv"
    [[ $(md5 /tmp/restored-each) == $(md5 /dev/vgeach/$lv) ]] || fail "$lv restores wrongly"
    rm -f /tmp/restored-each
done
[[ ! -e $store/web-a2.ver ]] || fail "web-a2 was backed up"

log "--jobs 3 over four volumes, one of which fails"
make_vg vgjobs 128
lvcreate -q -L 48M -T vgjobs/pool >/dev/null
for lv in job-1 job-2 job-3; do
    lvcreate -q -V 8M -T vgjobs/pool -n $lv >/dev/null
    dd if=/dev/urandom of=/dev/vgjobs/$lv bs=1M count=8 oflag=direct status=none
done
# Thick, and too big for its 100% snapshot in what is left of the VG.
lvcreate -q -L 60M -n job-4 vgjobs >/dev/null
jobs_store=/tmp/store-jobs
at_exit "rm -rf $jobs_store"
set +e
blockdiff-backup "$jobs_store" --each 'vgjobs/job-*' --jobs 3 --snapshot-size 100% \
    --json >/tmp/jobs.json 2>/tmp/jobs.err
status=$?
set -e
cat /tmp/jobs.err
[[ $status -eq 1 ]] || fail "--jobs: exit status $status, not 1"
tail -n 1 /tmp/jobs.err | grep -q 'could not back up 1 of 4 volumes: vgjobs/job-4' ||
    fail "--jobs: the last line does not name the failed volume"
python3 - /tmp/jobs.json <<'EOF' || fail "wrong --jobs --json output: $(cat /tmp/jobs.json)"
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["name"].rsplit("/", 1)[1] for r in runs] == ["job-1", "job-2", "job-3", "job-4"], runs
assert [r["ok"] for r in runs] == [True, True, True, False], runs
assert all(r["generation"] == 1 for r in runs[:3]), runs
EOF
for lv in job-1 job-2 job-3; do
    [[ $(cat "$jobs_store/$lv.ver") == 1 ]] || fail "$lv was not committed"
    blockdiff-restore /tmp/restored-each --from "$jobs_store/$lv"
    [[ $(md5 /tmp/restored-each) == $(md5 /dev/vgjobs/$lv) ]] || fail "$lv restores wrongly"
    rm -f /tmp/restored-each
done
[[ ! -e $jobs_store/job-4.ver ]] || fail "job-4 was committed"
# Only the three thin volumes' tracking bases are left.
left=$(lvs --noheadings -o lv_name,lv_tags vgjobs | awk '$1 ~ /-bd-/')
[[ $(grep -c blockdiff-retained <<<"$left") -eq 3 && $(wc -l <<<"$left") -eq 3 ]] ||
    fail "snapshots left after --jobs: $left"
