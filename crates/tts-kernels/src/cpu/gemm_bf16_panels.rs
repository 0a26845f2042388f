//! The `cpu-bf16` GEMM on AVX-512 BF16: bf16 weight panels, `x` rounded to bf16 at the input, the
//! products summed in f32 by `vdpbf16ps` (two bf16 products per f32 lane and instruction). A speed
//! mode, not the parity reference: within bf16 tolerance (~1e-2 relative) of the f32
//! [`super::gemm_panels`].
//!
//! Layout of a packed `[n, k]` weight ([`pack_gemm_bf16`]): `⌈n/16⌉` panels of `[⌈k/2⌉, 16, 2]`
//! bf16, the pairs of `k` interleaved as `vdpbf16ps` reads them:
//! `panels[((p·⌈k/2⌉ + q)·16 + t)·2 + e] = w[16p + t, 2q + e]`, zeros past `n` and `k`.
//!
//! Kernel (AVX-512 BF16): each row's `x` is rounded to bf16 (round to nearest even) into a
//! thread-local `[rows, ⌈k/2⌉]` buffer of pairs (zero-padded at odd `k`); a register tile of up to
//! 12 rows × two panels (32 columns) keeps 24 f32 accumulators; for each pair `q`, one load of
//! each panel and one broadcast of the row's pair per row. Partial panels go through masked
//! stores. Rows are taken in blocks as [`super::gemm_panels`]'s (rayon tasks).
//!
//! Order: every output is `Σ_q (x[r, 2q]·w[j, 2q] + x[r, 2q+1]·w[j, 2q+1])` accumulated in f32 over
//! `q = 0, 1, ...` as `vdpbf16ps` rounds it, then `+ bias[j]`: a row's result does not depend on the
//! other rows (batch invariance). On the other paths (tests, or a CPU without AVX-512 BF16) the same
//! bf16 operands are summed by a scalar loop in f32 (one multiply and one add per product): the
//! same value within f32 rounding, not the same bits. `vdpbf16ps` treats bf16 subnormals as zero.
//!
//! On the [`Isa::Amx`] path the same panels are AMX tiles' weight operand ([`super::amx`]): `x`'s
//! pairs padded to whole 16 × 16-pair tiles, `tdpbf16ps` per block of 16 pairs, in order; also
//! batch-invariant (a row's outputs come from its own tile row).

use half::bf16;
use rayon::prelude::*;

use super::gemm_panels::{BLOCK_ROWS, PANEL, PAR_MIN_WORK, TILE_ROWS_512, row_blocks};
use super::isa::Isa;

/// Elements (bf16) of the packed form of an `[n, k]` weight.
pub fn packed_gemm_bf16_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * PANEL * k.div_ceil(2) * 2
}

/// Packs the row-major weight `w[n, k]` (bf16 as is, or f32 rounded to nearest even) into `out`
/// (`packed_gemm_bf16_len(n, k)` elements) as panels of 16 columns with the pairs of `k` interleaved.
///
/// # Panics
/// If `w` holds fewer than `n·k` values or `out` is not `packed_gemm_bf16_len(n, k)` long.
pub fn pack_gemm_bf16<T: Copy + Into<f32> + Sync>(w: &[T], n: usize, k: usize, out: &mut [bf16]) {
    assert!(w.len() >= n * k && out.len() == packed_gemm_bf16_len(n, k), "pack_gemm_bf16: slice lengths");
    let kp = k.div_ceil(2);
    if kp == 0 {
        return;
    }
    out.par_chunks_mut(PANEL * 2 * kp).enumerate().for_each(|(p, panel)| {
        let cols = PANEL.min(n - p * PANEL);
        for (q, dst) in panel.chunks_exact_mut(2 * PANEL).enumerate() {
            for (i, d) in dst.iter_mut().enumerate() {
                let (t, c) = (i / 2, 2 * q + i % 2);
                *d = if t < cols && c < k { bf16::from_f32(w[(p * PANEL + t) * k + c].into()) } else { bf16::ZERO };
            }
        }
    });
}

/// The row-major `[n, k]` weight (widened to f32) back from its packed form.
pub fn unpack_gemm_bf16(panels: &[bf16], n: usize, k: usize) -> Vec<f32> {
    let kp = k.div_ceil(2);
    let mut w = vec![0f32; n * k];
    for (j, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        let (p, t) = (j / PANEL, j % PANEL);
        for (c, v) in row.iter_mut().enumerate() {
            *v = panels[((p * kp + c / 2) * PANEL + t) * 2 + c % 2].to_f32();
        }
    }
    w
}

