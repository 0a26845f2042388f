//! `AudioEncoderV2` on a [`Device`] through tts-kernels' ops: the same computation as the host
//! [`super::encoder::Encoder`], so that the tokenizer runs on the kernel backends (Cuda, and Emu for
//! tests) where T3 and S3Gen do. On [`Device::cpu`] it is the f32 encoder again (tested against the
//! host one); on Cuda/Emu the activations are bf16 (f32 residual stream, f32 softmax and
//! accumulation), within bf16 tolerance of the f32 encoder: a hidden value that lands within that
//! tolerance of an FSQ rounding boundary can give another token there.
//!
//! ```text
//! conv1, conv2    im2col (stride 2, padding 1, 3 taps) → linear → GELU
//! each block      a = layer_norm(x)
//!                 qkv = a·[Wq; Wk; Wv]ᵀ + [bq; 0; bv]                 one GEMM, [T, 3D]
//!                 fsmn = depthwise_conv1d(v part of qkv, 31 taps, pad 15) + v
//!                 q, K, V = rope_kv_write(qkv) at positions 0..T      K, V: [1, H, T, 64]
//!                 o = attention_cached(q, K, V, every row over all T positions, scale 1/8)
//!                 x += o·Woᵀ + bo;  x += fsmn
//!                 x += GELU(layer_norm(x)·W1ᵀ + b1)·W2ᵀ + b2           feed_forward_residual
//! ```
//!
//! The reference scales q and k by `64^(−1/4)` each before the product; here the score is scaled by
//! `1/8` once (the same value up to rounding).
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation, DepthwiseConv, FeedForward, FeedForwardScratch, Im2col, PadMode};
use tts_kernels::{DType, Device, Tensor, View};

use super::block::{FSMN_KERNEL, FSMN_LEFT, LN_EPS, fsmn_taps, rope_freqs};
use super::config::{HEAD_DIM, TokenizerConfig};
use super::encoder::{CONV_KERNEL, conv_out_len};
use super::mel::{LogMel, N_MELS};
use crate::device_linear::DeviceLinear;
use crate::{Error, Result};

/// LayerNorm weight and bias in the compute dtype.
struct DeviceNorm {
    w: Tensor,
    b: Tensor,
}

impl DeviceNorm {
    fn load(ck: &Checkpoint, dev: &Device, name: &str, d: usize) -> Result<DeviceNorm> {
        let act = dev.compute_dtype();
        let t =
            |part: &str| -> Result<Tensor> { Ok(Tensor::from_f32(dev, act, &[d], &ck.f32(&format!("{name}.{part}"), &[d])?)?) };
        Ok(DeviceNorm { w: t("weight")?, b: t("bias")? })
    }

    /// LayerNorm of the f32 stream `x` `[T, D]` into a new tensor in the compute dtype.
    fn apply(&self, x: View<'_>) -> Result<Tensor> {
        let mut out = Tensor::uninit(x.device(), x.device().compute_dtype(), x.shape())?;
        ops::layer_norm(x, self.w.view(), Some(self.b.view()), out.view_mut(), LN_EPS)?;
        Ok(out)
    }
}

struct DeviceBlock {
    attn_ln: DeviceNorm,
    /// `[Wq; Wk; Wv]` `[3D, D]` with bias `[bq; 0; bv]`.
    qkv: DeviceLinear,
    /// The FSMN taps tap-major, `[31, D]` f32.
    fsmn: Tensor,
    out: DeviceLinear,
    mlp_ln: DeviceNorm,
    mlp1: DeviceLinear,
    mlp2: DeviceLinear,
}

