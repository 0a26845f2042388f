//! Dense layers.
use super::isa::Isa;

/// Up to this many rows of `x`, [`linear`] streams the weight once per 4 rows with a GEMV-style
/// kernel (decode steps); above it, matrixmultiply's packed GEMM (prefill).
const GEMV_MAX_ROWS: usize = 16;
/// Output columns (weight rows) per parallel task of the GEMV path.
const GEMV_COLS_PER_TASK: usize = 32;

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (a PyTorch `Linear` without bias), f32.
///
/// Decode-sized inputs (m ≤ 16) take a multithreaded GEMV that reads each weight row once per
/// 4 input rows (AVX2+FMA when the CPU has it); larger m uses matrixmultiply's packed sgemm.
pub fn linear(x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    linear_with(super::isa::active(), x, w, out, m, n, k)
}

/// [`linear`] on the instruction path `isa`: its GEMV takes AVX2+FMA when `isa` allows it (the
/// wider paths run the AVX2 code: a decode step's weights go through the packed GEMV,
/// [`super::gemv_packed_with`]); a path the CPU lacks runs as the widest it has.
pub fn linear_with(isa: Isa, x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    debug_assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    if m <= GEMV_MAX_ROWS {
        return gemv_with(x, w, out, m, n, k, dots4, simd_allowed(isa));
    }
    linear_packed(x, w, out, m, n, k)
}

