#!/bin/sh
# Seeds the fuzz corpora from the fixtures: those written by the original
# blockdiff (testdata/legacy/) and the v2 chains written by this project's
# tools (testdata/v2/). Legacy diff streams (plain and gzip) go to
# legacy_reader, v2 diffs to v2_reader, digest sidecars of both formats to
# digest_reader, version files to ver_parser. Fixtures larger than 64 KiB are
# cut to their first 64 KiB so that the fuzzer stays fast.
#
# Usage: fuzz/seed.sh   (from anywhere; existing corpus entries are kept)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../testdata/legacy"
v2="$here/../testdata/v2"
corpus="$here/corpus"
max=65536

[ -d "$fixtures" ] || { echo "seed.sh: no fixtures at $fixtures" >&2; exit 1; }
[ -d "$v2" ] || { echo "seed.sh: no fixtures at $v2" >&2; exit 1; }

# seed TARGET FILE...
seed() {
    target=$1
    shift
    mkdir -p "$corpus/$target"
    for f in "$@"; do
        [ -f "$f" ] || continue
        dest="$corpus/$target/seed-$(basename "$f")"
        if [ "$(wc -c < "$f")" -gt "$max" ]; then
            head -c "$max" "$f" > "$dest"
        else
            cp "$f" "$dest"
        fi
    done
    echo "seed.sh: $target: $(find "$corpus/$target" -type f | wc -l) corpus files"
}

# diffs DIR: the diffs in DIR, NAME.N (plain) and NAME.N.gz.
diffs() {
    for f in "$1"/*; do
        case "$(basename "$f")" in
            *.[0-9] | *.[0-9][0-9] | *.[0-9].gz | *.[0-9][0-9].gz) printf '%s\n' "$f" ;;
        esac
    done
}

# Fixture names have no spaces: word splitting of $(diffs ...) is safe.
# shellcheck disable=SC2046
seed legacy_reader $(diffs "$fixtures")
# shellcheck disable=SC2046
seed v2_reader $(diffs "$v2")
# Digests: NAME.N.md5 (legacy), NAME.N.digest (v2).
seed digest_reader "$fixtures"/*.md5 "$v2"/*.digest
seed ver_parser "$fixtures"/*.ver "$v2"/*.ver
seed sealed_reader "$here/../testdata/v2-encrypted"/chain.*

# Partition tables: small disk images made by sfdisk (MBR with an extended
# partition and logical ones; GPT), when sfdisk is installed.
if command -v sfdisk >/dev/null 2>&1; then
    mkdir -p "$corpus/partition_table"
    img="$corpus/partition_table/seed-mbr.img"
    rm -f "$img" && truncate -s 128K "$img"
    printf 'label: dos\nstart=8, size=40, type=83\nstart=48, size=200, type=5\nstart=56, size=60, type=83\nstart=124, size=100, type=82\n' |
        sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null
    img="$corpus/partition_table/seed-gpt.img"
    rm -f "$img" && truncate -s 128K "$img"
    printf 'label: gpt\nfirst-lba: 34\nstart=40, size=60, type=L, name=root\nstart=100, size=80, type=S\n' |
        sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null
    echo "seed.sh: partition_table: $(find "$corpus/partition_table" -type f | wc -l) corpus files"
else
    echo "seed.sh: partition_table: sfdisk not installed, no seeds (the fuzzer starts from nothing)" >&2
fi

# The remote agent's packet streams (blockdiff-run/src/remote/protocol.rs:
# kind byte, u32 little-endian length, payload): hand-made ones, and the
# captures of a real remote backup in testdata/agent/ (its input: the
# request and the previous digest; its output: log, progress, diff,
# digest, report), which a blockdiff-run test checks are current.
mkdir -p "$corpus/packet_reader"
{
    printf 'H\032\000\000\000blockdiff-agent protocol 2'
    printf 'D\010\000\000\000\000\020\000\000abcd'
    printf 'L\012\000\000\000info\thello'
    printf 'P\020\000\000\000\377\377\377\377\377\377\377\377\004\000\000\000\000\000\000\000'
    printf 'G\004\000\000\000wxyz'
    printf 'Z\000\000\000\000'
} >"$corpus/packet_reader/seed-stream"
printf 'H\032\000\000\000blockdiff-agent protocol 2E\006\000\000\000failed' >"$corpus/packet_reader/seed-error"
cp "$here/../testdata/agent/agent-output.bin" "$corpus/packet_reader/seed-agent-output"
cp "$here/../testdata/agent/agent-input.bin" "$corpus/packet_reader/seed-agent-input"
echo "seed.sh: packet_reader: $(find "$corpus/packet_reader" -type f | wc -l) corpus files"

# The agent's request: the captured input stream, and the request packet's
# JSON payload alone (the target reads its input both ways).
mkdir -p "$corpus/agent_request"
cp "$here/../testdata/agent/agent-input.bin" "$corpus/agent_request/seed-agent-input"
# The payload: the capture's second packet (after the greeting).
python3 - "$here/../testdata/agent/agent-input.bin" "$corpus/agent_request/seed-request-json" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
at = 5 + struct.unpack_from('<I', data, 1)[0]
length = struct.unpack_from('<I', data, at + 1)[0]
open(sys.argv[2], 'wb').write(data[at + 5:at + 5 + length])
PY
echo "seed.sh: agent_request: $(find "$corpus/agent_request" -type f | wc -l) corpus files"

# Inputs that once made a target fail stay in its corpus.
for dir in "$here"/regressions/*/; do
    [ -d "$dir" ] || continue
    target=$(basename "$dir")
    mkdir -p "$corpus/$target"
    cp "$dir"* "$corpus/$target/"
done
