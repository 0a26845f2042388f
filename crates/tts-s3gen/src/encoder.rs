//! The flow's token encoder: token embedding, `UpsampleConformerEncoder` (pre-lookahead convs,
//! conformer layers with relative-position attention, ×2 upsampling, more conformer layers) and
//! `encoder_proj` (spec §4.2; upsample_encoder.py, encoder_layer.py, attention.py).
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation};
use tts_kernels::{DType, Device, Tensor, View};

use crate::config::S3GenConfig;
use crate::layers::{Conv1d, LayerNorm, Lens, Linear, apply, to_act};
use crate::{MEL_BINS, Result};

/// One conformer layer (pre-norm, no macaron, no conv module): rel-pos self-attention, then a SiLU
/// feed-forward, each with a residual.
struct ConformerLayer {
    norm_mha: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    pos: Linear,
    bias_u: Tensor,
    bias_v: Tensor,
    norm_ff: LayerNorm,
    w1: Linear,
    w2: Linear,
}

impl ConformerLayer {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, cfg: &S3GenConfig) -> Result<ConformerLayer> {
        let (d, h, ff) = (cfg.encoder_output_size, cfg.encoder_attention_heads, cfg.encoder_linear_units);
        let a = format!("{p}.self_attn");
        let bias = |n: &str| -> Result<Tensor> {
            Ok(Tensor::from_f32(dev, DType::F32, &[h, d / h], &ck.f32(&format!("{a}.{n}"), &[h, d / h])?)?)
        };
        Ok(ConformerLayer {
            norm_mha: LayerNorm::load(ck, dev, &format!("{p}.norm_mha"), d, 1e-12, 1.0)?,
            q: Linear::load(ck, dev, &format!("{a}.linear_q"), d, d, true)?,
            k: Linear::load(ck, dev, &format!("{a}.linear_k"), d, d, true)?,
            v: Linear::load(ck, dev, &format!("{a}.linear_v"), d, d, true)?,
            out: Linear::load(ck, dev, &format!("{a}.linear_out"), d, d, true)?,
            pos: Linear::load(ck, dev, &format!("{a}.linear_pos"), d, d, false)?,
            bias_u: bias("pos_bias_u")?,
            bias_v: bias("pos_bias_v")?,
            norm_ff: LayerNorm::load(ck, dev, &format!("{p}.norm_ff"), d, 1e-12, 1.0)?,
            w1: Linear::load(ck, dev, &format!("{p}.feed_forward.w_1"), ff, d, true)?,
            w2: Linear::load(ck, dev, &format!("{p}.feed_forward.w_2"), d, ff, true)?,
        })
    }

    /// `x` `[B, T, D]` f32 in place; `pe` `[2T − 1, D]` in the compute dtype.
    fn forward(&self, x: &mut Tensor, pe: &Tensor, lens: &Lens, heads: usize) -> Result<()> {
        let act = x.device().compute_dtype();
        let d = x.shape()[2];
        let a = self.norm_mha.apply(x.view(), act)?;
        let (q, k, v) = (self.q.apply(a.view(), act)?, self.k.apply(a.view(), act)?, self.v.apply(a.view(), act)?);
        let p = self.pos.apply(pe.view(), act)?;
        let mut o = Tensor::uninit(x.device(), act, x.shape())?;
        let scale = 1.0 / ((d / heads) as f64).sqrt() as f32;
        ops::attention_relpos(
            q.view(),
            k.view(),
            v.view(),
            p.view(),
            self.bias_u.view(),
            self.bias_v.view(),
            Some(lens.view()),
            o.view_mut(),
            heads,
            scale,
        )?;
        let y = self.out.apply(o.view(), DType::F32)?;
        ops::add_scaled(x.view_mut(), y.view(), 1.0)?;
        let f = self.norm_ff.apply(x.view(), act)?;
        let h = self.w1.apply(f.view(), DType::F32)?;
        let h = apply(h.view(), act, Activation::Silu, None)?;
        let y = self.w2.apply(h.view(), DType::F32)?;
        ops::add_scaled(x.view_mut(), y.view(), 1.0)?;
        Ok(())
    }
}

