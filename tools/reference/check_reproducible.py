#!/usr/bin/env python3
"""Regenerate committed fixture cases into a temporary directory and compare them with the committed files.

  tools/reference/.venv/bin/python tools/reference/check_reproducible.py [CASE ...] [--keep]

Weights and inputs (t3_cfg / s3gen / ve .safetensors, inputs.safetensors, conds.pt) must match bit for bit;
tokenizer.json and config.json byte for byte; expected.safetensors within 1e-6 relative (per tensor:
|a-b| <= 1e-6 * max(|b|, tiny), -inf/+inf at the same positions; integer tensors exactly); case.json equal
(floats within 1e-6 relative). Exit status 1 if anything differs."""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
WEIGHT_FILES = {"t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "inputs.safetensors"}


def cmp_exact_st(a, b):
    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return f"keys differ: {sorted(set(ta) ^ set(tb))[:5]}"
    for k in ta:
        if ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape:
            return f"{k}: dtype/shape differ"
        if not torch.equal(ta[k], tb[k]):
            # NaN-free by construction; equal() is bitwise for finite values
            return f"{k}: values differ (max abs {float((ta[k].double() - tb[k].double()).abs().max()):.3g})"
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if fa.metadata() != fb.metadata():
            return "metadata differs"
    return None


def cmp_expected(a, b, rel=1e-6):
    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return f"keys differ: {sorted(set(ta) ^ set(tb))[:5]}"
    worst = 0.0
    for k in ta:
        x, y = ta[k], tb[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"{k}: dtype/shape differ"
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return f"{k}: integer values differ"
            continue
        fx, fy = torch.isfinite(x), torch.isfinite(y)
        if not torch.equal(fx, fy) or not torch.equal(x[~fx], y[~fy]):
            return f"{k}: non-finite positions differ"
        if fx.any():
            xs, ys = x[fx].double(), y[fy].double()
            scale = max(float(ys.abs().max()), 1e-30)
            err = float((xs - ys).abs().max()) / scale
            worst = max(worst, err)
            if err > rel:
                return f"{k}: max |diff| / max|ref| = {err:.3g} > {rel}"
    return None if worst == 0.0 else f"ok-within-tolerance (worst rel {worst:.3g})"


def cmp_conds(a, b):
    da, db = torch.load(a, weights_only=True), torch.load(b, weights_only=True)

    def flat(d, p=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, p + k + "."))
            else:
                out[p + k] = v
        return out
    fa, fb = flat(da), flat(db)
    if fa.keys() != fb.keys():
        return "keys differ"
    for k in fa:
        x, y = fa[k], fb[k]
        if torch.is_tensor(x) != torch.is_tensor(y):
            return f"{k}: type differs"
        if torch.is_tensor(x):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return f"{k}: differs"
        elif x != y:
            return f"{k}: differs"
    return None


def json_close(x, y, rel=1e-6):
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(json_close(x[k], y[k], rel) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(json_close(a, b, rel) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=1e-12)
    return x == y


def check_case(case_dir: Path, tmp: Path):
    cj = json.loads((case_dir / "case.json").read_text())
    argv = shlex.split(cj["generator"]["command"])
    i = argv.index("--out")
    out = tmp / case_dir.name
    argv[i + 1] = str(out)
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return [f"generator failed: {r.stderr[-2000:]}"]
    problems, notes = [], []
    fa = {p.name for p in case_dir.iterdir() if p.is_file()}
    fb = {p.name for p in out.iterdir() if p.is_file()}
    if fa != fb:
        problems.append(f"file sets differ: {sorted(fa ^ fb)}")
    for name in sorted(fa & fb):
        a, b = case_dir / name, out / name
        if name in WEIGHT_FILES:
            e = cmp_exact_st(a, b)
            if e is None and a.read_bytes() != b.read_bytes():
                notes.append(f"{name}: tensors bit-identical, file bytes differ")
        elif name == "expected.safetensors":
            e = cmp_expected(a, b)
            if e and e.startswith("ok"):
                notes.append(f"{name}: {e}")
                e = None
        elif name == "conds.pt":
            e = cmp_conds(a, b)
            if e is None and a.read_bytes() != b.read_bytes():
                notes.append("conds.pt: tensors bit-identical, file bytes differ")
        elif name == "case.json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            jb["generator"]["command"] = ja["generator"]["command"]  # --out differs by construction
            e = None if json_close(ja, jb) else "case.json differs"
        else:
            e = None if a.read_bytes() == b.read_bytes() else f"{name} differs"
        if e:
            problems.append(f"{name}: {e}")
    return problems, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    dirs = [FIX / c for c in args.cases] if args.cases else sorted(p for p in FIX.iterdir() if (p / "case.json").exists())
    tmp = Path(tempfile.mkdtemp(prefix="fixture-repro-"))
    n_ok = n_bad = 0
    for d in dirs:
        res = check_case(d, tmp)
        if isinstance(res, list):
            problems, notes = res, []
        else:
            problems, notes = res
        status = "OK " if not problems else "BAD"
        print(f"{status} {d.name}" + ("" if not notes else "  [" + "; ".join(notes) + "]"), flush=True)
        for p in problems:
            print(f"     {p}")
        n_ok += not problems
        n_bad += bool(problems)
    print(f"{n_ok} passed, {n_bad} failed")
    if args.keep:
        print(f"regenerated files kept in {tmp}")
    else:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if n_bad else 0)


if __name__ == "__main__":
    main()