/// [`linear`] always through the packed GEMM: each output element is summed in the same order
/// whatever m is, so a row's result does not depend on the other rows (batch invariance; the Emu
/// backend's stand-in for cuBLAS uses it).
///
/// Large products run as row blocks on rayon's pool (about two per thread), each a serial
/// matrixmultiply sgemm (the crate is built without its own threads). Measured on a 10 s S3Gen
/// synthesis on 2 cores, against matrixmultiply's threading: 82.3 s → 76.9 s, the CPUs busy
/// 1.87 of 2 instead of 1.75 (no hand-over between two thread pools around every op; one
/// block per thread was 79.0 s, four 78.6 s).
pub fn linear_packed(x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    debug_assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let gemm = |x: &[f32], out: &mut [f32]| {
        let rows = out.len() / n;
        // SAFETY: x holds rows*k, w n*k and out rows*n elements; strides describe row-major x, w
        // read as its transpose (k x n, column stride k), and row-major out.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let threads = rayon::current_num_threads();
    if threads > 1 && m >= 2 * GEMM_MIN_ROWS_PER_TASK && m * n * k >= GEMM_PAR_MIN_WORK {
        // row blocks on rayon's pool, one serial sgemm each (matrixmultiply is built without its
        // own threads): a row's result does not depend on its block
        use rayon::prelude::*;
        let rows = m.div_ceil(2 * threads).max(GEMM_MIN_ROWS_PER_TASK);
        out[..m * n].par_chunks_mut(rows * n).zip(x[..m * k].par_chunks(rows * k)).for_each(|(o, xc)| gemm(xc, o));
    } else {
        gemm(&x[..m * k], &mut out[..m * n]);
    }
}

/// Multiply-adds from which [`linear_packed`] splits its rows across rayon's pool.
const GEMM_PAR_MIN_WORK: usize = 1 << 20;
/// The fewest rows per parallel GEMM task (each task packs the whole weight once: fewer rows would
/// pay that for little work).
const GEMM_MIN_ROWS_PER_TASK: usize = 32;

/// A pointer that parallel tasks write through at disjoint positions.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: every task writes a disjoint set of elements (its own output columns).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// (A method, so that closures capture the whole Send + Sync wrapper, not its raw field.)
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Four dot products of input rows with one weight row (`simd`: AVX2+FMA may be used).
type Dot4<W> = fn([&[f32]; 4], &[W], &mut [f32; 4], bool);

/// The GEMV of [`linear`] over any weight element, with its 4-row dot product.
#[allow(clippy::too_many_arguments)] // the product's operands and shape, its dot product, and whether AVX2 may run
fn gemv_with<W: Sync>(x: &[f32], w: &[W], out: &mut [f32], m: usize, n: usize, k: usize, dot: Dot4<W>, simd: bool) {
    use rayon::prelude::*;
    let dst = SharedOut(out.as_mut_ptr());
    w[..n * k].par_chunks(k * GEMV_COLS_PER_TASK).enumerate().for_each(|(t, wc)| {
        let j0 = t * GEMV_COLS_PER_TASK;
        let mut acc = [0f32; 4];
        for (jj, wr) in wc.chunks_exact(k).enumerate() {
            for i0 in (0..m).step_by(4) {
                let rows = (m - i0).min(4);
                let xs: [&[f32]; 4] = std::array::from_fn(|r| &x[(i0 + r.min(rows - 1)) * k..][..k]);
                dot(xs, wr, &mut acc, simd);
                for (r, &v) in acc.iter().enumerate().take(rows) {
                    // SAFETY: (i0 + r, j0 + jj) is inside out[m, n] and owned by this task's columns.
                    unsafe { *dst.ptr().add((i0 + r) * n + j0 + jj) = v };
                }
            }
        }
    });
}

/// [`linear`] with bf16 weights (f32 inputs, accumulation and output): the weight is widened on the
/// fly, so a decode step reads half the bytes (the GEMV path); for many rows over a small weight it is
/// widened once and multiplied by the packed GEMM.
pub fn linear_bf16_weights(x: &[f32], w: &[half::bf16], out: &mut [f32], m: usize, n: usize, k: usize) {
    linear_bf16_weights_with(super::isa::active(), x, w, out, m, n, k)
}

/// [`linear_bf16_weights`] on the instruction path `isa` (as [`linear_with`]).
pub fn linear_bf16_weights_with(isa: Isa, x: &[f32], w: &[half::bf16], out: &mut [f32], m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    if m < WIDEN_MIN_ROWS || n * k > WIDEN_MAX_WEIGHT {
        // decode-sized: the GEMV widens each weight on the fly and reads it once per 4 rows
        return gemv_with(x, w, out, m, n, k, dots4_bf16, simd_allowed(isa));
    }
    // many rows over a small weight (S3Gen's convolutions over hundreds of frames): widening the
    // weight once into a fresh buffer is small next to the m·n·k multiply-adds, and the packed GEMM
    // runs at a higher rate. Measured: a T3 prefill (~270 rows over 4-8M-element weights) is faster
    // on the GEMV (2.2 s vs 2.6 s, the fresh f32 copies cost), S3Gen's estimator (1600 rows over
    // weights of 0.2-1M elements) on the packed GEMM (RTF 10.3 vs 19.6).
    let wf: Vec<f32> = {
        use rayon::prelude::*;
        w[..n * k].par_iter().map(|v| v.to_f32()).collect()
    };
    linear_packed(x, &wf, out, m, n, k)
}

/// From this many rows on, and for weights of at most [`WIDEN_MAX_WEIGHT`] elements,
/// [`linear_bf16_weights`] widens the weight and takes the packed GEMM. The proptest below covers
/// both sides of the row threshold.
const WIDEN_MIN_ROWS: usize = 256;
const WIDEN_MAX_WEIGHT: usize = 1 << 20;

/// [`dots4`] over a bf16 weight row.
#[inline]
fn dots4_bf16(xs: [&[f32]; 4], w: &[half::bf16], acc: &mut [f32; 4], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU supports AVX2 and FMA (checked by the caller).
        unsafe { dots4_bf16_avx2(xs, w, acc) };
        return;
    }
    let _ = simd;
    for r in 0..4 {
        acc[r] = xs[r].iter().zip(w).map(|(&a, &b)| a * b.to_f32()).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots4_bf16_avx2(xs: [&[f32]; 4], w: &[half::bf16], acc: &mut [f32; 4]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let body = k / 8 * 8;
    let mut a = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c < body {
        // SAFETY: c + 8 <= k <= every slice's length; bf16 -> f32 is a 16-bit left shift.
        unsafe {
            let raw = _mm_loadu_si128(w.as_ptr().add(c) as *const __m128i);
            let wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
            for r in 0..4 {
                a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[r].as_ptr().add(c)), wv, a[r]);
            }
        }
        c += 8;
    }
    finish4(&a, acc, |r| (body..k).map(|c| xs[r][c] * w[c].to_f32()).sum());
}

