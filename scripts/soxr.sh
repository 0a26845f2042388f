#!/usr/bin/env bash
# Installs libsoxr (the resampler librosa's default `soxr_hq` calls through python-soxr) into
# .cache/soxr/ of the checkout, once, and prints the path of libsoxr.so.0.
# Usage: export TTS_SOXR_LIB=$(bash scripts/soxr.sh)
#
# libsoxr is LGPL-2.1: the engine only loads it at run time (crates/tts-voice/src/resample/soxr.rs),
# it is never linked or vendored. The copy is Debian 12's package libsoxr0 0.1.3-4 (amd64), pinned by
# its SHA-256; the shared object needs libgomp.so.1 (GCC's OpenMP runtime, on any machine with GCC).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/soxr"
lib="$dir/usr/lib/x86_64-linux-gnu/libsoxr.so.0"
deb=libsoxr0_0.1.3-4_amd64.deb
sha256=73a9f1a290da86562333430517c3f44282f17fcbeefcc2ba7f8abbc2e686f6f3
url="http://deb.debian.org/debian/pool/main/libs/libsoxr/$deb"
if [ ! -e "$lib" ]; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "scripts/soxr.sh: the pinned package is for x86_64; install libsoxr0 with your package manager instead" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # curl, or apt-get download (the same file from the configured Debian mirror) where curl cannot reach it
  if ! (cd "$tmp" && curl -sSfL --retry 2 -o "$deb" "$url"); then
    (cd "$tmp" && rm -f "$deb" && apt-get download -q libsoxr0=0.1.3-4 >&2)
  fi
  echo "$sha256  $tmp/$deb" | sha256sum -c --quiet - >&2
  mkdir -p "$tmp/x"
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$tmp/$deb" "$tmp/x"
  else
    (cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C x)
  fi
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp/x" "$dir"
fi
echo "$lib"