/// `out[m, n] = bf16(x[m, k]) · w[n, k]ᵀ (+ bias[n])`, f32 accumulation, with `w` packed by
/// [`pack_gemm_bf16`], on the process's instruction path ([`super::isa::active`]).
pub fn gemm_bf16_panels(x: &[f32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_bf16_panels_with(super::isa::active(), x, panels, bias, out, m, n, k);
}

/// [`gemm_bf16_panels`] on the path `isa`: `vdpbf16ps` on [`Isa::Avx512Bf16`] (when this CPU has
/// it, [`Isa::runnable`]), the scalar loop otherwise.
///
/// # Panics
/// If a slice is shorter than the shapes say or `panels` is not `packed_gemm_bf16_len(n, k)` long.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16_panels_with(
    isa: Isa,
    x: &[f32],
    panels: &[bf16],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        x.len() >= m * k && panels.len() == packed_gemm_bf16_len(n, k) && out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "gemm_bf16_panels: slice lengths"
    );
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    #[cfg(target_arch = "x86_64")]
    if isa.runnable() == Isa::Amx && kp > 0 {
        amx_gemm(x, panels, bias, &mut out[..m * n], m, n, k);
        return;
    }
    let dp = isa.runnable().allows(Isa::Avx512Bf16);
    let block = |(r0, o): (usize, &mut [f32])| {
        let rows = o.len() / n;
        super::attention::with_local(&PAIRS, |buf| {
            let pairs = bf16_pairs(&x[r0 * k..][..rows * k], rows, k, dp, buf);
            match dp {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (runnable); pairs holds rows·kp, o
                // rows·n and panels the packed [n, k] weight (asserted above).
                true => unsafe { avx512bf16::block(pairs, panels, bias, o, rows, n, kp) },
                _ => scalar_block(pairs, panels, bias, o, rows, n, kp),
            }
        });
    };
    let out = &mut out[..m * n];
    if m > BLOCK_ROWS && m * n * k >= PAR_MIN_WORK {
        row_blocks(out, m, n, rayon::current_num_threads(), TILE_ROWS_512).into_par_iter().for_each(block);
    } else {
        out.chunks_mut(BLOCK_ROWS * n).enumerate().for_each(|(i, o)| block((i * BLOCK_ROWS, o)));
    }
}

/// The AMX form of [`gemm_bf16_panels_with`] (`kp ≥ 1`): few rows (decode steps) are split over
/// the threads by panels, each task streaming its panels once for every row; many rows by row
/// blocks of whole 32-row tiles, each task computing every panel for its rows.
#[cfg(target_arch = "x86_64")]
fn amx_gemm(x: &[f32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], m: usize, n: usize, k: usize) {
    use super::amx::{AmxGemm, TILE_PAIRS, TILE_ROWS, gemm_block};
    let kp = k.div_ceil(2);
    let kq = kp.div_ceil(TILE_PAIRS) * TILE_PAIRS;
    let n_panels = n.div_ceil(PANEL);
    let threads = rayon::current_num_threads();
    if m <= 2 * TILE_ROWS {
        super::attention::with_local(&PAIRS, |buf| {
            fill_tiles(&x[..m * k], m, k, buf);
            let g = AmxGemm { a: buf, tiled: true, kq, rows: m, panels, kp, n, bias };
            let dst = super::linear::SharedOut(out.as_mut_ptr());
            // tasks of whole panel pairs; several per thread when there is enough work
            let tasks = if m * n * k >= PAR_MIN_WORK { (2 * threads).min(n_panels.div_ceil(2)) } else { 1 };
            let pairs_per = n_panels.div_ceil(2).div_ceil(tasks.max(1));
            (0..tasks).into_par_iter().for_each(|t| {
                let p0 = (t * pairs_per * 2).min(n_panels);
                let p1 = ((t + 1) * pairs_per * 2).min(n_panels);
                // SAFETY: the CPU runs AMX (runnable); buf holds rows16·kq pairs, zero-padded;
                // panels is the packed [n, k] weight; tasks write disjoint columns of out [m, n].
                unsafe { gemm_block(g, p0..p1, dst.ptr()) };
            });
        });
        return;
    }
    let block = |(r0, o): (usize, &mut [f32])| {
        let rows = o.len() / n;
        super::attention::with_local(&PAIRS, |buf| {
            fill_tiles(&x[r0 * k..][..rows * k], rows, k, buf);
            let g = AmxGemm { a: buf, tiled: true, kq, rows, panels, kp, n, bias };
            // SAFETY: as above; this task owns the rows of o.
            unsafe { gemm_block(g, 0..n_panels, o.as_mut_ptr()) };
        });
    };
    if m * n * k >= PAR_MIN_WORK {
        row_blocks(out, m, n, threads, 2 * TILE_ROWS).into_par_iter().for_each(block);
    } else {
        out.chunks_mut(BLOCK_ROWS * n).enumerate().for_each(|(i, o)| block((i * BLOCK_ROWS, o)));
    }
}

