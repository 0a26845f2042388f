#!/usr/bin/env bash
# Regenerate every committed fixture case with the exact command recorded in its case.json.
#   bash tools/reference/regenerate_all.sh              # all cases under tests/fixtures/
#   bash tools/reference/regenerate_all.sh t3_prefill_a # only these
# Needs the reference venv: bash tools/reference/setup.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=tools/reference/.venv/bin/python
[ -x "$PY" ] || { echo "missing $PY: run bash tools/reference/setup.sh" >&2; exit 1; }
if [ $# -gt 0 ]; then dirs=(); for n in "$@"; do dirs+=("tests/fixtures/$n"); done
else dirs=(tests/fixtures/*/); fi
for d in "${dirs[@]}"; do
  d="${d%/}"
  [ -f "$d/case.json" ] || continue
  cmd="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["generator"]["command"])' "$d/case.json")"
  echo "== $d"
  echo "   $cmd"
  eval "$cmd" 2> >(grep -v -e '^Sampling' -e 'it/s' >&2)
done
