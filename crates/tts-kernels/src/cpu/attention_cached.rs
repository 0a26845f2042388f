//! Attention of decode rows over their KV-cache slots ([`attention_cached`]): T3's decode step and
//! its causal prefill on the Cpu backend. Mirrors `attention_cached` in `kernels/attention.cu`.
//!
//! KV caches are `[n_slots, heads, max_len, head_dim]` of f32 (`cpu`) or bf16 (`cpu-bf16`): one slot
//! per sequence, one row of `head_dim` values per position.

use rayon::prelude::*;

use super::bad_row::{BadRow, RowValue};
use super::kv_value::KvValue;

/// Softmax attention of one query over `keys` rows of `k` / `v` (row stride `stride`, head offset
/// already applied), written to `out` (d values). Scores `scale · q·k` in f32 (each dot product in
/// 16 lane sums, `c ≡ l mod 16`, then the lanes pairwise, then the tail), max-subtracted
/// softmax (the fast exp and lane sums of `fastmath::exp_sub_sum_inplace`), f32 sums; each output
/// value four chains over the keys (`cached_weighted_values`). No fused multiply-adds, and the
/// AVX-512F and AVX2 kernels (`x86`, chosen by [`super::isa::active`]) take these very sums in this
/// order, so they and the portable loops give the same bits. `scores` is scratch of at least `keys`
/// values.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_one<T: KvValue>(
    q: &[f32],
    k: &[T],
    v: &[T],
    keys: usize,
    stride: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::isa::Isa;
        let isa = super::isa::active();
        if isa.allows(Isa::Avx512) {
            // SAFETY: the selected path is runnable on this CPU (it has AVX-512F).
            return unsafe { attend_one_avx512(q, k, v, keys, stride, scale, scores, out) };
        }
        if isa.allows(Isa::Avx2) {
            // SAFETY: as above, AVX2.
            return unsafe { attend_one_avx2(q, k, v, keys, stride, scale, scores, out) };
        }
    }
    attend_one_lanes(q, k, v, keys, stride, scale, scores, out)
}

/// [`attend_one`] on an x86 path: `$name` runs the `x86` kernels `$dots` and `$weighted` around the
/// shared softmax.
macro_rules! attend_one_x86 {
    ($feature:literal, $name:ident, $dots:ident, $weighted:ident) => {
        /// # Safety
        /// The CPU has the target feature; `k` and `v` hold `keys` rows of stride `stride` with
        /// `q.len() = out.len()` values each.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<T: KvValue>(
            q: &[f32],
            k: &[T],
            v: &[T],
            keys: usize,
            stride: usize,
            scale: f32,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            if keys == 0 {
                out.fill(0.0);
                return;
            }
            scores.clear();
            scores.resize(keys, 0.0);
            // SAFETY: this function's contract (attend_one's callers slice k and v so).
            unsafe {
                x86::$dots(q, k, keys, stride, scale, scores);
                let sum = softmax_in_place(scores);
                x86::$weighted(scores, v, stride, out);
                normalize(out, sum);
            }
        }
    };
}

attend_one_x86!("avx512f", attend_one_avx512, dots_512, weighted_512);
attend_one_x86!("avx2", attend_one_avx2, dots_256, weighted_256);

/// The portable body of [`attend_one`], written for the vectoriser (plain multiplies and adds in
/// lanes); the x86 kernels take its sums in its order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_one_lanes<T: KvValue>(
    q: &[f32],
    k: &[T],
    v: &[T],
    keys: usize,
    stride: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = q.len();
    out.fill(0.0);
    if keys == 0 {
        return;
    }
    // plain loops, written for the vectoriser (this is the path of CPUs without AVX2, aarch64
    // included)
    scores.clear();
    scores.resize(keys, 0.0);
    // four keys at a time: independent chains (each key's sums as dot_lanes' own)
    let mut quads = scores.chunks_exact_mut(4);
    for (g, sc) in (&mut quads).enumerate() {
        let row = |i: usize| &k[(4 * g + i) * stride..(4 * g + i) * stride + d];
        let dots = dot4_lanes(q, [row(0), row(1), row(2), row(3)]);
        for (x, dot) in sc.iter_mut().zip(dots) {
            *x = scale * dot;
        }
    }
    let done = keys / 4 * 4;
    for (i, sc) in quads.into_remainder().iter_mut().enumerate() {
        *sc = scale * dot_lanes(q, &k[(done + i) * stride..(done + i) * stride + d]);
    }
    let sum = softmax_in_place(scores);
    cached_weighted_values(scores, v, stride, out);
    normalize(out, sum);
}

