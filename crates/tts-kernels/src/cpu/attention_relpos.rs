//! Multi-head self-attention with relative positions (ESPnet `RelPositionMultiHeadedAttention`,
//! S3Gen's conformer encoder). Mirrors `kernels/attention_relpos.cu`.

use super::attention::{
    BLOCK_ROWS, SCALAR_MAX_HEAD_WORK, SendPtr, fill_rows, run_blocks, scratch, sgemm_serial, softmax_numerators, weighted_values,
};

/// For batch b, query i, head h (vectors of `dh` values):
/// `score[i, j] = ((q_i + u_h)·k_j + (q_i + v_h)·pos[T − 1 − i + j]) · scale` over keys
/// `j < kv_lens[b]` (all T keys without `kv_lens`), `out_i = Σ_j softmax(score[i])_j · v_j`; a query
/// that sees no key gets zeros. This is ESPnet's `matrix_ac + rel_shift(matrix_bd)` in closed form
/// (proved against a literal transcription of attention.py in the tests below).
///
/// `q`, `k`, `v`, `out`: `[batch, T, heads·dh]`; `pos`: `[2T − 1, heads·dh]` (row r: relative
/// position `T − 1 − r`); `bias_u`, `bias_v`: `[heads, dh]`. The two dot products are f32 sums,
/// then `(ac + bd)·scale`; max-subtracted softmax with f32 sums, normalised after the weighted sum
/// of values. Returns the first (batch, value) whose `kv_lens` is outside `0..=T`; nothing is
/// written then.
///
/// Tiny problems run a scalar loop per (batch, query, head). Larger ones run blocks of
/// [`BLOCK_ROWS`] queries `i0..i0 + R` of one (batch, head) as tasks (on rayon's pool when the job
/// is large enough, see `run_blocks` in attention.rs): `ac = (Q + u)·Kᵀ`
/// `[R, n]` and `bd = (Q + v)·P[r0..r0 + R + n − 1]ᵀ` with `r0 = T − i0 − R` (the pos rows the
/// block's queries reach) by matrixmultiply sgemms strided over the interleaved heads, then
/// `score[i, j] = (ac[i, j] + bd[i, T − 1 − i + j − r0]) · scale`, the softmax, and `P·V` by sgemm.
/// Only the summation order of the dot products differs from the scalar loop.
#[allow(clippy::too_many_arguments)]
pub fn attention_relpos(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[f32],
    bias_u: &[f32],
    bias_v: &[f32],
    kv_lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    heads: usize,
    dh: usize,
    scale: f32,
) -> Result<(), (usize, i32)> {
    let hd = heads * dh;
    if hd == 0 || batch == 0 {
        return Ok(());
    }
    let t = q.len() / (batch * hd);
    super::conv::check_lens(kv_lens, t)?;
    if t == 0 {
        return Ok(());
    }
    if 3 * t * t * dh <= SCALAR_MAX_HEAD_WORK {
        attention_relpos_scalar(q, k, v, pos, bias_u, bias_v, kv_lens, out, batch, heads, dh, scale);
        return Ok(());
    }
    attention_relpos_blocked(q, k, v, pos, bias_u, bias_v, kv_lens, out, batch, heads, dh, scale);
    Ok(())
}

