#!/usr/bin/env bash
# Installs the CUDA compile-only tools the tests need on a GPU-less machine (NVRTC 12.9 and 13.0 from
# PyPI, pinned; about 60 MB each) into .cache/cudatk/ and .cache/cudatk13/ of the checkout, once, and
# prints the NVRTC 12.9 library directory.
# Usage: libdir=$(bash scripts/cuda-tools.sh)
#
# `bash scripts/cuda-tools.sh nvdisasm` instead installs NVIDIA's SASS disassembler (the pinned
# nvidia-cuda-nvdisasm wheel, about 6 MB; no -cu12 variant exists on PyPI, and the 13.x tool reads
# the sm_80/sm_90 CUBINs of NVRTC 12.9) into .cache/cudatk-sass/, once, and prints its path. The
# NVRTC gate reads it from $TTS_NVDISASM to check the SASS of kernels that read what they write.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = nvdisasm ]; then
  sass="$root/.cache/cudatk-sass"
  bin="$sass/nvidia/cu13/bin/nvdisasm"
  if [ ! -x "$bin" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$sass.partial" \
      "nvidia-cuda-nvdisasm==13.5.37" >&2
    rm -rf "$sass" && mv "$sass.partial" "$sass"
  fi
  echo "$bin"
  exit 0
fi
tk="$root/.cache/cudatk"
lib="$tk/nvidia/cuda_nvrtc/lib"
if [ ! -e "$lib/libnvrtc.so.12" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tk.partial" \
    "nvidia-cuda-nvrtc-cu12==12.9.86" >&2
  rm -rf "$tk" && mv "$tk.partial" "$tk"
fi
# NVRTC 13.0 in the CUDA 13 wheel layout (nvidia/cu13/lib), as PyTorch's CUDA 13 builds install it: the
# library search and every kernel are also tested against CUDA 13 (tests/cuda_libraries.rs).
tk13="$root/.cache/cudatk13"
if [ ! -e "$tk13/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tk13.partial" \
    "nvidia-cuda-nvrtc==13.0.88" >&2
  rm -rf "$tk13" && mv "$tk13.partial" "$tk13"
fi
echo "$lib"
