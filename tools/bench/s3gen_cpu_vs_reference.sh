#!/usr/bin/env bash
# S3Gen speed on the Cpu backend against the PyTorch reference, on this machine, in one run.
#   bash tools/bench/s3gen_cpu_vs_reference.sh [TOKENS]   (default 250 speech tokens = 10 s of audio)
# Needs the reference environment (bash tools/reference/setup.sh, ~6 GB) and writes the full-size
# random S3Gen (~1 GB) with the built-in voice's prompt size (157 tokens, 314 mel frames) to
# tools/reference/full-size/s3gen_bench once. Both engines load the same weights and prompt and
# synthesise the same tokens with 10 CFM steps, batch 1, 2 threads; each reports wall seconds per
# second of audio (RTF); the ratio is reference RTF / ours (above 1: we are faster), for the f32 Cpu
# backend (the parity reference) and Cpu with bf16 GEMM weights, each on the AVX2 path
# (TTS_CPU_ISA=avx2) and on the best path this CPU has (avx512, avx512bf16 or amx; cpu-bf16 also on
# avx512bf16 where amx is the best), side by side; every line names its path. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=${1:-250}
py=tools/reference/.venv/bin/python
dir=tools/reference/full-size/s3gen_bench
[ -x "$py" ] || bash tools/reference/setup.sh
if [ ! -f "$dir/s3gen.safetensors" ]; then
  "$py" tools/reference/generate.py s3gen_wav --seed 1 --full-size --threads 2 \
    --param n_prompt_tokens=157 --param n_tokens=250 --out "$dir"
fi
cargo build --release -q -p tts-engine
# `tts --model-dir` takes a directory holding T3 and S3Gen; bench-s3gen reads only S3Gen: a
# directory of links to the case's files and an empty t3_cfg.safetensors stands for it
run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
for f in "$dir"/*; do ln -s "$(realpath "$f")" "$run_dir/"; done
[ -e "$run_dir/t3_cfg.safetensors" ] || : > "$run_dir/t3_cfg.safetensors"
echo "== reference (chatterbox-tts 0.1.7, torch, 2 threads)"
ref=$("$py" tools/bench/s3gen_reference_speed.py "$dir" "$tokens" 2)
echo "$ref"
echo "== machine limits (tts bench-peak)"
peak=$(target/release/tts bench-peak)
echo "$peak"
best=$(echo "$peak" | awk '$1 == "cpu_path" {print $2}')
# the f32 `cpu` backend on AVX2 and on the widest path; `cpu-bf16` also on avx512bf16 where the
# widest is amx (AMX takes its GEMMs, convolutions and attention)
case "$best" in
  amx) bf16_paths="avx2 avx512bf16 amx" ;;
  avx2 | portable) bf16_paths=avx2 ;;
  *) bf16_paths="avx2 $best" ;;
esac
f32_paths=avx2
[ "$best" != avx2 ] && [ "$best" != portable ] && f32_paths="avx2 $best"
for backend in cpu cpu-bf16; do
paths=$f32_paths
[ "$backend" = cpu-bf16 ] && paths=$bf16_paths
for isa in $paths; do
  echo "== this engine (--backend $backend, TTS_CPU_ISA=$isa)"
  ours=$(TTS_CPU_ISA=$isa RAYON_NUM_THREADS=2 target/release/tts bench-s3gen --model-dir "$run_dir" --backend "$backend" --batch 1 --tokens "$tokens")
  echo "$ours"
  python3 - "$ref" "$ours" "$backend" "$isa" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])
row = [l.split() for l in sys.argv[2].splitlines() if l.split() and l.split()[0] == "1"][0]
ours = float(row[3])
print(f"S3Gen {sys.argv[3]} path {sys.argv[4]}: RTF {ours:.3f} vs reference {ref['rtf']:.3f}: ratio {ref['rtf'] / ours:.2f}x")
PY
done
done
