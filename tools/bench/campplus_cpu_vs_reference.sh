#!/usr/bin/env bash
# CAMPPlus (speaker encoder) speed against the PyTorch reference, on this machine, one after the other:
# the full-size model with random weights on a gliding tone of SECONDS (default 10), 2 threads each,
# min and median of RUNS (default 5) after a warm-up. Needs the reference environment
# (bash tools/reference/setup.sh). Not part of CI. Compare the two lines of one run only: on a
# loaded machine both move.
#   bash tools/bench/campplus_cpu_vs_reference.sh [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
runs=${2:-5}
py=tools/reference/.venv/bin/python
[ -x "$py" ] || bash tools/reference/setup.sh
cargo build --release -q -p tts-voice --example campplus_speed
RAYON_NUM_THREADS=2 target/release/examples/campplus_speed "$secs" "$runs"
"$py" tools/bench/campplus_reference_speed.py "$secs" "$runs" 2
