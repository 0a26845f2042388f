//! CAMPPlus on a [`Device`] through tts-kernels' ops: the computation of the host [`super::head`]
//! and [`super::xvector`], so that the speaker encoder runs on the kernel backends (Cuda, and Emu
//! for tests) where the tokenizer, T3 and S3Gen do. It runs in f32 on every backend: weights,
//! activations and GEMMs ([`ops::linear`]'s precise variant: on Cuda, cuBLAS in f32 without TF32).
//! CAMPPlus is small (about 11 GFLOP for 10 s of audio, 5 in the head, 6 in the trunk) and deep
//! (over a hundred convolutions in sequence), so bf16 would buy little time and cost the embedding
//! its precision: in bf16 activations it moved by up to 2e-2 (relative L2) from the f32 one on
//! random weights. The fbank stays on the host.
//!
//! Layouts are the host's: channels-last, the head's images `[H = bands][W = frames][C]`, the trunk
//! time-major `[T][C]`. Every convolution is im2col + GEMM ([`ops::im2col`], [`ops::linear`]):
//!
//! ```text
//! 3×3 Conv2d, stride (s, 1)   a = im2col over frames of [H, W, C] (3 taps, pad 1)      [H, W, 3C]
//!                             b = im2col over bands of [1, H, W·3C] (3 taps, stride s)  [Ho·W, 9C]
//!                             y = b·W'ᵀ, W'[o, (c·3 + kx)·3 + ky] = W[o, c, ky, kx]
//! 1×1 Conv2d, stride (s, 1)   im2col over bands of [1, H, W·C] (1 tap, stride s), GEMM
//! head → trunk                im2col over bands of [1, 10, T·32] with 10 taps: [T, 32·10]
//!                             (channel c·10 + band, the reference's flatten)
//! BatchNorm (+ residual, ReLU)  ops::batch_norm, after each convolution and before each
//!                             CAM-dense layer's and transit layer's 1×1 convolution
//! CAM layer                   y = im2col(3 taps, dilation d)·Wᵀ; ctx = segment_mean(x, 100);
//!                             y *= σ(W2·relu(W1·ctx + b1) + b2) per segment (segment_gate)
//! statistics pooling          stats_pool → dense GEMM → BatchNorm without affine parameters
//! ```
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation, BatchNormCols, Im2col, PadMode};
use tts_kernels::{DType, Device, Tensor, View};

use super::head::{BANDS_IN, BANDS_OUT, CHANNELS, OUT_CHANNELS};
use super::ops::BatchNorm;
use super::xvector::{BLOCKS, SEG_LEN, Sizes};
use crate::Result;
use crate::device_linear::DeviceLinear;

/// An eval-mode BatchNorm's folded scale and shift, f32 on the device.
struct DeviceBn {
    scale: Tensor,
    shift: Tensor,
}

impl DeviceBn {
    fn load(ck: &Checkpoint, dev: &Device, prefix: &str, c: usize, affine: bool) -> Result<DeviceBn> {
        let bn = BatchNorm::load(ck, prefix, c, affine)?;
        Ok(DeviceBn { scale: Tensor::from_f32(dev, F32, &[c], &bn.scale)?, shift: Tensor::from_f32(dev, F32, &[c], &bn.shift)? })
    }

    /// `act(bn(x[:, col_offset..col_offset + C]) + residual)` as a new `[rows, C]`.
    fn apply(&self, x: View<'_>, col_offset: usize, residual: Option<View<'_>>, relu: bool) -> Result<Tensor> {
        let mut out = Tensor::uninit(x.device(), F32, &[x.rows(), self.scale.len()])?;
        let p = BatchNormCols { col_offset, relu };
        ops::batch_norm(x, self.scale.view(), self.shift.view(), residual, out.view_mut(), p)?;
        Ok(out)
    }
}

/// The dtype of every weight and activation here.
const F32: DType = DType::F32;

