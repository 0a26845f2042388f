//! The T3 forward pass on the tts-kernels op API: the conditioning encoder, the prefill layout of
//! spec §3.5, and the Llama stack over a static KV cache.
use std::path::Path;

use tts_kernels::{DType, Device, Tensor, ops};

use crate::config::T3Config;
use crate::weights::T3Weights;
use crate::{Error, Result};
use tts_kernels::checkpoint::Checkpoint;

/// A static KV cache: per layer, K and V of shape [slots, heads, max_len, head_dim] in the device's
/// KV dtype ([`Device::kv_dtype`]: bf16 on Cuda, Emu and `cpu-bf16`, f32 on `cpu`). A sequence (one
/// CFG row of one request) owns one slot.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    slots: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(cfg: &T3Config, dev: &Device, slots: usize, max_len: usize) -> Result<KvCache> {
        let shape = [slots, cfg.num_attention_heads, max_len, cfg.head_dim];
        let mut k = Vec::with_capacity(cfg.num_hidden_layers);
        let mut v = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(dev, dev.kv_dtype(), &shape)?);
            v.push(Tensor::zeros(dev, dev.kv_dtype(), &shape)?);
        }
        Ok(KvCache { k, v, slots, max_len })
    }

    /// Sequences (cache slots) it holds.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions per slot.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The dtype the keys and values are stored in ([`Device::kv_dtype`]).
    pub fn dtype(&self) -> tts_kernels::DType {
        self.k.first().map_or(tts_kernels::DType::F32, |t| t.dtype())
    }
}

/// Where each row of a forward pass lives: its RoPE position (= its index in the cache), its cache
/// slot, and how many cache positions its attention reads (position + 1; 0 = inactive row).
pub struct RowLayout {
    pub positions: Tensor,
    pub slots: Tensor,
    pub lens: Tensor,
}

impl RowLayout {
    /// Rows `(slot, position)`, attending causally (len = position + 1).
    pub fn causal(dev: &Device, rows: &[(usize, usize)]) -> Result<RowLayout> {
        let pos: Vec<i32> = rows.iter().map(|&(_, p)| p as i32).collect();
        let slots: Vec<i32> = rows.iter().map(|&(s, _)| s as i32).collect();
        let lens: Vec<i32> = rows.iter().map(|&(_, p)| p as i32 + 1).collect();
        let n = rows.len();
        Ok(RowLayout {
            positions: Tensor::from_i32(dev, &[n], &pos)?,
            slots: Tensor::from_i32(dev, &[n], &slots)?,
            lens: Tensor::from_i32(dev, &[n], &lens)?,
        })
    }
}

/// The model. Its configuration, device and weights are read through [`T3::config`],
/// [`T3::device`] and [`T3::weights`]; they are fixed at load and nothing outside the crate changes them.
pub struct T3 {
    pub(crate) cfg: T3Config,
    pub(crate) dev: Device,
    pub(crate) w: T3Weights,
    /// [head_dim / 2] f32: the Llama-3 scaled RoPE frequencies.
    inv_freq: Tensor,
}

impl T3 {
    /// The dimensions and token ids it was built with.
    pub fn config(&self) -> &T3Config {
        &self.cfg
    }

    /// The device its weights live on.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Its weights (read-only: byte counts for the benches, tensors for tests).
    pub fn weights(&self) -> &T3Weights {
        &self.w
    }

    /// Its weights, mutable: only for tests that run part of the stack (moving layers in and out of
    /// `layers`); anything else that changes them breaks the model.
    #[doc(hidden)]
    pub fn weights_mut_for_tests(&mut self) -> &mut T3Weights {
        &mut self.w
    }

    /// Loads `t3_cfg.safetensors` (and `config.json` when present) from a model directory.
    pub fn load(dir: &Path, dev: &Device) -> Result<T3> {
        let cfg = T3Config::from_model_dir(dir)?;
        let ck = Checkpoint::open(&dir.join("t3_cfg.safetensors"))?;
        T3::from_checkpoint(cfg, &ck, dev)
    }

