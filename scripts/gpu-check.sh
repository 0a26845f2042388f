#!/usr/bin/env bash
# The one-shot device check (docs/gpu-check.md): everything is built here, where there is no GPU, and
# one command runs it on a lent GPU machine (no Rust, no network, at most 64 MiB carried, ~15 minutes).
#
#   bash scripts/gpu-check.sh prepare   builds in release every test binary that exercises the Cuda
#                                       backend and the `tts` binary (without the emu feature, so the
#                                       kernel tests compare Cuda with Cpu only), strips them, packs them
#                                       with the runner into .gpu/ (git-ignored), checks the size of what
#                                       travels, and prints the command to run there and the paths to carry
#   bash scripts/gpu-check.sh dry-run   runs the staged runner here: it must unpack, check every binary,
#                                       and stop cleanly at "no GPU" (what a GPU-less machine can test)
#
# On the GPU machine (from the repository root, with .gpu carried): bash .gpu/run.sh "$OUT"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stage="$root/.gpu"
# what travels: the tracked files (+ untracked, not ignored ones) and the carried .gpu/; the device
# tool refuses more than 64 MiB, so stop well before
max_total_mib=60
max_stage_mib=30

mib() { echo $(( ($1 + 1048575) / 1048576 )); }

tree_bytes() {
  # tracked and untracked-but-not-ignored files, as the device tool sends them
  git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

prepare() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
  local json bins
  json=$(mktemp)
  trap 'rm -f "$json"' RETURN
  echo "== building release test binaries (Cuda against Cpu; no emu feature) and the tts binary" >&2
  # the tests of the crates that drive the Cuda backend, and the parity harness of the root package
  cargo test --release --no-run --message-format=json \
    -p tts-kernels -p tts-t3 -p tts-s3gen -p tts-suite >"$json"
  # without the HTTP server (the `serve` feature): the runner does not serve, and the payload and
  # the tree share the device tool's 64 MiB
  cargo build --release -p tts-engine --bin tts --no-default-features >&2
  rm -rf "$stage" "$stage.partial"
  mkdir -p "$stage.partial/payload/bin"
  # executable + "package/target" label of each test binary (profile.test), from cargo's JSON
  bins=$(python3 - "$json" "$root" <<'PY'
import json, os, sys
root = os.path.realpath(sys.argv[2])
seen = set()
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m.get("profile", {}).get("test"):
        continue
    crate_dir = os.path.dirname(os.path.realpath(m["manifest_path"]))
    pkg = "tts-suite" if crate_dir == root else os.path.basename(crate_dir)
    kind = m["target"]["kind"][0]
    label = f"{pkg}.{'lib' if kind == 'lib' else m['target']['name']}"
    if label not in seen:
        seen.add(label)
        print(label, m["executable"])
PY
)
  [ -n "$bins" ] || { echo "gpu-check prepare: cargo reported no test binaries" >&2; exit 1; }
  : >"$stage.partial/payload/manifest.tsv"
  while read -r label exe; do
    # tests that cannot touch Cuda stay here: the harness self-test is Emu-only, the NVRTC tests
    # compile without a GPU (CI runs both), the config fuzz regressions parse JSON only; the runner
    # runs only tts-kernels', tts-t3's and tts-s3gen's binaries and the parity harness: the
    # engine's (CLI, requests, voices), tts-voice's (host code; its tokenizer encoder on a device is
    # made of the ops tts-kernels' binaries test, and Emu runs it in CI) and tts-hub's (no device at
    # all) tests would only take room (the tree and the staged folder share 64 MiB)
    case "$label" in
      *.harness_catches_faults|*.nvrtc_gate|*.cuda_libraries|*.packed_weights|*.config_fuzz_regressions) continue ;;
      tts-engine.*|tts-voice.*|tts-hub.*) continue ;;
      # of the root package only the parity cases: its library's tests (a log-mel helper) and the
      # harness's own tests (malformed cases, on the host) never touch a device, and the runner
      # runs neither
      tts-suite.parity) ;;
      tts-suite.*) continue ;;
    esac
    cp "$exe" "$stage.partial/payload/bin/$label"
    strip --strip-all "$stage.partial/payload/bin/$label"
    printf '%s\t%s\n' "$label" "$(sha256sum "$stage.partial/payload/bin/$label" | cut -d' ' -f1)" >>"$stage.partial/payload/manifest.tsv"
  done <<<"$bins"
  cp "$CARGO_TARGET_DIR/release/tts" "$stage.partial/payload/bin/tts"
  strip --strip-all "$stage.partial/payload/bin/tts"
  printf 'tts\t%s\n' "$(sha256sum "$stage.partial/payload/bin/tts" | cut -d' ' -f1)" >>"$stage.partial/payload/manifest.tsv"
  # the kernel sources the binaries embed, for reading a failure there
  cp -r kernels "$stage.partial/payload/kernels"
  git rev-parse HEAD >"$stage.partial/payload/commit.txt"
  git status --porcelain | head -50 >"$stage.partial/payload/dirty.txt" || true
  local raw
  raw=$(du -sb "$stage.partial/payload" | cut -f1)
  tar -C "$stage.partial" -cf - payload | xz -9e -T2 >"$stage.partial/payload.tar.xz"
  rm -rf "$stage.partial/payload"
  cp scripts/gpu-check-run.sh "$stage.partial/run.sh"
  mv "$stage.partial" "$stage"
  local staged tree total
  staged=$(du -sb "$stage" | cut -f1)
  tree=$(tree_bytes)
  total=$((staged + tree))
  echo "staged: .gpu/ $(mib "$staged") MiB ($(mib "$raw") MiB of stripped binaries and sources before compression), $(tar -tJf "$stage/payload.tar.xz" | grep -c '/bin/.') binaries"
  echo "travelling tree: $(mib "$tree") MiB tracked/untracked + $(mib "$staged") MiB staged = $(mib "$total") MiB (limit ${max_total_mib} MiB here, 64 MiB at the device tool)"
  if [ "$staged" -gt $((max_stage_mib * 1048576)) ]; then
    echo "gpu-check prepare: FAILED: the staged folder is over ${max_stage_mib} MiB" >&2
    exit 1
  fi
  if [ "$total" -gt $((max_total_mib * 1048576)) ]; then
    echo "gpu-check prepare: FAILED: tree + staged folder would be over ${max_total_mib} MiB" >&2
    exit 1
  fi
  echo
  echo "On the GPU machine, from the repository root (device tool: carry [\".gpu\"], timeout_s 540):"
  echo "  bash .gpu/run.sh \"\$OUT\""
}

