//! Dense attention for the `cpu-bf16` device on the [`Isa::Amx`] path: the two products of each
//! (batch, head) as AMX GEMMs ([`super::amx::gemm_block`]) over bf16 operands, the softmax in f32
//! between them. The same contract as [`super::attention_dense`] within bf16 tolerance (the
//! kernel backends' attention is bf16 too); the f32 `cpu` device never takes it.
//!
//! Per (batch, head), with `n` visible keys:
//! - the keys `[n, head_dim]` are packed as the score GEMM's weight (panels of 16 keys, pairs of
//!   the head dimension interleaved: [`super::pack_gemm_bf16`]), the values transposed
//!   (`[head_dim, n]`) as the output GEMM's weight;
//! - per block of up to [`BLOCK_ROWS`] queries: the queries rounded to bf16 pairs, scores
//!   `S = Q·Kᵀ` in f32 tiles, then per row the scaled softmax numerators in f32 (masked past the
//!   row's keys: `kv_lens`, causal), rounded to bf16 pairs, `O = P·V` in f32 tiles, and each output
//!   row times `1/Σ` of its numerators.
//!
//! A row's result depends only on its own query (each output comes from its tile row; the blocks'
//! reductions run over all `n` keys in the same order whatever the block): batch-invariant.
use half::bf16;
use rayon::prelude::*;

use super::amx::{AmxGemm, TILE_PAIRS, TILE_ROWS, gemm_block};
use super::attention::{QueryBlock, visible_keys};
use super::gemm_bf16_panels::row_pairs;
use super::gemm_panels::PANEL;
use super::isa::Isa;
use super::packed_gemm_bf16_len;

/// Queries per task.
const BLOCK_ROWS: usize = 64;

/// Whether [`attention_dense_amx`] runs on this process's path.
pub fn attention_amx_available() -> bool {
    super::isa::active() == Isa::Amx
}

