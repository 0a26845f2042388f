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
mod cublas;
pub mod libs;
pub mod nvrtc;
mod occupancy;
mod shared_mem;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, result as drv, sys as drv_sys};
use cudarc::nvrtc::Ptx;

use crate::backend::{Gemm, KernelBackend, LaunchDims};
use crate::error::{Error, Result};

/// Whether the CUDA driver, NVRTC and cuBLAS libraries can all be loaded (CUDA 12 or 13, see
/// [`libs`]). When this returns an error, the message names what is missing and where it was sought.
pub fn libraries_present() -> Result<()> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(Error::CudaUnavailable("the NVIDIA driver library libcuda.so.1 was not found (no driver installed?)".into()));
    }
    nvrtc::Nvrtc::global()?;
    cublas::CublasLib::global()?;
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
    ctx: Arc<CudaContext>,
}

impl CudaMem {
    pub(crate) fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv_err("binding the context for a device-to-host copy"))?;
        // SAFETY: addr..addr+len lies in this allocation (views are in bounds); synchronous below.
        unsafe { drv::memcpy_dtoh_async(out, addr, self.stream.cu_stream()) }.map_err(drv_err("a device-to-host copy"))?;
        self.stream.synchronize().map_err(drv_err("a device-to-host copy"))
    }
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv_err("binding the context for a host-to-device copy"))?;
        // SAFETY: in bounds; the host data must stay alive until the copy ends, hence the sync.
        unsafe { drv::memcpy_htod_async(addr, data, self.stream.cu_stream()) }.map_err(drv_err("a host-to-device copy"))?;
        self.stream.synchronize().map_err(drv_err("a host-to-device copy"))
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        // The slice's stream-ordered free (run after this, as fields drop) needs the context current
        // on whatever thread drops the tensor; a failure is recorded by cudarc's context.
        let _ = self.ctx.bind_to_thread();
    }
}

pub(crate) struct CudaBackend {
    ordinal: usize,
    name: String,
    arch: String,
    stream: Arc<CudaStream>,
    /// Declared before the workspace it uses, so it is destroyed first.
    blas: Mutex<cublas::BlasHandle>,
    _blas_workspace: CudaSlice<u8>,
    functions: HashMap<&'static str, CudaFunction>,
    /// Kernel names launched since a capture began (None: not capturing).
    capture_log: Mutex<Option<Vec<&'static str>>>,
    /// `TTS_CUDA_SYNC=1`: synchronize after every launch and GEMM outside captures, so a fault is
    /// reported by the kernel that caused it.
    sync_each_launch: bool,
    /// Shared-memory limits and opt-ins (shared_mem.rs).
    smem: shared_mem::SharedMemState,
    ctx: Arc<CudaContext>,
}

/// Whether `TTS_CUDA_SYNC` asks for a synchronisation after every launch (`1`, `true`, `yes`).
pub(crate) fn sync_each_launch_from_env(value: Option<&str>) -> bool {
    matches!(value.map(|v| v.trim().to_ascii_lowercase()).as_deref(), Some("1" | "true" | "yes" | "on"))
}

impl CudaBackend {
    pub(crate) fn new(ordinal: usize) -> Result<CudaBackend> {
        libraries_present()?;
        let ctx =
            CudaContext::new(ordinal).map_err(|e| Error::CudaUnavailable(format!("no usable CUDA device {ordinal}: {e:?}")))?;
        if let Some(p) = libs::mapped_library("libcuda.so") {
            let version = libs::driver_cuda_major().map(|m| format!("driver API for CUDA {m}"));
            libs::note_loaded(libs::LoadedLibrary {
                name: "libcuda".into(),
                path: p,
                version,
                origin: "the NVIDIA driver".into(),
            });
        }
        // SAFETY: called before any allocation, as cudarc requires; graphs need it off.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv_err("stream creation"))?;
        let (major, minor) = ctx.compute_capability().map_err(drv_err("reading the compute capability"))?;
        if major < 8 {
            return Err(Error::CudaUnavailable(format!(
                "GPU {ordinal} is sm_{major}{minor}; the bf16 kernels need sm_80 or newer"
            )));
        }
        keep_pool_memory(&ctx)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let arch = format!("sm_{major}{minor}");
        let functions = load_kernels(&ctx, &arch)?;
        let blas_lib = cublas::CublasLib::global()?;
        // SAFETY: u8 has no invalid bit patterns; cuBLAS writes the workspace before reading it.
        let workspace =
            unsafe { stream.alloc::<u8>(cublas::WORKSPACE_BYTES) }.map_err(drv_err("allocating the cuBLAS workspace"))?;
        let ws_addr = workspace.device_ptr(&stream).0;
        ctx.bind_to_thread().map_err(drv_err("binding the context"))?;
        let blas = blas_lib.create_handle(stream.cu_stream() as *mut c_void, ws_addr)?;
        Ok(CudaBackend {
            ordinal,
            name,
            arch,
            stream,
            blas: Mutex::new(blas),
            _blas_workspace: workspace,
            functions,
            capture_log: Mutex::new(None),
            sync_each_launch: sync_each_launch_from_env(std::env::var("TTS_CUDA_SYNC").ok().as_deref()),
            smem: Default::default(),
            ctx,
        })
    }