/// The scores replaced by `exp(score − max)`, their sum returned: the 8-lane AVX2+FMA exp (≤ 2
/// ulp) where the CPU has it, f32::exp otherwise (the dense attention's softmax), summed in the same
/// pass.
#[inline(always)]
fn softmax_in_place(scores: &mut [f32]) -> f32 {
    let m = max_lanes(scores);
    super::fastmath::exp_sub_sum_inplace(scores, m)
}

/// `out *= 1 / sum`.
#[inline(always)]
fn normalize(out: &mut [f32], sum: f32) {
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `out[c] = Σ_j w[j]·v[j, c]`: four chains per output value (key `j` into chain `j mod 4`, each in
/// key order from zero), then `(c0 + c1) + (c2 + c3)`. Four chains, not one, because one add per
/// key and column waited on the previous key's (the latency bound of the decode attention). Head
/// dims 64 (T3's) and 128 take a copy of the loop with the dim known at compile time, whose
/// accumulators stay in registers; the same operations in the same order.
#[inline(always)]
fn cached_weighted_values<T: KvValue>(w: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
    match out.len() {
        64 => weighted_values_fixed::<T, 64>(w, v, stride, out),
        128 => weighted_values_fixed::<T, 128>(w, v, stride, out),
        d => {
            let mut acc = [vec![0f32; d], vec![0f32; d], vec![0f32; d], vec![0f32; d]];
            for (j, &wj) in w.iter().enumerate() {
                for (a, x) in acc[j % 4].iter_mut().zip(&v[j * stride..j * stride + d]) {
                    *a += wj * x.widen();
                }
            }
            for (c, o) in out.iter_mut().enumerate() {
                *o = (acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c]);
            }
        }
    }
}

/// [`cached_weighted_values`] for `out.len() == D`.
#[inline(always)]
fn weighted_values_fixed<T: KvValue, const D: usize>(w: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; D], [0f32; D], [0f32; D], [0f32; D]);
    let quads = w.len() / 4;
    for g in 0..quads {
        let j = 4 * g;
        let (r0, r1) = (&v[j * stride..][..D], &v[(j + 1) * stride..][..D]);
        let (r2, r3) = (&v[(j + 2) * stride..][..D], &v[(j + 3) * stride..][..D]);
        let (w0, w1, w2, w3) = (w[j], w[j + 1], w[j + 2], w[j + 3]);
        for c in 0..D {
            a0[c] += w0 * r0[c].widen();
            a1[c] += w1 * r1[c].widen();
            a2[c] += w2 * r2[c].widen();
            a3[c] += w3 * r3[c].widen();
        }
    }
    for (i, &wj) in w[4 * quads..].iter().enumerate() {
        let row = &v[(4 * quads + i) * stride..][..D];
        let a = match i {
            0 => &mut a0,
            1 => &mut a1,
            _ => &mut a2,
        };
        for c in 0..D {
            a[c] += wj * row[c].widen();
        }
    }
    for (c, o) in out[..D].iter_mut().enumerate() {
        *o = (a0[c] + a1[c]) + (a2[c] + a3[c]);
    }
}

/// The largest of `x` (NaNs ignored, as by `f32::max`; −∞ when empty), in 16 lanes: the same value
/// as a left-to-right `max` (a maximum does not depend on the order, and `x − m` is the same for
/// `m = ±0`), without its chain of dependent compares.
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut h = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            h[l] = h[l].max(c[l]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in h.into_iter().chain(rest.iter().copied()) {
        m = m.max(v);
    }
    m
}

