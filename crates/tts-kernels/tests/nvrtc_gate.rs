//! The NVRTC gate: every GPU kernel file compiles through the production code path
//! (`tts_kernels::cuda::nvrtc::compile`, the function the Cuda backend calls at start-up) to a CUBIN
//! for sm_80 and sm_90, with no spills and no local memory. Registers, shared memory and read-only
//! global loads per kernel are printed to `target/tmp/nvrtc-gate-report.txt` (scripts/test.sh shows it).
//!
//! Kernels that read memory they also write in the same launch (in place, or cache rows they have
//! just written) carry a marker line `// nvrtc-gate: reads-own-writes ...` in their .cu file,
//! directly above the entry point (it covers that entry point and the entry-point declarations on
//! the lines right after it). PTX's non-coherent load (`ld.global.nc`, SASS `LDG.E...CONSTANT`) is
//! only valid on data that is read-only for the whole kernel, and NVVM emits it wherever it can
//! prove a pointer read-only (a `const T* __restrict__` is enough), so for marked kernels the gate
//! disassembles each CUBIN with nvdisasm and fails on any such load.
//!
//! Needs libnvrtc.so.12 on the library path (scripts/cuda-tools.sh installs it from PyPI) and, for
//! the SASS check, nvdisasm at `$TTS_NVDISASM` (`bash scripts/cuda-tools.sh nvdisasm` installs it).
//! Without them the gate is skipped, unless `TTS_REQUIRE_NVRTC=1` (set by scripts/test.sh), which
//! makes either missing tool a failure.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tts_kernels::cuda::nvrtc::{self, KernelResources};

const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

/// The marker of a kernel that reads what it writes (see the module docs).
const READS_OWN_WRITES: &str = "nvrtc-gate: reads-own-writes";

fn required() -> bool {
    std::env::var("TTS_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_available() {
        return true;
    }
    if required() {
        panic!(
            "TTS_REQUIRE_NVRTC=1 but libnvrtc.so.12 cannot be loaded (run scripts/cuda-tools.sh and put its output on LD_LIBRARY_PATH)"
        );
    }
    eprintln!("nvrtc gate: skipped (libnvrtc.so.12 not found)");
    false
}

/// nvdisasm from `$TTS_NVDISASM`, or None (the SASS check is skipped) when it is not set; a set path
/// that is not a file, or a missing tool under `TTS_REQUIRE_NVRTC=1`, panics.
fn nvdisasm_or_skip() -> Option<PathBuf> {
    match std::env::var_os("TTS_NVDISASM") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "TTS_NVDISASM={} is not a file (run `bash scripts/cuda-tools.sh nvdisasm`)", p.display());
            Some(p)
        }
        None if required() => {
            panic!("TTS_REQUIRE_NVRTC=1 but TTS_NVDISASM is not set (export TTS_NVDISASM=$(bash scripts/cuda-tools.sh nvdisasm))")
        }
        None => {
            eprintln!("nvrtc gate: SASS check skipped (TTS_NVDISASM not set)");
            None
        }
    }
}

/// The kernel name of an `extern "C" __global__ void [__launch_bounds__(..)] name(` line.
fn entry_name(line: &str) -> Option<String> {
    let rest = line.split("extern \"C\" __global__").nth(1)?;
    let mut s = rest.trim_start().strip_prefix("void")?.trim_start();
    if let Some(lb) = s.strip_prefix("__launch_bounds__") {
        s = lb[lb.find(')')? + 1..].trim_start();
    }
    let name: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// The entry points of `source` marked as reading what they write: for each marker line (a `//`
/// comment that starts with the marker), the entry-point declarations on the lines right after it. A marker not directly above an entry point
/// is an error (it would protect nothing).
fn reads_own_writes(file: &str, source: &str) -> Result<BTreeSet<String>, String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut marked = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        let is_marker = l.trim_start().strip_prefix("//").is_some_and(|c| c.trim_start().starts_with(READS_OWN_WRITES));
        if !is_marker {
            continue;
        }
        let covered: Vec<String> = lines[i + 1..].iter().map_while(|l| entry_name(l)).collect();
        if covered.is_empty() {
            return Err(format!(
                "{file}:{}: `{READS_OWN_WRITES}` is not directly above an extern \"C\" __global__ entry point",
                i + 1
            ));
        }
        marked.extend(covered);
    }
    Ok(marked)
}

