#!/usr/bin/env bash
# Benchmark of a rollback (issue 19): a target of BENCH_DELTA_MIB (1024)
# MiB differing from a generation in 1% of its 16 KiB blocks (random ones),
# brought back to that generation, each way BENCH_REPEAT (3) times in the
# same run, the page cache dropped before each (as root), medians
# reported:
#   Local:  `blockdiff-restore TARGET --from NAME --delta` (reads the target,
#           writes only what differs, syncs, reads it again to verify)
#           against a full restore of the same generation to a new file;
#           beside them the read limit, `cat TARGET > /dev/null`, cold (a
#           delta restore reads the target twice: to compare, to verify).
#   Remote: the same target as USER@127.0.0.1:PATH through a private sshd
#           on loopback (started here, as the tests do): the default delta
#           restore against `--full` (every block streamed over the
#           connection), and the bytes sent over it (the --json report);
#           beside them an ssh connection and two `true` sessions over
#           it, what the restore's two sessions cost before any work
#           (this host's login shell included), and the ratio beyond that.
# Targets: delta time <= 0.25 x full in each case; bytes over the
# connection <= 3% of the target, hashes included.
#
#   benches/restore-delta.sh
#   BENCH_DELTA_MIB=256 BENCH_REPEAT=1 benches/restore-delta.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mib=${BENCH_DELTA_MIB:-1024}
repeat=${BENCH_REPEAT:-3}
work=${BENCH_DIR:-$ROOT/bench-work}/restore-delta
bin=${CARGO_TARGET_DIR:-$ROOT/target}/release
cargo build --release --quiet -p blockdiff-tools --bins
# The agent as it is deployed (static, stripped: scripts/build-agent.sh),
# unless BLOCKDIFF_AGENT names one.
agent=${BLOCKDIFF_AGENT:-}
if [[ -z $agent ]]; then
    agent=${CARGO_TARGET_DIR:-$ROOT/target}/agent/blockdiff-agent
    scripts/build-agent.sh "$agent" >/dev/null
