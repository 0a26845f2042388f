//! The building blocks S3Gen is assembled from, on the op API of tts-kernels: linear layers,
//! convolutions (im2col + GEMM, or straight from the input on Cpu), transposed convolutions (GEMM + overlap-add) and LayerNorm.
//!
//! Layout: time-major `[batch, time, channels]`. Dtype rule: the streams between layers are f32;
//! only GEMM inputs are in the device's compute dtype (an im2col, a LayerNorm or an activation
//! writes them), so a bf16 device rounds once per GEMM input and never the running state.
use std::sync::Arc;

use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation, Conv1dPlan, Im2col, PadMode};
use tts_kernels::{DType, Device, Tensor, View, ViewMut};

use crate::{Error, Result};

/// Valid lengths of a padded batch: on the host (shapes, trimming) and on the device (kernels).
/// Cloning shares the device tensor.
#[derive(Clone)]
/// The two copies are private: they are made together and never drift apart.
pub struct Lens {
    host: Vec<usize>,
    dev: Arc<Tensor>,
}

impl Lens {
    /// Uploads `lens` (one allocation, one host-to-device copy).
    pub fn new(dev: &Device, lens: &[usize]) -> Result<Lens> {
        let v: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        Ok(Lens { host: lens.to_vec(), dev: Arc::new(Tensor::from_i32(dev, &[lens.len()], &v)?) })
    }

    /// The lengths mapped through `f` (e.g. the output lengths of a layer). When `f` changes none of
    /// them (a same-length conv) the device tensor is shared: no allocation, no copy.
    pub fn map(&self, f: impl Fn(usize) -> usize) -> Result<Lens> {
        let l: Vec<usize> = self.host.iter().map(|&x| f(x)).collect();
        if l == self.host {
            return Ok(self.clone());
        }
        Lens::new(self.dev.device(), &l)
    }

    /// The same lengths for the batch repeated twice (the two CFG halves).
    pub fn doubled(&self) -> Result<Lens> {
        let l: Vec<usize> = self.host.iter().chain(&self.host).copied().collect();
        Lens::new(self.dev.device(), &l)
    }

    pub fn view(&self) -> View<'_> {
        self.dev.view()
    }

    /// The lengths on the host.
    pub fn host(&self) -> &[usize] {
        &self.host
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.host.len()
    }

    pub fn max(&self) -> usize {
        self.host.iter().copied().max().unwrap_or(0)
    }
}

/// A new tensor `act(x)` in `dtype` (a copy or a dtype conversion with `Identity`), with rows past
/// `lens` zeroed when given.
pub fn apply(x: View<'_>, dtype: DType, act: Activation, lens: Option<&Lens>) -> Result<Tensor> {
    let mut out = Tensor::uninit(x.device(), dtype, x.shape())?;
    ops::activation(x, out.view_mut(), act, None, lens.map(|l| l.view()))?;
    Ok(out)
}

/// The first `shape.iter().product()` elements of a flat scratch tensor, as `shape` (scratch is
/// allocated once for the largest use and viewed at each use's shape).
pub fn scratch_mut<'a>(t: &'a mut Tensor, shape: &[usize]) -> Result<ViewMut<'a>> {
    let n: usize = shape.iter().product();
    if n > t.len() {
        return Err(Error::Misuse(format!("scratch of {} elements for a {shape:?} buffer", t.len())));
    }
    let len = t.len();
    Ok(t.view_mut().reshape(&[len])?.narrow_rows(0, n)?.reshape(shape)?)
}

/// [`scratch_mut`], read-only.
pub fn scratch<'a>(t: &'a Tensor, shape: &[usize]) -> Result<View<'a>> {
    let n: usize = shape.iter().product();
    if n > t.len() {
        return Err(Error::Misuse(format!("scratch of {} elements for a {shape:?} buffer", t.len())));
    }
    Ok(t.view().reshape(&[t.len()])?.narrow_rows(0, n)?.reshape(shape)?)
}

