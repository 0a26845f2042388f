use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::emu_options::EmuOptions;
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

/// What was asked of a device since its handle was created (all clones of a [`Device`] share the
/// counters; see [`Device::stats`]). The same code counts on every backend, at the tensor level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Tensors allocated (`Tensor::zeros`, `uninit`, `from_f32`, `from_i32`).
    pub allocations: u64,
    /// Their bytes.
    pub allocated_bytes: u64,
    /// Device-to-host copies (`to_f32_vec`, `to_i32_vec` of tensors and views): each waits for the device.
    pub downloads: u64,
    /// Host-to-device copies (`from_f32`, `from_i32`, `copy_from_*`): on Cuda each waits for the
    /// copy to finish (the host data must outlive it).
    pub uploads: u64,
    /// [`Device::synchronize`] calls.
    pub synchronizes: u64,
}

impl DeviceStats {
    /// Round trips in which the host waits for the device: downloads, uploads and synchronizes.
    pub fn host_syncs(&self) -> u64 {
        self.downloads + self.uploads + self.synchronizes
    }

    /// The counts accumulated since `earlier` (a snapshot of the same device).
    pub fn since(&self, earlier: &DeviceStats) -> DeviceStats {
        DeviceStats {
            allocations: self.allocations - earlier.allocations,
            allocated_bytes: self.allocated_bytes - earlier.allocated_bytes,
            downloads: self.downloads - earlier.downloads,
            uploads: self.uploads - earlier.uploads,
            synchronizes: self.synchronizes - earlier.synchronizes,
        }
    }
}

/// The live counters behind [`DeviceStats`].
#[derive(Default)]
pub(crate) struct Counters {
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    downloads: AtomicU64,
    uploads: AtomicU64,
    synchronizes: AtomicU64,
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
    /// Why Cuda was not used, when this device is [`Device::auto`]'s fallback to Cpu.
    fallback: Option<Arc<str>>,
    /// Shared by every clone of this handle.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.describe())
    }
}

impl Device {
    /// The pure-Rust reference backend (always available).
    pub fn cpu() -> Device {
        Device::with_backend(Backend::Cpu, false)
    }

    /// [`Device::cpu`], after checking that `TTS_CPU_ISA` (when set) names a path this CPU runs.
    pub fn cpu_checked() -> Result<Device> {
        crate::cpu::isa::selected()?;
        Ok(Device::cpu())
    }

    fn with_backend(backend: Backend, cpu_bf16_weights: bool) -> Device {
        Device { inner: Arc::new(backend), cpu_bf16_weights, fallback: None, counters: Arc::default() }
    }

