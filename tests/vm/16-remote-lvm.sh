# blockdiff-backup --lvm root@127.0.0.1:VG/LV: the snapshot is taken by the
# agent "remotely", over a real sshd on loopback inside the VM. Two backups
# restore exactly, the snapshots are removed, and a connection cut while a
# snapshot is being read leaves no snapshot and no committed generation.
# A thin LV backed up the same way is tracked by the agent: the second run
# reads only what the pool reports changed, and restores exactly. Both
# again from a --sources list, two jobs at a time: serialized (one remote
# VG), --max-rate shared, one JSON array. Then a restore the other way:
# the LV rolled back to generation 1 over ssh with its state before kept
# as a snapshot, which then undoes the rollback; a mounted LV is refused.
source "$ROOT/tests/vm/lib.sh"
make_vg vgremote 96
lvcreate -q -L 16M -n data vgremote >/dev/null
dev=/dev/vgremote/data
dd if=/dev/urandom of=$dev bs=1M count=16 oflag=direct status=none

# A private sshd on 127.0.0.1 with generated keys. The guest's root account
# may be locked ('!' in /etc/shadow), which sshd refuses even for keys: the
# throwaway guest gets an unlocked copy ('*': no password, keys only).
if [[ $(getent shadow root | cut -d: -f2) == '!'* ]]; then
    getent shadow >/tmp/shadow
    sed -i 's/^root:![^:]*:/root:*:/' /tmp/shadow
    chmod 640 /tmp/shadow
    mount --bind /tmp/shadow /etc/shadow
    at_exit "umount /etc/shadow"
fi
ssh_dir=/tmp/sshd
mkdir -p $ssh_dir /run/sshd /tmp/cache
ssh-keygen -q -t ed25519 -N '' -f $ssh_dir/host_key
ssh-keygen -q -t ed25519 -N '' -f $ssh_dir/id
cp $ssh_dir/id.pub $ssh_dir/authorized_keys
port=2222
cat >$ssh_dir/config <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
AuthorizedKeysFile $ssh_dir/authorized_keys
PidFile $ssh_dir/pid
StrictModes no
UsePAM no
PasswordAuthentication no
PermitRootLogin prohibit-password
AcceptEnv XDG_CACHE_HOME
CONF
echo "[127.0.0.1]:$port $(cat $ssh_dir/host_key.pub)" >$ssh_dir/known_hosts
/usr/sbin/sshd -D -e -f $ssh_dir/config 2>$ssh_dir/log &
sshd_pid=$!
at_exit "kill $sshd_pid 2>/dev/null"
for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
done

# The static agent when scripts/build-agent.sh built it, else the one beside
# the release binaries.
agent=$ROOT/target/agent/blockdiff-agent
[[ -x $agent ]] || agent=$BIN/blockdiff-agent
remote_backup() {
    blockdiff-backup "${STORE:-/tmp/store/data}" --lvm "root@127.0.0.1:${LV:-vgremote/data}" \
        --agent "$agent" --snapshot-size 50% \
        --ssh-option Port=$port --ssh-option IdentityFile=$ssh_dir/id \
        --ssh-option UserKnownHostsFile=$ssh_dir/known_hosts \
        --ssh-option StrictHostKeyChecking=yes \
        --ssh-option SetEnv=XDG_CACHE_HOME=/tmp/cache "$@"
}
mkdir -p /tmp/store

log "generation 1 over ssh"
remote_backup >/tmp/r1.log 2>&1 || { cat /tmp/r1.log; fail "remote backup 1; sshd: $(cat $ssh_dir/log)"; }
grep -q "copied the agent" /tmp/r1.log || fail "agent not copied: $(cat /tmp/r1.log)"
grep -Eq "127.0.0.1: removed snapshot vgremote/data-bd-.* after" /tmp/r1.log || fail "no remote snapshot removal logged: $(cat /tmp/r1.log)"
assert_no_snapshots vgremote
sum1=$(md5 $dev)

log "generation 2 over ssh after writes"
dd if=/dev/urandom of=$dev bs=4096 count=20 seek=100 conv=notrunc oflag=direct status=none
remote_backup >/tmp/r2.log 2>&1 || { cat /tmp/r2.log; fail "remote backup 2"; }
grep -q "reusing the agent" /tmp/r2.log || fail "agent not reused: $(cat /tmp/r2.log)"
assert_no_snapshots vgremote
sum2=$(md5 $dev)

log "restores"
blockdiff-restore /tmp/r.img --from /tmp/store/data --generation 1
[[ $(md5 /tmp/r.img) == "$sum1" ]] || fail "generation 1 differs"
blockdiff-restore /tmp/r.img --from /tmp/store/data --generation 2
[[ $(md5 /tmp/r.img) == "$sum2" ]] || fail "generation 2 differs"

log "the connection cut while the snapshot is read"
dd if=/dev/urandom of=$dev bs=4096 count=20 seek=300 conv=notrunc oflag=direct status=none
remote_backup --max-rate 1M >/tmp/r3.log 2>&1 &
run=$!
for _ in $(seq 300); do
    [[ -n $(snapshots vgremote) ]] && break
    sleep 0.1
