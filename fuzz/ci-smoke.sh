#!/usr/bin/env bash
# CI smoke test for the fuzz targets, on the stable toolchain (no sanitizer: `-s none`).
#
# Installs cargo-fuzz if it is missing, builds every target, then runs each one from the
# committed seeds (fuzz/seeds/<target>, which include every crash regression) for a short,
# bounded and reproducible time. Exits non-zero if a build fails or any target crashes;
# the crashing input is in fuzz/artifacts/<target>/.
#
# Knobs (environment):
#   FUZZ_SMOKE_SECS   wall-clock cap per target, seconds (default 60)
#   FUZZ_SMOKE_RELAY_SECS  the same for the relay targets (relay_*), whose inputs are small
#                     parsers' inputs (default 20)
#   FUZZ_SMOKE_RUNS   execution cap per target (default 1000000)
#   FUZZ_SMOKE_TARGETS  space-separated targets (default: all, from `cargo fuzz list`)
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${FUZZ_SMOKE_SECS:-60}"
relay_secs="${FUZZ_SMOKE_RELAY_SECS:-20}"
runs="${FUZZ_SMOKE_RUNS:-1000000}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

t0=$(date +%s)
cargo fuzz build -s none
echo "fuzz smoke: built in $(( $(date +%s) - t0 )) s"

targets="${FUZZ_SMOKE_TARGETS:-$(cargo fuzz list)}"
failed=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    case "$t" in relay_*) tsecs="$relay_secs" ;; *) tsecs="$secs" ;; esac
    echo "fuzz smoke: $t (at most ${tsecs} s / ${runs} runs)"
    start=$(date +%s)
    log="$(mktemp)"
    # The first directory receives new inputs; the seeds stay untouched.
    if RUST_BACKTRACE=1 cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -seed=1 -runs="$runs" -max_total_time="$tsecs" -dict=fuzz/asp.dict \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+ +DONE|^Done' "$log" | tail -n 2 || true
        echo "fuzz smoke: $t ok in $(( $(date +%s) - start )) s"
    else
        # The panic message first (the backtrace after it is long), then libFuzzer's summary.
        grep -m 1 -A 2 'panicked at' "$log" || true
        grep -E 'SUMMARY|Test unit written|Failing input|crash-' "$log" | head -n 5 || true
        echo "fuzz smoke: $t FAILED (see fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    rm -f "$log"
done

echo "fuzz smoke: total $(( $(date +%s) - t0 )) s"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz smoke: crashes in: ${failed[*]}"
    exit 1
fi
