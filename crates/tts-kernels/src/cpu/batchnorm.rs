//! Eval-mode BatchNorm as a per-channel affine map, with an optional residual and ReLU (CAMPPlus).
//! Mirrors `kernels/batchnorm.cu`; the op wrapper is [`crate::ops::batch_norm`].
use rayon::prelude::*;

/// Which columns a [`batch_norm`] reads, and its activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchNormCols {
    /// The first of the C columns of each input row that are normalised.
    pub col_offset: usize,
    /// ReLU after the affine map (and the residual): `y > 0 ? y : 0`, NaN giving 0.
    pub relu: bool,
}

/// `out[r, c] = act(x[r, col_offset + c]·scale[c] + shift[c] (+ residual[r, c]))`, the product, the
/// sum and the residual add each rounded alone, in that order (kernels/batchnorm.cu's order: the
/// same bits). `x`: `[rows, row]`, `scale`, `shift`: `[C]`, `residual` and `out`: `[rows, C]`; the
/// caller has checked the sizes and `col_offset + C ≤ row`.
pub fn batch_norm(
    x: &[f32],
    row: usize,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    p: BatchNormCols,
) {
    let c = scale.len();
    if c == 0 {
        return;
    }
    out.par_chunks_mut(c).with_min_len(16).enumerate().for_each(|(r, dst)| {
        let src = &x[r * row + p.col_offset..][..c];
        let res = residual.map(|v| &v[r * c..(r + 1) * c]);
        for (j, o) in dst.iter_mut().enumerate() {
            let mut y = src[j] * scale[j] + shift[j];
            if let Some(res) = res {
                y += res[j];
            }
            *o = if p.relu { if y > 0.0 { y } else { 0.0 } } else { y };
        }
    });
}
