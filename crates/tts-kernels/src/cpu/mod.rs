//! Pure-Rust reference ops in f32: the numerical reference every kernel is tested against, and the
//! implementation of the Cpu backend. Slices are row-major; shapes are checked by the op wrappers
//! in [`crate::ops`] (the functions here assume consistent lengths).
//!
//! One file per op family, mirroring `kernels/*.cu`.
mod activation;
mod attention;
mod conv;
mod decode_state;
mod elementwise;
mod embedding;
mod hift;
mod linear;
mod norm;
mod pointwise;
mod relpos;
mod sampling;

pub use activation::swiglu;
pub use attention::{attention_cached, attention_dense, llama3_inv_freq, rope_kv_write};
pub use decode_state::{SAMPLE_STATE_COLS, advance};
pub use elementwise::{add_bias, add_residual};
pub use embedding::embed_pos;
pub use linear::{linear, linear_bf16_weights};
pub use norm::{add_rmsnorm, layer_norm};
pub use sampling::{
    DONE_ERROR, DONE_MAX_TOKENS, DONE_RUNNING, DONE_STOP, MASS_SHIFT, MAX_SAMPLER_VOCAB, Pipeline, RequestIo, SamplerSettings,
    SamplerStages, SamplerState, draw_bits, draw_token, draw_with_bits, mass_weight, order_key, penalised_history, philox4x32_10,
    sample_request, sampler_stages,
};
