#!/usr/bin/env python3
"""Prints which top-level modules of tts-kernels each module uses (non-test code only) and any
import circle among them. Usage: python3 tools/import_picture.py [crates/tts-kernels/src]

A module is a top-level `mod` of lib.rs (a folder counts as one module: `ops/*.rs` is `ops`).
A use of an item re-exported at the crate root (`crate::Device`) counts as a use of the module
that defines it. Test modules (`#[cfg(test)] mod tests`) are left out: they may use anything."""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "crates", "tts-kernels", "src")

# items re-exported at the crate root -> the module defining them
lib = open(os.path.join(ROOT, "lib.rs")).read()
ROOT_ITEMS = {}
for mod, items in re.findall(r"pub use (\w+)::\{?([^;}]*)\}?;", lib):
    for it in items.split(","):
        it = it.strip()
        if it:
            ROOT_ITEMS[it] = mod
MODULES = set(re.findall(r"^(?:pub(?:\(crate\))? )?mod (\w+);", lib, re.M))


def module_of(path):
    rel = os.path.relpath(path, ROOT)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def strip_tests(text):
    # comments and doc comments name modules without using them
    text = re.sub(r"//.*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        # skip the item the attribute applies to: up to its `;` or its balanced `{ ... }`
        j = m.end()
        while j < len(text) and text[j] not in "{;":
            j += 1
        if j < len(text) and text[j] == "{":
            depth = 0
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
                if depth == 0:
                    break
        else:
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def targets(text):
    out = set()
    # grouped uses: use crate::{a::b, C, d};
    for group in re.findall(r"crate::\{([^}]*(?:\{[^}]*\}[^}]*)*)\}", text, re.S):
        for part in re.split(r",(?![^{]*\})", group):
            name = re.match(r"\s*(\w+)", part)
            if name:
                out.add(name.group(1))
    for name in re.findall(r"crate::(\w+)", text):
        out.add(name)
    mods = set()
    for n in out:
        if n in MODULES:
            mods.add(n)
        elif n in ROOT_ITEMS:
            mods.add(ROOT_ITEMS[n])
        elif n == "KernelFile" or n == "gpu_kernel_files" or n == "KERNEL_FILES":
            mods.add("lib")
    return mods


edges = {}
for dirpath, _, files in os.walk(ROOT):
    for f in files:
        if f.endswith(".rs"):
            p = os.path.join(dirpath, f)
            m = module_of(p)
            if m == "lib":
                continue
            uses = targets(strip_tests(open(p).read())) - {m, "lib"}
            edges.setdefault(m, set()).update(uses)

for m in sorted(edges):
    print(f"{m:11} -> {', '.join(sorted(edges[m])) or '-'}")

# strongly connected components (Tarjan) = import circles
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))


for v in sorted(edges):
    if v not in index:
        visit(v)
print("circles:", "; ".join(" <-> ".join(c) for c in comps) if comps else "none")
sys.exit(1 if comps else 0)
