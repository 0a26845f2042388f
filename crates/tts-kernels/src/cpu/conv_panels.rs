//! A zero-padded, stride-1 1-D convolution straight from its input (no im2col), on a weight packed
//! at load by [`super::pack_gemm`] in tap-major order: the S3Gen convolutions on the Cpu backend
//! (HiFT's resblocks, the estimator's causal convs).
//!
//! Why: im2col + GEMM wrote and read a `[rows, K·C_in]` buffer, K times the input: for 10 s of audio
//! HiFT's last stage unfolded 60000 rows × 64 channels × 11 taps (169 MB) per convolution. Unfolding
//! and the fresh pages of those buffers (the host pool cannot keep them all) were ~2.6 CPU-s of a
//! 10 s synthesis (perf, 2 cores). Here the GEMM's register tile reads each tap's rows where they
//! lie in a zero-padded copy of the input (the size of the input).
//!
//! - Weight: `w[o, j·C_in + c]` = torch's `weight[o, c, j]` ([`tap_major`]), packed into panels of 16
//!   output columns: `panels[(p·K·C_in + j·C_in + c)·16 + t]`.
//! - Input: per batch item `b`, `xp[i] = x[b, i − pad_left]` for `0 ≤ i − pad_left < lens[b]`, else
//!   zeros, for `i < L_out + (K − 1)·dilation`; output row `t` reads rows `t + j·dilation`.
//! - Order: every output is one chain of fused multiply-adds over `j = 0..K`, and within a tap over
//!   `c = 0..C_in` (tap-major: not im2col's order, which is channel-major), then `+ bias[o]`. A row's
//!   result does not depend on the other rows or batch items (batch invariance). The AVX2 tile (6
//!   rows × 16 columns) and the AVX-512F tile (12 rows × 32 columns: two panels, one zmm each,
//!   masked at a partial panel) run that same FMA chain, so their results are equal bit for bit; on
//!   the portable path the same order runs as separate multiplies and adds. [`conv1d_panels`] takes
//!   [`super::isa::active`]'s path, [`conv1d_panels_with`] the one it is given.

use rayon::prelude::*;

use super::gemm_panels::{PANEL, TILE_ROWS, row_blocks, tile_rows};
use super::isa::Isa;

/// The geometry of [`conv1d_panels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub l_in: usize,
    pub c_in: usize,
    pub l_out: usize,
    pub c_out: usize,
    /// Kernel taps K.
    pub taps: usize,
    pub dilation: usize,
    pub pad_left: usize,
}

impl ConvShape {
    /// Rows of the zero-padded input that the outputs read, per batch item, and the padded input's
    /// length (`batch·rows·c_in`) and the weight's row length (`taps·c_in`), or `None` if one of
    /// them overflows.
    pub fn extents(&self) -> Option<(usize, usize, usize)> {
        let rows = self.taps.checked_sub(1)?.checked_mul(self.dilation)?.checked_add(self.l_out)?;
        let padded = rows.checked_mul(self.c_in)?.checked_mul(self.batch)?;
        let k = self.taps.checked_mul(self.c_in)?;
        // the offsets of the kernels (rows·c_in at most) stay below isize::MAX bytes
        (padded.checked_mul(4)? <= isize::MAX as usize).then_some((rows, padded, k))
    }
}

/// torch's Conv1d weight `[c_out, c_in, taps]` reordered to `[c_out, taps·c_in]` (tap-major), the
/// layout [`conv1d_panels`] expects before packing.
pub fn tap_major(w: &[f32], c_out: usize, c_in: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0f32; c_out * c_in * taps];
    for (o, row) in out.chunks_exact_mut(c_in * taps).enumerate() {
        for j in 0..taps {
            for c in 0..c_in {
                row[j * c_in + c] = w[(o * c_in + c) * taps + j];
            }
        }
    }
    out
}

/// `out[b, t, o] = Σ_j Σ_c x[b, t + j·dilation − pad_left, c] · w[o, c, j] (+ bias[o])`, rows of `x`
/// outside `0..lens[b]` (or `0..l_in`) reading zero; `panels`: [`super::pack_gemm`] of
/// [`tap_major`]`(w)` (`[c_out, taps·c_in]`). `x` `[batch, l_in, c_in]`, `out`
/// `[batch, l_out, c_out]`, all f32. Every output is written. Returns the first `(batch, len)` whose
/// length is outside `0..=l_in` (as `im2col`; nothing is written then).
///
/// # Panics
/// If a slice is shorter than these shapes, `taps` or `dilation` is 0, or the extents overflow
/// ([`ConvShape::extents`]).
pub fn conv1d_panels(
    x: &[f32],
    lens: Option<&[i32]>,
    panels: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: ConvShape,
) -> Result<(), (usize, i32)> {
    conv1d_panels_with(super::isa::active(), x, lens, panels, bias, out, s)
}

