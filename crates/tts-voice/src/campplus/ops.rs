//! The layers CAMPPlus is made of, on the host in f32: eval-mode BatchNorm, convolutions as
//! im2col + GEMM (the Cpu backend's packed GEMM, multi-threaded).
//!
//! Layouts are channels-last: a 1-D activation is `[T][C]` (time-major), a 2-D one `[H][W][C]`
//! (here H = mel bands, W = time). A convolution's output positions are the GEMM's rows, its
//! weights (PyTorch's `[C_out][C_in][k…]`) are permuted once at load to `[C_out][k…][C_in]` so that
//! each im2col row is a few contiguous copies of `C_in` values, and packed for the Cpu backend's
//! GEMM ([`tts_kernels::cpu::gemm_panels`]).
use rayon::prelude::*;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::cpu;

use crate::Result;

/// `torch.nn.BatchNorm{1,2}d` in eval mode, as PyTorch's CPU kernel computes it:
/// `y = x·scale + shift` with `scale = γ/√(var + ε)`, `shift = β − mean·scale` (ε = 1e-5).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// BatchNorm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

impl BatchNorm {
    /// `{prefix}.{weight,bias,running_mean,running_var}`, `[c]` each; without `affine`, only the
    /// running statistics (γ = 1, β = 0).
    pub fn load(ck: &Checkpoint, prefix: &str, c: usize, affine: bool) -> Result<BatchNorm> {
        let mean = ck.f32(&format!("{prefix}.running_mean"), &[c])?;
        let var = ck.f32(&format!("{prefix}.running_var"), &[c])?;
        let (gamma, beta) = if affine {
            (ck.f32(&format!("{prefix}.weight"), &[c])?, ck.f32(&format!("{prefix}.bias"), &[c])?)
        } else {
            (vec![1.0; c], vec![0.0; c])
        };
        Ok(BatchNorm::from_stats(&gamma, &beta, &mean, &var))
    }

    /// From γ, β and the running statistics.
    pub fn from_stats(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32]) -> BatchNorm {
        let scale: Vec<f32> = gamma.iter().zip(var).map(|(&g, &v)| (g as f64 / (v as f64 + BN_EPS).sqrt()) as f32).collect();
        let shift = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| (b as f64 - m as f64 * s as f64) as f32).collect();
        BatchNorm { scale, shift }
    }

    /// Channels.
    pub fn len(&self) -> usize {
        self.scale.len()
    }

    /// Whether it has no channels.
    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// In place on channels-last `x` (`[…][C]`, C = [`Self::len`]), then ReLU when `relu`.
    pub fn apply(&self, x: &mut [f32], relu: bool) {
        let c = self.len();
        x.par_chunks_mut(c * 64).for_each(|rows| {
            for row in rows.chunks_mut(c) {
                for ((v, &s), &t) in row.iter_mut().zip(&self.scale).zip(&self.shift) {
                    let y = *v * s + t;
                    *v = if relu { y.max(0.0) } else { y };
                }
            }
        });
    }

    /// `dst[c] = relu(bn(src[c]))` for the first C values of `src` (a row of a dense block's feature
    /// map, whose rows are wider: a GEMM's input row, as [`gemm_rows`] gathers it).
    pub fn relu_row(&self, src: &[f32], dst: &mut [f32]) {
        for (((d, &v), &s), &t) in dst.iter_mut().zip(&src[..self.len()]).zip(&self.scale).zip(&self.shift) {
            *d = (v * s + t).max(0.0);
        }
    }
}

/// A `[n][k]` weight (`y = x·wᵀ`) packed once, at load, for [`tts_kernels::cpu::gemm_panels`] (the
/// Cpu backend's GEMM: AVX2+FMA register tiles over panels of 16 output columns, row blocks on
/// rayon's pool; each output one f32 FMA chain over `k`).
#[derive(Clone, Debug)]
pub struct Packed {
    panels: Vec<f32>,
    pub n: usize,
    pub k: usize,
}