/// `LinearNoSubsampling` + the ×√D scale of `EspnetRelPositionalEncoding` (folded into the norm).
struct Embed {
    lin: Linear,
    norm: LayerNorm,
}

impl Embed {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, d: usize) -> Result<Embed> {
        let xscale = (d as f64).sqrt() as f32;
        Ok(Embed {
            lin: Linear::load(ck, dev, &format!("{p}.out.0"), d, d, true)?,
            norm: LayerNorm::load(ck, dev, &format!("{p}.out.1"), d, 1e-5, xscale)?,
        })
    }

    /// `x` `[B, T, D]` in the compute dtype → the f32 stream.
    fn forward(&self, x: View<'_>) -> Result<Tensor> {
        let h = self.lin.apply(x, DType::F32)?;
        self.norm.apply(h.view(), DType::F32)
    }
}

/// The ESPnet relative positional encoding `PE_rel(T)` `[2T − 1, D]`: row r encodes the relative
/// position `T − 1 − r`, `[sin(p·f_m), cos(p·f_m)]` interleaved, `f_m = exp(2m · −(ln 1e4 / D))`,
/// all in f32 as embedding.py computes it.
pub fn rel_positional_encoding(t: usize, d: usize) -> Vec<f32> {
    let neg = -((10000f64).ln() / d as f64) as f32;
    let div: Vec<f32> = (0..d / 2).map(|m| ((2 * m) as f32 * neg).exp()).collect();
    let mut pe = vec![0f32; (2 * t - 1) * d];
    for (r, row) in pe.chunks_exact_mut(d).enumerate() {
        let p = t as i64 - 1 - r as i64;
        let mag = p.unsigned_abs() as f32;
        for (m, &f) in div.iter().enumerate() {
            let a = mag * f;
            let s = a.sin();
            row[2 * m] = if p < 0 { -s } else { s };
            row[2 * m + 1] = a.cos();
        }
    }
    pe
}

/// Token embedding → conformer encoder → `encoder_proj`.
pub struct FlowEncoder {
    embedding: Tensor,
    embed: Embed,
    lookahead1: Conv1d,
    lookahead2: Conv1d,
    layers: Vec<ConformerLayer>,
    up_conv: Conv1d,
    up_embed: Embed,
    up_layers: Vec<ConformerLayer>,
    after_norm: LayerNorm,
    proj: Linear,
    heads: usize,
    dim: usize,
    vocab: usize,
}

/// What the encoder computes for a batch.
pub struct EncoderOut {
    /// After `after_norm`, `[B, 2T, D]` f32.
    pub hidden: Tensor,
    /// `encoder_proj(hidden)`, `[B, 2T, 80]` f32.
    pub mu: Tensor,
    /// Valid frames per request (`2·(Tp + Ts)`).
    pub lens: Lens,
}

