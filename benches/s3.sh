#!/usr/bin/env bash
# shellcheck disable=SC2016 # the bash -c scripts below expand their own "$1"
# Object-storage benchmark (issue 14): blockdiff's s3:// chains against rclone
# and restic, all on the same single-node Garage server on loopback.
#
# Usage (from anywhere; the script moves to the repository root itself):
#   benches/s3.sh
#   BENCH_S3_IMAGE_MIB=256 benches/s3.sh        (a quick run)
#
# Needs the Garage binary that scripts/garage-setup.sh builds (once, about
# 15 minutes; it also installs rclone and restic from Debian):
#   $BLOCKDIFF_GARAGE, else ~/.cache/blockdiff/garage-2.5.0/bin/garage, else
#   garage on PATH (the order garage-harness looks in).
#
# Environment:
#   BENCH_S3_IMAGE_MIB  size of the ext4 image in MiB (default 1024; 256 for a
#                       quick run)
#   BENCH_S3_STAGE_MIB  MiB of /usr copied into it (default 9/16 of the image,
#                       as benches/run.sh part B)
#   BENCH_DIR           work directory (default bench-work/s3 at the repository
#                       root); Garage's data and metadata live there too
#   BENCH_REPEAT        runs of each repeatable measurement (default 1): the
#                       rclone upload, the restore and rclone cat; with more
#                       than one, the run with the median time is reported and
#                       the fastest and slowest beside it. The backups run once
#                       whatever the value (a second full backup would find
#                       every block in Garage already; an incremental is not
#                       repeatable), and so do restic's
#   BENCH_LOAD_MAX      a measurement starts once the 1-minute load average is
#                       below this (default 0.5) ...
#   BENCH_LOAD_QUIET    ... for this many seconds in a row (default 5) ...
#   BENCH_LOAD_WAIT     ... or, with a warning, after this many seconds
#                       (default 600)
#   BENCH_KEEP          1: keep the work directory (image, diffs, Garage's
#                       data) at the end (default 0: removed)
#   CARGO_TARGET_DIR    honoured as cargo does (binaries are looked up there)
#
# Steps, on one ext4 image built as benches/run.sh part B builds it
# (mkfs.ext4 -d from part of /usr; the same staging code):
#   1. full backup to s3://BUCKET/bench/img (v2, the tool's defaults), timed;
#      the same image backed up to a local chain (the same diff bytes as a
#      file), and `rclone copyto` of that file to the bucket, timed: our
#      upload throughput (diff bytes / s, the whole backup: read, hash,
#      compress, upload) beside rclone's (upload of the finished file).
#      Target: >= 0.9 x rclone. Garage stores each 1 MiB block once, so
#      rclone's copy finds every block of img.1 there already; the same file
#      with its bytes XORed with 0x5A (same size and compressibility, no
#      block in common) is uploaded too, as information.
#   2. ~1% of the image's 16 KiB blocks rewritten (benches/chain_mutate.py,
#      generation 2: 1% at random + 64 hot blocks), then the incremental
#      backup to s3, timed. Target: no diff or digest object downloaded
#      (GETs of .ver, .lock and .meta.json are expected). Evidence: the GETs
#      per key in Garage's log, and its block_bytes_read metric (objects
#      under 3 KiB live inline in its metadata, so reading them reads no
#      data block).
#   3. restore of generation 2 from s3 into a file, timed, compared (cmp)
#      with the mutated image; beside it `rclone cat` of the two diff objects
#      (img.1 and img.2) into one file on the same file system, timed.
#      Target: restore >= 0.9 x rclone cat's throughput over those bytes
#      (the restore needs at most those; it also writes the whole image).
#   4. restic (repository s3:ENDPOINT/BUCKET/restic): init, backup of the
#      original image, then of the mutated image at the same path, timed
#      (information); then the bytes stored under bench/ (ours: diffs,
#      digests, metadata) and restic/ (packs, indexes, snapshots, keys),
#      from `rclone size`. Target: ours <= restic's after the incremental.
# For every timed command the report shows what Garage saw: S3 requests per
# operation and block bytes read and written (its /metrics before and
# after), and for ours the requests per object key (its log).
#
# Before each timed command the script waits for a quiet machine (see
# BENCH_LOAD_*). Garage runs throughout on the same two cores: its CPU
# seconds during each command are shown ('garage s'); 'others' is what
# remains of the machine's CPU use beside the command and Garage. The page
# cache is warm for every command (the image, the local diff, Garage's
# blocks: all were just written or read). A missed target prints FAIL; a
# correctness failure (the restored image differing from the source, a
# command failing: the script stops there) makes it exit with status 1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