/// Whether the AVX2+FMA code may run: the CPU has it and the selected path ([`super::isa::active`])
/// allows it.
pub(super) fn simd_available() -> bool {
    simd_allowed(super::isa::active())
}

/// Whether the AVX2+FMA code may run on the path `isa`: `isa` allows it and the CPU has it.
fn simd_allowed(isa: Isa) -> bool {
    isa.min(Isa::best()).allows(Isa::Avx2)
}

/// `acc[r] = xs[r] · w` for four rows at once (rows may repeat).
#[inline]
fn dots4(xs: [&[f32]; 4], w: &[f32], acc: &mut [f32; 4], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU supports AVX2 and FMA (checked by the caller).
        unsafe { dots4_avx2(xs, w, acc) };
        return;
    }
    let _ = simd;
    let mut lanes = [[0f32; 8]; 4];
    let body = w.len() / 8 * 8;
    for c in (0..body).step_by(8) {
        for r in 0..4 {
            for l in 0..8 {
                lanes[r][l] += xs[r][c + l] * w[c + l];
            }
        }
    }
    for r in 0..4 {
        acc[r] = lanes[r].iter().sum::<f32>() + (body..w.len()).map(|c| xs[r][c] * w[c]).sum::<f32>();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots4_avx2(xs: [&[f32]; 4], w: &[f32], acc: &mut [f32; 4]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let body = k / 8 * 8;
    let mut a = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c < body {
        // SAFETY: c + 8 <= k <= every slice's length.
        unsafe {
            let wv = _mm256_loadu_ps(w.as_ptr().add(c));
            for r in 0..4 {
                a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[r].as_ptr().add(c)), wv, a[r]);
            }
        }
        c += 8;
    }
    finish4(&a, acc, |r| (body..k).map(|c| xs[r][c] * w[c]).sum());
}