/// `x` in the device's compute dtype (the input of a GEMM).
pub fn to_act(x: View<'_>) -> Result<Tensor> {
    let act = x.device().compute_dtype();
    apply(x, act, Activation::Identity, None)
}

/// A PyTorch `Linear`: weight `[n, k]` in the device's weight dtype, bias `[n]` in the compute dtype.
/// The weight is packed for GEMMs over many rows (`ops::pack_gemm_weight`): every S3Gen layer meets
/// hundreds of frames or more per call.
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// `{name}.weight` `[n, k]` and, with `bias`, `{name}.bias` `[n]`.
    pub fn load(ck: &Checkpoint, dev: &Device, name: &str, n: usize, k: usize, bias: bool) -> Result<Linear> {
        let w = ck.f32(&format!("{name}.weight"), &[n, k])?;
        let b = if bias { Some(ck.f32(&format!("{name}.bias"), &[n])?) } else { None };
        Linear::from_f32(dev, &w, n, k, b.as_deref())
    }

    pub fn from_f32(dev: &Device, w: &[f32], n: usize, k: usize, b: Option<&[f32]>) -> Result<Linear> {
        Ok(Linear {
            w: ops::pack_gemm_weight(Tensor::from_f32(dev, dev.weight_dtype(), &[n, k], w)?)?,
            b: b.map(|b| Tensor::from_f32(dev, dev.compute_dtype(), &[n], b)).transpose()?,
        })
    }

    /// A precise layer: f32 weights, bias, inputs and outputs on every backend (an f32 GEMM).
    pub fn from_f32_precise(dev: &Device, w: &[f32], n: usize, k: usize, b: Option<&[f32]>) -> Result<Linear> {
        Ok(Linear {
            w: ops::pack_gemm_weight(Tensor::from_f32(dev, DType::F32, &[n, k], w)?)?,
            b: b.map(|b| Tensor::from_f32(dev, DType::F32, &[n], b)).transpose()?,
        })
    }

    /// The dtype of this layer's inputs: f32 for a precise layer, else the compute dtype.
    pub fn input_dtype(&self) -> DType {
        if self.w.dtype() == DType::F32 { DType::F32 } else { self.w.device().compute_dtype() }
    }

    pub fn out_features(&self) -> usize {
        self.w.shape()[0]
    }

    /// `x · wᵀ + b` into a new tensor of `x`'s leading shape and `dtype` (f32 or the compute dtype).
    pub fn apply(&self, x: View<'_>, dtype: DType) -> Result<Tensor> {
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("a linear input has a last dim") = self.out_features();
        let mut out = Tensor::uninit(x.device(), dtype, &shape)?;
        self.apply_into(x, out.view_mut())?;
        Ok(out)
    }

    /// `x · wᵀ + b` into `out` (`x`'s leading shape, `out_features` last; f32 or the compute dtype).
    pub fn apply_into(&self, x: View<'_>, out: ViewMut<'_>) -> Result<()> {
        Ok(ops::linear(x, self.w.view(), self.b.as_ref().map(|b| b.view()), out)?)
    }
}

/// Folds a weight-norm parametrization (`torch.nn.utils.parametrizations.weight_norm`, dim 0):
/// `w[i] = g[i] · v[i] / ‖v[i]‖` over each dim-0 slice, computed in f64 and rounded once.
pub fn fold_weight_norm(g: &[f32], v: &[f32]) -> Vec<f32> {
    let per = v.len() / g.len().max(1);
    let mut w = Vec::with_capacity(v.len());
    for (gi, vi) in g.iter().zip(v.chunks(per.max(1))) {
        let norm = vi.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
        w.extend(vi.iter().map(|&x| ((*gi as f64) * (x as f64) / norm) as f32));
    }
    w
}

