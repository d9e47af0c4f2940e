#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, one after the other, and
# prints the executions and findings of each. Usage: fuzz/run.sh SECONDS [TARGET...]
#
# New coverage goes to fuzz/corpus/<target>/.cache (ignored by git; the committed seeds stay
# small), crashes to fuzz/artifacts/<target>/. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> fuzz/artifacts/<target>/<file>
# and, once fixed, copy it into fuzz/corpus/<target>/ so `cargo test --test fuzz_corpus`
# keeps it fixed.
#
# cargo-fuzz passes -Z flags to rustc; RUSTC_BOOTSTRAP=1 lets the pinned stable toolchain take
# them, so no nightly toolchain is needed. Install the tool with `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for f in fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
# Build products go to fuzz/target unless CARGO_TARGET_DIR says otherwise.

cargo fuzz build -O
mkdir -p logs
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t/.cache"
    echo "=== $t: ${seconds}s"
    status=ok
    # -timeout: an input slower than this is a finding (the parsers promise linear time).
    if ! cargo fuzz run -O "$t" "corpus/$t/.cache" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        status="FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
        failed=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-18s %12s execs  cov %6s  corpus %6s  %s' "$t" "$execs" "$cov" "$corpus" "$status")")
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
