//! The Cpu GEMM for weights that meet many rows at once (S3Gen's layers): the weight is packed once,
//! at load, into panels of [`PANEL`] output columns, and `x` is read where it lies.
//!
//! Layout of a packed `[n, k]` weight ([`pack_gemm`]): `⌈n/16⌉` panels of `[k, 16]`,
//! `panels[(p·k + c)·16 + t] = w[16p + t, c]`, zeros for columns past `n`.
//!
//! Kernels, by instruction path ([`Isa`]; [`gemm_panels`] takes [`super::isa::active`]'s,
//! [`gemm_panels_with`] the one it is given):
//! - AVX2+FMA: a register tile of up to [`TILE_ROWS`] rows × 16 columns in 12 accumulators; for
//!   each `c`, two loads of the panel and one broadcast of `x[r, c]` per row.
//! - AVX-512F: a tile of up to [`TILE_ROWS_512`] rows × two panels (32 columns, one zmm per row and
//!   panel: 24 accumulators); for each `c`, one load of each panel and one broadcast per row (half
//!   the broadcasts per multiply-add of a one-panel tile); partial panels through masked loads and
//!   stores. Same layout and packing as AVX2.
//!
//! Rows are taken in
//! blocks of [`BLOCK_ROWS`] (one rayon task each; the block's rows stay in L2 while every panel
//! passes), and `k` in chunks of [`K_CHUNK`] (a panel chunk stays in L1/L2; the accumulators go
//! through `out` between chunks, which does not change any value).
//!
//! Why not matrixmultiply: it packs both operands on every call (3.3% of a 10 s S3Gen synthesis on
//! 2 cores), and each parallel task re-packs the whole weight. Measured on one core of the 2-core
//! AVX2 machine, `[814, k] · [n, k]ᵀ` for S3Gen's shapes (k, n) = (256, 512), (256, 1024),
//! (1024, 256), (768, 256): 44–45 GFLOP/s here against 38–41 for matrixmultiply's sgemm; the FMA
//! peak of that core is 47 GFLOP/s.
//!
//! Order: every output is `Σ_c x[r, c]·w[j, c]` as one chain of fused multiply-adds over
//! `c = 0, 1, ...`, then `+ bias[j]`: a row's result does not depend on the other rows, their
//! number or its position (batch invariance). The AVX2 and AVX-512 paths run the same chain per
//! output (one FMA per `c`, the same passes), so their results are equal bit for bit. On the
//! portable path the same layout is read by a scalar loop in the same order (separate multiply and
//! add).

use rayon::prelude::*;

use super::isa::Isa;

/// Output columns per packed panel (two 8-lane vectors).
pub const PANEL: usize = 16;
/// Rows per register tile (AVX2 and portable).
pub(super) const TILE_ROWS: usize = 6;
/// Rows per register tile on AVX-512 (two panels per tile).
pub(super) const TILE_ROWS_512: usize = 12;

/// Rows per register tile on the path `isa` (which [`Isa::runnable`] has resolved).
pub(super) fn tile_rows(isa: Isa) -> usize {
    if isa.allows(Isa::Avx512) { TILE_ROWS_512 } else { TILE_ROWS }
}
/// Rows per parallel task, at most (see [`row_blocks`]).
pub(super) const BLOCK_ROWS: usize = 96;
/// Reduction length per pass over a panel.
const K_CHUNK: usize = 1024;

/// Elements of the packed form of an `[n, k]` weight.
pub fn packed_gemm_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * PANEL * k
}

/// Packs the row-major weight `w[n, k]` (f32 or bf16, widened exactly) into `out`
/// (`packed_gemm_len(n, k)` elements) as panels of 16 output columns.
pub fn pack_gemm<T: Copy + Into<f32> + Sync>(w: &[T], n: usize, k: usize, out: &mut [f32]) {
    assert!(w.len() >= n * k && out.len() == packed_gemm_len(n, k), "pack_gemm: slice lengths");
    if k == 0 {
        return;
    }
    out.par_chunks_mut(PANEL * k).enumerate().for_each(|(p, panel)| {
        let cols = PANEL.min(n - p * PANEL);
        for (c, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (t, d) in dst.iter_mut().enumerate() {
                *d = if t < cols { w[(p * PANEL + t) * k + c].into() } else { 0.0 };
            }
        }
    });
}

