//! Pure-Rust reference ops in f32: the numerical reference every kernel is tested against, and the
//! implementation of the Cpu backend. Slices are row-major; shapes are checked by the op wrappers
//! in [`crate::ops`] (the functions here assume consistent lengths).
//!
//! One file per op family, mirroring `kernels/*.cu`.
pub mod amx;
mod attention;
mod attention_amx;
mod attention_cached;
mod attention_relpos;
mod attention_tiles;
mod bad_row;
mod batchnorm;
mod conv;
mod conv_bf16_panels;
mod conv_panels;
mod decode_state;
mod elementwise;
mod embedding;
mod fastmath;
mod feed_forward_amx;
mod gemm_bf16_panels;
mod gemm_panels;
mod gemv;
mod groupnorm;
mod hift;
pub mod isa;
mod kv_value;
mod layernorm;
mod linear;
pub mod peak;
mod pointwise;
mod pooling;
mod rmsnorm;
mod rope;
mod sampling;
mod swiglu;

pub use attention::attention_dense;
pub use attention_amx::{attention_amx_available, attention_dense_amx};
pub use attention_cached::attention_cached;
pub use attention_relpos::attention_relpos;
pub use bad_row::{BadRow, RowValue};
pub use batchnorm::{BatchNormCols, batch_norm};
pub use conv::{DepthwiseConv, DepthwiseShape, Im2col, PadMode, col2im_transpose, depthwise_conv1d, im2col, im2col_source};
pub use conv_bf16_panels::conv1d_bf16_panels_with;
pub use conv_panels::{ConvShape, conv1d_panels, conv1d_panels_with, tap_major};
pub use decode_state::{SAMPLE_STATE_COLS, advance};
pub use elementwise::{add_bias, add_residual};
pub use embedding::embed_pos;
pub use feed_forward_amx::{FF_ROWS, FeedForwardBf16, feed_forward_amx};
pub use gemm_bf16_panels::{gemm_bf16_panels, gemm_bf16_panels_with, pack_gemm_bf16, packed_gemm_bf16_len, unpack_gemm_bf16};
pub use gemm_panels::{gemm_panels, gemm_panels_with, pack_gemm, packed_gemm_len, unpack_gemm};
pub use gemv::{GEMV_GROUP, GemvElem, gemv_packed, gemv_packed_with, pack_gemv, packed_gemv_len, unpack_gemv};
pub use groupnorm::group_norm;
pub use hift::{
    HIFT_BINS, HIFT_HOP, HIFT_N_FFT, HIFT_NOISE_STD, HIFT_SINE_AMP, HIFT_SOURCE_HARMONICS, HIFT_TWO_PI, HIFT_UNVOICED_NOISE,
    HIFT_VOICED_THRESHOLD, hann16, harmonic_step, hift_istft, hift_source, irfft16, istft_bins, istft_overlap_add, remainder1,
    source_sample,
};
pub use isa::{ALL_ISAS, Isa, IsaError};
pub use kv_value::KvValue;
pub use layernorm::layer_norm;
pub use linear::{linear, linear_bf16_weights, linear_bf16_weights_with, linear_packed, linear_with};
pub use pointwise::{
    Activation, activate, activation, activation_inplace, add_batch_bias, add_scaled, cfm_euler_cfg, write_cols,
};
pub use pooling::{segment_gate, segment_mean, segments, stats_pool};
pub use rmsnorm::add_rmsnorm;
pub use rope::{llama3_inv_freq, rope_kv_write};
pub use sampling::{
    DONE_ERROR, DONE_MAX_TOKENS, DONE_RUNNING, DONE_STOP, MASS_SHIFT, MAX_SAMPLER_VOCAB, Pipeline, RequestIo, SamplerSettings,
    SamplerStages, SamplerState, draw_bits, draw_token, draw_with_bits, mass_weight, order_key, penalised_history, philox4x32_10,
    sample_request, sampler_stages,
};
pub use swiglu::swiglu;

/// The first row of part `i` when `len` rows, taken as `⌈len/unit⌉` whole units of `unit` rows (the
/// last possibly short), are shared out into `parts` parts whose sizes differ by one unit at most
/// (`i = parts` gives `len`). The split of the Cpu kernels' row blocks over the threads.
fn even_split_start(i: usize, parts: usize, len: usize, unit: usize) -> usize {
    (i * len.div_ceil(unit) / parts * unit).min(len)
}

/// The private fast/oracle pairs that `benches/cpu_paths.rs` measures side by side. Not an API:
/// nothing else may use it.
#[doc(hidden)]
pub mod bench_support {
    pub use super::attention::{attention_dense_blocked, attention_dense_scalar};
    pub use super::attention_relpos::attention_relpos_scalar;
    pub use super::fastmath::{Kind, exp_sub_inplace, map_generic, map_inplace};
}