    /// Makes this device's context current on the calling thread. Every entry point that talks to
    /// the driver or cuBLAS calls it first: a device may be created on one thread and used from
    /// another (a server's worker), and one thread may use two GPUs.
    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv_err(format!("binding the context of cuda:{}", self.ordinal)))
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

    /// With `TTS_CUDA_SYNC=1` and outside a capture: waits for `what` (a kernel or a GEMM) to finish
    /// and names it if it failed.
    fn debug_sync(&self, what: &str) -> Result<()> {
        if !self.sync_each_launch || self.is_capturing() {
            return Ok(());
        }
        self.stream.synchronize().map_err(|e| Error::Launch {
            kernel: what.into(),
            detail: format!("failed while running (found by TTS_CUDA_SYNC=1 right after its launch): {e:?}"),
        })
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
        self.bind()?;
        self.stream.synchronize().map_err(drv_err("stream synchronize"))
    }

    pub(crate) fn alloc(&self, bytes: usize, zero: bool) -> Result<CudaMem> {
        self.bind()?;
        let bytes = bytes.max(1);
        // SAFETY: u8 has no invalid bit patterns; contents are unspecified until written.
        let slice = unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| {
            if e.0 == drv_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                Error::OutOfMemory { what: "device memory of a tensor".into(), bytes }
            } else {
                drv_err(format!("allocating {bytes} bytes"))(e)
            }
        })?;
        let addr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        if zero {
            // SAFETY: addr..addr+bytes is this allocation.
            unsafe { drv::memset_d8_async(addr, 0, bytes, self.stream.cu_stream()) }.map_err(drv_err("memset"))?;
        }
        Ok(CudaMem { _slice: slice, addr, stream: self.stream.clone(), ctx: self.ctx.clone() })
    }

    /// Row-major `out[m, n] = x[m, k] · w[n, k]ᵀ`, bf16 inputs (f32 with `g.f32_inputs`, then without
    /// TF32: the handle keeps the default math mode), f32 accumulation, a bf16 or f32 output (cuBLAS is
    /// column-major: this is `outᵀ = w · xᵀ`).
    pub(crate) fn gemm_bf16(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        self.note_launch("gemm");
        let (m, n, k) = (g.m, g.n, g.k);
        let to_i32 = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::invalid("linear", format!("{what} = {v} exceeds cuBLAS' i32 range")))
        };
        let (m, n, k) = (to_i32(m, "m")?, to_i32(n, "n")?, to_i32(k, "k")?);
        let in_type = if g.f32_inputs { cublas::CUDA_R_32F } else { cublas::CUDA_R_16BF };
        let call = cublas::GemmEx {
            transa: cublas::OP_T,
            transb: cublas::OP_N,
            m: n,
            n: m,
            k,
            a: g.w,
            a_type: in_type,
            lda: k,
            b: g.x,
            b_type: in_type,
            ldb: k,
            beta: if g.accumulate { 1.0 } else { 0.0 },
            c: g.out,
            c_type: if g.out_f32 { cublas::CUDA_R_32F } else { cublas::CUDA_R_16BF },
            ldc: n,
        };
        {
            let blas = self.blas.lock().map_err(|_| Error::invalid("linear", "cuBLAS handle poisoned by a panic"))?;
            // SAFETY: the pointers are live device allocations of the checked shapes on this context,
            // bound above.
            unsafe { blas.gemm_ex(&call) }?;
        }
        self.debug_sync(&format!("gemm {m}x{n}x{k}"))
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // The cuBLAS handle, the modules and the stream are released as the fields drop (after
        // this), on whatever thread drops the last Device clone: they need the context current.
        let _ = self.ctx.bind_to_thread();
    }
}

