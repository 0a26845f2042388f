//! LayerNorm over the last dim (S3Gen). Mirrors `kernels/layernorm.cu`.

/// LayerNorm over the last dim, as `torch.nn.LayerNorm` (biased variance, statistics in f32, two
/// passes, each sum over 8 lanes as [`super::fastmath::lane_sum`]): `out = (x − mean) · rsqrt(var + eps) · weight +
/// bias`. `x`, `out`: [rows, cols].
pub fn layer_norm(x: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32], eps: f32) {
    let cols = weight.len();
    if cols == 0 {
        return;
    }
    use rayon::prelude::*;
    let rows = out.len() / cols;
    // rows in parallel (each row is normalised alone: same values)
    x[..rows * cols].par_chunks_exact(cols).zip(out.par_chunks_exact_mut(cols)).with_min_len(16).for_each(|(xr, o)| {
        let mean = super::fastmath::lane_sum(xr, |v| v) / cols as f32;
        let var = super::fastmath::lane_sum(xr, |v| (v - mean) * (v - mean)) / cols as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, (o, &v)) in o.iter_mut().zip(xr).enumerate() {
            *o = (v - mean) * inv * weight[j] + bias.map_or(0.0, |b| b[j]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_f32;

    #[test]
    fn layer_norm_matches_its_definition() {
        let seed = crate::testing::fresh_seed();
        eprintln!("seed {seed}");
        // widths around the 8 lanes of the sums, and S3Gen's 256 / 512; an offset mean (the two-pass
        // variance must not cancel)
        for (i, &cols) in [1usize, 7, 8, 9, 17, 256, 515].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 10);
            let rows = 5;
            let x: Vec<f32> = random_f32(s, rows * cols, 2.0).iter().map(|v| v + 3.0).collect();
            let w = random_f32(s + 1, cols, 1.0);
            let b = random_f32(s + 2, cols, 1.0);
            for bias in [Some(&b[..]), None] {
                let mut got = vec![f32::NAN; rows * cols];
                layer_norm(&x, &w, bias, &mut got, 1e-5);
                let mut want = Vec::new();
                for xr in x.chunks(cols) {
                    let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
                    let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
                    for (j, &v) in xr.iter().enumerate() {
                        let y = (v as f64 - mean) / (var + 1e-5).sqrt() * w[j] as f64 + bias.map_or(0.0, |b| b[j] as f64);
                        want.push(y as f32);
                    }
                }
                crate::testing::assert_close(&format!("cols {cols} bias {} seed {s}", bias.is_some()), &got, &want, 1e-5, 1e-5);
            }
        }
    }
}
