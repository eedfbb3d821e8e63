#!/usr/bin/env bash
# Run Keayl's cargo-fuzz (libFuzzer) targets.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      # default 600 (the documented 10-minute run)
#
# Targets (fuzz/fuzz_targets/):
#   parse_command   keayl_cable::protocol::parse_command never panics (+ decode invariants)
#   cable_envelope  EncodedIdentifier frame/confirm/reject output is JSON with the same
#                   identifier and message
#   sse_frame       keayl_live::sse::Frame / encode_comment against a WHATWG SSE parser
#
# Works on a STABLE toolchain: targets are built with `--sanitizer none` (no -Z flags; the
# crates under test forbid `unsafe`, so AddressSanitizer adds little). Set
# FUZZ_SANITIZER=address to use ASan anyway; on a non-nightly toolchain this sets
# RUSTC_BOOTSTRAP=1 for the fuzz build, which unlocks -Zsanitizer on stable.
#
# Other environment knobs:
#   FUZZ_TARGETS="parse_command sse_frame"   subset to run (default: all)
#   FUZZ_MAX_LEN                              libFuzzer -max_len (default 8192)
#
# The committed seeds in fuzz/corpus/<target>/ are read only: libFuzzer writes the inputs it
# discovers to fuzz/target/corpus/<target>/ (not committed), which later runs reuse.
# Exit status: 0 if every target ran clean, 1 if any target crashed (panic, timeout, OOM);
# crashing inputs are in fuzz/artifacts/<target>/. Copy a real bug's reproducer to
# fuzz/artifacts-found/<target>/ to keep it, and replay it with
#   cargo fuzz run --sanitizer none <target> <file>
set -euo pipefail

SECONDS_PER_TARGET="${1:-600}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]   (a positive integer, default 600)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
cd "$ROOT"

ALL_TARGETS=(parse_command cable_envelope sse_frame)
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"
SANITIZER="${FUZZ_SANITIZER:-none}"
MAX_LEN="${FUZZ_MAX_LEN:-8192}"

# --- cargo-fuzz ---------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not found, installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi
echo "fuzz.sh: $(cargo fuzz --version), $(rustc --version), sanitizer=$SANITIZER," \
    "${SECONDS_PER_TARGET}s per target" >&2

if [[ "$SANITIZER" != none ]] && ! rustc --version | grep -q -- -nightly; then
    export RUSTC_BOOTSTRAP=1
fi

# --- build --------------------------------------------------------------------------------
FUZZ_ARGS=(--sanitizer "$SANITIZER")
build_start=$SECONDS
cargo fuzz build "${FUZZ_ARGS[@]}"
echo "fuzz.sh: build took $((SECONDS - build_start))s" >&2

dict_for() {
    case "$1" in
        parse_command | cable_envelope) echo "$FUZZ_DIR/dict/cable.dict" ;;
        sse_frame) echo "$FUZZ_DIR/dict/sse.dict" ;;
    esac
}

# A crash artifact is any file libFuzzer writes to the artifact dir.
count_artifacts() {
    local dir="$FUZZ_DIR/artifacts/$1"
    if [[ -d "$dir" ]]; then
        find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \
            -o -name 'leak-*' \) | wc -l
    else
        echo 0
    fi
}

# --- run ----------------------------------------------------------------------------------
failed=0
summaries=()
for target in "${TARGETS[@]}"; do
    seeds="$FUZZ_DIR/corpus/$target"
    work="$FUZZ_DIR/target/corpus/$target"
    log="$FUZZ_DIR/target/fuzz-$target.log"
    mkdir -p "$work" "$FUZZ_DIR/artifacts/$target"
    before=$(count_artifacts "$target")

    echo "fuzz.sh: running $target for ${SECONDS_PER_TARGET}s (log: $log)" >&2
    libfuzzer_args=(
        -max_total_time="$SECONDS_PER_TARGET"
        -max_len="$MAX_LEN"
        -timeout=30
        -rss_limit_mb=2048
        -print_final_stats=1
        -dict="$(dict_for "$target")"
    )
    status=0
    # New inputs go to the first corpus dir ($work); the seeds are only read.
    cargo fuzz run "${FUZZ_ARGS[@]}" "$target" "$work" "$seeds" -- "${libfuzzer_args[@]}" \
        >"$log" 2>&1 || status=$?

    after=$(count_artifacts "$target")
    crashes=$((after - before))
    if ((status != 0 && crashes == 0)); then
        crashes=1 # e.g. a crash whose artifact could not be written
    fi
    execs=$(awk '/^stat::number_of_executed_units:/ {n = $2} END {print n + 0}' "$log")
    rate=$(awk '/^stat::average_exec_per_sec:/ {n = $2} END {print n + 0}' "$log")
    # libFuzzer's in-memory corpus size at the end ("corp: N/size"), not the file count.
    corpus=$(awk '/ corp: / {for (i = 1; i < NF; i++) if ($i == "corp:") c = $(i + 1)} END {print c ""}' "$log")

    if ((crashes > 0)); then
        failed=1
        line="FAIL $target: execs=$execs exec/s=$rate crashes=$crashes corpus=$corpus artifacts=fuzz/artifacts/$target/ log=$log"
        grep -E -m 5 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || tail -n 30 "$log" >&2
    else
        line="ok   $target: execs=$execs exec/s=$rate crashes=0 corpus=$corpus time=${SECONDS_PER_TARGET}s"
    fi
    summaries+=("$line")
    echo "$line"
done

echo "fuzz.sh: summary" >&2
printf '  %s\n' "${summaries[@]}" >&2
exit "$failed"
