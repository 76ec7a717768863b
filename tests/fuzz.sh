#!/usr/bin/env bash
# Runs each of Gantry's fuzz targets (fuzz/fuzz_targets) for a time budget
# with libFuzzer and AddressSanitizer. Needs a nightly toolchain
# (`rustup toolchain install nightly`); uses cargo-fuzz when installed,
# else the same build flags cargo-fuzz passes.
#
#   tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60, all)
#
# New corpus entries go to fuzz/work/TARGET (not committed); a crash is
# written to fuzz/artifacts/TARGET/ and the script exits non-zero. Fix the
# bug, then copy the input to fuzz/regressions/TARGET/: the stable test
# suite replays it for ever (tests/tests/fuzz_corpus.rs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fuzz="$(cd "$here/../fuzz" && pwd)"
budget=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls "$fuzz/fuzz_targets" | sed 's/\.rs$//')
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
cd "$fuzz"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$fuzz/target}"
if cargo +nightly fuzz --version >/dev/null 2>&1; then
    build() { cargo +nightly fuzz build --release --debug-assertions "$@"; }
    bin_dir="$CARGO_TARGET_DIR/$triple/release"
else
    # What cargo-fuzz passes (sancov instrumentation, ASan, --cfg fuzzing).
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Zsanitizer=address"
    build() { cargo +nightly build --release --target "$triple" "${@/#/--bin=}"; }
    bin_dir="$CARGO_TARGET_DIR/$triple/release"
fi
build "${targets[@]}"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    echo "== $t (${budget}s)"
    # Corpus dirs: new inputs go to work/; corpus/ and regressions/ are seeds.
    seeds=("corpus/$t")
    [ -d "regressions/$t" ] && seeds+=("regressions/$t")
    if ! "$bin_dir/$t" -max_total_time="$budget" -rss_limit_mb=2048 -timeout=20 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "work/$t" "${seeds[@]}" 2>"work/$t.log"; then
        tail -40 "work/$t.log" >&2
        failed+=("$t")
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "work/$t.log" | tr '\n' ' '
        echo
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran clean for ${budget}s each"
