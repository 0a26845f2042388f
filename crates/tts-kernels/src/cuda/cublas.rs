//! cuBLAS, loaded at run time from CUDA 12 or 13 (`libcublas.so.12` / `.13` and the `libcublasLt` it
//! needs, found as [`super::libs`] describes): one handle per device, bound to the device's stream,
//! with a preallocated workspace so that GEMMs captured into a CUDA graph never allocate.
//!
//! Only `cublasGemmEx` is used; its C signature and the enum values below are the same in CUDA 12
//! and 13 (`cublas_api.h`, `library_types.h`).
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use super::libs::{self, CUBLAS, CUBLAS_LT, SearchEnv};
use crate::error::{Error, Result};

pub(crate) type Handle = *mut c_void;

/// `cudaDataType` values.
pub(crate) const CUDA_R_32F: c_int = 0;
pub(crate) const CUDA_R_16BF: c_int = 14;
/// `cublasOperation_t`.
pub(crate) const OP_N: c_int = 0;
pub(crate) const OP_T: c_int = 1;
/// `cublasComputeType_t::CUBLAS_COMPUTE_32F` (no TF32).
pub(crate) const COMPUTE_32F: c_int = 68;
/// `cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT`.
pub(crate) const GEMM_DEFAULT: c_int = -1;

/// The workspace cuBLAS gets on every handle: NVIDIA recommends 32 MiB on Hopper (and 4 MiB before);
/// without one, cuBLAS allocates its own, which is not allowed inside a graph capture.
pub(crate) const WORKSPACE_BYTES: usize = 32 << 20;

#[allow(clippy::type_complexity)]
struct Api {
    create: unsafe extern "C" fn(*mut Handle) -> c_int,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    set_stream: unsafe extern "C" fn(Handle, *mut c_void) -> c_int,
    set_workspace: unsafe extern "C" fn(Handle, *mut c_void, usize) -> c_int,
    get_property: unsafe extern "C" fn(c_int, *mut c_int) -> c_int,
    gemm_ex: unsafe extern "C" fn(
        Handle,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *const c_void,
        *const c_void,
        c_int,
        c_int,
        *const c_void,
        c_int,
        c_int,
        *const c_void,
        *mut c_void,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
}

/// The loaded cuBLAS (and cuBLASLt) libraries.
pub(crate) struct CublasLib {
    api: Api,
    _lt: libloading::Library,
    _lib: libloading::Library,
}

fn bind(lib: &libloading::Library) -> std::result::Result<(Api, (i32, i32, i32)), String> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol has the C signature of the field it is assigned to (cublas_api.h,
            // CUDA 12 and 13); it stays valid while `lib` is loaded, and `CublasLib` keeps it loaded.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| format!("missing {}: {e}", $name))?
        };
    }
    let api = Api {
        create: sym!("cublasCreate_v2"),
        destroy: sym!("cublasDestroy_v2"),
        set_stream: sym!("cublasSetStream_v2"),
        set_workspace: sym!("cublasSetWorkspace_v2"),
        get_property: sym!("cublasGetProperty"),
        gemm_ex: sym!("cublasGemmEx"),
    };
    let mut v = [0 as c_int; 3];
    for (i, slot) in v.iter_mut().enumerate() {
        // SAFETY: libraryPropertyType MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2; out-parameter.
        let rc = unsafe { (api.get_property)(i as c_int, slot) };
        if rc != 0 {
            return Err(format!("cublasGetProperty failed (status {rc})"));
        }
    }
    Ok((api, (v[0], v[1], v[2])))
}

impl CublasLib {
    /// The process-wide cuBLAS: libcublasLt first (from the same search, so that libcublas finds the
    /// matching one already loaded), then libcublas of the same major.
    pub(crate) fn global() -> Result<&'static CublasLib> {
        static GLOBAL: OnceLock<std::result::Result<CublasLib, String>> = OnceLock::new();
        GLOBAL.get_or_init(load).as_ref().map_err(|e| Error::CudaUnavailable(e.clone()))
    }

    /// A handle bound to `stream` with `workspace` (device memory of [`WORKSPACE_BYTES`] that must
    /// outlive the handle). The device's context must be current.
    pub(crate) fn create_handle(&'static self, stream: *mut c_void, workspace: u64) -> Result<BlasHandle> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: out-parameter; the context is current (caller).
        check(unsafe { (self.api.create)(&mut h) }, "handle creation")?;
        let handle = BlasHandle { lib: self, h };
        // SAFETY: `h` is live; the stream belongs to the current context.
        check(unsafe { (self.api.set_stream)(h, stream) }, "cublasSetStream")?;
        // SAFETY: `workspace` is a live device allocation of WORKSPACE_BYTES (caller).
        check(unsafe { (self.api.set_workspace)(h, workspace as *mut c_void, WORKSPACE_BYTES) }, "cublasSetWorkspace")?;
        Ok(handle)
    }
}

fn check(status: c_int, during: &str) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    Err(Error::Cublas { during: during.into(), detail: format!("cublasStatus {status} ({})", status_name(status)) })
}

