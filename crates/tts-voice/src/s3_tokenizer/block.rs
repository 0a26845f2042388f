//! One `ResidualAttentionBlock` of `AudioEncoderV2` (`s3tokenizer/model_v2.py`), on the host in f32:
//!
//! ```text
//! a = LayerNorm(x; attn_ln, eps 1e-5)
//! q = a·Wqᵀ + bq,  k = a·Wkᵀ (no bias),  v = a·Wvᵀ + bv          [T, D], heads of 64 interleaved
//! q, k = RoPE(q), RoPE(k)  (θ 10000, rotate-half, position = row)
//! o = softmax((q·s)(k·s)ᵀ)·v per head,  s = 64^(−1/4)
//! fsmn = DepthwiseConv1d(k 31, zero pad 15/15, no bias)(v) + v
//! x += (o·Woᵀ + bo) + fsmn
//! x += GELU(LayerNorm(x; mlp_ln)·W1ᵀ + b1)·W2ᵀ + b2             (exact-erf GELU, W1: [4D, D])
//! ```
//!
//! One utterance without padding: the reference's masks are all ones then (and the padded frames
//! of a batch never reach the valid ones: the attention bias is −1e10 and the FSMN input is
//! masked), so no mask is applied. Every product is a multi-threaded GEMM over weights packed
//! at load ([`Linear`]); attention runs per head through
//! [`tts_kernels::cpu::attention_dense`].
use rayon::prelude::*;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::cpu::{self, Activation};

use super::config::HEAD_DIM;
use super::linear::Linear;
use crate::{Error, Result};

/// LayerNorm epsilon of `attn_ln` (`LayerNorm(n_state, eps=1e-5)` in s3tokenizer 0.3.0; 1e-6 in
/// the package's git history before it) and of `mlp_ln` (the default 1e-5).
pub const LN_EPS: f32 = 1e-5;
/// Taps of the FSMN memory's depthwise convolution.
pub const FSMN_KERNEL: usize = 31;
/// Zero padding on the left of the FSMN convolution (`(31 − 1) / 2`; 15 on the right too).
pub const FSMN_LEFT: usize = (FSMN_KERNEL - 1) / 2;
/// RoPE base.
pub const ROPE_THETA: f64 = 10000.0;

/// The weights of one block, as `[out, in]` row-major matrices (the checkpoint's layout).
pub struct Block {
    pub(super) d: usize,
    pub(super) heads: usize,
    attn_ln: (Vec<f32>, Vec<f32>),
    query: Linear,
    /// No bias.
    key: Linear,
    value: Linear,
    /// `out` without its bias (added with the FSMN memory, in the reference's order).
    out: Linear,
    bo: Vec<f32>,
    /// The FSMN taps tap-major, `[FSMN_KERNEL][D]` (the checkpoint's `(D, 1, 31)` transposed).
    fsmn: Vec<f32>,
    mlp_ln: (Vec<f32>, Vec<f32>),
    mlp1: Linear,
    mlp2: Linear,
}

/// The RoPE table of `T` positions: `cos`/`sin` of `t·f_j`, `[T][32]` each, with
/// `f_j = 1 / 10000^(2j/64)`, every step rounded to f32 as `precompute_freqs_cis` does.
pub struct Rope {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// The RoPE frequencies `f_j = 1 / 10000^(2j/64)` rounded to f32, `[32]`.
pub fn rope_freqs() -> Vec<f32> {
    (0..HEAD_DIM / 2).map(|j| 1.0f32 / ROPE_THETA.powf((2 * j) as f64 / HEAD_DIM as f64) as f32).collect()
}

/// Reads `{prefix}attn.fsmn_block.weight` (torch's `(D, 1, 31)`) as the taps tap-major, `[31][D]`.
pub fn fsmn_taps(ckpt: &Checkpoint, prefix: &str, d: usize) -> Result<Vec<f32>> {
    let w = ckpt.f32(&format!("{prefix}attn.fsmn_block.weight"), &[d, 1, FSMN_KERNEL])?;
    let mut taps = vec![0f32; FSMN_KERNEL * d];
    for c in 0..d {
        for j in 0..FSMN_KERNEL {
            taps[j * d + c] = w[c * FSMN_KERNEL + j];
        }
    }
    Ok(taps)
}

impl Rope {
    pub fn new(positions: usize) -> Rope {
        let half = HEAD_DIM / 2;
        let freqs = rope_freqs();
        let mut cos = vec![0f32; positions * half];
        let mut sin = vec![0f32; positions * half];
        for t in 0..positions {
            for (j, &f) in freqs.iter().enumerate() {
                let a = (t as f32 * f) as f64;
                cos[t * half + j] = a.cos() as f32;
                sin[t * half + j] = a.sin() as f32;
            }
        }
        Rope { cos, sin }
    }

    /// Positions the table covers.
    pub fn positions(&self) -> usize {
        self.cos.len() / (HEAD_DIM / 2)
    }

    /// Rotates every 64-value head of `x` `[T, heads·64]` in place by its row's position
    /// (rotate-half: `x·cos + [−x₂, x₁]·sin` with the 32 angles repeated for both halves).
    pub(crate) fn apply(&self, x: &mut [f32], d: usize) {
        let half = HEAD_DIM / 2;
        x.par_chunks_mut(d).enumerate().with_min_len(8).for_each(|(t, row)| {
            let (c, s) = (&self.cos[t * half..(t + 1) * half], &self.sin[t * half..(t + 1) * half]);
            for head in row.chunks_exact_mut(HEAD_DIM) {
                let (lo, hi) = head.split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (lo[j], hi[j]);
                    lo[j] = a * c[j] + -b * s[j];
                    hi[j] = b * c[j] + a * s[j];
                }
            }
        });
    }
}

