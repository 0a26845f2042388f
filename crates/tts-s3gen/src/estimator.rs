//! The flow-matching estimator `ConditionalDecoder` (spec §4.4; decoder.py, matcha/decoder.py,
//! matcha/transformer.py): a 1-D UNet of causal ResNet blocks with the time embedding, each followed
//! by transformer blocks with non-causal key-masked attention; one down, N mid and one up stage.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation};
use tts_kernels::{DType, Device, Tensor, View};

use crate::config::S3GenConfig;
use crate::layers::{Conv1d, LayerNorm, Lens, Linear, apply};
use crate::{MEL_BINS, Result};

/// Channels of the estimator input: x, mu, speaker, cond (80 each, in this order).
pub const ESTIMATOR_IN: usize = 4 * MEL_BINS;
/// Width of the sinusoidal time embedding.
pub(crate) const TIME_SINUSOID: usize = 320;

/// `CausalBlock1D`: `Mish(LayerNorm_C(CausalConv1d_k3(x·mask)))·mask`.
struct Block1D {
    conv: Conv1d,
    norm: LayerNorm,
}

impl Block1D {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, c_in: usize, c_out: usize) -> Result<Block1D> {
        Ok(Block1D {
            conv: Conv1d::load(ck, dev, &format!("{p}.block.0"), [c_out, c_in, 3], false, (2, 0), 1, 1)?,
            norm: LayerNorm::load(ck, dev, &format!("{p}.block.2"), c_out, 1e-5, 1.0)?,
        })
    }

    fn forward(&self, x: View<'_>, lens: &Lens) -> Result<Tensor> {
        let (c, _) = self.conv.forward(x, lens)?;
        let mut n = self.norm.apply(c.view(), DType::F32)?;
        ops::activation_inplace(n.view_mut(), Activation::Mish, None, Some(lens.view()))?;
        Ok(n)
    }
}

/// `CausalResnetBlock1D`: two blocks with the time embedding added between them, plus a 1×1 residual.
struct Resnet {
    block1: Block1D,
    block2: Block1D,
    mlp: Linear,
    res_conv: Conv1d,
}

impl Resnet {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, c_in: usize, c_out: usize, t_dim: usize) -> Result<Resnet> {
        Ok(Resnet {
            block1: Block1D::load(ck, dev, &format!("{p}.block1"), c_in, c_out)?,
            block2: Block1D::load(ck, dev, &format!("{p}.block2"), c_out, c_out)?,
            mlp: Linear::load(ck, dev, &format!("{p}.mlp.1"), c_out, t_dim, true)?,
            res_conv: Conv1d::load(ck, dev, &format!("{p}.res_conv"), [c_out, c_in, 1], false, (0, 0), 1, 1)?,
        })
    }

    /// `x` `[2B, N, C_in]` f32, `mish_t` `[2B, 4C]` (Mish of the time embedding, compute dtype).
    fn forward(&self, x: View<'_>, lens: &Lens, mish_t: View<'_>) -> Result<Tensor> {
        let mut h = self.block1.forward(x, lens)?;
        let t = self.mlp.apply(mish_t, DType::F32)?;
        ops::add_batch_bias(h.view_mut(), t.view())?;
        let mut h = self.block2.forward(h.view(), lens)?;
        let (r, _) = self.res_conv.forward(x, lens)?;
        ops::add_scaled(h.view_mut(), r.view(), 1.0)?;
        Ok(h)
    }
}