/// A convolution weight `(C_out, C_in, K)` under `name`: plain (`{name}.weight`) or weight-normed
/// (`{name}.parametrizations.weight.original0/1`), folded.
pub fn conv_weight(ck: &Checkpoint, name: &str, shape: [usize; 3], weight_norm: bool) -> Result<Vec<f32>> {
    if !weight_norm {
        return Ok(ck.f32(&format!("{name}.weight"), &shape)?);
    }
    let g = ck.f32(&format!("{name}.parametrizations.weight.original0"), &[shape[0], 1, 1])?;
    let v = ck.f32(&format!("{name}.parametrizations.weight.original1"), &shape)?;
    Ok(fold_weight_norm(&g, &v))
}

/// A 1-D convolution (`Conv1d`, optionally with an explicit left padding as `CausalConv1d` or
/// `F.pad` before it), run as its [`Conv1dPlan`] says: im2col + GEMM, or straight from the input
/// (`ops::conv1d_packed`: no `[rows, C_in·K]` buffer) where tts-kernels plans it so.
pub struct Conv1d {
    /// The GEMM weight `[C_out, C_in·K]`: torch's order (column `c·K + j`) for im2col, tap-major
    /// (column `j·C_in + c`) for [`Conv1dPlan::Direct`] (private: its layout depends on the plan).
    lin: Linear,
    pub c_in: usize,
    geom: Im2col,
    /// Padding after the last sample (zeros or reflection per `geom.pad`).
    pub pad_right: usize,
    /// How tts-kernels runs this conv on its device (and so the weight's layout).
    plan: Conv1dPlan,
}