/// [`super::attention_dense`] with bf16 operands on AMX (see the module documentation); the
/// lengths are checked as there. The op takes it where [`attention_amx_available`].
///
/// # Panics
/// If this CPU cannot run [`Isa::Amx`], or a slice is shorter than the shapes say.
#[allow(clippy::too_many_arguments)]
pub fn attention_dense_amx(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    heads: usize,
    dh: usize,
    scale: f32,
    causal: bool,
) -> Result<(), (usize, i32)> {
    assert!(Isa::Amx.supported(), "attention_dense_amx: this CPU cannot run AMX");
    let hd = heads * dh;
    if hd == 0 || batch == 0 {
        return Ok(());
    }
    let (lq, lk) = (q.len() / (batch * hd), k.len() / (batch * hd));
    super::conv::check_lens(kv_lens, lk)?;
    assert!(v.len() >= batch * lk * hd && out.len() >= batch * lq * hd, "attention_dense_amx: v or out too short");
    // the packed keys and values in the calling thread's kept buffers (grown as needed; every
    // value used is written)
    super::attention::with_local(&PACKED, |(kpk, vpk)| {
        let (kp_q, kp_v) = (dh.div_ceil(2), lk.div_ceil(2));
        let (k_len, v_len) = (packed_gemm_bf16_len(lk, dh), packed_gemm_bf16_len(dh, lk));
        for (buf, len) in [(&mut *kpk, batch * heads * k_len / 2), (&mut *vpk, batch * heads * v_len / 2)] {
            if buf.len() < len {
                buf.resize(len, 0);
            }
        }
        let (kpk, vpk) = (&mut kpk[..batch * heads * k_len / 2], &mut vpk[..batch * heads * v_len / 2]);
        // the packed keys and transposed values of every (batch, head), for its visible keys (as
        // pairs: u32 storage, so that the bf16 view is always aligned; both lengths are even)
        kpk.par_chunks_mut((k_len / 2).max(1)).zip(vpk.par_chunks_mut((v_len / 2).max(1))).enumerate().for_each(
            |(bh, (kd, vd))| {
                let (b, h) = (bh / heads, bh % heads);
                let n = visible_keys(kv_lens, b, lk);
                let at = b * lk * hd + h * dh;
                // SAFETY: the CPU runs AMX (asserted), so AVX-512F/BF16; keys and values j < n ≤ lk of this
                // (batch, head) lie at at + j·hd (dh values each) inside k and v (lengths asserted); kd and
                // vd are the packed lengths of [lk, dh] and [dh, lk] as pairs.
                unsafe {
                    avx512::pack_keys(&k[at..], hd, n, lk, dh, kd);
                    avx512::pack_values(&v[at..], hd, n, lk, dh, vd);
                }
            },
        );
        let blocks = lq.div_ceil(BLOCK_ROWS);
        let dst = super::attention::SendPtr(out.as_mut_ptr());
        let (kpk, vpk): (&[bf16], &[bf16]) = (bytemuck::cast_slice(kpk), bytemuck::cast_slice(vpk));
        (0..batch * heads * blocks).into_par_iter().for_each(|task| {
            let blk = QueryBlock::of(task, heads, blocks, |i| (i * BLOCK_ROWS).min(lq), kv_lens, lk, causal);
            let (b, h, i0, rows, n) = (blk.b, blk.h, blk.i0, blk.rows, blk.n);
            let bh = b * heads + h;
            let o = dst.get().wrapping_add((b * lq + i0) * hd + h * dh);
            if n == 0 {
                // SAFETY: rows i0..i0 + rows of batch b, head h are this task's own part of out.
                unsafe { super::attention::fill_rows(o, hd, rows, dh, 0.0) };
                return;
            }
            let rows16 = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
            let kq_q = kp_q.div_ceil(TILE_PAIRS) * TILE_PAIRS;
            let kq_v = kp_v.div_ceil(TILE_PAIRS) * TILE_PAIRS;
            super::attention::with_local(&BLOCK, |scr| {
                let Scratch { a, s, ov, inv } = scr;
                if a.len() < rows16 * kq_q.max(kq_v) {
                    a.resize(rows16 * kq_q.max(kq_v), 0);
                }
                // every pair of the tiles is written: the rows' pairs, zeros past them and past the rows
                for (r, dst) in a.chunks_exact_mut(kq_q).take(rows16).enumerate() {
                    if r < rows {
                        row_pairs(&q[(b * lq + i0 + r) * hd + h * dh..][..dh], &mut dst[..kp_q], true);
                        dst[kp_q..].fill(0);
                    } else {
                        dst.fill(0);
                    }
                }
                let s = super::attention::scratch(s, rows * lk);
                let g = AmxGemm {
                    tiled: false,
                    a: &a[..rows16 * kq_q],
                    kq: kq_q,
                    rows,
                    panels: &kpk[bh * k_len..][..k_len],
                    kp: kp_q,
                    n: lk,
                    bias: None,
                };
                // SAFETY: the path is Amx (asserted); `a` holds rows16 × kq_q zero-padded pairs; the panels
                // are the packed [lk, dh] keys; s is [rows, lk].
                unsafe { gemm_block(g, 0..lk.div_ceil(PANEL), s.as_mut_ptr()) };
                let inv = super::attention::scratch(inv, rows);
                for (r, dst) in a.chunks_exact_mut(kq_v).take(rows16).enumerate() {
                    if r >= rows {
                        dst.fill(0);
                        continue;
                    }
                    let keys = blk.row_keys(r);
                    // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (AMX, asserted); the pairs slice holds
                    // ⌈lk/2⌉ values.
                    inv[r] = 1.0 / unsafe { avx512::softmax_pairs(&s[r * lk..][..lk], keys, scale, &mut dst[..kp_v]) };
                    dst[kp_v..].fill(0);
                }
                let ov = super::attention::scratch(ov, rows * dh);
                let g = AmxGemm {
                    tiled: false,
                    a: &a[..rows16 * kq_v],
                    kq: kq_v,
                    rows,
                    panels: &vpk[bh * v_len..][..v_len],
                    kp: kp_v,
                    n: dh,
                    bias: None,
                };
                // SAFETY: as above, with the packed [dh, lk] transposed values; ov is [rows, dh].
                unsafe { gemm_block(g, 0..dh.div_ceil(PANEL), ov.as_mut_ptr()) };
                for (r, orow) in ov.chunks_exact(dh).enumerate() {
                    // SAFETY: row i0 + r of batch b, head h's dh columns: this task's own part of out.
                    let d = unsafe { std::slice::from_raw_parts_mut(o.add(r * hd), dh) };
                    for (x, &y) in d.iter_mut().zip(orow) {
                        *x = y * inv[r];
                    }
                }
            });
        });
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PANEL, row_pairs};
    use std::arch::x86_64::*;

    /// The keys of one (batch, head) as the score GEMM's weight, as pairs: what
    /// [`super::pack_gemm_bf16`] makes of the `[lk, dh]` keys with rows `n..lk` zero. Key `j < n` is
    /// `k[j·hd..][..dh]`. Each panel's 16 keys are rounded to bf16 pairs (`vcvtne2ps2bf16`, as
    /// [`row_pairs`]) and transposed to `[⌈dh/2⌉, 16]`.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 present; `k` holds `(n − 1)·hd + dh` values when `n > 0`;
    /// `n ≤ lk`; `out.len() == ⌈lk/16⌉·16·⌈dh/2⌉`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_keys(k: &[f32], hd: usize, n: usize, lk: usize, dh: usize, out: &mut [u32]) {
        let kp = dh.div_ceil(2);
        debug_assert!(out.len() == lk.div_ceil(PANEL) * PANEL * kp && n <= lk);
        let mut rows = [0u32; PANEL * 128];
        for (p, panel) in out.chunks_exact_mut(PANEL * kp).enumerate() {
            let keys = n.saturating_sub(p * PANEL).min(PANEL);
            for q0 in (0..kp).step_by(128) {
                let w = (kp - q0).min(128);
                for t in 0..PANEL {
                    let row = &mut rows[t * 128..][..w];
                    if t < keys {
                        let x = &k[(p * PANEL + t) * hd + 2 * q0..][..(dh - 2 * q0).min(2 * w)];
                        row_pairs(x, row, true);
                    } else {
                        row.fill(0);
                    }
                }
                for q in 0..w {
                    for t in 0..PANEL {
                        panel[(q0 + q) * PANEL + t] = rows[t * 128 + q];
                    }
                }
            }
        }
    }

    /// The values of one (batch, head) as the output GEMM's weight, as pairs: what
    /// [`super::pack_gemm_bf16`] makes of the transposed `[dh, lk]` values with keys `n..lk` zero.
    /// Value row `j < n` is `v[j·hd..][..dh]`; the pair of keys `(2q, 2q + 1)` at dimension `d` is
    /// `bf16(v[2q, d]) | bf16(v[2q + 1, d]) << 16` (`vcvtneps2bf16`, round to nearest even).
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 present; `v` holds `(n − 1)·hd + dh` values when `n > 0`;
    /// `n ≤ lk`; `out.len() == ⌈dh/16⌉·16·⌈lk/2⌉`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_values(v: &[f32], hd: usize, n: usize, lk: usize, dh: usize, out: &mut [u32]) {
        let kp = lk.div_ceil(2);
        debug_assert!(out.len() == dh.div_ceil(PANEL) * PANEL * kp && n <= lk);
        if n > 0 {
            assert!(v.len() >= (n - 1) * hd + dh, "pack_values: v too short");
        }
        let half = |j: usize, d0: usize, m: __mmask16| -> __m512i {
            if j >= n {
                return _mm512_setzero_si512();
            }
            // SAFETY: the mask keeps the load within row j's dh values (j < n, length asserted).
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, v.as_ptr().add(j * hd + d0));
                _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)))
            }
        };
        for (p, panel) in out.chunks_exact_mut(PANEL * kp).enumerate() {
            let d0 = p * PANEL;
            let m = ((1u32 << (dh - d0).min(PANEL)) - 1) as __mmask16;
            for (q, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                let pair = _mm512_or_si512(half(2 * q, d0, m), _mm512_slli_epi32::<16>(half(2 * q + 1, d0, m)));
                // SAFETY: dst is 16 u32.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr() as *mut __m512i, pair) };
            }
        }
    }

    /// The softmax numerators of one score row, as bf16 pairs: `p_j = exp(scale·s_j − max)` for
    /// `j < keys` (the max over those), 0 for `keys ≤ j < s.len()`, written to `pairs` (`⌈len/2⌉`,
    /// the even element in the low half); returns `Σ p_j` (of the f32 values), see [`exp16`]. The
    /// whole vectors of keys run unmasked, the last ones masked. `keys ≥ 1`.
    ///
    /// # Safety
    /// AVX-512F, AVX-512DQ and AVX-512 BF16 present; `pairs.len() == s.len().div_ceil(2)`,
    /// `keys ≤ s.len()`.
    #[target_feature(enable = "avx512f,avx512dq,avx512bf16")]
    pub(super) unsafe fn softmax_pairs(s: &[f32], keys: usize, scale: f32, pairs: &mut [u32]) -> f32 {
        debug_assert!(keys >= 1 && keys <= s.len() && pairs.len() == s.len().div_ceil(2));
        let mask = |i: usize, end: usize| -> __mmask16 {
            let n = end.saturating_sub(i).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let sc = _mm512_set1_ps(scale);
        let p = s.as_ptr();
        // SAFETY (whole body): unmasked loads read 16 values below `keys` (≤ s.len()), masked loads
        // only j < keys; unmasked stores write 16 pairs below keys/2, masked stores only the pairs of
        // j < s.len().
        unsafe {
            let (mut m0, mut m1) = (_mm512_set1_ps(f32::NEG_INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
            let full = keys / 16 * 16;
            let mut i = 0;
            while i + 32 <= full {
                m0 = _mm512_max_ps(m0, _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), sc));
                m1 = _mm512_max_ps(m1, _mm512_mul_ps(_mm512_loadu_ps(p.add(i + 16)), sc));
                i += 32;
            }
            while i < keys {
                let k = mask(i, keys);
                m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), sc));
                i += 16;
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(m0, m1)));
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= keys {
                let e0 = exp16(_mm512_fmsub_ps(_mm512_loadu_ps(p.add(i)), sc, m));
                let e1 = exp16(_mm512_fmsub_ps(_mm512_loadu_ps(p.add(i + 16)), sc, m));
                acc = _mm512_add_ps(acc, _mm512_add_ps(e0, e1));
                let b = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(e1, e0));
                _mm512_storeu_si512(pairs.as_mut_ptr().add(i / 2) as *mut __m512i, b);
                i += 32;
            }
            while i < s.len() {
                let (k0, k1) = (mask(i, keys), mask(i + 16, keys));
                let x0 = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k0, p.add(i)), sc, m);
                let x1 = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k1, p.add(i + 16)), sc, m);
                let e0 = _mm512_maskz_mov_ps(k0, exp16(x0));
                let e1 = _mm512_maskz_mov_ps(k1, exp16(x1));
                acc = _mm512_add_ps(acc, _mm512_add_ps(e0, e1));
                let b = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(e1, e0));
                _mm512_mask_storeu_epi32(pairs.as_mut_ptr().add(i / 2) as *mut i32, mask(i / 2, pairs.len()), b);
                i += 32;
            }
            _mm512_reduce_add_ps(acc)
        }
    }

    /// `exp(x)` for `x ≤ 0`: `t = x·log₂e` (rounded: a relative error of `|t|·2⁻²⁴` in the result)
    /// split as `⌊t⌋ + f` (`vreduceps`, exact), `2^f` on `[0, 1)` by a degree-4 polynomial (relative
    /// minimax, error 2.6·10⁻⁶), times `2^⌊t⌋` by `vscalefps` (which floors its exponent operand).
    /// Far below the bf16 rounding that follows. Below `t = −150` the result is 0; −∞ gives 0.
    #[target_feature(enable = "avx512f,avx512dq")]
    fn exp16(x: __m512) -> __m512 {
        let t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)), _mm512_set1_ps(-150.0));
        let f = _mm512_reduce_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
        let mut p = _mm512_set1_ps(1.353_416_8e-2);
        for c in [5.201_146e-2, 2.414_427_6e-1, 6.930_038_3e-1, 1.000_002_6] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, t)
    }

    #[cfg(test)]
    mod tests {
        /// The numerators and their sum against f64, over masks, tails and both halves of a pair.
        #[test]
        fn softmax_pairs_match_f64() {
            if !crate::cpu::Isa::Amx.supported() {
                eprintln!("skipped amx softmax: this CPU lacks AMX");
                return;
            }
            let seed = crate::testing::fresh_seed();
            for len in [1usize, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 813] {
                let s = crate::testing::random_f32(seed ^ len as u64, len, 4.0);
                for keys in [1, len / 2 + 1, len] {
                    let keys = keys.min(len);
                    let mut pairs = vec![0xdead_beefu32; len.div_ceil(2)];
                    // SAFETY: AMX (so AVX-512F/BF16) checked above; lengths as required.
                    let sum = unsafe { super::softmax_pairs(&s, keys, 0.7, &mut pairs) };
                    let m = s[..keys].iter().map(|&x| x as f64 * 0.7).fold(f64::NEG_INFINITY, f64::max);
                    let want: Vec<f64> = (0..len).map(|j| if j < keys { (s[j] as f64 * 0.7 - m).exp() } else { 0.0 }).collect();
                    let got: Vec<f32> =
                        (0..len).map(|j| half::bf16::from_bits((pairs[j / 2] >> (16 * (j % 2))) as u16).to_f32()).collect();
                    for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g as f64 - w).abs() <= 4e-3 * w + 1e-30,
                            "len {len} keys {keys} j {j}: {g} vs {w} (seed {seed})"
                        );
                    }
                    if len % 2 == 1 {
                        assert_eq!(pairs[len / 2] >> 16, 0, "the odd length's last half is zero");
                    }
                    let ws: f64 = want.iter().sum();
                    assert!((sum as f64 - ws).abs() <= 1e-5 * ws, "len {len} keys {keys}: sum {sum} vs {ws}");
                }
            }
        }
    }
}