/// `x` `[B, L, C]` unfolded for a convolution along L: a new `[B, l_out, C·kernel]` (column
/// `c·kernel + j`), zero-padded.
fn unfold(x: View<'_>, l_out: usize, kernel: usize, stride: usize, dilation: usize, pad_left: usize) -> Result<Tensor> {
    let dev = x.device();
    let (b, c) = (x.shape()[0], x.shape()[2]);
    let mut cols = Tensor::uninit(dev, F32, &[b, l_out, c * kernel])?;
    let p = Im2col { kernel, stride, dilation, pad_left, upsample: 1, pad: PadMode::Zero };
    ops::im2col(x, None, cols.view_mut(), p)?;
    Ok(cols)
}

/// A `Conv1d` weight `name` of torch's shape `[n, c, k]` (and, with `bias`, the `[n]` tensor of that
/// name) as an f32 linear layer `[n, c·k]` (column `c·k + j`, the order [`unfold`] writes).
fn conv_linear(ck: &Checkpoint, dev: &Device, name: &str, [n, c, k]: [usize; 3], bias: Option<&str>) -> Result<DeviceLinear> {
    let b = bias.map(|b| ck.f32(b, &[n])).transpose()?;
    DeviceLinear::precise(dev, &ck.f32(name, &[n, c, k])?, b.as_deref(), n, c * k)
}

/// A bias-free `Conv2d` with a square odd kernel `k`, stride `(stride, 1)`, padding `k/2`.
struct DeviceConv2d {
    /// `[C_out, k·k·C_in]`, column `(c·k + kx)·k + ky`.
    lin: DeviceLinear,
    k: usize,
    stride: usize,
    c_in: usize,
}

impl DeviceConv2d {
    fn load(ck: &Checkpoint, dev: &Device, name: &str, (c_in, c_out): (usize, usize), k: usize, stride: usize) -> Result<Self> {
        let w = ck.f32(name, &[c_out, c_in, k, k])?;
        let mut perm = vec![0f32; w.len()];
        for o in 0..c_out {
            for c in 0..c_in {
                for ky in 0..k {
                    for kx in 0..k {
                        perm[o * k * k * c_in + (c * k + kx) * k + ky] = w[((o * c_in + c) * k + ky) * k + kx];
                    }
                }
            }
        }
        Ok(DeviceConv2d { lin: DeviceLinear::precise(dev, &perm, None, c_out, k * k * c_in)?, k, stride, c_in })
    }

    fn out_h(&self, h: usize) -> usize {
        (h + 2 * (self.k / 2) - self.k) / self.stride + 1
    }

    /// `x` `[h][w][C_in]` → `[out_h·w, C_out]` f32.
    fn forward(&self, x: View<'_>, h: usize, w: usize) -> Result<Tensor> {
        let (k, c, ho) = (self.k, self.c_in, self.out_h(h));
        let cols = if k == 1 {
            unfold(x.reshape(&[1, h, w * c])?, ho, 1, self.stride, 1, 0)?
        } else {
            let a = unfold(x.reshape(&[h, w, c])?, w, k, 1, 1, k / 2)?;
            unfold(a.view().reshape(&[1, h, w * c * k])?, ho, k, self.stride, 1, k / 2)?
        };
        self.lin.apply(cols.view().reshape(&[ho * w, k * k * c])?, F32)
    }
}

/// `BasicResBlock` (see [`super::head`]).
struct DeviceResBlock {
    conv1: DeviceConv2d,
    bn1: DeviceBn,
    conv2: DeviceConv2d,
    bn2: DeviceBn,
    shortcut: Option<(DeviceConv2d, DeviceBn)>,
}