/// [`conv1d_panels`] on the path `isa` (a path this CPU lacks runs as [`Isa::runnable`]'s).
///
/// # Panics
/// As [`conv1d_panels`].
pub fn conv1d_panels_with(
    isa: Isa,
    x: &[f32],
    lens: Option<&[i32]>,
    panels: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: ConvShape,
) -> Result<(), (usize, i32)> {
    let isa = isa.runnable();
    super::conv::check_lens(lens, s.l_in)?;
    assert!(s.taps > 0 && s.dilation > 0, "conv1d_panels: taps and dilation must be at least 1");
    let (rows_p, padded, k) = s.extents().expect("conv1d_panels: extents overflow");
    let holds = |len: usize, dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some_and(|n| len >= n);
    assert!(
        holds(x.len(), &[s.batch, s.l_in, s.c_in])
            && panels.len() == super::packed_gemm_len(s.c_out, k)
            && holds(out.len(), &[s.batch, s.l_out, s.c_out])
            && bias.is_none_or(|b| b.len() >= s.c_out)
            && lens.is_none_or(|l| l.len() >= s.batch),
        "conv1d_panels: slice lengths"
    );
    if s.batch == 0 || s.l_out == 0 || s.c_out == 0 {
        return Ok(());
    }
    let out = &mut out[..s.batch * s.l_out * s.c_out];
    super::attention::with_local(&PADDED, |xp| {
        let xp = super::attention::scratch(xp, padded);
        // the zero-padded copy, rows in parallel when large
        let fill = |(i, dst): (usize, &mut [f32])| {
            let (b, r) = (i / rows_p, i % rows_p);
            let len = lens.map_or(s.l_in, |l| l[b] as usize);
            match r.checked_sub(s.pad_left).filter(|&src| src < len) {
                Some(src) => dst.copy_from_slice(&x[(b * s.l_in + src) * s.c_in..][..s.c_in]),
                None => dst.fill(0.0),
            }
        };
        if s.c_in > 0 {
            if xp.len() >= 1 << 16 {
                xp.par_chunks_mut(s.c_in).with_min_len(64).enumerate().for_each(fill);
            } else {
                xp.chunks_mut(s.c_in).enumerate().for_each(fill);
            }
        }
        let xp = &*xp;
        let block = |(b, r0, o): (usize, usize, &mut [f32])| {
            let rows = o.len() / s.c_out;
            let xb = &xp[(b * rows_p + r0) * s.c_in..][..(rows + (s.taps - 1) * s.dilation) * s.c_in];
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F (runnable); xb holds the block's rows plus the
                // taps' reach, o its rows of c_out, panels the packed [c_out, taps·c_in] weight.
                Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512::block(xb, panels, bias, o, rows, s) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA (runnable); extents as above.
                Isa::Avx2 => unsafe { avx::block(xb, panels, bias, o, rows, s) },
                _ => scalar_block(xb, panels, bias, o, rows, s),
            }
        };
        let (threads, tile) = (rayon::current_num_threads(), tile_rows(isa));
        let tasks: Vec<(usize, usize, &mut [f32])> = out
            .chunks_mut(s.l_out * s.c_out)
            .enumerate()
            .flat_map(|(b, ob)| row_blocks(ob, s.l_out, s.c_out, threads, tile).into_iter().map(move |(r0, o)| (b, r0, o)))
            .collect();
        if s.batch * s.l_out * s.c_out * k >= 1 << 20 && tasks.len() > 1 {
            tasks.into_par_iter().for_each(block);
        } else {
            tasks.into_iter().for_each(block);
        }
    });
    Ok(())
}