    pub fn from_checkpoint(cfg: T3Config, ck: &Checkpoint, dev: &Device) -> Result<T3> {
        cfg.validate()?;
        let w = T3Weights::load(ck, &cfg, dev)?;
        let (factor, low, high, orig) = cfg.rope_scaling;
        let freqs = tts_kernels::cpu::llama3_inv_freq(cfg.head_dim, cfg.rope_theta, factor, low, high, orig as usize);
        let inv_freq = Tensor::from_f32(dev, DType::F32, &[cfg.head_dim / 2], &freqs)?;
        Ok(T3 { cfg, dev: dev.clone(), w, inv_freq })
    }

    fn act(&self) -> DType {
        self.dev.compute_dtype()
    }

    /// The conditioning encoder (T3CondEnc): `[spkr_enc(speaker) | perceiver(prompt) | exaggeration ·
    /// emotion_adv_fc]`, [len_cond, D] f32.
    /// `speaker_emb`: [speaker_embed_size]; `prompt_tokens`: the speech-token prompt (≤ speech_cond_prompt_len).
    pub fn cond_embeddings(&self, speaker_emb: &[f32], prompt_tokens: &[u32], exaggeration: f32) -> Result<Tensor> {
        let c = &self.cfg;
        let (d, act) = (c.hidden_size, self.act());
        if speaker_emb.len() != c.speaker_embed_size {
            return Err(Error::Input {
                field: "speaker_emb",
                value: format!("{} values", speaker_emb.len()),
                expected: format!("{} values", c.speaker_embed_size),
            });
        }
        if let Some(bad) = speaker_emb.iter().find(|v| !v.is_finite()) {
            return Err(Error::Input { field: "speaker_emb", value: bad.to_string(), expected: "finite values".into() });
        }
        if prompt_tokens.is_empty() {
            return Err(Error::Input { field: "prompt_tokens", value: "none".into(), expected: "at least one token".into() });
        }
        if prompt_tokens.len() > c.speech_positions() {
            return Err(Error::TooLong { what: "prompt speech tokens", len: prompt_tokens.len(), max: c.speech_positions() });
        }
        if !exaggeration.is_finite() {
            return Err(Error::Input {
                field: "exaggeration",
                value: exaggeration.to_string(),
                expected: "a finite number".into(),
            });
        }
        self.check_speech_tokens(prompt_tokens)?;
        let dev = &self.dev;
        // speaker token
        let spk = Tensor::from_f32(dev, act, &[1, c.speaker_embed_size], speaker_emb)?;
        let mut spk_out = Tensor::uninit(dev, act, &[1, d])?;
        ops::linear(spk.view(), self.w.spkr_w.view(), Some(self.w.spkr_b.view()), spk_out.view_mut())?;
        // prompt: speech_emb(tokens) + speech_pos_emb(0..P)
        let p = prompt_tokens.len();
        let ids: Vec<i32> = prompt_tokens.iter().map(|&t| t as i32).collect();
        let pos: Vec<i32> = (0..p as i32).collect();
        let ids_t = Tensor::from_i32(dev, &[p], &ids)?;
        let pos_t = Tensor::from_i32(dev, &[p], &pos)?;
        let mut prompt = Tensor::uninit(dev, DType::F32, &[p, d])?;
        ops::embed_pos(
            ids_t.view(),
            Some((pos_t.view(), self.w.speech_pos.view())),
            self.w.speech_emb.view(),
            prompt.view_mut(),
        )?;
        let query = Tensor::from_f32(dev, DType::F32, &[c.perceiver_query_tokens, d], &self.w.perceiver.query.to_f32_vec()?)?;
        let pre = self.perceiver_attention(&query, &prompt)?;
        let out = self.perceiver_attention(&pre, &pre)?;
        // assemble
        let mut rows = Vec::with_capacity(c.len_cond() * d);
        rows.extend(spk_out.to_f32_vec()?);
        rows.extend(out.to_f32_vec()?);
        rows.extend(self.w.emotion_w.iter().map(|&w| w * exaggeration));
        Ok(Tensor::from_f32(dev, DType::F32, &[c.len_cond(), d], &rows)?)
    }

