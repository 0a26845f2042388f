//! RMSNorm with a fused residual add (T3). Mirrors `kernels/rmsnorm.cu`.

/// RMSNorm with a fused residual add, as HF `LlamaRMSNorm` (statistics in f32):
/// `residual += x` (when `x` is given), then `out = residual * rsqrt(mean(residual²) + eps) * weight`.
/// `residual`, `x`, `out`: [rows, cols]; `weight`: [cols].
pub fn add_rmsnorm(x: Option<&[f32]>, residual: &mut [f32], weight: &[f32], out: &mut [f32], eps: f32) {
    let cols = weight.len();
    if cols == 0 {
        return;
    }
    for (r, (res, o)) in residual.chunks_exact_mut(cols).zip(out.chunks_exact_mut(cols)).enumerate() {
        if let Some(x) = x {
            for (h, &v) in res.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
                *h += v;
            }
        }
        let ss: f32 = res.iter().map(|&h| h * h).sum();
        let inv = 1.0 / (ss / cols as f32 + eps).sqrt();
        for ((o, &h), &w) in o.iter_mut().zip(res.iter()).zip(weight) {
            *o = h * inv * w;
        }
    }
}