/// Whether a SASS opcode is a global load through the read-only / non-coherent path
/// (`LDG.E.CONSTANT`, `LDG.E.128.CONSTANT`, `LDG.E.U16.CONSTANT` on sm_80/sm_90; `.NC`/`.CI` in other
/// generations' spelling).
fn is_read_only_load(opcode: &str) -> bool {
    let mut parts = opcode.split('.');
    parts.next() == Some("LDG") && parts.any(|m| matches!(m, "CONSTANT" | "NC" | "CI"))
}

/// Global loads per function of an `nvdisasm -c` listing: (all LDG, the read-only ones as text).
fn global_loads(sass: &str) -> BTreeMap<String, (usize, Vec<String>)> {
    let mut out: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    let mut func: Option<String> = None;
    for line in sass.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix(".text.").and_then(|n| n.strip_suffix(':')) {
            func = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        let Some(f) = &func else { continue };
        // `/*0090*/   @!P2 LDG.E.128 R20, desc[UR12][R16.64] ;`
        let Some(code) = t.strip_prefix("/*").and_then(|r| r.split_once("*/")).map(|(_, c)| c) else { continue };
        let Some(opcode) = code.split_whitespace().find(|w| !w.starts_with('@')) else { continue };
        if opcode == "LDG" || opcode.starts_with("LDG.") {
            let e = out.get_mut(f).expect("inserted at .text");
            e.0 += 1;
            if is_read_only_load(opcode) {
                e.1.push(code.trim().trim_end_matches(';').trim().to_string());
            }
        }
    }
    out
}

