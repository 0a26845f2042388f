//! CAMPPlus's x-vector trunk (`xvector.py:CAMPPlus.xvector`), on time-major `[T][C]` activations:
//!
//! - `tdnn`: `Conv1d(320 → init, k5, stride 2, pad 2)` + BN + ReLU (T → ⌊(T−1)/2⌋ + 1);
//! - three CAM-dense blocks of 12, 24, 16 layers (dilation 1, 2, 2), each layer appending `growth`
//!   channels: `BN+ReLU → 1×1 conv (→ bn_size·growth) → BN+ReLU → CAM layer`, each followed by a
//!   transit layer `BN+ReLU → 1×1 conv` halving the channels;
//! - `out_nonlinear` BN + ReLU; statistics pooling (mean and unbiased std over time);
//! - `dense`: `1×1 conv (2C → embedding)` + BN without affine parameters.
use tts_kernels::checkpoint::Checkpoint;

use super::head::OUT_CHANNELS;
use super::ops::{BatchNorm, Conv1d, gemm_rows};
use crate::Result;

/// (layers, dilation) of the three CAM-dense blocks (kernel 3 in all).
pub const BLOCKS: [(usize, usize); 3] = [(12, 1), (24, 2), (16, 2)];
/// Frames per segment of the CAM layer's segment pooling.
pub const SEG_LEN: usize = 100;

/// The CAM layer (`CAMLayer`): `y = linear_local(x) · σ(linear2(relu(linear1(mean_T(x) + seg_avg(x)))))`,
/// `seg_avg` the mean over 100-frame segments (the last one shorter), broadcast back to its frames.
pub struct CamLayer {
    local: Conv1d,
    /// `[bn/2][bn]`, `[bn/2]`.
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// `[out][bn/2]`, `[out]`.
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl CamLayer {
    /// `p` = `….cam_layer`; `bn` in, `out` channels out, kernel 3 with `dilation`.
    pub fn load(ck: &Checkpoint, p: &str, bn: usize, out: usize, dilation: usize) -> Result<CamLayer> {
        let local = ck.f32(&format!("{p}.linear_local.weight"), &[out, bn, 3])?;
        let w1 = ck.f32(&format!("{p}.linear1.weight"), &[bn / 2, bn, 1])?;
        let b1 = ck.f32(&format!("{p}.linear1.bias"), &[bn / 2])?;
        let w2 = ck.f32(&format!("{p}.linear2.weight"), &[out, bn / 2, 1])?;
        let b2 = ck.f32(&format!("{p}.linear2.bias"), &[out])?;
        Ok(CamLayer::new(&local, w1, b1, w2, b2, (bn, out, 3), dilation))
    }

    /// From PyTorch's weights: `local` `[out][bn][k]`, `w1` `[bn/2][bn]`, `w2` `[out][bn/2]`.
    pub fn new(
        local: &[f32],
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        (bn, out, k): (usize, usize, usize),
        dilation: usize,
    ) -> CamLayer {
        let pad = (k - 1) / 2 * dilation;
        CamLayer { local: Conv1d::new(local, (bn, out, k), 1, dilation, pad), w1, b1, w2, b2 }
    }

    /// `x` `[t][bn]` → `[t][out]`.
    pub fn forward(&self, x: &[f32], t: usize) -> Vec<f32> {
        let (bn, out) = (self.local.c_in, self.local.c_out);
        let half = self.b1.len();
        let mut y = self.local.forward(x, t);
        let mut total = vec![0f64; bn];
        let segs: Vec<Vec<f64>> = x
            .chunks(SEG_LEN * bn)
            .map(|seg| {
                let mut s = vec![0f64; bn];
                for row in seg.chunks(bn) {
                    s.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                }
                total.iter_mut().zip(&s).for_each(|(a, v)| *a += v);
                let n = (seg.len() / bn) as f64;
                s.iter_mut().for_each(|v| *v /= n);
                s
            })
            .collect();
        // the per-segment gate: the context is constant over a segment, and so is the gate
        let gates: Vec<Vec<f32>> = segs
            .iter()
            .map(|seg| {
                let ctx: Vec<f32> = seg.iter().zip(&total).map(|(&s, &m)| (m / t as f64) as f32 + s as f32).collect();
                let h: Vec<f32> = (0..half)
                    .map(|j| {
                        let d: f64 = self.w1[j * bn..(j + 1) * bn].iter().zip(&ctx).map(|(&w, &c)| w as f64 * c as f64).sum();
                        (d as f32 + self.b1[j]).max(0.0)
                    })
                    .collect();
                (0..out)
                    .map(|j| {
                        let d: f64 = self.w2[j * half..(j + 1) * half].iter().zip(&h).map(|(&w, &c)| w as f64 * c as f64).sum();
                        let z = d as f32 + self.b2[j];
                        1.0 / (1.0 + (-z).exp())
                    })
                    .collect()
            })
            .collect();
        for (f, row) in y.chunks_mut(out).enumerate() {
            row.iter_mut().zip(&gates[f / SEG_LEN]).for_each(|(v, &g)| *v *= g);
        }
        y
    }
}

/// One `CAMDenseTDNNLayer`: `cam(relu(bn2(linear1(relu(bn1(x))))))`.
struct DenseLayer {
    bn1: BatchNorm,
    linear1: Conv1d,
    bn2: BatchNorm,
    cam: CamLayer,
}

impl DenseLayer {
    /// Reads the first `bn1.len()` channels of `feat` (`[t][stride]`) → `[t][growth]`.
    fn forward(&self, feat: &[f32], stride: usize, t: usize) -> Vec<f32> {
        // BatchNorm + ReLU applied to each row as the 1×1 convolution gathers it
        let mut z = gemm_rows(t, &self.linear1.w, |r, buf| self.bn1.relu_row(&feat[r * stride..][..stride], buf));
        self.bn2.apply(&mut z, true);
        self.cam.forward(&z, t)
    }
}

/// A CAM-dense block and the transit layer after it.
struct Block {
    layers: Vec<DenseLayer>,
    growth: usize,
    transit_bn: BatchNorm,
    transit: Conv1d,
}

impl Block {
    /// `x` `[t][c0]` → `[t][(c0 + layers·growth) / 2]`.
    fn forward(&self, x: &[f32], c0: usize, t: usize) -> Vec<f32> {
        let total = c0 + self.layers.len() * self.growth;
        let mut feat = vec![0f32; t * total];
        for (dst, src) in feat.chunks_mut(total).zip(x.chunks(c0)) {
            dst[..c0].copy_from_slice(src);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let y = layer.forward(&feat, total, t);
            let at = c0 + i * self.growth;
            for (dst, src) in feat.chunks_mut(total).zip(y.chunks(self.growth)) {
                dst[at..at + self.growth].copy_from_slice(src);
            }
        }
        gemm_rows(t, &self.transit.w, |r, buf| self.transit_bn.relu_row(&feat[r * total..][..total], buf))
    }
}

/// The trunk after the head.
pub struct XVector {
    tdnn: Conv1d,
    tdnn_bn: BatchNorm,
    blocks: Vec<Block>,
    out_bn: BatchNorm,
    /// `[embedding][2C]`.
    dense: Vec<f32>,
    dense_bn: BatchNorm,
    /// Channels before statistics pooling.
    channels: usize,
}

/// The trunk's sizes (`CAMPPlus(growth_rate, bn_size, init_channels, embedding_size)`).
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub growth: usize,
    pub bn_size: usize,
    pub init_channels: usize,
    pub embedding: usize,
}

