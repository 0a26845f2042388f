//! [`super::conv1d_panels`] for the `cpu-bf16` device on AVX-512 BF16: the tap-major weight packed
//! by [`super::pack_gemm_bf16`] (pairs of the `taps·c_in` reduction interleaved), the zero-padded
//! input rounded to bf16 (nearest even) as pairs of channels, products summed in f32 by
//! `vdpbf16ps`. A speed mode: within bf16 tolerance of the f32 convolution, not equal to it.
//!
//! - With `c_in` even, a pair of the reduction never straddles two taps: output row `t` reads tap
//!   `j`'s pair `c/2` at padded row `t + j·dilation`. The tile (AVX-512 BF16) is the bf16 GEMM's:
//!   up to 12 rows × two panels, one broadcast pair per row and load of each panel per pair.
//! - With `c_in` odd (no S3Gen convolution has one) the weight is widened to f32 panels for the
//!   call and [`super::conv1d_panels_with`] runs it: correct, not fast.
//!
//! Order: every output is one f32 chain over the taps' pairs (`j = 0..taps`, then the channel pairs),
//! then `+ bias[o]`; a row's result does not depend on the other rows or batch items. Off the
//! `avx512bf16` path (tests, other CPUs) the same bf16 operands are summed by a scalar loop in f32.

use half::bf16;
use rayon::prelude::*;

use super::conv_panels::ConvShape;
use super::gemm_panels::{PANEL, TILE_ROWS_512, row_blocks};
use super::isa::Isa;

/// `out[b, t, o] = Σ_j Σ_c bf16(x[b, t + j·dilation − pad_left, c]) · w[o, c, j] (+ bias[o])`, f32
/// accumulation; as [`super::conv1d_panels_with`] but with `panels` the [`super::pack_gemm_bf16`]
/// of [`super::tap_major`]`(w)` (`[c_out, taps·c_in]`). Returns the first `(batch, len)` whose length
/// is outside `0..=l_in` (nothing is written then).
///
/// # Panics
/// If a slice is shorter than the shapes say, `taps` or `dilation` is 0, or the extents overflow.
pub fn conv1d_bf16_panels_with(
    isa: Isa,
    x: &[f32],
    lens: Option<&[i32]>,
    panels: &[bf16],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: ConvShape,
) -> Result<(), (usize, i32)> {
    super::conv::check_lens(lens, s.l_in)?;
    assert!(s.taps > 0 && s.dilation > 0, "conv1d_bf16_panels: taps and dilation must be at least 1");
    let (rows_p, _, k) = s.extents().expect("conv1d_bf16_panels: extents overflow");
    assert!(panels.len() == super::packed_gemm_bf16_len(s.c_out, k), "conv1d_bf16_panels: slice lengths");
    if s.c_in % 2 == 1 {
        let mut f32_panels = vec![0f32; super::packed_gemm_len(s.c_out, k)];
        super::pack_gemm(&super::unpack_gemm_bf16(panels, s.c_out, k), s.c_out, k, &mut f32_panels);
        return super::conv1d_panels_with(isa, x, lens, &f32_panels, bias, out, s);
    }
    let holds = |len: usize, dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some_and(|n| len >= n);
    assert!(
        holds(x.len(), &[s.batch, s.l_in, s.c_in])
            && holds(out.len(), &[s.batch, s.l_out, s.c_out])
            && bias.is_none_or(|b| b.len() >= s.c_out)
            && lens.is_none_or(|l| l.len() >= s.batch),
        "conv1d_bf16_panels: slice lengths"
    );
    if s.batch == 0 || s.l_out == 0 || s.c_out == 0 {
        return Ok(());
    }
    let cp = s.c_in / 2;
    let dp = isa.runnable().allows(Isa::Avx512Bf16);
    let amx = isa.runnable() == Isa::Amx;
    let out = &mut out[..s.batch * s.l_out * s.c_out];
    super::attention::with_local(&PADDED_PAIRS, |xp| {
        xp.resize(s.batch * rows_p * cp, 0);
        let xp = &mut xp[..s.batch * rows_p * cp];
        let fill = |(i, dst): (usize, &mut [u32])| {
            let (b, r) = (i / rows_p, i % rows_p);
            let len = lens.map_or(s.l_in, |l| l[b] as usize);
            match r.checked_sub(s.pad_left).filter(|&src| src < len) {
                Some(src) => super::gemm_bf16_panels::row_pairs(&x[(b * s.l_in + src) * s.c_in..][..s.c_in], dst, dp),
                None => dst.fill(0),
            }
        };
        if cp > 0 {
            if xp.len() >= 1 << 15 {
                xp.par_chunks_mut(cp).with_min_len(64).enumerate().for_each(fill);
            } else {
                xp.chunks_mut(cp).enumerate().for_each(fill);
            }
        }
        let xp = &*xp;
        let block = |(b, r0, o): (usize, usize, &mut [f32])| {
            let rows = o.len() / s.c_out;
            let xb = &xp[(b * rows_p + r0) * cp..][..(rows + (s.taps - 1) * s.dilation) * cp];
            #[cfg(target_arch = "x86_64")]
            if amx {
                amx_block(xb, panels, bias, o, rows, s);
                return;
            }
            match dp {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (runnable); xb holds the block's
                // rows plus the taps' reach of cp pairs, o its rows of c_out, panels the packed
                // [c_out, taps·c_in] weight (asserted above).
                true => unsafe { avx512bf16::block(xb, panels, bias, o, rows, s) },
                _ => scalar_block(xb, panels, bias, o, rows, s),
            }
        };
        let threads = rayon::current_num_threads();
        let tasks: Vec<(usize, usize, &mut [f32])> = out
            .chunks_mut(s.l_out * s.c_out)
            .enumerate()
            .flat_map(|(b, ob)| {
                row_blocks(ob, s.l_out, s.c_out, threads, if amx { 32 } else { TILE_ROWS_512 })
                    .into_iter()
                    .map(move |(r0, o)| (b, r0, o))
            })
            .collect();
        if s.batch * s.l_out * s.c_out * k >= 1 << 20 && tasks.len() > 1 {
            tasks.into_par_iter().for_each(block);
        } else {
            tasks.into_iter().for_each(block);
        }
    });
    Ok(())
}

