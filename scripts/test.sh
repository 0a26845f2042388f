#!/usr/bin/env bash
# The project's test command (see README). On any machine, GPU or not:
#  1. installs NVRTC 12.9 and 13.0 (pinned wheels from PyPI, ~60 MB each) into .cache/ once, and the
#     SASS disassembler nvdisasm (pinned wheel, ~6 MB) into .cache/cudatk-sass/ once;
#     libsoxr (Debian's libsoxr0 0.1.3-4, pinned; ~80 kB) into .cache/soxr/ once, for librosa's resampler
#     (tts-voice loads it at run time: TTS_SOXR_LIB);
#  2. runs every test of the workspace with the Emu backend built (kernels/*.cu executed on the CPU
#     through the project's CUDA shim) and the NVRTC gate required (sm_80 and sm_90, no spills, no
#     read-only loads in kernels marked `nvrtc-gate: reads-own-writes`);
#     on a machine with a usable GPU the same tests also run every kernel on it (TTS_REQUIRE_CUDA=1
#     makes a missing GPU a failure instead of a skip);
#  3. prints the gate's register / shared-memory report and one summary line of all test counts.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
libdir=$(bash scripts/cuda-tools.sh)
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TTS_REQUIRE_NVRTC=1
export TTS_NVRTC_WHEELS="$PWD/.cache"
TTS_NVDISASM=$(bash scripts/cuda-tools.sh nvdisasm)
export TTS_NVDISASM
TTS_SOXR_LIB=$(bash scripts/soxr.sh)
export TTS_SOXR_LIB
report="${CARGO_TARGET_DIR:-target}/tmp/nvrtc-gate-report.txt"
rm -f "$report"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
python3 tools/import_picture.py || status=$?
cargo test --workspace --features emu --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

if [ -f "$report" ]; then cat "$report"; fi
grep -h '^parity:' "$log" || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