    /// The perceiver's shared attention block: `x1 + proj_out(MHA(LN(x1), LN(x2)))`, [rows of x1, D] f32.
    fn perceiver_attention(&self, x1: &Tensor, x2: &Tensor) -> Result<Tensor> {
        let (d, act, dev) = (self.cfg.hidden_size, self.act(), &self.dev);
        let pw = &self.w.perceiver;
        let (n1, n2) = (x1.shape()[0], x2.shape()[0]);
        let mut ln1 = Tensor::uninit(dev, act, &[n1, d])?;
        let mut ln2 = Tensor::uninit(dev, act, &[n2, d])?;
        ops::layer_norm(x1.view(), pw.norm_w.view(), Some(pw.norm_b.view()), ln1.view_mut(), 1e-5)?;
        ops::layer_norm(x2.view(), pw.norm_w.view(), Some(pw.norm_b.view()), ln2.view_mut(), 1e-5)?;
        let proj = |x: &Tensor, n: usize, (w, b): &(Tensor, Tensor)| -> Result<Tensor> {
            let mut y = Tensor::uninit(dev, act, &[n, d])?;
            ops::linear(x.view(), w.view(), Some(b.view()), y.view_mut())?;
            Ok(y)
        };
        let q = proj(&ln1, n1, &pw.to_q)?;
        let k = proj(&ln2, n2, &pw.to_k)?;
        let v = proj(&ln2, n2, &pw.to_v)?;
        let heads = self.cfg.perceiver_num_heads;
        let scale = 1.0 / ((d / heads) as f32).sqrt();
        let mut o = Tensor::uninit(dev, act, &[1, n1, d])?;
        ops::attention_dense(
            q.view().reshape(&[1, n1, d])?,
            k.view().reshape(&[1, n2, d])?,
            v.view().reshape(&[1, n2, d])?,
            None,
            o.view_mut(),
            heads,
            scale,
            false,
        )?;
        let y = proj(&o, n1, &pw.proj_out)?;
        let mut out = Tensor::from_f32(dev, DType::F32, &[n1, d], &x1.to_f32_vec()?)?;
        ops::add_residual(out.view_mut(), y.view(), None)?;
        Ok(out)
    }

    fn check_speech_tokens(&self, t: &[u32]) -> Result<()> {
        if let Some(&bad) = t.iter().find(|&&t| t as usize >= self.cfg.speech_tokens_dict_size) {
            return Err(Error::Input {
                field: "speech token",
                value: bad.to_string(),
                expected: format!("below the vocabulary size {}", self.cfg.speech_tokens_dict_size),
            });
        }
        Ok(())
    }

