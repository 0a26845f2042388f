#!/usr/bin/env bash
# T3 speed on the Cpu backend against the PyTorch reference, on this machine, in one run.
#   bash tools/bench/t3_cpu_vs_reference.sh [TOKENS]      (default 50 new tokens, batch 1, CFG)
# Needs the reference environment (bash tools/reference/setup.sh, ~6 GB) and writes the full-size
# random T3 (~2.1 GB) to tools/reference/full-size/t3_bench once. Both engines load the same
# weights and inputs; each reports generated tokens / seconds (prefill included); the ratio is
# ours / reference, for the f32 Cpu backend (the parity reference) and for Cpu with bf16 GEMM weights,
# each on the AVX2 path and on the CPU's widest path (TTS_CPU_ISA; cpu-bf16 also on avx512bf16
# where the widest is amx), with `tts bench-peak`'s FMA peaks
# and read bandwidth and the fraction of that bandwidth a decode step's weight bytes reach. Not part of CI (the reference install alone is 6 GB).
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=${1:-50}
py=tools/reference/.venv/bin/python
dir=tools/reference/full-size/t3_bench
[ -x "$py" ] || bash tools/reference/setup.sh
if [ ! -f "$dir/t3_cfg.safetensors" ]; then
  "$py" tools/reference/generate.py t3_prefill --seed 1 --full-size --threads 2 --out "$dir"
fi
cargo build --release -q -p tts-engine
# `tts --model-dir` takes a directory holding T3 and S3Gen; bench-t3 reads only T3: a directory of
# links to the case's files and an empty s3gen.safetensors stands for it
run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
for f in "$dir"/*; do ln -s "$(realpath "$f")" "$run_dir/"; done
[ -e "$run_dir/s3gen.safetensors" ] || : > "$run_dir/s3gen.safetensors"
echo "== reference (chatterbox-tts 0.1.7, torch, 2 threads)"
ref=$("$py" tools/bench/t3_reference_speed.py "$dir" "$tokens" 2)
echo "$ref"
echo "== machine limits (tts bench-peak)"
peak=$(target/release/tts bench-peak)
echo "$peak"
best=$(echo "$peak" | awk '$1 == "cpu_path" {print $2}')
# the AVX2 path and the widest path of this CPU side by side (TTS_CPU_ISA forces the path)
f32_paths=avx2
[ "$best" != avx2 ] && [ "$best" != portable ] && f32_paths="avx2 $best"
# cpu-bf16 also on avx512bf16 where the widest path is amx (AMX takes its GEMMs there)
bf16_paths=$f32_paths
[ "$best" = amx ] && bf16_paths="avx2 avx512bf16 amx"
for backend in cpu cpu-bf16; do
  paths=$f32_paths
  [ "$backend" = cpu-bf16 ] && paths=$bf16_paths
  for path in $paths; do
    echo "== this engine (--backend $backend, TTS_CPU_ISA=$path)"
    ours=$(TTS_CPU_ISA=$path target/release/tts bench-t3 --model-dir "$run_dir" --backend "$backend" --batch 1 --tokens "$tokens")
    echo "$ours"
    python3 - "$ref" "$ours" "$backend" "$path" "$peak" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])
lines = [l.split() for l in sys.argv[2].splitlines()]
row = [l for l in lines if l and l[0] == "1"][0]
fields = dict(f.split("=", 1) for l in lines if l and l[0] == "bench-t3" for f in l[1:])
peak = dict(l.split()[:2] for l in sys.argv[5].splitlines() if len(l.split()) == 2)
ours = float(row[5])
read = max(float(v) for k, v in peak.items() if k.startswith("read_gbps_"))
weights_gbps = int(fields["weights_bytes"]) / (float(fields["ms_per_step"]) / 1e3) / 1e9
print(f"T3 {sys.argv[3]} path {sys.argv[4]}: {ours:.2f} tokens/s vs reference {ref['tokens_per_second']:.2f} tokens/s: "
      f"ratio {ours / ref['tokens_per_second']:.2f}x; a step's weights at {weights_gbps:.1f} GB/s = "
      f"{weights_gbps / read:.2f} of the measured read bandwidth ({read:.1f} GB/s)")
PY
  done
done
