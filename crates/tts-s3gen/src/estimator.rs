//! The flow-matching estimator `ConditionalDecoder` (spec §4.4; decoder.py, matcha/decoder.py,
//! matcha/transformer.py): a 1-D UNet of causal ResNet blocks with the time embedding, each followed
//! by transformer blocks with non-causal key-masked attention; one down, N mid and one up stage.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation};
use tts_kernels::{DType, Device, Tensor, View, ViewMut};

use crate::config::S3GenConfig;
use crate::layers::{Conv1d, LayerNorm, Lens, Linear, apply, scratch, scratch_mut};
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

    /// `x` `[rows, n, C_in]` → `out` `[rows, n, C_out]` f32 (every conv of the estimator keeps the
    /// length, so `lens` holds for the output too).
    /// `conv`: a flat f32 buffer for the conv's output; `cols`: the im2col buffer.
    fn forward_into(
        &self,
        x: View<'_>,
        lens: &Lens,
        conv: &mut Tensor,
        cols: &mut Option<Tensor>,
        mut out: ViewMut<'_>,
    ) -> Result<()> {
        let shape = out.shape().to_vec();
        let mut c = scratch_mut(conv, &shape)?;
        self.conv.forward_into(x, lens, cols.as_mut(), c.reborrow())?;
        self.norm.apply_into(c.as_view(), out.reborrow())?;
        ops::activation_inplace(out, Activation::Mish, None, Some(lens.view()))?;
        Ok(())
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

    /// `x` `[2B, N, C_in]` f32, `mish_t` `[2B, 4C]` (Mish of the time embedding, compute dtype) →
    /// `out` `[2B, N, C]` f32.
    fn forward_into(&self, x: View<'_>, lens: &Lens, mish_t: View<'_>, w: &mut Work, mut out: ViewMut<'_>) -> Result<()> {
        let shape = out.shape().to_vec();
        let Work { cols, conv, b1, t, .. } = w;
        let mut h = scratch_mut(b1, &shape)?;
        self.block1.forward_into(x, lens, conv, cols, h.reborrow())?;
        let mut tb = scratch_mut(t, &[shape[0], shape[2]])?;
        self.mlp.apply_into(mish_t, tb.reborrow())?;
        ops::add_batch_bias(h.reborrow(), tb.as_view())?;
        self.block2.forward_into(h.as_view(), lens, conv, cols, out.reborrow())?;
        let mut r = scratch_mut(conv, &shape)?;
        self.res_conv.forward_into(x, lens, cols.as_mut(), r.reborrow())?;
        ops::add_scaled(out, r.as_view(), 1.0)?;
        Ok(())
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

    /// The block on the stream `x` `[2B, N, C]` f32, in place.
    fn forward_into(&self, mut x: ViewMut<'_>, lens: &Lens, heads: usize, head_dim: usize, w: &mut Work) -> Result<()> {
        let s = x.shape().to_vec();
        let inner = self.q.out_features();
        let (sc, si, sf) = ([s[0], s[1], s[2]], [s[0], s[1], inner], [s[0], s[1], self.ff1.out_features()]);
        let mut a = scratch_mut(&mut w.a, &sc)?;
        self.norm1.apply_into(x.as_view(), a.reborrow())?;
        let mut q = scratch_mut(&mut w.q, &si)?;
        let mut k = scratch_mut(&mut w.k, &si)?;
        let mut v = scratch_mut(&mut w.v, &si)?;
        self.q.apply_into(a.as_view(), q.reborrow())?;
        self.k.apply_into(a.as_view(), k.reborrow())?;
        self.v.apply_into(a.as_view(), v.reborrow())?;
        let mut o = scratch_mut(&mut w.o, &si)?;
        let scale = 1.0 / (head_dim as f64).sqrt() as f32;
        ops::attention_dense(q.as_view(), k.as_view(), v.as_view(), Some(lens.view()), o.reborrow(), heads, scale, false)?;
        let mut y = scratch_mut(&mut w.y, &sc)?;
        self.out.apply_into(o.as_view(), y.reborrow())?;
        ops::add_scaled(x.reborrow(), y.as_view(), 1.0)?;
        self.norm3.apply_into(x.as_view(), a.reborrow())?;
        let ff = ops::FeedForward {
            w1: self.ff1.w.view(),
            b1: self.ff1.b.as_ref().map(|b| b.view()),
            act: Activation::Gelu,
            w2: self.ff2.w.view(),
            b2: self.ff2.b.as_ref().map(|b| b.view()),
        };
        let scratch =
            ops::FeedForwardScratch { hidden: scratch_mut(&mut w.ffh, &sf)?, activated: scratch_mut(&mut w.ffa, &sf)?, y };
        Ok(ops::feed_forward_residual(ff, a.as_view(), x, scratch)?)
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

    /// `x` `[2B, N, C_in]` → `out` `[2B, N, C]` f32.
    fn forward_into(
        &self,
        x: View<'_>,
        lens: &Lens,
        mish_t: View<'_>,
        cfg: (usize, usize),
        w: &mut Work,
        mut out: ViewMut<'_>,
    ) -> Result<()> {
        self.resnet.forward_into(x, lens, mish_t, w, out.reborrow())?;
        for b in &self.blocks {
            b.forward_into(out.reborrow(), lens, cfg.0, cfg.1, w)?;
        }
        Ok(())
    }
}

/// The per-layer buffers of one estimator call (flat, viewed at each layer's shape).
struct Work {
    /// im2col of the convs (compute dtype); None when every conv reads its input directly (Cpu).
    cols: Option<Tensor>,
    /// A conv's output before its LayerNorm, and a ResNet's residual conv (f32, `rows·N·C`).
    conv: Tensor,
    /// A ResNet's first block (f32, `rows·N·C`).
    b1: Tensor,
    /// A ResNet's time bias (f32, `rows·C`).
    t: Tensor,
    /// LayerNorm outputs of the transformer blocks (compute dtype, `rows·N·C`).
    a: Tensor,
    /// q, k, v and the attention output (compute dtype, `rows·N·inner`).
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    /// Projections back into the stream (f32, `rows·N·C`).
    y: Tensor,
    /// The feed-forward's hidden layer (f32) and its GELU (compute dtype), `rows·N·4C`.
    ffh: Tensor,
    ffa: Tensor,
}

/// Every buffer of [`Estimator::forward_into`] for one `(rows, N)` shape: allocate it once per batch
/// shape ([`Estimator::scratch`]) and reuse it for every Euler step.
pub struct EstimatorScratch {
    rows: usize,
    n: usize,
    /// The down stage's output, kept for the up stage's concatenation (f32 `[rows, N, C]`).
    skip: Tensor,
    /// Two f32 `[rows, N, C]` streams the stages alternate between.
    s: [Tensor; 2],
    /// The up stage's input `[mid output, skip]` (f32 `[rows, N, 2C]`).
    cat: Tensor,
    work: Work,
}

impl EstimatorScratch {
    /// The `(rows, N)` shape it was made for.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.n)
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
        self.time_mlp(self.time_sinusoids(dev, t)?.view())
    }

    /// `SinusoidalPosEmb(t)` of each row, uploaded: `[rows, 320]` in the compute dtype.
    pub fn time_sinusoids(&self, dev: &Device, t: &[f32]) -> Result<Tensor> {
        let s: Vec<f32> = t.iter().flat_map(|&v| time_sinusoid(v)).collect();
        Ok(Tensor::from_f32(dev, dev.compute_dtype(), &[t.len(), TIME_SINUSOID], &s)?)
    }

    /// `time_mlp` of sinusoids `[rows, 320]` (compute dtype): `[rows, 4C]` f32.
    pub fn time_mlp(&self, sinusoids: View<'_>) -> Result<Tensor> {
        let h = self.time1.apply(sinusoids, DType::F32)?;
        let h = apply(h.view(), sinusoids.device().compute_dtype(), Activation::Silu, None)?;
        self.time2.apply(h.view(), DType::F32)
    }

    /// `Mish(t_emb)` in the compute dtype: the form every ResNet's time MLP reads ([`Estimator::forward_into`]).
    pub fn mish_time(&self, t_emb: View<'_>) -> Result<Tensor> {
        apply(t_emb, t_emb.device().compute_dtype(), Activation::Mish, None)
    }

    /// The buffers of [`Estimator::forward_into`] for `rows` rows of `n` frames (15 allocations, and
    /// an im2col buffer when a conv needs one: not on Cpu).
    pub fn scratch(&self, dev: &Device, rows: usize, n: usize) -> Result<EstimatorScratch> {
        let act = dev.compute_dtype();
        let c = self.up_conv.out_channels();
        let inner = self.heads * self.head_dim;
        let ff = 4 * c;
        let f32s = |len: usize| Tensor::uninit(dev, DType::F32, &[len.max(1)]);
        let acts = |len: usize| Tensor::uninit(dev, act, &[len.max(1)]);
        // the widest conv input: the estimator input, or the up stage's concatenation
        let mut convs: Vec<&Conv1d> = vec![&self.down_conv, &self.up_conv, &self.final_block.conv, &self.final_proj];
        for st in std::iter::once(&self.down).chain(&self.mid).chain(std::iter::once(&self.up)) {
            convs.extend([&st.resnet.block1.conv, &st.resnet.block2.conv, &st.resnet.res_conv]);
        }
        let cols_len = convs.iter().map(|cv| cv.cols_len(rows, n)).max().unwrap_or(0);
        let cols_dtype = convs.iter().map(|cv| cv.cols_dtype()).find(|&d| d != act);
        if let Some(d) = cols_dtype {
            return Err(crate::Error::Misuse(format!("an estimator conv takes {d} im2col input, not the compute dtype {act}")));
        }
        let cols = if cols_len > 0 { Some(acts(cols_len)?) } else { None };
        let rnc = rows * n * c;
        Ok(EstimatorScratch {
            rows,
            n,
            skip: f32s(rnc)?,
            s: [f32s(rnc)?, f32s(rnc)?],
            cat: f32s(2 * rnc)?,
            work: Work {
                cols,
                conv: f32s(rnc)?,
                b1: f32s(rnc)?,
                t: f32s(rows * c)?,
                a: acts(rnc)?,
                q: acts(rows * n * inner)?,
                k: acts(rows * n * inner)?,
                v: acts(rows * n * inner)?,
                o: acts(rows * n * inner)?,
                y: f32s(rnc)?,
                ffh: f32s(rows * n * ff)?,
                ffa: acts(rows * n * ff)?,
            },
        })
    }

    /// `input` `[2B, N, 320]` (x, mu, spks, cond; f32), `lens` per row, `t_emb` `[2B, 4C]` f32 →
    /// the velocity `[2B, N, 80]` f32 (rows past `lens` are 0). Allocates its buffers; see
    /// [`Estimator::forward_into`] for a loop.
    pub fn forward(&self, input: View<'_>, lens: &Lens, t_emb: View<'_>) -> Result<Tensor> {
        let dev = input.device();
        let (rows, n) = (input.shape()[0], input.shape()[1]);
        let mish_t = self.mish_time(t_emb)?;
        let mut sc = self.scratch(dev, rows, n)?;
        let mut v = Tensor::uninit(dev, DType::F32, &[rows, n, MEL_BINS])?;
        self.forward_into(input, lens, mish_t.view(), &mut sc, v.view_mut())?;
        Ok(v)
    }

    /// [`Estimator::forward`] with `mish_t` = [`Estimator::mish_time`] of the time embedding
    /// (`[2B, 4C]`, compute dtype) into `out` `[2B, N, 80]` f32, every intermediate in `sc` (made by
    /// [`Estimator::scratch`] for this `(2B, N)`): no allocation, no host round trip.
    pub fn forward_into(
        &self,
        input: View<'_>,
        lens: &Lens,
        mish_t: View<'_>,
        sc: &mut EstimatorScratch,
        mut out: ViewMut<'_>,
    ) -> Result<()> {
        let (rows, n) = (input.shape()[0], input.shape()[1]);
        if (rows, n) != sc.shape() {
            return Err(crate::Error::Misuse(format!("estimator scratch for {:?}, input [{rows}, {n}, ..]", sc.shape())));
        }
        let c = self.up_conv.out_channels();
        let hc = (self.heads, self.head_dim);
        let rnc = [rows, n, c];
        let EstimatorScratch { skip, s, cat, work, .. } = sc;
        let [s0, s1] = s;
        self.down.forward_into(input, lens, mish_t, hc, work, scratch_mut(skip, &rnc)?)?;
        self.down_conv.forward_into(scratch(skip, &rnc)?, lens, work.cols.as_mut(), scratch_mut(s0, &rnc)?)?;
        let (mut cur, mut other) = (s0, s1);
        for m in &self.mid {
            m.forward_into(scratch(cur, &rnc)?, lens, mish_t, hc, work, scratch_mut(other, &rnc)?)?;
            std::mem::swap(&mut cur, &mut other);
        }
        let mut cv = scratch_mut(cat, &[rows, n, 2 * c])?;
        ops::write_cols(scratch(cur, &rnc)?, cv.reborrow(), 0)?;
        ops::write_cols(scratch(skip, &rnc)?, cv.reborrow(), c)?;
        self.up.forward_into(cv.as_view(), lens, mish_t, hc, work, scratch_mut(other, &rnc)?)?;
        self.up_conv.forward_into(scratch(other, &rnc)?, lens, work.cols.as_mut(), scratch_mut(cur, &rnc)?)?;
        self.final_block.forward_into(scratch(cur, &rnc)?, lens, &mut work.conv, &mut work.cols, scratch_mut(other, &rnc)?)?;
        self.final_proj.forward_into(scratch(other, &rnc)?, lens, work.cols.as_mut(), out.reborrow())?;
        ops::activation_inplace(out, Activation::Identity, None, Some(lens.view()))?;
        Ok(())
    }
}