done
[[ -n $(snapshots vgremote) ]] || fail "no snapshot appeared: $(cat /tmp/r3.log)"
sleep 2
pkill -KILL -P $sshd_pid || fail "no connection to cut"
if wait $run; then fail "the cut run succeeded: $(cat /tmp/r3.log)"; fi
grep -q "nothing was committed" /tmp/r3.log || fail "unexpected error: $(cat /tmp/r3.log)"
[[ $(cat /tmp/store/data.ver) == 2 ]] || fail "generation committed: $(cat /tmp/store/data.ver)"
# The agent stops on the broken pipe and removes its snapshot.
for _ in $(seq 300); do
    [[ -z $(snapshots vgremote) ]] && break
    sleep 0.1
done
assert_no_snapshots vgremote
pgrep -f "blockdiff-agent-.* serve" >/dev/null && fail "agent still running"
log "the next run works and leaves only the agent"
remote_backup >/tmp/r4.log 2>&1 || { cat /tmp/r4.log; fail "remote backup 4"; }
[[ $(cat /tmp/store/data.ver) == 3 ]] || fail "generation 3 not committed"
left=$(ls -A /tmp/cache/blockdiff)
[[ $left == blockdiff-agent-* && $(wc -w <<<"$left") == 1 ]] || fail "remote leftovers: $left"
blockdiff-restore /tmp/r.img --from /tmp/store/data --generation 3
[[ $(md5 /tmp/r.img) == "$(md5 $dev)" ]] || fail "generation 3 differs"
log "a thin LV over ssh: the agent tracks its changes"
lvcreate -q -L 40M -T vgremote/pool --chunksize 64k >/dev/null
lvcreate -q -V 16M -T vgremote/pool -n thin >/dev/null
dd if=/dev/urandom of=/dev/vgremote/thin bs=1M count=16 oflag=direct status=none
export STORE=/tmp/store/thin LV=vgremote/thin
# retained_md5: the checksum of the chain's retained snapshot.
retained_md5() {
    local snap
    snap=$(lvs --noheadings -o lv_name,lv_tags vgremote | awk '$2 ~ /blockdiff-retained/ { print $1 }')
    [[ $(wc -w <<<"$snap") -eq 1 ]] || fail "retained snapshots: '$snap'"
    lvchange -q -ay -K "vgremote/$snap"
    md5 "/dev/vgremote/$snap"
    lvchange -q -an "vgremote/$snap"
}
remote_backup --json >/tmp/t1.json 2>/tmp/t1.log || { cat /tmp/t1.log; fail "thin backup 1"; }
thin1=$(retained_md5)
for seek in 3 40 41 200; do
    dd if=/dev/urandom of=/dev/vgremote/thin bs=64k count=1 seek=$seek conv=notrunc oflag=direct status=none
done
remote_backup --json >/tmp/t2.json 2>/tmp/t2.log || { cat /tmp/t2.log; fail "thin backup 2"; }
cat /tmp/t2.log
grep -q "127.0.0.1: tracking: reading only the 262144 bytes (3 ranges) the pool reports changed since generation 1" /tmp/t2.log ||
    fail "the agent did not track the changes"
python3 - /tmp/t2.json <<'EOF' || fail "wrong summary: $(cat /tmp/t2.json)"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["bytes_read"] == 4 * 65536 and r["source_bytes"] == 16 << 20, r
assert r["tracking"]["scan"] == "tracked" and r["tracking"]["retained"].startswith("vgremote/thin-bd-"), r
EOF
grep -q '"tracking.thin_id"' /tmp/store/thin.2.meta.json || fail "no tracking record in the metadata"
thin2=$(retained_md5)
for gen in 1 2; do
    blockdiff-restore /tmp/r.img --from /tmp/store/thin --generation $gen
    want=thin$gen
    [[ $(md5 /tmp/r.img) == "${!want}" ]] || fail "thin generation $gen differs from its snapshot"
done
log "a list of remote sources, two jobs at a time"
dd if=/dev/urandom of=$dev bs=4096 count=20 seek=500 conv=notrunc oflag=direct status=none
dd if=/dev/urandom of=/dev/vgremote/thin bs=64k count=1 seek=100 conv=notrunc oflag=direct status=none
printf '# both on the same remote VG\ndata --lvm root@127.0.0.1:vgremote/data\nthin --lvm root@127.0.0.1:vgremote/thin\n' |
    blockdiff-backup /tmp/store --sources - --jobs 2 --max-rate 40M --json \
        --agent "$agent" --snapshot-size 50% \
        --ssh-option Port=$port --ssh-option IdentityFile=$ssh_dir/id \
        --ssh-option UserKnownHostsFile=$ssh_dir/known_hosts \
        --ssh-option StrictHostKeyChecking=yes \
        --ssh-option SetEnv=XDG_CACHE_HOME=/tmp/cache >/tmp/list.json 2>/tmp/list.log ||
    { cat /tmp/list.log; fail "the --sources run failed"; }