impl DeviceResBlock {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, stride: usize) -> Result<DeviceResBlock> {
        let c = CHANNELS;
        let bn = |name: &str| DeviceBn::load(ck, dev, &format!("{p}.{name}"), c, true);
        Ok(DeviceResBlock {
            conv1: DeviceConv2d::load(ck, dev, &format!("{p}.conv1.weight"), (c, c), 3, stride)?,
            bn1: bn("bn1")?,
            conv2: DeviceConv2d::load(ck, dev, &format!("{p}.conv2.weight"), (c, c), 3, 1)?,
            bn2: bn("bn2")?,
            shortcut: if stride != 1 {
                Some((DeviceConv2d::load(ck, dev, &format!("{p}.shortcut.0.weight"), (c, c), 1, stride)?, bn("shortcut.1")?))
            } else {
                None
            },
        })
    }

    /// `x` `[h][t][32]` → `[h'][t][32]` and h'.
    fn forward(&self, x: &Tensor, h: usize, t: usize) -> Result<(Tensor, usize)> {
        let y = self.conv1.forward(x.view(), h, t)?;
        let y = self.bn1.apply(y.view(), 0, None, true)?;
        let ho = self.conv1.out_h(h);
        let y = self.conv2.forward(y.view(), ho, t)?;
        let out = match &self.shortcut {
            Some((conv, bn)) => {
                let s = conv.forward(x.view(), h, t)?;
                let s = bn.apply(s.view(), 0, None, false)?;
                self.bn2.apply(y.view(), 0, Some(s.view()), true)?
            }
            None => self.bn2.apply(y.view(), 0, Some(x.view().reshape(&[ho * t, CHANNELS])?), true)?,
        };
        Ok((out, ho))
    }
}

/// The FCM head (see [`super::head`]).
struct DeviceHead {
    conv1: DeviceConv2d,
    bn1: DeviceBn,
    blocks: Vec<DeviceResBlock>,
    conv2: DeviceConv2d,
    bn2: DeviceBn,
}

impl DeviceHead {
    fn load(ck: &Checkpoint, dev: &Device, prefix: &str) -> Result<DeviceHead> {
        let mut blocks = Vec::with_capacity(4);
        for layer in 1..=2 {
            for (i, stride) in [2, 1].into_iter().enumerate() {
                blocks.push(DeviceResBlock::load(ck, dev, &format!("{prefix}.layer{layer}.{i}"), stride)?);
            }
        }
        let c = CHANNELS;
        Ok(DeviceHead {
            conv1: DeviceConv2d::load(ck, dev, &format!("{prefix}.conv1.weight"), (1, c), 3, 1)?,
            bn1: DeviceBn::load(ck, dev, &format!("{prefix}.bn1"), c, true)?,
            blocks,
            conv2: DeviceConv2d::load(ck, dev, &format!("{prefix}.conv2.weight"), (c, c), 3, 2)?,
            bn2: DeviceBn::load(ck, dev, &format!("{prefix}.bn2"), c, true)?,
        })
    }

    /// `feats` `[t][80]` (the host fbank) → `[1, 1, t·320]`, i.e. `[t][320]` (channel `c·10 + band`),
    ///.
    fn forward(&self, dev: &Device, feats: &[f32], t: usize) -> Result<Tensor> {
        // [80][t][1]: the fbank transposed, bands as the image's height
        let mut img = vec![0f32; BANDS_IN * t];
        for (f, row) in feats.chunks_exact(BANDS_IN).enumerate() {
            for (b, &v) in row.iter().enumerate() {
                img[b * t + f] = v;
            }
        }
        let x = Tensor::from_f32(dev, F32, &[BANDS_IN, t, 1], &img)?;
        let y = self.conv1.forward(x.view(), BANDS_IN, t)?;
        let mut y = self.bn1.apply(y.view(), 0, None, true)?;
        let mut h = BANDS_IN;
        for block in &self.blocks {
            (y, h) = block.forward(&y, h, t)?;
        }
        let y = self.conv2.forward(y.view(), h, t)?;
        let y = self.bn2.apply(y.view(), 0, None, true)?;
        debug_assert_eq!(self.conv2.out_h(h), BANDS_OUT);
        // [10][t][32] → [t][32·10]: 10 taps over the bands gather each frame's channels band-last
        unfold(y.view().reshape(&[1, BANDS_OUT, t * CHANNELS])?, 1, BANDS_OUT, 1, 1, 0)
    }
}

/// The CAM layer (see [`super::xvector::CamLayer`]).
struct DeviceCam {
    /// `[out, bn·3]` (torch's `[out][bn][3]` as it is: column `c·3 + j`).
    local: DeviceLinear,
    dilation: usize,
    bn: usize,
    /// `[bn/2, bn]` + bias, f32 (a few rows: one per segment).
    linear1: DeviceLinear,
    /// `[out, bn/2]` + bias, f32.
    linear2: DeviceLinear,
}