/// `BasicTransformerBlock` (diffusers-style, LayerNorm, self-attention without q/k/v biases,
/// GELU feed-forward).
struct TransformerBlock {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm3: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl TransformerBlock {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, c: usize, inner: usize) -> Result<TransformerBlock> {
        Ok(TransformerBlock {
            norm1: LayerNorm::load(ck, dev, &format!("{p}.norm1"), c, 1e-5, 1.0)?,
            q: Linear::load(ck, dev, &format!("{p}.attn1.to_q"), inner, c, false)?,
            k: Linear::load(ck, dev, &format!("{p}.attn1.to_k"), inner, c, false)?,
            v: Linear::load(ck, dev, &format!("{p}.attn1.to_v"), inner, c, false)?,
            out: Linear::load(ck, dev, &format!("{p}.attn1.to_out.0"), c, inner, true)?,
            norm3: LayerNorm::load(ck, dev, &format!("{p}.norm3"), c, 1e-5, 1.0)?,
            ff1: Linear::load(ck, dev, &format!("{p}.ff.net.0.proj"), 4 * c, c, true)?,
            ff2: Linear::load(ck, dev, &format!("{p}.ff.net.2"), c, 4 * c, true)?,
        })
    }

    fn forward(&self, x: &mut Tensor, lens: &Lens, heads: usize, head_dim: usize) -> Result<()> {
        let act = x.device().compute_dtype();
        let a = self.norm1.apply(x.view(), act)?;
        let (q, k, v) = (self.q.apply(a.view(), act)?, self.k.apply(a.view(), act)?, self.v.apply(a.view(), act)?);
        let mut o = Tensor::uninit(x.device(), act, q.shape())?;
        let scale = 1.0 / (head_dim as f64).sqrt() as f32;
        ops::attention_dense(q.view(), k.view(), v.view(), Some(lens.view()), o.view_mut(), heads, scale, false)?;
        let y = self.out.apply(o.view(), DType::F32)?;
        ops::add_scaled(x.view_mut(), y.view(), 1.0)?;
        let f = self.norm3.apply(x.view(), act)?;
        let h = self.ff1.apply(f.view(), DType::F32)?;
        let h = apply(h.view(), act, Activation::Gelu, None)?;
        let y = self.ff2.apply(h.view(), DType::F32)?;
        ops::add_scaled(x.view_mut(), y.view(), 1.0)?;
        Ok(())
    }
}

/// A ResNet block followed by its transformer blocks.
struct Stage {
    resnet: Resnet,
    blocks: Vec<TransformerBlock>,
}

impl Stage {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, c_in: usize, cfg: &S3GenConfig) -> Result<Stage> {
        let c = cfg.decoder_channels;
        let inner = cfg.decoder_num_heads * cfg.decoder_attention_head_dim;
        Ok(Stage {
            resnet: Resnet::load(ck, dev, &format!("{p}.0"), c_in, c, 4 * c)?,
            blocks: (0..cfg.decoder_n_blocks)
                .map(|j| TransformerBlock::load(ck, dev, &format!("{p}.1.{j}"), c, inner))
                .collect::<Result<_>>()?,
        })
    }

    fn forward(&self, x: View<'_>, lens: &Lens, mish_t: View<'_>, cfg: (usize, usize)) -> Result<Tensor> {
        let mut h = self.resnet.forward(x, lens, mish_t)?;
        for b in &self.blocks {
            b.forward(&mut h, lens, cfg.0, cfg.1)?;
        }
        Ok(h)
    }
}

/// The estimator `v(x, mask, mu, t, spks, cond)`.
pub struct Estimator {
    time1: Linear,
    time2: Linear,
    down: Stage,
    down_conv: Conv1d,
    mid: Vec<Stage>,
    up: Stage,
    up_conv: Conv1d,
    final_block: Block1D,
    final_proj: Conv1d,
    heads: usize,
    head_dim: usize,
}

/// `SinusoidalPosEmb(320)(t)` as matcha computes it in f32: `a_j = (1000·t)·exp(j·−(ln 1e4/159))`,
/// `[sin(a), cos(a)]`.
pub fn time_sinusoid(t: f32) -> Vec<f32> {
    let half = TIME_SINUSOID / 2;
    let neg = -((10000f64).ln() / (half - 1) as f64) as f32;
    let scaled = 1000.0f32 * t;
    let a: Vec<f32> = (0..half).map(|j| scaled * (j as f32 * neg).exp()).collect();
    a.iter().map(|v| v.sin()).chain(a.iter().map(|v| v.cos())).collect()
}