/// The blocked path of [`attention_relpos`] (any size; lengths already checked, `T ≥ 1`).
#[allow(clippy::too_many_arguments)]
fn attention_relpos_blocked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[f32],
    bias_u: &[f32],
    bias_v: &[f32],
    kv_lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    heads: usize,
    dh: usize,
    scale: f32,
) {
    let hd = heads * dh;
    let t = q.len() / (batch * hd);
    let len = batch * t * hd;
    assert!(
        k.len() >= len && v.len() >= len && out.len() >= len && pos.len() >= (2 * t - 1) * hd,
        "attention_relpos: k {}, v {}, out {} < {len} or pos {} < {}",
        k.len(),
        v.len(),
        out.len(),
        pos.len(),
        (2 * t - 1) * hd
    );
    assert!(bias_u.len() >= hd && bias_v.len() >= hd, "attention_relpos: biases {} and {} < {hd}", bias_u.len(), bias_v.len());
    let blocks = t.div_ceil(BLOCK_ROWS);
    let dst = SendPtr(out.as_mut_ptr());
    run_blocks(batch * heads * blocks, 3 * batch * t * t * hd, |scr, task| {
        let (b, h, i0) = (task / (heads * blocks), task / blocks % heads, task % blocks * BLOCK_ROWS);
        let rows = BLOCK_ROWS.min(t - i0);
        let n = kv_lens.map_or(t, |l| l[b] as usize);
        let o = dst.get().wrapping_add((b * t + i0) * hd + h * dh);
        if n == 0 {
            // SAFETY: rows `i0..i0 + rows` of batch b, head h are this task's own part of `out`.
            unsafe { fill_rows(o, hd, rows, dh, 0.0) };
            return;
        }
        // pos rows r0..r0 + w: T − 1 − i + j for i in i0..i0 + rows, j < n
        let (r0, w) = (t - i0 - rows, rows + n - 1);
        let aux = scratch(&mut scr.aux, 2 * rows * dh + rows * w);
        let (qu, rest) = aux.split_at_mut(rows * dh);
        let (qv, bd) = rest.split_at_mut(rows * dh);
        let (bu, bv) = (&bias_u[h * dh..(h + 1) * dh], &bias_v[h * dh..(h + 1) * dh]);
        for (r, (qu, qv)) in qu.chunks_exact_mut(dh).zip(qv.chunks_exact_mut(dh)).enumerate() {
            let qr = &q[(b * t + i0 + r) * hd + h * dh..][..dh];
            for (((qu, qv), &x), (&u, &bv)) in qu.iter_mut().zip(qv.iter_mut()).zip(qr).zip(bu.iter().zip(bv)) {
                *qu = x + u;
                *qv = x + bv;
            }
        }
        let ac = scratch(&mut scr.scores, rows * n);
        let sums = scratch(&mut scr.sums, rows);
        let kh = &k[b * t * hd + h * dh..];
        let ph = &pos[r0 * hd + h * dh..];
        // SAFETY: k rows 0..n of batch b and pos rows r0..r0 + w (< 2T − 1) stay inside k and pos
        // (row stride hd, dh values at offset h·dh); qu, qv, ac and bd hold their rows × columns.
        unsafe {
            sgemm_serial(rows, dh, n, qu.as_ptr(), dh, 1, kh.as_ptr(), 1, hd, ac.as_mut_ptr(), n, 1, false);
            sgemm_serial(rows, dh, w, qv.as_ptr(), dh, 1, ph.as_ptr(), 1, hd, bd.as_mut_ptr(), w, 1, false);
        }
        for (r, (s, bd)) in ac.chunks_exact_mut(n).zip(bd.chunks_exact(w)).enumerate() {
            // row i = i0 + r, key j: bd column T − 1 − i + j − r0 = rows − 1 − r + j
            for (s, &x) in s.iter_mut().zip(&bd[rows - 1 - r..]) {
                *s = (*s + x) * scale;
            }
            sums[r] = softmax_numerators(s, n, 1.0);
        }
        let vh = v[b * t * hd + h * dh..].as_ptr();
        // SAFETY: v rows 0..n of batch b and this task's out rows.
        unsafe { weighted_values(ac, sums, n, vh, hd, dh, o, hd) };
    });
}