thread_local! {
    /// The calling thread's buffer for the zero-padded input, kept between calls.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One row block without SIMD, in the kernel's order (separate multiply and add).
fn scalar_block(xp: &[f32], panels: &[f32], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
    let k = s.taps * s.c_in;
    for r in 0..rows {
        for o in 0..s.c_out {
            let (p, t) = (o / PANEL, o % PANEL);
            let panel = &panels[p * k * PANEL..][..k * PANEL];
            let mut acc = 0f32;
            for j in 0..s.taps {
                let xr = &xp[(r + j * s.dilation) * s.c_in..][..s.c_in];
                for (c, &xv) in xr.iter().enumerate() {
                    acc += xv * panel[(j * s.c_in + c) * PANEL + t];
                }
            }
            out[r * s.c_out + o] = acc + bias.map_or(0.0, |b| b[o]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{ConvShape, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// One row block: for each panel, each tile of up to 6 rows.
    ///
    /// # Safety
    /// AVX2 and FMA must be present; `xp` holds `rows + (taps − 1)·dilation` rows of `c_in`, `out`
    /// `rows·c_out`, `panels` the packed `[c_out, taps·c_in]` weight and `bias` (if any) `c_out`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(xp: &[f32], panels: &[f32], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
        let k = s.taps * s.c_in;
        for p in 0..s.c_out.div_ceil(PANEL) {
            let cols = PANEL.min(s.c_out - p * PANEL);
            // SAFETY: panel p holds k·16 values; a tile reads rows r0..r0 + r + (taps − 1)·dilation
            // of xp and writes columns 16p..16p + cols of rows r0..r0 + r of out.
            unsafe {
                let panel = panels.as_ptr().add(p * k * PANEL);
                let b = bias.map(|b| b.as_ptr().add(p * PANEL));
                let mut r0 = 0;
                while r0 < rows {
                    let r = (rows - r0).min(TILE_ROWS);
                    let (xt, ot) = (xp.as_ptr().add(r0 * s.c_in), out.as_mut_ptr().add(r0 * s.c_out + p * PANEL));
                    match r {
                        1 => tile::<1>(xt, panel, b, ot, cols, s),
                        2 => tile::<2>(xt, panel, b, ot, cols, s),
                        3 => tile::<3>(xt, panel, b, ot, cols, s),
                        4 => tile::<4>(xt, panel, b, ot, cols, s),
                        5 => tile::<5>(xt, panel, b, ot, cols, s),
                        _ => tile::<6>(xt, panel, b, ot, cols, s),
                    }
                    r0 += r;
                }
            }
        }
    }

    /// `R` rows × `cols ≤ 16` output columns over every tap: `acc[r][t] = Σ_j Σ_c
    /// xp[r + j·dilation, c]·panel[j·c_in + c, t] (+ bias[t])`.
    ///
    /// # Safety
    /// AVX2/FMA present; `xp` readable for `R + (taps − 1)·dilation` rows of `c_in`, `panel` for
    /// `taps·c_in·16` values, `bias` for `cols` values, `out` writable for `R` rows of stride `c_out`
    /// and `cols` columns.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(
        xp: *const f32,
        panel: *const f32,
        bias: Option<*const f32>,
        out: *mut f32,
        cols: usize,
        s: ConvShape,
    ) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; a
        // partial panel (cols < 16) goes through a 16-wide stack row.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for j in 0..s.taps {
                let x = xp.add(j * s.dilation * s.c_in);
                let w = panel.add(j * s.c_in * PANEL);
                for c in 0..s.c_in {
                    let b0 = _mm256_loadu_ps(w.add(c * PANEL));
                    let b1 = _mm256_loadu_ps(w.add(c * PANEL + 8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm256_broadcast_ss(&*x.add(r * s.c_in + c));
                        a[0] = _mm256_fmadd_ps(xv, b0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, b1, a[1]);
                    }
                }
            }
            if let Some(b) = bias {
                let mut bv = [0f32; PANEL];
                std::ptr::copy_nonoverlapping(b, bv.as_mut_ptr(), cols);
                let (b0, b1) = (_mm256_loadu_ps(bv.as_ptr()), _mm256_loadu_ps(bv.as_ptr().add(8)));
                for a in acc.iter_mut() {
                    a[0] = _mm256_add_ps(a[0], b0);
                    a[1] = _mm256_add_ps(a[1], b1);
                }
            }
            let mut row = [0f32; PANEL];
            for (r, a) in acc.iter().enumerate() {
                if cols == PANEL {
                    _mm256_storeu_ps(out.add(r * s.c_out), a[0]);
                    _mm256_storeu_ps(out.add(r * s.c_out + 8), a[1]);
                } else {
                    _mm256_storeu_ps(row.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), a[1]);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(r * s.c_out), cols);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::gemm_panels::TILE_ROWS_512;
    use super::{ConvShape, PANEL};
    use std::arch::x86_64::*;

    /// One row block: for each pair of panels (the last one alone when their number is odd), each
    /// tile of up to 12 rows.
    ///
    /// # Safety
    /// AVX-512F must be present; `xp` holds `rows + (taps − 1)·dilation` rows of `c_in`, `out`
    /// `rows·c_out`, `panels` the packed `[c_out, taps·c_in]` weight and `bias` (if any) `c_out`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(xp: &[f32], panels: &[f32], bias: Option<&[f32]>, out: &mut [f32], rows: usize, s: ConvShape) {
        let k = s.taps * s.c_in;
        let n_panels = s.c_out.div_ceil(PANEL);
        let mut p = 0;
        while p < n_panels {
            let two = p + 1 < n_panels;
            let cols = (s.c_out - p * PANEL).min(if two { 2 * PANEL } else { PANEL });
            // SAFETY: panels p (and p + 1) hold k·16 values each; a tile reads rows
            // r0..r0 + r + (taps − 1)·dilation of xp and writes columns 16p..16p + cols of rows
            // r0..r0 + r of out.
            unsafe {
                let panel = panels.as_ptr().add(p * k * PANEL);
                let b = bias.map(|b| b.as_ptr().add(p * PANEL));
                let mut r0 = 0;
                while r0 < rows {
                    let r = (rows - r0).min(TILE_ROWS_512);
                    let t = Tile {
                        xp: xp.as_ptr().add(r0 * s.c_in),
                        panel,
                        bias: b,
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

    /// One register tile's operands: the padded input at its first row, the first of its `P`
    /// panels (the next one `taps·c_in·16` values on), `bias` and `out` at its first column, and
    /// its real columns `cols ≤ 16·P`.
    #[derive(Clone, Copy)]
    struct Tile {
        xp: *const f32,
        panel: *const f32,
        bias: Option<*const f32>,
        out: *mut f32,
        cols: usize,
        s: ConvShape,
    }

    /// [`tile`] for `r` (1..=12) rows.
    ///
    /// # Safety
    /// As [`tile`], for `r` rows.
    #[target_feature(enable = "avx512f")]
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

    /// `R` rows × `P` panels over every tap: `acc[r][q] = Σ_j Σ_c xp[r + j·dilation, c]·
    /// panel_q[j·c_in + c, ·] (+ bias)`; columns past `cols` are neither read from `bias` nor
    /// written to `out`.
    ///
    /// # Safety
    /// AVX-512F present; `xp` readable for `R + (taps − 1)·dilation` rows of `c_in`, the panels for
    /// `P·taps·c_in·16` values, `bias` for `cols` values, `out` writable for `R` rows of stride
    /// `c_out` and `cols` columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const P: usize>(t: Tile) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; the
        // masks keep bias loads and out stores within cols.
        unsafe {
            let s = t.s;
            let k = s.taps * s.c_in;
            let mask: [__mmask16; P] = std::array::from_fn(|q| {
                let c = t.cols.saturating_sub(q * PANEL).min(PANEL);
                ((1u32 << c) - 1) as __mmask16
            });
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for j in 0..s.taps {
                let x = t.xp.add(j * s.dilation * s.c_in);
                let w = t.panel.add(j * s.c_in * PANEL);
                for c in 0..s.c_in {
                    let wv: [__m512; P] = std::array::from_fn(|q| _mm512_loadu_ps(w.add((q * k + c) * PANEL)));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*x.add(r * s.c_in + c));
                        for (v, wq) in a.iter_mut().zip(&wv) {
                            *v = _mm512_fmadd_ps(xv, *wq, *v);
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
    use crate::testing::{fresh_seed, random_f32};
    use proptest::prelude::*;

    /// The convolution in f64 from torch's weight layout, and `Σ |terms|` per output (the scale of
    /// f32 summation error).
    fn reference(x: &[f32], lens: Option<&[i32]>, w: &[f32], b: Option<&[f32]>, s: ConvShape) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0f64; s.batch * s.l_out * s.c_out];
        let mut mag = vec![0f64; out.len()];
        for bi in 0..s.batch {
            let len = lens.map_or(s.l_in, |l| l[bi] as usize);
            for t in 0..s.l_out {
                for o in 0..s.c_out {
                    let (mut acc, mut m) = (b.map_or(0.0, |b| b[o] as f64), b.map_or(0.0, |b| (b[o] as f64).abs()));
                    for j in 0..s.taps {
                        let pos = (t + j * s.dilation) as i64 - s.pad_left as i64;
                        if pos < 0 || pos as usize >= len {
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

    fn run(isa: Isa, x: &[f32], lens: Option<&[i32]>, w: &[f32], b: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
        let k = s.taps * s.c_in;
        let mut panels = vec![f32::NAN; crate::cpu::packed_gemm_len(s.c_out, k)];
        crate::cpu::pack_gemm(&tap_major(w, s.c_out, s.c_in, s.taps), s.c_out, k, &mut panels);
        let mut out = vec![f32::NAN; s.batch * s.l_out * s.c_out];
        conv1d_panels_with(isa, x, lens, &panels, b, &mut out, s).unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_an_f64_convolution(
            batch in 1usize..4, l_in in 1usize..40, c_in in 1usize..40, c_out in 1usize..40,
            taps in 1usize..12, dilation in 1usize..6, pad_frac in 0.0f64..1.0, extra in 0usize..8,
            bias: bool, masked: bool, seed in 0u64..1 << 40,
        ) {
            let reach = (taps - 1) * dilation;
            let pad_left = (pad_frac * (reach + 1) as f64) as usize;
            let l_out = (l_in + pad_left + extra).saturating_sub(reach).max(1);
            let s = ConvShape { batch, l_in, c_in, l_out, c_out, taps, dilation, pad_left };
            let mut x = random_f32(seed, batch * l_in * c_in, 1.0);
            let lens: Vec<i32> = (0..batch).map(|b| if masked { (seed as usize + 7 * b) % (l_in + 1) } else { l_in } as i32).collect();
            // rows past a length are poison: reading one makes its outputs NaN
            for (b, &n) in lens.iter().enumerate() {
                x[(b * l_in + n as usize) * c_in..(b + 1) * l_in * c_in].fill(f32::NAN);
            }
            let w = random_f32(seed + 1, c_out * c_in * taps, 0.5);
            let bv = random_f32(seed + 2, c_out, 1.0);
            let b = bias.then_some(&bv[..]);
            let (want, mag) = reference(&x, Some(&lens), &w, b, s);
            let u = f32::EPSILON as f64 / 2.0;
            let mut fused: Vec<(Isa, Vec<f32>)> = Vec::new();
            for isa in Isa::tested_paths() {
                let got = run(isa, &x, Some(&lens), &w, b, s);
                for (i, ((&g, &w), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                    // f32 summation of taps·c_in products (+ bias): within (k + 1)·u·Σ|terms|
                    let bound = ((taps * c_in + 1) as f64) * u * m + f32::MIN_POSITIVE as f64;
                    prop_assert!((g as f64 - w).abs() <= bound, "{} output {} got {} want {} bound {:e} ({:?})", isa, i, g, w, bound, s);
                }
                if isa.allows(Isa::Avx2) {
                    fused.push((isa, got));
                }
            }
            // AVX2 and AVX-512 run the same FMA chain per output: equal bits
            for pair in fused.windows(2) {
                let same = pair[0].1.iter().zip(&pair[1].1).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same, "{} and {} differ ({:?})", pair[0].0, pair[1].0, s);
            }
        }
    }

    #[test]
    fn a_batch_item_is_the_same_alone_and_in_a_batch() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        // past one row block and a partial panel; a masked item in the middle
        let (l_in, c_in, c_out, taps, dilation) = (211, 19, 37, 7, 3);
        let s = ConvShape { batch: 3, l_in, c_in, l_out: l_in, c_out, taps, dilation, pad_left: 9 };
        let x = random_f32(seed, 3 * l_in * c_in, 1.0);
        let w = random_f32(seed + 1, c_out * c_in * taps, 0.3);
        let b = random_f32(seed + 2, c_out, 1.0);
        let lens = [l_in as i32, 150, l_in as i32];
        for isa in Isa::tested_paths() {
            let all = run(isa, &x, Some(&lens), &w, Some(&b), s);
            for bi in 0..3 {
                let one = ConvShape { batch: 1, ..s };
                let alone = run(isa, &x[bi * l_in * c_in..][..l_in * c_in], Some(&lens[bi..]), &w, Some(&b), one);
                let part = &all[bi * l_in * c_out..][..l_in * c_out];
                assert!(alone.iter().zip(part).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa} item {bi} (seed {seed})");
            }
        }
    }

    #[test]
    fn tap_major_reorders_torch_weights() {
        let (c_out, c_in, taps) = (2, 3, 4);
        let w: Vec<f32> = (0..c_out * c_in * taps).map(|i| i as f32).collect();
        let t = tap_major(&w, c_out, c_in, taps);
        for o in 0..c_out {
            for c in 0..c_in {
                for j in 0..taps {
                    assert_eq!(t[o * c_in * taps + j * c_in + c], w[(o * c_in + c) * taps + j]);
                }
            }
        }
    }
}