    /// The prefill input of one request, [2·L0, D] f32 (row 0 = conditional, row 1 = unconditional):
    /// `[cond | text_emb + text_pos (uncond: text_pos only) | BOS | BOS]`, L0 = len_cond + T + 2.
    /// `text_tokens` already carry SOT and EOT.
    pub fn prefill_embeddings(&self, cond: &Tensor, text_tokens: &[u32]) -> Result<Tensor> {
        let c = &self.cfg;
        let (d, dev) = (c.hidden_size, &self.dev);
        let t = text_tokens.len();
        if t == 0 {
            return Err(Error::Input { field: "text_tokens", value: "none".into(), expected: "at least one token".into() });
        }
        if t > c.text_positions() {
            return Err(Error::TooLong { what: "text tokens", len: t, max: c.text_positions() });
        }
        if let Some(&bad) = text_tokens.iter().find(|&&x| x as usize >= c.text_tokens_dict_size) {
            return Err(Error::Input {
                field: "text token",
                value: bad.to_string(),
                expected: format!("below the vocabulary size {}", c.text_tokens_dict_size),
            });
        }
        let cond_rows = cond.to_f32_vec()?;
        // text rows for both CFG rows: ids, then -1 (no token embedding) for the unconditional row
        let mut ids: Vec<i32> = text_tokens.iter().map(|&x| x as i32).collect();
        ids.extend(std::iter::repeat_n(-1, t));
        let pos: Vec<i32> = (0..t as i32).chain(0..t as i32).collect();
        let ids_t = Tensor::from_i32(dev, &[2 * t], &ids)?;
        let pos_t = Tensor::from_i32(dev, &[2 * t], &pos)?;
        let mut text = Tensor::uninit(dev, DType::F32, &[2 * t, d])?;
        ops::embed_pos(ids_t.view(), Some((pos_t.view(), self.w.text_pos.view())), self.w.text_emb.view(), text.view_mut())?;
        let text = text.to_f32_vec()?;
        let bos = self.speech_input(&[c.start_speech_token], &[0])?.to_f32_vec()?;
        let l0 = c.prefill_positions(t);
        let mut all = Vec::with_capacity(2 * l0 * d);
        for row in 0..2 {
            all.extend_from_slice(&cond_rows);
            all.extend_from_slice(&text[row * t * d..(row + 1) * t * d]);
            all.extend_from_slice(&bos);
            all.extend_from_slice(&bos);
        }
        Ok(Tensor::from_f32(dev, DType::F32, &[2 * l0, d], &all)?)
    }

    /// `speech_emb[token] + speech_pos_emb[position]` for each pair, [n, D] f32.
    pub fn speech_input(&self, tokens: &[u32], positions: &[u32]) -> Result<Tensor> {
        self.check_speech_tokens(tokens)?;
        let n = tokens.len();
        let ids: Vec<i32> = tokens.iter().map(|&x| x as i32).collect();
        let pos: Vec<i32> = positions.iter().map(|&x| x as i32).collect();
        let ids_t = Tensor::from_i32(&self.dev, &[n], &ids)?;
        let pos_t = Tensor::from_i32(&self.dev, &[n], &pos)?;
        let mut out = Tensor::uninit(&self.dev, DType::F32, &[n, self.cfg.hidden_size])?;
        ops::embed_pos(ids_t.view(), Some((pos_t.view(), self.w.speech_pos.view())), self.w.speech_emb.view(), out.view_mut())?;
        Ok(out)
    }

