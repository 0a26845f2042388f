//! Convolutions as im2col + GEMM ([`im2col`] then [`crate::ops::linear`]) and transposed
//! convolutions as GEMM + overlap-add ([`crate::ops::linear`] then [`col2im_transpose`]).
//!
//! Layout: time-major, `[batch, time, channels]`. A PyTorch `Conv1d` weight `(C_out, C_in, K)` is
//! used as the GEMM weight `[C_out, C_in·K]` as it is (column `c·K + j`); a `ConvTranspose1d`
//! weight `(C_in, C_out, K)` becomes `[C_out·K, C_in]` (transposed once at load).
use crate::error::{Error, Result};
use crate::{View, ViewMut};

/// How an im2col reads positions outside a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (PyTorch's `padding=` and `F.pad` with zeros).
    Zero,
    /// Reflection about the first and last valid sample (`F.pad(mode="reflect")`,
    /// `ReflectionPad1d`, `torch.stft(center=True)`): index −i reads i, index S−1+i reads S−1−i.
    Reflect,
}

/// The geometry of one [`im2col`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Im2col {
    /// Kernel taps K (≥ 1).
    pub kernel: usize,
    /// Stride (≥ 1).
    pub stride: usize,
    /// Dilation (≥ 1).
    pub dilation: usize,
    /// Padding before the first sample; the padding after the last is implied by the output length.
    pub pad_left: usize,
    /// Nearest-neighbour upsampling of the input applied before the taps (1 = none).
    pub upsample: usize,
    /// What positions outside the sequence read.
    pub pad: PadMode,
}

/// Unfolds a batch of sequences for a 1-D convolution:
/// `out[b, t, c·K + j] = src_b(t·stride + j·dilation − pad_left, c)`, where `src_b` is `x[b]`
/// upsampled ×`upsample` by repetition (`src_b(i, c) = x[b, i / upsample, c]`), of length
/// `S_b = len_b · upsample` with `len_b = lens[b]` (or `L_in` without `lens`). Positions outside
/// `0..S_b` read zero ([`PadMode::Zero`]) or the reflection ([`PadMode::Reflect`]; a position still
/// outside after one reflection reads zero). Rows past the input length are thus the reference's
/// `x * mask` before a convolution.
///
/// Shapes: `x` `[B, L_in, C]`, `lens` `[B]` i32 with `0 ≤ lens[b] ≤ L_in`, `out` `[B, L_out, C·K]`
/// (`L_out` is the caller's choice). Dtypes: `x` and `out` each f32 or the compute dtype.
pub fn im2col(x: View<'_>, lens: Option<View<'_>>, out: ViewMut<'_>, p: Im2col) -> Result<()> {
    let _ = (x, lens, out, p);
    Err(Error::invalid("im2col", "not implemented yet"))
}

/// The overlap-add half of a transposed convolution (`ConvTranspose1d` after its GEMM):
/// `out[b, t, c] = bias[c] + Σ cols[b, i, c·K + j]` over `i < len_b`, `j < K` with
/// `i·stride + j − pad = t`. `len_b = lens[b]` (or `L_in`).
///
/// Shapes: `cols` `[B, L_in, C·K]` f32 (`x · W` with `W` `[C_out·K, C_in]`), `lens` `[B]` i32,
/// `bias` `[C]` in the compute dtype, `out` `[B, L_out, C]` f32 (PyTorch's
/// `L_out = (L_in − 1)·stride − 2·pad + K`; any `L_out` is accepted).
pub fn col2im_transpose(
    cols: View<'_>,
    lens: Option<View<'_>>,
    bias: Option<View<'_>>,
    out: ViewMut<'_>,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<()> {
    let _ = (cols, lens, bias, out, kernel, stride, pad);
    Err(Error::invalid("col2im_transpose", "not implemented yet"))
}