cat /tmp/list.log
grep -q "root@127.0.0.1:vgremote: its 2 volumes are backed up one at a time" /tmp/list.log ||
    fail "the volumes of one remote VG were not serialized"
grep -q "root@127.0.0.1: --max-rate shared by 2 jobs at a time, 20971520 bytes/s each" /tmp/list.log ||
    fail "--max-rate was not shared by the host's jobs"
grep -q "2 of 2 volumes backed up" /tmp/list.log || fail "no '2 of 2 volumes backed up' line"
python3 - /tmp/list.json <<'EOF' || fail "wrong --json array: $(cat /tmp/list.json)"
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["name"] for r in runs] == ["/tmp/store/data", "/tmp/store/thin"], runs
assert all(r["ok"] for r in runs) and [r["generation"] for r in runs] == [4, 3], runs
assert runs[1]["tracking"]["scan"] == "tracked", runs
EOF
blockdiff-restore /tmp/r.img --from /tmp/store/data --generation 4
[[ $(md5 /tmp/r.img) == "$(md5 $dev)" ]] || fail "data generation 4 differs"
thin3=$(retained_md5)
blockdiff-restore /tmp/r.img --from /tmp/store/thin --generation 3
[[ $(md5 /tmp/r.img) == "$thin3" ]] || fail "thin generation 3 differs from its snapshot"
[[ $(snapshots vgremote | wc -l) -eq 1 ]] || fail "snapshots left: $(snapshots vgremote)"

log "a rollback over ssh: --lvm HOST:VG/LV -g 1 --keep-before, then undone"
unset STORE LV
remote_restore() {
    blockdiff-restore --agent "$agent" \
        --ssh-option Port=$port --ssh-option IdentityFile=$ssh_dir/id \
        --ssh-option UserKnownHostsFile=$ssh_dir/known_hosts \
        --ssh-option StrictHostKeyChecking=yes \
        --ssh-option SetEnv=XDG_CACHE_HOME=/tmp/cache "$@"
}
before=$(md5 $dev)
remote_restore --lvm root@127.0.0.1:vgremote/data --from /tmp/store/data -g 1 --keep-before --json \
    >/tmp/rb.json 2>/tmp/rb.log || { cat /tmp/rb.log; fail "the rollback failed"; }
cat /tmp/rb.log
[[ $(md5 $dev) == "$sum1" ]] || fail "the rolled-back LV differs from generation 1"
kept=$(lvs --noheadings -o lv_name,lv_tags vgremote | awk '$2 ~ /blockdiff-before/ { print $1 }')
[[ $(wc -w <<<"$kept") -eq 1 ]] || fail "snapshots kept before the restore: '$kept'"
[[ $(md5 "/dev/vgremote/$kept") == "$before" ]] || fail "the kept snapshot is not the LV before the restore"
grep -q "127.0.0.1: kept vgremote/$kept" /tmp/rb.log || fail "the kept snapshot was not logged"
python3 - /tmp/rb.json <<'PY' || fail "wrong summary: $(cat /tmp/rb.json)"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["mode"] == "delta" and r["generation"] == 1 and r["verified"], r
assert 0 < r["bytes_written"] < (16 << 20) // 4, r
assert r["bytes_sent"] < (16 << 20) // 4, r
PY
blockdiff-lvm snapshots vgremote | grep "$kept" | grep -q "kept by a restore" ||
    fail "blockdiff-lvm snapshots does not show the kept snapshot: $(blockdiff-lvm snapshots vgremote)"
blockdiff-lvm cleanup vgremote >/dev/null
lvs "vgremote/$kept" >/dev/null 2>&1 || fail "a cleanup removed the snapshot kept by the restore"
lvconvert -q --merge "vgremote/$kept" >/dev/null
[[ $(md5 $dev) == "$before" ]] || fail "merging the kept snapshot did not bring the LV back"

log "a mounted LV is refused"
lvcreate -q -L 8M -n fs vgremote >/dev/null
mkfs.ext4 -q /dev/vgremote/fs
STORE=/tmp/store/fs LV=vgremote/fs remote_backup -q || fail "backup of the file system LV"
mkdir -p /tmp/mnt
mount /dev/vgremote/fs /tmp/mnt
at_exit "umount /tmp/mnt 2>/dev/null"
echo "after the backup" >/tmp/mnt/new-file
sync
if remote_restore --lvm root@127.0.0.1:vgremote/fs --from /tmp/store/fs 2>/tmp/mounted.log; then
    fail "a restore onto a mounted LV succeeded"
fi
grep -q "in use" /tmp/mounted.log || fail "unexpected error: $(cat /tmp/mounted.log)"
umount /tmp/mnt
remote_restore --lvm root@127.0.0.1:vgremote/fs --from /tmp/store/fs -q || fail "the restore once unmounted"
blockdiff-restore /tmp/r.img --from /tmp/store/fs
[[ $(md5 /tmp/r.img) == "$(md5 /dev/vgremote/fs)" ]] || fail "the unmounted LV differs from its backup"
echo "remote LVM backups and restores OK"
