//! What an Emu capture records: the launch list a [`crate::Graph`] replays on Emu (CUDA records
//! into its own graph instead).
use crate::backend::{Gemm, LaunchDims};

/// One recorded unit of work (Emu).
#[derive(Clone)]
pub(crate) enum Recorded {
    Kernel { name: &'static str, dims: LaunchDims, params: Vec<u64> },
    Gemm(Gemm),
}

/// What an Emu capture collected.
#[derive(Default)]
pub(crate) struct CaptureLog {
    /// Kernel names in launch order ("gemm" for a cuBLAS / CPU GEMM).
    pub names: Vec<&'static str>,
    /// The work itself (Emu only; CUDA records into its own graph).
    pub recorded: Vec<Recorded>,
}
