#!/usr/bin/env bash
# `tts serve` checked with the official `openai` Python client (tools/serve/openai_check.py): a whole
# WAV, a streamed PCM response, the same as server-sent events, the voice list, a refused format and
# a wrong key, against the real binary on loopback with the tiny fixture model on Cpu; then SIGTERM,
# which must drain and exit 0. Needs python3 with venv and PyPI (the client is installed into
# .cache/openai-venv once). CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/openai-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet 'openai>=1.60,<3'
fi
"$venv/bin/python" -c 'import openai; print("openai", openai.__version__)'
cargo build -q -p tts-engine
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TTS_VOICES_DIR="$tmp/voices" HF_HUB_OFFLINE=1 target/debug/tts serve --model tests/fixtures/tts_generate_a \
  --backend cpu --port "$port" --api-key K >"$tmp/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log"; echo "tts serve exited"; exit 1; }
  sleep 0.1
done
"$venv/bin/python" tools/serve/openai_check.py --url "http://127.0.0.1:$port/v1" --key K --max-new-tokens 8
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
cat "$tmp/log"
[ "$rc" = 0 ] || { echo "tts serve exited $rc after SIGTERM (expected 0)"; exit 1; }
echo "openai-check: ok"