impl DeviceBlock {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, d: usize) -> Result<DeviceBlock> {
        let t = |name: &str, shape: &[usize]| ck.f32(&format!("{p}{name}"), shape);
        let mut w = t("attn.query.weight", &[d, d])?;
        w.extend(t("attn.key.weight", &[d, d])?);
        w.extend(t("attn.value.weight", &[d, d])?);
        let mut b = t("attn.query.bias", &[d])?;
        b.extend(std::iter::repeat_n(0.0, d));
        b.extend(t("attn.value.bias", &[d])?);
        let fsmn = fsmn_taps(ck, p, d)?;
        let lin = |name: &str, n: usize, k: usize| -> Result<DeviceLinear> {
            DeviceLinear::new(dev, &t(&format!("{name}.weight"), &[n, k])?, Some(&t(&format!("{name}.bias"), &[n])?), n, k)
        };
        Ok(DeviceBlock {
            attn_ln: DeviceNorm::load(ck, dev, &format!("{p}attn_ln"), d)?,
            qkv: DeviceLinear::new(dev, &w, Some(&b), 3 * d, d)?,
            fsmn: Tensor::from_f32(dev, DType::F32, &[FSMN_KERNEL, d], &fsmn)?,
            out: lin("attn.out", d, d)?,
            mlp_ln: DeviceNorm::load(ck, dev, &format!("{p}mlp_ln"), d)?,
            mlp1: lin("mlp.0", 4 * d, d)?,
            mlp2: lin("mlp.2", d, 4 * d)?,
        })
    }

    /// `x` `[1, T, D]` f32 through the block, in place.
    fn forward(&self, x: &mut Tensor, at: &Positions, inv_freq: &Tensor) -> Result<()> {
        let dev = x.device().clone();
        let (t, d) = (x.shape()[1], x.shape()[2]);
        let heads = d / HEAD_DIM;
        let act = dev.compute_dtype();
        let a = self.attn_ln.apply(x.view().reshape(&[t, d])?)?;
        let qkv = self.qkv.apply(a.view(), act)?;
        let mut fsmn = Tensor::uninit(&dev, DType::F32, &[1, t, d])?;
        let memory = DepthwiseConv { col_offset: 2 * d, pad_left: FSMN_LEFT, residual: true };
        ops::depthwise_conv1d(qkv.view().reshape(&[1, t, 3 * d])?, self.fsmn.view(), fsmn.view_mut(), memory)?;
        let mut q = Tensor::uninit(&dev, act, &[t, d])?;
        let cache = [1, heads, t, HEAD_DIM];
        let (mut k, mut v) = (Tensor::uninit(&dev, dev.kv_dtype(), &cache)?, Tensor::uninit(&dev, dev.kv_dtype(), &cache)?);
        ops::rope_kv_write(
            qkv.view(),
            at.positions.view(),
            at.slots.view(),
            inv_freq.view(),
            q.view_mut(),
            k.view_mut(),
            v.view_mut(),
        )?;
        let mut att = Tensor::uninit(&dev, act, &[t, d])?;
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        ops::attention_cached(q.view(), k.view(), v.view(), at.slots.view(), at.lens.view(), att.view_mut(), scale)?;
        let o = self.out.apply(att.view(), DType::F32)?;
        ops::add_scaled(x.view_mut().reshape(&[t, d])?, o.view(), 1.0)?;
        ops::add_scaled(x.view_mut(), fsmn.view(), 1.0)?;
        let a = self.mlp_ln.apply(x.view().reshape(&[t, d])?)?;
        let f = 4 * d;
        let (mut hidden, mut activated, mut y) = (
            Tensor::uninit(&dev, DType::F32, &[t, f])?,
            Tensor::uninit(&dev, act, &[t, f])?,
            Tensor::uninit(&dev, DType::F32, &[t, d])?,
        );
        let ff = FeedForward {
            w1: self.mlp1.w.view(),
            b1: self.mlp1.b.as_ref().map(|b| b.view()),
            act: Activation::Gelu,
            w2: self.mlp2.w.view(),
            b2: self.mlp2.b.as_ref().map(|b| b.view()),
        };
        let scratch = FeedForwardScratch { hidden: hidden.view_mut(), activated: activated.view_mut(), y: y.view_mut() };
        ops::feed_forward_residual(ff, a.view(), x.view_mut().reshape(&[t, d])?, scratch)?;
        Ok(())
    }
}

/// The i32 tensors of one utterance of `T` rows for RoPE and the cached attention: positions
/// `0..T`, every row in slot 0, every row attending to all `T` positions (no causal mask).
struct Positions {
    positions: Tensor,
    slots: Tensor,
    lens: Tensor,
}

impl Positions {
    fn new(dev: &Device, t: usize) -> Result<Positions> {
        let t32 = i32::try_from(t).map_err(|_| Error::Input { field: "mel", detail: format!("{t} encoder rows") })?;
        Ok(Positions {
            positions: Tensor::from_i32(dev, &[t], &(0..t32).collect::<Vec<_>>())?,
            slots: Tensor::from_i32(dev, &[t], &vec![0; t])?,
            lens: Tensor::from_i32(dev, &[t], &vec![t32; t])?,
        })
    }
}

