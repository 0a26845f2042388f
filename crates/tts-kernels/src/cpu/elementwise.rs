//! Bias and residual adds.

/// `y[r, j] += bias[j]`; `y`: [rows, bias.len()].
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `residual[r, j] += x[r, j] + bias[j]` (bias optional); `residual`, `x`: [rows, cols].
pub fn add_residual(residual: &mut [f32], x: &[f32], bias: Option<&[f32]>) {
    match bias {
        Some(b) if !b.is_empty() => {
            for (rr, xr) in residual.chunks_exact_mut(b.len()).zip(x.chunks_exact(b.len())) {
                for ((r, &v), &bb) in rr.iter_mut().zip(xr).zip(b) {
                    *r += v + bb;
                }
            }
        }
        _ => {
            for (r, &v) in residual.iter_mut().zip(x) {
                *r += v;
            }
        }
    }
}