fi
[[ -x /usr/sbin/sshd ]] || { echo "restore-delta: needs /usr/sbin/sshd (scripts/services-setup.sh)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

drop_caches() {
    sync
    if [[ $(id -u) == 0 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }

echo "restore-delta: a ${mib} MiB generation" >&2
head -c $((mib << 20)) /dev/urandom >"$work/source"
"$bin/blockdiff-backup" "$work/vol" "$work/source" -q
# damage FILE: rewrites 1% of its 16 KiB blocks (distinct, at random).
damage() {
    python3 - "$1" <<'EOF'
import os, random, sys
path = sys.argv[1]
blocks = os.path.getsize(path) // 16384
fd = os.open(path, os.O_WRONLY)
for b in random.sample(range(blocks), blocks // 100):
    os.pwrite(fd, os.urandom(16384), b * 16384)
os.fsync(fd)
os.close(fd)
EOF
}
cp "$work/source" "$work/target"
# A private sshd on loopback, as tools/tests/remote_cli.rs starts it.
ssh_dir=$work/ssh
mkdir -p "$ssh_dir"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/id"
cp "$ssh_dir/id.pub" "$ssh_dir/authorized_keys"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "[127.0.0.1]:$port $(cat "$ssh_dir/host_key.pub")" >"$ssh_dir/known_hosts"
printf '%s\n' "Port $port" "ListenAddress 127.0.0.1" "HostKey $ssh_dir/host_key" \
    "AuthorizedKeysFile $ssh_dir/authorized_keys" "PidFile $ssh_dir/sshd.pid" \
    "StrictModes no" "UsePAM no" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "PermitRootLogin prohibit-password" \
    "AcceptEnv XDG_CACHE_HOME" >"$ssh_dir/sshd_config"
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" 2>"$ssh_dir/sshd.log" &
sshd_pid=$!
trap 'kill "$sshd_pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
remote_args=(--agent "$agent"
    --ssh-option "Port=$port" --ssh-option "IdentityFile=$ssh_dir/id"
    --ssh-option IdentitiesOnly=yes --ssh-option "UserKnownHostsFile=$ssh_dir/known_hosts"
    --ssh-option StrictHostKeyChecking=yes --ssh-option LogLevel=ERROR
    --ssh-option "SetEnv=XDG_CACHE_HOME=$ssh_dir/cache")
remote="$(id -un)@127.0.0.1:$work/target"
# What a restore over ssh pays before any work: the connection and the
# login shell of the two sessions it opens (the agent check, the agent).
ssh_cmd=(ssh -p "$port" -i "$ssh_dir/id" -o IdentitiesOnly=yes -o BatchMode=yes
    -o "UserKnownHostsFile=$ssh_dir/known_hosts" -o StrictHostKeyChecking=yes
    -o LogLevel=ERROR "$(id -un)@127.0.0.1")

declare -a t_delta t_full t_cat written r_delta r_full sent t_conn
for round in $(seq 1 "$repeat"); do
    damage "$work/target"
    drop_caches
    t0=$(now)
    cat "$work/target" >/dev/null
    t_cat+=("$(since "$t0")")
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$work/target" --from "$work/vol" --delta --json -q >"$work/delta.json"
    t_delta+=("$(since "$t0")")
    written+=("$(python3 -c "import json; print(json.load(open('$work/delta.json'))['bytes_written'])")")
    cmp -s "$work/target" "$work/source" || { echo "FAIL: the delta restore differs from the generation" >&2; exit 1; }
    rm -f "$work/full.img"
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$work/full.img" --from "$work/vol" -q
    t_full+=("$(since "$t0")")
    cmp -s "$work/full.img" "$work/source" || { echo "FAIL: the full restore differs from the generation" >&2; exit 1; }
    echo "round $round, local: delta ${t_delta[-1]} s (${written[-1]} bytes written), full ${t_full[-1]} s, cat ${t_cat[-1]} s"
    # Over ssh: the same damage each way.
    # One connection, two sessions over it, as the restore opens them.
    t0=$(now)
    "${ssh_cmd[@]}" -M -S "$work/ssh.sock" -o ControlPersist=no -f -N
    "${ssh_cmd[@]}" -S "$work/ssh.sock" true
    "${ssh_cmd[@]}" -S "$work/ssh.sock" true
    t_conn+=("$(since "$t0")")
    "${ssh_cmd[@]}" -S "$work/ssh.sock" -O exit 2>/dev/null
    damage "$work/target"
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$remote" --from "$work/vol" --json -q "${remote_args[@]}" >"$work/remote.json"
    r_delta+=("$(since "$t0")")
    sent+=("$(python3 -c "import json; print(json.load(open('$work/remote.json'))['bytes_sent'])")")
    cmp -s "$work/target" "$work/source" || { echo "FAIL: the remote delta restore differs from the generation" >&2; exit 1; }
    damage "$work/target"
    drop_caches
    t0=$(now)
    "$bin/blockdiff-restore" "$remote" --from "$work/vol" --full -q "${remote_args[@]}"
    r_full+=("$(since "$t0")")
    cmp -s "$work/target" "$work/source" || { echo "FAIL: the remote full restore differs from the generation" >&2; exit 1; }
    echo "round $round, over ssh: delta ${r_delta[-1]} s (${sent[-1]} bytes sent), full ${r_full[-1]} s, ssh connection and two sessions ${t_conn[-1]} s"
done
td=$(median "${t_delta[@]}") tf=$(median "${t_full[@]}") tc=$(median "${t_cat[@]}")
bw=$(median "${written[@]}")
size=$((mib << 20))
echo "RESULT ${mib} MiB target, 1% of its blocks differing: --delta ${td} s vs full restore ${tf} s: $(ratio "$td" "$tf") (target <= 0.25)"
echo "RESULT bytes written: ${bw} of ${size}: $(ratio "$bw" "$size") (target <= 0.03)"
rd=$(median "${r_delta[@]}") rf=$(median "${r_full[@]}") bsent=$(median "${sent[@]}")
echo "RESULT over ssh: delta ${rd} s vs --full ${rf} s: $(ratio "$rd" "$rf") (target <= 0.25)"
echo "RESULT over ssh: bytes sent ${bsent} of ${size}: $(ratio "$bsent" "$size") (target <= 0.03, hashes included)"
rc=$(median "${t_conn[@]}")
echo "RESULT over ssh beyond the connection and two sessions (${rc} s, this host's login shell included): delta $(python3 -c "print(f'{$rd - $rc:.3f}')") s vs --full $(python3 -c "print(f'{$rf - $rc:.3f}')") s: $(python3 -c "print(f'{($rd - $rc) / ($rf - $rc):.3f}')")"
echo "RESULT --delta beside the read limit (cat TARGET, cold): ${td} s vs ${tc} s: $(ratio "$td" "$tc") (the delta reads the target twice: compare and verify)"