/// [`attention_relpos`] as a scalar loop per (batch, query, head): the path of tiny problems and
/// the tests' oracle. Lengths already checked, `T ≥ 1`. `pub` only for `bench_support`.
#[allow(clippy::too_many_arguments)]
pub fn attention_relpos_scalar(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[f32],
    bias_u: &[f32],
    bias_v: &[f32],
    kv_lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    heads: usize,
    dh: usize,
    scale: f32,
) {
    let hd = heads * dh;
    let t = q.len() / (batch * hd);
    let (mut qu, mut qv) = (vec![0f32; dh], vec![0f32; dh]);
    let mut scores = Vec::with_capacity(t);
    for b in 0..batch {
        let n = kv_lens.map_or(t, |l| l[b] as usize);
        for i in 0..t {
            let row = (b * t + i) * hd;
            for h in 0..heads {
                let o = &mut out[row + h * dh..row + (h + 1) * dh];
                o.fill(0.0);
                if n == 0 {
                    continue;
                }
                let qh = &q[row + h * dh..row + (h + 1) * dh];
                for d in 0..dh {
                    qu[d] = qh[d] + bias_u[h * dh + d];
                    qv[d] = qh[d] + bias_v[h * dh + d];
                }
                scores.clear();
                for j in 0..n {
                    let kr = &k[(b * t + j) * hd + h * dh..][..dh];
                    let pr = &pos[(t - 1 - i + j) * hd + h * dh..][..dh];
                    let ac: f32 = qu.iter().zip(kr).map(|(a, b)| a * b).sum();
                    let bd: f32 = qv.iter().zip(pr).map(|(a, b)| a * b).sum();
                    scores.push((ac + bd) * scale);
                }
                let m = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - m).exp();
                    sum += *s;
                }
                for (j, &w) in scores.iter().enumerate() {
                    for (o, &x) in o.iter_mut().zip(&v[(b * t + j) * hd + h * dh..][..dh]) {
                        *o += w * x;
                    }
                }
                let inv = 1.0 / sum;
                for o in o.iter_mut() {
                    *o *= inv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, fresh_seed, random_f32, random_i32};

    /// A literal transcription of ESPnet's `RelPositionMultiHeadedAttention.forward` (attention.py)
    /// after the projections, on flat row-major arrays:
    /// `matrix_ac = (q + u) @ kᵀ` `[B, H, T, T]`, `matrix_bd = (q + v) @ pᵀ` `[B, H, T, 2T − 1]`,
    /// `rel_shift` by its zero-pad / view / slice trick, `scores = (ac + bd) · scale`,
    /// `masked_fill(−inf)`, softmax, `masked_fill(0)`, `@ v`.
    #[allow(clippy::too_many_arguments)]
    fn espnet(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos: &[f32],
        bu: &[f32],
        bv: &[f32],
        lens: &[i32],
        batch: usize,
        heads: usize,
        dh: usize,
        scale: f32,
    ) -> Vec<f32> {
        let hd = heads * dh;
        let t = q.len() / (batch * hd);
        let p_len = 2 * t - 1;
        // (batch, time, head, d_k) -> (batch, head, time, d_k) indexing helpers
        let at = |x: &[f32], b: usize, h: usize, i: usize, d: usize| x[(b * t + i) * hd + h * dh + d];
        let mut out = vec![0f32; q.len()];
        for b in 0..batch {
            for h in 0..heads {
                // matrix_ac [T, T], matrix_bd [T, 2T - 1]
                let mut ac = vec![0f32; t * t];
                let mut bd = vec![0f32; t * p_len];
                for i in 0..t {
                    let qu: Vec<f32> = (0..dh).map(|d| at(q, b, h, i, d) + bu[h * dh + d]).collect();
                    let qv: Vec<f32> = (0..dh).map(|d| at(q, b, h, i, d) + bv[h * dh + d]).collect();
                    for j in 0..t {
                        ac[i * t + j] = (0..dh).map(|d| qu[d] * at(k, b, h, j, d)).sum();
                    }
                    for r in 0..p_len {
                        bd[i * p_len + r] = (0..dh).map(|d| qv[d] * pos[r * hd + h * dh + d]).sum();
                    }
                }
                // rel_shift: zero_pad [T, 1] ++ x -> [T, 2T]; view [2T, T]; drop row 0 -> [2T - 1, T];
                // view_as(x) [T, 2T - 1]; keep columns 0..(2T - 1) / 2 + 1 = T
                let mut padded = Vec::with_capacity(t * (p_len + 1));
                for i in 0..t {
                    padded.push(0.0);
                    padded.extend_from_slice(&bd[i * p_len..(i + 1) * p_len]);
                }
                let dropped = &padded[t..]; // the view [2T, T] without its first row of T values
                assert_eq!(dropped.len(), t * p_len);
                let keep = p_len / 2 + 1;
                let mut shifted = vec![0f32; t * keep];
                for i in 0..t {
                    shifted[i * keep..(i + 1) * keep].copy_from_slice(&dropped[i * p_len..i * p_len + keep]);
                }
                assert_eq!(keep, t);
                for i in 0..t {
                    let mut s: Vec<f32> = (0..t).map(|j| (ac[i * t + j] + shifted[i * t + j]) * scale).collect();
                    let masked = |j: usize| j as i32 >= lens[b];
                    for (j, x) in s.iter_mut().enumerate() {
                        if masked(j) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    let m = s.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                    let e: Vec<f32> = s.iter().map(|&x| (x - m).exp()).collect(); // NaN when all masked
                    let sum: f32 = e.iter().sum();
                    let prob: Vec<f32> = (0..t).map(|j| if masked(j) { 0.0 } else { e[j] / sum }).collect();
                    for d in 0..dh {
                        out[(b * t + i) * hd + h * dh + d] = (0..t).map(|j| prob[j] * at(v, b, h, j, d)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn closed_form_equals_espnet_rel_shift() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        // (batch, T, heads, dh)
        for (c, &(batch, t, heads, dh)) in
            [(1, 1, 1, 1), (2, 5, 2, 3), (3, 7, 3, 4), (1, 16, 1, 8), (2, 11, 4, 5)].iter().enumerate()
        {
            let s = seed.wrapping_add(c as u64 * 100);
            let hd = heads * dh;
            let q = random_f32(s, batch * t * hd, 1.0);
            let k = random_f32(s + 1, batch * t * hd, 1.0);
            let v = random_f32(s + 2, batch * t * hd, 1.0);
            // a pos table that makes the relative term matter (larger than the content term)
            let pos = random_f32(s + 3, (2 * t - 1) * hd, 2.0);
            let bu = random_f32(s + 4, hd, 0.5);
            let bv = random_f32(s + 5, hd, 0.5);
            let mut lens = random_i32(s + 6, batch, 0, t as i32 + 1);
            lens[0] = t as i32;
            if batch > 2 {
                lens[2] = 0;
            }
            let scale = 1.0 / (dh as f32).sqrt();
            let want = espnet(&q, &k, &v, &pos, &bu, &bv, &lens, batch, heads, dh, scale);
            let mut got = vec![f32::NAN; q.len()];
            attention_relpos(&q, &k, &v, &pos, &bu, &bv, Some(&lens), &mut got, batch, heads, dh, scale).unwrap();
            // the same f32 dot products; only the softmax normalisation order differs
            assert_close(&format!("b {batch} T {t} heads {heads} dh {dh} lens {lens:?} seed {s}"), &got, &want, 1e-5, 1e-6);
            // without kv_lens: every key visible
            let all = vec![t as i32; batch];
            let want = espnet(&q, &k, &v, &pos, &bu, &bv, &all, batch, heads, dh, scale);
            attention_relpos(&q, &k, &v, &pos, &bu, &bv, None, &mut got, batch, heads, dh, scale).unwrap();
            assert_close(&format!("b {batch} T {t} no kv_lens seed {s}"), &got, &want, 1e-5, 1e-6);
        }
    }

    /// One case of the blocked path against the scalar loop (and ESPnet's rel_shift when
    /// `espnet_too`). Keys past each `kv_lens` are NaN (must not be read); `out` starts NaN.
    #[allow(clippy::too_many_arguments)]
    fn check_blocked(seed: u64, batch: usize, t: usize, heads: usize, dh: usize, lens: Option<&[i32]>, espnet_too: bool) {
        let hd = heads * dh;
        let q = random_f32(seed, batch * t * hd, 1.0);
        let mut k = random_f32(seed + 1, batch * t * hd, 1.0);
        let mut v = random_f32(seed + 2, batch * t * hd, 1.0);
        let pos = random_f32(seed + 3, (2 * t - 1) * hd, 2.0);
        let bu = random_f32(seed + 4, hd, 0.5);
        let bv = random_f32(seed + 5, hd, 0.5);
        let all = vec![t as i32; batch];
        let lens_or_all = lens.unwrap_or(&all);
        let clean = (k.clone(), v.clone());
        for (b, &l) in lens_or_all.iter().enumerate() {
            k[(b * t + l as usize) * hd..(b + 1) * t * hd].fill(f32::NAN);
            v[(b * t + l as usize) * hd..(b + 1) * t * hd].fill(f32::NAN);
        }
        let scale = 1.0 / (dh as f32).sqrt();
        let what = format!("b {batch} T {t} heads {heads} dh {dh} lens {lens:?} seed {seed}");
        let mut want = vec![f32::NAN; q.len()];
        attention_relpos_scalar(&q, &k, &v, &pos, &bu, &bv, lens, &mut want, batch, heads, dh, scale);
        let mut got = vec![f32::NAN; q.len()];
        attention_relpos_blocked(&q, &k, &v, &pos, &bu, &bv, lens, &mut got, batch, heads, dh, scale);
        assert_close(&format!("blocked vs scalar: {what}"), &got, &want, 1e-5, 1e-5);
        let mut pub_out = vec![f32::NAN; q.len()];
        attention_relpos(&q, &k, &v, &pos, &bu, &bv, lens, &mut pub_out, batch, heads, dh, scale).unwrap();
        assert_close(&format!("attention_relpos: {what}"), &pub_out, &want, 1e-5, 1e-5);
        if espnet_too {
            // ESPnet masks with -inf but still multiplies the masked values by 0: give it clean ones
            let reference = espnet(&q, &clean.0, &clean.1, &pos, &bu, &bv, lens_or_all, batch, heads, dh, scale);
            assert_close(&format!("blocked vs ESPnet: {what}"), &got, &reference, 1e-5, 1e-5);
        }
    }

    #[test]
    fn blocked_path_equals_the_scalar_loop_and_espnet() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        let shapes = [(3usize, 1usize), (37, 2), (64, 3), (64, 1), (37, 3), (3, 2)];
        let mut case = 0u64;
        for &t in &[1usize, 7, 129, 300] {
            for _ in 0..2 {
                let (dh, heads) = shapes[case as usize % shapes.len()];
                let s = seed.wrapping_add(case * 1000);
                case += 1;
                let espnet_too = t <= 129;
                check_blocked(s, 1, t, heads, dh, None, espnet_too);
                let mid = (s % (t as u64 + 1)) as i32;
                check_blocked(s + 10, 2, t, heads, dh, Some(&[t as i32, mid]), espnet_too);
                check_blocked(s + 20, 2, t, heads, dh, Some(&[0, t as i32]), espnet_too);
            }
        }
        // three row blocks, the last one short
        check_blocked(seed ^ 5, 2, 2 * BLOCK_ROWS + 3, 2, 64, Some(&[2 * BLOCK_ROWS as i32 + 3, 200]), false);
    }

    #[test]
    fn relative_positions_select_keys() {
        // q = k = 0 and the pos table zero but for one entry at relative position i − j = 1 (pos row
        // r holds position T − 1 − r, so row T − 2): each query i ≥ 1 then attends to key i − 1 only.
        let (t, dh) = (5, 2);
        let q = vec![0.0; t * dh];
        let k = vec![0.0; t * dh];
        let v: Vec<f32> = (0..t * dh).map(|x| (x / dh) as f32).collect(); // v_j = [j, j]
        let mut pos = vec![0.0; (2 * t - 1) * dh];
        pos[(t - 2) * dh] = 100.0;
        let bv = [1.0, 0.0];
        let mut out = vec![0.0; t * dh];
        attention_relpos(&q, &k, &v, &pos, &[0.0, 0.0], &bv, None, &mut out, 1, 1, dh, 1.0).unwrap();
        // query 0 has no key at i − 1: all scores 0, the mean of v
        assert_eq!(&out[..2], &[2.0, 2.0]);
        for i in 1..t {
            assert!((out[i * dh] - (i - 1) as f32).abs() < 1e-6, "query {i}: {:?}", &out[i * dh..(i + 1) * dh]);
        }
        // kv_lens 0: zeros; out of range: an error
        attention_relpos(&q, &k, &v, &pos, &[0.0, 0.0], &bv, Some(&[0]), &mut out, 1, 1, dh, 1.0).unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
        assert_eq!(attention_relpos(&q, &k, &v, &pos, &[0.0, 0.0], &bv, Some(&[6]), &mut out, 1, 1, dh, 1.0), Err((0, 6)));
        assert_eq!(attention_relpos(&q, &k, &v, &pos, &[0.0, 0.0], &bv, Some(&[-1]), &mut out, 1, 1, dh, 1.0), Err((0, -1)));
    }
}