dry_run() {
  [ -f "$stage/run.sh" ] && [ -f "$stage/payload.tar.xz" ] || { echo "gpu-check dry-run: run prepare first" >&2; exit 1; }
  local out
  out=$(mktemp -d)
  echo "== dry run of the staged runner here (no GPU), output in $out" >&2
  # a machine without a GPU: the runner must get as far as saying so, and exit cleanly
  GPU_CHECK_DRY_RUN=1 bash "$stage/run.sh" "$out"
  grep -q '^| environment | no GPU |' "$out/report.md" || {
    echo "gpu-check dry-run: FAILED: the report does not say 'no GPU':" >&2
    cat "$out/report.md" >&2
    exit 1
  }
  grep -q '^| binaries | ok |' "$out/report.md" || {
    echo "gpu-check dry-run: FAILED: the staged binaries did not all check out:" >&2
    cat "$out/report.md" >&2
    exit 1
  }
  echo "gpu-check dry-run: ok (the runner unpacked and checked every binary, then reported no GPU)"
  rm -rf "$out"
  # every section run without a GPU (GPU_CHECK_SIMULATE=1): the runner's later sections are exercised
  # here, and each must report the missing GPU as a failure, never as a pass or a skip
  out=$(mktemp -d)
  echo "== simulated run of every section with no GPU, output in $out" >&2
  GPU_CHECK_SIMULATE=1 GPU_CHECK_BUDGET_S=400 bash "$stage/run.sh" "$out" >/dev/null
  local s bad=0
  for s in kernels t3 s3gen speed; do
    if ! grep -q "^| $s | FAILED |" "$out/report.md"; then
      echo "gpu-check dry-run: FAILED: without a GPU, section $s must report FAILED" >&2
      bad=1
    fi
  done
  grep -q '^| sanitizer | ' "$out/report.md" || { echo "gpu-check dry-run: FAILED: no sanitizer row" >&2; bad=1; }
  n_logs=$(ls "$out" | wc -l)
  if [ "$n_logs" -gt 8 ]; then
    echo "gpu-check dry-run: FAILED: $n_logs files in the output folder (the device tool brings back 8)" >&2
    bad=1
  fi
  if [ $bad -ne 0 ]; then
    cat "$out/report.md" >&2
    exit 1
  fi
  echo "gpu-check dry-run: ok (simulated without a GPU: every section ran and reported the missing GPU as a failure; $n_logs files)"
  rm -rf "$out"
}

case "${1:-}" in
  prepare) prepare ;;
  dry-run) dry_run ;;
  *)
    echo "usage: bash scripts/gpu-check.sh prepare | dry-run   (see docs/gpu-check.md)" >&2
    exit 2
    ;;
esac
