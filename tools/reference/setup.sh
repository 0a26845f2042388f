#!/usr/bin/env bash
# One command to (re)create the reference environment:
#   bash tools/reference/setup.sh
# Creates tools/reference/.venv with chatterbox-tts==0.1.7 (torch 2.6, CPU is enough) and the exact
# versions recorded in requirements.lock. Takes a few minutes and ~6 GB of disk.
#   bash tools/reference/setup.sh --unlocked   # resolve from chatterbox-tts==0.1.7 and rewrite requirements.lock
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==24.3.1"
if [ "${1:-}" = "--unlocked" ] || [ ! -s "$HERE/requirements.lock" ]; then
  "$VENV/bin/python" -m pip install "chatterbox-tts==0.1.7"
  "$VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^pkg_resources' > "$HERE/requirements.lock"
  echo "wrote $HERE/requirements.lock"
else
  "$VENV/bin/python" -m pip install -r "$HERE/requirements.lock"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as m
for p in ["chatterbox-tts", "torch", "transformers", "s3tokenizer", "diffusers", "safetensors", "tokenizers", "numpy", "librosa"]:
    try:
        print(f"{p}=={m.version(p)}")
    except m.PackageNotFoundError:
        print(f"{p}: not installed")
PY
