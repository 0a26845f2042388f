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
# install_wheel DIR FILE SPEC: pip-installs SPEC into DIR (through DIR.partial, so an interrupted
# install is never taken for a finished one) unless DIR/FILE exists
install_wheel() {
  if [ ! -e "$1/$2" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$1.partial" "$3" >&2
    rm -rf "$1" && mv "$1.partial" "$1"
  fi
}
if [ "${1:-}" = nvdisasm ]; then
  sass="$root/.cache/cudatk-sass"
  install_wheel "$sass" nvidia/cu13/bin/nvdisasm "nvidia-cuda-nvdisasm==13.5.37"
  echo "$sass/nvidia/cu13/bin/nvdisasm"
  exit 0
fi
install_wheel "$root/.cache/cudatk" nvidia/cuda_nvrtc/lib/libnvrtc.so.12 "nvidia-cuda-nvrtc-cu12==12.9.86"
# NVRTC 13.0 in the CUDA 13 wheel layout (nvidia/cu13/lib), as PyTorch's CUDA 13 builds install it: the
# library search and every kernel are also tested against CUDA 13 (tests/cuda_libraries.rs).
install_wheel "$root/.cache/cudatk13" nvidia/cu13/lib/libnvrtc.so.13 "nvidia-cuda-nvrtc==13.0.88"
echo "$root/.cache/cudatk/nvidia/cuda_nvrtc/lib"
