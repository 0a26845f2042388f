use crate::DType;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error of tts-kernels. Shape, dtype and length mismatches are errors, never panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: {what} has dtype {got}, expected {expected}")]
    DType { op: &'static str, what: &'static str, got: DType, expected: String },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error("{op}: tensors live on different devices")]
    DeviceMismatch { op: &'static str },
    #[error("unknown backend {0:?}: expected auto, cpu, cpu-bf16, cuda, cuda:N (N a device number) or emu")]
    UnknownBackend(String),
    #[error("Cpu backend: {0}")]
    CpuIsa(#[from] crate::cpu::IsaError),
    #[error("CUDA backend unavailable: {0}")]
    CudaUnavailable(String),
    #[error("CUDA driver error during {during}: {detail}")]
    Driver { during: String, detail: String },
    #[error("cuBLAS error during {during}: {detail}")]
    Cublas { during: String, detail: String },
    #[error("NVRTC could not compile kernels/{file} for {arch}:\n{log}")]
    Compile { file: String, arch: String, log: String },
    #[error("kernel cache at {path}: {source}")]
    Cache { path: String, source: std::io::Error },
    #[error("Emu backend unavailable: this build has no `emu` feature (rebuild with --features tts-kernels/emu)")]
    EmuUnavailable,
    #[error("kernel {0} is not known to this backend")]
    UnknownKernel(String),
    #[error("kernel {kernel} failed: {detail}")]
    Launch { kernel: String, detail: String },
    #[error(
        "kernel {kernel}: {static_bytes} bytes of static + {dynamic_bytes} bytes of dynamic shared memory per block pass the limit of {limit} bytes: {reason}"
    )]
    SharedMemory { kernel: String, static_bytes: u32, dynamic_bytes: u32, limit: u32, reason: String },
    #[error("{path}: {source}")]
    CheckpointIo { path: String, source: std::io::Error },
    #[error("{path}: not a valid safetensors checkpoint: {detail}")]
    Checkpoint { path: String, detail: String },
    #[error("{path}: tensor {name} (expected shape {expected:?}): {detail}")]
    Tensor { path: String, name: String, expected: Vec<usize>, detail: String },
    /// An allocation the device (or the host, for Cpu and Emu tensors) could not satisfy.
    #[error("out of memory: {bytes} bytes for {what}")]
    OutOfMemory { what: String, bytes: usize },
    #[error("kernel {kernel} wrote outside a {len}-byte buffer (red zone {side} of it was overwritten)")]
    Overrun { kernel: String, len: usize, side: &'static str },
}

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape { op, detail: detail.into() }
    }
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into() }
    }
}