impl DeviceCam {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, bn: usize, out: usize, dilation: usize) -> Result<DeviceCam> {
        let half = bn / 2;
        let lin = |name: &str, shape: [usize; 3], bias: bool| {
            conv_linear(ck, dev, &format!("{p}.{name}.weight"), shape, bias.then(|| format!("{p}.{name}.bias")).as_deref())
        };
        Ok(DeviceCam {
            local: lin("linear_local", [out, bn, 3], false)?,
            dilation,
            bn,
            linear1: lin("linear1", [half, bn, 1], true)?,
            linear2: lin("linear2", [out, half, 1], true)?,
        })
    }

    /// `z` `[t, bn]` → `[t, out]` f32.
    fn forward(&self, z: View<'_>, t: usize) -> Result<Tensor> {
        let dev = z.device();
        let d = self.dilation;
        let cols = unfold(z.reshape(&[1, t, self.bn])?, t, 3, 1, d, d)?;
        let mut y = self.local.apply(cols.view().reshape(&[t, 3 * self.bn])?, F32)?;
        let segments = t.div_ceil(SEG_LEN);
        let mut ctx = Tensor::uninit(dev, F32, &[segments, self.bn])?;
        ops::segment_mean(z, ctx.view_mut(), SEG_LEN)?;
        let h = self.linear1.apply(ctx.view(), F32)?;
        let mut hr = Tensor::uninit(dev, F32, h.shape())?;
        // ReLU (a leaky ReLU of slope 0: a negative value gives −0, which sums as 0)
        ops::activation(h.view(), hr.view_mut(), Activation::LeakyRelu(0.0), None, None)?;
        let gate = self.linear2.apply(hr.view(), F32)?;
        ops::segment_gate(y.view_mut(), gate.view(), SEG_LEN)?;
        Ok(y)
    }
}

/// One `CAMDenseTDNNLayer`.
struct DeviceDenseLayer {
    bn1: DeviceBn,
    linear1: DeviceLinear,
    bn2: DeviceBn,
    cam: DeviceCam,
}

impl DeviceDenseLayer {
    /// Reads the first `C_in` columns of `feat` `[t, total]` → `[t, growth]` f32.
    fn forward(&self, feat: View<'_>, t: usize) -> Result<Tensor> {
        let h = self.bn1.apply(feat, 0, None, true)?;
        let z = self.linear1.apply(h.view(), F32)?;
        let z = self.bn2.apply(z.view(), 0, None, true)?;
        self.cam.forward(z.view(), t)
    }
}

/// A CAM-dense block and its transit layer.
struct DeviceBlock {
    layers: Vec<DeviceDenseLayer>,
    growth: usize,
    transit_bn: DeviceBn,
    /// `[C/2, C]`.
    transit: DeviceLinear,
}

impl DeviceBlock {
    /// `x` `[t, c0]` → `[t, (c0 + layers·growth) / 2]` f32.
    fn forward(&self, x: View<'_>, t: usize) -> Result<Tensor> {
        let (dev, c0) = (x.device(), x.row_len());
        let total = c0 + self.layers.len() * self.growth;
        let mut feat = Tensor::uninit(dev, F32, &[1, t, total])?;
        ops::write_cols(x.reshape(&[1, t, c0])?, feat.view_mut(), 0)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let y = layer.forward(feat.view().reshape(&[t, total])?, t)?;
            ops::write_cols(y.view().reshape(&[1, t, self.growth])?, feat.view_mut(), c0 + i * self.growth)?;
        }
        let h = self.transit_bn.apply(feat.view().reshape(&[t, total])?, 0, None, true)?;
        self.transit.apply(h.view(), F32)
    }
}

/// CAMPPlus (FCM head and x-vector trunk) on a device.
pub struct DeviceCampPlus {
    head: DeviceHead,
    /// `[init, 320·5]`.
    tdnn: DeviceLinear,
    tdnn_bn: DeviceBn,
    blocks: Vec<DeviceBlock>,
    out_bn: DeviceBn,
    /// `[embedding, 2C]`, f32 (one row).
    dense: DeviceLinear,
    dense_bn: DeviceBn,
    dev: Device,
}