/// Disassembles a CUBIN with `nvdisasm -c` (the file goes to `target/tmp/sass/<tag>.cubin`).
fn disassemble(nvdisasm: &Path, cubin: &[u8], tag: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sass");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.cubin"));
    std::fs::write(&path, cubin).unwrap();
    let out = std::process::Command::new(nvdisasm)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", nvdisasm.display()));
    assert!(out.status.success(), "nvdisasm failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why the marked kernels of one disassembly fail the gate (empty when they pass). A marked kernel
/// missing from the listing, or one without any global load, is an error too: the check would
/// otherwise pass on a listing it failed to read.
fn sass_violations(arch: &str, marked: &BTreeSet<String>, loads: &BTreeMap<String, (usize, Vec<String>)>) -> Vec<String> {
    let mut v = Vec::new();
    for k in marked {
        match loads.get(k) {
            None => v.push(format!("{arch}: {k}: not found in the disassembly")),
            Some((0, _)) => v.push(format!("{arch}: {k}: no global load found in its SASS (unreadable listing?)")),
            Some((_, ro)) if !ro.is_empty() => v.push(format!(
                "{arch}: {k} reads what it writes but has {} read-only (non-coherent) global loads: {}",
                ro.len(),
                ro.join("; ")
            )),
            Some(_) => {}
        }
    }
    v
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills_or_local_memory() {
    if !nvrtc_or_skip() {
        return;
    }
    let nvdisasm = nvdisasm_or_skip();
    let (maj, min) = nvrtc::nvrtc_version().unwrap();
    let mut report = format!("NVRTC gate (NVRTC {maj}.{min}; options {:?})\n", nvrtc::BASE_OPTIONS);
    let _ = writeln!(
        report,
        "{:<6} {:<20} {:<28} {:>5} {:>10} {:>11} {:>11} {:>11} {:>6}",
        "arch", "file", "kernel", "regs", "smem B", "stack B", "spill st B", "spill ld B", "ro ld"
    );
    let mut violations = Vec::new();
    let (mut kernels, mut checked) = (0, 0);
    for file in tts_kernels::gpu_kernel_files() {
        let marked = reads_own_writes(file.name, file.source).unwrap_or_else(|e| panic!("{e}"));
        if let Some(k) = marked.iter().find(|k| !file.entry_points.contains(&k.as_str())) {
            panic!("{}: `{READS_OWN_WRITES}` marks {k}, which is not one of its entry points", file.name);
        }
        for arch in ARCHES {
            let compiled = nvrtc::compile(file.name, file.source, arch, true).unwrap_or_else(|e| panic!("{e}"));
            assert!(!compiled.cubin.is_empty());
            let res = nvrtc::parse_resources(&compiled.log);
            let loads = nvdisasm.as_ref().map(|t| {
                let tag = format!("{}-{arch}", file.name.trim_end_matches(".cu"));
                global_loads(&disassemble(t, &compiled.cubin, &tag))
            });
            for &k in file.entry_points {
                let r: KernelResources = res
                    .iter()
                    .find(|r| r.kernel == k)
                    .cloned()
                    .unwrap_or_else(|| panic!("no ptxas report for {k} ({arch}) in the log:\n{}", compiled.log));
                kernels += 1;
                let ro = match loads.as_ref().and_then(|l| l.get(k)) {
                    Some((_, ro)) => ro.len().to_string(),
                    None => "-".to_string(),
                };
                let mark = if marked.contains(k) { "*" } else { "" };
                let _ = writeln!(
                    report,
                    "{arch:<6} {:<20} {:<28} {:>5} {:>10} {:>11} {:>11} {:>11} {:>6}",
                    file.name,
                    format!("{k}{mark}"),
                    r.registers,
                    r.shared_bytes,
                    r.stack_frame_bytes,
                    r.spill_store_bytes,
                    r.spill_load_bytes,
                    ro
                );
                if let Some(v) = r.gate_violation() {
                    violations.push(format!("{arch}: {v}"));
                }
            }
            if let Some(l) = &loads {
                checked += marked.len();
                violations.extend(sass_violations(arch, &marked, l));
            }
            if compiled.log.contains("warning") {
                violations.push(format!("{arch}: {}: compiler warnings:\n{}", file.name, compiled.log));
            }
        }
    }
    let _ = writeln!(
        report,
        "{kernels} kernel compilations, {checked} SASS checks of kernels marked `{READS_OWN_WRITES}` (*), {} violations",
        violations.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvrtc-gate-report.txt");
    std::fs::write(&path, &report).unwrap();
    eprintln!("{report}");
    assert!(kernels > 0, "no kernels found");
    assert!(nvdisasm.is_none() || checked > 0, "no kernel is marked `{READS_OWN_WRITES}`: the SASS check checked nothing");
    assert!(violations.is_empty(), "NVRTC gate failed:\n{}\n{report}", violations.join("\n"));
}

#[test]
fn kernels_that_read_what_they_write_are_marked() {
    // The markers the SASS check relies on parse, and the fused decode attention (which reads the
    // KV-cache rows it writes: issue 12 §4.4) carries one on each of its entry points.
    let mut all = BTreeSet::new();
    for file in tts_kernels::gpu_kernel_files() {
        all.extend(reads_own_writes(file.name, file.source).unwrap_or_else(|e| panic!("{e}")));
    }
    for d in [32, 64, 96, 128, 160, 192, 224, 256] {
        assert!(
            all.contains(&format!("rope_attention_decode_d{d}_bf16")),
            "rope_attention_decode_d{d}_bf16 is not marked: {all:?}"
        );
    }
    for k in ["add_rmsnorm_bf16", "gemv_add_residual_f32", "advance_decode_state", "sample_tokens_f32", "pw_cfm_euler_cfg"] {
        assert!(all.contains(k), "{k} is not marked: {all:?}");
    }
    for k in ["attention_cached_d64_bf16", "gemv_rmsnorm_bf16", "rope_kv_write_bf16"] {
        assert!(!all.contains(k), "{k} writes only what it does not read, yet is marked");
    }
    // a marker must sit directly above an entry point
    let stray = "// nvrtc-gate: reads-own-writes\n\nextern \"C\" __global__ void k(float* y) { y[0] += 1.0f; }\n";
    assert!(reads_own_writes("stray.cu", stray).unwrap_err().contains("stray.cu:1"));
    let group = "// nvrtc-gate: reads-own-writes\nextern \"C\" __global__ void __launch_bounds__(32) a(P p) { f(p); }\n\
                 extern \"C\" __global__ void b(P p) { f(p); }\nextern \"C\" __global__ void c(P p) { f(p); }\n";
    let g = reads_own_writes("group.cu", group).unwrap();
    assert_eq!(g.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    let body = "// nvrtc-gate: reads-own-writes\nextern \"C\" __global__ void a(P p) {\n    f(p);\n}\n\
                extern \"C\" __global__ void b(P p) { f(p); }\n";
    assert_eq!(reads_own_writes("body.cu", body).unwrap().into_iter().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn the_gate_catches_a_read_only_load_in_a_kernel_that_reads_what_it_writes() {
    if !nvrtc_or_skip() {
        return;
    }
    let Some(nvdisasm) = nvdisasm_or_skip() else { return };
    // Both probes write y and read it back. `reads` takes x as `const float* __restrict__`, so NVVM
    // loads x through the read-only path, which the gate must flag in a kernel marked as reading
    // what it writes; `coherent` is the same kernel without __restrict__ and must pass.
    let src = r#"
// nvrtc-gate: reads-own-writes (probe)
extern "C" __global__ void reads(float* y, const float* __restrict__ x) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i] * 2.0f;
    __syncthreads();
    y[i + 1] += x[i + 1];
}
// nvrtc-gate: reads-own-writes (probe)
extern "C" __global__ void coherent(float* y, const float* x) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i] * 2.0f;
    __syncthreads();
    y[i + 1] += x[i + 1];
}
"#;
    let marked = reads_own_writes("probe.cu", src).unwrap();
    assert_eq!(marked.iter().map(String::as_str).collect::<Vec<_>>(), ["coherent", "reads"]);
    for arch in ARCHES {
        let c = nvrtc::compile("probe.cu", src, arch, false).unwrap();
        let sass = disassemble(&nvdisasm, &c.cubin, &format!("probe-{arch}"));
        let loads = global_loads(&sass);
        let v = sass_violations(arch, &marked, &loads);
        assert_eq!(v.len(), 1, "{arch}: {v:?}\n{sass}");
        assert!(v[0].contains("reads reads what it writes") && v[0].contains("CONSTANT"), "{arch}: {v:?}");
        assert!(loads["coherent"].0 > 0 && loads["coherent"].1.is_empty(), "{arch}: {loads:?}");
    }
    // the opcode spellings of the read-only path
    for op in ["LDG.E.CONSTANT", "LDG.E.128.CONSTANT", "LDG.E.U16.CONSTANT", "LDG.E.NC", "LDG.E.CI.64"] {
        assert!(is_read_only_load(op), "{op}");
    }
    for op in ["LDG.E", "LDG.E.128", "LDG.E.U16", "LDS.128", "LDGSTS.E.BYPASS.128", "STG.E"] {
        assert!(!is_read_only_load(op), "{op}");
    }
}

#[test]
fn the_gate_catches_local_memory() {
    if !nvrtc_or_skip() {
        return;
    }
    // a dynamically indexed local array cannot live in registers: it takes a stack frame
    let src = r#"
extern "C" __global__ void uses_local_memory(float* y, const int* idx) {
    float big[256];
    for (int i = 0; i < 256; i++) big[i] = y[i] * 2.0f;
    y[threadIdx.x] = big[idx[threadIdx.x] & 255];
}
"#;
    let c = nvrtc::compile("probe.cu", src, "sm_90", true).unwrap();
    let r = nvrtc::parse_resources(&c.log);
    assert_eq!(r.len(), 1, "{}", c.log);
    assert!(r[0].gate_violation().is_some(), "local memory went unnoticed: {r:?}\n{}", c.log);
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let e = nvrtc::compile("broken.cu", "extern \"C\" __global__ void k() { undefined_fn(); }", "sm_80", false).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("broken.cu") && msg.contains("undefined_fn"), "{msg}");
}