impl XVector {
    /// `p` = `speaker_encoder.xvector`.
    pub fn load(ck: &Checkpoint, p: &str, s: Sizes) -> Result<XVector> {
        let init = s.init_channels;
        let tdnn = Conv1d::load(ck, &format!("{p}.tdnn.linear.weight"), (OUT_CHANNELS, init, 5), 2, 1, 2)?;
        let tdnn_bn = BatchNorm::load(ck, &format!("{p}.tdnn.nonlinear.batchnorm"), init, true)?;
        let bn_ch = s.bn_size * s.growth;
        let mut c = init;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (b, &(n, dilation)) in BLOCKS.iter().enumerate() {
            let mut layers = Vec::with_capacity(n);
            for i in 0..n {
                let lp = format!("{p}.block{}.tdnnd{}", b + 1, i + 1);
                let c_in = c + i * s.growth;
                layers.push(DenseLayer {
                    bn1: BatchNorm::load(ck, &format!("{lp}.nonlinear1.batchnorm"), c_in, true)?,
                    linear1: Conv1d::load(ck, &format!("{lp}.linear1.weight"), (c_in, bn_ch, 1), 1, 1, 0)?,
                    bn2: BatchNorm::load(ck, &format!("{lp}.nonlinear2.batchnorm"), bn_ch, true)?,
                    cam: CamLayer::load(ck, &format!("{lp}.cam_layer"), bn_ch, s.growth, dilation)?,
                });
            }
            c += n * s.growth;
            let tp = format!("{p}.transit{}", b + 1);
            blocks.push(Block {
                layers,
                growth: s.growth,
                transit_bn: BatchNorm::load(ck, &format!("{tp}.nonlinear.batchnorm"), c, true)?,
                transit: Conv1d::load(ck, &format!("{tp}.linear.weight"), (c, c / 2, 1), 1, 1, 0)?,
            });
            c /= 2;
        }
        Ok(XVector {
            tdnn,
            tdnn_bn,
            blocks,
            out_bn: BatchNorm::load(ck, &format!("{p}.out_nonlinear.batchnorm"), c, true)?,
            dense: ck.f32(&format!("{p}.dense.linear.weight"), &[s.embedding, 2 * c, 1])?,
            dense_bn: BatchNorm::load(ck, &format!("{p}.dense.nonlinear.batchnorm"), s.embedding, false)?,
            channels: c,
        })
    }