/// The row-major `[n, k]` weight back from its packed form.
pub fn unpack_gemm(panels: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0f32; n * k];
    for (j, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        let (p, t) = (j / PANEL, j % PANEL);
        for (c, v) in row.iter_mut().enumerate() {
            *v = panels[(p * k + c) * PANEL + t];
        }
    }
    w
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])` with `w` packed by [`pack_gemm`], f32, on the
/// process's instruction path ([`super::isa::active`]).
pub fn gemm_panels(x: &[f32], panels: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_panels_with(super::isa::active(), x, panels, bias, out, m, n, k);
}

/// [`gemm_panels`] on the path `isa` (a path this CPU lacks runs as [`Isa::runnable`]'s).
#[allow(clippy::too_many_arguments)]
pub fn gemm_panels_with(
    isa: Isa,
    x: &[f32],
    panels: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        x.len() >= m * k && panels.len() == packed_gemm_len(n, k) && out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "gemm_panels: slice lengths"
    );
    if m == 0 || n == 0 {
        return;
    }
    let isa = isa.runnable();
    let block = |(r0, o): (usize, &mut [f32])| {
        let rows = o.len() / n;
        let xb = &x[r0 * k..][..rows * k];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512F (runnable); xb holds rows·k, o rows·n and panels the
            // packed [n, k] weight (asserted above).
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512::block(xb, panels, bias, o, rows, n, k) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA (runnable); extents as above.
            Isa::Avx2 => unsafe { avx::block(xb, panels, bias, o, rows, n, k) },
            _ => scalar_block(xb, panels, bias, o, rows, n, k),
        }
    };
    let out = &mut out[..m * n];
    if m > BLOCK_ROWS && m * n * k >= PAR_MIN_WORK {
        row_blocks(out, m, n, rayon::current_num_threads(), tile_rows(isa)).into_par_iter().for_each(block);
    } else {
        out.chunks_mut(BLOCK_ROWS * n).enumerate().for_each(|(i, o)| block((i * BLOCK_ROWS, o)));
    }
}

/// `out` ([m, n]) split into row blocks for `threads` threads: `(first row, rows)` pairs of whole
/// register tiles of `tile` rows (but the last) of at most [`BLOCK_ROWS`] rows, as many blocks as
/// the smallest multiple of `threads` that allows, their sizes differing by at most one tile. Why:
/// with blocks of exactly 96 rows, S3Gen's 1628-row GEMMs made 17 blocks, 9 for one core and 8 for
/// the other (2-core efficiency 17/18).
pub(super) fn row_blocks(out: &mut [f32], m: usize, n: usize, threads: usize, tile: usize) -> Vec<(usize, &mut [f32])> {
    let tiles = m.div_ceil(tile);
    let per = threads.max(1);
    let blocks = tiles.div_ceil(BLOCK_ROWS / tile).div_ceil(per) * per;
    let blocks = blocks.min(tiles);
    let mut parts = Vec::with_capacity(blocks);
    let mut rest = out;
    let mut r0 = 0;
    for i in 0..blocks {
        let r1 = super::even_split_start(i + 1, blocks, m, tile);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((r1 - r0) * n);
        parts.push((r0, head));
        (rest, r0) = (tail, r1);
    }
    parts
}

/// Multiply-adds from which [`gemm_panels`] runs its row blocks on rayon's pool.
pub(super) const PAR_MIN_WORK: usize = 1 << 20;

/// One row block without SIMD: the kernel's order, one multiply and one add per step.
fn scalar_block(x: &[f32], panels: &[f32], bias: Option<&[f32]>, out: &mut [f32], rows: usize, n: usize, k: usize) {
    for r in 0..rows {
        let xr = &x[r * k..][..k];
        for j in 0..n {
            let (p, t) = (j / PANEL, j % PANEL);
            let panel = &panels[p * k * PANEL..][..k * PANEL];
            let mut acc = 0f32;
            for (c, &xv) in xr.iter().enumerate() {
                acc += xv * panel[c * PANEL + t];
            }
            out[r * n + j] = acc + bias.map_or(0.0, |b| b[j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{K_CHUNK, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// One row block: for each chunk of k, each panel, each tile of up to 6 rows.
    ///
    /// # Safety
    /// AVX2 and FMA must be present; `x` holds `rows·k`, `out` `rows·n`, `panels` the packed
    /// `[n, k]` weight and `bias` (if any) `n` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(
        x: &[f32],
        panels: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        rows: usize,
        n: usize,
        k: usize,
    ) {
        let n_panels = n.div_ceil(PANEL);
        let mut c0 = 0;
        loop {
            let c1 = (c0 + K_CHUNK).min(k);
            let pass = Pass { first: c0 == 0, last: c1 == k, c0, c1 };
            for p in 0..n_panels {
                let cols = PANEL.min(n - p * PANEL);
                // SAFETY: panel p holds k·16 values; the tile reads rows r0.. of x and writes
                // columns 16p..16p+cols of those rows of out (cols ≤ 16, bounded by n).
                unsafe {
                    let panel = panels.as_ptr().add(p * k * PANEL);
                    let b = bias.map(|b| b.as_ptr().add(p * PANEL));
                    let mut r0 = 0;
                    while r0 < rows {
                        let r = (rows - r0).min(TILE_ROWS);
                        let (xt, ot) = (x.as_ptr().add(r0 * k), out.as_mut_ptr().add(r0 * n + p * PANEL));
                        match r {
                            1 => tile::<1>(xt, k, panel, b, ot, n, cols, pass),
                            2 => tile::<2>(xt, k, panel, b, ot, n, cols, pass),
                            3 => tile::<3>(xt, k, panel, b, ot, n, cols, pass),
                            4 => tile::<4>(xt, k, panel, b, ot, n, cols, pass),
                            5 => tile::<5>(xt, k, panel, b, ot, n, cols, pass),
                            _ => tile::<6>(xt, k, panel, b, ot, n, cols, pass),
                        }
                        r0 += r;
                    }
                }
            }
            if pass.last {
                break;
            }
            c0 = c1;
        }
    }

    /// Which part of the reduction one pass over a panel covers.
    #[derive(Clone, Copy)]
    struct Pass {
        /// The first chunk: the accumulators start at zero (else they are loaded from `out`).
        first: bool,
        /// The last chunk: the bias is added at the store.
        last: bool,
        c0: usize,
        c1: usize,
    }

    /// `R` rows × `cols ≤ 16` columns: `acc[r][t] (+)= Σ_{c0 ≤ c < c1} x[r, c]·panel[c, t]`.
    ///
    /// # Safety
    /// AVX2/FMA present; `x` readable for `R` rows of stride `k`, `panel` for `k·16` values, `bias`
    /// for `cols` values, `out` writable for `R` rows of stride `n` and `cols` columns.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        panel: *const f32,
        bias: Option<*const f32>,
        out: *mut f32,
        n: usize,
        cols: usize,
        pass: Pass,
    ) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; a
        // partial panel (cols < 16) goes through a 16-wide stack row.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut row = [0f32; PANEL];
            if !pass.first {
                for (r, a) in acc.iter_mut().enumerate() {
                    let src = if cols == PANEL {
                        out.add(r * n)
                    } else {
                        std::ptr::copy_nonoverlapping(out.add(r * n), row.as_mut_ptr(), cols);
                        row.as_ptr()
                    };
                    a[0] = _mm256_loadu_ps(src);
                    a[1] = _mm256_loadu_ps(src.add(8));
                }
            }
            for c in pass.c0..pass.c1 {
                let b0 = _mm256_loadu_ps(panel.add(c * PANEL));
                let b1 = _mm256_loadu_ps(panel.add(c * PANEL + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(r * k + c));
                    a[0] = _mm256_fmadd_ps(xv, b0, a[0]);
                    a[1] = _mm256_fmadd_ps(xv, b1, a[1]);
                }
            }
            if pass.last
                && let Some(b) = bias
            {
                let mut bv = [0f32; PANEL];
                std::ptr::copy_nonoverlapping(b, bv.as_mut_ptr(), cols);
                let (b0, b1) = (_mm256_loadu_ps(bv.as_ptr()), _mm256_loadu_ps(bv.as_ptr().add(8)));
                for a in acc.iter_mut() {
                    a[0] = _mm256_add_ps(a[0], b0);
                    a[1] = _mm256_add_ps(a[1], b1);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                if cols == PANEL {
                    _mm256_storeu_ps(out.add(r * n), a[0]);
                    _mm256_storeu_ps(out.add(r * n + 8), a[1]);
                } else {
                    _mm256_storeu_ps(row.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), a[1]);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(r * n), cols);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{K_CHUNK, PANEL, TILE_ROWS_512};
    use std::arch::x86_64::*;

    /// One row block: for each chunk of k, each pair of panels (the last one alone when their
    /// number is odd), each tile of up to 12 rows.
    ///
    /// # Safety
    /// AVX-512F must be present; `x` holds `rows·k`, `out` `rows·n`, `panels` the packed `[n, k]`
    /// weight and `bias` (if any) `n` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(
        x: &[f32],
        panels: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        rows: usize,
        n: usize,
        k: usize,
    ) {
        let n_panels = n.div_ceil(PANEL);
        let mut c0 = 0;
        loop {
            let c1 = (c0 + K_CHUNK).min(k);
            let pass = Pass { first: c0 == 0, last: c1 == k, c0, c1 };
            let mut p = 0;
            while p < n_panels {
                let two = p + 1 < n_panels;
                let cols = (n - p * PANEL).min(if two { 2 * PANEL } else { PANEL });
                // SAFETY: panels p (and p + 1) hold k·16 values each; the tile reads rows r0.. of x
                // and writes columns 16p..16p + cols of those rows of out (bounded by n).
                unsafe {
                    let panel = panels.as_ptr().add(p * k * PANEL);
                    let b = bias.map(|b| b.as_ptr().add(p * PANEL));
                    let mut r0 = 0;
                    while r0 < rows {
                        let r = (rows - r0).min(TILE_ROWS_512);
                        let (xt, ot) = (x.as_ptr().add(r0 * k), out.as_mut_ptr().add(r0 * n + p * PANEL));
                        let t = Tile { x: xt, k, panel, bias: b, out: ot, n, cols, pass };
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
            if pass.last {
                break;
            }
            c0 = c1;
        }
    }

    /// Which part of the reduction one pass over a panel covers.
    #[derive(Clone, Copy)]
    struct Pass {
        /// The first chunk: the accumulators start at zero (else they are loaded from `out`).
        first: bool,
        /// The last chunk: the bias is added at the store.
        last: bool,
        c0: usize,
        c1: usize,
    }

    /// One register tile's operands: `x` (rows of stride `k`), the first of its `P` panels (the
    /// next one `k·16` values on), `bias` and `out` (rows of stride `n`) at its first column, and
    /// the tile's real columns `cols ≤ 16·P` (`> 16·(P − 1)`).
    #[derive(Clone, Copy)]
    struct Tile {
        x: *const f32,
        k: usize,
        panel: *const f32,
        bias: Option<*const f32>,
        out: *mut f32,
        n: usize,
        cols: usize,
        pass: Pass,
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

    /// The mask of the real columns of panel `q` of a tile with `cols` real columns.
    fn col_mask(cols: usize, q: usize) -> __mmask16 {
        let c = cols.saturating_sub(q * PANEL).min(PANEL);
        ((1u32 << c) - 1) as __mmask16
    }

    /// `R` rows × `P` panels: `acc[r][q] (+)= Σ_{c0 ≤ c < c1} x[r, c]·panel_q[c, ·]`, then the bias
    /// at the last pass; columns past `cols` are neither read from nor written to `out`/`bias`.
    ///
    /// # Safety
    /// AVX-512F present; `x` readable for `R` rows of stride `k`, the panels for `P·k·16` values,
    /// `bias` for `cols` values, `out` writable for `R` rows of stride `n` and `cols` columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const P: usize>(t: Tile) {
        // SAFETY (whole body): every access stays inside the extents of the contract above; the
        // masks keep loads and stores of out and bias within cols.
        unsafe {
            let mask: [__mmask16; P] = std::array::from_fn(|q| col_mask(t.cols, q));
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            if !t.pass.first {
                for (r, a) in acc.iter_mut().enumerate() {
                    for (q, v) in a.iter_mut().enumerate() {
                        *v = _mm512_maskz_loadu_ps(mask[q], t.out.add(r * t.n + q * PANEL));
                    }
                }
            }
            for c in t.pass.c0..t.pass.c1 {
                let w: [__m512; P] = std::array::from_fn(|q| _mm512_loadu_ps(t.panel.add((q * t.k + c) * PANEL)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*t.x.add(r * t.k + c));
                    for (v, wq) in a.iter_mut().zip(&w) {
                        *v = _mm512_fmadd_ps(xv, *wq, *v);
                    }
                }
            }
            if t.pass.last
                && let Some(b) = t.bias
            {
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
    use crate::testing::random_f32;

    /// `x · wᵀ (+ b)` in f64, and `Σ |x·w|` per output (the scale of f32 summation error).
    fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for c in 0..k {
                    let t = x[i * k + c] as f64 * w[j * k + c] as f64;
                    s += t;
                    mag[i * n + j] += t.abs();
                }
                out[i * n + j] = s + b.map_or(0.0, |b| b[j] as f64);
                mag[i * n + j] += b.map_or(0.0, |b| (b[j] as f64).abs());
            }
        }
        (out, mag)
    }

    fn packed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut p = vec![f32::NAN; packed_gemm_len(n, k)];
        pack_gemm(w, n, k, &mut p);
        p
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Odd shapes: partial tiles (m mod 6), partial panels (n mod 16), several row blocks and
        /// k past one chunk; with and without a bias; on the SIMD and the scalar path.
        #[test]
        fn matches_an_f64_product(
            m in 1usize..200, n in 1usize..70, k in prop_k(), bias: bool, seed in 0u64..1 << 40,
        ) {
            let x = random_f32(seed, m * k, 1.0);
            let w = random_f32(seed ^ 0x5bd1, n * k, 0.5);
            let b = bias.then(|| random_f32(seed ^ 0x77, n, 1.0));
            let (want, mag) = reference(&x, &w, b.as_deref(), m, n, k);
            let p = packed(&w, n, k);
            let mut by_path = Vec::new();
            for isa in Isa::tested_paths() {
                let mut got = vec![f32::NAN; m * n];
                gemm_panels_with(isa, &x, &p, b.as_deref(), &mut got, m, n, k);
                for (idx, (&g, (&r, &s))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
                    // one rounding per step of a k-long chain (plus the bias)
                    let tol = 1.2e-7 * (k as f64 + 2.0) * s + 1e-30;
                    proptest::prop_assert!((g as f64 - r).abs() <= tol, "{isa} [{m},{k}]x[{n},{k}] at {idx}: {g} vs {r}");
                }
                by_path.push((isa, got));
            }
            // AVX2 and AVX-512 run the same FMA chain per output: equal bits
            let fused: Vec<_> = by_path.iter().filter(|(isa, _)| isa.allows(Isa::Avx2)).collect();
            for pair in fused.windows(2) {
                let same = pair[0].1.iter().zip(&pair[1].1).all(|(a, b)| a.to_bits() == b.to_bits());
                proptest::prop_assert!(same, "{} and {} differ for [{m},{k}]x[{n},{k}]", pair[0].0, pair[1].0);
            }
        }
    }

    fn prop_k() -> impl proptest::strategy::Strategy<Value = usize> {
        proptest::prop_oneof![1usize..40, 250usize..260, (K_CHUNK - 3)..(K_CHUNK + 20)]
    }

    #[test]
    fn a_row_is_the_same_alone_and_in_any_batch() {
        let seed = crate::testing::fresh_seed();
        eprintln!("seed {seed}");
        let (n, k) = (37, K_CHUNK + 5);
        let m = 2 * BLOCK_ROWS + 7;
        let x = random_f32(seed, m * k, 1.0);
        let w = random_f32(seed ^ 1, n * k, 0.5);
        let b = random_f32(seed ^ 2, n, 1.0);
        let p = packed(&w, n, k);
        for isa in Isa::tested_paths() {
            let mut all = vec![f32::NAN; m * n];
            gemm_panels_with(isa, &x, &p, Some(&b), &mut all, m, n, k);
            for i in [0, 5, 6, 11, 12, BLOCK_ROWS - 1, BLOCK_ROWS + 3, m - 1] {
                let mut one = vec![f32::NAN; n];
                gemm_panels_with(isa, &x[i * k..][..k], &p, Some(&b), &mut one, 1, n, k);
                assert_eq!(one, all[i * n..][..n], "{isa} row {i} (seed {seed})");
            }
        }
    }

    #[test]
    fn row_blocks_cover_every_row_once_in_whole_tiles_shared_evenly() {
        for (m, tile) in
            [1, 5, 6, 95, 96, 97, 193, 1000, 1628, 4096 + 3].into_iter().flat_map(|m| [(m, TILE_ROWS), (m, TILE_ROWS_512)])
        {
            for threads in [1, 2, 3, 7, 64] {
                let n = 3;
                let mut out = vec![0f32; m * n];
                let blocks = row_blocks(&mut out, m, n, threads, tile);
                let what = format!("m {m} threads {threads} tile {tile}");
                let mut next = 0;
                for (r0, o) in &blocks {
                    let rows = o.len() / n;
                    assert_eq!((*r0, o.len() % n), (next, 0), "{what}: blocks in order, whole rows");
                    assert!((1..=BLOCK_ROWS).contains(&rows), "{what}: {rows} rows");
                    next += rows;
                    assert!(next == m || next % tile == 0, "{what}: a block ends inside a tile");
                }
                assert_eq!(next, m, "{what}: every row");
                let tiles = m.div_ceil(tile);
                if tiles >= threads {
                    assert_eq!(blocks.len() % threads, 0, "{what}: {} blocks", blocks.len());
                }
                let sizes: Vec<usize> = blocks.iter().map(|(_, o)| (o.len() / n).div_ceil(tile)).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{what}: tiles per block {sizes:?}");
            }
        }
    }

    #[test]
    fn packing_round_trips_and_pads_with_zeros() {
        let (n, k) = (21, 9);
        let w = random_f32(3, n * k, 1.0);
        let p = packed(&w, n, k);
        assert_eq!(unpack_gemm(&p, n, k), w);
        // the second panel holds 5 real columns and 11 zero columns
        for c in 0..k {
            assert!(p[(k + c) * PANEL + 5..][..11].iter().all(|&v| v == 0.0));
        }
        let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let mut pb = vec![f32::NAN; packed_gemm_len(n, k)];
        pack_gemm(&wb, n, k, &mut pb);
        assert_eq!(unpack_gemm(&pb, n, k), wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_reduction_gives_the_bias() {
        let (m, n) = (7, 18);
        let b = random_f32(5, n, 1.0);
        for isa in Isa::tested_paths() {
            let mut out = vec![f32::NAN; m * n];
            gemm_panels_with(isa, &[], &[], Some(&b), &mut out, m, n, 0);
            for row in out.chunks(n) {
                assert_eq!(row, &b[..], "{isa}");
            }
        }
    }
}