impl Packed {
    /// From the row-major `[n][k]` weight.
    pub fn new(w: &[f32], n: usize, k: usize) -> Packed {
        let mut panels = vec![0f32; cpu::packed_gemm_len(n, k)];
        cpu::pack_gemm(w, n, k, &mut panels);
        Packed { panels, n, k }
    }

    /// `x` `[m][k]` → `x·wᵀ` `[m][n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * self.n];
        cpu::gemm_panels(x, &self.panels, None, &mut out, m, self.n, self.k);
        out
    }
}

/// Output rows gathered and multiplied by one task of [`gemm_rows`]: a GEMM row block
/// (`cpu::gemm_panels` runs up to 96 rows on the calling thread), so that the gathered rows (at most
/// 96 × 288 values for the head's 3×3 convolutions: 110 KB) are still in the core's cache when the
/// GEMM reads them.
const TASK_ROWS: usize = 96;

/// `out[r] = col(r) · wᵀ` for `rows` rows, where `gather(r, buf)` writes row `r` of the im2col matrix
/// (`w.k` values) into `buf`: rayon tasks of [`TASK_ROWS`] rows each gather their rows into a
/// buffer of their own and multiply them by the packed weight (the values do not depend on the
/// blocking: each output is one FMA chain over `k`). Returns `[rows][w.n]`.
pub fn gemm_rows(rows: usize, w: &Packed, gather: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    let mut out = vec![0f32; rows * n];
    if n == 0 || k == 0 {
        return out;
    }
    out.par_chunks_mut(TASK_ROWS * n).enumerate().for_each_init(Vec::new, |col: &mut Vec<f32>, (blk, o)| {
        let m = o.len() / n;
        col.resize(m * k, 0.0);
        for (j, buf) in col.chunks_exact_mut(k).take(m).enumerate() {
            gather(blk * TASK_ROWS + j, buf);
        }
        cpu::gemm_panels(&col[..m * k], &w.panels, None, o, m, n, k);
    });
    out
}

/// PyTorch's `[C_out][C_in][k]` (k = the kernel's spatial taps, flattened) as `[C_out][k][C_in]`.
pub fn taps_last_to_channels_last(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut p = vec![0f32; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for j in 0..k {
                p[(o * k + j) * c_in + c] = w[(o * c_in + c) * k + j];
            }
        }
    }
    p
}

