#!/usr/bin/env bash
# Coverage-guided fuzzing of every msh-fuzz target with libFuzzer (cargo-fuzz, nightly):
# RUNS inputs per target (default 1,000,000), each target capped at MAX_SECONDS when set.
# An input that panics, aborts, takes over 10 s or 4 GiB is saved under
# fuzz/artifacts/msh/ and the script fails; replay it on a stable build with
#   cargo run -p msh --features fuzzing -- fuzz replay TARGET FILE
#
#   bash fuzz/run.sh                      # every target, a million inputs each
#   TARGETS="csv npy" RUNS=10000 bash fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1000000}
MAX_SECONDS=${MAX_SECONDS:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/msh/target}

rustup toolchain list | grep -q "^nightly" || rustup toolchain install nightly --profile minimal
# msh embeds its default plugins, built for wasm32-wasip2 with the stable toolchain.
export MSH_GUEST_TOOLCHAIN=stable
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds: the repository's workflows, architectures and data, and files msh writes.
cargo build -p msh --features fuzzing --quiet
"$CARGO_TARGET_DIR/debug/msh" fuzz seeds fuzz/seeds
TARGETS=${TARGETS:-$(ls fuzz/seeds)}

# Instrumented for coverage, without a sanitizer (safe Rust; the checks are panics).
FUZZ_TARGET_DIR="$HOME/.cache/msh/fuzz-target"
cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" --sanitizer none -O msh

summary=()
status=0
for target in $TARGETS; do
    mkdir -p "fuzz/corpus/$target"
    log="fuzz/corpus/$target.log"
    echo "== $target: $RUNS inputs" >&2
    if ! MSH_FUZZ_TARGET=$target cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" \
        --sanitizer none -O msh "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -runs="$RUNS" -max_total_time="$MAX_SECONDS" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        2>"$log"; then
        status=1
        tail -30 "$log" >&2
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
    summary+=("$target: ${done_line:-no summary (see $log)}")
done
printf '%s\n' "${summary[@]}"
exit $status