fn status_name(s: c_int) -> &'static str {
    match s {
        1 => "NOT_INITIALIZED",
        3 => "ALLOC_FAILED",
        7 => "INVALID_VALUE",
        8 => "ARCH_MISMATCH",
        11 => "MAPPING_ERROR",
        13 => "EXECUTION_FAILED",
        14 => "INTERNAL_ERROR",
        15 => "NOT_SUPPORTED",
        16 => "LICENSE_ERROR",
        _ => "unknown",
    }
}

fn load() -> std::result::Result<CublasLib, String> {
    let env = SearchEnv::from_process();
    let max = libs::driver_cuda_major();
    let lt_version = |lib: &libloading::Library| -> std::result::Result<(Option<u32>, String), String> {
        // SAFETY: `size_t cublasLtGetVersion(void)`, in cuBLASLt 12 and 13.
        let f: unsafe extern "C" fn() -> usize =
            *unsafe { lib.get(b"cublasLtGetVersion\0") }.map_err(|e| format!("missing cublasLtGetVersion: {e}"))?;
        // SAFETY: no arguments, no preconditions.
        let v = unsafe { f() };
        // MAJOR·10000 + MINOR·100 + PATCH (e.g. 120903 for 12.9.3); anything else: the file name's major
        let major = (v / 10000) as u32;
        if !(11..=20).contains(&major) {
            return Ok((None, format!("version code {v}")));
        }
        Ok((Some(major), format!("{}.{}.{}", major, v / 100 % 100, v % 100)))
    };
    let libs::Opened { lib: lt, loaded: mut lt_loaded, .. } = libs::open_first(&CUBLAS_LT, &env, max, &lt_version)?;
    let lt_major =
        lt_loaded.version.as_deref().and_then(|v| v.split('.').next()?.parse::<u32>().ok()).filter(|m| (11..=20).contains(m));
    // SAFETY: as above.
    let lt_sym: *const c_void =
        unsafe { lt.get::<*const c_void>(b"cublasLtGetVersion\0") }.map(|s| *s).unwrap_or(std::ptr::null());
    if let Some(p) = libs::path_of_symbol(lt_sym) {
        lt_loaded.path = p;
    }
    let accept = |lib: &libloading::Library| -> std::result::Result<(Option<u32>, String), String> {
        let (_, v) = bind(lib)?;
        if lt_major.is_some_and(|m| m != v.0 as u32) {
            return Err(format!("cuBLAS {}.{} does not match the cuBLASLt {} loaded", v.0, v.1, lt_major.unwrap_or(0)));
        }
        Ok((Some(v.0 as u32), format!("{}.{}.{}", v.0, v.1, v.2)))
    };
    let libs::Opened { lib, mut loaded, .. } = libs::open_first(&CUBLAS, &env, max.or(lt_major), &accept)?;
    let (api, _) = bind(&lib)?;
    if let Some(p) = libs::path_of_symbol(api.gemm_ex as *const c_void) {
        loaded.path = p;
    }
    libs::note_loaded(lt_loaded);
    libs::note_loaded(loaded);
    Ok(CublasLib { api, _lt: lt, _lib: lib })
}

/// A cuBLAS handle (destroyed on drop).
pub(crate) struct BlasHandle {
    lib: &'static CublasLib,
    h: Handle,
}

// SAFETY: a cuBLAS handle may be used from any thread as long as calls are not concurrent; the
// backend keeps it behind a Mutex and binds the device's context before each call.
unsafe impl Send for BlasHandle {}

/// One `cublasGemmEx` call in cuBLAS' column-major terms.
pub(crate) struct GemmEx {
    pub transa: c_int,
    pub transb: c_int,
    pub m: c_int,
    pub n: c_int,
    pub k: c_int,
    pub a: u64,
    pub a_type: c_int,
    pub lda: c_int,
    pub b: u64,
    pub b_type: c_int,
    pub ldb: c_int,
    pub beta: f32,
    pub c: u64,
    pub c_type: c_int,
    pub ldc: c_int,
}

impl BlasHandle {
    /// `C = A·B + beta·C` with alpha 1 and f32 compute.
    ///
    /// # Safety
    /// The pointers are live device allocations of the described shapes on this handle's context,
    /// which is current.
    pub(crate) unsafe fn gemm_ex(&self, g: &GemmEx) -> Result<()> {
        let alpha = 1.0f32;
        // SAFETY: per the caller's contract; alpha and beta are host scalars (the default pointer mode).
        let s = unsafe {
            (self.lib.api.gemm_ex)(
                self.h,
                g.transa,
                g.transb,
                g.m,
                g.n,
                g.k,
                &alpha as *const f32 as *const c_void,
                g.a as *const c_void,
                g.a_type,
                g.lda,
                g.b as *const c_void,
                g.b_type,
                g.ldb,
                &g.beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                g.c_type,
                g.ldc,
                COMPUTE_32F,
                GEMM_DEFAULT,
            )
        };
        check(s, &format!("gemm {}x{}x{}", g.m, g.n, g.k))
    }
}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: destroyed once; the owner binds the context first (CudaBackend's drop order).
        unsafe { (self.lib.api.destroy)(self.h) };
    }
}
