#!/usr/bin/env bash
# Installs the CUDA compile-only tools the tests need on a GPU-less machine (NVRTC 12.9 from PyPI,
# pinned; about 60 MB) into .cache/cudatk/ of the checkout, once, and prints the library directory.
# Usage: libdir=$(bash scripts/cuda-tools.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tk="$root/.cache/cudatk"
lib="$tk/nvidia/cuda_nvrtc/lib"
if [ ! -e "$lib/libnvrtc.so.12" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tk.partial" \
    "nvidia-cuda-nvrtc-cu12==12.9.86" >&2
  rm -rf "$tk" && mv "$tk.partial" "$tk"
fi
echo "$lib"
