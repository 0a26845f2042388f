//! Pointwise activations with an optional padding mask, per-batch broadcasts, column concatenation
//! and the flow-matching Euler step (S3Gen).
use crate::error::{Error, Result};
use crate::{View, ViewMut};

/// A pointwise function (math in f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `x` (a copy, a dtype conversion, or just the mask).
    Identity,
    /// `x·sigmoid(x)`.
    Silu,
    /// The exact GELU, `0.5·x·(1 + erf(x/√2))`.
    Gelu,
    /// `x·tanh(softplus(x))` with torch's softplus threshold 20.
    Mish,
    /// `x` if `x ≥ 0`, else `slope·x`.
    LeakyRelu(f32),
    /// `x` if `x > 0`, else `exp(x) − 1` (alpha 1).
    Elu,
    /// `|x|`.
    Abs,
    /// `s·x`.
    Scale(f32),
    /// Snake: `x + sin(α_c·x)² / (α_c + 1e-9)` with a per-channel `α` (the `alpha` argument).
    Snake,
}

/// `out = act(x)`, and with `lens`, rows `t ≥ lens[b]` of `[B, N, C]` written as 0 (the
/// reference's `* mask`). Shapes: `x`, `out` the same; with `lens` (`[B]` i32) they must be 3-D
/// `[B, N, C]`; `alpha` `[C]` f32, required by [`Activation::Snake`] and refused otherwise. Dtypes:
/// `x` and `out` each f32 or the compute dtype.
pub fn activation(x: View<'_>, out: ViewMut<'_>, act: Activation, alpha: Option<View<'_>>, lens: Option<View<'_>>) -> Result<()> {
    let _ = (x, out, act, alpha, lens);
    Err(Error::invalid("activation", "not implemented yet"))
}

/// [`activation`] in place.
pub fn activation_inplace(x: ViewMut<'_>, act: Activation, alpha: Option<View<'_>>, lens: Option<View<'_>>) -> Result<()> {
    let _ = (x, act, alpha, lens);
    Err(Error::invalid("activation_inplace", "not implemented yet"))
}

/// `y[b, t, c] += v[b, c]`: a per-batch vector broadcast over time (the time embedding of a
/// ResNet block). Shapes: `y` `[B, N, C]` f32, `v` `[B, C]` f32.
pub fn add_batch_bias(y: ViewMut<'_>, v: View<'_>) -> Result<()> {
    let _ = (y, v);
    Err(Error::invalid("add_batch_bias", "not implemented yet"))
}

/// `y += scale·x` elementwise. Shapes: the same. Dtypes: `y` f32; `x` f32 or the compute dtype.
pub fn add_scaled(y: ViewMut<'_>, x: View<'_>, scale: f32) -> Result<()> {
    let _ = (y, x, scale);
    Err(Error::invalid("add_scaled", "not implemented yet"))
}

/// Writes `src` into columns `offset..offset + C_src` of `dst` (a channel concatenation):
/// `dst[b, t, offset + c] = src[b, t', c]` with `t' = t`, or `t' = 0` when `src` has one row per
/// batch (a broadcast over time). Shapes: `src` `[B, N, C_src]` or `[B, 1, C_src]`, `dst`
/// `[B, N, C_dst]` with `offset + C_src ≤ C_dst`. Dtypes: each f32 or the compute dtype.
pub fn write_cols(src: View<'_>, dst: ViewMut<'_>, offset: usize) -> Result<()> {
    let _ = (src, dst, offset);
    Err(Error::invalid("write_cols", "not implemented yet"))
}

/// One Euler step of the flow-matching ODE fused with the classifier-free-guidance combine
/// (flow_matching.py:139-141): `x[b] += dt·((1 + cfg)·v[b] − cfg·v[B + b])`, then, with `est_in`,
/// the new `x[b]` written to columns `0..C` of rows `b` and `B + b` of the next estimator input.
///
/// Shapes: `x` `[B, N, C]` f32; `v` `[2B, N, C]` f32 (the estimator output, conditional rows first);
/// `est_in` `[2B, N, C_in]` with `C ≤ C_in`, f32 or the compute dtype.
pub fn cfm_euler_cfg(x: ViewMut<'_>, v: View<'_>, est_in: Option<ViewMut<'_>>, dt: f32, cfg: f32) -> Result<()> {
    let _ = (x, v, est_in, dt, cfg);
    Err(Error::invalid("cfm_euler_cfg", "not implemented yet"))
}