/// A bias-free `Conv2d` with a square kernel `k` (odd), stride `(stride, 1)` and padding `k/2` on
/// both axes (CAMPPlus's FCM head: 3×3 with padding 1, 1×1 with padding 0).
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[C_out][k][k][C_in]`, packed.
    pub w: Packed,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
}

impl Conv2d {
    /// `name` of shape `[c_out, c_in, k, k]`.
    pub fn load(ck: &Checkpoint, name: &str, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Conv2d> {
        let w = ck.f32(name, &[c_out, c_in, k, k])?;
        Ok(Conv2d::new(&w, c_in, c_out, k, stride))
    }

    /// From PyTorch's `[c_out][c_in][k][k]` weight.
    pub fn new(w: &[f32], c_in: usize, c_out: usize, k: usize, stride: usize) -> Conv2d {
        let w = Packed::new(&taps_last_to_channels_last(w, c_out, c_in, k * k), c_out, k * k * c_in);
        Conv2d { w, c_in, c_out, k, stride }
    }

    /// Output height for input height `h`: `(h + 2·(k/2) − k) / stride + 1`.
    pub fn out_h(&self, h: usize) -> usize {
        (h + 2 * (self.k / 2) - self.k) / self.stride + 1
    }

    /// `x` `[h][w][C_in]` → `[out_h][w][C_out]`.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), h * w * self.c_in);
        let (k, c, pad, s) = (self.k, self.c_in, (self.k / 2) as isize, self.stride);
        let ho = self.out_h(h);
        gemm_rows(ho * w, &self.w, |r, buf| {
            let (oy, ox) = (r / w, r % w);
            for ky in 0..k {
                let iy = (oy * s) as isize + ky as isize - pad;
                for kx in 0..k {
                    let ix = ox as isize + kx as isize - pad;
                    let dst = &mut buf[(ky * k + kx) * c..][..c];
                    if iy < 0 || iy >= h as isize || ix < 0 || ix >= w as isize {
                        dst.fill(0.0);
                    } else {
                        dst.copy_from_slice(&x[(iy as usize * w + ix as usize) * c..][..c]);
                    }
                }
            }
        })
    }
}

/// A bias-free `Conv1d` with kernel `k`, stride, dilation and symmetric zero padding.
#[derive(Clone, Debug)]
pub struct Conv1d {
    /// `[C_out][k][C_in]`, packed.
    pub w: Packed,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: usize,
}

impl Conv1d {
    /// `name` of shape `[c_out, c_in, k]`.
    pub fn load(
        ck: &Checkpoint,
        name: &str,
        (c_in, c_out, k): (usize, usize, usize),
        stride: usize,
        dilation: usize,
        pad: usize,
    ) -> Result<Conv1d> {
        let w = ck.f32(name, &[c_out, c_in, k])?;
        Ok(Conv1d::new(&w, (c_in, c_out, k), stride, dilation, pad))
    }

    /// From PyTorch's `[c_out][c_in][k]` weight.
    pub fn new(w: &[f32], (c_in, c_out, k): (usize, usize, usize), stride: usize, dilation: usize, pad: usize) -> Conv1d {
        let w = Packed::new(&taps_last_to_channels_last(w, c_out, c_in, k), c_out, k * c_in);
        Conv1d { w, c_in, c_out, k, stride, dilation, pad }
    }

    /// Output frames for `t` input frames (0 when the kernel does not fit).
    pub fn out_t(&self, t: usize) -> usize {
        let span = self.dilation * (self.k - 1) + 1;
        if t + 2 * self.pad < span { 0 } else { (t + 2 * self.pad - span) / self.stride + 1 }
    }

    /// `x` `[t][C_in]` → `[out_t][C_out]`.
    pub fn forward(&self, x: &[f32], t: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), t * self.c_in);
        let c = self.c_in;
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            return self.w.matmul(x, t);
        }
        gemm_rows(self.out_t(t), &self.w, |r, buf| {
            for j in 0..self.k {
                let i = (r * self.stride + j * self.dilation) as isize - self.pad as isize;
                let dst = &mut buf[j * c..][..c];
                if i < 0 || i >= t as isize {
                    dst.fill(0.0);
                } else {
                    dst.copy_from_slice(&x[i as usize * c..][..c]);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::campplus::test_rng::Rng;

    /// PyTorch's Conv2d written out: NCHW input, `[C_out][C_in][k][k]` weight, f64 sums.
    fn naive_conv2d(
        x: &[f32],
        (c_in, h, w): (usize, usize, usize),
        wt: &[f32],
        (c_out, k, s): (usize, usize, usize),
    ) -> Vec<f64> {
        let p = (k / 2) as isize;
        let ho = (h + 2 * (k / 2) - k) / s + 1;
        let mut out = vec![0f64; c_out * ho * w];
        for o in 0..c_out {
            for y in 0..ho {
                for xx in 0..w {
                    let mut acc = 0f64;
                    for c in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = ((y * s) as isize + ky as isize - p, xx as isize + kx as isize - p);
                                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                    acc += x[(c * h + iy as usize) * w + ix as usize] as f64
                                        * wt[((o * c_in + c) * k + ky) * k + kx] as f64;
                                }
                            }
                        }
                    }
                    out[(o * ho + y) * w + xx] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn conv2d_matches_a_naive_convolution() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let mut rng = Rng(seed);
        // odd sizes; W spans several row blocks of gemm_rows
        for &(c_in, c_out, h, w, k, s) in
            &[(3, 5, 11, 53, 3, 2), (1, 7, 9, 301, 3, 1), (5, 3, 13, 37, 1, 2), (6, 4, 10, 17, 3, 2)]
        {
            let x = rng.vec(c_in * h * w);
            let wt = rng.vec(c_out * c_in * k * k);
            let conv = Conv2d::new(&wt, c_in, c_out, k, s);
            // channels-last input
            let mut xl = vec![0f32; x.len()];
            for c in 0..c_in {
                for i in 0..h * w {
                    xl[i * c_in + c] = x[c * h * w + i];
                }
            }
            let got = conv.forward(&xl, h, w);
            let want = naive_conv2d(&x, (c_in, h, w), &wt, (c_out, k, s));
            let ho = conv.out_h(h);
            assert_eq!(got.len(), ho * w * c_out);
            for o in 0..c_out {
                for i in 0..ho * w {
                    let (g, e) = (got[i * c_out + o] as f64, want[o * ho * w + i]);
                    assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{c_in}->{c_out} k{k} s{s}: ch {o} pos {i}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn conv1d_matches_a_naive_convolution() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let mut rng = Rng(seed);
        for &(c_in, c_out, t, k, s, d, p) in
            &[(7, 5, 301, 3, 1, 2, 2), (13, 6, 97, 5, 2, 1, 2), (9, 11, 150, 1, 1, 1, 0), (4, 3, 5, 3, 1, 2, 2)]
        {
            let x = rng.vec(t * c_in); // [t][c_in]
            let wt = rng.vec(c_out * c_in * k);
            let conv = Conv1d::new(&wt, (c_in, c_out, k), s, d, p);
            let got = conv.forward(&x, t);
            let to = conv.out_t(t);
            assert_eq!(got.len(), to * c_out);
            for o in 0..c_out {
                for y in 0..to {
                    let mut acc = 0f64;
                    for c in 0..c_in {
                        for j in 0..k {
                            let i = (y * s + j * d) as isize - p as isize;
                            if i >= 0 && i < t as isize {
                                acc += x[i as usize * c_in + c] as f64 * wt[(o * c_in + c) * k + j] as f64;
                            }
                        }
                    }
                    let g = got[y * c_out + o] as f64;
                    assert!((g - acc).abs() <= 1e-5 * (1.0 + acc.abs()), "k{k} s{s} d{d}: ch {o} t {y}: {g} vs {acc}");
                }
            }
        }
    }

    #[test]
    fn batchnorm_is_the_eval_mode_formula() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let mut rng = Rng(seed);
        let c = 7;
        let (g, b, m) = (rng.vec(c), rng.vec(c), rng.vec(c));
        let v: Vec<f32> = rng.vec(c).iter().map(|x| x.abs() + 0.01).collect();
        let bn = BatchNorm::from_stats(&g, &b, &m, &v);
        let x = rng.vec(3 * 9);
        let mut got = vec![f32::NAN; 3 * c];
        for (dst, src) in got.chunks_mut(c).zip(x.chunks(9)) {
            bn.relu_row(src, dst);
        }
        let mut whole = x.clone();
        let bn9 =
            BatchNorm { scale: [bn.scale.clone(), vec![1.0; 2]].concat(), shift: [bn.shift.clone(), vec![0.0; 2]].concat() };
        bn9.apply(&mut whole, true);
        for r in 0..3 {
            for ch in 0..c {
                let xv = x[r * 9 + ch] as f64;
                let want = ((xv - m[ch] as f64) / (v[ch] as f64 + 1e-5).sqrt() * g[ch] as f64 + b[ch] as f64).max(0.0);
                assert!((got[r * c + ch] as f64 - want).abs() < 1e-5, "row {r} ch {ch}");
                assert_eq!(got[r * c + ch], whole[r * 9 + ch]);
            }
        }
    }
}
