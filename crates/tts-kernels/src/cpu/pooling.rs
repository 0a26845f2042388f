//! Poolings over time of time-major `[T, C]` activations (CAMPPlus's CAM layer and statistics
//! pooling). Mirrors `kernels/pooling.cu`: each channel's frames summed in order in f32, each add
//! rounded alone, so the kernels give the same bits (segment_gate's sigmoid: libm-level agreement).
//! The op wrappers are [`crate::ops::segment_mean`], [`crate::ops::segment_gate`] and
//! [`crate::ops::stats_pool`].

/// Segments of `seg_len` frames in `frames` (the last one shorter): `⌈frames / seg_len⌉`.
pub fn segments(frames: usize, seg_len: usize) -> usize {
    frames.div_ceil(seg_len)
}

/// Column `c`'s sum over frames `f0..f1` of `x` (`[T, C]`), in order.
fn column_sum(x: &[f32], channels: usize, c: usize, f0: usize, f1: usize) -> f32 {
    (f0..f1).fold(0.0f32, |s, f| s + x[f * channels + c])
}

/// The CAM layer's context: `out[s, c] = total_c / T + seg_{s,c} / n_s`, `seg_{s,c}` the sum of
/// column c over segment s (frames `s·seg_len..min((s+1)·seg_len, T)`, `n_s` of them), `total_c`
/// the sum of the segment sums in order. `x`: `[T, C]`, `out`: `[S, C]` with
/// `S = `[`segments`]`(T, seg_len)`; T and seg_len at least 1 (the caller checks).
pub fn segment_mean(x: &[f32], out: &mut [f32], frames: usize, channels: usize, seg_len: usize) {
    let s_n = segments(frames, seg_len);
    for c in 0..channels {
        let bounds = |s: usize| (s * seg_len, frames.min((s + 1) * seg_len));
        let total = (0..s_n).fold(0.0f32, |t, s| {
            let (f0, f1) = bounds(s);
            t + column_sum(x, channels, c, f0, f1)
        });
        let mean = total / frames as f32;
        for s in 0..s_n {
            let (f0, f1) = bounds(s);
            out[s * channels + c] = mean + column_sum(x, channels, c, f0, f1) / (f1 - f0) as f32;
        }
    }
}

/// `y[f, c] *= 1 / (1 + exp(−z[f / seg_len, c]))`. `y`: `[T, C]`, `z`: `[S, C]`.
/// The sigmoid is computed once per segment and channel (the kernel computes it per element: the
/// same function of the same value).
pub fn segment_gate(y: &mut [f32], z: &[f32], channels: usize, seg_len: usize) {
    let gates: Vec<f32> = z.iter().map(|&zv| 1.0 / (1.0 + (-zv).exp())).collect();
    for (f, row) in y.chunks_mut(channels).enumerate() {
        for (v, &g) in row.iter_mut().zip(&gates[f / seg_len * channels..][..channels]) {
            *v *= g;
        }
    }
}

/// Statistics pooling: `out[c]` the mean of column c of `x` (`[T, C]`), `out[C + c]` its unbiased
/// standard deviation `√(Σ (x − mean)² / (T − 1))`, two sweeps in order. T ≥ 2 (the caller checks).
pub fn stats_pool(x: &[f32], out: &mut [f32], frames: usize, channels: usize) {
    for c in 0..channels {
        let mean = column_sum(x, channels, c, 0, frames) / frames as f32;
        let ss = (0..frames).fold(0.0f32, |s, f| {
            let d = x[f * channels + c] - mean;
            s + d * d
        });
        out[c] = mean;
        out[channels + c] = (ss / (frames - 1) as f32).sqrt();
    }
}
