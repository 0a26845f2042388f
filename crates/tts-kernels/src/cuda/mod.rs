//! The Cuda backend: cudarc with dynamic loading (builds and runs without CUDA installed; a missing
//! driver, NVRTC or cuBLAS is an error that names it, never a panic).
//!
//! At start-up every `kernels/*.cu` is compiled once through NVRTC to a CUBIN for the detected
//! compute capability (or taken from the on-disk cache), loaded, and its entry points looked up.
//! GEMMs go through cuBLAS (bf16 in and out, f32 accumulation).
//!
//! Not verified on a GPU yet: everything here compiles and its GPU-independent parts (NVRTC
//! compilation, the cache) are tested, but no launch, copy or GEMM has run on real hardware.
pub(crate) mod cache;
pub mod nvrtc;
mod shared_mem;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, result as blas_result, sys as blas_sys};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, result as drv, sys as drv_sys};
use cudarc::nvrtc::Ptx;

use crate::error::{Error, Result};
use crate::launch::{KernelLauncher, LaunchDims};
use crate::ops::linear::Gemm;

/// Whether the CUDA driver, NVRTC and cuBLAS libraries can all be loaded. When this returns an
/// error, the message names what is missing.
pub fn libraries_present() -> Result<()> {
    // SAFETY: each call only tries to dlopen a library.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(Error::CudaUnavailable("the NVIDIA driver library libcuda.so.1 was not found (no driver installed?)".into()));
    }
    if !nvrtc::nvrtc_available() {
        return Err(Error::CudaUnavailable(nvrtc::missing_nvrtc_message()));
    }
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(Error::CudaUnavailable(
            "libcublas.so.12 was not found on the library path (install the CUDA toolkit or `pip install nvidia-cublas-cu12`)"
                .into(),
        ));
    }
    Ok(())
}

fn drv_err(during: impl Into<String>) -> impl FnOnce(drv::DriverError) -> Error {
    let during = during.into();
    move |e| Error::Driver { during, detail: format!("{e:?}") }
}

/// Device memory: an owned allocation and its device address.
pub(crate) struct CudaMem {
    _slice: CudaSlice<u8>,
    pub(crate) addr: u64,
    stream: Arc<CudaStream>,
}

impl CudaMem {
    pub(crate) fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        // SAFETY: addr..addr+len lies in this allocation (views are in bounds); synchronous below.
        unsafe { drv::memcpy_dtoh_async(out, addr, self.stream.cu_stream()) }.map_err(drv_err("a device-to-host copy"))?;
        self.stream.synchronize().map_err(drv_err("a device-to-host copy"))
    }
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        // SAFETY: in bounds; the host data must stay alive until the copy ends, hence the sync.
        unsafe { drv::memcpy_htod_async(addr, data, self.stream.cu_stream()) }.map_err(drv_err("a host-to-device copy"))?;
        self.stream.synchronize().map_err(drv_err("a host-to-device copy"))
    }
}

pub(crate) struct CudaBackend {
    ordinal: usize,
    name: String,
    arch: String,
    stream: Arc<CudaStream>,
    blas: Mutex<CudaBlas>,
    functions: HashMap<&'static str, CudaFunction>,
    /// Kernel names launched since a capture began (None: not capturing).
    capture_log: Mutex<Option<Vec<&'static str>>>,
    /// Shared-memory limits and opt-ins (shared_mem.rs).
    smem: shared_mem::SharedMemState,
    _ctx: Arc<CudaContext>,
}