/// `acc[r]` = the horizontal sum of the 8 lanes of `a[r]` plus `tail(r)` (the columns past the
/// last full 8-lane chunk): the end of both AVX2 dot kernels.
#[cfg(target_arch = "x86_64")]
fn finish4(a: &[std::arch::x86_64::__m256; 4], acc: &mut [f32; 4], tail: impl Fn(usize) -> f32) {
    for r in 0..4 {
        // SAFETY: __m256 is 8 f32 lanes; a plain reinterpretation of the register's bytes.
        let lanes: [f32; 8] = unsafe { std::mem::transmute(a[r]) };
        acc[r] = lanes.iter().sum::<f32>() + tail(r);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cpu::{RowValue, add_rmsnorm, embed_pos};
    use proptest::prelude::*;

    /// `x[m, k] · w[n, k]ᵀ` from the definition, in f64 (also used by the packed GEMV's tests).
    pub(in crate::cpu) fn naive_linear(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut o = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum();
            }
        }
        o
    }

    #[test]
    fn parallel_gemm_blocks_match_naive_and_each_row_alone() {
        // big enough for row blocks on the pool (m·n·k ≥ GEMM_PAR_MIN_WORK); rows not a multiple of
        // the block; every row bit-identical to the same row multiplied alone (one serial sgemm)
        let seed = crate::testing::fresh_seed();
        eprintln!("seed {seed}");
        for (c, &(m, n, k)) in
            [(301usize, 70usize, 131usize), (2 * GEMM_MIN_ROWS_PER_TASK + 1, 257, 64), (1000, 33, 40)].iter().enumerate()
        {
            let s = seed.wrapping_add(c as u64 * 10);
            assert!(m * n * k >= GEMM_PAR_MIN_WORK && m >= 2 * GEMM_MIN_ROWS_PER_TASK);
            let x = crate::testing::random_f32(s, m * k, 1.0);
            let w = crate::testing::random_f32(s + 1, n * k, 1.0);
            let mut out = vec![f32::NAN; m * n];
            linear_packed(&x, &w, &mut out, m, n, k);
            let want = naive_linear(&x, &w, m, n, k);
            for (i, (g, want)) in out.iter().zip(&want).enumerate() {
                // an f32 sum of k products is within k·u·Σ|terms| of the exact one (u = 2^-24);
                // a bound relative to the result alone fails whenever the terms cancel
                let (r, j) = (i / n, i % n);
                let mag: f64 = (0..k).map(|t| (x[r * k + t] as f64 * w[j * k + t] as f64).abs()).sum();
                let tol = (k as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0 * mag;
                assert!((*g as f64 - want).abs() <= tol, "[{i}] {g} vs {want} (bound {tol:e}, m {m} n {n} k {k} seed {s})");
            }
            for i in [0, m / 2, m - 1] {
                let mut row = vec![f32::NAN; n];
                linear_packed(&x[i * k..(i + 1) * k], &w, &mut row, 1, n, k);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&row), bits(&out[i * n..(i + 1) * n]), "row {i} alone (m {m} n {n} k {k} seed {s})");
            }
        }
    }

    proptest! {
        #[test]
        fn linear_matches_naive(m in 1usize..40, n in 1usize..80, k in 0usize..70, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, m * k, 1.0);
            let w = crate::testing::random_f32(seed ^ 1, n * k, 1.0);
            let want = naive_linear(&x, &w, m, n, k);
            for isa in Isa::supported_paths() {
                let mut out = vec![f32::NAN; m * n];
                linear_with(isa, &x, &w, &mut out, m, n, k);
                for (g, w) in out.iter().zip(&want) {
                    prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{isa}: {} vs {}", g, w);
                }
            }
        }

        #[test]
        fn linear_with_bf16_weights_matches_f32_on_the_same_values(m in prop_oneof![1usize..40, 250usize..300], n in 1usize..80, k in 0usize..70, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, m * k, 1.0);
            let wb: Vec<half::bf16> = crate::testing::random_f32(seed ^ 1, n * k, 1.0).iter().map(|&v| half::bf16::from_f32(v)).collect();
            let wf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
            let want = naive_linear(&x, &wf, m, n, k);
            for isa in Isa::supported_paths() {
                let mut got = vec![f32::NAN; m * n];
                linear_bf16_weights_with(isa, &x, &wb, &mut got, m, n, k);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{isa}: {} vs {}", g, w);
                }
            }
        }

        #[test]
        fn rmsnorm_output_has_unit_rms_with_unit_weight(rows in 1usize..5, cols in 1usize..300, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, rows * cols, 3.0);
            let mut res = crate::testing::random_f32(seed ^ 7, rows * cols, 3.0);
            let before = res.clone();
            let w = vec![1.0f32; cols];
            let mut out = vec![f32::NAN; rows * cols];
            add_rmsnorm(Some(&x), &mut res, &w, &mut out, 0.0);
            for r in 0..rows {
                for c in 0..cols {
                    let i = r * cols + c;
                    prop_assert!((res[i] - (before[i] + x[i])).abs() <= 1e-6 * (1.0 + res[i].abs()));
                }
                let ms: f64 = out[r * cols..(r + 1) * cols].iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
                prop_assert!((ms - 1.0).abs() < 1e-4, "mean square {}", ms);
            }
        }
    }

    #[test]
    fn embed_rejects_ids_past_the_table() {
        let table = vec![0.5f32; 3 * 4];
        let mut out = vec![0f32; 2 * 4];
        assert_eq!(embed_pos(&[1, 3], None, &table, &mut out, 4), Err((1, RowValue::TokenId, 3)));
        let pos_table = vec![0.25f32; 2 * 4];
        assert_eq!(embed_pos(&[0, -1], Some((&[0, 2], &pos_table)), &table, &mut out, 4), Err((1, RowValue::Position, 2)));
        embed_pos(&[2, -1], Some((&[-1, 1], &pos_table)), &table, &mut out, 4).unwrap();
        assert_eq!(out, [0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]);
    }
}
