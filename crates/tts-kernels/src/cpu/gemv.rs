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

use super::isa::{self, Isa};
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

/// `out[m, n] = x[m, k] · wᵀ` with `w` `[n, k]` in the packed form ([`pack_gemv`]), on the selected
/// instruction path ([`isa::active`]): see [`gemv_packed_with`].
pub fn gemv_packed<T: GemvElem>(x: &[f32], wp: &[T], out: &mut [f32], m: usize, n: usize, k: usize) {
    gemv_packed_with(isa::active(), x, wp, out, m, n, k)
}

/// [`gemv_packed`] on the instruction path `isa` (a path this CPU lacks runs as the widest it has:
/// the paths nest). Parallel over groups of output columns; each task streams its groups once and
/// computes every input row against each group while it is in cache.
///
/// - f32 weights: f32 inputs, accumulation and output on every path. AVX2 and AVX-512F give the same
///   bits (AVX-512F holds two weight rows' 8-column chunks in one register and up to 8 input rows at
///   a time; each lane's sum is the AVX2 lane's, in the same order).
/// - bf16 weights, paths up to `avx512`: the weights are widened to f32, the rest as for f32
///   weights (the AVX2 order; with [`WIDEN_GROUP_MIN_ROWS`] rows or more a group is widened once,
///   and on `avx512` multiplied by the AVX-512F f32 kernel: the same bits).
/// - bf16 weights, path `avx512bf16`: each input row is rounded to bf16 once per call (round to
///   nearest even) and the pair products are summed in f32 by `vdpbf16ps`, up to 8 input rows per
///   pass over a weight block. Within the bf16 tolerance (~1e-2 relative) of the f32 result; not the
///   AVX2 bits.
///
/// Every path is batch-invariant: a row's result does not depend on the other rows.
pub fn gemv_packed_with<T: GemvElem>(isa: Isa, x: &[f32], wp: &[T], out: &mut [f32], m: usize, n: usize, k: usize) {
    use rayon::prelude::*;
    use std::any::TypeId;
    debug_assert!(x.len() >= m * k && wp.len() == packed_gemv_len::<T>(n, k) && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let isa = isa.min(Isa::best());
    let is_bf16 = TypeId::of::<T>() == TypeId::of::<bf16>();
    let kp = k.div_ceil(T::CHUNK) * T::CHUNK;
    let group_len = GEMV_GROUP * kp;
    let dst = SharedOut(out.as_mut_ptr());
    let per_task = n.div_ceil(GEMV_GROUP).div_ceil(TASKS_PER_THREAD * rayon::current_num_threads()).max(MIN_GROUPS_PER_TASK);
    let write = |i: usize, j0: usize, acc: &[f32; 4]| {
        for (jj, &v) in acc.iter().enumerate() {
            if j0 + jj < n {
                // SAFETY: (i, j0 + jj) is inside out[m, n]; the calling task owns columns j0..j0+4
                // of every row.
                unsafe { *dst.ptr().add(i * n + j0 + jj) = v };
            }
        }
    };
    #[cfg(target_arch = "x86_64")]
    if is_bf16 && isa.allows(Isa::Avx512Bf16) {
        let xb = bf16_rows_permuted(x, m, k, kp);
        // SAFETY: T is bf16 (checked above).
        let wb = unsafe { std::slice::from_raw_parts(wp.as_ptr() as *const bf16, wp.len()) };
        wb.par_chunks(group_len * per_task).enumerate().for_each(|(t, groups)| {
            for (gg, group) in groups.chunks_exact(group_len).enumerate() {
                let j0 = (t * per_task + gg) * GEMV_GROUP;
                for i0 in (0..m).step_by(MAX_BLOCK_ROWS) {
                    let rows = (m - i0).min(MAX_BLOCK_ROWS);
                    let mut acc = [[0f32; 4]; MAX_BLOCK_ROWS];
                    // SAFETY: the CPU has AVX-512 BF16 (isa was clamped to the best supported path);
                    // xb holds m rows of kp bf16 and the group 4 rows of kp.
                    unsafe { dots_bf16_dp(&xb[i0 * kp..(i0 + rows) * kp], kp, group, &mut acc[..rows]) };
                    for (r, a) in acc[..rows].iter().enumerate() {
                        write(i0 + r, j0, a);
                    }
                }
            }
        });
        return;
    }
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
    let simd = isa.allows(Isa::Avx2);
    let wide512 = isa.allows(Isa::Avx512);
    let widen = simd && is_bf16 && m >= WIDEN_GROUP_MIN_ROWS;
    wp.par_chunks(group_len * per_task).enumerate().for_each(|(t, groups)| {
        let mut wide = if widen { vec![0f32; group_len] } else { Vec::new() };
        for (gg, group) in groups.chunks_exact(group_len).enumerate() {
            let j0 = (t * per_task + gg) * GEMV_GROUP;
            if widen {
                // SAFETY: T is bf16 (checked above); AVX2 present (`simd`).
                unsafe { widen_group_bf16(std::slice::from_raw_parts(group.as_ptr() as *const bf16, group.len()), &mut wide) };
            }
            // f32 weights (or a widened group) on AVX-512F: up to 8 rows per pass
            #[cfg(target_arch = "x86_64")]
            if wide512 && (widen || !is_bf16) {
                // SAFETY: T is f32 when the group is not widened (is_bf16 is false then).
                let g: &[f32] =
                    if widen { &wide } else { unsafe { std::slice::from_raw_parts(group.as_ptr() as *const f32, group.len()) } };
                for i0 in (0..m).step_by(MAX_BLOCK_ROWS) {
                    let rows = (m - i0).min(MAX_BLOCK_ROWS);
                    let mut acc = [[0f32; 4]; MAX_BLOCK_ROWS];
                    // SAFETY: the CPU has AVX-512F (isa was clamped to the best supported path); x
                    // holds m padded rows of kp, g 4 rows of kp.
                    unsafe { dots_f32_avx512(&x[i0 * kp..(i0 + rows) * kp], kp, g, &mut acc[..rows]) };
                    for (r, a) in acc[..rows].iter().enumerate() {
                        write(i0 + r, j0, a);
                    }
                }
                continue;
            }
            for i0 in (0..m).step_by(2) {
                let i1 = (i0 + 1).min(m - 1);
                let xs = [&x[i0 * kp..(i0 + 1) * kp], &x[i1 * kp..(i1 + 1) * kp]];
                let acc = if widen { f32::dots_2x4(xs, &wide, simd) } else { T::dots_2x4(xs, group, simd) };
                write(i0, j0, &acc[0]);
                if i1 != i0 {
                    write(i1, j0, &acc[1]);
                }
            }
        }
    });
    let _ = wide512;
}

/// Input rows per pass of the AVX-512 kernels over a weight group (register blocking: 2 zmm
/// accumulators per row, 16 in all).
const MAX_BLOCK_ROWS: usize = 8;

/// The `m` rows of `x[m, k]` rounded to bf16 (round to nearest even), zero-padded to `kp` columns,
/// each 16-column chunk in the packed weights' stored order ([`GemvElem::stored_at`]), so that a
/// 32-byte load of a row's chunk pairs its elements with the weight chunk's.
#[cfg(target_arch = "x86_64")]
fn bf16_rows_permuted(x: &[f32], m: usize, k: usize, kp: usize) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; m * kp];
    for i in 0..m {
        // SAFETY: only called on the avx512bf16 path, which the CPU has (the caller clamps).
        unsafe { round_row_bf16(&x[i * k..(i + 1) * k], &mut out[i * kp..(i + 1) * kp]) };
    }
    out
}