impl CudaBackend {
    pub(crate) fn new(ordinal: usize) -> Result<CudaBackend> {
        libraries_present()?;
        let ctx =
            CudaContext::new(ordinal).map_err(|e| Error::CudaUnavailable(format!("no usable CUDA device {ordinal}: {e:?}")))?;
        // SAFETY: called before any allocation, as cudarc requires; graphs need it off.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv_err("stream creation"))?;
        let (major, minor) = ctx.compute_capability().map_err(drv_err("reading the compute capability"))?;
        if major < 8 {
            return Err(Error::CudaUnavailable(format!(
                "GPU {ordinal} is sm_{major}{minor}; the bf16 kernels need sm_80 or newer"
            )));
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let arch = format!("sm_{major}{minor}");
        let nv = nvrtc::nvrtc_version()?;
        let cache = cache::cache_dir();
        let mut functions = HashMap::new();
        for file in crate::gpu_kernel_files() {
            let key = cache::key(file.source, &nvrtc::options(&arch, false), &arch, nv);
            let cubin = match cache.as_ref().and_then(|d| cache::load(d, &key)) {
                Some(c) => c,
                None => {
                    let c = nvrtc::compile(file.name, file.source, &arch, false)?.cubin;
                    if let Some(d) = &cache {
                        // A cache that cannot be written costs compile time, not correctness.
                        if let Err(e) = cache::store(d, &key, &c) {
                            eprintln!("warning: {e}");
                        }
                    }
                    c
                }
            };
            let module = ctx.load_module(Ptx::from_binary(cubin)).map_err(drv_err(format!("loading kernels/{}", file.name)))?;
            for &k in file.entry_points {
                let f = module.load_function(k).map_err(drv_err(format!("looking up kernel {k}")))?;
                functions.insert(k, f);
            }
        }
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| Error::Cublas { during: "handle creation".into(), detail: format!("{e:?}") })?;
        Ok(CudaBackend {
            ordinal,
            name,
            arch,
            stream,
            blas: Mutex::new(blas),
            functions,
            capture_log: Mutex::new(None),
            smem: Default::default(),
            _ctx: ctx,
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!("cuda:{} ({}, {})", self.ordinal, self.name, self.arch)
    }

    pub(crate) fn is_capturing(&self) -> bool {
        self.capture_log.lock().is_ok_and(|l| l.is_some())
    }

    fn note_launch(&self, name: &'static str) {
        if let Ok(mut l) = self.capture_log.lock()
            && let Some(names) = l.as_mut()
        {
            names.push(name);
        }
    }

    /// Captures the launches of `f` on the stream into a CUDA graph (instantiated, uploaded). The
    /// capture is always ended, also when `f` fails.
    pub(crate) fn capture<E: From<Error>>(
        &self,
        f: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<(cudarc::driver::CudaGraph, Vec<&'static str>), E> {
        let poisoned = || Error::invalid("capture", "poisoned lock");
        self.synchronize()?;
        *self.capture_log.lock().map_err(|_| poisoned())? = Some(Vec::new());
        let mode = drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        if let Err(e) = self.stream.begin_capture(mode) {
            *self.capture_log.lock().map_err(|_| poisoned())? = None;
            return Err(drv_err("begin capture")(e).into());
        }
        let outcome = f();
        let ended = self.stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
        let names = self.capture_log.lock().map_err(|_| poisoned())?.take().unwrap_or_default();
        outcome?;
        let graph = ended.map_err(drv_err("end capture"))?.ok_or_else(|| Error::invalid("capture", "nothing was captured"))?;
        graph.upload().map_err(drv_err("graph upload"))?;
        Ok((graph, names))
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv_err("stream synchronize"))
    }

    pub(crate) fn alloc(&self, bytes: usize, zero: bool) -> Result<CudaMem> {
        let bytes = bytes.max(1);
        // SAFETY: u8 has no invalid bit patterns; contents are unspecified until written.
        let slice = unsafe { self.stream.alloc::<u8>(bytes) }.map_err(drv_err(format!("allocating {bytes} bytes")))?;
        let addr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        if zero {
            // SAFETY: addr..addr+bytes is this allocation.
            unsafe { drv::memset_d8_async(addr, 0, bytes, self.stream.cu_stream()) }.map_err(drv_err("memset"))?;
        }
        Ok(CudaMem { _slice: slice, addr, stream: self.stream.clone() })
    }

    /// Row-major `out[m, n] = x[m, k] · w[n, k]ᵀ`, bf16 inputs (f32 with `g.f32_inputs`, then without
    /// TF32: the handle keeps the default math mode), f32 accumulation, a bf16 or f32 output (cuBLAS is
    /// column-major: this is `outᵀ = w · xᵀ`).
    pub(crate) fn gemm_bf16(&self, g: &Gemm) -> Result<()> {
        self.note_launch("gemm");
        let (m, n, k, x, w, out, out_f32) = (g.m, g.n, g.k, g.x, g.w, g.out, g.out_f32);
        let to_i32 = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::invalid("linear", format!("{what} = {v} exceeds cuBLAS' i32 range")))
        };
        let (m, n, k) = (to_i32(m, "m")?, to_i32(n, "n")?, to_i32(k, "k")?);
        let (alpha, beta) = (1.0f32, if g.accumulate { 1.0f32 } else { 0.0 });
        let in_type = if g.f32_inputs { blas_sys::cudaDataType::CUDA_R_32F } else { blas_sys::cudaDataType::CUDA_R_16BF };
        let blas = self.blas.lock().map_err(|_| Error::invalid("linear", "cuBLAS handle poisoned by a panic"))?;
        // SAFETY: the pointers are live device allocations of the checked shapes.
        unsafe {
            blas_result::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n,
                m,
                k,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                in_type,
                k,
                x as *const c_void,
                in_type,
                k,
                &beta as *const f32 as *const c_void,
                out as *mut c_void,
                if out_f32 { blas_sys::cudaDataType::CUDA_R_32F } else { blas_sys::cudaDataType::CUDA_R_16BF },
                n,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cublas { during: format!("gemm {m}x{n}x{k}"), detail: format!("{e:?}") })
    }
}

impl KernelLauncher for CudaBackend {
    fn launch_raw(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void, _size: usize) -> Result<()> {
        let f = self.functions.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        self.note_launch(kernel);
        let mut args = [params];
        // SAFETY: `params` points at the kernel's #[repr(C)] params struct (checked by size in the
        // op wrappers against the .cu definition); the driver copies it during the call.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                (dims.grid[0], dims.grid[1], dims.grid[2]),
                (dims.block[0], dims.block[1], dims.block[2]),
                dims.smem,
                self.stream.cu_stream(),
                &mut args,
            )
        }
        .map_err(|e| Error::Launch { kernel: kernel.into(), detail: format!("{e:?}") })
    }
}
