#!/usr/bin/env bash
# Voice cloning speed against the PyTorch reference, on this machine, in one run: computing a voice
# from a SECONDS-long recording (default 10 s: 44.1 kHz mono 16-bit, a speech-like test signal), i.e.
# the reference's ChatterboxTTS.prepare_conditionals against `tts bench-voice`, both with the
# full-size VoiceEncoder, S3Tokenizer and CAMPPlus at random weights (the work does not depend on
# the values), THREADS threads each (default 2), median of RUNS runs (default 5) after a warm-up.
# Needs the reference environment (bash tools/reference/setup.sh) and libsoxr (scripts/soxr.sh).
# Not part of CI. Compare the lines of one run only: on a loaded machine both move.
#   bash tools/bench/voice_cpu_vs_reference.sh [SECONDS] [RUNS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
runs=${2:-5}
threads=${3:-2}
py=tools/reference/.venv/bin/python
[ -x "$py" ] || bash tools/reference/setup.sh
TTS_SOXR_LIB=$(bash scripts/soxr.sh)
export TTS_SOXR_LIB
wav=$(mktemp --suffix=.wav)
trap 'rm -f "$wav"' EXIT
"$py" - "$wav" "$secs" <<'PY'
import sys
import soundfile as sf
sys.path.insert(0, "tools/reference")
from refgen.common import synth_wave
sf.write(sys.argv[1], synth_wave(float(sys.argv[2]), 44100, 7).numpy(), 44100, subtype="PCM_16")
PY
cargo build --release -q -p tts-engine
echo "== reference (chatterbox-tts 0.1.7, torch, $threads threads)"
ref=$("$py" tools/bench/voice_reference_speed.py "$wav" "$runs" "$threads")
echo "$ref"
echo "== this engine (tts bench-voice, Cpu, $threads threads)"
ours=$(RAYON_NUM_THREADS=$threads target/release/tts bench-voice --synthetic --input "$wav" --runs "$runs")
echo "$ours"
python3 - "$ref" "$ours" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])
line = [l for l in sys.argv[2].splitlines() if l.startswith("bench-voice ")][0]
ours = dict(kv.split("=", 1) for kv in line.split()[1:])
r, o = ref["median_s"], float(ours["median_s"])
print(f"voice from {ours['audio_s']} s of audio: {o:.3f} s vs reference {r:.3f} s (medians): {r / o:.2f}x faster "
      f"[{ours['cpu']}]")
PY