    /// Runs the Llama stack over `h` ([rows, D] f32, consumed as the residual stream), writing each
    /// row's K/V into `cache` at (slot, position), and the speech-head logits of the last
    /// `head_rows` rows into `ws.logits` (f32, [head_rows, V] at its start). Within a layer every
    /// row's K/V is written before any row attends, so the row order is free.
    /// Allocates nothing: `ws` must hold at least `rows` rows.
    pub fn forward(
        &self,
        h: &mut Tensor,
        rows: &RowLayout,
        cache: &mut KvCache,
        ws: &mut Workspace,
        head_rows: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let n = h.shape()[0];
        if n > ws.rows || head_rows > n {
            return Err(Error::Misuse(format!("{n} rows ({head_rows} with logits) for a workspace of {}", ws.rows)));
        }
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        for (l, w) in self.w.layers.iter().enumerate() {
            let prev = if l > 0 { Some(ws.x.view().narrow_rows(0, n)?) } else { None };
            ops::add_rmsnorm(prev, h.view_mut(), w.input_norm.view(), r(&mut ws.a, n)?, c.rms_norm_eps)?;
            ops::linear(ws.a.view().narrow_rows(0, n)?, w.qkv.view(), None, r(&mut ws.qkv, n)?)?;
            ops::rope_kv_write(
                ws.qkv.view().narrow_rows(0, n)?,
                rows.positions.view(),
                rows.slots.view(),
                self.inv_freq.view(),
                r(&mut ws.q, n)?,
                cache.k[l].view_mut(),
                cache.v[l].view_mut(),
            )?;
            ops::attention_cached(
                ws.q.view().narrow_rows(0, n)?,
                cache.k[l].view(),
                cache.v[l].view(),
                rows.slots.view(),
                rows.lens.view(),
                r(&mut ws.attn, n)?,
                scale,
            )?;
            ops::linear(ws.attn.view().narrow_rows(0, n)?, w.o.view(), None, r(&mut ws.x, n)?)?;
            ops::add_rmsnorm(
                Some(ws.x.view().narrow_rows(0, n)?),
                h.view_mut(),
                w.post_norm.view(),
                r(&mut ws.a, n)?,
                c.rms_norm_eps,
            )?;
            ops::linear(ws.a.view().narrow_rows(0, n)?, w.gate_up.view(), None, r(&mut ws.gu, n)?)?;
            ops::swiglu(ws.gu.view().narrow_rows(0, n)?, r(&mut ws.m, n)?)?;
            ops::linear(ws.m.view().narrow_rows(0, n)?, w.down.view(), None, r(&mut ws.x, n)?)?;
        }
        // the last layer's MLP output joins the residual stream of the rows that need logits
        let skip = n - head_rows;
        let x_tail = ws.x.view().narrow_rows(skip, head_rows)?;
        let h_tail = h.view_mut().narrow_rows(skip, head_rows)?;
        ops::add_rmsnorm(Some(x_tail), h_tail, self.w.final_norm.view(), r(&mut ws.a, head_rows)?, c.rms_norm_eps)?;
        ops::linear(ws.a.view().narrow_rows(0, head_rows)?, self.w.speech_head.view(), None, r(&mut ws.logits, head_rows)?)?;
        Ok(())
    }

    /// The decode step's Llama stack through the fused decode ops: one row per KV-cache slot
    /// (each row writes its own position, then attends over its slot up to `lens`; rows of
    /// finished requests have `lens` 0 and cost no attention work). Five launches per layer on
    /// kernel backends:
    /// `rmsnorm_linear` (input norm + QKV) → `rope_attention_decode` → `linear_add_residual` (o) →
    /// `rmsnorm_linear_swiglu` (post norm + gate/up + SwiGLU) → `linear_add_residual` (down);
    /// then one more for the final norm + speech head into `ws.logits` (f32, every row).
    /// When `rows · heads` is below the device's SM count ([`ops::decode_attention_splits`]) the
    /// attention splits its keys (flash-decoding, [`ops::rope_attention_decode_split`] into the
    /// workspace's preallocated scratch): six launches per layer (its combine kernel added).
    ///
    /// Same model as [`T3::forward`] over those rows; the difference is rounding on kernel
    /// backends: the o and down projections reach the f32 residual stream unrounded (the unfused
    /// path rounds them to bf16 first). Allocates nothing on kernel backends.
    pub fn forward_decode(&self, h: &mut Tensor, rows: &RowLayout, cache: &mut KvCache, ws: &mut Workspace) -> Result<()> {
        let c = &self.cfg;
        let n = h.shape()[0];
        if n > ws.rows {
            return Err(Error::Misuse(format!("{n} rows for a workspace of {}", ws.rows)));
        }
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let eps = c.rms_norm_eps;
        let (heads, d) = (c.num_attention_heads, c.head_dim);
        let splits = ops::decode_attention_splits(n, heads, self.dev.multiprocessor_count()?);
        for (l, w) in self.w.layers.iter().enumerate() {
            ops::rmsnorm_linear(h.view(), w.input_norm.view(), eps, w.qkv.view(), r(&mut ws.qkv, n)?)?;
            let (qkv, attn) = (ws.qkv.view().narrow_rows(0, n)?, ws.attn.view_mut().narrow_rows(0, n)?);
            let (k, v) = (cache.k[l].view_mut(), cache.v[l].view_mut());
            let (pos, slots, lens) = (rows.positions.view(), rows.slots.view(), rows.lens.view());
            if splits > 1 {
                let need = n * heads * splits * (d + 2);
                let scratch = match &mut ws.attn_partial {
                    Some(t) if t.len() >= need => t.view_mut().narrow_rows(0, need)?.reshape(&[n, heads, splits, d + 2])?,
                    _ => {
                        return Err(Error::Misuse(format!(
                            "the workspace has no attention scratch for {n} rows × {splits} splits"
                        )));
                    }
                };
                ops::rope_attention_decode_split(qkv, pos, slots, self.inv_freq.view(), k, v, lens, attn, scratch, scale)?;
            } else {
                ops::rope_attention_decode(qkv, pos, slots, self.inv_freq.view(), k, v, lens, attn, scale)?;
            }
            ops::linear_add_residual(ws.attn.view().narrow_rows(0, n)?, w.o.view(), h.view_mut())?;
            ops::rmsnorm_linear_swiglu(h.view(), w.post_norm.view(), eps, w.gate_up.view(), r(&mut ws.m, n)?)?;
            ops::linear_add_residual(ws.m.view().narrow_rows(0, n)?, w.down.view(), h.view_mut())?;
        }
        ops::rmsnorm_linear(h.view(), self.w.final_norm.view(), eps, self.w.speech_head.view(), r(&mut ws.logits, n)?)?;
        Ok(())
    }
}

