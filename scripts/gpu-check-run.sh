#!/usr/bin/env bash
# The runner of the one-shot device check (docs/gpu-check.md). `scripts/gpu-check.sh prepare` copies it
# to .gpu/run.sh beside the packed binaries; on the GPU machine, from the repository root:
#
#   bash .gpu/run.sh "$OUT"
#
# It needs no Rust and no network: only the carried .gpu/ and the tracked tree (tests/fixtures). It
# finishes in under 8 minutes (GPU_CHECK_BUDGET_S, default 470 s; each step gets what is left) and
# writes to OUT: report.md (a summary table first) and at most 6 logs beside it (the device tool
# brings back at most 8 files). Sections:
#   binaries     unpack, check every binary against its SHA-256 and that it starts
#   environment  nvidia-smi, driver and CUDA versions, which CUDA libraries `tts` loaded from where
#   kernels      every kernel test on Cuda against the Cpu reference, TTS_REQUIRE_CUDA=1 (a skip fails)
#   t3           T3's tests (graph replay == eager, batched == alone, slot replacement) and its parity cases
#   s3gen        S3Gen's tests (batched == alone) and its parity cases
#   sanitizer    compute-sanitizer memcheck and racecheck over kernel tests (or what refused)
#   speed        bench-t3 / bench-s3gen / speak on the synthetic full-size models
set -uo pipefail
out=${1:?usage: bash .gpu/run.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-470}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
report="$out/report.md"
rows=()    # "section|status|detail"
details=() # markdown paragraphs

remaining() { echo $((budget - ($(date +%s) - start))); }
row() { rows+=("$1|$2|$3"); }
detail() { details+=("$1"); }

# step LOG LIMIT_S CMD...: runs CMD with a time limit (at most what is left minus a reserve for the
# report), output appended to LOG; returns CMD's status (124: timed out).
step() {
  local log=$1 limit=$2
  shift 2
  local left=$(($(remaining) - 15))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "### SKIPPED (out of time): $*" >>"$log"
    return 124
  fi
  echo "### $* (limit ${limit}s)" >>"$log"
  local t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "### exit $rc after $(($(date +%s) - t0)) s" >>"$log"
  return $rc
}

write_report() {
  {
    echo "# GPU check report"
    echo
    echo "commit $(cat "$work/payload/commit.txt" 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - start)) s${GPU_CHECK_DRY_RUN:+ (dry run)}"
    echo
    echo "| section | status | detail |"
    echo "|---|---|---|"
    local r
    for r in "${rows[@]}"; do
      IFS='|' read -r a b c <<<"$r"
      echo "| $a | $b | $c |"
    done
    echo
    for r in "${details[@]}"; do
      printf '%s\n\n' "$r"
    done
    echo "Logs beside this report: $(cd "$out" && ls | grep -v '^report.md$' | tr '\n' ' ')"
  } >"$report"
}

# counts of libtest's closing lines in LOG since line FROM: "passed failed ignored"
test_counts() {
  tail -n +"$2" "$1" | awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
    END { printf "%d %d %d", p, f, s }'
}