/// One row block on AMX: the block's rows of the reduction (each row the taps' channel pairs one
/// after another, as the tap-major weight) gathered into whole tiles, then the AMX GEMM over every
/// panel ([`super::amx::gemm_block`]).
#[cfg(target_arch = "x86_64")]
fn amx_block(xb: &[u32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
    use super::amx::{AmxGemm, TILE_PAIRS, TILE_ROWS, gemm_block};
    let cp = s.c_in / 2;
    let kp = s.taps * cp;
    let kq = kp.div_ceil(TILE_PAIRS) * TILE_PAIRS;
    super::attention::with_local(&AMX_ROWS, |a| {
        let rows16 = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
        if a.len() < rows16 * kq + kq {
            a.resize(rows16 * kq + kq, 0);
        }
        // the tiles, then one row of the reduction (zeros past kp) gathered before it is cut into
        // tiles; every value of the tiles is written (zeros past the rows)
        let (a, row) = a.split_at_mut(rows16 * kq);
        let row = &mut row[..kq];
        row[kp..].fill(0);
        for r in 0..rows16 {
            if r < rows {
                for j in 0..s.taps {
                    row[j * cp..][..cp].copy_from_slice(&xb[(r + j * s.dilation) * cp..][..cp]);
                }
            } else if r == rows {
                row.fill(0);
            }
            let at = super::amx::tiled_row(r, kq);
            for (b, src) in row.chunks_exact(TILE_PAIRS).enumerate() {
                a[at + b * TILE_ROWS * TILE_PAIRS..][..TILE_PAIRS].copy_from_slice(src);
            }
        }
        let g = AmxGemm { a, tiled: true, kq, rows, panels, kp, n: s.c_out, bias };
        // SAFETY: the caller's path is Amx (runnable); `a` holds whole zero-padded tiles of kq
        // pairs; panels is the packed [c_out, taps·c_in] weight; this task owns out's rows.
        unsafe { gemm_block(g, 0..s.c_out.div_ceil(PANEL), out.as_mut_ptr()) };
    });
}

thread_local! {
    /// The calling thread's AMX rows of the reduction ([`amx_block`]), kept between calls.
    static AMX_ROWS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's buffer for the zero-padded input as bf16 channel pairs, kept between calls.
    static PADDED_PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One row block without `vdpbf16ps`, in the kernel's order (one f32 multiply and add per product).
fn scalar_block(xp: &[u32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
    let (cp, kp) = (s.c_in / 2, s.taps * s.c_in / 2);
    let half_at = |p: u32, e: usize| bf16::from_bits((p >> (16 * e)) as u16).to_f32();
    for r in 0..rows {
        for o in 0..s.c_out {
            let (p, t) = (o / PANEL, o % PANEL);
            let panel = &panels[p * kp * PANEL * 2..][..kp * PANEL * 2];
            let mut acc = 0f32;
            for j in 0..s.taps {
                let xr = &xp[(r + j * s.dilation) * cp..][..cp];
                for (c, &pair) in xr.iter().enumerate() {
                    for e in 0..2 {
                        acc += half_at(pair, e) * panel[((j * cp + c) * PANEL + t) * 2 + e].to_f32();
                    }
                }
            }
            out[r * s.c_out + o] = acc + bias.map_or(0.0, |b| b[o]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use super::{ConvShape, PANEL, TILE_ROWS_512, bf16};
    use std::arch::x86_64::*;

    /// One row block: for each pair of panels (the last one alone when their number is odd), each
    /// tile of up to 12 rows.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be present; `c_in` even; `xp` holds
    /// `rows + (taps − 1)·dilation` rows of `c_in/2` pairs, `out` `rows·c_out`, `panels` the packed
    /// `[c_out, taps·c_in]` weight and `bias` (if any) `c_out` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block(xp: &[u32], panels: &[bf16], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
        let kp = s.taps * s.c_in / 2;
        let n_panels = s.c_out.div_ceil(PANEL);
        let mut p = 0;
        while p < n_panels {
            let two = p + 1 < n_panels;
            let cols = (s.c_out - p * PANEL).min(if two { 2 * PANEL } else { PANEL });
            // SAFETY: panels p (and p + 1) hold kp·32 values each; a tile reads rows
            // r0..r0 + r + (taps − 1)·dilation of xp and writes columns 16p..16p + cols of rows
            // r0..r0 + r of out.
            unsafe {
                let mut r0 = 0;
                while r0 < rows {
                    let r = (rows - r0).min(TILE_ROWS_512);
                    let t = Tile {
                        xp: xp.as_ptr().add(r0 * s.c_in / 2),
                        panel: panels.as_ptr().add(p * kp * PANEL * 2),
                        bias: bias.map(|b| b.as_ptr().add(p * PANEL)),
                        out: out.as_mut_ptr().add(r0 * s.c_out + p * PANEL),
                        cols,
                        s,
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

    /// One register tile's operands: the padded pairs at its first row, the first of its `P`
    /// panels (the next one `taps·c_in·16` bf16 on), `bias` and `out` at its first column, and its
    /// real columns `cols ≤ 16·P`.
    #[derive(Clone, Copy)]
    struct Tile {
        xp: *const u32,
        panel: *const bf16,
        bias: Option<*const f32>,
        out: *mut f32,
        cols: usize,
        s: ConvShape,
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

    /// `R` rows × `P` panels over every tap: `acc[r][q] = Σ_j Σ_pairs vdpbf16ps(xp pair of row
    /// r + j·dilation, panel_q pair) (+ bias)`; columns past `cols` are neither read from `bias`
    /// nor written to `out`.
    ///
    /// # Safety
    /// AVX-512F/BF16 present; `xp` readable for `R + (taps − 1)·dilation` rows of `c_in/2` pairs,
    /// the panels for `P·taps·c_in·16` bf16, `bias` for `cols` values, `out` writable for `R` rows
    /// of stride `c_out` and `cols` columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const P: usize>(t: Tile) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; the
        // masks keep bias loads and out stores within cols. __m512i and __m512bh are both 64
        // bytes of plain bits.
        unsafe {
            let s = t.s;
            let (cp, kp) = (s.c_in / 2, s.taps * s.c_in / 2);
            let mask: [__mmask16; P] = std::array::from_fn(|q| {
                let c = t.cols.saturating_sub(q * PANEL).min(PANEL);
                ((1u32 << c) - 1) as __mmask16
            });
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for j in 0..s.taps {
                let x = t.xp.add(j * s.dilation * cp);
                for c in 0..cp {
                    let w: [__m512bh; P] = std::array::from_fn(|q| {
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                            t.panel.add((q * kp + j * cp + c) * PANEL * 2) as *const __m512i,
                        ))
                    });
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*x.add(r * cp + c) as i32));
                        for (v, wq) in a.iter_mut().zip(&w) {
                            *v = _mm512_dpbf16_ps(*v, xv, *wq);
                        }
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
                    _mm512_mask_storeu_ps(t.out.add(r * s.c_out + q * PANEL), mask[q], *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32, rel_l2, round_bf16};
    use proptest::prelude::*;

    /// The convolution in f64 of the bf16-rounded operands from torch's weight layout, and
    /// `Σ |terms|` per output.
    fn reference(x: &[f32], lens: &[i32], w: &[f32], b: Option<&[f32]>, s: ConvShape) -> (Vec<f64>, Vec<f64>) {
        let (x, w) = (round_bf16(x), round_bf16(w));
        let mut out = vec![0f64; s.batch * s.l_out * s.c_out];
        let mut mag = vec![0f64; out.len()];
        for bi in 0..s.batch {
            for t in 0..s.l_out {
                for o in 0..s.c_out {
                    let (mut acc, mut m) = (b.map_or(0.0, |b| b[o] as f64), b.map_or(0.0, |b| (b[o] as f64).abs()));
                    for j in 0..s.taps {
                        let pos = (t + j * s.dilation) as i64 - s.pad_left as i64;
                        if pos < 0 || pos as usize >= lens[bi] as usize {
                            continue;
                        }
                        for c in 0..s.c_in {
                            let term =
                                x[(bi * s.l_in + pos as usize) * s.c_in + c] as f64 * w[(o * s.c_in + c) * s.taps + j] as f64;
                            acc += term;
                            m += term.abs();
                        }
                    }
                    out[(bi * s.l_out + t) * s.c_out + o] = acc;
                    mag[(bi * s.l_out + t) * s.c_out + o] = m;
                }
            }
        }
        (out, mag)
    }

    fn packed(w: &[f32], s: ConvShape) -> Vec<bf16> {
        let k = s.taps * s.c_in;
        let mut p = vec![bf16::NAN; crate::cpu::packed_gemm_bf16_len(s.c_out, k)];
        crate::cpu::pack_gemm_bf16(&crate::cpu::tap_major(w, s.c_out, s.c_in, s.taps), s.c_out, k, &mut p);
        p
    }

    fn run(isa: Isa, x: &[f32], lens: &[i32], p: &[bf16], b: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
        let mut out = vec![f32::NAN; s.batch * s.l_out * s.c_out];
        conv1d_bf16_panels_with(isa, x, Some(lens), p, b, &mut out, s).unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Odd shapes (c_out not a multiple of 16 or 32, rows not of 12, odd c_in through the f32
        /// fallback), masked lengths over poisoned rows, a poisoned output.
        #[test]
        fn matches_an_f64_convolution_of_the_bf16_operands(
            batch in 1usize..4, l_in in 1usize..40, c_in in 1usize..40, c_out in 1usize..50,
            taps in 1usize..12, dilation in 1usize..6, pad_frac in 0.0f64..1.0, extra in 0usize..8,
            bias: bool, masked: bool, seed in 0u64..1 << 40,
        ) {
            let reach = (taps - 1) * dilation;
            let pad_left = (pad_frac * (reach + 1) as f64) as usize;
            let l_out = (l_in + pad_left + extra).saturating_sub(reach).max(1);
            let s = ConvShape { batch, l_in, c_in, l_out, c_out, taps, dilation, pad_left };
            let mut x = random_f32(seed, batch * l_in * c_in, 1.0);
            let lens: Vec<i32> = (0..batch).map(|b| if masked { (seed as usize + 7 * b) % (l_in + 1) } else { l_in } as i32).collect();
            for (b, &n) in lens.iter().enumerate() {
                x[(b * l_in + n as usize) * c_in..(b + 1) * l_in * c_in].fill(f32::NAN);
            }
            let w = round_bf16(&random_f32(seed + 1, c_out * c_in * taps, 0.5));
            let bv = random_f32(seed + 2, c_out, 1.0);
            let b = bias.then_some(&bv[..]);
            let (want, mag) = reference(&x, &lens, &w, b, s);
            // the odd-c_in fallback rounds x to f32, not bf16: its bound is the bf16 rounding of x
            let rel_x = if c_in % 2 == 1 { 2f64.powi(-8) } else { 0.0 };
            let u = f32::EPSILON as f64 / 2.0;
            let p = packed(&w, s);
            for isa in Isa::tested_paths() {
                let got = run(isa, &x, &lens, &p, b, s);
                for (i, ((&g, &w), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                    let bound = ((taps * c_in + 1) as f64 * u + rel_x) * m + f32::MIN_POSITIVE as f64;
                    prop_assert!((g as f64 - w).abs() <= bound, "{} output {} got {} want {} bound {:e} ({:?})", isa, i, g, w, bound, s);
                }
            }
        }
    }

    #[test]
    fn is_within_bf16_tolerance_of_the_f32_convolution_and_batch_invariant() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        let (l_in, c_in, c_out, taps, dilation) = (211, 38, 45, 7, 3);
        let s = ConvShape { batch: 3, l_in, c_in, l_out: l_in, c_out, taps, dilation, pad_left: 9 };
        let x = random_f32(seed, 3 * l_in * c_in, 1.0);
        let w = random_f32(seed + 1, c_out * c_in * taps, 0.1);
        let b = random_f32(seed + 2, c_out, 0.1);
        let lens = [l_in as i32, 150, l_in as i32];
        let k = taps * c_in;
        let mut f32_panels = vec![0f32; crate::cpu::packed_gemm_len(c_out, k)];
        crate::cpu::pack_gemm(&crate::cpu::tap_major(&w, c_out, c_in, taps), c_out, k, &mut f32_panels);
        let mut want = vec![f32::NAN; 3 * l_in * c_out];
        crate::cpu::conv1d_panels_with(Isa::Portable, &x, Some(&lens), &f32_panels, Some(&b), &mut want, s).unwrap();
        let p = packed(&w, s);
        for isa in Isa::tested_paths() {
            let all = run(isa, &x, &lens, &p, Some(&b), s);
            let e = rel_l2(&all, &want);
            assert!(e < 1e-2 && e > 0.0, "{isa}: relative L2 error {e} against the f32 conv (seed {seed})");
            for bi in 0..3 {
                let one = ConvShape { batch: 1, ..s };
                let alone = run(isa, &x[bi * l_in * c_in..][..l_in * c_in], &lens[bi..], &p, Some(&b), one);
                let part = &all[bi * l_in * c_out..][..l_in * c_out];
                assert!(alone.iter().zip(part).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa} item {bi} (seed {seed})");
            }
        }
    }
}