/// One row of [`bf16_rows_permuted`]: `src` (k f32) into `dst` (kp bf16, kp a multiple of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_row_bf16(src: &[f32], dst: &mut [bf16]) {
    use std::arch::x86_64::*;
    let k = src.len();
    debug_assert!(dst.len().is_multiple_of(16) && dst.len() >= k);
    // stored position s holds chunk column stored_at(s) (stored_at swaps columns 4..8 and 8..12:
    // its own inverse)
    let perm = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
    let load = |c: usize| -> __m512 {
        let take = k.saturating_sub(c).min(16);
        let mask: __mmask16 = if take == 16 { 0xffff } else { (1u16 << take) - 1 };
        // SAFETY: the mask covers only columns c..c+take < k.
        _mm512_permutexvar_ps(perm, unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(c.min(k))) })
    };
    let chunks = dst.len() / 16;
    let mut q = 0;
    while q + 2 <= chunks {
        let (a, b) = (load(16 * q), load(16 * (q + 1)));
        // cvtne2ps(hi, lo): the low 16 bf16 come from the second operand
        // SAFETY: 32 bf16 are 64 bytes either way; the store writes chunks q, q + 1 < chunks.
        unsafe {
            let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
            _mm512_storeu_si512(dst.as_mut_ptr().add(16 * q) as *mut __m512i, v);
        }
        q += 2;
    }
    if q < chunks {
        // SAFETY: 16 bf16 are 32 bytes either way; the store writes the last chunk.
        unsafe {
            let v = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(load(16 * q)));
            _mm256_storeu_si256(dst.as_mut_ptr().add(16 * q) as *mut __m256i, v);
        }
    }
}