/// A query block's buffers: `x` tiles as pairs, scores, outputs, `1/Σ` per row.
#[derive(Default)]
struct Scratch {
    a: Vec<u32>,
    s: Vec<f32>,
    ov: Vec<f32>,
    inv: Vec<f32>,
}

thread_local! {
    /// Each thread's [`Scratch`], kept between calls (S3Gen makes ~10^3 attention calls).
    static BLOCK: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// The calling thread's packed keys and values ([`attention_dense_amx`]), kept between calls.
    static PACKED: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32, rel_l2, round_bf16};

    /// The direct packing of keys and values equals the general packing of the explicit `[lk, dh]`
    /// keys and transposed values (rows past the visible keys zero), bit for bit: odd head dims,
    /// partial panels, odd key counts, no visible key, head dims past one 128-pair chunk; the rows
    /// past `n` are NaN in the source (never read) and the outputs start poisoned.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn keys_and_values_pack_as_the_general_packing() {
        if let Some(missing) = Isa::Amx.missing_feature() {
            eprintln!("skipped amx packing: this CPU lacks {missing}");
            return;
        }
        let seed = fresh_seed();
        for (heads, dh, lk, n) in [(2, 64, 53, 50), (3, 33, 17, 17), (1, 80, 200, 0), (2, 16, 1, 1), (1, 300, 40, 39)] {
            let hd = heads * dh;
            for h in 0..heads {
                let mut src = random_f32(seed ^ (dh * 1000 + lk) as u64, lk * hd, 2.0);
                src[n * hd..].fill(f32::NAN);
                let mut kr = vec![0f32; lk * dh];
                let mut vt = vec![0f32; dh * lk];
                for j in 0..n {
                    for d in 0..dh {
                        kr[j * dh + d] = src[j * hd + h * dh + d];
                        vt[d * lk + j] = src[j * hd + h * dh + d];
                    }
                }
                let mut want_k = vec![bf16::ZERO; packed_gemm_bf16_len(lk, dh)];
                let mut want_v = vec![bf16::ZERO; packed_gemm_bf16_len(dh, lk)];
                crate::cpu::pack_gemm_bf16(&kr, lk, dh, &mut want_k);
                crate::cpu::pack_gemm_bf16(&vt, dh, lk, &mut want_v);
                let mut got_k = vec![0xdead_beefu32; want_k.len() / 2];
                let mut got_v = vec![0xdead_beefu32; want_v.len() / 2];
                // SAFETY: AMX (so AVX-512F/BF16) checked above; src holds lk rows of hd values.
                unsafe {
                    avx512::pack_keys(&src[h * dh..], hd, n, lk, dh, &mut got_k);
                    avx512::pack_values(&src[h * dh..], hd, n, lk, dh, &mut got_v);
                }
                // compared as bits (u32 storage viewed as bf16 halves is always aligned)
                let bits = |w: &[bf16]| w.iter().map(|v| v.to_bits()).collect::<Vec<u16>>();
                let (gk, gv): (&[u16], &[u16]) = (bytemuck::cast_slice(&got_k), bytemuck::cast_slice(&got_v));
                assert_eq!(gk, bits(&want_k), "keys {heads}x{dh}, {n} of {lk} (seed {seed})");
                assert_eq!(gv, bits(&want_v), "values {heads}x{dh}, {n} of {lk} (seed {seed})");
            }
        }
    }

    /// Against the f32 attention on the bf16-rounded q, k, v: odd lengths, several heads, kv_lens
    /// (one batch item with no visible key), causal and not, a poisoned output and poisoned keys and
    /// values past the visible ones.
    #[test]
    fn matches_the_f32_attention_of_the_bf16_operands_within_bf16_tolerance() {
        if let Some(missing) = Isa::Amx.missing_feature() {
            eprintln!("skipped amx attention: this CPU lacks {missing}");
            return;
        }
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        for (batch, heads, dh, lq, lk, causal) in
            [(3, 2, 64, 37, 53, false), (2, 3, 64, 90, 90, true), (1, 1, 80, 5, 200, false), (2, 2, 40, 133, 17, false)]
        {
            let hd = heads * dh;
            let q = round_bf16(&random_f32(seed, batch * lq * hd, 1.0));
            let mut k = round_bf16(&random_f32(seed ^ 1, batch * lk * hd, 1.0));
            let mut v = round_bf16(&random_f32(seed ^ 2, batch * lk * hd, 1.0));
            let lens: Vec<i32> = (0..batch).map(|b| if b == 1 { 0 } else { (lk - b * 3) as i32 }).collect();
            for b in 0..batch {
                for j in lens[b] as usize..lk {
                    k[(b * lk + j) * hd..][..hd].fill(f32::NAN);
                    v[(b * lk + j) * hd..][..hd].fill(f32::NAN);
                }
            }
            let mut want = vec![f32::NAN; batch * lq * hd];
            crate::cpu::attention_dense(&q, &k, &v, Some(&lens), &mut want, batch, heads, dh, 0.125, causal).unwrap();
            let mut got = vec![f32::NAN; batch * lq * hd];
            attention_dense_amx(&q, &k, &v, Some(&lens), &mut got, batch, heads, dh, 0.125, causal).unwrap();
            assert!(got.iter().all(|x| x.is_finite()), "every output written, none poisoned (seed {seed})");
            let e = rel_l2(&got, &want);
            assert!(e < 1e-2, "[{batch}, {heads}x{dh}, {lq}x{lk}, causal {causal}]: relative L2 {e} (seed {seed})");
            // a row alone gives the same bits as in its batch
            let row = lq / 2;
            let mut one = vec![f32::NAN; hd];
            let qb = &q[row * hd..][..hd];
            attention_dense_amx(qb, &k[..lk * hd], &v[..lk * hd], Some(&lens[..1]), &mut one, 1, heads, dh, 0.125, false)
                .unwrap();
            if !causal {
                assert_eq!(one, got[row * hd..][..hd], "batch invariance (seed {seed})");
            }
        }
        // a length past lk is refused
        let mut o = vec![0f32; 64];
        assert_eq!(
            attention_dense_amx(&[0.0; 64], &[0.0; 64], &[0.0; 64], Some(&[2]), &mut o, 1, 1, 64, 1.0, false),
            Err((0, 2))
        );
    }
}