/// The first `k` rows of a workspace tensor.
fn r(t: &mut Tensor, k: usize) -> Result<tts_kernels::ViewMut<'_>> {
    Ok(t.view_mut().narrow_rows(0, k)?)
}

/// Preallocated activations of a forward pass over up to `rows` rows.
pub struct Workspace {
    pub rows: usize,
    a: Tensor,
    qkv: Tensor,
    q: Tensor,
    attn: Tensor,
    x: Tensor,
    gu: Tensor,
    m: Tensor,
    /// [rows, V] f32: the speech-head logits of the last forward (first `head_rows` rows).
    pub logits: Tensor,
    /// f32 scratch of the split decode attention, for the largest `[n, heads, splits, head_dim + 2]`
    /// a decode step of `n <= rows` rows takes on this device; None when no step splits.
    attn_partial: Option<Tensor>,
}

impl Workspace {
    pub fn new(cfg: &T3Config, dev: &Device, rows: usize) -> Result<Workspace> {
        let (d, i, act) = (cfg.hidden_size, cfg.intermediate_size, dev.compute_dtype());
        let t = |cols: usize| Tensor::uninit(dev, act, &[rows, cols]);
        Ok(Workspace {
            rows,
            a: t(d)?,
            qkv: t(3 * d)?,
            q: t(d)?,
            attn: t(d)?,
            x: t(d)?,
            gu: t(2 * i)?,
            m: t(i)?,
            logits: Tensor::uninit(dev, DType::F32, &[rows, cfg.speech_tokens_dict_size])?,
            attn_partial: Workspace::attention_scratch(cfg, dev, rows)?,
        })
    }

    /// The split decode attention's scratch for steps of up to `rows` rows (see
    /// [`T3::forward_decode`]), or None when none of them splits on `dev`. A splitting step has
    /// `n · heads` below the SM count and `n · heads · splits <= 2 · SMs + n · heads`, so this is
    /// under `3 · SMs · (head_dim + 2)` f32 (about 100 KB for T3 on 132 SMs).
    fn attention_scratch(cfg: &T3Config, dev: &Device, rows: usize) -> Result<Option<Tensor>> {
        let (heads, d) = (cfg.num_attention_heads, cfg.head_dim);
        let sms = dev.multiprocessor_count()?;
        let need = (1..=rows)
            .map(|n| (n, ops::decode_attention_splits(n, heads, sms)))
            .filter(|&(_, s)| s > 1)
            .map(|(n, s)| n * heads * s * (d + 2))
            .max();
        Ok(match need {
            Some(len) => Some(Tensor::uninit(dev, DType::F32, &[len])?),
            None => None,
        })
    }
}
