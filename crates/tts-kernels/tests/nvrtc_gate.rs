//! The NVRTC gate: every GPU kernel file compiles through the production code path
//! (`tts_kernels::cuda::nvrtc::compile`, the function the Cuda backend calls at start-up) to a CUBIN
//! for sm_80 and sm_90, with no spills and no local memory. Registers and shared memory per kernel
//! are printed to `target/tmp/nvrtc-gate-report.txt` (scripts/test.sh shows it).
//!
//! Needs libnvrtc.so.12 on the library path (scripts/cuda-tools.sh installs it from PyPI). Without
//! it the gate is skipped, unless `TTS_REQUIRE_NVRTC=1` (set by scripts/test.sh), which makes it fail.
use std::fmt::Write as _;

use tts_kernels::cuda::nvrtc::{self, KernelResources};

const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_available() {
        return true;
    }
    if std::env::var("TTS_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!(
            "TTS_REQUIRE_NVRTC=1 but libnvrtc.so.12 cannot be loaded (run scripts/cuda-tools.sh and put its output on LD_LIBRARY_PATH)"
        );
    }
    eprintln!("nvrtc gate: skipped (libnvrtc.so.12 not found)");
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills_or_local_memory() {
    if !nvrtc_or_skip() {
        return;
    }
    let (maj, min) = nvrtc::nvrtc_version().unwrap();
    let mut report = format!("NVRTC gate (NVRTC {maj}.{min}; options {:?})\n", nvrtc::BASE_OPTIONS);
    let _ = writeln!(
        report,
        "{:<6} {:<18} {:<26} {:>5} {:>10} {:>11} {:>11} {:>11}",
        "arch", "file", "kernel", "regs", "smem B", "stack B", "spill st B", "spill ld B"
    );
    let mut violations = Vec::new();
    let mut kernels = 0;
    for file in tts_kernels::gpu_kernel_files() {
        for arch in ARCHES {
            let compiled = nvrtc::compile(file.name, file.source, arch, true).unwrap_or_else(|e| panic!("{e}"));
            assert!(!compiled.cubin.is_empty());
            let res = nvrtc::parse_resources(&compiled.log);
            for &k in file.entry_points {
                let r: KernelResources = res
                    .iter()
                    .find(|r| r.kernel == k)
                    .cloned()
                    .unwrap_or_else(|| panic!("no ptxas report for {k} ({arch}) in the log:\n{}", compiled.log));
                kernels += 1;
                let _ = writeln!(
                    report,
                    "{arch:<6} {:<18} {k:<26} {:>5} {:>10} {:>11} {:>11} {:>11}",
                    file.name, r.registers, r.shared_bytes, r.stack_frame_bytes, r.spill_store_bytes, r.spill_load_bytes
                );
                if let Some(v) = r.gate_violation() {
                    violations.push(format!("{arch}: {v}"));
                }
            }
            if compiled.log.contains("warning") {
                violations.push(format!("{arch}: {}: compiler warnings:\n{}", file.name, compiled.log));
            }
        }
    }
    let _ = writeln!(report, "{kernels} kernel compilations, {} violations", violations.len());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvrtc-gate-report.txt");
    std::fs::write(&path, &report).unwrap();
    eprintln!("{report}");
    assert!(kernels > 0, "no kernels found");
    assert!(violations.is_empty(), "NVRTC gate failed:\n{}\n{report}", violations.join("\n"));
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