impl Conv1d {
    /// Loads `{name}` with weight `(c_out, c_in, k)` and a bias.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ck: &Checkpoint,
        dev: &Device,
        name: &str,
        [c_out, c_in, k]: [usize; 3],
        weight_norm: bool,
        (pad_left, pad_right): (usize, usize),
        stride: usize,
        dilation: usize,
    ) -> Result<Conv1d> {
        Conv1d::load_with(ck, dev, name, [c_out, c_in, k], weight_norm, (pad_left, pad_right), stride, dilation, false)
    }

    /// [`Conv1d::load`], optionally `precise` (f32 weights and an f32 GEMM on every backend; on Cpu a
    /// stride-1 conv runs as `ops::conv1d_packed` either way).
    #[allow(clippy::too_many_arguments)]
    pub fn load_with(
        ck: &Checkpoint,
        dev: &Device,
        name: &str,
        [c_out, c_in, k]: [usize; 3],
        weight_norm: bool,
        (pad_left, pad_right): (usize, usize),
        stride: usize,
        dilation: usize,
        precise: bool,
    ) -> Result<Conv1d> {
        let geom = Im2col { kernel: k, stride, dilation, pad_left, upsample: 1, pad: PadMode::Zero };
        Conv1d::load_geom(ck, dev, name, [c_out, c_in, k], weight_norm, geom, pad_right, precise)
    }

    /// [`Conv1d::load`] of a convolution over its input upsampled ×`upsample` by repetition
    /// (nearest), zero padding `(pad_left, pad_right)` after the upsampling, stride 1.
    pub fn load_upsampled(
        ck: &Checkpoint,
        dev: &Device,
        name: &str,
        [c_out, c_in, k]: [usize; 3],
        (pad_left, pad_right): (usize, usize),
        upsample: usize,
    ) -> Result<Conv1d> {
        let geom = Im2col { kernel: k, stride: 1, dilation: 1, pad_left, upsample, pad: PadMode::Zero };
        Conv1d::load_geom(ck, dev, name, [c_out, c_in, k], false, geom, pad_right, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn load_geom(
        ck: &Checkpoint,
        dev: &Device,
        name: &str,
        [c_out, c_in, k]: [usize; 3],
        weight_norm: bool,
        geom: Im2col,
        pad_right: usize,
        precise: bool,
    ) -> Result<Conv1d> {
        let w = conv_weight(ck, name, [c_out, c_in, k], weight_norm)?;
        let b = ck.f32(&format!("{name}.bias"), &[c_out])?;
        let plan = Conv1dPlan::for_device(dev, &geom);
        let w = plan.gemm_weight(w, c_out, c_in, k)?;
        let lin = if precise {
            Linear::from_f32_precise(dev, &w, c_out, c_in * k, Some(&b))?
        } else {
            Linear::from_f32(dev, &w, c_out, c_in * k, Some(&b))?
        };
        Ok(Conv1d { lin, c_in, geom, pad_right, plan })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.lin.out_features()
    }

    /// Output length for an input of `l` samples.
    pub fn out_len(&self, l: usize) -> usize {
        let g = &self.geom;
        let span = (g.kernel - 1) * g.dilation + 1;
        let padded = l * g.upsample + g.pad_left + self.pad_right;
        if padded < span { 0 } else { (padded - span) / g.stride + 1 }
    }

    /// `x` `[B, L, C_in]` (f32 or the compute dtype; rows past `lens` read as zero) →
    /// `[B, out_len(L), C_out]` f32 (its lengths: [`Conv1d::out_lens`]).
    pub fn forward(&self, x: View<'_>, lens: &Lens) -> Result<Tensor> {
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let dev = x.device();
        let mut y = Tensor::uninit(dev, DType::F32, &[b, self.out_len(l), self.lin.out_features()])?;
        let mut cols = match self.cols_len(b, l) {
            0 => None,
            n => Some(Tensor::uninit(dev, self.cols_dtype(), &[n])?),
        };
        self.forward_into(x, lens, cols.as_mut(), y.view_mut())?;
        Ok(y)
    }

    /// The output lengths for input lengths `lens` (the same device tensor when the conv keeps every
    /// length; else one upload: call it before the launches it feeds).
    pub fn out_lens(&self, lens: &Lens) -> Result<Lens> {
        lens.map(|n| self.out_len(n))
    }

    /// Elements of the im2col buffer [`Conv1d::forward_into`] needs for an input `[b, l, C_in]` (0
    /// when the conv reads its input directly).
    pub fn cols_len(&self, b: usize, l: usize) -> usize {
        if self.plan == Conv1dPlan::Direct { 0 } else { b * self.out_len(l) * self.c_in * self.geom.kernel }
    }

    /// The dtype of its im2col buffer (its GEMM's input dtype).
    pub fn cols_dtype(&self) -> DType {
        self.lin.input_dtype()
    }

    /// [`Conv1d::forward`] into `out` (`[B, out_len(L), C_out]` f32), with `cols` a flat scratch of at
    /// least [`Conv1d::cols_len`] elements of [`Conv1d::cols_dtype`] (None when that is 0). Allocates
    /// nothing; the output lengths are the caller's (`lens.map(|n| conv.out_len(n))`).
    pub fn forward_into(&self, x: View<'_>, lens: &Lens, cols: Option<&mut Tensor>, out: ViewMut<'_>) -> Result<()> {
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        if self.plan == Conv1dPlan::Direct {
            let g = &self.geom;
            let bias = self.lin.b.as_ref().map(|b| b.view());
            ops::conv1d_packed(x, Some(lens.view()), self.lin.w.view(), bias, out, g.kernel, g.dilation, g.pad_left)?;
            return Ok(());
        }
        let cols = cols.ok_or_else(|| Error::Misuse("a conv through im2col needs a cols buffer".into()))?;
        let mut cols = scratch_mut(cols, &[b, self.out_len(l), self.c_in * self.geom.kernel])?;
        ops::im2col(x, Some(lens.view()), cols.reborrow(), self.geom)?;
        self.lin.apply_into(cols.as_view(), out)
    }
}

/// A `ConvTranspose1d` as GEMM (`[C_out·K, C_in]` weight) + overlap-add.
pub struct ConvTranspose1d {
    pub lin: Linear,
    pub bias: Tensor,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvTranspose1d {
    /// Loads `{name}` with the weight-normed weight `(c_in, c_out, k)` and a bias `[c_out]`.
    pub fn load_weight_norm(
        ck: &Checkpoint,
        dev: &Device,
        name: &str,
        [c_in, c_out, k]: [usize; 3],
        stride: usize,
        pad: usize,
    ) -> Result<ConvTranspose1d> {
        let w = conv_weight(ck, name, [c_in, c_out, k], true)?; // (C_in, C_out, K), norm over dim 0
        // GEMM weight [C_out·K, C_in]: row c·K + j holds w[:, c, j]
        let mut t = vec![0f32; w.len()];
        for i in 0..c_in {
            for c in 0..c_out {
                for j in 0..k {
                    t[(c * k + j) * c_in + i] = w[(i * c_out + c) * k + j];
                }
            }
        }
        let b = ck.f32(&format!("{name}.bias"), &[c_out])?;
        Ok(ConvTranspose1d {
            lin: Linear::from_f32(dev, &t, c_out * k, c_in, None)?,
            bias: Tensor::from_f32(dev, dev.compute_dtype(), &[c_out], &b)?,
            kernel: k,
            stride,
            pad,
        })
    }

    pub fn out_len(&self, l: usize) -> usize {
        ((l.max(1) - 1) * self.stride + self.kernel).saturating_sub(2 * self.pad)
    }

    /// The output lengths for input lengths `lens` (one upload: call it before the launches it feeds).
    pub fn out_lens(&self, lens: &Lens) -> Result<Lens> {
        lens.map(|n| self.out_len(n))
    }

    /// `x` `[B, L, C_in]` in the compute dtype (rows past `lens` ignored) → `[B, out_len(L), C_out]`
    /// f32 (its lengths: [`ConvTranspose1d::out_lens`]).
    pub fn forward(&self, x: View<'_>, lens: &Lens) -> Result<Tensor> {
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let c_out = self.bias.len();
        let cols = self.lin.apply(x, DType::F32)?;
        let mut y = Tensor::uninit(x.device(), DType::F32, &[b, self.out_len(l), c_out])?;
        ops::col2im_transpose(
            cols.view(),
            Some(lens.view()),
            Some(self.bias.view()),
            y.view_mut(),
            self.kernel,
            self.stride,
            self.pad,
        )?;
        Ok(y)
    }
}

/// A `LayerNorm` over channels: weight and bias in the compute dtype.
pub struct LayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    /// `{name}.weight`, `{name}.bias` `[dim]`, both multiplied by `scale` (a folded output scale).
    pub fn load(ck: &Checkpoint, dev: &Device, name: &str, dim: usize, eps: f32, scale: f32) -> Result<LayerNorm> {
        let w: Vec<f32> = ck.f32(&format!("{name}.weight"), &[dim])?.iter().map(|v| v * scale).collect();
        let b: Vec<f32> = ck.f32(&format!("{name}.bias"), &[dim])?.iter().map(|v| v * scale).collect();
        let act = dev.compute_dtype();
        Ok(LayerNorm { w: Tensor::from_f32(dev, act, &[dim], &w)?, b: Tensor::from_f32(dev, act, &[dim], &b)?, eps })
    }

    /// LayerNorm of the f32 stream `x` into a new tensor in `dtype` (f32 or the compute dtype).
    pub fn apply(&self, x: View<'_>, dtype: DType) -> Result<Tensor> {
        let mut out = Tensor::uninit(x.device(), dtype, x.shape())?;
        self.apply_into(x, out.view_mut())?;
        Ok(out)
    }

    /// LayerNorm of the f32 stream `x` into `out` (same shape; f32 or the compute dtype).
    pub fn apply_into(&self, x: View<'_>, out: ViewMut<'_>) -> Result<()> {
        let c = self.w.len();
        let rows = x.len() / c.max(1);
        ops::layer_norm(x.reshape(&[rows, c])?, self.w.view(), Some(self.b.view()), out.reshape(&[rows, c])?, self.eps)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_norm_gives_each_slice_the_norm_g() {
        let v = [3.0f32, 4.0, 0.0, 1.0, 1.0, 1.0];
        let g = [10.0f32, -2.0];
        let w = fold_weight_norm(&g, &v);
        assert_eq!(&w[..3], &[6.0, 8.0, 0.0]);
        let n1: f32 = w[3..].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n1 - 2.0).abs() < 1e-6 && w[3] < 0.0);
    }
}
