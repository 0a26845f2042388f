use std::sync::Arc;

use crate::error::{Error, Result};
use crate::{DType, cuda};

/// Which implementation runs the ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Pure-Rust reference ops, f32.
    Cpu,
    /// NVRTC-compiled kernels and cuBLAS on an NVIDIA GPU, bf16.
    Cuda,
    /// The same kernels compiled for the host through the CUDA shim, bf16.
    Emu,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Emu => "emu",
        })
    }
}

/// Order in which the Emu backend runs the CUDA threads of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A seeded random permutation per block.
    Random(u32),
}

/// Options of the Emu backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmuOptions {
    pub schedule: Schedule,
    /// Every finding of the shim (a thread leaving while others wait at a barrier, a shuffle from a
    /// lane outside the mask, ...) fails the launch instead of printing a warning.
    pub strict: bool,
    /// OS threads that run blocks; 0 = `CUSHIM_WORKERS` or all cores.
    pub workers: u32,
    /// The shared-memory race detector: two threads writing the same shared byte between two
    /// barriers (not ordered by an atomic or a warp barrier) is a finding (see cushim.h, 3b). Off by
    /// default: it compares the block's shared memory with a copy at every barrier and warp
    /// intrinsic (about 5x slower on shuffle-heavy kernels); `testing::kernel_devices` turns it on
    /// in one of its schedules, so every kernel test runs under it.
    pub race_check: bool,
}

impl Default for EmuOptions {
    fn default() -> Self {
        EmuOptions { schedule: Schedule::Forward, strict: true, workers: 0, race_check: false }
    }
}

pub(crate) enum Backend {
    Cpu,
    Cuda(cuda::CudaBackend),
    #[cfg(feature = "emu")]
    Emu(crate::emu::EmuBackend),
}

/// A compute device: a handle that is cheap to clone. Tensors remember the device they live on.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<Backend>,
    /// Cpu only: GEMM weights stored as bf16 (f32 compute), half the memory traffic of a decode step.
    cpu_bf16_weights: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.describe())
    }
}

impl Device {
    /// The pure-Rust reference backend (always available).
    pub fn cpu() -> Device {
        Device { inner: Arc::new(Backend::Cpu), cpu_bf16_weights: false }
    }

    /// The GPU `ordinal`. Fails with [`Error::CudaUnavailable`] naming what is missing (driver,
    /// NVRTC, cuBLAS, a device) or with the NVRTC log when a kernel does not compile.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device { inner: Arc::new(Backend::Cuda(cuda::CudaBackend::new(ordinal)?)), cpu_bf16_weights: false })
    }

    /// The Emu backend (only in builds with the `emu` feature).
    pub fn emu(opts: EmuOptions) -> Result<Device> {
        #[cfg(feature = "emu")]
        {
            Ok(Device { inner: Arc::new(Backend::Emu(crate::emu::EmuBackend::new(opts))), cpu_bf16_weights: false })
        }
        #[cfg(not(feature = "emu"))]
        {
            let _ = opts;
            Err(Error::EmuUnavailable)
        }
    }

    /// The Cpu backend with bf16 GEMM weights (activations and accumulation stay f32): for speed, not
    /// for parity (the f32 [`Device::cpu`] is the reference).
    pub fn cpu_bf16_weights() -> Device {
        Device { inner: Arc::new(Backend::Cpu), cpu_bf16_weights: true }
    }

    /// Cuda on GPU 0 when it is usable, otherwise Cpu. The reason Cuda was not used is returned too.
    pub fn auto() -> (Device, Option<Error>) {
        match Device::cuda(0) {
            Ok(d) => (d, None),
            Err(e) => (Device::cpu(), Some(e)),
        }
    }

    /// `auto`, `cpu`, `cpu-bf16` (bf16 GEMM weights), `cuda`, `cuda:N` or `emu` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Device> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "auto" => Ok(Device::auto().0),
            "cpu" => Ok(Device::cpu()),
            "cpu-bf16" => Ok(Device::cpu_bf16_weights()),
            "cuda" => Device::cuda(0),
            "emu" => Device::emu(EmuOptions::default()),
            _ => match n.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Device::cuda(i),
                _ => Err(Error::UnknownBackend(name.to_string())),
            },
        }
    }

    pub fn kind(&self) -> BackendKind {
        match &*self.inner {
            Backend::Cpu => BackendKind::Cpu,
            Backend::Cuda(_) => BackendKind::Cuda,
            #[cfg(feature = "emu")]
            Backend::Emu(_) => BackendKind::Emu,
        }
    }

    /// The dtype of weights and GEMM activations on this device: f32 on Cpu, bf16 on Cuda and Emu.
    /// (Residual streams and statistics stay f32 everywhere.)
    pub fn compute_dtype(&self) -> DType {
        match self.kind() {
            BackendKind::Cpu => DType::F32,
            BackendKind::Cuda | BackendKind::Emu => DType::BF16,
        }
    }

    /// The dtype of GEMM weights: the compute dtype, except bf16 on [`Device::cpu_bf16_weights`].
    pub fn weight_dtype(&self) -> DType {
        if self.cpu_bf16_weights { DType::BF16 } else { self.compute_dtype() }
    }

    /// A one-line description, e.g. `cuda:0 (NVIDIA H100, sm_90)`.
    pub fn describe(&self) -> String {
        match &*self.inner {
            Backend::Cpu if self.cpu_bf16_weights => "cpu (pure-Rust ops, f32 compute, bf16 GEMM weights)".to_string(),
            Backend::Cpu => "cpu (pure-Rust reference ops, f32)".to_string(),
            Backend::Cuda(c) => c.describe(),
            #[cfg(feature = "emu")]
            Backend::Emu(e) => e.describe(),
        }
    }

    /// Waits for all queued work (a no-op on Cpu and Emu, which run synchronously).
    pub fn synchronize(&self) -> Result<()> {
        match &*self.inner {
            Backend::Cuda(c) => c.synchronize(),
            _ => Ok(()),
        }
    }

    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && self.cpu_bf16_weights == other.cpu_bf16_weights
    }
}