impl FlowEncoder {
    pub fn load(ck: &Checkpoint, dev: &Device, cfg: &S3GenConfig) -> Result<FlowEncoder> {
        let d = cfg.encoder_output_size;
        let e = "flow.encoder";
        let layers = |kind: &str, n: usize| -> Result<Vec<ConformerLayer>> {
            (0..n).map(|i| ConformerLayer::load(ck, dev, &format!("{e}.{kind}.{i}"), cfg)).collect()
        };
        let table = ck.f32("flow.input_embedding.weight", &[cfg.flow_vocab_size, d])?;
        Ok(FlowEncoder {
            embedding: Tensor::from_f32(dev, dev.compute_dtype(), &[cfg.flow_vocab_size, d], &table)?,
            embed: Embed::load(ck, dev, &format!("{e}.embed"), d)?,
            lookahead1: Conv1d::load(ck, dev, &format!("{e}.pre_lookahead_layer.conv1"), [d, d, 4], false, (0, 3), 1, 1)?,
            lookahead2: Conv1d::load(ck, dev, &format!("{e}.pre_lookahead_layer.conv2"), [d, d, 3], false, (2, 0), 1, 1)?,
            layers: layers("encoders", cfg.encoder_num_blocks)?,
            up_conv: Conv1d::load_upsampled(ck, dev, &format!("{e}.up_layer.conv"), [d, d, 5], (4, 0), 2)?,
            up_embed: Embed::load(ck, dev, &format!("{e}.up_embed"), d)?,
            up_layers: layers("up_encoders", cfg.encoder_num_up_blocks)?,
            after_norm: LayerNorm::load(ck, dev, &format!("{e}.after_norm"), d, 1e-5, 1.0)?,
            proj: Linear::load(ck, dev, "flow.encoder_proj", MEL_BINS, d, true)?,
            heads: cfg.encoder_attention_heads,
            dim: d,
            vocab: cfg.flow_vocab_size,
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Output frames per request for `tokens` tokens (the ×2 upsampling conv's length).
    pub fn out_len(&self, tokens: usize) -> usize {
        self.up_conv.out_len(tokens)
    }

    /// `tokens` (prompt tokens followed by the speech tokens of each request, padded with −1 to
    /// `[B, T]`) with `lens` tokens each.
    pub fn forward(&self, tokens: &[i32], lens: &Lens) -> Result<EncoderOut> {
        self.run(self.prepare(tokens, lens)?)
    }

    /// Everything [`FlowEncoder::run`] reads from the host, uploaded (before any launch): the token
    /// ids, both relative position tables and the upsampled lengths.
    pub fn prepare(&self, tokens: &[i32], lens: &Lens) -> Result<EncoderInputs> {
        let dev = self.embedding.device();
        let act = dev.compute_dtype();
        let b = lens.batch();
        let t = tokens.len() / b.max(1);
        let d = self.dim;
        let t2 = self.up_conv.out_len(t);
        Ok(EncoderInputs {
            ids: Tensor::from_i32(dev, &[b * t], tokens)?,
            lens: lens.clone(),
            pe: Tensor::from_f32(dev, act, &[2 * t - 1, d], &rel_positional_encoding(t, d))?,
            pe2: Tensor::from_f32(dev, act, &[2 * t2 - 1, d], &rel_positional_encoding(t2, d))?,
            lens2: self.up_conv.out_lens(lens)?,
            b,
            t,
        })
    }

    /// The encoder on prepared inputs: launches only (no host round trip).
    pub fn run(&self, inp: EncoderInputs) -> Result<EncoderOut> {
        let EncoderInputs { ids, lens, pe, pe2, lens2, b, t } = inp;
        let dev = self.embedding.device();
        let d = self.dim;
        // token embedding; padded positions (id −1) are zero rows, as `* mask`
        let mut emb = Tensor::uninit(dev, DType::F32, &[b * t, d])?;
        ops::embed_pos(ids.view(), None, self.embedding.view(), emb.view_mut())?;
        let emb = to_act(emb.view().reshape(&[b, t, d])?)?;
        let mut x = self.embed.forward(emb.view())?;
        // pre-lookahead: conv(k4, right pad 3) → leaky_relu(0.01) → conv(k3, left pad 2), residual
        let mut y = self.lookahead1.forward(x.view(), &lens)?;
        ops::activation_inplace(y.view_mut(), Activation::LeakyRelu(0.01), None, None)?;
        let y = self.lookahead2.forward(y.view(), &lens)?;
        ops::add_scaled(x.view_mut(), y.view(), 1.0)?;
        for l in &self.layers {
            l.forward(&mut x, &pe, &lens, self.heads)?;
        }
        // ×2 nearest upsampling, left pad 4, conv k5
        let up = self.up_conv.forward(x.view(), &lens)?;
        let up = to_act(up.view())?;
        let mut x = self.up_embed.forward(up.view())?;
        for l in &self.up_layers {
            l.forward(&mut x, &pe2, &lens2, self.heads)?;
        }
        let hidden = self.after_norm.apply(x.view(), DType::F32)?;
        let mu = self.proj.apply(to_act(hidden.view())?.view(), DType::F32)?;
        Ok(EncoderOut { hidden, mu, lens: lens2 })
    }
}

/// The encoder's host inputs on the device ([`FlowEncoder::prepare`]).
pub struct EncoderInputs {
    ids: Tensor,
    lens: Lens,
    pe: Tensor,
    pe2: Tensor,
    /// The output lengths (`2·tokens`).
    pub lens2: Lens,
    b: usize,
    t: usize,
}
