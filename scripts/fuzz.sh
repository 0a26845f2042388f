#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (docs/fuzzing.md) for SECONDS each (default 30), one after
# another, starting from its committed corpus fuzz/corpus/<target>/; fails at the first crash,
# timeout or out-of-memory, whose input cargo-fuzz leaves in fuzz/artifacts/<target>/.
#   bash scripts/fuzz.sh [SECONDS]
# Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, sanitizer coverage); with a stable toolchain (CI has no other)
# RUSTC_BOOTSTRAP=1 lets stable rustc accept them. The fuzz build has its own target directory
# (FUZZ_TARGET_DIR, default fuzz/target): its sanitizer flags would otherwise rebuild the main one.
# New inputs the fuzzer finds go to a scratch directory, never into the committed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
case "$seconds" in '' | *[!0-9]*)
  echo "usage: bash scripts/fuzz.sh [SECONDS]  (seconds per target, a whole number; got '$seconds')" >&2
  exit 2
  ;;
esac
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
# The main workspace's `cargo fmt --all` does not reach fuzz/ (a workspace of its own).
cargo fmt --manifest-path fuzz/Cargo.toml --check
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
fuzz=(--fuzz-dir fuzz --target-dir "$target_dir")
cargo fuzz build "${fuzz[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  # fuzz/dicts/<target>.dict: tokens the fuzzer splices in (config keys, numbers at u32/u64 edges).
  dict=()
  if [ -f "fuzz/dicts/$target.dict" ]; then dict=(-dict="fuzz/dicts/$target.dict"); fi
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: 2 GiB is out of proportion to
  # any input (inputs stay at libFuzzer's default maximum length, the largest seed's size).
  # libFuzzer's status lines (thousands a run) go to a log; its summary, or on a finding its
  # last 80 lines, are printed.
  log="$scratch/$target.log"
  if ! cargo fuzz run "${fuzz[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz: $target FAILED (its input is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::' "$log" || tail -n 5 "$log"
done
echo "fuzz: every target ran ${seconds}s without a crash"
