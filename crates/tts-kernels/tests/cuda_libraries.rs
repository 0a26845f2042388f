//! The CUDA libraries are found and used where users have them, CUDA 12 and CUDA 13, without a GPU:
//! the real NVRTC wheels that `scripts/cuda-tools.sh` installs (12.9 in the CUDA 12 wheel layout
//! `nvidia/cuda_nvrtc/lib`, 13.0 in the CUDA 13 layout `nvidia/cu13/lib`, as PyTorch's cu13 builds
//! install it) are found through the production search (`cuda::libs`), loaded, and compile every GPU
//! kernel for sm_80 and sm_90 without spills. (The search order itself is tested on fake library
//! folders in `cuda/libs.rs`.)
//!
//! Needs the two NVRTC installs: `TTS_NVRTC_WHEELS` names the folder holding them (scripts/test.sh sets
//! it to `.cache`); without it these tests are skipped with a message, unless `TTS_REQUIRE_NVRTC=1`
//! (set by scripts/test.sh), which makes that a failure.
use std::path::PathBuf;

use tts_kernels::cuda::libs::SearchEnv;
use tts_kernels::cuda::nvrtc::{self, Nvrtc};

/// The folder with `cudatk/` (NVRTC 12.9) and `cudatk13/` (NVRTC 13.0), or None (skip).
fn wheels_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("TTS_NVRTC_WHEELS") {
        Some(d) => Some(PathBuf::from(d)),
        None if std::env::var("TTS_REQUIRE_NVRTC").is_ok_and(|v| v == "1") => {
            panic!("{test}: TTS_REQUIRE_NVRTC=1 but TTS_NVRTC_WHEELS is not set (scripts/test.sh sets it)")
        }
        None => {
            eprintln!("{test}: skipped (TTS_NVRTC_WHEELS not set; scripts/test.sh sets it)");
            None
        }
    }
}

/// A machine whose only NVRTC is a wheel of CUDA `major` in the site-packages folder `site`.
fn env_with_site(site: PathBuf) -> SearchEnv {
    SearchEnv { python_sites: vec![site], ..SearchEnv::default() }
}

#[test]
fn nvrtc_13_in_the_cu13_wheel_layout_is_found_and_compiles_every_kernel() {
    let Some(w) = wheels_or_skip("nvrtc 13") else { return };
    let site = w.join("cudatk13");
    let want = site.join("nvidia/cu13/lib/libnvrtc.so.13");
    assert!(want.is_file(), "{} is missing (scripts/cuda-tools.sh installs it)", want.display());
    let n = Nvrtc::find(&env_with_site(site), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.version().0, 13, "{n:?}");
    assert_eq!(n.path().canonicalize().unwrap(), want.canonicalize().unwrap(), "{n:?}");
    let mut kernels = 0;
    for file in tts_kernels::gpu_kernel_files() {
        for arch in ["sm_80", "sm_90"] {
            let c = n.compile(file.name, file.source, arch, true).unwrap_or_else(|e| panic!("NVRTC 13: {e}"));
            assert!(c.cubin.len() > 64, "{}: empty CUBIN", file.name);
            let res = nvrtc::parse_resources(&c.log);
            for &k in file.entry_points {
                let r = res.iter().find(|r| r.kernel == k).unwrap_or_else(|| panic!("no ptxas report for {k} ({arch})"));
                assert_eq!(r.gate_violation(), None, "NVRTC 13, {arch}, {}", file.name);
                kernels += 1;
            }
        }
    }
    assert!(kernels >= 40, "only {kernels} kernels compiled");
    eprintln!("NVRTC {}.{} ({}): {kernels} kernel compilations, no spills", n.version().0, n.version().1, n.path().display());
}

#[test]
fn nvrtc_12_in_the_cuda12_wheel_layout_is_found_when_the_driver_allows_only_cuda_12() {
    let Some(w) = wheels_or_skip("nvrtc 12") else { return };
    // both majors installed; a driver that supports CUDA 12 only must get 12
    let env = SearchEnv { python_sites: vec![w.join("cudatk13"), w.join("cudatk")], ..SearchEnv::default() };
    let n = Nvrtc::find(&env, Some(12)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.version().0, 12, "{n:?}");
    let c = n.compile("probe.cu", "extern \"C\" __global__ void probe(float* y) { y[threadIdx.x] = 1.0f; }", "sm_80", false);
    assert!(c.is_ok_and(|c| !c.cubin.is_empty()));
    // and with no driver limit, 13 comes first
    let n13 = Nvrtc::find(&env, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n13.version().0, 13, "{n13:?}");
}

#[test]
fn no_nvrtc_anywhere_is_a_clear_error_listing_the_places_tried() {
    let Some(w) = wheels_or_skip("no nvrtc") else { return };
    // a site folder without NVIDIA wheels, and the driver limited to CUDA 11: nothing qualifies
    let e = Nvrtc::find(&env_with_site(w), Some(11)).unwrap_err();
    assert!(e.contains("libnvrtc.so.13") && e.contains("libnvrtc.so.12"), "{e}");
    assert!(e.contains("newer than the driver supports"), "{e}");
    assert!(e.contains("TTS_CUDA_LIB_DIR"), "{e}");
}
