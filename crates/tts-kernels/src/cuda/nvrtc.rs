//! Kernel compilation through NVRTC: one `.cu` file to a CUBIN for one `sm_XY` target.
//!
//! This is the production path of the Cuda backend (called at start-up, results cached on disk) and
//! the path the NVRTC gate test drives for sm_80 and sm_90 on GPU-less machines: NVRTC runs ptxas
//! in-process, and `--ptxas-options=-v` puts the register, spill and shared-memory report in the log.
//!
//! NVRTC is loaded at run time from CUDA 12 or 13 (`libnvrtc.so.12` / `.13`, see [`super::libs`] for
//! where it is searched); [`Nvrtc::find`] searches a described machine instead
//! (tests/cuda_libraries.rs compiles every kernel with CUDA 12 and 13).
use std::ffi::{CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::libs::{self, LoadedLibrary, NVRTC, SearchEnv};
use crate::error::{Error, Result};

/// Options passed to NVRTC for every kernel file (besides the architecture).
pub const BASE_OPTIONS: &[&str] =
    &["--std=c++17", "--ptxas-options=--warn-on-spills", "--ptxas-options=--warn-on-local-memory-usage"];

type Program = *mut c_void;

/// The NVRTC entry points used (same C signatures in CUDA 12 and 13).
struct Api {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
    create_program: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile_program: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int,
    get_program_log_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    get_program_log: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    get_cubin_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    get_cubin: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    destroy_program: unsafe extern "C" fn(*mut Program) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// A loaded NVRTC library.
pub struct Nvrtc {
    api: Api,
    version: (i32, i32),
    path: PathBuf,
    origin: String,
    // keeps the entry points above valid
    _lib: libloading::Library,
    // libnvrtc-builtins, preloaded from NVRTC's folder
    _companions: Vec<libloading::Library>,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nvrtc({}.{} from {})", self.version.0, self.version.1, self.path.display())
    }
}

/// Reads the entry points of a loaded library and its version.
fn bind(lib: &libloading::Library) -> std::result::Result<(Api, (i32, i32)), String> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol has the C signature of the field it is assigned to (nvrtc.h, CUDA 12
            // and 13); the pointer stays valid while `lib` is loaded, and `Nvrtc` keeps it loaded.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| format!("missing {}: {e}", $name))?
        };
    }
    let api = Api {
        version: sym!("nvrtcVersion"),
        create_program: sym!("nvrtcCreateProgram"),
        compile_program: sym!("nvrtcCompileProgram"),
        get_program_log_size: sym!("nvrtcGetProgramLogSize"),
        get_program_log: sym!("nvrtcGetProgramLog"),
        get_cubin_size: sym!("nvrtcGetCUBINSize"),
        get_cubin: sym!("nvrtcGetCUBIN"),
        destroy_program: sym!("nvrtcDestroyProgram"),
        get_error_string: sym!("nvrtcGetErrorString"),
    };
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    let rc = unsafe { (api.version)(&mut major, &mut minor) };
    if rc != 0 || major <= 0 {
        return Err(format!("nvrtcVersion failed (code {rc})"));
    }
    Ok((api, (major, minor)))
}

