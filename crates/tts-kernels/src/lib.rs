//! Device runtime and op API of the Chatterbox TTS engine.
//!
//! One op API, three backends chosen at run time ([`Device`]):
//! - **Cpu**: pure-Rust reference ops in f32 (the numerical reference; parity with PyTorch).
//! - **Cuda**: `kernels/*.cu` compiled by NVRTC at start-up to a CUBIN for the detected GPU (cached on
//!   disk), cuBLAS for GEMMs, bf16 weights and activations with f32 accumulation.
//! - **Emu** (feature `emu`): the *same* `.cu` files compiled for the host through the project's CUDA
//!   shim, launched by the *same* launch code as Cuda (grid, block, `#[repr(C)]` params); a CPU GEMM
//!   stands in for cuBLAS. It exists to execute every kernel on machines without a GPU.
//!
//! Model crates allocate [`Tensor`]s on a [`Device`] and call [`ops`]; nothing above this crate knows
//! which backend runs.
mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod cuda;
mod device;
mod dtype;
#[cfg(feature = "emu")]
mod emu;
mod emu_options;
mod error;
mod graph;
mod host_mem;
mod host_pool;
mod launch;
pub mod ops;
mod tensor;
pub mod testing;

pub use backend::{EMU_SHARED_OPTIN_MAX, SHARED_MEM_DEFAULT_LIMIT};
pub use device::{BackendKind, Device, DeviceStats};
pub use dtype::DType;
pub use emu_options::{EMU_DEFAULT_MULTIPROCESSORS, EmuOptions, Schedule};
pub use error::{Error, Result};
pub use graph::Graph;
pub use host_pool::{pooled_host_bytes, release_pooled_host_memory};
pub use tensor::{Tensor, View, ViewMut};

/// Where compiled Cuda kernels are cached on disk (`$TTS_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/tts-engine/kernels`, else `~/.cache/tts-engine/kernels`); `None` when the cache
/// is off (`TTS_KERNEL_CACHE=off`) or no place is known.
pub fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    cuda::cache::cache_dir()
}

/// One kernel source file of `kernels/`, as embedded by the build script.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// Path relative to `kernels/`, e.g. `rmsnorm.cu`.
    pub name: &'static str,
    /// The file with its project headers inlined (what NVRTC compiles).
    pub source: &'static str,
    /// Its `extern "C" __global__` entry points.
    pub entry_points: &'static [&'static str],
    /// False for the deliberately broken kernels of `kernels/faults/` (Emu only).
    pub gpu: bool,
}

include!(concat!(env!("OUT_DIR"), "/kernel_manifest.rs"));

/// The kernel files compiled for the GPU (everything but `kernels/faults/`).
pub fn gpu_kernel_files() -> impl Iterator<Item = &'static KernelFile> {
    KERNEL_FILES.iter().filter(|f| f.gpu)
}