/// Keeps freed memory in the device's default pool instead of handing it back to the driver at every
/// synchronisation (the pool's release threshold is 0 by default), so per-op tensors (`cuMemAllocAsync`
/// / `cuMemFreeAsync`) reuse memory instead of mapping it again.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<()> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    // SAFETY: the device comes from the live context; the pool is the device's own default pool.
    let pool =
        unsafe { drv::device::get_default_mem_pool(ctx.cu_device()) }.map_err(drv_err("reading the default memory pool"))?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: RELEASE_THRESHOLD takes a cuuint64_t value.
    unsafe {
        drv_sys::cuMemPoolSetAttribute(
            pool,
            drv_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut c_void,
        )
    }
    .result()
    .map_err(drv_err("setting the memory pool's release threshold"))
}

/// Compiles (or takes from the on-disk cache) every GPU kernel file for `arch` and loads it. A cache
/// entry that is damaged, or that the driver refuses, is reported, removed and compiled again.
fn load_kernels(ctx: &Arc<CudaContext>, arch: &str) -> Result<HashMap<&'static str, CudaFunction>> {
    let nvrtc = nvrtc::Nvrtc::global()?;
    let nv = nvrtc.version();
    let dir = cache::cache_dir();
    let mut functions = HashMap::new();
    for file in crate::gpu_kernel_files() {
        let key = cache::key(file.source, &nvrtc::options(arch, false), arch, nv);
        let cached = match dir.as_ref().map(|d| cache::load(d, &key)) {
            Some(cache::Lookup::Hit(c)) => Some(c),
            Some(cache::Lookup::Corrupt(why)) => {
                eprintln!("warning: kernel cache entry for kernels/{} ignored and recompiled: {why}", file.name);
                None
            }
            Some(cache::Lookup::Miss) | None => None,
        };
        let module = match cached.map(|c| ctx.load_module(Ptx::from_binary(c))) {
            Some(Ok(m)) => m,
            other => {
                if let (Some(Err(e)), Some(d)) = (&other, &dir) {
                    eprintln!("warning: the driver refused the cached CUBIN of kernels/{} ({e:?}); recompiling", file.name);
                    cache::remove(d, &key);
                }
                let cubin = nvrtc.compile(file.name, file.source, arch, false)?.cubin;
                if let Some(d) = &dir {
                    // A cache that cannot be written costs compile time, not correctness.
                    if let Err(e) = cache::store(d, &key, &cubin) {
                        eprintln!("warning: {e}");
                    }
                }
                ctx.load_module(Ptx::from_binary(cubin)).map_err(drv_err(format!("loading kernels/{}", file.name)))?
            }
        };
        for &k in file.entry_points {
            let f = module.load_function(k).map_err(drv_err(format!("looking up kernel {k}")))?;
            functions.insert(k, f);
        }
    }
    Ok(functions)
}

impl KernelBackend for CudaBackend {
    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.gemm_bf16(g)
    }

    fn launch_raw(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void, _size: usize) -> Result<()> {
        let f = self.functions.get(kernel).ok_or_else(|| Error::UnknownKernel(kernel.into()))?;
        self.bind()?;
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
        .map_err(|e| Error::Launch { kernel: kernel.into(), detail: format!("{e:?}") })?;
        self.debug_sync(kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::sync_each_launch_from_env;

    #[test]
    fn tts_cuda_sync_values() {
        for on in ["1", "true", "YES", " on "] {
            assert!(sync_each_launch_from_env(Some(on)), "{on}");
        }
        for off in ["0", "", "false", "no", "2"] {
            assert!(!sync_each_launch_from_env(Some(off)), "{off}");
        }
        assert!(!sync_each_launch_from_env(None));
    }
}
