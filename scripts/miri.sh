#!/usr/bin/env bash
# Runs the host-side, pure-Rust unit tests under Miri (undefined behaviour, aliasing, out-of-bounds
# and leak checks): tensor views, the host memory pool, the Cpu sampler, and the conds.pt readers
# (zip + pickle). Kernel, checkpoint-by-mmap and model tests are out of Miri's reach (FFI, mmap) or
# far too slow in its interpreter.
#
# Miri needs a nightly toolchain with the `miri` component. Where the machine has none (toolchains
# cannot be fetched on some machines), it says so and exits 0 — unless TTS_REQUIRE_MIRI=1, which
# makes a missing Miri a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    if [ "${TTS_REQUIRE_MIRI:-0}" = 1 ]; then
        echo "miri: FAILED: TTS_REQUIRE_MIRI=1 but no nightly toolchain with the miri component" >&2
        exit 1
    fi
    echo "miri: SKIPPED: this machine has no nightly toolchain with the miri component (rustup +nightly component add miri)"
    exit 0
fi
# Tree Borrows: crossbeam-epoch (rayon's dependency) trips Stacked Borrows in its own code.
# Isolation off: the tests read the clock for fresh seeds and the environment.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-tree-borrows}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri-run"
start=$(date +%s)
cargo +nightly miri test -p tts-kernels --lib -- tensor:: host_pool:: cpu::sampling::
cargo +nightly miri test -p tts-engine --lib -- voice::
echo "miri: ok in $(( $(date +%s) - start )) s"
