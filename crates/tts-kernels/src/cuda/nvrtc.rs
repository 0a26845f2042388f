//! Kernel compilation through NVRTC: one `.cu` file to a CUBIN for one `sm_XY` target.
//!
//! This is the production path of the Cuda backend (called at start-up, results cached on disk) and
//! the path the NVRTC gate test drives for sm_80 and sm_90 on GPU-less machines: NVRTC runs ptxas
//! in-process, and `--ptxas-options=-v` puts the register, spill and shared-memory report in the log.
use std::ffi::CString;

use cudarc::nvrtc::{result, sys};

use crate::error::{Error, Result};

/// Options passed to NVRTC for every kernel file (besides the architecture).
pub const BASE_OPTIONS: &[&str] =
    &["--std=c++17", "--ptxas-options=--warn-on-spills", "--ptxas-options=--warn-on-local-memory-usage"];

/// Whether libnvrtc can be loaded (cudarc panics on first use when it cannot, so always ask first).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(Error::CudaUnavailable(missing_nvrtc_message()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::CudaUnavailable(format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

pub(crate) fn missing_nvrtc_message() -> String {
    "libnvrtc.so.12 (the CUDA 12 runtime compiler) was not found on the library path; install the CUDA \
     toolkit or `pip install nvidia-cuda-nvrtc-cu12` and put its lib directory on LD_LIBRARY_PATH"
        .to_string()
}

/// A compiled kernel file.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// The NVRTC/ptxas log (with `report`: per-kernel registers, spills, shared memory).
    pub log: String,
}

/// Per-kernel resource usage parsed from a ptxas `-v` report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub registers: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub shared_bytes: u32,
    pub barriers: u32,
}

/// The NVRTC options for `arch` (e.g. "sm_90").
pub fn options(arch: &str, report: bool) -> Vec<String> {
    let mut o: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
    o.push(format!("--gpu-architecture={arch}"));
    if report {
        o.push("--ptxas-options=-v".to_string());
    }
    o
}

/// Compiles one kernel source (already amalgamated) to a CUBIN for `arch`.
/// `report` adds ptxas' resource report to the log. Errors carry the NVRTC log.
pub fn compile(file: &str, source: &str, arch: &str, report: bool) -> Result<Compiled> {
    if !nvrtc_available() {
        return Err(Error::CudaUnavailable(missing_nvrtc_message()));
    }
    let src = CString::new(source).map_err(|_| Error::invalid("nvrtc", format!("kernels/{file} contains a NUL byte")))?;
    let name = CString::new(file).map_err(|_| Error::invalid("nvrtc", "file name with a NUL byte"))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| Error::Compile {
        file: file.into(),
        arch: arch.into(),
        log: format!("nvrtcCreateProgram: {e:?}"),
    })?;
    let opts = options(arch, report);
    // SAFETY: prog is a live program until destroy_program below.
    let outcome = unsafe { result::compile_program(prog, &opts) };
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| {
            let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .unwrap_or_default();
    let cubin = outcome.map_err(|e| format!("{e:?}")).and_then(|()| unsafe { get_cubin(prog) });
    // SAFETY: destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    match cubin {
        Ok(cubin) => Ok(Compiled { cubin, log }),
        Err(e) => Err(Error::Compile { file: file.into(), arch: arch.into(), log: format!("{e}\n{log}") }),
    }
}

/// # Safety
/// `prog` must be a successfully compiled, live program.
unsafe fn get_cubin(prog: sys::nvrtcProgram) -> std::result::Result<Vec<u8>, String> {
    let mut n = 0usize;
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut n) }.result().map_err(|e| format!("nvrtcGetCUBINSize: {e:?}"))?;
    let mut buf = vec![0u8; n];
    unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _) }.result().map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))?;
    if buf.is_empty() {
        return Err("NVRTC returned an empty CUBIN (was a virtual compute_XY architecture given?)".into());
    }
    Ok(buf)
}

impl KernelResources {
    /// Why this kernel fails the gate: any spill or local-memory use (a stack frame), or a report
    /// that could not be read. None when it passes.
    pub fn gate_violation(&self) -> Option<String> {
        if [self.registers, self.stack_frame_bytes, self.spill_store_bytes, self.spill_load_bytes].contains(&u32::MAX) {
            return Some(format!("{}: unreadable ptxas report", self.kernel));
        }
        if self.stack_frame_bytes > 0 || self.spill_store_bytes > 0 || self.spill_load_bytes > 0 {
            return Some(format!(
                "{}: {} bytes stack frame (local memory), {} bytes spill stores, {} bytes spill loads",
                self.kernel, self.stack_frame_bytes, self.spill_store_bytes, self.spill_load_bytes
            ));
        }
        None
    }
}

/// Parses the ptxas `-v` lines of an NVRTC log into one entry per kernel.
pub fn parse_resources(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let num_before = |s: &str, unit: &str| -> Option<u32> {
        let i = s.find(unit)?;
        s[..i].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        let l = line.trim();
        if let Some(rest) = l.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelResources { kernel: name, ..Default::default() });
        } else if let Some(k) = out.last_mut() {
            if l.contains("bytes stack frame") {
                k.stack_frame_bytes = num_before(l, "bytes stack frame").unwrap_or(u32::MAX);
                k.spill_store_bytes = num_before(l, "bytes spill stores").unwrap_or(u32::MAX);
                k.spill_load_bytes = num_before(l, "bytes spill loads").unwrap_or(u32::MAX);
            } else if l.contains("Used") && l.contains("registers") {
                k.registers = num_before(l, "registers").unwrap_or(u32::MAX);
                k.barriers = num_before(l, "barriers").unwrap_or(0);
                k.shared_bytes = num_before(l, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'add_rmsnorm_bf16' for 'sm_90'\n\
ptxas info    : Function properties for add_rmsnorm_bf16\n\
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'embed_pos_bf16' for 'sm_90'\n\
ptxas info    : Function properties for embed_pos_bf16\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 12 registers, 416 bytes cmem[0]\n";
        let r = parse_resources(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "add_rmsnorm_bf16".into(),
                registers: 18,
                stack_frame_bytes: 8,
                spill_store_bytes: 4,
                spill_load_bytes: 4,
                shared_bytes: 128,
                barriers: 1
            }
        );
        assert_eq!(r[1].registers, 12);
        assert_eq!(r[1].shared_bytes, 0);
        assert_eq!(r[1].stack_frame_bytes, 0);
        assert!(r[0].gate_violation().unwrap().contains("8 bytes stack frame"));
        assert_eq!(r[1].gate_violation(), None);
    }
}
