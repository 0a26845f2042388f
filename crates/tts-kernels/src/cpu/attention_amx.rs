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
use super::isa::Isa;
use super::{pack_gemm_bf16, packed_gemm_bf16_len};

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
    let (kp_q, kp_v) = (dh.div_ceil(2), lk.div_ceil(2));
    let (k_len, v_len) = (packed_gemm_bf16_len(lk, dh), packed_gemm_bf16_len(dh, lk));
    // the packed keys and transposed values of every (batch, head), for its visible keys
    let mut kpk = vec![bf16::ZERO; batch * heads * k_len];
    let mut vpk = vec![bf16::ZERO; batch * heads * v_len];
    kpk.par_chunks_mut(k_len.max(1)).zip(vpk.par_chunks_mut(v_len.max(1))).enumerate().for_each(|(bh, (kd, vd))| {
        let (b, h) = (bh / heads, bh % heads);
        let n = visible_keys(kv_lens, b, lk);
        super::attention::with_local(&HEAD, |(kh, vt)| {
            for buf in [&mut *kh, &mut *vt] {
                buf.clear();
                buf.resize(lk * dh, 0.0);
            }
            for j in 0..n {
                let src = (b * lk + j) * hd + h * dh;
                kh[j * dh..][..dh].copy_from_slice(&k[src..][..dh]);
                for (d, &x) in v[src..][..dh].iter().enumerate() {
                    vt[d * lk + j] = x;
                }
            }
            pack_gemm_bf16(kh, lk, dh, kd);
            pack_gemm_bf16(vt, dh, lk, vd);
        });
    });
    let blocks = lq.div_ceil(BLOCK_ROWS);
    let dst = super::attention::SendPtr(out.as_mut_ptr());
    let (kpk, vpk) = (&kpk, &vpk);
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
            a.clear();
            a.resize(rows16 * kq_q.max(kq_v), 0);
            for r in 0..rows {
                row_pairs(&q[(b * lq + i0 + r) * hd + h * dh..][..dh], &mut a[r * kq_q..][..kp_q], true);
            }
            let s = super::attention::scratch(s, rows * lk);
            let g = AmxGemm {
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
            unsafe { gemm_block(g, 0..lk.div_ceil(super::gemm_panels::PANEL), s.as_mut_ptr()) };
            a.fill(0);
            let inv = super::attention::scratch(inv, rows);
            for (r, sr) in s.chunks_exact(lk).enumerate() {
                let keys = blk.row_keys(r);
                // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (AMX, asserted); the pairs slice holds
                // ⌈lk/2⌉ values.
                inv[r] = 1.0 / unsafe { avx512::softmax_pairs(sr, keys, scale, &mut a[r * kq_v..][..kp_v]) };
            }
            let ov = super::attention::scratch(ov, rows * dh);
            let g = AmxGemm {
                a: &a[..rows16 * kq_v],
                kq: kq_v,
                rows,
                panels: &vpk[bh * v_len..][..v_len],
                kp: kp_v,
                n: dh,
                bias: None,
            };
            // SAFETY: as above, with the packed [dh, lk] transposed values; ov is [rows, dh].
            unsafe { gemm_block(g, 0..dh.div_ceil(super::gemm_panels::PANEL), ov.as_mut_ptr()) };
            for (r, orow) in ov.chunks_exact(dh).enumerate() {
                // SAFETY: row i0 + r of batch b, head h's dh columns: this task's own part of out.
                let d = unsafe { std::slice::from_raw_parts_mut(o.add(r * hd), dh) };
                for (x, &y) in d.iter_mut().zip(orow) {
                    *x = y * inv[r];
                }
            }
        });
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The softmax numerators of one score row, as bf16 pairs: `p_j = exp(scale·s_j − max)` for
    /// `j < keys` (the max over those), 0 for `keys ≤ j < s.len()`, written to `pairs` (`⌈len/2⌉`,
    /// the even element in the low half); returns `Σ p_j` (of the f32 values). `exp` is Cephes'
    /// degree-5 polynomial on the range-reduced argument, scaled by `vscalefps` (a few ulp; far
    /// below the bf16 rounding that follows). `keys ≥ 1`.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 present; `pairs.len() == s.len().div_ceil(2)`, `keys ≤ s.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn softmax_pairs(s: &[f32], keys: usize, scale: f32, pairs: &mut [u32]) -> f32 {
        debug_assert!(keys >= 1 && keys <= s.len() && pairs.len() == s.len().div_ceil(2));
        let mask = |i: usize, end: usize| -> __mmask16 {
            let n = end.saturating_sub(i).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let sc = _mm512_set1_ps(scale);
        // SAFETY (whole body): every load is masked to j < keys, every store to the pairs of
        // j < s.len().
        unsafe {
            let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < keys {
                let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(i, keys), s.as_ptr().add(i)), sc);
                mv = _mm512_mask_max_ps(mv, mask(i, keys), mv, x);
                i += 16;
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i < s.len() {
                let (k0, k1) = (mask(i, keys), mask(i + 16, keys));
                let x0 = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k0, s.as_ptr().add(i)), sc, m);
                let x1 = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k1, s.as_ptr().add(i + 16)), sc, m);
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

    /// `exp(x)` for `x ≤ 0` (Cephes `expf`: `x = n·ln2 + r`, `|r| ≤ ln2/2`, degree-5 polynomial,
    /// times `2^n` by `vscalefps`; below −87.3 the result underflows towards 0).
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(p, n)
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
    /// Each thread's head buffers (keys, transposed values) before packing.
    static HEAD: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32, rel_l2, round_bf16};

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
