//! The Cpu backend's decode GEMV over weights regrouped once at load ("packed"), so that one
//! decode step streams every weight byte exactly once, sequentially, at the machine's memory
//! bandwidth.
//!
//! Layout of a packed `[n, k]` weight: rows in groups of [`GEMV_GROUP`] (4), columns in chunks of
//! `C` elements (16 for bf16, 8 for f32). Group `g`, chunk `q` is one block of `4·C` elements at
//! `(g · ⌈k/C⌉ + q) · 4·C`, holding the chunk of rows `4g..4g+4` one after another. Rows past `n`
//! and columns past `k` are zeros. Within a bf16 chunk the elements are stored in the order
//! `[0..4, 8..12, 4..8, 12..16]`, so that AVX2's 16-bit unpacks against zero widen a 32-byte load
//! into elements `0..8` and `8..16` in order.
//!
//! Measured on the 2-core AVX2 machine this was written on (`gemvbench` scratch program, 512 MB of
//! bf16 weights, 2 input rows): row-major 4-row dot products 11 GB/s, this layout with prefetching
//! 20 GB/s (the machine's read bandwidth is ~19-20 GB/s).
//!
//! Summation order: lane `l` of an 8-lane accumulator sums the products of columns `l, l+8, l+16,
//! ...`, then the 8 lanes are added left to right: the same order as the row-major GEMV
//! (`cpu::linear` for ≤ 16 rows), so for `k` a multiple of the chunk both give identical bits. Each
//! input row is summed alone, in the same order whatever the other rows are (batch-invariant).
use half::bf16;

use super::linear::SharedOut;

/// Weight rows per packed group (output columns computed together).
pub const GEMV_GROUP: usize = 4;
/// Parallel tasks per thread of one GEMV: few and long, so that each thread streams long
/// sequential runs and the call ends with little waiting (a decode step makes ~120 calls).
const TASKS_PER_THREAD: usize = 2;
/// The fewest packed groups per task.
const MIN_GROUPS_PER_TASK: usize = 8;
/// From this many input rows on (a prefill), each bf16 group is widened once into f32 and multiplied
/// by the f32 micro-kernel: the widening is then paid once per group instead of once per row pair.
/// Same products in the same order: the bits do not change.
const WIDEN_GROUP_MIN_ROWS: usize = 8;
/// Bytes ahead of the current block that the AVX2 loops prefetch.
const PREFETCH_BYTES: usize = 1024;

/// A weight element of the packed GEMV.
pub trait GemvElem: Copy + Send + Sync + 'static {
    /// Columns per chunk.
    const CHUNK: usize;
    const ZERO: Self;
    fn widen(self) -> f32;
    /// Position, within a stored chunk, of the chunk's column `c`.
    fn stored_at(c: usize) -> usize;
}

impl GemvElem for f32 {
    const CHUNK: usize = 8;
    const ZERO: f32 = 0.0;
    fn widen(self) -> f32 {
        self
    }
    fn stored_at(c: usize) -> usize {
        c
    }
}

impl GemvElem for bf16 {
    const CHUNK: usize = 16;
    const ZERO: bf16 = bf16::ZERO;
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn stored_at(c: usize) -> usize {
        // columns 0..4 -> 0..4, 4..8 -> 8..12, 8..12 -> 4..8, 12..16 -> 12..16
        match c / 4 {
            1 => c + 4,
            2 => c - 4,
            _ => c,
        }
    }
}

/// Elements of the packed form of an `[n, k]` weight (padding included).
pub fn packed_gemv_len<T: GemvElem>(n: usize, k: usize) -> usize {
    n.div_ceil(GEMV_GROUP) * GEMV_GROUP * k.div_ceil(T::CHUNK) * T::CHUNK
}

/// Offset of weight element `(j, c)` in the packed form of an `[_, k]` weight.
fn packed_offset<T: GemvElem>(j: usize, c: usize, k: usize) -> usize {
    let chunks = k.div_ceil(T::CHUNK);
    let block = (j / GEMV_GROUP * chunks + c / T::CHUNK) * GEMV_GROUP * T::CHUNK;
    block + (j % GEMV_GROUP) * T::CHUNK + T::stored_at(c % T::CHUNK)
}