impl Estimator {
    pub fn load(ck: &Checkpoint, dev: &Device, cfg: &S3GenConfig) -> Result<Estimator> {
        let c = cfg.decoder_channels;
        let p = "flow.decoder.estimator";
        let conv3 = |name: &str, c_in: usize| Conv1d::load(ck, dev, &format!("{p}.{name}"), [c, c_in, 3], false, (2, 0), 1, 1);
        Ok(Estimator {
            time1: Linear::load(ck, dev, &format!("{p}.time_mlp.linear_1"), 4 * c, TIME_SINUSOID, true)?,
            time2: Linear::load(ck, dev, &format!("{p}.time_mlp.linear_2"), 4 * c, 4 * c, true)?,
            down: Stage::load(ck, dev, &format!("{p}.down_blocks.0"), ESTIMATOR_IN, cfg)?,
            down_conv: conv3("down_blocks.0.2", c)?,
            mid: (0..cfg.decoder_num_mid_blocks)
                .map(|m| Stage::load(ck, dev, &format!("{p}.mid_blocks.{m}"), c, cfg))
                .collect::<Result<_>>()?,
            up: Stage::load(ck, dev, &format!("{p}.up_blocks.0"), 2 * c, cfg)?,
            up_conv: conv3("up_blocks.0.2", c)?,
            final_block: Block1D::load(ck, dev, &format!("{p}.final_block"), c, c)?,
            final_proj: Conv1d::load(ck, dev, &format!("{p}.final_proj"), [MEL_BINS, c, 1], false, (0, 0), 1, 1)?,
            heads: cfg.decoder_num_heads,
            head_dim: cfg.decoder_attention_head_dim,
        })
    }

    /// `time_mlp(SinusoidalPosEmb(t))` for each row: `[rows, 4C]` f32.
    pub fn time_embedding(&self, dev: &Device, t: &[f32]) -> Result<Tensor> {
        let s: Vec<f32> = t.iter().flat_map(|&v| time_sinusoid(v)).collect();
        let s = Tensor::from_f32(dev, dev.compute_dtype(), &[t.len(), TIME_SINUSOID], &s)?;
        let h = self.time1.apply(s.view(), DType::F32)?;
        let h = apply(h.view(), dev.compute_dtype(), Activation::Silu, None)?;
        self.time2.apply(h.view(), DType::F32)
    }

    /// `input` `[2B, N, 320]` (x, mu, spks, cond; f32), `lens` per row, `t_emb` `[2B, 4C]` f32 →
    /// the velocity `[2B, N, 80]` f32 (rows past `lens` are 0).
    pub fn forward(&self, input: View<'_>, lens: &Lens, t_emb: View<'_>) -> Result<Tensor> {
        let dev = input.device();
        let act = dev.compute_dtype();
        let (rows, n) = (input.shape()[0], input.shape()[1]);
        let c = self.up_conv.out_channels();
        let mish_t = apply(t_emb, act, Activation::Mish, None)?;
        let hc = (self.heads, self.head_dim);
        let skip = self.down.forward(input, lens, mish_t.view(), hc)?;
        let (mut h, _) = self.down_conv.forward(skip.view(), lens)?;
        for m in &self.mid {
            h = m.forward(h.view(), lens, mish_t.view(), hc)?;
        }
        let mut cat = Tensor::uninit(dev, DType::F32, &[rows, n, 2 * c])?;
        ops::write_cols(h.view(), cat.view_mut(), 0)?;
        ops::write_cols(skip.view(), cat.view_mut(), c)?;
        let h = self.up.forward(cat.view(), lens, mish_t.view(), hc)?;
        let (h, _) = self.up_conv.forward(h.view(), lens)?;
        let h = self.final_block.forward(h.view(), lens)?;
        let (mut v, _) = self.final_proj.forward(h.view(), lens)?;
        ops::activation_inplace(v.view_mut(), Activation::Identity, None, Some(lens.view()))?;
        Ok(v)
    }
}
