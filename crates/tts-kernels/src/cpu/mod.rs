//! Pure-Rust reference ops in f32: the numerical reference every kernel is tested against, and the
//! implementation of the Cpu backend. Slices are row-major; shapes are checked by the op wrappers
//! in [`crate::ops`] (the functions here assume consistent lengths).
//!
//! One file per op family, mirroring `kernels/*.cu`.
mod activation;
mod elementwise;
mod embedding;
mod linear;
mod norm;

pub use activation::swiglu;
pub use elementwise::{add_bias, add_residual};
pub use embedding::embed_pos;
pub use linear::linear;
pub use norm::{add_rmsnorm, layer_norm};