/// Writes the packed form of the row-major `w[n, k]` into `out` ([`packed_gemv_len`] elements).
pub fn pack_gemv<T: GemvElem>(w: &[T], n: usize, k: usize, out: &mut [T]) {
    use rayon::prelude::*;
    debug_assert!(w.len() >= n * k && out.len() == packed_gemv_len::<T>(n, k));
    let kp = k.div_ceil(T::CHUNK) * T::CHUNK;
    if kp == 0 {
        return;
    }
    // one group (4 weight rows) per task: block q of the group holds chunk q of its rows
    out.par_chunks_mut(GEMV_GROUP * kp).enumerate().for_each(|(g, group)| {
        for (q, block) in group.chunks_exact_mut(GEMV_GROUP * T::CHUNK).enumerate() {
            for (jj, chunk) in block.chunks_exact_mut(T::CHUNK).enumerate() {
                let j = g * GEMV_GROUP + jj;
                for c in 0..T::CHUNK {
                    let col = q * T::CHUNK + c;
                    chunk[T::stored_at(c)] = if j < n && col < k { w[j * k + col] } else { T::ZERO };
                }
            }
        }
    });
}

/// The row-major `[n, k]` weight back from its packed form (for inspection and tests).
pub fn unpack_gemv<T: GemvElem>(packed: &[T], n: usize, k: usize) -> Vec<T> {
    let mut w = vec![T::ZERO; n * k];
    for j in 0..n {
        for c in 0..k {
            w[j * k + c] = packed[packed_offset::<T>(j, c, k)];
        }
    }
    w
}

/// `out[m, n] = x[m, k] · wᵀ` with `w` `[n, k]` in the packed form ([`pack_gemv`]); f32 inputs,
/// accumulation and output. Parallel over groups of output columns; each task streams its groups
/// once and computes all input rows (two at a time) against each group.
pub fn gemv_packed<T: GemvElem>(x: &[f32], wp: &[T], out: &mut [f32], m: usize, n: usize, k: usize) {
    use rayon::prelude::*;
    debug_assert!(x.len() >= m * k && wp.len() == packed_gemv_len::<T>(n, k) && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(T::CHUNK) * T::CHUNK;
    // inputs padded with zeros to whole chunks (T3's widths are whole chunks: no copy)
    let padded: Vec<f32>;
    let x: &[f32] = if kp == k {
        x
    } else {
        let mut p = vec![0f32; m * kp];
        for i in 0..m {
            p[i * kp..i * kp + k].copy_from_slice(&x[i * k..(i + 1) * k]);
        }
        padded = p;
        &padded
    };
    let simd = super::linear::simd_available();
    let group_len = GEMV_GROUP * kp;
    let dst = SharedOut(out.as_mut_ptr());
    let per_task = n.div_ceil(GEMV_GROUP).div_ceil(TASKS_PER_THREAD * rayon::current_num_threads()).max(MIN_GROUPS_PER_TASK);
    let widen = simd && m >= WIDEN_GROUP_MIN_ROWS && std::any::TypeId::of::<T>() == std::any::TypeId::of::<bf16>();
    wp.par_chunks(group_len * per_task).enumerate().for_each(|(t, groups)| {
        let mut wide = if widen { vec![0f32; group_len] } else { Vec::new() };
        for (gg, group) in groups.chunks_exact(group_len).enumerate() {
            let j0 = (t * per_task + gg) * GEMV_GROUP;
            if widen {
                // SAFETY: T is bf16 (checked above); AVX2 present (`simd`).
                unsafe { widen_group_bf16(std::slice::from_raw_parts(group.as_ptr() as *const bf16, group.len()), &mut wide) };
            }
            for i0 in (0..m).step_by(2) {
                let i1 = (i0 + 1).min(m - 1);
                let xs = [&x[i0 * kp..(i0 + 1) * kp], &x[i1 * kp..(i1 + 1) * kp]];
                let acc = if widen { f32::dots_2x4(xs, &wide, simd) } else { T::dots_2x4(xs, group, simd) };
                for (r, &i) in [i0, i1].iter().enumerate().take(if i1 == i0 { 1 } else { 2 }) {
                    for (jj, &v) in acc[r].iter().enumerate() {
                        if j0 + jj < n {
                            // SAFETY: (i, j0 + jj) is inside out[m, n]; this task owns columns
                            // j0..j0+4 of every row.
                            unsafe { *dst.ptr().add(i * n + j0 + jj) = v };
                        }
                    }
                }
            }
        }
    });
}

/// The 2-row × 4-column micro-kernel over one packed group.
trait Dots2x4: GemvElem {
    /// `[row][column]` dot products of two padded input rows with the group's 4 weight rows.
    fn dots_2x4(xs: [&[f32]; 2], group: &[Self], simd: bool) -> [[f32; 4]; 2];
}

/// The portable micro-kernel: the same 8-lane accumulation as the AVX2 ones.
fn dots_2x4_scalar<T: GemvElem>(xs: [&[f32]; 2], group: &[T]) -> [[f32; 4]; 2] {
    let kp = xs[0].len();
    let mut lanes = [[[0f32; 8]; 4]; 2];
    for c0 in (0..kp).step_by(T::CHUNK) {
        let block = &group[c0 * GEMV_GROUP..][..GEMV_GROUP * T::CHUNK];
        for (jj, chunk) in block.chunks_exact(T::CHUNK).enumerate() {
            for c in 0..T::CHUNK {
                let w = chunk[T::stored_at(c)].widen();
                for r in 0..2 {
                    lanes[r][jj][c % 8] += xs[r][c0 + c] * w;
                }
            }
        }
    }
    lanes.map(|row| row.map(|l| l.iter().sum()))
}

impl<T: GemvElem> Dots2x4 for T {
    fn dots_2x4(xs: [&[f32]; 2], group: &[T], simd: bool) -> [[f32; 4]; 2] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            use std::any::TypeId;
            if TypeId::of::<T>() == TypeId::of::<bf16>() {
                // SAFETY: T is bf16 (checked); AVX2+FMA present (checked by the caller).
                return unsafe { dots_2x4_bf16_avx2(xs, std::slice::from_raw_parts(group.as_ptr() as *const bf16, group.len())) };
            }
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                // SAFETY: T is f32 (checked); AVX2+FMA present.
                return unsafe { dots_2x4_f32_avx2(xs, std::slice::from_raw_parts(group.as_ptr() as *const f32, group.len())) };
            }
        }
        let _ = simd;
        dots_2x4_scalar(xs, group)
    }
}

