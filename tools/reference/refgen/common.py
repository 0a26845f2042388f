"""Shared helpers: determinism, the case writer, RNG recording, weight initialisation."""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import math
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

FORMAT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[3]


def setup_determinism(seed: int, threads: int = 1):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def versions():
    out = {}
    for p in ["chatterbox-tts", "torch", "torchaudio", "transformers", "s3tokenizer", "librosa", "tokenizers",
              "diffusers", "numpy", "scipy"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def command_line(argv) -> str:
    """The exact command that regenerates a case, relative to the repository root."""
    return "tools/reference/.venv/bin/python tools/reference/generate.py " + " ".join(shlex.quote(a) for a in argv)


def _contig(d):
    out = {}
    for k, v in d.items():
        if not torch.is_tensor(v):
            v = torch.as_tensor(v)
        v = v.detach().cpu().contiguous()
        if v.is_floating_point() and v.dtype != torch.float32:
            v = v.float()
        if v.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
            v = v.to(torch.int64)
        out[k] = v.clone()
    return out


def scale_of(t: torch.Tensor) -> float:
    t = t.detach().float()
    t = t[torch.isfinite(t)]
    if t.numel() == 0:
        return 0.0
    return float(t.abs().max())


def round_up_1sig(x: float) -> float:
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    m = math.ceil(x / 10 ** e)
    return float(f"{m}e{e}")


class Case:
    """Collects everything for one fixture directory and writes it in the fixed format."""

    def __init__(self, out: Path, kind: str, seed: int, argv, description: str):
        self.out = Path(out)
        self.kind = kind
        self.seed = seed
        self.argv = list(argv)
        self.description = description
        self.config = {}
        self.params = {}
        self.inputs = {}
        self.expected = {}
        self.tensor_meta = {}
        self.abs_f32 = None
        self.abs_bf16 = None
        self.out.mkdir(parents=True, exist_ok=True)
        for f in self.out.iterdir():
            if f.is_file():
                f.unlink()

    def input(self, name, t):
        self.inputs[name] = t

    def expect(self, name, t, compare=None, note="", abs_f32=None):
        if not torch.is_tensor(t):
            t = torch.as_tensor(t)
        if compare is None:
            compare = "allclose" if t.is_floating_point() else "exact"
        self.expected[name] = t
        meta = {"compare": compare, "note": note}
        if abs_f32 is not None:
            meta["abs_f32"] = abs_f32
        meta["dtype"] = "float32" if t.is_floating_point() else "int64"
        meta["shape"] = list(t.shape)
        self.tensor_meta[name] = meta

    def file(self, name) -> Path:
        return self.out / name

    def write(self):
        inputs = _contig(self.inputs)
        expected = _contig(self.expected)
        save_file(inputs, str(self.out / "inputs.safetensors"), metadata={"format": str(FORMAT_VERSION)})
        save_file(expected, str(self.out / "expected.safetensors"), metadata={"format": str(FORMAT_VERSION)})
        # tolerance: rel 1e-4 with an abs floor proportional to the largest float tensor scale
        scales = [scale_of(v) for v in expected.values() if v.is_floating_point()]
        s = max(scales) if scales else 1.0
        abs_f32 = self.abs_f32 if self.abs_f32 is not None else round_up_1sig(max(s, 1e-3) * 1e-5)
        abs_bf16 = self.abs_bf16 if self.abs_bf16 is not None else round_up_1sig(max(s, 1e-3) * 2e-2)
        case = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "description": self.description,
            "seed": self.seed,
            "generator": {**{k: v for k, v in versions().items()},
                          "command": command_line(self.argv)},
            "tolerance": {"f32": {"rel": 1e-4, "abs": abs_f32}, "bf16": {"rel": 1e-2, "abs": abs_bf16}},
            "tensors": self.tensor_meta,
            "inputs": {k: {"dtype": "float32" if v.is_floating_point() else "int64", "shape": list(v.shape)}
                       for k, v in inputs.items()},
            "params": self.params,
        }
        with open(self.out / "case.json", "w") as f:
            json.dump(case, f, indent=2, sort_keys=False, ensure_ascii=False)
            f.write("\n")
        with open(self.out / "config.json", "w") as f:
            json.dump(self.config, f, indent=2, sort_keys=True)
            f.write("\n")
        for name, t in expected.items():
            if t.is_floating_point():
                assert torch.isfinite(t).any(), f"{name}: no finite values"
                assert not torch.isnan(t).any(), f"{name}: NaN"
        print(f"wrote {self.out} ({sum(p.stat().st_size for p in self.out.iterdir())/1e6:.2f} MB)")


