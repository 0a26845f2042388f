//! Normalisations.

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

/// LayerNorm over the last dim, as `torch.nn.LayerNorm` (biased variance, statistics in f32, two
/// passes): `out = (x − mean) · rsqrt(var + eps) · weight + bias`. `x`, `out`: [rows, cols].
pub fn layer_norm(x: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32], eps: f32) {
    let cols = weight.len();
    if cols == 0 {
        return;
    }
    for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean = xr.iter().sum::<f32>() / cols as f32;
        let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, (o, &v)) in o.iter_mut().zip(xr).enumerate() {
            *o = (v - mean) * inv * weight[j] + bias.map_or(0.0, |b| b[j]);
        }
    }
}