#[cfg(target_arch = "x86_64")]
fn hsum(a: &[[std::arch::x86_64::__m256; 4]; 2]) -> [[f32; 4]; 2] {
    // SAFETY: __m256 is 8 f32 lanes; a plain reinterpretation of the register's bytes.
    a.map(|row| row.map(|v| unsafe { std::mem::transmute::<std::arch::x86_64::__m256, [f32; 8]>(v) }.iter().sum()))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // j indexes the accumulators and the 4 weight rows together
unsafe fn dots_2x4_bf16_avx2(xs: [&[f32]; 2], group: &[bf16]) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let kp = xs[0].len();
    debug_assert!(kp.is_multiple_of(16) && group.len() == 4 * kp && xs[1].len() == kp);
    let z = _mm256_setzero_si256();
    let mut a = [[_mm256_setzero_ps(); 4]; 2];
    let mut p = group.as_ptr() as *const __m256i;
    let mut c = 0;
    while c < kp {
        // SAFETY: c + 16 <= kp: the x loads are in bounds; p walks the group's kp/16 blocks of
        // 4 x 32 bytes; prefetches may point past the end (they never fault).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES));
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES + 64));
            let x0l = _mm256_loadu_ps(xs[0].as_ptr().add(c));
            let x0h = _mm256_loadu_ps(xs[0].as_ptr().add(c + 8));
            let x1l = _mm256_loadu_ps(xs[1].as_ptr().add(c));
            let x1h = _mm256_loadu_ps(xs[1].as_ptr().add(c + 8));
            for j in 0..4 {
                let raw = _mm256_loadu_si256(p.add(j));
                let lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, raw));
                let hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, raw));
                a[0][j] = _mm256_fmadd_ps(x0l, lo, a[0][j]);
                a[1][j] = _mm256_fmadd_ps(x1l, lo, a[1][j]);
                a[0][j] = _mm256_fmadd_ps(x0h, hi, a[0][j]);
                a[1][j] = _mm256_fmadd_ps(x1h, hi, a[1][j]);
            }
            p = p.add(4);
        }
        c += 16;
    }
    hsum(&a)
}