/// The encoder's weights on a device.
pub struct DeviceEncoder {
    d: usize,
    /// `conv1` `[D, 128·3]` (torch's `(D, 128, 3)` as it is: the im2col column `c·3 + j`).
    conv1: DeviceLinear,
    /// `conv2` `[D, D·3]`.
    conv2: DeviceLinear,
    blocks: Vec<DeviceBlock>,
    /// RoPE frequencies `1 / 10000^(2j/64)`, `[32]` f32.
    inv_freq: Tensor,
}

impl DeviceEncoder {
    /// Reads `{prefix}conv{1,2}.*` and `{prefix}blocks.{i}.*` (prefix `tokenizer.encoder.`) onto `dev`.
    pub fn load(ck: &Checkpoint, prefix: &str, config: &TokenizerConfig, dev: &Device) -> Result<DeviceEncoder> {
        let d = config.tokenizer_n_state;
        let t = |name: &str, shape: &[usize]| ck.f32(&format!("{prefix}{name}"), shape);
        let conv = |name: &str, c_in: usize| -> Result<DeviceLinear> {
            let w = t(&format!("{name}.weight"), &[d, c_in, CONV_KERNEL])?;
            DeviceLinear::new(dev, &w, Some(&t(&format!("{name}.bias"), &[d])?), d, c_in * CONV_KERNEL)
        };
        let blocks = (0..config.tokenizer_n_layer)
            .map(|i| DeviceBlock::load(ck, dev, &format!("{prefix}blocks.{i}."), d))
            .collect::<Result<_>>()?;
        Ok(DeviceEncoder {
            d,
            conv1: conv("conv1", N_MELS)?,
            conv2: conv("conv2", d)?,
            blocks,
            inv_freq: Tensor::from_f32(dev, DType::F32, &[HEAD_DIM / 2], &rope_freqs())?,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.inv_freq.device()
    }

    /// The encoder output of one utterance's mel, `[T_tok, D]` row-major f32 on the host, as
    /// [`super::encoder::Encoder::forward`]. A mel without frames is an error.
    pub fn forward(&self, mel: &LogMel) -> Result<Vec<f32>> {
        let frames = mel.frames;
        if frames == 0 || mel.data.len() != N_MELS * frames {
            return Err(Error::Input {
                field: "mel",
                detail: format!("{} values for {frames} frames of {N_MELS} bands (needs at least one frame)", mel.data.len()),
            });
        }
        let dev = self.device();
        let act = dev.compute_dtype();
        // the mel time-major, [1, frames, 128]
        let mut tm = vec![0f32; frames * N_MELS];
        for (c, band) in mel.data.chunks_exact(frames).enumerate() {
            for (i, &v) in band.iter().enumerate() {
                tm[i * N_MELS + c] = v;
            }
        }
        let x = Tensor::from_f32(dev, DType::F32, &[1, frames, N_MELS], &tm)?;
        let h1 = self.conv_gelu(&self.conv1, x.view(), act)?;
        let mut x = self.conv_gelu(&self.conv2, h1.view(), DType::F32)?;
        let t = x.shape()[1];
        let at = Positions::new(dev, t)?;
        for block in &self.blocks {
            block.forward(&mut x, &at, &self.inv_freq)?;
        }
        Ok(x.to_f32_vec()?)
    }

    /// `GELU(Conv1d(k 3, stride 2, padding 1)(x))`: `x` `[1, L, C]` → `[1, ⌈L/2⌉, D]` in `dtype`.
    fn conv_gelu(&self, conv: &DeviceLinear, x: View<'_>, dtype: DType) -> Result<Tensor> {
        let dev = x.device();
        let (l, c) = (x.shape()[1], x.shape()[2]);
        let l_out = conv_out_len(l);
        let mut cols = Tensor::uninit(dev, dev.compute_dtype(), &[1, l_out, c * CONV_KERNEL])?;
        let geometry = Im2col { kernel: CONV_KERNEL, stride: 2, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero };
        ops::im2col(x, None, cols.view_mut(), geometry)?;
        let h = conv.apply(cols.view().reshape(&[l_out, c * CONV_KERNEL])?, DType::F32)?;
        let mut out = Tensor::uninit(dev, dtype, &[1, l_out, self.d])?;
        ops::activation(h.view().reshape(&[1, l_out, self.d])?, out.view_mut(), Activation::Gelu, None, None)?;
        Ok(out)
    }
}