IMAGE_MIB=${BENCH_S3_IMAGE_MIB:-1024}
STAGE_MIB=${BENCH_S3_STAGE_MIB:-$((IMAGE_MIB * 9 / 16))}
REPEAT=${BENCH_REPEAT:-1}
WORK=${BENCH_DIR:-$ROOT/bench-work/s3}
LOAD_MAX=${BENCH_LOAD_MAX:-0.5}
LOAD_QUIET=${BENCH_LOAD_QUIET:-5}
LOAD_WAIT=${BENCH_LOAD_WAIT:-600}
KEEP=${BENCH_KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

for var in IMAGE_MIB STAGE_MIB LOAD_QUIET REPEAT; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "s3.sh: the value of ${var} must be a positive whole number, not '${!var}'" >&2
        exit 2
    fi
done
if ! [[ $LOAD_WAIT =~ ^[0-9]+$ ]]; then
    echo "s3.sh: BENCH_LOAD_WAIT must be a number of seconds, not '$LOAD_WAIT'" >&2
    exit 2
fi
if ! [[ $LOAD_MAX =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "s3.sh: BENCH_LOAD_MAX must be a number, not '$LOAD_MAX'" >&2
    exit 2
fi
if ((STAGE_MIB >= IMAGE_MIB * 7 / 8)); then
    echo "s3.sh: BENCH_S3_STAGE_MIB ($STAGE_MIB) does not fit an image of $IMAGE_MIB MiB" >&2
    exit 2
fi
case $KEEP in 0 | 1) ;; *)
    echo "s3.sh: BENCH_KEEP must be 0 or 1, not '$KEEP'" >&2
    exit 2
    ;;
esac

log() { printf '==> %s\n' "$*" >&2; }

# --- tools --------------------------------------------------------------------

for tool in cargo awk cmp python3 curl du find rclone restic; do
    if ! command -v "$tool" >/dev/null; then
        echo "s3.sh: '$tool' is required but not installed (rclone and restic: scripts/garage-setup.sh)" >&2
        exit 2
    fi
done
if [[ ! -x /usr/bin/time ]]; then
    echo "s3.sh: GNU time (/usr/bin/time, Debian package 'time') is required" >&2
    exit 2
fi
MKFS=$(PATH=$PATH:/sbin:/usr/sbin command -v mkfs.ext4 || true)
MKFS_USAGE=$("${MKFS:-false}" 2>&1 || true)
if [[ -z $MKFS ]] || ! grep -q -- '-d ' <<<"$MKFS_USAGE"; then
    echo "s3.sh: mkfs.ext4 with -d (e2fsprogs >= 1.43) is required" >&2
    exit 2
fi

# The Garage binary, looked for where garage-harness looks.
GARAGE=${BLOCKDIFF_GARAGE:-}
if [[ -z $GARAGE ]]; then
    home=${GARAGE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/blockdiff/garage-2.5.0}
    if [[ -x $home/bin/garage ]]; then
        GARAGE=$home/bin/garage
    else
        GARAGE=$(command -v garage || true)
    fi
fi
if [[ -z $GARAGE || ! -x $GARAGE ]]; then
    echo "s3.sh: no Garage binary (\$BLOCKDIFF_GARAGE, ~/.cache/blockdiff/garage-2.5.0/bin/garage, PATH); run scripts/garage-setup.sh" >&2
    exit 2
fi

log "building release binaries (cargo build --release -p blockdiff-tools)"
cargo build --release -p blockdiff-tools
for b in blockdiff-backup blockdiff-restore blockdiff-info; do
    if [[ ! -x $BIN/$b ]]; then
        echo "s3.sh: $BIN/$b was not built" >&2
        exit 2
    fi
done

# --- work files ---------------------------------------------------------------

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
STAGE=$WORK/usr-stage
IMAGE=$WORK/ext4.img
LOCAL_DIR=$WORK/local
LOCAL_CHAIN=$LOCAL_DIR/img
CACHE=$WORK/digest-cache
RESTORED=$WORK/restored.img
CAT_OUT=$WORK/rclone-cat.out
SCRAMBLED=$WORK/img.1.scrambled
GDIR=$WORK/garage
RESTIC_CACHE=$WORK/restic-cache
RESTIC_LOG=$WORK/restic.log
TIMES=$WORK/time.out

GARAGE_PID=
cleanup() {
    if [[ -n $GARAGE_PID ]]; then
        kill "$GARAGE_PID" 2>/dev/null || true
        wait "$GARAGE_PID" 2>/dev/null || true
        GARAGE_PID=
    fi
    if ((KEEP == 0)); then
        rm -rf "$STAGE" "$IMAGE" "$LOCAL_DIR" "$CACHE" "$RESTORED" "$CAT_OUT" "$SCRAMBLED" "$GDIR" \
            "$RESTIC_CACHE" "$TIMES"
    fi
}
trap cleanup EXIT
# Whatever an earlier run left (Garage's data above all: its blocks would
# deduplicate this run's uploads).
rm -rf "$STAGE" "$IMAGE" "$LOCAL_DIR" "$CACHE" "$RESTORED" "$CAT_OUT" "$SCRAMBLED" "$GDIR" "$RESTIC_CACHE"

IMAGE_BYTES=$((IMAGE_MIB * 1024 * 1024))
NPROC=$(nproc)
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
load1() { awk '{ print $1 }' /proc/loadavg; }
now() { date +%s.%N; }
# Garage's own CPU time so far, in clock ticks (utime + stime of the server).
garage_ticks() {
    if [[ -n $GARAGE_PID && -r /proc/$GARAGE_PID/stat ]]; then
        # The command name in field 2 may hold spaces: count from after ')'.
        sed 's/^.*) //' "/proc/$GARAGE_PID/stat" | awk '{ print $12 + $13 }'
    else
        echo 0
    fi
}

# =============================================================================
# Garage: one node on loopback, configured as garage-harness does
# =============================================================================

# hex N: N random bytes in hex.
hex() { od -An -N "$1" -tx1 /dev/urandom | tr -d ' \n'; }

BUCKET=blockdiff-bench
REGION=garage
KEY_ID=GK$(hex 12)
SECRET=$(hex 32)
METRICS_TOKEN=$(hex 32)
ADMIN_TOKEN=$(hex 32)
read -r RPC_PORT S3_PORT ADMIN_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
ENDPOINT=http://127.0.0.1:$S3_PORT
METRICS_URL=http://127.0.0.1:$ADMIN_PORT/metrics
GCONF=$GDIR/garage.toml
GLOG=$GDIR/garage.log

mkdir -p "$GDIR/meta" "$GDIR/data"
cat >"$GCONF" <<EOF
# Written by benches/s3.sh (as garage-harness writes it).
metadata_dir = "$GDIR/meta"
data_dir = "$GDIR/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
consistency_mode = "consistent"
rpc_secret = "$(hex 32)"
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
bootstrap_peers = []

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$ADMIN_TOKEN"
metrics_token = "$METRICS_TOKEN"
EOF

garage_cli() { RUST_LOG=garage=warn "$GARAGE" -c "$GCONF" "$@"; }
garage_fail() {
    echo "s3.sh: $1; the end of $GLOG:" >&2
    tail -n 40 "$GLOG" >&2 || true
    exit 1
}

log "starting Garage ($("$GARAGE" --version 2>/dev/null | head -1)) on 127.0.0.1 (s3 $S3_PORT, admin $ADMIN_PORT, rpc $RPC_PORT)"
RUST_LOG=garage=info "$GARAGE" -c "$GCONF" server >"$GLOG" 2>&1 </dev/null &
GARAGE_PID=$!
for ((i = 0; ; i++)); do
    if ! kill -0 "$GARAGE_PID" 2>/dev/null; then garage_fail "Garage exited while starting"; fi
    if curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/health" &&
        curl -s -o /dev/null "$ENDPOINT/"; then break; fi
    if ((i >= 600)); then garage_fail "Garage does not listen after 60 s"; fi
    sleep 0.1
done
NODE_ID=$(garage_cli node id --quiet | cut -d@ -f1)
garage_cli layout assign -z dc1 -c 100G "$NODE_ID" >/dev/null
garage_cli layout apply --version 1 >/dev/null
garage_cli key import --yes -n blockdiff-bench "$KEY_ID" "$SECRET" >/dev/null
garage_cli bucket create "$BUCKET" >/dev/null
garage_cli bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null

# Every S3 client below: the credentials in the environment; AWS_CA_BUNDLE
# removed (rclone refuses it for a plain-HTTP endpoint); rclone's remote
# `garage:` from environment variables only (as GarageCluster::rclone_env).
unset AWS_CA_BUNDLE AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
    RCLONE_CONFIG_GARAGE_ENDPOINT=$ENDPOINT RCLONE_CONFIG_GARAGE_REGION=$REGION \
    RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID=$KEY_ID RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY=$SECRET \
    RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE=true RCLONE_CONFIG_GARAGE_NO_CHECK_BUCKET=true
export RESTIC_PASSWORD=blockdiff-bench
RESTIC_REPO=s3:$ENDPOINT/$BUCKET/restic
RESTIC=(restic -r "$RESTIC_REPO" -o s3.region="$REGION" --cache-dir "$RESTIC_CACHE")
S3_OPTS=(--endpoint "$ENDPOINT" --region "$REGION" --cache-dir "$CACHE")
S3_CHAIN=s3://$BUCKET/bench/img

for ((i = 0; ; i++)); do
    if rclone lsf "garage:$BUCKET" >/dev/null 2>&1; then break; fi
    if ((i >= 600)); then garage_fail "the bucket is not served after 60 s"; fi
    sleep 0.1
done
log "Garage serves bucket $BUCKET at $ENDPOINT"

metrics() { curl -sf -H "Authorization: Bearer $METRICS_TOKEN" "$METRICS_URL"; }
# metric_sum FILE METRIC [LABEL=VALUE]: the sum of METRIC's series (with that
# label) in a saved /metrics text.
metric_sum() {
    awk -v m="$2" -v sel="${3:-}" '
        !/^#/ {
            name = $1; sub(/\{.*/, "", name)
            if (name != m && name != m "_total") next
            if (sel != "") {
                split(sel, kv, "="); want = kv[1] "=\"" kv[2] "\""
                if (index($1, want) == 0) next
            }
            s += $NF
        }
        END { printf "%.0f\n", s }' "$1"
}
# metrics_delta BEFORE AFTER: "operation delta" for each S3 operation whose
# request count moved, then the block counters that moved.
metrics_delta() {
    awk '
        FNR == 1 { f++ }
        /^#/ { next }
        /^api_s3_request_counter/ || /^block_bytes_(read|written)/ || /^block_(read|write|delete)_/ {
            key = $1; sub(/^api_s3_request_counter(_total)?\{api_endpoint="/, "S3 ", key); sub(/"\}$/, "", key)
            if (f == 1) a[key] = $NF; else b[key] = $NF
        }
        END {
            for (k in b) if (b[k] - a[k] != 0 && k !~ /duration|_bucket|_sum|_count/) printf "%s %.0f\n", k, b[k] - a[k]
        }' "$1" "$2" | sort
}

# requests_between FROM TO: the S3 requests Garage logged on lines FROM+1..TO
# of its log (one INFO line each, garage_api_common::generic_server), as
# "COUNT METHOD KEY", most frequent first; a listing shows as LIST and its
# prefix, a query string is dropped.
requests_between() {
    sed -n "$(($1 + 1)),$2p" "$GLOG" | sed 's/\x1b\[[0-9;]*m//g' |
        awk -v bucket="/$BUCKET" '
            /generic_server/ && !/ error / {
                for (i = 1; i < NF; i++) if ($i ~ /^(GET|HEAD|PUT|POST|DELETE)$/) { m = $i; p = $(i + 1) }
                if (p !~ "^" bucket) next
                p = substr(p, length(bucket) + 1); sub(/^\//, "", p)
                if (m == "GET" && p ~ /^\?/ || p ~ /^\?.*list-type/) {
                    pre = p; if (!sub(/.*prefix=/, "", pre)) pre = ""; sub(/&.*/, "", pre); gsub(/%2F/, "/", pre)
                    m = "LIST"; p = "prefix=" pre
                } else if (m == "POST" && p ~ /\?uploads/) { m = "POST(create multipart)"; sub(/\?.*/, "", p) }
                else if (m == "POST" && p ~ /\?uploadId/) { m = "POST(complete multipart)"; sub(/\?.*/, "", p) }
                else if (m == "PUT" && p ~ /partNumber/) { m = "PUT(part)"; sub(/\?.*/, "", p) }
                else sub(/\?.*/, "", p)
                n[m " " p]++
            }
            END { for (k in n) printf "%5d %s\n", n[k], k }' | sort -k1,1nr -k2
}

# =============================================================================
# Measurements (the style of benches/run.sh: load wait, median of REPEAT)
# =============================================================================

WAITED=0
GAVE_UP=0
WAIT_WARNINGS=()
wait_for_quiet() {
    local name=$1 start=$SECONDS quiet=0 load noted=-1 elapsed
    GAVE_UP=0
    while :; do
        load=$(load1)
        if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; then
            quiet=$((quiet + 1))
            if ((quiet >= LOAD_QUIET)); then break; fi
        else
            quiet=0
        fi
        elapsed=$((SECONDS - start))
        if ((elapsed >= LOAD_WAIT)); then
            GAVE_UP=1
            log "WARNING: the load average is still $load after ${elapsed}s; measuring '$name' anyway"
            WAIT_WARNINGS+=("$name: load $load after waiting ${elapsed}s")
            break
        fi
        if ((quiet == 0 && (noted < 0 || elapsed - noted >= 30))); then
            log "waiting for the 1-minute load average ($load) to stay below $LOAD_MAX before '$name' (${elapsed}s so far, up to ${LOAD_WAIT}s)"
            noted=$elapsed
        fi
        sleep 1
    done
    WAITED=$((SECONDS - start))
}

NAMES=()
# MANY[NAME]=1: NAME ran BENCH_REPEAT times (its min-max is shown).
declare -A SECS CPU GCPU RSS OTHER LOAD WAIT MIB SPREAD MANY DELTA GETS BREAD BWRITE REQS
BEFORE_EACH=()
OURS=()
FAILURES=()
fail() {
    FAILURES+=("$1")
    printf '\n!!! CORRECTNESS FAILURE: %s\n' "$1" >&2
}

# measure NAME MIB RUNS COMMAND [ARGS...]: wall time, CPU time and peak RSS
# (GNU time) of COMMAND over MIB MiB, Garage's CPU seconds meanwhile and the
# share of the machine's CPU capacity the other processes used. COMMAND runs
# RUNS times (BEFORE_EACH before each); the run with the median time is kept,
# with what Garage saw during it: its /metrics before and after (DELTA: S3
# requests per operation, block bytes read and written) and the S3 requests
# its log shows (REQS: count, method, key). A command that fails stops the
# script (status 1).
measure() {
    local name=$1 mib=$2 runs_wanted=$3 t0 t1 b0 b1 g0 g1 l0 user sys rss r runs=() med load wait of="" status
    local -a best lines=()
    shift 3
    for ((r = 1; r <= runs_wanted; r++)); do
        if ((${#BEFORE_EACH[@]} > 0)); then "${BEFORE_EACH[@]}"; fi
        sync
        wait_for_quiet "$name"
        load=$(load1)
        wait=$WAITED
        if ((GAVE_UP)); then wait+='!'; fi
        if ((runs_wanted > 1)); then of=" (run $r of $runs_wanted)"; fi
        log "timing: $name$of (load $load)"
        metrics >"$WORK/metrics.$r.before"
        l0=$(wc -l <"$GLOG")
        g0=$(garage_ticks)
        b0=$(busy_ticks)
        t0=$(now)
        status=0
        /usr/bin/time -f '%U %S %M' -o "$TIMES" "$@" || status=$?
        t1=$(now)
        b1=$(busy_ticks)
        g1=$(garage_ticks)
        lines[r]="$l0 $(wc -l <"$GLOG")"
        metrics >"$WORK/metrics.$r.after"
        if ((status != 0)); then
            # Every later step needs this one's result: stop here.
            echo "s3.sh: '$name' failed (exit status $status); the end of Garage's log:" >&2
            tail -n 20 "$GLOG" >&2 || true
            echo "correctness: FAILED ('$name' failed)"
            exit 1
        fi
        read -r user sys rss <"$TIMES"
        # seconds cpu rss others load wait garage-cpu run
        runs+=("$(awk -v a="$t0" -v b="$t1" -v u="$user" -v s="$sys" -v r="$rss" -v run="$r" \
            -v b0="$b0" -v b1="$b1" -v g0="$g0" -v g1="$g1" -v hz="$HZ" -v n="$NPROC" -v l="$load" -v w="$wait" 'BEGIN {
            t = b - a; c = u + s; g = (g1 - g0) / hz
            o = (b1 - b0) / hz - c - g; if (o < 0) o = 0
            printf "%.3f %.2f %d %.0f %s %s %.2f %d", t, c, r, (t > 0) ? 100 * o / (t * n) : 0, l, w, g, run }')")
    done
    med=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | awk -v m=$(((runs_wanted + 1) / 2)) 'NR == m')
    read -r -a best <<<"$med"
    NAMES+=("$name")
    case $1 in "$BIN"/blockdiff-*) OURS+=("$name") ;; esac
    MIB[$name]=$mib
    SECS[$name]=${best[0]}
    CPU[$name]=${best[1]}
    RSS[$name]=$(printf '%s\n' "${runs[@]}" | awk '$3 > m { m = $3 } END { print m + 0 }')
    OTHER[$name]=${best[3]}
    LOAD[$name]=${best[4]}
    WAIT[$name]=${best[5]}
    GCPU[$name]=${best[6]}
    SPREAD[$name]=$(printf '%s\n' "${runs[@]}" | awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 }
        END { printf "%.2f-%.2f", lo, hi }')
    r=${best[7]}
    DELTA[$name]=$(metrics_delta "$WORK/metrics.$r.before" "$WORK/metrics.$r.after")
    GETS[$name]=$(($(metric_sum "$WORK/metrics.$r.after" api_s3_request_counter api_endpoint=GetObject) -
        $(metric_sum "$WORK/metrics.$r.before" api_s3_request_counter api_endpoint=GetObject)))
    BREAD[$name]=$(($(metric_sum "$WORK/metrics.$r.after" block_bytes_read) - $(metric_sum "$WORK/metrics.$r.before" block_bytes_read)))
    BWRITE[$name]=$(($(metric_sum "$WORK/metrics.$r.after" block_bytes_written) - $(metric_sum "$WORK/metrics.$r.before" block_bytes_written)))
    # shellcheck disable=SC2086 # two numbers
    REQS[$name]=$(requests_between ${lines[r]})
    rm -f "$WORK"/metrics.*.before "$WORK"/metrics.*.after
}

verdict() { if [[ $1 == 1 ]]; then echo PASS; else echo FAIL; fi; }
mib_of() { awk -v b="$1" 'BEGIN { printf "%.3f", b / 1048576 }'; }
# object_size KEY: the size of one object of the bucket, in bytes.
object_size() { rclone lsf --format s "garage:$BUCKET/$1"; }
# prefix_size PREFIX: total bytes and object count under PREFIX/ ("BYTES COUNT").
prefix_size() {
    rclone size --json "garage:$BUCKET/$1" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["bytes"], d["count"])'
}

# =============================================================================
# The image (benches/run.sh part B's staging: whole subdirectories of
# /usr/lib and /usr/share, largest first, alternately, while they fit)
# =============================================================================

log "choosing about $STAGE_MIB MiB of /usr/lib and /usr/share to copy"
STAGE_BUDGET=$((STAGE_MIB * 1024 * 1024))
STAGED=()
usr_dirs() {
    find "$1" -mindepth 1 -maxdepth 1 -type d -print0 |
        xargs -0 -r du -sb -x 2>/dev/null | sort -rn |
        awk -v p="$2" '{ print 2 * NR + p " " $0 }' || true
}
while read -r _ bytes dir; do
    if ((bytes <= STAGE_BUDGET)); then
        STAGED+=("$dir")
        STAGE_BUDGET=$((STAGE_BUDGET - bytes))
    fi
    if ((STAGE_BUDGET < STAGE_MIB * 1024 * 1024 / 100)); then break; fi
done < <({
    usr_dirs /usr/lib 0
    usr_dirs /usr/share 1
} | sort -n)
if ((${#STAGED[@]} == 0)); then
    echo "s3.sh: found nothing under /usr/lib or /usr/share to copy" >&2
    exit 1
fi
log "copying ${#STAGED[@]} directories to $STAGE"
mkdir -p "$STAGE"
for dir in "${STAGED[@]}"; do
    dest=$STAGE${dir#/usr}
    mkdir -p "$(dirname "$dest")"
    cp -a "$dir" "$dest"
done
STAGE_BYTES=$(du -sb "$STAGE" | awk '{ print $1 }')
STAGE_FILES=$(find "$STAGE" | wc -l)
MKFS_INODES=()
if ((STAGE_FILES * 5 / 4 > IMAGE_BYTES / 16384)); then
    MKFS_INODES=(-N $((STAGE_FILES * 5 / 4 + 1024)))
fi
log "making a $IMAGE_MIB MiB ext4 image of $STAGE_BYTES bytes in $STAGE_FILES files"
"$MKFS" -q -F "${MKFS_INODES[@]}" -d "$STAGE" "$IMAGE" "${IMAGE_MIB}M" >&2
rm -rf "$STAGE"
if [[ $(stat -c %s "$IMAGE") -ne $IMAGE_BYTES ]]; then
    echo "s3.sh: $IMAGE is not $IMAGE_BYTES bytes" >&2
    exit 1
fi
IMAGE_ALLOC=$(($(stat -c '%b * %B' "$IMAGE")))

# =============================================================================
# 1. Full backup: ours to s3 against rclone copyto of the same diff bytes
# =============================================================================

S_FULL="1. blockdiff-backup s3 (full)"
S_LOCAL="1. blockdiff-backup local chain (info)"
S_RCLONE_UP="1. rclone copyto img.1 (upload)"
S_RCLONE_UPX="1. rclone copyto img.1 scrambled (info)"
S_RESTIC1="4. restic backup (original image)"
S_INCR="2. blockdiff-backup s3 (incremental)"
S_RESTIC2="4. restic backup (mutated image)"
S_RESTORE="3. blockdiff-restore gen 2 from s3"
S_CAT="3. rclone cat img.1 + img.2"
S_DOWN="3. rclone copy of the chain + local restore"

log "warming the page cache"
cat "$IMAGE" >/dev/null

measure "$S_FULL" "$IMAGE_MIB" 1 "$BIN/blockdiff-backup" -q "${S3_OPTS[@]}" "$S3_CHAIN" "$IMAGE"
S3_DIFF1=$(object_size bench/img.1)
read -r BENCH_BYTES_1 BENCH_OBJECTS_1 < <(prefix_size bench)

mkdir -p "$LOCAL_DIR"
measure "$S_LOCAL" "$IMAGE_MIB" 1 "$BIN/blockdiff-backup" -q "$LOCAL_CHAIN" "$IMAGE"
LOCAL_DIFF1=$(stat -c %s "$LOCAL_CHAIN.1")
if [[ $LOCAL_DIFF1 -ne $S3_DIFF1 ]]; then
    log "note: the local chain's diff has $LOCAL_DIFF1 bytes, the s3 chain's $S3_DIFF1"
fi
MIB[$S_FULL]=$(mib_of "$S3_DIFF1")
MIB[$S_LOCAL]=$(mib_of "$LOCAL_DIFF1")

# rclone uploads the finished file (page cache warm: just written). Garage
# cuts every object into 1 MiB blocks and stores each block once: the blocks
# of this copy are those it stored for bench/img.1 a moment ago, so the
# upload finds them all there (what that saves Garage goes to rclone). The
# same file with every byte XORed with 0x5A (same size, same
# compressibility, no block in common) shows the upload without that help.
rclone_up_before() { rclone deletefile "garage:$BUCKET/rclone/img.1" 2>/dev/null || true; }
BEFORE_EACH=(rclone_up_before)
MANY[$S_RCLONE_UP]=1
measure "$S_RCLONE_UP" "$(mib_of "$LOCAL_DIFF1")" "$REPEAT" rclone copyto "$LOCAL_CHAIN.1" "garage:$BUCKET/rclone/img.1"
if [[ $(object_size rclone/img.1) -ne $LOCAL_DIFF1 ]]; then
    fail "rclone's upload of the local diff has $(object_size rclone/img.1) bytes, not $LOCAL_DIFF1"
fi
python3 -c '
import sys
table = bytes(b ^ 0x5A for b in range(256))
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    while chunk := src.read(16 << 20):
        dst.write(chunk.translate(table))' "$LOCAL_CHAIN.1" "$SCRAMBLED"
rclone_upx_before() { rclone deletefile "garage:$BUCKET/rclone/img.1.scrambled" 2>/dev/null || true; }
BEFORE_EACH=(rclone_upx_before)
MANY[$S_RCLONE_UPX]=1
measure "$S_RCLONE_UPX" "$(mib_of "$LOCAL_DIFF1")" "$REPEAT" rclone copyto "$SCRAMBLED" "garage:$BUCKET/rclone/img.1.scrambled"
BEFORE_EACH=()
rm -f "$SCRAMBLED"

# restic, the original image (information; its storage is step 4's target).
log "restic init $RESTIC_REPO"
if ! "${RESTIC[@]}" init >"$RESTIC_LOG" 2>&1; then
    cat "$RESTIC_LOG" >&2
    echo "s3.sh: restic init failed" >&2
    exit 1
fi
measure "$S_RESTIC1" "$IMAGE_MIB" 1 bash -c '"${@:3}" backup "$1" >> "$2" 2>&1' _ "$IMAGE" "$RESTIC_LOG" "${RESTIC[@]}"
read -r RESTIC_BYTES_1 RESTIC_OBJECTS_1 < <(prefix_size restic)

# =============================================================================
# 2. ~1% of the blocks rewritten, incremental backup: what it downloads
# =============================================================================

MUTATE=$(python3 "$ROOT/benches/chain_mutate.py" "$IMAGE" 2)
log "$MUTATE"
cat "$IMAGE" >/dev/null

measure "$S_INCR" "$IMAGE_MIB" 1 "$BIN/blockdiff-backup" -q "${S3_OPTS[@]}" "$S3_CHAIN" "$IMAGE"
S3_DIFF2=$(object_size bench/img.2)
MIB[$S_INCR]=$(mib_of "$S3_DIFF2")
read -r BENCH_BYTES_2 BENCH_OBJECTS_2 < <(prefix_size bench)
# The GETs of a diff or a digest object (NAME.N, NAME.N.gz, NAME.N.digest, NAME.N.md5).
INCR_DATA_GETS=$(awk '$2 == "GET" && $3 ~ /^bench\/img\.[0-9]+(\.gz|\.digest|\.md5)?$/' <<<"${REQS[$S_INCR]}")
"$BIN/blockdiff-backup" -q "$LOCAL_CHAIN" "$IMAGE" || fail "the local chain's incremental backup failed"
LOCAL_DIFF2=$(stat -c %s "$LOCAL_CHAIN.2")
S3_INFO=$("$BIN/blockdiff-info" "${S3_OPTS[@]}" "$S3_CHAIN" 2>&1) || fail "blockdiff-info $S3_CHAIN failed: $S3_INFO"

measure "$S_RESTIC2" "$IMAGE_MIB" 1 bash -c '"${@:3}" backup "$1" >> "$2" 2>&1' _ "$IMAGE" "$RESTIC_LOG" "${RESTIC[@]}"
read -r RESTIC_BYTES_2 RESTIC_OBJECTS_2 < <(prefix_size restic)

# =============================================================================
# 3. Restore of generation 2 from s3 against rclone cat of both diffs
# =============================================================================

CAT_BYTES=$((S3_DIFF1 + S3_DIFF2))
CAT_MIB=$(mib_of "$CAT_BYTES")
restore_before() { rm -f "$RESTORED"; }
BEFORE_EACH=(restore_before)
MANY[$S_RESTORE]=1
measure "$S_RESTORE" "$CAT_MIB" "$REPEAT" "$BIN/blockdiff-restore" -q "${S3_OPTS[@]}" "$RESTORED" --from "$S3_CHAIN" --generation 2
if [[ ! -f $RESTORED ]] || ! cmp "$IMAGE" "$RESTORED"; then
    fail "the restore of generation 2 from $S3_CHAIN differs from the mutated image"
fi
rm -f "$RESTORED"

cat_before() { rm -f "$CAT_OUT"; }
BEFORE_EACH=(cat_before)
MANY[$S_CAT]=1
measure "$S_CAT" "$CAT_MIB" "$REPEAT" bash -c 'rclone cat "garage:$1/bench" --include /img.1 --include /img.2 > "$2"' _ "$BUCKET" "$CAT_OUT"
BEFORE_EACH=()
if [[ $(stat -c %s "$CAT_OUT") -ne $CAT_BYTES ]]; then
    fail "rclone cat wrote $(stat -c %s "$CAT_OUT") bytes, not img.1 + img.2 = $CAT_BYTES"
fi
rm -f "$CAT_OUT"

# The other way to restore from a bucket: copy the chain down with rclone,
# then restore it from the local copy (the floor of ours: the same download,
# the same decompression and writes, one after the other).
DOWN_DIR=$WORK/down
down_before() { rm -rf "$DOWN_DIR" "$RESTORED"; }
BEFORE_EACH=(down_before)
MANY[$S_DOWN]=1
measure "$S_DOWN" "$CAT_MIB" "$REPEAT" bash -c 'rclone copy "garage:$1/bench" "$2" --include "/img.*" && "$3" -q "$4" --from "$2/img" --generation 2' _ "$BUCKET" "$DOWN_DIR" "$BIN/blockdiff-restore" "$RESTORED"
BEFORE_EACH=()
if [[ ! -f $RESTORED ]] || ! cmp "$IMAGE" "$RESTORED"; then
    fail "the local restore of the chain copied down with rclone differs from the mutated image"
fi
rm -rf "$DOWN_DIR" "$RESTORED"

RCLONE_BYTES=$(prefix_size rclone | awk '{ print $1 }')
RESTIC_SUMMARY=$(grep -E '^(Added to the repo|processed)' "$RESTIC_LOG" || true)
GARAGE_DISK=$(du -sb "$GDIR/data" | awk '{ print $1 }')

# =============================================================================
# Report
# =============================================================================

echo
echo "blockdiff object-storage benchmark (benches/s3.sh, issue 14)"
echo "  date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "  commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "  cpu:      $NPROC x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "  memory:   $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "  kernel:   $(uname -r)"
echo "  work dir: $WORK ($(df -hT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }'))"
echo "  server:   $("$GARAGE" --version 2>/dev/null | head -1), one node on loopback ($ENDPOINT),"
echo "            sqlite metadata, metadata_fsync = data_fsync = false (as garage-harness), 1 MiB blocks,"
echo "            zstd compression of blocks (its defaults); data in $GDIR"
echo "  clients:  $(rclone version 2>/dev/null | head -1) (its defaults: multipart, 5 MiB chunks, 4 at once, above 200 MiB);"
echo "            $(restic version 2>/dev/null | head -1) (repository v2, compression auto)"
echo "  image:    ext4 of $IMAGE_MIB MiB (mkfs.ext4 -d, as benches/run.sh part B) holding $(awk -v b="$STAGE_BYTES" 'BEGIN { printf "%.0f MiB", b / 1048576 }') in $STAGE_FILES files and directories"
echo "            ($(awk -v a="$IMAGE_ALLOC" 'BEGIN { printf "%.0f MiB", a / 1048576 }') allocated: a sparse file), copied from: ${STAGED[*]}"
echo "  mutation: benches/chain_mutate.py IMAGE 2: $MUTATE"
echo "  quiet:    each command waited for the 1-minute load average < $LOAD_MAX for ${LOAD_QUIET}s (at most ${LOAD_WAIT}s)"
if ((REPEAT > 1)); then
    echo "  repeat:   rclone copyto, the restore and rclone cat ran $REPEAT times (median shown; min-max s: all runs);"
    echo "            the backups and restic's ran once"
else
    echo "  repeat:   every command ran once (BENCH_REPEAT=1)"
fi
echo "  page cache: warm for every command (image, local diff and Garage's blocks just written or read)"
echo "  columns:  MiB = the bytes the throughput is counted over (the diff for our backups and rclone's upload,"
echo "            img.1 + img.2 for the restore and rclone cat, the image for restic); cpu s = the command's"
echo "            user + system CPU; garage s = Garage's CPU seconds meanwhile; others = share of the machine's"
echo "            CPU capacity used by everything else (- if too short to tell); GETs = GetObject requests;"
echo "            blk rd / blk wr = MiB Garage read from / wrote to its data blocks (its block_bytes_* metrics)"
echo
printf '%-41s %8s %8s %8s %6s %8s %7s %7s %6s %6s %7s %6s %6s%s\n' "name" "MiB" "seconds" "MiB/s" "cpu s" "garage s" \
    "RSS MiB" "GETs" "blk rd" "blk wr" "load" "wait s" "others" "$(if ((REPEAT > 1)); then printf '  %-13s' "min-max s"; fi)"
CONTENDED=0
for name in "${NAMES[@]}"; do
    awk -v name="$name" -v t="${SECS[$name]}" -v mib="${MIB[$name]}" -v g="${GCPU[$name]}" \
        -v c="${CPU[$name]}" -v r="${RSS[$name]}" -v o="${OTHER[$name]}" -v n="$NPROC" \
        -v gets="${GETS[$name]}" -v br="${BREAD[$name]}" -v bw="${BWRITE[$name]}" \
        -v l="${LOAD[$name]}" -v w="${WAIT[$name]}" -v sp="${SPREAD[$name]}" -v rep="$REPEAT" -v many="${MANY[$name]:-0}" 'BEGIN {
        if (t <= 0) t = 0.001
        others = (t * n >= 1) ? sprintf("%5d%%", o) : "     -"
        spread = (rep > 1 && many) ? sprintf("  %-13s", sp) : ""
        printf "%-41s %8.1f %8.3f %8.1f %6.2f %8.2f %7.1f %7d %6.1f %6.1f %7.2f %6s %s%s\n", name, mib, t, mib / t, c, g, r / 1024,
            gets, br / 1048576, bw / 1048576, l, w, others, spread }'
    if awk -v t="${SECS[$name]}" -v n="$NPROC" -v o="${OTHER[$name]}" \
        'BEGIN { exit !(t * n >= 1 && o > 10) }'; then
        CONTENDED=1
    fi
done
echo
echo "objects and sizes:"
printf '  diff generation 1: s3 bench/img.1 %s bytes, local chain img.1 %s bytes%s\n' "$S3_DIFF1" "$LOCAL_DIFF1" \
    "$(if [[ $S3_DIFF1 -eq $LOCAL_DIFF1 ]]; then echo " (same size)"; else echo " (DIFFERENT sizes)"; fi)"
printf '  diff generation 2: s3 bench/img.2 %s bytes, local chain img.2 %s bytes\n' "$S3_DIFF2" "$LOCAL_DIFF2"
printf '  stored under bench/ (ours):  after the full %s bytes in %s objects, after the incremental %s bytes in %s objects\n' \
    "$BENCH_BYTES_1" "$BENCH_OBJECTS_1" "$BENCH_BYTES_2" "$BENCH_OBJECTS_2"
printf '  stored under restic/:        after the first %s bytes in %s objects, after the second %s bytes in %s objects\n' \
    "$RESTIC_BYTES_1" "$RESTIC_OBJECTS_1" "$RESTIC_BYTES_2" "$RESTIC_OBJECTS_2"
printf '  stored under rclone/:        %s bytes (img.1 and its scrambled copy)\n' "$RCLONE_BYTES"
printf "  Garage's data directory:     %s bytes on disk (blocks zstd-compressed and deduplicated)\n" "$GARAGE_DISK"
if [[ -n $RESTIC_SUMMARY ]]; then
    echo "  restic said:"
    printf '%s\n' "$RESTIC_SUMMARY" | sed 's/^/    /'
fi
echo "  blockdiff-info $S3_CHAIN:"
printf '%s\n' "$S3_INFO" | sed 's/^/    /'
echo
echo "what Garage saw (its /metrics: S3 requests per operation, block bytes; and its log: requests per key):"
for name in "${NAMES[@]}"; do
    echo "  $name:"
    printf '%s\n' "${DELTA[$name]:-(nothing)}" | paste -sd ',' | sed 's/,/, /g; s/^/    /'
    case $name in "$S_FULL" | "$S_INCR" | "$S_RESTORE")
        printf '%s\n' "${REQS[$name]:-    (none logged)}" | sed 's/^/    /'
        ;;
    esac
done

if ((CONTENDED)); then
    echo
    echo "WARNING: other processes (beside the command and Garage) used the CPUs during some measurements"
fi
if ((${#WAIT_WARNINGS[@]} > 0)); then
    echo
    echo "WARNING: the machine did not become quiet before some measurements:"
    for w in "${WAIT_WARNINGS[@]}"; do echo "  - $w"; done
fi

echo
echo "targets:"
# ratio A B: B's time / A's time (how many times B's throughput A's is, on the same bytes).
ratio() { awk -v a="${SECS[$1]}" -v b="${SECS[$2]}" 'BEGIN { printf "%.2f", b / a }'; }
rate() { awk -v m="$2" -v t="${SECS[$1]}" 'BEGIN { printf "%.1f", m / t }'; }
up=$(ratio "$S_FULL" "$S_RCLONE_UP")
printf '  1. full backup >= 0.9 x the throughput of rclone copyto of its diff (%s MiB): %s x (ours %s s, %s MiB/s; rclone %s s, %s MiB/s)  %s\n' \
    "$(awk -v m="${MIB[$S_FULL]}" 'BEGIN { printf "%.1f", m }')" "$up" "${SECS[$S_FULL]}" "$(rate "$S_FULL" "${MIB[$S_FULL]}")" \
    "${SECS[$S_RCLONE_UP]}" "$(rate "$S_RCLONE_UP" "${MIB[$S_RCLONE_UP]}")" \
    "$(verdict "$(awk -v r="$up" 'BEGIN { print (r >= 0.9) ? 1 : 0 }')")"
printf '     beside rclone uploading the scrambled copy (no block already in Garage): %s x (rclone %s s, %s MiB/s)\n' \
    "$(ratio "$S_FULL" "$S_RCLONE_UPX")" "${SECS[$S_RCLONE_UPX]}" "$(rate "$S_RCLONE_UPX" "${MIB[$S_RCLONE_UPX]}")"
printf '     ours reads, hashes and compresses the %s MiB image meanwhile (%s MiB/s of image); the same backup to a\n' \
    "$IMAGE_MIB" "$(rate "$S_FULL" "$IMAGE_MIB")"
printf '     local chain takes %s s; CPU seconds, ours + Garage: %s + %s (rclone + Garage: %s + %s) on %d cores\n' \
    "${SECS[$S_LOCAL]}" "${CPU[$S_FULL]}" "${GCPU[$S_FULL]}" "${CPU[$S_RCLONE_UP]}" "${GCPU[$S_RCLONE_UP]}" "$NPROC"
if [[ -z $INCR_DATA_GETS ]]; then ok=1; else ok=0; fi
printf '  2. the incremental downloads no diff or digest: %s GetObject requests, %s bytes read from Garage data blocks  %s\n' \
    "${GETS[$S_INCR]}" "${BREAD[$S_INCR]}" "$(verdict "$ok")"
echo "     (objects under 3 KiB - .ver, .lock, .meta.json - live inline in Garage's metadata: reading them reads no block)"
if [[ -n $INCR_DATA_GETS ]]; then
    echo "     GETs of diff or digest objects during it:"
    printf '%s\n' "$INCR_DATA_GETS" | sed 's/^/      /'
fi
rs=$(ratio "$S_RESTORE" "$S_CAT")
printf '  3. restore of generation 2 >= 0.9 x the throughput of rclone cat of img.1 + img.2 (%s MiB): %s x (ours %s s, rclone cat %s s)  %s\n' \
    "$(awk -v m="$CAT_MIB" 'BEGIN { printf "%.1f", m }')" "$rs" "${SECS[$S_RESTORE]}" "${SECS[$S_CAT]}" \
    "$(verdict "$(awk -v r="$rs" 'BEGIN { print (r >= 0.9) ? 1 : 0 }')")"
printf '     ours: %s GetObject requests (%s per s), Garage read %s MiB of blocks for them (rclone cat: %s requests, %s MiB);\n' \
    "${GETS[$S_RESTORE]}" "$(awk -v g="${GETS[$S_RESTORE]}" -v t="${SECS[$S_RESTORE]}" 'BEGIN { printf "%.0f", g / t }')" \
    "$(mib_of "${BREAD[$S_RESTORE]}" | awk '{ printf "%.1f", $1 }')" "${GETS[$S_CAT]}" "$(mib_of "${BREAD[$S_CAT]}" | awk '{ printf "%.1f", $1 }')"
printf '     it also decompresses and writes the %s MiB image (%s MiB/s of image)\n' "$IMAGE_MIB" "$(rate "$S_RESTORE" "$IMAGE_MIB")"
printf '     beside rclone copy of the chain then a local restore of it (the same download, decompression and writes): %s x (%s s)\n' \
    "$(ratio "$S_RESTORE" "$S_DOWN")" "${SECS[$S_DOWN]}"
st=$(awk -v o="$BENCH_BYTES_2" -v r="$RESTIC_BYTES_2" 'BEGIN { printf "%.3f", o / r }')
printf '  4. bytes stored after the incremental <= restic: ours %s bytes vs restic %s bytes = %s x  %s\n' \
    "$BENCH_BYTES_2" "$RESTIC_BYTES_2" "$st" "$(verdict "$((BENCH_BYTES_2 <= RESTIC_BYTES_2 ? 1 : 0))")"
printf '     after the full backup: ours %s vs restic %s; the incremental added %s (ours) vs %s (restic)\n' \
    "$BENCH_BYTES_1" "$RESTIC_BYTES_1" "$((BENCH_BYTES_2 - BENCH_BYTES_1))" "$((RESTIC_BYTES_2 - RESTIC_BYTES_1))"
printf '     (info) backup times: restic %s s (original), %s s (mutated); ours %s s (full), %s s (incremental)\n' \
    "${SECS[$S_RESTIC1]}" "${SECS[$S_RESTIC2]}" "${SECS[$S_FULL]}" "${SECS[$S_INCR]}"
if ((${#OURS[@]} > 0)); then
    worst=$(for name in "${OURS[@]}"; do printf '%s\t%s\n' "${RSS[$name]}" "$name"; done | sort -n | tail -n 1)
    printf '     (info) largest peak RSS of a blockdiff command: %s MiB (%s)\n' \
        "$(awk -v r="${worst%%$'\t'*}" 'BEGIN { printf "%.1f", r / 1024 }')" "${worst#*$'\t'}"
fi

echo
if ((${#FAILURES[@]} > 0)); then
    echo "correctness: FAILED"
    for f in "${FAILURES[@]}"; do echo "  - $f"; done
    exit 1
fi
echo "correctness: OK"
echo "  - generation 2 restored from s3 is byte-for-byte the mutated image (cmp)"
echo "  - every command succeeded; rclone's copy and rclone cat's output have the sizes expected"