def save_state_dict(module_or_sd, path, drop=()):
    sd = module_or_sd.state_dict() if hasattr(module_or_sd, "state_dict") else module_or_sd
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items() if k not in drop}
    save_file(sd, str(path))
    return sd


class RngRecorder(contextlib.AbstractContextManager):
    """Wraps torch RNG entry points *without changing what they return*, recording every draw in order.

    The reference code runs unmodified: we only observe the random tensors it draws so that the
    engine can be fed exactly the same values."""

    NAMES = ("randn_like", "rand", "randn", "rand_like", "multinomial")

    def __init__(self):
        self.calls = []
        self._orig = {}

    def __enter__(self):
        for n in self.NAMES:
            orig = getattr(torch, n)
            self._orig[n] = orig

            def wrap(*a, __orig=orig, __n=n, **k):
                r = __orig(*a, **k)
                self.calls.append((__n, r.detach().clone(), a))
                return r
            setattr(torch, n, wrap)
        return self

    def __exit__(self, *exc):
        for n, f in self._orig.items():
            setattr(torch, n, f)
        return False

    def of(self, name):
        return [c for c in self.calls if c[0] == name]


def perturb_norms(module, std=0.1, gen=None):
    """Norm weights at exactly 1 / biases at 0 hide bugs (an engine that ignores them would pass).
    Add a little noise to every LayerNorm / RMSNorm affine parameter."""
    with torch.no_grad():
        for name, m in module.named_modules():
            cls = type(m).__name__
            if "Norm" in cls and "BatchNorm" not in cls:
                if getattr(m, "weight", None) is not None and isinstance(m.weight, torch.nn.Parameter):
                    m.weight.add_(torch.randn(m.weight.shape, generator=gen) * std)
                if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.nn.Parameter):
                    m.bias.add_(torch.randn(m.bias.shape, generator=gen) * std)


def randomize_batchnorm(module, gen=None):
    """Give BatchNorm layers non-trivial running statistics (eval mode uses them)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                    m.running_var.copy_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=gen))
                if m.affine:
                    m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def synth_wave(seconds: float, sr: int, seed: int) -> torch.Tensor:
    """A short speech-like test signal: a few harmonic tones with a gliding pitch, an amplitude envelope
    with a pause, and a little noise. float32, shape (N,)."""
    g = torch.Generator().manual_seed(seed)
    n = int(round(seconds * sr))
    t = torch.arange(n, dtype=torch.float64) / sr
    f0 = 140.0 + 40.0 * torch.sin(2 * math.pi * 0.7 * t)  # gliding pitch
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = torch.zeros(n, dtype=torch.float64)
    for k, a in enumerate([1.0, 0.5, 0.35, 0.2, 0.12], start=1):
        x += a * torch.sin(k * phase + 0.3 * k)
    x += 0.3 * torch.sin(2 * math.pi * 1250.0 * t)
    env = 0.5 * (1 - torch.cos(2 * math.pi * torch.clamp(t / seconds, 0, 1)))
    env = env * (1.0 - 0.9 * ((t > seconds * 0.45) & (t < seconds * 0.55)).double())  # a pause
    x = 0.25 * x * env
    x += 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.float()


def parse_kv(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
