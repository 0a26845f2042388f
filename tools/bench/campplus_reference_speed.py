"""CAMPPlus speed of the PyTorch reference (chatterbox-tts 0.1.7's xvector.py): the full-size model
with random weights (BatchNorm running variances near 1) on the same gliding tone as
crates/tts-voice/examples/campplus_speed.rs, `CAMPPlus.inference` as S3Gen's embed_ref calls it.

    tools/reference/.venv/bin/python tools/bench/campplus_reference_speed.py [SECONDS] [RUNS] [THREADS]
"""
import math
import sys
import time

import torch
from chatterbox.models.s3gen.xvector import CAMPPlus

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
torch.manual_seed(1)
model = CAMPPlus(memory_efficient=False).eval()
for mod in model.modules():
    if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        mod.running_var.uniform_(0.9, 1.1)
n = int(secs * 16000)
t = torch.arange(n, dtype=torch.float64) / 16000
wav = (0.3 * torch.sin(2 * math.pi * (150 + 40 * t) * t) + 0.005 * torch.randn(n, dtype=torch.float64)).float().view(1, -1)
with torch.inference_mode():
    model.inference(wav)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.inference(wav)
        times.append(time.perf_counter() - t0)
times.sort()
print(f"reference campplus {secs} s of audio, {torch.get_num_threads()} threads: "
      f"min {times[0] * 1e3:.1f} ms, median {times[len(times) // 2] * 1e3:.1f} ms ({runs} runs)")