# runs the test binaries matching GLOB into LOG with TTS_REQUIRE_CUDA=1; sets RUN_OK, RUN_TEXT
run_tests() {
  local log=$1 glob=$2 per=$3 from bin name rc bad=()
  from=$(($(wc -l <"$log" 2>/dev/null || echo 0) + 1))
  for bin in "$work"/payload/bin/$glob; do
    [ -e "$bin" ] || continue
    name=$(basename "$bin")
    [ "$name" = tts-suite.parity ] && continue
    TTS_REQUIRE_CUDA=1 step "$log" "$per" "$bin"
    rc=$?
    [ $rc -ne 0 ] && bad+=("$name (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))")
  done
  read -r p f s <<<"$(test_counts "$log" "$from")"
  RUN_TEXT="$p passed, $f failed, $s ignored"
  if [ ${#bad[@]} -eq 0 ] && [ "$p" -gt 0 ]; then
    RUN_OK=1
  else
    RUN_OK=0
    if [ ${#bad[@]} -gt 6 ]; then
      RUN_TEXT="$RUN_TEXT; failing: ${bad[*]:0:6} and $((${#bad[@]} - 6)) more binaries"
    elif [ ${#bad[@]} -gt 0 ]; then
      RUN_TEXT="$RUN_TEXT; failing: ${bad[*]}"
    fi
    [ "$p" -eq 0 ] && RUN_TEXT="$RUN_TEXT; no test passed"
  fi
  local failing
  failing=$(tail -n +"$from" "$log" | grep -E '^test .* FAILED$|panicked at' | head -20)
  [ -n "$failing" ] && detail "**$glob failures** (first 20 lines):
\`\`\`
$failing
\`\`\`"
}

# ---- binaries
blog="$out/env.log"
: >"$blog"
if ! tar -C "$work" -xJf "$here/payload.tar.xz" 2>>"$blog"; then
  row binaries FAILED "could not unpack $here/payload.tar.xz"
  write_report
  exit 1
fi
bad=()
while IFS=$'\t' read -r name sum; do
  f="$work/payload/bin/$name"
  if [ "$(sha256sum "$f" 2>/dev/null | cut -d' ' -f1)" != "$sum" ]; then
    bad+=("$name: checksum")
    continue
  fi
  case "$name" in
    tts) "$f" --version >>"$blog" 2>&1 || bad+=("$name: does not start") ;;
    tts-suite.parity) [ -x "$f" ] || bad+=("$name: not executable") ;;
    *) "$f" --list >/dev/null 2>>"$blog" || bad+=("$name: does not start") ;;
  esac
done <"$work/payload/manifest.tsv"
nbin=$(wc -l <"$work/payload/manifest.tsv")
if [ ${#bad[@]} -eq 0 ]; then
  row binaries ok "$nbin binaries unpacked, checksums match, each starts"
else
  row binaries FAILED "${bad[*]}"
fi
tts="$work/payload/bin/tts"
export TTS_KERNEL_CACHE="$work/kernel-cache" # compiled once, shared by every binary below
export RUST_BACKTRACE=1

# ---- environment
{
  echo "### machine"
  uname -a
  nproc
  grep -m1 'model name' /proc/cpuinfo
} >>"$blog" 2>&1
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >>"$blog" 2>&1; then
  if [ -z "${GPU_CHECK_SIMULATE:-}" ]; then
    row environment "no GPU" "nvidia-smi $(command -v nvidia-smi >/dev/null 2>&1 && echo 'lists no GPU' || echo 'is not installed'); nothing else can run"
    step "$blog" 60 "$tts" self-check --backend auto
    write_report
    echo "gpu-check: no GPU on this machine; report in $report"
    exit 0
  fi
  # GPU_CHECK_SIMULATE=1 (scripts/gpu-check.sh dry-run): every section runs without a GPU and must
  # report FAILED, which tests this runner and shows that a missing GPU is never taken for a pass
  row environment simulated "no GPU: GPU_CHECK_SIMULATE=1 runs every section anyway; each must fail"
else
  {
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv
    echo "### CUDA libraries on the loader's path"
    ldconfig -p | grep -E 'libcuda\.so|libnvrtc|libcublas' || true
    echo "### toolkit"
    command -v nvcc && nvcc --version | tail -2
    command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null
    echo "### python"
    timeout 30 python3 -c 'import torch, sys; print(sys.executable, torch.__version__, torch.version.cuda)' 2>&1 | tail -1
  } >>"$blog" 2>&1
  gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)
  cuda_ver=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1)
  step "$blog" 90 "$tts" self-check --backend cuda
  sc=$?
  libs=$(grep '^CUDA library:' "$blog" | sed 's/^CUDA library: //' | tr '\n' ';' | sed 's/;$//; s/;/; /g')
  if [ $sc -eq 0 ]; then
    row environment ok "$gpu, $cuda_ver; self-check passed; loaded: ${libs:-none reported}"
  else
    row environment FAILED "$gpu, $cuda_ver; \`tts self-check --backend cuda\` exit $sc (env.log); loaded: ${libs:-none}"
  fi
fi

# ---- kernels
klog="$out/kernels.log"
: >"$klog"
run_tests "$klog" 'tts-kernels.*' 120
row kernels "$([ $RUN_OK = 1 ] && echo ok || echo FAILED)" "$RUN_TEXT"

# ---- parity on Cuda (one run; its T3 and S3Gen cases are reported in their sections)
plog="$out/parity.log"
: >"$plog"
TTS_REQUIRE_CUDA=1 TTS_PARITY_BACKENDS=cuda step "$plog" 150 "$work/payload/bin/tts-suite.parity"
prc=$?
parity_part() { # case-name prefix regex -> PART_TEXT "parity on cuda: N passed, M failed", PART_OK
  local ok bad
  ok=$(grep -E "^parity ok +($1)" "$plog" | grep -c ' cuda ')
  bad=$(grep -E "^parity FAILED +($1)" "$plog" | grep -c .)
  PART_OK=$([ "$bad" -eq 0 ] && [ "$ok" -gt 0 ] && echo 1 || echo 0)
  PART_TEXT="parity on cuda: $ok passed, $bad failed"
}
[ $prc -ne 0 ] && detail "**parity** exited $prc:
\`\`\`
$(grep -E '^parity(:| FAILED)' "$plog" | head -12)
\`\`\`"

# ---- t3 and s3gen: a model crate's tests and its parity cases
# model_section NAME BINARY_GLOB LIMIT_S PARITY_CASE_PREFIXES
model_section() {
  local log="$out/$1.log"
  : >"$log"
  run_tests "$log" "$2" "$3"
  local ok=$RUN_OK text=$RUN_TEXT
  parity_part "$4"
  row "$1" "$([ "$ok" = 1 ] && [ "$PART_OK" = 1 ] && echo ok || echo FAILED)" "tests: $text; $PART_TEXT"
}
model_section t3 'tts-t3.*' 120 't3_'
model_section s3gen 'tts-s3gen.*' 150 's3gen_|hift_'

# ---- speed (synthetic full-size models: random weights, the audio is noise)
splog="$out/speed.log"
: >"$splog"
speed_fail=()
step "$splog" 150 "$tts" bench-t3 --synthetic --backend cuda --batch 1,2,4,8,16,32,64,128 --tokens 64 || speed_fail+=("bench-t3 exit $?")
step "$splog" 100 "$tts" bench-s3gen --synthetic --backend cuda --batch 1,4,16 || speed_fail+=("bench-s3gen exit $?")
step "$splog" 60 "$tts" speak --synthetic --backend cuda --text "The quick brown fox jumps over the lazy dog." --out "$work/speak1.wav" || speed_fail+=("speak x1 exit $?")
texts=()
for i in $(seq 1 16); do texts+=(--text "Sentence number $i of a batch of sixteen, spoken at once."); done
step "$splog" 90 "$tts" speak --synthetic --backend cuda "${texts[@]}" --out "$work/speak16.wav" || speed_fail+=("speak x16 exit $?")
# streaming: time to first audio against the whole utterance (10 s of audio; the audio goes to /dev/null)
step "$splog" 90 bash -c '"$0" speak --synthetic --backend cuda --max-new-tokens 250 "The quick brown fox jumps over the lazy dog, then rests." -o - >/dev/null' "$tts" || speed_fail+=("speak stream exit $?")
figures=$(grep -E '^(bench-t3|bench-t3-setup|bench-s3gen|speak|speak-stream) ' "$splog")
if [ ${#speed_fail[@]} -eq 0 ] && [ -n "$figures" ]; then
  row speed ok "$(echo "$figures" | grep -c .) measurements (below)"
else
  row speed FAILED "${speed_fail[*]:-no measurement lines}"
fi
[ -n "$figures" ] && detail "**speed** (synthetic full-size weights: random, the audio is noise; machine-readable lines from speed.log):
\`\`\`
$figures
\`\`\`"

# ---- sanitizer (last: slow, and it must not eat the time of the sections above)
zlog="$out/sanitizer.log"
: >"$zlog"
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -z "$san" ]; then
  row sanitizer "not run" "compute-sanitizer not found"
else
  san_res=()
  san_bad=0
  # the small per-family kernel tests, the attention and fused decode tests, the sampler
  small="emu_rmsnorm emu_layernorm emu_embedding emu_linear emu_swiglu emu_elementwise emu_rope"
  runs=""
  for t in $small emu_attention emu_attention_decode emu_gemv; do runs="$runs memcheck:$t"; done
  for t in $small emu_attention emu_sampling; do runs="$runs racecheck:$t"; done
  for tool_bin in $runs; do
    tool=${tool_bin%%:*}
    bin="$work/payload/bin/tts-kernels.${tool_bin#*:}"
    if [ ! -e "$bin" ]; then
      san_res+=("$tool ${tool_bin#*:}: MISSING (no such test binary in the payload)")
      san_bad=1
      continue
    fi
    from=$(($(wc -l <"$zlog") + 1))
    TTS_REQUIRE_CUDA=1 step "$zlog" 75 "$san" --tool "$tool" --error-exitcode 99 "$bin"
    rc=$?
    summary=$(tail -n +"$from" "$zlog" | grep -o 'ERROR SUMMARY: [0-9]* error[s]*\|RACECHECK SUMMARY: [0-9]* hazard[s]*[^|]*' | tail -1)
    if tail -n +"$from" "$zlog" | grep -qiE 'device not supported|not supported on this|unable to (initialize|attach)'; then
      san_res+=("$tool ${tool_bin#*:}: REFUSED ($(tail -n +"$from" "$zlog" | grep -iE -m1 'not supported|unable to' | cut -c1-120))")
      san_bad=1
    elif [ $rc -eq 0 ]; then
      san_res+=("$tool ${tool_bin#*:}: clean${summary:+ ($summary)}")
    else
      san_res+=("$tool ${tool_bin#*:}: exit $rc${summary:+ ($summary)}")
      san_bad=1
    fi
  done
  row sanitizer "$([ $san_bad = 0 ] && echo ok || echo FAILED)" "$(IFS=';'; echo "${san_res[*]}" | sed 's/;/; /g')"
fi

write_report
echo "gpu-check: done in $(($(date +%s) - start)) s; report in $report"
cat "$report"