/// A packed bf16 group (4 rows × kp) as a packed f32 group: each 16-column chunk becomes the two
/// 8-column f32 chunks its unpacks produce, so the f32 micro-kernel adds the same products in the
/// same order as the bf16 one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_group_bf16(group: &[bf16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(group.len(), out.len());
    let z = _mm256_setzero_si256();
    for (src, dst) in group.chunks_exact(4 * 16).zip(out.chunks_exact_mut(4 * 16)) {
        for j in 0..4 {
            // SAFETY: src holds 4 chunks of 16 bf16 (32 bytes each); dst 64 f32: chunk j's columns
            // 0..8 go to dst[8j..8j+8], columns 8..16 to dst[32 + 8j..32 + 8j + 8].
            unsafe {
                let raw = _mm256_loadu_si256(src.as_ptr().add(16 * j) as *const __m256i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(8 * j), _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, raw)));
                _mm256_storeu_ps(dst.as_mut_ptr().add(32 + 8 * j), _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, raw)));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn widen_group_bf16(_group: &[bf16], _out: &mut [f32]) {
    unreachable!("widening is only chosen with AVX2")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // j indexes the accumulators and the 4 weight rows together
unsafe fn dots_2x4_f32_avx2(xs: [&[f32]; 2], group: &[f32]) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let kp = xs[0].len();
    debug_assert!(kp.is_multiple_of(8) && group.len() == 4 * kp && xs[1].len() == kp);
    let mut a = [[_mm256_setzero_ps(); 4]; 2];
    let mut p = group.as_ptr();
    let mut c = 0;
    while c < kp {
        // SAFETY: c + 8 <= kp; p walks the group's kp/8 blocks of 4 x 8 floats.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES));
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES + 64));
            let x0 = _mm256_loadu_ps(xs[0].as_ptr().add(c));
            let x1 = _mm256_loadu_ps(xs[1].as_ptr().add(c));
            for j in 0..4 {
                let w = _mm256_loadu_ps(p.add(8 * j));
                a[0][j] = _mm256_fmadd_ps(x0, w, a[0][j]);
                a[1][j] = _mm256_fmadd_ps(x1, w, a[1][j]);
            }
            p = p.add(32);
        }
        c += 8;
    }
    hsum(&a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::linear::tests::naive_linear as naive;
    use proptest::prelude::*;

    fn packed<T: GemvElem>(w: &[T], n: usize, k: usize) -> Vec<T> {
        let mut p = vec![T::ZERO; packed_gemv_len::<T>(n, k)];
        pack_gemv(w, n, k, &mut p);
        p
    }

    proptest! {
        #[test]
        fn packing_round_trips(n in 1usize..13, k in 1usize..50, seed in any::<u64>()) {
            let w = crate::testing::random_f32(seed, n * k, 1.0);
            prop_assert_eq!(unpack_gemv(&packed(&w, n, k), n, k), w.clone());
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            prop_assert_eq!(unpack_gemv(&packed(&wb, n, k), n, k), wb);
        }

        #[test]
        fn packed_gemv_matches_naive(m in 1usize..9, n in 1usize..40, k in 1usize..70, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, m * k, 1.0);
            let w = crate::testing::random_f32(seed ^ 1, n * k, 1.0);
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
            for (got, want) in [
                ({ let mut o = vec![f32::NAN; m * n]; gemv_packed(&x, &packed(&w, n, k), &mut o, m, n, k); o }, naive(&x, &w, m, n, k)),
                ({ let mut o = vec![f32::NAN; m * n]; gemv_packed(&x, &packed(&wb, n, k), &mut o, m, n, k); o }, naive(&x, &wbf, m, n, k)),
            ] {
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{} vs {}", g, w);
                }
            }
        }
    }

    /// For whole chunks the packed GEMV gives the row-major GEMV's bits (same summation order),
    /// and each row's result is independent of the other rows (batch invariance), with and without SIMD.
    #[test]
    fn packed_gemv_is_bit_identical_to_the_row_major_gemv_and_batch_invariant() {
        for (m, n, k) in [(7, 45, 256), (33, 45, 256)] {
            bit_identity_case(m, n, k);
        }
    }

    fn bit_identity_case(m: usize, n: usize, k: usize) {
        let x = crate::testing::random_f32(11, m * k, 1.0);
        let w = crate::testing::random_f32(12, n * k, 1.0);
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut want = vec![0f32; m * n];
        crate::cpu::linear(&x, &w, &mut want, m, n, k);
        let mut got = vec![f32::NAN; m * n];
        gemv_packed(&x, &packed(&w, n, k), &mut got, m, n, k);
        if m <= 16 {
            assert_eq!(got, want, "f32"); // the row-major GEMV; above 16 rows `linear` takes the packed GEMM
        }
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "f32: {g} vs {w}");
        }
        crate::cpu::linear_bf16_weights(&x, &wb, &mut want, m, n, k);
        let pb = packed(&wb, n, k);
        gemv_packed(&x, &pb, &mut got, m, n, k);
        assert_eq!(got, want, "bf16");
        for i in 0..m {
            let mut alone = vec![f32::NAN; n];
            gemv_packed(&x[i * k..(i + 1) * k], &pb, &mut alone, 1, n, k);
            assert_eq!(alone, got[i * n..(i + 1) * n], "row {i} alone");
        }
        // the portable kernel (machines without AVX2) on its own, against the definition
        let group = &pb[..GEMV_GROUP * k];
        let scalar = dots_2x4_scalar([&x[..k], &x[k..2 * k]], group);
        for (r, row) in scalar.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let want: f64 = (0..k).map(|c| x[r * k + c] as f64 * wb[j * k + c].to_f32() as f64).sum();
                assert!((v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "scalar [{r}][{j}]: {v} vs {want}");
            }
        }
    }
}
