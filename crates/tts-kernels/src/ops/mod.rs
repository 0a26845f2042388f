//! The op API: shape and dtype checks, then the Cpu reference op or a kernel launch (Cuda, Emu).
//!
//! Dtypes per backend: on Cpu every float tensor is f32; on Cuda and Emu weights and GEMM
//! activations are bf16 ([`crate::Device::compute_dtype`]) while residual streams stay f32.
mod activation;
pub(crate) mod elementwise;
mod embedding;
mod layernorm;
pub(crate) mod linear;
mod rmsnorm;

pub use activation::{ACT_BLOCK, SwigluParams, swiglu};
pub use elementwise::{BiasParams, EW_BLOCK, add_bias, add_residual};
pub use embedding::{EMBED_BLOCK, EmbedParams, embed_pos};
pub use layernorm::{LAYERNORM_BLOCK, LayerNormParams, layer_norm};
pub use linear::linear;
pub use rmsnorm::{AddRmsNormParams, RMSNORM_BLOCK, add_rmsnorm};

use crate::error::{Error, Result};
use crate::{DType, View};

pub(crate) fn expect_dtype(op: &'static str, what: &'static str, v: &View<'_>, want: DType) -> Result<()> {
    if v.dtype() != want {
        return Err(Error::DType { op, what, got: v.dtype(), expected: want.to_string() });
    }
    Ok(())
}