/// The 16 lane sums added pairwise: lane `l` and `l + 8`, then `+ 4`, `+ 2`, `+ 1` (four dependent
/// adds, where left to right took sixteen: the decode attention's score loop waited on them).
#[inline(always)]
fn lane_tree(h: [f32; 16]) -> f32 {
    let h8: [f32; 8] = std::array::from_fn(|l| h[l] + h[l + 8]);
    let h4: [f32; 4] = std::array::from_fn(|l| h8[l] + h8[l + 4]);
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

/// [`dot_lanes`] of `a` with each of four rows (the same operations for each, interleaved).
#[inline(always)]
fn dot4_lanes<T: KvValue>(a: &[f32], b: [&[T]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 16]; 4];
    let whole = a.len() / 16;
    for c in 0..whole {
        let x = &a[16 * c..][..16];
        for (accr, br) in acc.iter_mut().zip(&b) {
            let y = &br[16 * c..][..16];
            for l in 0..16 {
                accr[l] += x[l] * y[l].widen();
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, accr), br) in out.iter_mut().zip(&acc).zip(&b) {
        let mut s = lane_tree(*accr);
        for (x, y) in a[16 * whole..].iter().zip(&br[16 * whole..]) {
            s += x * y.widen();
        }
        *o = s;
    }
    out
}

/// `Σ a[c]·b[c]` in 16 lane sums (lane `l` sums `c ≡ l mod 16` over the whole groups of 16, in
/// order), the lanes added pairwise ([`lane_tree`]), then the tail in order.
#[inline(always)]
fn dot_lanes<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l].widen();
        }
    }
    let mut s = lane_tree(acc);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y.widen();
    }
    s
}

/// Attention of each row's query over its KV-cache slot:
/// `out[r, h] = softmax(scale · q[r, h] · K[s, h, 0..len]ᵀ) · V[s, h, 0..len]` with `s = slots[r]`,
/// `len = lens[r]`. `len == 0` is an inactive row: its output is zeros (its slot is not looked at).
///
/// `q`, `out`: [rows, heads·d]; caches [n_slots, heads, max_len, d] of f32 or bf16 ([`KvValue`]:
/// each key and value widened exactly where it is read, the same arithmetic as for f32 caches of the
/// widened values, bit for bit). Every row is checked first:
/// returns the first (row, what, value) with `len` outside `0..=max_len` or (for `len > 0`) a slot
/// outside `0..n_slots`; nothing is written then.
#[allow(clippy::too_many_arguments)]
pub fn attention_cached<T: KvValue>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    slots: &[i32],
    lens: &[i32],
    out: &mut [f32],
    heads: usize,
    d: usize,
    max_len: usize,
    scale: f32,
) -> Result<(), BadRow> {
    let hd = heads * d;
    if hd == 0 || max_len == 0 {
        return Ok(());
    }
    let n_slots = k_cache.len() / (hd * max_len);
    for (r, (&len, &s)) in lens.iter().zip(slots).enumerate() {
        if len < 0 || len as usize > max_len {
            return Err((r, RowValue::Length, len));
        }
        if len > 0 && (s < 0 || s as usize >= n_slots) {
            return Err((r, RowValue::Slot, s));
        }
    }
    let rows = lens.len().min(q.len() / hd);
    // one task per (row, head): each writes its own head's values of its row
    let attend = |task: usize, o: &mut [f32], scores: &mut Vec<f32>| {
        let (r, h) = (task / heads, task % heads);
        let len = lens[r] as usize;
        if len == 0 {
            o.fill(0.0); // an inactive row: its slot may be anything
            return;
        }
        let at = (slots[r] as usize * heads + h) * max_len * d;
        let (k, v) = (&k_cache[at..at + len * d], &v_cache[at..at + len * d]);
        attend_one(&q[r * hd + h * d..][..d], k, v, len, d, scale, scores, o);
    };
    let out = &mut out[..rows * hd];
    let work: usize = lens[..rows].iter().map(|&l| l as usize * hd).sum();
    if rows * heads > 1 && work >= CACHED_PARALLEL_MIN_WORK {
        out.par_chunks_mut(d).enumerate().for_each_init(Vec::new, |scores, (t, o)| attend(t, o, scores));
    } else {
        let mut scores = Vec::new();
        out.chunks_mut(d).enumerate().for_each(|(t, o)| attend(t, o, &mut scores));
    }
    Ok(())
}

/// Multiply-adds (keys × width over the rows) from which [`attention_cached`] splits its (row, head)
/// pairs over rayon's threads: about 50 µs on one core.
const CACHED_PARALLEL_MIN_WORK: usize = 1 << 18;