    /// Frames after the strided TDNN layer for `t` head frames.
    pub fn frames(&self, t: usize) -> usize {
        self.tdnn.out_t(t)
    }

    /// `x` `[t][320]` (the head's output) → the embedding. Needs [`Self::frames`]`(t) >= 2` (an
    /// unbiased std over one frame is undefined); the caller checks.
    pub fn forward(&self, x: &[f32], t: usize) -> Vec<f32> {
        let mut y = self.tdnn.forward(x, t);
        let t = self.tdnn.out_t(t);
        self.tdnn_bn.apply(&mut y, true);
        let mut c = self.tdnn.c_out;
        for block in &self.blocks {
            y = block.forward(&y, c, t);
            c = block.transit.c_out;
        }
        self.out_bn.apply(&mut y, true);
        // statistics pooling: mean, then unbiased std, per channel
        let mut mean = vec![0f64; c];
        for row in y.chunks(c) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= t as f64);
        let mut var = vec![0f64; c];
        for row in y.chunks(c) {
            var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), m)| *s += (v as f64 - m) * (v as f64 - m));
        }
        let stats: Vec<f32> =
            mean.iter().map(|&m| m as f32).chain(var.iter().map(|&s| (s / (t - 1) as f64).sqrt() as f32)).collect();
        let emb = self.dense.len() / (2 * self.channels);
        let mut e: Vec<f32> = (0..emb)
            .map(|j| {
                self.dense[j * 2 * c..(j + 1) * 2 * c].iter().zip(&stats).map(|(&w, &s)| w as f64 * s as f64).sum::<f64>() as f32
            })
            .collect();
        self.dense_bn.apply(&mut e, false);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::campplus::test_rng::Rng;

    /// `CAMLayer.forward` written out as the reference does it, channel-major `[bn][t]`, f64: the
    /// context per frame (`mean + seg_pooling` expanded and cut to t), both 1×1 convs per frame.
    fn naive_cam(
        x: &[f32],
        (bn, t): (usize, usize),
        local: &[f32],
        (out, k, d): (usize, usize, usize),
        w: [&[f32]; 4],
    ) -> Vec<f64> {
        let [w1, b1, w2, b2] = w;
        let half = bn / 2;
        let pad = (k - 1) / 2 * d;
        let xv = |c: usize, f: isize| if f < 0 || f >= t as isize { 0.0 } else { x[c * t + f as usize] as f64 };
        let mean: Vec<f64> = (0..bn).map(|c| (0..t).map(|f| xv(c, f as isize)).sum::<f64>() / t as f64).collect();
        let mut y = vec![0f64; out * t];
        for f in 0..t {
            let s0 = f / SEG_LEN * SEG_LEN;
            let s1 = (s0 + SEG_LEN).min(t);
            let ctx: Vec<f64> =
                (0..bn).map(|c| mean[c] + (s0..s1).map(|g| xv(c, g as isize)).sum::<f64>() / (s1 - s0) as f64).collect();
            let h: Vec<f64> = (0..half)
                .map(|j| ((0..bn).map(|c| w1[j * bn + c] as f64 * ctx[c]).sum::<f64>() + b1[j] as f64).max(0.0))
                .collect();
            for o in 0..out {
                let z = (0..half).map(|j| w2[o * half + j] as f64 * h[j]).sum::<f64>() + b2[o] as f64;
                let m = 1.0 / (1.0 + (-z).exp());
                let mut acc = 0.0;
                for c in 0..bn {
                    for j in 0..k {
                        acc += local[(o * bn + c) * k + j] as f64 * xv(c, (f + j * d) as isize - pad as isize);
                    }
                }
                y[o * t + f] = acc * m;
            }
        }
        y
    }

    #[test]
    fn cam_layer_matches_the_reference_formula() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let mut rng = Rng(seed);
        // t spans a partial last segment (and, for 37, only one); odd channel counts
        for &(bn, out, t, d) in &[(10, 7, 253, 2), (6, 5, 37, 1), (14, 3, 300, 2)] {
            let x = rng.vec(bn * t); // [bn][t]
            let local = rng.vec(out * bn * 3);
            let (w1, b1, w2, b2) = (rng.vec(bn / 2 * bn), rng.vec(bn / 2), rng.vec(out * bn / 2), rng.vec(out));
            let want = naive_cam(&x, (bn, t), &local, (out, 3, d), [&w1, &b1, &w2, &b2]);
            let cam = CamLayer::new(&local, w1, b1, w2, b2, (bn, out, 3), d);
            let mut xt = vec![0f32; x.len()];
            for c in 0..bn {
                for f in 0..t {
                    xt[f * bn + c] = x[c * t + f];
                }
            }
            let got = cam.forward(&xt, t);
            assert_eq!(got.len(), t * out);
            for o in 0..out {
                for f in 0..t {
                    let (g, e) = (got[f * out + o] as f64, want[o * t + f]);
                    assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "bn {bn} t {t}: ch {o} frame {f}: {g} vs {e}");
                }
            }
        }
    }
}