    /// The GPU `ordinal`. Fails with [`Error::CudaUnavailable`] naming what is missing (driver,
    /// NVRTC, cuBLAS, a device) or with the NVRTC log when a kernel does not compile.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::with_backend(Backend::Cuda(cuda::CudaBackend::new(ordinal)?), false))
    }

    /// The Emu backend (only in builds with the `emu` feature). `opts.multiprocessors` must be at least 1.
    pub fn emu(opts: EmuOptions) -> Result<Device> {
        #[cfg(feature = "emu")]
        {
            if opts.multiprocessors == 0 {
                return Err(Error::invalid("emu", "EmuOptions::multiprocessors is 0 (an emulated GPU has at least one SM)"));
            }
            Ok(Device::with_backend(Backend::Emu(crate::emu::EmuBackend::new(opts)), false))
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
        Device::with_backend(Backend::Cpu, true)
    }

    /// Cuda on GPU 0 when it is usable, otherwise Cpu. The reason Cuda was not used is returned too,
    /// and kept by the device: [`Device::fallback_reason`], and [`Device::describe`] says it.
    pub fn auto() -> (Device, Option<Error>) {
        match Device::cuda(0) {
            Ok(d) => (d, None),
            Err(e) => {
                let mut d = Device::cpu();
                d.fallback = Some(Arc::from(e.to_string()));
                (d, Some(e))
            }
        }
    }

    /// Why Cuda was not used, when this device is [`Device::auto`]'s (or `from_name("auto")`'s)
    /// fallback to Cpu.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// `auto`, `cpu`, `cpu-bf16` (bf16 GEMM weights), `cuda`, `cuda:N` or `emu` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Device> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "auto" => {
                let d = Device::auto().0;
                if d.kind() == BackendKind::Cpu {
                    crate::cpu::isa::selected()?;
                }
                Ok(d)
            }
            "cpu" => Ok(Device::cpu_checked()?),
            "cpu-bf16" => {
                crate::cpu::isa::selected()?;
                Ok(Device::cpu_bf16_weights())
            }
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

    /// The dtype of T3's KV cache: bf16 on Cuda, Emu and [`Device::cpu_bf16_weights`] (a decode step
    /// of a large batch reads about as many cache bytes as weight bytes: bf16 halves them), f32 on
    /// the `cpu` backend (the parity reference). The Cpu cache ops take either
    /// ([`crate::ops::rope_kv_write`], [`crate::ops::attention_cached`]).
    pub fn kv_dtype(&self) -> DType {
        if self.cpu_bf16_weights { DType::BF16 } else { self.compute_dtype() }
    }

    /// The dtype of GEMM weights: the compute dtype, except bf16 on [`Device::cpu_bf16_weights`].
    pub fn weight_dtype(&self) -> DType {
        if self.cpu_bf16_weights { DType::BF16 } else { self.compute_dtype() }
    }

    /// A one-line description, e.g. `cuda:0 (NVIDIA H100, sm_90)`; for `auto`'s fallback to Cpu, with
    /// the reason Cuda was not used.
    pub fn describe(&self) -> String {
        let d = self.describe_backend();
        match &self.fallback {
            Some(why) => format!("{d}; Cuda not used: {why}"),
            None => d,
        }
    }

    fn describe_backend(&self) -> String {
        match &*self.inner {
            Backend::Cpu if self.cpu_bf16_weights => "cpu (pure-Rust ops, f32 compute, bf16 GEMM weights)".to_string(),
            Backend::Cpu => "cpu (pure-Rust reference ops, f32)".to_string(),
            Backend::Cuda(c) => c.describe(),
            #[cfg(feature = "emu")]
            Backend::Emu(e) => e.describe(),
        }
    }

    /// Streaming multiprocessors: the GPU's (Cuda: asked of the driver once), the emulated count
    /// [`EmuOptions::multiprocessors`] (Emu), None on Cpu (no SMs: nothing is launched there).
    /// Launch choices that depend on it (the decode attention's key split) depend on shapes and
    /// this number only, so a captured graph stays valid.
    pub fn multiprocessor_count(&self) -> Result<Option<usize>> {
        match &*self.inner {
            Backend::Cpu => Ok(None),
            Backend::Cuda(c) => c.multiprocessor_count().map(Some),
            #[cfg(feature = "emu")]
            Backend::Emu(e) => Ok(Some(e.multiprocessor_count())),
        }
    }

    /// A snapshot of this device's counters (allocations, host round trips); see [`DeviceStats`].
    pub fn stats(&self) -> DeviceStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeviceStats {
            allocations: get(&c.allocations),
            allocated_bytes: get(&c.allocated_bytes),
            downloads: get(&c.downloads),
            uploads: get(&c.uploads),
            synchronizes: get(&c.synchronizes),
        }
    }

    pub(crate) fn note_allocation(&self, bytes: usize) {
        self.counters.allocations.fetch_add(1, Ordering::Relaxed);
        self.counters.allocated_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn note_download(&self) {
        self.counters.downloads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_upload(&self) {
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for all queued work (a no-op on Cpu and Emu, which run synchronously; counted on every
    /// backend, see [`Device::stats`]).
    pub fn synchronize(&self) -> Result<()> {
        self.counters.synchronizes.fetch_add(1, Ordering::Relaxed);
        match &*self.inner {
            Backend::Cuda(c) => c.synchronize(),
            _ => Ok(()),
        }
    }

    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && self.cpu_bf16_weights == other.cpu_bf16_weights
    }
}