/// `acc[r][j]` = the dot product of bf16 input row `r` of `xb` (rows of `kp`, in stored order) with
/// the packed bf16 group's weight row `j`, by `vdpbf16ps`: lane `l` of a row's accumulator sums the
/// pairs at stored positions `2l, 2l+1` (lanes 0..8: weight rows 0 and 2, lanes 8..16: rows 1
/// and 3) chunk after chunk; the 8 lanes of a weight row are then added left to right.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dots_bf16_dp(xb: &[bf16], kp: usize, group: &[bf16], acc: &mut [[f32; 4]]) {
    macro_rules! rows {
        ($($r:literal),*) => {
            match acc.len() {
                $($r => unsafe { dots_bf16_dp_rows::<$r>(xb, kp, group, acc) },)*
                _ => unreachable!("1..=8 rows per block"),
            }
        };
    }
    rows!(1, 2, 3, 4, 5, 6, 7, 8)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::needless_range_loop)] // r indexes the accumulators and the input rows together
unsafe fn dots_bf16_dp_rows<const R: usize>(xb: &[bf16], kp: usize, group: &[bf16], acc: &mut [[f32; 4]]) {
    use std::arch::x86_64::*;
    debug_assert!(kp.is_multiple_of(16) && group.len() == 4 * kp && xb.len() == R * kp && acc.len() == R);
    let mut a = [[_mm512_setzero_ps(); 2]; R];
    let mut p = group.as_ptr() as *const __m512i;
    let xp = xb.as_ptr();
    let mut c = 0;
    while c < kp {
        // SAFETY: c + 16 <= kp: each row's 16 bf16 at c are in bounds; p walks the group's kp/16
        // blocks of 2 x 64 bytes (rows 0-1, then 2-3); prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES));
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES + 64));
            let w01: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p));
            let w23: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.add(1)));
            for r in 0..R {
                let xr = _mm512_broadcast_i64x4(_mm256_loadu_si256(xp.add(r * kp + c) as *const __m256i));
                let xr: __m512bh = std::mem::transmute::<__m512i, __m512bh>(xr);
                a[r][0] = _mm512_dpbf16_ps(a[r][0], xr, w01);
                a[r][1] = _mm512_dpbf16_ps(a[r][1], xr, w23);
            }
            p = p.add(2);
        }
        c += 16;
    }
    for r in 0..R {
        acc[r] = hsum_pairs(&a[r]);
    }
}