/// `x` `[rows, k]` rounded to bf16 pairs for [`super::amx::gemm_block`] (`tiled`): zero-padded to
/// whole tiles of 16 rows × 16 pairs (`⌈rows/16⌉·16` rows of `kq = ⌈⌈k/2⌉/16⌉·16` pairs), stored
/// tile by tile ([`super::amx::tiled_row`]); every value of `buf`'s first `rows16·kq` is written
/// (no separate clearing pass). The CPU must have AVX-512 BF16 (AMX implies it).
#[cfg(target_arch = "x86_64")]
pub(super) fn fill_tiles(x: &[f32], rows: usize, k: usize, buf: &mut Vec<u32>) {
    use super::amx::{TILE_PAIRS, TILE_ROWS};
    let kq = k.div_ceil(2).div_ceil(TILE_PAIRS) * TILE_PAIRS;
    let rows16 = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
    if buf.len() < rows16 * kq {
        buf.resize(rows16 * kq, 0);
    }
    for r in 0..rows16 {
        let at = super::amx::tiled_row(r, kq);
        for b in 0..kq / TILE_PAIRS {
            let piece = &mut buf[at + b * TILE_ROWS * TILE_PAIRS..][..TILE_PAIRS];
            let (c0, c1) = ((2 * TILE_PAIRS * b).min(k), (2 * TILE_PAIRS * (b + 1)).min(k));
            let written = if r < rows && c0 < c1 {
                row_pairs(&x[r * k + c0..r * k + c1], &mut piece[..(c1 - c0).div_ceil(2)], true);
                (c1 - c0).div_ceil(2)
            } else {
                0
            };
            piece[written..].fill(0);
        }
    }
}

thread_local! {
    /// The calling thread's buffer of a row block's bf16 pairs of `x`, kept between calls.
    static PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `x` `[rows, k]` rounded to bf16, as `[rows, ⌈k/2⌉]` pairs (`x[r, 2q]` in the low half, zero
/// after an odd `k`'s last value), in `buf`; `vcvtne2ps2bf16` when `dp` (the scalar loop costs
/// about as much as the GEMM at n = 256).
fn bf16_pairs<'a>(x: &[f32], rows: usize, k: usize, dp: bool, buf: &'a mut Vec<u32>) -> &'a [u32] {
    let kp = k.div_ceil(2);
    buf.clear();
    buf.resize(rows * kp, 0);
    for (xr, dst) in x.chunks_exact(k.max(1)).zip(buf.chunks_exact_mut(kp.max(1))).take(rows) {
        row_pairs(&xr[..k], dst, dp);
    }
    buf
}

/// One row `x` rounded to bf16 as `⌈len/2⌉` pairs into `dst` (round to nearest even), with
/// `vcvtne2ps2bf16` when `dp`.
pub(super) fn row_pairs(x: &[f32], dst: &mut [u32], dp: bool) {
    debug_assert_eq!(dst.len(), x.len().div_ceil(2));
    #[cfg(target_arch = "x86_64")]
    if dp {
        // SAFETY: dp is set only where the CPU has AVX-512F and AVX-512 BF16 (runnable); the
        // lengths are as asserted.
        unsafe { avx512bf16::row_pairs(x, dst) };
        return;
    }
    let bits = |v: f32| bf16::from_f32(v).to_bits() as u32;
    let mut it = x.chunks_exact(2);
    for (d, p) in dst.iter_mut().zip(it.by_ref()) {
        *d = bits(p[0]) | bits(p[1]) << 16;
    }
    if let [last] = it.remainder() {
        dst[x.len() / 2] = bits(*last);
    }
}

