//! The contract between the launch code (`launch.rs`) and a kernel backend (Cuda, Emu): what a
//! launch is ([`LaunchDims`] + one params struct), what a GEMM is ([`Gemm`]), and what each backend
//! provides ([`KernelBackend`]). Backends implement it; ops never reach a backend but through
//! `launch.rs`, and backends never import an op.
use std::ffi::c_void;

use crate::error::Result;

/// Shared memory (static + dynamic bytes) one block may use without opting in, on every CUDA device.
pub const SHARED_MEM_DEFAULT_LIMIT: u32 = 48 * 1024;

/// The opt-in maximum of shared memory per block (static + dynamic bytes) that the Emu backend
/// models: 99 KiB, the sm_86/sm_89 value, the strictest of the devices the project supports (sm_80
/// allows 163 KiB, sm_90 227 KiB). A launch that passes on Emu fits every supported GPU.
pub const EMU_SHARED_OPTIN_MAX: u32 = 101_376;

/// Grid and block sizes (x, y, z) and dynamic shared memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
    /// The launch code opts in to more than 48 KiB of shared memory where needed (always, except
    /// in the harness self-test that shows a launch without the opt-in is refused).
    pub opt_in: bool,
}

impl LaunchDims {
    pub(crate) fn new(grid: [u32; 3], block: [u32; 3], smem: u32) -> LaunchDims {
        LaunchDims { grid, block, smem, opt_in: true }
    }
}

/// What the launch code needs from a backend about shared memory.
pub(crate) trait SharedMemory {
    /// Bytes of static `__shared__` memory of `kernel`: exact on Cuda (the loaded function's
    /// attribute); on Emu learned from the kernel's earlier launches (`None` before the first).
    fn static_shared_bytes(&self, kernel: &'static str) -> Result<Option<u32>>;
    /// The most shared memory (static + dynamic bytes) one block may use after opting in.
    fn shared_optin_max(&self) -> Result<u32>;
    /// Raises `kernel`'s maximum dynamic shared memory to at least `bytes` (the opt-in); never lowers it.
    fn opt_in_dynamic_shared(&self, kernel: &'static str, bytes: u32) -> Result<()>;
}

/// One row-major GEMM on a kernel backend: `out[m, n] = x[m, k] · w[n, k]ᵀ (+ out if accumulate)`,
/// bf16 `x` and `w`, f32 accumulation, bf16 or f32 `out` (device addresses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub out_f32: bool,
    pub accumulate: bool,
    /// f32 `x` and `w` (a precise GEMM) instead of bf16.
    pub f32_inputs: bool,
}

/// What a kernel backend does for the launch code: run a kernel with its params struct, run a
/// GEMM, and report and raise its shared-memory limits. Implemented by the Cuda and Emu backends;
/// `launch.rs` reaches every launch and GEMM through it.
pub(crate) trait KernelBackend: SharedMemory {
    /// Launches `kernel` with `params` pointing at its params struct: `size` bytes, 8-byte aligned.
    /// The shared memory was checked (and opted in) by the launch code before.
    fn launch_raw(&self, kernel: &'static str, dims: LaunchDims, params: *mut c_void, size: usize) -> Result<()>;
    /// Runs (or, while capturing, records) one GEMM; the op wrapper checked its shapes and dtypes.
    fn gemm(&self, g: &Gemm) -> Result<()>;
}