/// The four weight rows' sums of two 16-lane accumulators holding rows (0, 1) and (2, 3) in their
/// lower and upper 8 lanes, each 8 lanes added left to right (the AVX2 kernels' order).
#[cfg(target_arch = "x86_64")]
fn hsum_pairs(a: &[std::arch::x86_64::__m512; 2]) -> [f32; 4] {
    // SAFETY: __m512 is 16 f32 lanes; a plain reinterpretation of the register's bytes.
    let l: [[f32; 16]; 2] = a.map(|v| unsafe { std::mem::transmute::<std::arch::x86_64::__m512, [f32; 16]>(v) });
    let s = |v: &[f32]| v.iter().sum::<f32>();
    [s(&l[0][..8]), s(&l[0][8..]), s(&l[1][..8]), s(&l[1][8..])]
}

/// `acc[r][j]` = the dot product of padded f32 input row `r` of `x` (rows of `kp`) with the packed
/// f32 group's weight row `j`: the AVX2 kernel's sums with two weight rows per register (one
/// 8-column chunk of rows 0-1, then 2-3, the input chunk broadcast to both halves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,fma")]
unsafe fn dots_f32_avx512(x: &[f32], kp: usize, group: &[f32], acc: &mut [[f32; 4]]) {
    macro_rules! rows {
        ($($r:literal),*) => {
            match acc.len() {
                $($r => unsafe { dots_f32_avx512_rows::<$r>(x, kp, group, acc) },)*
                _ => unreachable!("1..=8 rows per block"),
            }
        };
    }
    rows!(1, 2, 3, 4, 5, 6, 7, 8)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,fma")]
#[allow(clippy::needless_range_loop)] // r indexes the accumulators and the input rows together
unsafe fn dots_f32_avx512_rows<const R: usize>(x: &[f32], kp: usize, group: &[f32], acc: &mut [[f32; 4]]) {
    use std::arch::x86_64::*;
    debug_assert!(kp.is_multiple_of(8) && group.len() == 4 * kp && x.len() == R * kp && acc.len() == R);
    let mut a = [[_mm512_setzero_ps(); 2]; R];
    let mut p = group.as_ptr();
    let xp = x.as_ptr();
    let mut c = 0;
    while c < kp {
        // SAFETY: c + 8 <= kp: each row's 8 floats at c are in bounds; p walks the group's kp/8
        // blocks of 32 floats; prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES));
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_BYTES + 64));
            let w01 = _mm512_loadu_ps(p);
            let w23 = _mm512_loadu_ps(p.add(16));
            for r in 0..R {
                let xr = _mm512_broadcast_f32x8(_mm256_loadu_ps(xp.add(r * kp + c)));
                a[r][0] = _mm512_fmadd_ps(xr, w01, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(xr, w23, a[r][1]);
            }
            p = p.add(32);
        }
        c += 8;
    }
    for r in 0..R {
        acc[r] = hsum_pairs(&a[r]);
    }
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

        /// Every supported path against f64 references, odd shapes included (n, k not multiples of
        /// 4, 8, 16 or 32; k = 1; 1..17 rows), into NaN-poisoned outputs.
        #[test]
        fn packed_gemv_matches_f64_references_on_every_path(m in 1usize..18, n in 1usize..40, k in 1usize..70, seed in any::<u64>()) {
            let x = crate::testing::random_f32(seed, m * k, 1.0);
            let w = crate::testing::random_f32(seed ^ 1, n * k, 1.0);
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
            let xbf: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
            // Σ|x·w| per output: the scale of the rounding errors
            let scale = naive(&abs(&x), &abs(&wbf), m, n, k);
            let (pw, pb) = (packed(&w, n, k), packed(&wb, n, k));
            for isa in Isa::supported_paths() {
                let got = run(isa, &x, &pw, m, n, k);
                for (g, w) in got.iter().zip(&naive(&x, &w, m, n, k)) {
                    prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{isa} f32: {g} vs {w}");
                }
                let got = run(isa, &x, &pb, m, n, k);
                let exact = naive(&x, &wbf, m, n, k);
                if isa.allows(Isa::Avx512Bf16) {
                    // the products of the bf16-rounded inputs, summed in f32: tight; and within
                    // the bf16 tolerance of the f32 inputs' products
                    for ((g, w), s) in got.iter().zip(&naive(&xbf, &wbf, m, n, k)).zip(&scale) {
                        prop_assert!((*g as f64 - w).abs() <= 1e-6 * (1.0 + s), "{isa} bf16 inputs: {g} vs {w}");
                    }
                    for ((g, w), s) in got.iter().zip(&exact).zip(&scale) {
                        prop_assert!((*g as f64 - w).abs() <= 1e-2 * (1e-3 + s), "{isa} vs f32 inputs: {g} vs {w}");
                    }
                } else {
                    for (g, w) in got.iter().zip(&exact) {
                        prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{isa} bf16 weights: {g} vs {w}");
                    }
                }
            }
        }
    }

    /// `gemv_packed_with(isa, ..)` into a NaN-filled output.
    fn run<T: GemvElem>(isa: Isa, x: &[f32], wp: &[T], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut o = vec![f32::NAN; m * n];
        gemv_packed_with(isa, x, wp, &mut o, m, n, k);
        o
    }

    /// Each path the CPU lacks is named, with the feature it lacks.
    #[test]
    fn every_path_is_tested_or_named_as_skipped() {
        for isa in crate::cpu::isa::ALL_ISAS {
            match isa.missing_feature() {
                None => assert!(Isa::supported_paths().contains(&isa)),
                Some(f) => println!("skipped {isa}: this CPU lacks {f}"),
            }
        }
    }

    /// For whole chunks the packed GEMV gives the row-major GEMV's bits on AVX2 (same summation
    /// order), and the AVX-512F path gives the AVX2 bits (f32 weights, and bf16 weights below and
    /// above the widening threshold); on every path each row's result is independent of the other
    /// rows (batch invariance).
    #[test]
    fn packed_gemv_is_bit_identical_to_the_row_major_gemv_and_batch_invariant() {
        let seed = crate::testing::fresh_seed();
        for (m, n, k) in [(7, 45, 256), (33, 45, 256), (17, 9, 48)] {
            bit_identity_case(seed, m, n, k);
        }
    }

    fn bit_identity_case(seed: u64, m: usize, n: usize, k: usize) {
        let x = crate::testing::random_f32(seed, m * k, 1.0);
        let w = crate::testing::random_f32(seed ^ 12, n * k, 1.0);
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let (pw, pb) = (packed(&w, n, k), packed(&wb, n, k));
        let paths = Isa::supported_paths();
        if paths.contains(&Isa::Avx2) && super::super::linear::simd_available() {
            let mut want = vec![0f32; m * n];
            crate::cpu::linear(&x, &w, &mut want, m, n, k);
            let got = run(Isa::Avx2, &x, &pw, m, n, k);
            if m <= 16 {
                assert_eq!(got, want, "f32, seed {seed}"); // above 16 rows `linear` takes the packed GEMM
            }
            crate::cpu::linear_bf16_weights(&x, &wb, &mut want, m, n, k);
            assert_eq!(run(Isa::Avx2, &x, &pb, m, n, k), want, "bf16, seed {seed}");
            if paths.contains(&Isa::Avx512) {
                assert_eq!(run(Isa::Avx512, &x, &pw, m, n, k), got, "avx512 f32, seed {seed}");
                assert_eq!(run(Isa::Avx512, &x, &pb, m, n, k), want, "avx512 bf16, seed {seed}");
                assert_eq!(run(Isa::Avx512Bf16, &x, &pw, m, n, k), got, "avx512bf16 f32 weights, seed {seed}");
            }
        }
        for isa in paths {
            for (name, batch) in [("f32", run(isa, &x, &pw, m, n, k)), ("bf16", run(isa, &x, &pb, m, n, k))] {
                for i in 0..m {
                    let xi = &x[i * k..(i + 1) * k];
                    let alone = if name == "f32" { run(isa, xi, &pw, 1, n, k) } else { run(isa, xi, &pb, 1, n, k) };
                    assert_eq!(alone, batch[i * n..(i + 1) * n], "{isa} {name}: row {i} alone, seed {seed}");
                }
            }
        }
        // the portable kernel on its own, against the definition
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