impl Nvrtc {
    /// The process-wide NVRTC, found as [`super::libs`] describes (once; the outcome is kept).
    pub fn global() -> Result<&'static Nvrtc> {
        static GLOBAL: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let n = Nvrtc::find(&SearchEnv::from_process(), libs::driver_cuda_major())?;
                libs::note_loaded(LoadedLibrary {
                    name: "libnvrtc".into(),
                    path: n.path.clone(),
                    version: Some(format!("{}.{}", n.version.0, n.version.1)),
                    origin: n.origin.clone(),
                });
                Ok(n)
            })
            .as_ref()
            .map_err(|e| Error::CudaUnavailable(e.clone()))
    }

    /// Searches NVRTC in `env` as [`super::libs`] describes, skipping CUDA majors above `max_major`
    /// (the driver's). The error lists every place tried.
    pub fn find(env: &SearchEnv, max_major: Option<u32>) -> std::result::Result<Nvrtc, String> {
        let accept = |lib: &libloading::Library| bind(lib).map(|(_, v)| (Some(v.0 as u32), format!("{}.{}", v.0, v.1)));
        let o = libs::open_first(&NVRTC, env, max_major, &accept)?;
        let mut n = Nvrtc::from_library(o.lib, o.loaded)?;
        n._companions = o.companions;
        Ok(n)
    }

    fn from_library(lib: libloading::Library, loaded: LoadedLibrary) -> std::result::Result<Nvrtc, String> {
        let (api, version) = bind(&lib)?;
        let path = libs::path_of_symbol(api.version as *const c_void).unwrap_or(loaded.path);
        Ok(Nvrtc { api, version, path, origin: loaded.origin, _lib: lib, _companions: Vec::new() })
    }

    /// How it was found (see [`super::libs::Origin`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// (major, minor).
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The file this NVRTC was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error_string(&self, code: c_int) -> String {
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string (or null).
        let p = unsafe { (self.api.get_error_string)(code) };
        if p.is_null() {
            return format!("NVRTC error {code}");
        }
        unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Compiles one kernel source (already amalgamated) to a CUBIN for `arch`.
    /// `report` adds ptxas' resource report to the log. Errors carry the NVRTC log.
    pub fn compile(&self, file: &str, source: &str, arch: &str, report: bool) -> Result<Compiled> {
        let compile_err = |log: String| Error::Compile { file: file.into(), arch: arch.into(), log };
        let src = CString::new(source).map_err(|_| Error::invalid("nvrtc", format!("kernels/{file} contains a NUL byte")))?;
        let name = CString::new(file).map_err(|_| Error::invalid("nvrtc", "file name with a NUL byte"))?;
        let opts = options(arch, report);
        let copts: Vec<CString> = opts
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid("nvrtc", "an option with a NUL byte"))?;
        let opt_ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings; no headers.
        let rc =
            unsafe { (self.api.create_program)(&mut prog, src.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null()) };
        if rc != 0 {
            return Err(compile_err(format!("nvrtcCreateProgram: {}", self.error_string(rc))));
        }
        // SAFETY: `prog` is a live program until destroyed below; the option strings outlive the call.
        let rc = unsafe { (self.api.compile_program)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
        let log = self.program_log(prog);
        let cubin = if rc != 0 { Err(self.error_string(rc)) } else { self.cubin(prog) };
        // SAFETY: destroyed once.
        unsafe { (self.api.destroy_program)(&mut prog) };
        match cubin {
            Ok(cubin) => Ok(Compiled { cubin, log }),
            Err(e) => Err(compile_err(format!("{e}\n{log}"))),
        }
    }

    fn program_log(&self, prog: Program) -> String {
        let mut n = 0usize;
        // SAFETY: `prog` is live; out-parameter.
        if unsafe { (self.api.get_program_log_size)(prog, &mut n) } != 0 || n == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; n];
        // SAFETY: the buffer holds the `n` bytes NVRTC said the log has.
        if unsafe { (self.api.get_program_log)(prog, buf.as_mut_ptr() as *mut c_char) } != 0 {
            return String::new();
        }
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    fn cubin(&self, prog: Program) -> std::result::Result<Vec<u8>, String> {
        let mut n = 0usize;
        // SAFETY: `prog` is a live, compiled program; out-parameter.
        let rc = unsafe { (self.api.get_cubin_size)(prog, &mut n) };
        if rc != 0 {
            return Err(format!("nvrtcGetCUBINSize: {}", self.error_string(rc)));
        }
        let mut buf = vec![0u8; n];
        // SAFETY: the buffer holds the `n` bytes NVRTC reported.
        let rc = unsafe { (self.api.get_cubin)(prog, buf.as_mut_ptr() as *mut c_char) };
        if rc != 0 {
            return Err(format!("nvrtcGetCUBIN: {}", self.error_string(rc)));
        }
        if buf.is_empty() {
            return Err("NVRTC returned an empty CUBIN (was a virtual compute_XY architecture given?)".into());
        }
        Ok(buf)
    }
}

/// Whether an NVRTC library can be loaded (CUDA 12 or 13).
pub fn nvrtc_available() -> bool {
    Nvrtc::global().is_ok()
}

/// The version of the process-wide NVRTC as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    Ok(Nvrtc::global()?.version())
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

/// Compiles one kernel source (already amalgamated) to a CUBIN for `arch` with the process-wide
/// NVRTC. `report` adds ptxas' resource report to the log. Errors carry the NVRTC log.
pub fn compile(file: &str, source: &str, arch: &str, report: bool) -> Result<Compiled> {
    Nvrtc::global()?.compile(file, source, arch, report)
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
