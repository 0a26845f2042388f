#!/usr/bin/env bash
# T3 speed on the Cpu backend against the PyTorch reference, on this machine, in one run.
#   bash tools/bench/t3_cpu_vs_reference.sh [TOKENS]      (default 50 new tokens, batch 1, CFG)
# Needs the reference environment (bash tools/reference/setup.sh, ~6 GB) and writes the full-size
# random T3 (~2.1 GB) to tools/reference/full-size/t3_bench once. Both engines load the same
# weights and inputs; each reports generated tokens / seconds (prefill included); the ratio is
# ours / reference, for the f32 Cpu backend (the parity reference) and for Cpu with bf16 GEMM weights. Not part of CI (the reference install alone is 6 GB).
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
echo "== reference (chatterbox-tts 0.1.7, torch, 2 threads)"
ref=$("$py" tools/bench/t3_reference_speed.py "$dir" "$tokens" 2)
echo "$ref"
for backend in cpu cpu-bf16; do
  echo "== this engine (--backend $backend)"
  ours=$(target/release/tts bench-t3 --model-dir "$dir" --backend "$backend" --batch 1 --tokens "$tokens")
  echo "$ours"
  python3 - "$ref" "$ours" "$backend" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])
row = [l.split() for l in sys.argv[2].splitlines() if l.split() and l.split()[0] == "1"][0]
ours = float(row[5])
print(f"T3 {sys.argv[3]}: {ours:.2f} tokens/s vs reference {ref['tokens_per_second']:.2f} tokens/s: ratio {ours / ref['tokens_per_second']:.2f}x")
PY
done