impl DeviceCampPlus {
    /// Reads `{prefix}.head.*` and `{prefix}.xvector.*` (prefix `speaker_encoder`) onto `dev`, every
    /// tensor's shape checked against `s`.
    pub fn load(ck: &Checkpoint, prefix: &str, s: Sizes, dev: &Device) -> Result<DeviceCampPlus> {
        let p = format!("{prefix}.xvector");
        let init = s.init_channels;
        let lin = |name: &str, shape: [usize; 3]| conv_linear(ck, dev, name, shape, None);
        let bn = |name: &str, c: usize| DeviceBn::load(ck, dev, name, c, true);
        let bn_ch = s.bn_size * s.growth;
        let mut c = init;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (b, &(n, dilation)) in BLOCKS.iter().enumerate() {
            let mut layers = Vec::with_capacity(n);
            for i in 0..n {
                let lp = format!("{p}.block{}.tdnnd{}", b + 1, i + 1);
                let c_in = c + i * s.growth;
                layers.push(DeviceDenseLayer {
                    bn1: bn(&format!("{lp}.nonlinear1.batchnorm"), c_in)?,
                    linear1: lin(&format!("{lp}.linear1.weight"), [bn_ch, c_in, 1])?,
                    bn2: bn(&format!("{lp}.nonlinear2.batchnorm"), bn_ch)?,
                    cam: DeviceCam::load(ck, dev, &format!("{lp}.cam_layer"), bn_ch, s.growth, dilation)?,
                });
            }
            let total = c + n * s.growth;
            let tp = format!("{p}.transit{}", b + 1);
            blocks.push(DeviceBlock {
                layers,
                growth: s.growth,
                transit_bn: bn(&format!("{tp}.nonlinear.batchnorm"), total)?,
                transit: lin(&format!("{tp}.linear.weight"), [total / 2, total, 1])?,
            });
            c = total / 2;
        }
        Ok(DeviceCampPlus {
            head: DeviceHead::load(ck, dev, &format!("{prefix}.head"))?,
            tdnn: lin(&format!("{p}.tdnn.linear.weight"), [init, OUT_CHANNELS, 5])?,
            tdnn_bn: bn(&format!("{p}.tdnn.nonlinear.batchnorm"), init)?,
            blocks,
            out_bn: bn(&format!("{p}.out_nonlinear.batchnorm"), c)?,
            dense: lin(&format!("{p}.dense.linear.weight"), [s.embedding, 2 * c, 1])?,
            dense_bn: DeviceBn::load(ck, dev, &format!("{p}.dense.nonlinear.batchnorm"), s.embedding, false)?,
            dev: dev.clone(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The x-vector of an fbank `feats` `[t][80]` (time mean removed), `[embedding]` on the host.
    /// Needs `t ≥ 3` (two frames after the strided TDNN layer); the caller checks.
    pub fn forward(&self, feats: &[f32], t: usize) -> Result<Vec<f32>> {
        let dev = &self.dev;
        let x = self.head.forward(dev, feats, t)?;
        // TDNN: Conv1d(320 → init, k5, stride 2, pad 2) + BN + ReLU
        let t2 = (t - 1) / 2 + 1;
        let cols = unfold(x.view().reshape(&[1, t, OUT_CHANNELS])?, t2, 5, 2, 1, 2)?;
        let y = self.tdnn.apply(cols.view().reshape(&[t2, OUT_CHANNELS * 5])?, F32)?;
        let mut y = self.tdnn_bn.apply(y.view(), 0, None, true)?;
        for block in &self.blocks {
            y = block.forward(y.view(), t2)?;
        }
        let y = self.out_bn.apply(y.view(), 0, None, true)?;
        let c = y.shape()[1];
        let mut stats = Tensor::uninit(dev, F32, &[2 * c])?;
        ops::stats_pool(y.view(), stats.view_mut())?;
        let e = self.dense.apply(stats.view().reshape(&[1, 2 * c])?, F32)?;
        let e = self.dense_bn.apply(e.view(), 0, None, false)?;
        Ok(e.to_f32_vec()?)
    }
}
