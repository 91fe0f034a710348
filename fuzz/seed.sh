#!/bin/sh
# Seeds the fuzz corpora from the fixtures written by the original blockdiff
# (testdata/legacy/): diff streams (plain and gzip) for legacy_reader, digest
# sidecars for digest_reader, version files for ver_parser. Fixtures larger
# than 64 KiB are cut to their first 64 KiB so that the fuzzer stays fast.
#
# Usage: fuzz/seed.sh   (from anywhere; existing corpus entries are kept)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../testdata/legacy"
corpus="$here/corpus"
max=65536

[ -d "$fixtures" ] || { echo "seed.sh: no fixtures at $fixtures" >&2; exit 1; }

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

# Diffs are NAME.N (plain) and NAME.N.gz; NAME.N.md5 are digests.
diffs=
for f in "$fixtures"/*; do
    case "$(basename "$f")" in
        *.[0-9] | *.[0-9][0-9] | *.[0-9].gz | *.[0-9][0-9].gz) diffs="$diffs $f" ;;
    esac
done
# shellcheck disable=SC2086 # fixture names have no spaces
seed legacy_reader $diffs
seed digest_reader "$fixtures"/*.md5
seed ver_parser "$fixtures"/*.ver

# Inputs that once made a target fail stay in its corpus.
for dir in "$here"/regressions/*/; do
    [ -d "$dir" ] || continue
    target=$(basename "$dir")
    mkdir -p "$corpus/$target"
    cp "$dir"* "$corpus/$target/"
done