/// One row block without `vdpbf16ps`: the same bf16 operands, one f32 multiply and add per product
/// in the kernel's order.
fn scalar_block(pairs: &[u32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], rows: usize, n: usize, kp: usize) {
    let half_at = |p: u32, e: usize| bf16::from_bits((p >> (16 * e)) as u16).to_f32();
    for r in 0..rows {
        let xr = &pairs[r * kp..][..kp];
        for j in 0..n {
            let (p, t) = (j / PANEL, j % PANEL);
            let panel = &panels[p * kp * PANEL * 2..][..kp * PANEL * 2];
            let mut acc = 0f32;
            for (q, &xp) in xr.iter().enumerate() {
                for e in 0..2 {
                    acc += half_at(xp, e) * panel[(q * PANEL + t) * 2 + e].to_f32();
                }
            }
            out[r * n + j] = acc + bias.map_or(0.0, |b| b[j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use super::{PANEL, TILE_ROWS_512, bf16};
    use std::arch::x86_64::*;

    /// `x` rounded to bf16 as `⌈len/2⌉` pairs into `dst`, 32 values per `vcvtne2ps2bf16` (the tail
    /// through masked loads and stores; zeros past `x`).
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be present; `dst` holds `⌈x.len()/2⌉` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn row_pairs(x: &[f32], dst: &mut [u32]) {
        let mut i = 0;
        while i < x.len() {
            let n = (x.len() - i).min(32);
            let (m_lo, m_hi) = (((1u64 << n.min(16)) - 1) as __mmask16, ((1u64 << n.saturating_sub(16)) - 1) as __mmask16);
            // SAFETY: the masks keep the loads within x and the store within dst (⌈n/2⌉ pairs).
            unsafe {
                let lo = _mm512_maskz_loadu_ps(m_lo, x.as_ptr().add(i));
                let hi = _mm512_maskz_loadu_ps(m_hi, x.as_ptr().add(i + 16));
                let b = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                let m_out = ((1u32 << n.div_ceil(2)) - 1) as __mmask16;
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(i / 2) as *mut i32, m_out, b);
            }
            i += n;
        }
    }

    /// One row block: for each pair of panels (the last one alone when their number is odd), each
    /// tile of up to 12 rows.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be present; `pairs` holds `rows·kp`, `out` `rows·n`,
    /// `panels` the packed `[n, k]` weight (`kp = ⌈k/2⌉`) and `bias` (if any) `n` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block(
        pairs: &[u32],
        panels: &[bf16],
        bias: Option<&[f32]>,
        out: &mut [f32],
        rows: usize,
        n: usize,
        kp: usize,
    ) {
        let n_panels = n.div_ceil(PANEL);
        let mut p = 0;
        while p < n_panels {
            let two = p + 1 < n_panels;
            let cols = (n - p * PANEL).min(if two { 2 * PANEL } else { PANEL });
            // SAFETY: panels p (and p + 1) hold kp·32 values each; the tile reads rows r0.. of
            // pairs and writes columns 16p..16p + cols of those rows of out (bounded by n).
            unsafe {
                let mut r0 = 0;
                while r0 < rows {
                    let r = (rows - r0).min(TILE_ROWS_512);
                    let t = Tile {
                        x: pairs.as_ptr().add(r0 * kp),
                        kp,
                        panel: panels.as_ptr().add(p * kp * PANEL * 2),
                        bias: bias.map(|b| b.as_ptr().add(p * PANEL)),
                        out: out.as_mut_ptr().add(r0 * n + p * PANEL),
                        n,
                        cols,
                    };
                    if two {
                        tile_rows::<2>(r, t);
                    } else {
                        tile_rows::<1>(r, t);
                    }
                    r0 += r;
                }
            }
            p += if two { 2 } else { 1 };
        }
    }

    /// One register tile's operands: `x`'s pairs (rows of stride `kp`), the first of its `P`
    /// panels (the next one `kp·32` values on), `bias` and `out` (rows of stride `n`) at its first
    /// column, and its real columns `cols ≤ 16·P`.
    #[derive(Clone, Copy)]
    struct Tile {
        x: *const u32,
        kp: usize,
        panel: *const bf16,
        bias: Option<*const f32>,
        out: *mut f32,
        n: usize,
        cols: usize,
    }

    /// [`tile`] for `r` (1..=12) rows.
    ///
    /// # Safety
    /// As [`tile`], for `r` rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile_rows<const P: usize>(r: usize, t: Tile) {
        // SAFETY: forwarded.
        unsafe {
            match r {
                1 => tile::<1, P>(t),
                2 => tile::<2, P>(t),
                3 => tile::<3, P>(t),
                4 => tile::<4, P>(t),
                5 => tile::<5, P>(t),
                6 => tile::<6, P>(t),
                7 => tile::<7, P>(t),
                8 => tile::<8, P>(t),
                9 => tile::<9, P>(t),
                10 => tile::<10, P>(t),
                11 => tile::<11, P>(t),
                _ => tile::<12, P>(t),
            }
        }
    }

    /// `R` rows × `P` panels: `acc[r][q] = Σ_pairs vdpbf16ps(x pair, panel_q pair)`, `+ bias`;
    /// columns past `cols` are neither read from `bias` nor written to `out`.
    ///
    /// # Safety
    /// AVX-512F/BF16 present; `x` readable for `R` rows of `kp` pairs, the panels for `P·kp·32`
    /// bf16, `bias` for `cols` values, `out` writable for `R` rows of stride `n` and `cols` columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const P: usize>(t: Tile) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; the
        // masks keep bias loads and out stores within cols. __m512i and __m512bh are both 64
        // bytes of plain bits.
        unsafe {
            let mask: [__mmask16; P] = std::array::from_fn(|q| {
                let c = t.cols.saturating_sub(q * PANEL).min(PANEL);
                ((1u32 << c) - 1) as __mmask16
            });
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for c in 0..t.kp {
                let w: [__m512bh; P] = std::array::from_fn(|q| {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        t.panel.add((q * t.kp + c) * PANEL * 2) as *const __m512i
                    ))
                });
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*t.x.add(r * t.kp + c) as i32));
                    for (v, wq) in a.iter_mut().zip(&w) {
                        *v = _mm512_dpbf16_ps(*v, xv, *wq);
                    }
                }
            }
            if let Some(b) = t.bias {
                let bv: [__m512; P] = std::array::from_fn(|q| _mm512_maskz_loadu_ps(mask[q], b.add(q * PANEL)));
                for a in acc.iter_mut() {
                    for (v, bq) in a.iter_mut().zip(&bv) {
                        *v = _mm512_add_ps(*v, *bq);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (q, v) in a.iter().enumerate() {
                    _mm512_mask_storeu_ps(t.out.add(r * t.n + q * PANEL), mask[q], *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32, rel_l2, round_bf16};

    /// `bf16(x) · bf16(w)ᵀ (+ b)` in f64, and `Σ |terms|` per output.
    fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let (xr, wr) = (round_bf16(x), round_bf16(w));
        let mut out = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut a) = (b.map_or(0.0, |b| b[j] as f64), b.map_or(0.0, |b| (b[j] as f64).abs()));
                for c in 0..k {
                    let t = xr[i * k + c] as f64 * wr[j * k + c] as f64;
                    s += t;
                    a += t.abs();
                }
                out[i * n + j] = s;
                mag[i * n + j] = a;
            }
        }
        (out, mag)
    }

    fn packed(w: &[f32], n: usize, k: usize) -> Vec<bf16> {
        let mut p = vec![bf16::NAN; packed_gemm_bf16_len(n, k)];
        pack_gemm_bf16(w, n, k, &mut p);
        p
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Odd shapes: partial tiles (m mod 12), partial panels (n mod 16), odd k (a zero-padded
        /// pair), k = 1, several row blocks; with and without a bias; a poisoned output.
        #[test]
        fn matches_an_f64_product_of_the_bf16_operands(
            m in 1usize..220, n in 1usize..75, k in proptest::prop_oneof![1usize..40, 250usize..260, 1021usize..1030],
            bias: bool, seed in 0u64..1 << 40,
        ) {
            let x = random_f32(seed, m * k, 1.0);
            let w = random_f32(seed ^ 0x5bd1, n * k, 0.5);
            let b = bias.then(|| random_f32(seed ^ 0x77, n, 1.0));
            let (want, mag) = reference(&x, &w, b.as_deref(), m, n, k);
            let p = packed(&w, n, k);
            for isa in Isa::tested_paths() {
                let mut got = vec![f32::NAN; m * n];
                gemm_bf16_panels_with(isa, &x, &p, b.as_deref(), &mut got, m, n, k);
                for (idx, (&g, (&r, &s))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
                    // f32 accumulation of k exact products (bf16·bf16 fits f32), plus the bias
                    let tol = 1.2e-7 * (k as f64 + 2.0) * s + 1e-30;
                    proptest::prop_assert!((g as f64 - r).abs() <= tol, "{isa} [{m},{k}]x[{n},{k}] at {idx}: {g} vs {r}");
                }
            }
        }
    }

    #[test]
    fn is_within_bf16_tolerance_of_the_f32_gemm() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        let (m, n, k) = (203, 77, 517);
        let x = random_f32(seed, m * k, 1.0);
        let w = random_f32(seed ^ 1, n * k, 0.05);
        let b = random_f32(seed ^ 2, n, 0.1);
        let mut f32_panels = vec![0f32; crate::cpu::packed_gemm_len(n, k)];
        crate::cpu::pack_gemm(&w, n, k, &mut f32_panels);
        let mut want = vec![f32::NAN; m * n];
        crate::cpu::gemm_panels_with(Isa::Portable, &x, &f32_panels, Some(&b), &mut want, m, n, k);
        let p = packed(&w, n, k);
        for isa in Isa::tested_paths() {
            let mut got = vec![f32::NAN; m * n];
            gemm_bf16_panels_with(isa, &x, &p, Some(&b), &mut got, m, n, k);
            let e = rel_l2(&got, &want);
            assert!(e < 1e-2 && e > 0.0, "{isa}: relative L2 error {e} against the f32 GEMM (seed {seed})");
        }
    }

    #[test]
    fn a_row_is_the_same_alone_and_in_any_batch() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        let (n, k) = (37, 301);
        let m = 2 * BLOCK_ROWS + 7;
        let x = random_f32(seed, m * k, 1.0);
        let w = random_f32(seed ^ 1, n * k, 0.5);
        let p = packed(&w, n, k);
        for isa in Isa::tested_paths() {
            let mut all = vec![f32::NAN; m * n];
            gemm_bf16_panels_with(isa, &x, &p, None, &mut all, m, n, k);
            for i in [0, 5, 11, 12, BLOCK_ROWS - 1, BLOCK_ROWS + 3, m - 1] {
                let mut one = vec![f32::NAN; n];
                gemm_bf16_panels_with(isa, &x[i * k..][..k], &p, None, &mut one, 1, n, k);
                assert_eq!(one, all[i * n..][..n], "{isa} row {i} (seed {seed})");
            }
        }
    }

    #[test]
    fn packing_round_trips_the_bf16_weight_and_pads_with_zeros() {
        let (n, k) = (21, 9);
        let w = round_bf16(&random_f32(fresh_seed(), n * k, 1.0));
        let p = packed(&w, n, k);
        assert_eq!(unpack_gemm_bf16(&p, n, k), w);
        let kp = k.div_ceil(2);
        // the second panel holds 5 real columns; the last pair's second half is past k
        for q in 0..kp {
            assert!(p[((kp + q) * PANEL + 5) * 2..][..22].iter().all(|v| v.to_bits() == 0));
        }
        assert!((0..PANEL).all(|t| p[((kp - 1) * PANEL + t) * 2 + 1].to_bits() == 0));
    }

    #[test]
    fn vector_rounding_to_bf16_pairs_is_the_scalar_rounding() {
        if !Isa::tested_paths().contains(&Isa::Avx512Bf16) {
            return;
        }
        let seed = fresh_seed();
        let mut x = random_f32(seed, 1000, 3.0);
        // ties, NaN, infinities, the largest finite values (round up to inf)
        x.extend([1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), f32::INFINITY, -f32::INFINITY, f32::MAX, -1e-20]);
        for len in [0, 1, 2, 15, 16, 17, 31, 32, 33, 63, x.len()] {
            let (mut v, mut s) = (vec![7u32; len.div_ceil(2)], vec![7u32; len.div_ceil(2)]);
            row_pairs(&x[..len], &mut v, true);
            row_pairs(&x[..len], &mut s, false);
            assert_eq!(v, s, "len {len} (seed {seed})");
        }
        let mut v = [7u32; 1];
        row_pairs(&[f32::NAN], &mut v, true);
        assert!(bf16::from_bits(v[0] as u16).is_nan() && v[0] >> 16 == 0);
    }

    #[test]
    fn an_empty_reduction_gives_the_bias() {
        let (m, n) = (7, 18);
        let b = random_f32(fresh_seed(), n, 1.0);
        for isa in Isa::tested_paths() {
            let mut out = vec![f32::NAN; m * n];
            gemm_bf16_panels_with(isa, &[], &[], Some(&b), &mut out, m, n, 0);
            for row in out.chunks(n) {
                assert_eq!(row, &b[..], "{isa}");
            }
        }
    }
}