/// The AVX-512F and AVX2 kernels of [`attend_one`]: the portable loops' operations, in their order,
/// written with intrinsics (the vectoriser kept the 16 lane sums of each key in memory and re-read
/// them in pieces, and the decode attention ran at ~5 GFLOP/s).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KvValue;
    use std::arch::x86_64::*;

    /// 16 values at `p` as f32 (bf16 widened: its bits moved up by 16).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16<T: KvValue>(p: *const T) -> __m512 {
        // SAFETY: the caller's pointer holds 16 elements.
        unsafe {
            if T::BF16 {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
            } else {
                _mm512_loadu_ps(p.cast())
            }
        }
    }

    /// 8 values at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8<T: KvValue>(p: *const T) -> __m256 {
        // SAFETY: the caller's pointer holds 8 elements.
        unsafe {
            if T::BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))))
            } else {
                _mm256_loadu_ps(p.cast())
            }
        }
    }

    /// `lane_tree`'s last steps from `h8[l] = h[l] + h[l + 8]`: `h4 = h8[..4] + h8[4..]`, then
    /// `(h4[0] + h4[2]) + (h4[1] + h4[3])`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn tree8(h8: __m256) -> f32 {
        let h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps::<1>(h8));
        let t = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)))
    }

    /// `lane_tree` of 16 lane sums: `h8[l] = h[l] + h[l + 8]`, then [`tree8`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn tree16(h: __m512) -> f32 {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(h)));
        tree8(_mm256_add_ps(_mm512_castps512_ps256(h), hi))
    }

    /// The tail of a dot product past its whole groups of 16, in order (as `dot_lanes`).
    ///
    /// # Safety
    /// `row` holds `q.len()` elements.
    #[inline(always)]
    unsafe fn dot_tail<T: KvValue>(mut s: f32, q: &[f32], row: *const T, from: usize) -> f32 {
        for (c, &x) in q.iter().enumerate().skip(from) {
            // SAFETY: c < q.len() (the caller's contract).
            s += x * unsafe { *row.add(c) }.widen();
        }
        s
    }

    /// `scores[j] = scale · dot_lanes(q, k row j)` for `j < keys`.
    ///
    /// # Safety
    /// AVX-512F present; `k` holds `keys` rows of stride `stride` with `q.len()` elements each;
    /// `scores` at least `keys` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_512<T: KvValue>(q: &[f32], k: &[T], keys: usize, stride: usize, scale: f32, scores: &mut [f32]) {
        let groups = q.len() / 16;
        // SAFETY (whole body): rows j < keys of k and groups of 16 inside q.len() (contract).
        unsafe {
            // four keys at a time: independent chains, each key's sums in its own order
            let quads = keys / 4;
            for (g4, sc) in scores.chunks_exact_mut(4).take(quads).enumerate() {
                let rows: [*const T; 4] = std::array::from_fn(|i| k.as_ptr().add((4 * g4 + i) * stride));
                let mut acc = [_mm512_setzero_ps(); 4];
                for g in 0..groups {
                    let x = _mm512_loadu_ps(q.as_ptr().add(16 * g));
                    for (a, row) in acc.iter_mut().zip(rows) {
                        *a = _mm512_add_ps(*a, _mm512_mul_ps(x, load16(row.add(16 * g))));
                    }
                }
                for ((o, a), row) in sc.iter_mut().zip(acc).zip(rows) {
                    *o = scale * dot_tail(tree16(a), q, row, 16 * groups);
                }
            }
            for (j, sc) in scores.iter_mut().enumerate().take(keys).skip(4 * quads) {
                let row = k.as_ptr().add(j * stride);
                let mut acc = _mm512_setzero_ps();
                for g in 0..groups {
                    let x = _mm512_loadu_ps(q.as_ptr().add(16 * g));
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(x, load16(row.add(16 * g))));
                }
                *sc = scale * dot_tail(tree16(acc), q, row, 16 * groups);
            }
        }
    }

    /// [`dots_512`] with the 16 lanes as two 8-lane halves.
    ///
    /// # Safety
    /// As [`dots_512`], with AVX2 present.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots_256<T: KvValue>(q: &[f32], k: &[T], keys: usize, stride: usize, scale: f32, scores: &mut [f32]) {
        let groups = q.len() / 16;
        // SAFETY (whole body): as dots_512.
        unsafe {
            for (j, sc) in scores.iter_mut().enumerate().take(keys) {
                let row = k.as_ptr().add(j * stride);
                let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for g in 0..groups {
                    let (x0, x1) = (_mm256_loadu_ps(q.as_ptr().add(16 * g)), _mm256_loadu_ps(q.as_ptr().add(16 * g + 8)));
                    lo = _mm256_add_ps(lo, _mm256_mul_ps(x0, load8(row.add(16 * g))));
                    hi = _mm256_add_ps(hi, _mm256_mul_ps(x1, load8(row.add(16 * g + 8))));
                }
                let s = tree8(_mm256_add_ps(lo, hi));
                *sc = scale * dot_tail(s, q, row, 16 * groups);
            }
        }
    }

    /// The columns `from..` of `cached_weighted_values` one at a time (its chains and order).
    ///
    /// # Safety
    /// `v` holds `w.len()` rows of stride `stride` with `out.len()` elements each.
    #[inline(always)]
    unsafe fn weighted_tail<T: KvValue>(w: &[f32], v: &[T], stride: usize, out: &mut [f32], from: usize) {
        for (c, o) in out.iter_mut().enumerate().skip(from) {
            let mut a = [0f32; 4];
            for (j, &wj) in w.iter().enumerate() {
                // SAFETY: row j < w.len(), column c < out.len() (contract).
                a[j % 4] += wj * unsafe { *v.as_ptr().add(j * stride + c) }.widen();
            }
            *o = (a[0] + a[1]) + (a[2] + a[3]);
        }
    }

    /// `cached_weighted_values` over vectors of `$lanes` f32 (`$vec`, its intrinsics named), in
    /// two functions: `$block` (blocks of `$lanes·B` columns, four chains each) and `$all` (blocks
    /// of `2·$lanes`, then `$lanes`, then the tail one column at a time).
    macro_rules! weighted_kernels {
        ($feature:literal, $block:ident, $all:ident, $lanes:literal, $zero:ident, $set1:ident, $add:ident, $mul:ident,
         $store:ident, $load:ident) => {
            /// `cached_weighted_values` on one block of columns `c0..c0 + lanes·B`.
            ///
            /// # Safety
            /// The CPU has the target feature; `v` holds `w.len()` rows of stride `stride` with
            /// `out.len() ≥ c0 + lanes·B` elements each.
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn $block<T: KvValue, const B: usize>(w: &[f32], v: &[T], stride: usize, out: &mut [f32], c0: usize) {
                // SAFETY (whole body): columns c0..c0 + lanes·B ≤ out.len() of rows < w.len().
                unsafe {
                    let mut a = [[$zero(); B]; 4];
                    let quads = w.len() / 4;
                    let mut add_row = |i: usize, j: usize| {
                        let (wj, row) = ($set1(w[j]), v.as_ptr().add(j * stride + c0));
                        for (b, acc) in a[i].iter_mut().enumerate() {
                            *acc = $add(*acc, $mul(wj, $load(row.add($lanes * b))));
                        }
                    };
                    for g in 0..quads {
                        for i in 0..4 {
                            add_row(i, 4 * g + i);
                        }
                    }
                    for i in 0..w.len() - 4 * quads {
                        add_row(i, 4 * quads + i);
                    }
                    let [a0, a1, a2, a3] = a;
                    for (b, (((x0, x1), x2), x3)) in a0.into_iter().zip(a1).zip(a2).zip(a3).enumerate() {
                        $store(out.as_mut_ptr().add(c0 + $lanes * b), $add($add(x0, x1), $add(x2, x3)));
                    }
                }
            }

            /// `cached_weighted_values` on every column of `out`.
            ///
            /// # Safety
            /// The CPU has the target feature; `v` holds `w.len()` rows of stride `stride` with
            /// `out.len()` elements each.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $all<T: KvValue>(w: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
                let d = out.len();
                let mut c0 = 0;
                // SAFETY: each block's columns lie inside out.len() (contract forwarded).
                unsafe {
                    while $lanes == 16 && c0 + 4 * $lanes <= d {
                        // 16 accumulators: only AVX-512's 32 registers hold them
                        $block::<T, 4>(w, v, stride, out, c0);
                        c0 += 4 * $lanes;
                    }
                    while c0 + 2 * $lanes <= d {
                        $block::<T, 2>(w, v, stride, out, c0);
                        c0 += 2 * $lanes;
                    }
                    if c0 + $lanes <= d {
                        $block::<T, 1>(w, v, stride, out, c0);
                        c0 += $lanes;
                    }
                    weighted_tail(w, v, stride, out, c0);
                }
            }
        };
    }

    weighted_kernels!(
        "avx512f",
        weighted_block_512,
        weighted_512,
        16,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_mul_ps,
        _mm512_storeu_ps,
        load16
    );
    weighted_kernels!(
        "avx2",
        weighted_block_256,
        weighted_256,
        8,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_mul_ps,
        _mm256_storeu_ps,
        load8
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_attention_over_one_position_returns_its_value() {
        // one key: softmax weight 1, so the output is exactly v
        let (heads, d, max_len) = (2, 4, 3);
        let q: Vec<f32> = (0..8).map(|i| i as f32 * 0.3).collect();
        let mut kc = vec![f32::NAN; 2 * heads * max_len * d];
        let mut vc = kc.clone();
        for h in 0..heads {
            let at = ((heads + h) * max_len) * d; // slot 1, position 0
            kc[at..at + d].fill(1.0);
            for (j, v) in vc[at..at + d].iter_mut().enumerate() {
                *v = (h * 10 + j) as f32;
            }
        }
        let mut out = vec![0.0; 16];
        attention_cached(&[q.clone(), q].concat(), &kc, &vc, &[1, -1], &[1, 0], &mut out, heads, d, max_len, 0.5).unwrap();
        assert_eq!(&out[..8], &[0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]);
        assert_eq!(&out[8..], &[0.0; 8], "len 0: zeros");
        let e = attention_cached(&[0.0; 8], &kc, &vc, &[2], &[1], &mut out[..8], heads, d, max_len, 0.5).unwrap_err();
        assert_eq!(e, (0, RowValue::Slot, 2));
        let e = attention_cached(&[0.0; 8], &kc, &vc, &[0], &[4], &mut out[..8], heads, d, max_len, 0.5).unwrap_err();
        assert_eq!(e, (0, RowValue::Length, 4));
    }

    /// Many rows over long slots (the parallel split), a head dim with a tail past the 16 lanes,
    /// an inactive row, slots in any order: against an f64 softmax attention, each row alone the
    /// same bits as in the batch, and the AVX-512F, AVX2 and portable instances the same bits.
    #[test]
    fn cached_attention_matches_f64_on_the_parallel_path_and_every_instance_agrees() {
        let seed = crate::testing::fresh_seed();
        eprintln!("seed {seed}");
        let (heads, d, max_len, n_slots) = (3, 40, 700, 5);
        let hd = heads * d;
        let kc = crate::testing::random_f32(seed, n_slots * heads * max_len * d, 1.0);
        let vc = crate::testing::random_f32(seed ^ 1, n_slots * heads * max_len * d, 1.0);
        let slots = [3, 0, 4, 1, 2, 0, 3];
        let lens = [700, 513, 0, 1, 650, 333, 17];
        let rows = slots.len();
        assert!(lens.iter().map(|&l| l as usize * hd).sum::<usize>() >= CACHED_PARALLEL_MIN_WORK);
        let q = crate::testing::random_f32(seed ^ 2, rows * hd, 1.0);
        let mut out = vec![f32::NAN; rows * hd];
        attention_cached(&q, &kc, &vc, &slots, &lens, &mut out, heads, d, max_len, 0.3).unwrap();
        for r in 0..rows {
            for h in 0..heads {
                let o = &out[r * hd + h * d..][..d];
                let len = lens[r] as usize;
                if len == 0 {
                    assert!(o.iter().all(|&x| x == 0.0));
                    continue;
                }
                let at = (slots[r] as usize * heads + h) * max_len * d;
                let qh = &q[r * hd + h * d..][..d];
                let sc: Vec<f64> =
                    (0..len).map(|j| 0.3 * (0..d).map(|c| qh[c] as f64 * kc[at + j * d + c] as f64).sum::<f64>()).collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                for c in 0..d {
                    let want = (0..len).map(|j| w[j] * vc[at + j * d + c] as f64).sum::<f64>() / sum;
                    assert!((o[c] as f64 - want).abs() <= 1e-5, "row {r} head {h} col {c}: {} vs {want} (seed {seed})", o[c]);
                }
            }
            let mut one = vec![f32::NAN; hd];
            attention_cached(&q[r * hd..][..hd], &kc, &vc, &slots[r..r + 1], &lens[r..r + 1], &mut one, heads, d, max_len, 0.3)
                .unwrap();
            assert_eq!(one, out[r * hd..][..hd], "row {r} alone (seed {seed})");
        }
        // the instances of attend_one: the same bits
        let (qh, len) = (&q[..d], 650);
        let (k, v) = (&kc[..len * d], &vc[..len * d]);
        let mut want = vec![0f32; d];
        attend_one_lanes(qh, k, v, len, d, 0.3, &mut Vec::new(), &mut want);
        #[cfg(target_arch = "x86_64")]
        for isa in super::super::isa::Isa::tested_paths() {
            let mut got = vec![f32::NAN; d];
            use super::super::isa::Isa;
            if isa == Isa::Avx512 {
                // SAFETY: the CPU supports this path (tested_paths).
                unsafe { attend_one_avx512(qh, k, v, len, d, 0.3, &mut Vec::new(), &mut got) };
            } else if isa == Isa::Avx2 {
                // SAFETY: as above.
                unsafe { attend_one_avx2(qh, k, v, len, d, 0.3, &mut Vec::new(), &mut got) };
            } else {
                continue;
            }
            assert_eq!(got, want, "{isa} (seed {seed})");
        }
    }

    /// The AVX-512F and AVX2 kernels against the portable loops, bit for bit, f32 and bf16, over head
    /// dims with and without tails past the 16 lanes (and the 32- and 16-column value blocks) and
    /// key counts below, at and past multiples of four; and each result against f64.
    #[test]
    fn every_instance_gives_the_portable_bits_for_any_head_dim_and_key_count() {
        use half::bf16;
        let seed = crate::testing::fresh_seed();
        for (i, &(d, keys)) in
            [(64, 129), (64, 3), (64, 4), (8, 9), (24, 7), (33, 50), (72, 130), (128, 65), (200, 21), (256, 5)].iter().enumerate()
        {
            let s = seed.wrapping_add(i as u64 * 7919);
            let stride = d + 5; // rows apart, as heads are in the cache
            let q = crate::testing::random_f32(s, d, 1.0);
            let k32 = crate::testing::random_f32(s ^ 1, keys * stride, 1.0);
            let v32 = crate::testing::random_f32(s ^ 2, keys * stride, 1.0);
            let (kb, vb): (Vec<bf16>, Vec<bf16>) =
                (k32.iter().map(|&x| bf16::from_f32(x)).collect(), v32.iter().map(|&x| bf16::from_f32(x)).collect());
            // each instance runs on NaN-poisoned output and says whether this CPU has its path
            let run_all = |k: &dyn Fn(usize, &mut [f32]) -> bool, what: &str| {
                let mut want = vec![f32::NAN; d];
                assert!(k(0, &mut want));
                for path in 1..3 {
                    let mut got = vec![f32::NAN; d];
                    if !k(path, &mut got) {
                        eprintln!("skipped instance {path} (avx512f, avx2): this CPU lacks it");
                        continue;
                    }
                    assert_eq!(got, want, "{what} d {d} keys {keys}: path {path} (seed {s})");
                }
                want
            };
            #[cfg(target_arch = "x86_64")]
            let has = |isa: super::super::isa::Isa| super::super::isa::Isa::tested_paths().contains(&isa);
            macro_rules! instances {
                ($k:expr, $v:expr) => {
                    |path: usize, out: &mut [f32]| match path {
                        0 => {
                            attend_one_lanes(&q, $k, $v, keys, stride, 0.4, &mut Vec::new(), out);
                            true
                        }
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: only where the CPU has the path (tested_paths).
                        1 if has(super::super::isa::Isa::Avx512) => {
                            unsafe { attend_one_avx512(&q, $k, $v, keys, stride, 0.4, &mut Vec::new(), out) };
                            true
                        }
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above.
                        2 if has(super::super::isa::Isa::Avx2) => {
                            unsafe { attend_one_avx2(&q, $k, $v, keys, stride, 0.4, &mut Vec::new(), out) };
                            true
                        }
                        _ => false,
                    }
                };
            }
            let got32 = run_all(&instances!(&k32[..], &v32[..]), "f32");
            run_all(&instances!(&kb[..], &vb[..]), "bf16");
            let sc: Vec<f64> =
                (0..keys).map(|j| 0.4 * (0..d).map(|c| q[c] as f64 * k32[j * stride + c] as f64).sum::<f64>()).collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = w.iter().sum();
            for (c, &g) in got32.iter().enumerate() {
                let want = (0..keys).map(|j| w[j] * v32[j * stride + c] as f64).sum::<f64>() / sum;
                assert!((g as f64 - want).abs() <= 1e-5, "d {d} keys {keys} col {c}: {g} vs {want} (seed {s})");
            }
        }
    }

    /// bf16 caches (`cpu-bf16`): the same bits as f32 caches holding the widened bf16 values, on
    /// the parallel path and on one row alone, every instance; and the bf16 rounding shows (the
    /// result differs from that of the unrounded f32 caches, within bf16 tolerance).
    #[test]
    fn cached_attention_over_bf16_caches_is_the_f32_attention_of_the_widened_values() {
        use half::bf16;
        let seed = crate::testing::fresh_seed();
        let (heads, d, max_len, n_slots) = (4, 72, 600, 4);
        let hd = heads * d;
        let k32 = crate::testing::random_f32(seed, n_slots * heads * max_len * d, 1.0);
        let v32 = crate::testing::random_f32(seed ^ 1, n_slots * heads * max_len * d, 1.0);
        let (kb, vb): (Vec<bf16>, Vec<bf16>) =
            (k32.iter().map(|&x| bf16::from_f32(x)).collect(), v32.iter().map(|&x| bf16::from_f32(x)).collect());
        let (kw, vw): (Vec<f32>, Vec<f32>) = (kb.iter().map(|x| x.to_f32()).collect(), vb.iter().map(|x| x.to_f32()).collect());
        let slots = [2, 0, 3, 1, 0];
        let lens = [600, 0, 1, 555, 97];
        let rows = slots.len();
        assert!(lens.iter().map(|&l| l as usize * hd).sum::<usize>() >= CACHED_PARALLEL_MIN_WORK);
        let q = crate::testing::random_f32(seed ^ 2, rows * hd, 1.0);
        let run = |k: &dyn Fn(&mut [f32]) -> Result<(), BadRow>| {
            let mut out = vec![f32::NAN; rows * hd];
            k(&mut out).unwrap();
            out
        };
        let got = run(&|o| attention_cached(&q, &kb, &vb, &slots, &lens, o, heads, d, max_len, 0.2));
        let want = run(&|o| attention_cached(&q, &kw, &vw, &slots, &lens, o, heads, d, max_len, 0.2));
        assert_eq!(got, want, "bf16 caches against their widened values (seed {seed})");
        let unrounded = run(&|o| attention_cached(&q, &k32, &v32, &slots, &lens, o, heads, d, max_len, 0.2));
        assert_ne!(got, unrounded, "the caches' rounding has no effect (seed {seed})");
        // within what rounding the caches to bf16 can do (a bound derived from the data)
        let cache = crate::testing::CacheDims { heads, max_len, d };
        let bound = crate::testing::bf16_cache_error_bound(&q, &k32, &v32, cache, &slots, &lens, 0.2);
        crate::testing::assert_within_bound(&format!("bf16 caches vs f32 caches (seed {seed})"), &got, &unrounded, &bound);
        for r in 0..rows {
            let mut one = vec![f32::NAN; hd];
            attention_cached(&q[r * hd..][..hd], &kb, &vb, &slots[r..r + 1], &lens[r..r + 1], &mut one, heads, d, max_len, 0.2)
                .unwrap();
            assert_eq!(one, got[r * hd..][..hd], "row {r} alone (seed {seed})");
        }
        let (qh, len) = (&q[..d], 600);
        let mut lanes = vec![0f32; d];
        attend_one_lanes(qh, &kb[..len * d], &vb[..len * d], len, d, 0.2, &mut Vec::new(), &mut lanes);
        let mut wide = vec![0f32; d];
        attend_one_lanes(qh, &kw[..len * d], &vw[..len * d], len, d, 0.2, &mut Vec::new(), &mut wide);
        assert_eq!(lanes, wide, "portable instance (seed {seed})");
        #[cfg(target_arch = "x86_64")]
        for isa in super::super::isa::Isa::tested_paths() {
            use super::super::isa::Isa;
            let mut got = vec![f32::NAN; d];
            if isa == Isa::Avx512 {
                // SAFETY: the CPU supports this path (tested_paths).
                unsafe { attend_one_avx512(qh, &kb[..len * d], &vb[..len * d], len, d, 0.2, &mut Vec::new(), &mut got) };
            } else if isa == Isa::Avx2 {
                // SAFETY: as above.
                unsafe { attend_one_avx2(qh, &kb[..len * d], &vb[..len * d], len, d, 0.2, &mut Vec::new(), &mut got) };
            } else {
                continue;
            }
            assert_eq!(got, wide, "{isa} (seed {seed})");
        }
    }
}
