//! The op API: shape and dtype checks, then the Cpu reference op or a kernel launch (Cuda, Emu).
//!
//! Dtypes per backend: on Cpu every float tensor is f32; on Cuda and Emu weights and GEMM
//! activations are bf16 ([`crate::Device::compute_dtype`]) while residual streams stay f32.
mod attention;
mod attention_relpos;
mod batchnorm;
mod conv;
mod decode_state;
pub(crate) mod elementwise;
mod embedding;
mod feed_forward;
mod gemv;
mod groupnorm;
mod hift;
mod layernorm;
pub(crate) mod linear;
mod pointwise;
mod pooling;
mod rmsnorm;
mod rope;
mod sampling;
mod swiglu;

pub use attention::{
    DECODE_MAX_SPLITS, attention_cached, attention_cached_split, attention_cached_splits, attention_dense,
    decode_attention_splits, rope_attention_decode, rope_attention_decode_split,
};
pub use attention_relpos::attention_relpos;
pub use batchnorm::{BatchNormCols, batch_norm};
pub use conv::{Conv1dPlan, DepthwiseConv, Im2col, PadMode, col2im_transpose, conv1d_packed, depthwise_conv1d, im2col};
pub use decode_state::advance_decode_state;
pub use elementwise::{add_bias, add_residual};
pub use embedding::embed_pos;
pub use feed_forward::{FeedForward, FeedForwardScratch, feed_forward_residual};
pub use gemv::{linear_add_residual, rmsnorm_linear, rmsnorm_linear_swiglu};
pub use groupnorm::group_norm;
pub use hift::{HIFT_HARMONICS, hift_istft, hift_source};
pub use layernorm::layer_norm;
pub use linear::{linear, pack_gemm_weight, pack_linear_weight};
pub use pointwise::{Activation, activation, activation_inplace, add_batch_bias, add_scaled, cfm_euler_cfg, write_cols};
pub use pooling::{segment_gate, segment_mean, stats_pool};
pub use rmsnorm::add_rmsnorm;
pub use rope::rope_kv_write;
pub use sampling::{
    DONE_ERROR, DONE_MAX_TOKENS, DONE_RUNNING, DONE_STOP, Pipeline, SAMPLE_MAX_VOCAB, SamplerSettings, SamplerState,
    sample_launch_config, sample_tokens,
};
pub use swiglu::swiglu;

use crate::error::{Error, Result};
use crate::{DType, View};

pub(crate) fn expect_dtype(op: &'static str, what: &'static str, v: &View<'_>, want: DType) -> Result<()> {
    if v.dtype() != want {
        return Err(Error::DType { op, what, got: v.dtype(), expected: want.to_string() });
    }
    Ok(())
}