/// Per-utterance work buffers of [`Block::forward`], reused by every block.
pub struct Scratch {
    a: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    fsmn: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    mid: Vec<f32>,
}

impl Scratch {
    /// Buffers for `t` rows of width `d` (MLP width `4d`).
    pub fn new(t: usize, d: usize) -> Scratch {
        let z = || vec![0f32; t * d];
        Scratch { a: z(), q: z(), k: z(), v: z(), fsmn: z(), att: z(), o: z(), mid: vec![0f32; t * 4 * d] }
    }
}

impl Block {
    /// Reads `{prefix}attn.*`, `attn_ln.*`, `mlp.{0,2}.*`, `mlp_ln.*` for width `d` and `heads` heads of 64.
    pub fn load(ckpt: &Checkpoint, prefix: &str, d: usize, heads: usize) -> Result<Block> {
        let t = |name: &str, shape: &[usize]| ckpt.f32(&format!("{prefix}{name}"), shape);
        let fsmn = fsmn_taps(ckpt, prefix, d)?;
        Ok(Block {
            d,
            heads,
            attn_ln: (t("attn_ln.weight", &[d])?, t("attn_ln.bias", &[d])?),
            query: Linear::load(ckpt, &format!("{prefix}attn.query"), d, d, true)?,
            key: Linear::load(ckpt, &format!("{prefix}attn.key"), d, d, false)?,
            value: Linear::load(ckpt, &format!("{prefix}attn.value"), d, d, true)?,
            out: Linear::new(&t("attn.out.weight", &[d, d])?, None, d, d),
            bo: t("attn.out.bias", &[d])?,
            fsmn,
            mlp_ln: (t("mlp_ln.weight", &[d])?, t("mlp_ln.bias", &[d])?),
            mlp1: Linear::load(ckpt, &format!("{prefix}mlp.0"), 4 * d, d, true)?,
            mlp2: Linear::load(ckpt, &format!("{prefix}mlp.2"), d, 4 * d, true)?,
        })
    }

    /// `x` `[T, D]` through the block, in place. `rope` must cover at least `T` positions and `s`
    /// hold buffers for at least `T` rows of this width ([`Error::Input`] otherwise).
    pub fn forward(&self, x: &mut [f32], rope: &Rope, s: &mut Scratch) -> Result<()> {
        let d = self.d;
        let t = x.len() / d;
        let n = t * d;
        if n != x.len() || s.a.len() < n || s.mid.len() < 4 * n || rope.positions() < t {
            return Err(Error::Input {
                field: "x",
                detail: format!(
                    "{} values for rows of {d}, scratch for {} values, RoPE for {} positions",
                    x.len(),
                    s.a.len(),
                    rope.positions()
                ),
            });
        }
        let (a, q, k, v) = (&mut s.a[..n], &mut s.q[..n], &mut s.k[..n], &mut s.v[..n]);
        cpu::layer_norm(x, &self.attn_ln.0, Some(&self.attn_ln.1), a, LN_EPS);
        self.query.forward(a, q);
        self.key.forward(a, k);
        self.value.forward(a, v);
        let fsmn = &mut s.fsmn[..n];
        fsmn_memory(v, &self.fsmn, fsmn, d);
        rope.apply(q, d);
        rope.apply(k, d);
        let scale = (HEAD_DIM as f64).powf(-0.25) as f32;
        q.par_iter_mut().with_min_len(4096).for_each(|e| *e *= scale);
        k.par_iter_mut().with_min_len(4096).for_each(|e| *e *= scale);
        let att = &mut s.att[..n];
        // one utterance, no key lengths (the only thing attention_dense checks)
        cpu::attention_dense(q, k, v, None, att, 1, self.heads, HEAD_DIM, 1.0, false).map_err(|(b, len)| Error::Input {
            field: "attention",
            detail: format!("batch {b}: key length {len} refused (internal)"),
        })?;
        let o = &mut s.o[..n];
        self.out.forward(att, o);
        x.par_chunks_mut(d).zip(o.par_chunks(d)).zip(fsmn.par_chunks(d)).with_min_len(8).for_each(|((xr, or), fr)| {
            for (((xe, &oe), &b), &f) in xr.iter_mut().zip(or).zip(&self.bo).zip(fr) {
                *xe += (oe + b) + f;
            }
        });
        cpu::layer_norm(x, &self.mlp_ln.0, Some(&self.mlp_ln.1), a, LN_EPS);
        let mid = &mut s.mid[..4 * n];
        self.mlp1.forward(a, mid);
        cpu::activation_inplace(mid, 4 * d, Activation::Gelu, None, None);
        self.mlp2.forward(mid, o);
        cpu::add_residual(x, o, None);
        Ok(())
    }
}

/// The FSMN memory `DepthwiseConv1d(v) + v` with zero padding 15 on both sides: `out[t][c] =
/// Σ_j w[j][c]·v[t + j − 15][c] + v[t][c]` (taps in order), `v`, `out` `[T, D]`, `w` `[31][D]`:
/// [`cpu::depthwise_conv1d`], the Cpu twin of the kernel the device encoder runs.
pub(crate) fn fsmn_memory(v: &[f32], w: &[f32], out: &mut [f32], d: usize) {
    let shape = cpu::DepthwiseShape { batch: 1, len: v.len() / d, row: d, channels: d, taps: FSMN_KERNEL };
    cpu::depthwise_conv1d(v, w, out, shape, cpu::DepthwiseConv { col_offset: 0, pad_left: FSMN_LEFT, residual: true });
}
