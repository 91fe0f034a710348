#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 60)
# and fails if any of them finds a crash.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
#        FUZZ_TARGETS="v2_reader partition_table" scripts/fuzz.sh 600   (only those)
#
# Needs cargo-fuzz: when `cargo fuzz` is missing it is installed with
# `cargo install cargo-fuzz --version 0.13.2 --locked` (into ~/.cargo/bin, where later runs on
# the same machine find it), so a fresh CI machine fuzzes too. A failed
# install fails the run. Stable Rust is used: RUSTC_BOOTSTRAP=1 lets it
# accept the nightly flags cargo-fuzz passes (sanitizers, -Z options).
#
# Each target runs with -rss_limit_mb=1024 and -malloc_limit_mb=256: a single
# allocation of 256 MiB or more counts as a crash. Crashing inputs go to
# fuzz/artifacts/<target>/, each run's full libFuzzer output to
# fuzz/target/fuzz-logs/<target>.log.
set -euo pipefail

secs=${1:-60}
case $secs in
    '' | *[!0-9]*)
        echo "usage: $0 [SECONDS_PER_TARGET]" >&2
        exit 2
        ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
# Every [[bin]] of fuzz/Cargo.toml, in its order: a new target is fuzzed
# without being listed again here.
read -r -a targets <<<"$(awk '/^\[\[bin\]\]/ { bin = 1; next } bin && /^name = / { gsub(/"/, "", $3); printf "%s ", $3; bin = 0 }' "$fuzz/Cargo.toml")"
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz.sh: no targets in $fuzz/Cargo.toml" >&2; exit 1; }
# FUZZ_TARGETS="v2_reader partition_table" runs only those.
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    # Pinned: a newer cargo-fuzz may want a newer toolchain than the
    # machine's one stable Rust.
    echo "fuzz.sh: cargo-fuzz is not installed; installing it (cargo install cargo-fuzz --version 0.13.2 --locked)"
    if ! cargo install cargo-fuzz --version 0.13.2 --locked; then
        echo "fuzz.sh: could not install cargo-fuzz; nothing was fuzzed" >&2
        exit 1
    fi
    cargo fuzz --version
fi

"$fuzz/seed.sh"

cd "$fuzz"
export RUSTC_BOOTSTRAP=1
logs="$fuzz/target/fuzz-logs"
mkdir -p "$logs"

echo "fuzz.sh: building the fuzz targets"
cargo fuzz build

failed=0
summary=()
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    echo "fuzz.sh: fuzzing $t for ${secs}s (log: $log)"
    status=0
    cargo fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=256 -max_len=262144 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?

    # Executions: libFuzzer's final stats, else its "Done N runs" line, else
    # the last status line (#N ...).
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs="?"

    if [ "$status" -eq 0 ]; then
        result="ok"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            result="CRASH: input saved to $artifact"
        else
            result="FAILED (exit $status, see $log)"
        fi
        grep -m 1 -A 3 "panicked at" "$log" | sed 's/^/    /' || true
    fi
    summary+=("$(printf '%-16s runs=%-10s %s' "$t" "$runs" "$result")")
done

echo
echo "fuzz.sh: summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
