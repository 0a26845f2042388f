//! Dense attention over contiguous sequences (the Perceiver, S3Gen's transformer blocks). Mirrors
//! `kernels/attention.cu`; the attention over KV caches (T3) is in `attention_cached.rs`, RoPE and
//! the KV-cache write in `rope.rs`.

use rayon::prelude::*;

use super::attention_cached::attend_one;
use super::attention_tiles::{self as tiles, TILE_ROWS, TILE_ROWS_512};

/// Multi-head attention over contiguous sequences (no cache):
/// `out[b, i, h] = softmax(scale · q[b, i, h] · k[b, j, h]ᵀ over visible j) · v[b, j, h]`, where key
/// j is visible when `j < kv_lens[b]` (all `lk` keys without `kv_lens`) and, if `causal`, `j <= i`.
/// A query that sees no key gets zeros.
///
/// `q`, `out`: [batch, lq, heads·dh]; `k`, `v`: [batch, lk, heads·dh]. Returns the first
/// (batch, value) whose `kv_lens` is outside `0..=lk`; nothing is written then.
///
/// Scores are f32 dot products, the softmax is max-subtracted with f32 sums and normalised after
/// the weighted sum of values (as in `attend_one`). Tiny problems run that scalar loop; larger ones
/// run blocks of queries of one (batch, head) as tasks (on rayon's pool when the job is large
/// enough, see `run_blocks`). With AVX2+FMA and a head size that is a multiple of 8, each block
/// runs 6 queries at a time through the register tiles of `cpu/attention_tiles.rs` (blocks of at
/// most `TILED_BLOCK_ROWS`, of even size; the keys and values of each (batch, head) packed once for
/// all its blocks); otherwise each block of `BLOCK_ROWS` computes its score block
/// and its output block with matrixmultiply sgemms strided straight over the interleaved heads.
/// Either way only the summation order of the dot products differs from the scalar loop. Keys past
/// `kv_lens[b]` are never read; with `causal`, the keys a block's (or tile's) earlier rows do not
/// see (up to its last row) are read and given weight 0.
#[allow(clippy::too_many_arguments)]
pub fn attention_dense(
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
    let hd = heads * dh;
    if hd == 0 || batch == 0 {
        return Ok(());
    }
    let (lq, lk) = (q.len() / (batch * hd), k.len() / (batch * hd));
    super::conv::check_lens(kv_lens, lk)?;
    let scalar_max = if tiles::available(dh) { SCALAR_MAX_HEAD_WORK_TILED } else { SCALAR_MAX_HEAD_WORK };
    if 2 * lq * lk * dh <= scalar_max {
        attention_dense_scalar(q, k, v, kv_lens, out, batch, heads, dh, scale, causal);
        return Ok(());
    }
    attention_dense_blocked(q, k, v, kv_lens, out, batch, heads, dh, scale, causal, true);
    Ok(())
}

/// The blocked path of [`attention_dense`] (any size; lengths already checked): AVX2 register
/// tiles where `allow_tiles` and `tiles::available` (the CPU has AVX2+FMA, `dh` is a multiple of 8),
/// sgemm blocks otherwise (`allow_tiles = false` forces them: the side-by-side bench and the
/// tests). `pub` only for `bench_support`.
#[allow(clippy::too_many_arguments)]
pub fn attention_dense_blocked(
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
    allow_tiles: bool,
) {
    let hd = heads * dh;
    let (lq, lk) = (q.len() / (batch * hd), k.len() / (batch * hd));
    assert!(v.len() >= batch * lk * hd && out.len() >= batch * lq * hd, "attention_dense: v or out too short");
    if allow_tiles && tiles::available(dh) {
        attention_dense_tiled(q, k, v, kv_lens, out, batch, heads, dh, scale, causal);
        return;
    }
    let blocks = lq.div_ceil(BLOCK_ROWS);
    let dst = SendPtr(out.as_mut_ptr());
    run_blocks(batch * heads * blocks, 2 * batch * lq * lk * hd, |scr, task| {
        let blk = QueryBlock::of(task, heads, blocks, |i| (i * BLOCK_ROWS).min(lq), kv_lens, lk, causal);
        let (b, h, i0, rows, keys) = (blk.b, blk.h, blk.i0, blk.rows, blk.keys);
        let row_keys = |r: usize| blk.row_keys(r);
        let o = dst.get().wrapping_add((b * lq + i0) * hd + h * dh);
        if keys == 0 {
            // SAFETY: rows `i0..i0 + rows` of batch b, head h are this task's own part of `out`.
            unsafe { fill_rows(o, hd, rows, dh, 0.0) };
            return;
        }
        let qh = &q[(b * lq + i0) * hd + h * dh..];
        let kh = &k[b * lk * hd + h * dh..];
        let vh = &v[b * lk * hd + h * dh..];
        let s = self::scratch(&mut scr.scores, rows * keys);
        let sums = self::scratch(&mut scr.sums, rows);
        // SAFETY: q rows i0..i0 + rows and k rows 0..keys of batch b stay inside q and k (row stride
        // hd, dh values at offset h·dh); s holds rows × keys values.
        unsafe {
            sgemm_serial(rows, dh, keys, qh.as_ptr(), hd, 1, kh.as_ptr(), 1, hd, s.as_mut_ptr(), keys, 1, false);
        }
        for (r, sr) in s.chunks_exact_mut(keys).enumerate() {
            sums[r] = softmax_numerators(sr, row_keys(r), scale);
        }
        // SAFETY: v rows 0..keys of batch b and this task's out rows, as above.
        unsafe { weighted_values(s, sums, keys, vh.as_ptr(), hd, dh, o, hd) };
    });
}

/// The register-tile path of [`attention_dense_blocked`] (AVX2+FMA present, `dh` a multiple of 8;
/// lengths checked): the keys and values of each (batch, head) packed once for all its blocks
/// (`tiles::pack_keys`, `tiles::pack_values`, in parallel over the heads), then blocks of at most
/// [`TILED_BLOCK_ROWS`] queries, of even size, as tasks (`attend_block_tiled`).
#[allow(clippy::too_many_arguments)]
fn attention_dense_tiled(
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
) {
    let hd = heads * dh;
    let (lq, lk) = (q.len() / (batch * hd), k.len() / (batch * hd));
    if lk == 0 {
        // no key to see (and nothing to pack): zeros, as for a block without keys
        out[..batch * lq * hd].fill(0.0);
        return;
    }
    // blocks of at most TILED_BLOCK_ROWS queries, whole tiles, of sizes differing by one tile at most
    let tiles_per_head = lq.div_ceil(TILE_ROWS);
    let blocks = tiles_per_head.div_ceil(TILED_BLOCK_ROWS / TILE_ROWS);
    let block_start = |i: usize| super::even_split_start(i, blocks, lq, TILE_ROWS);
    let dst = SendPtr(out.as_mut_ptr());
    let keys_of = |b: usize| visible_keys(kv_lens, b, lk);
    let (k_len, v_len) = (tiles::packed_keys_len(lk, dh), tiles::packed_values_len(lk, dh));
    with_local(&PACKED_KV, |(pk, pv)| {
        let (pk, pv) = (self::scratch(pk, batch * heads * k_len), self::scratch(pv, batch * heads * v_len));
        // each (batch, head): its n visible keys and values (a causal block reads a prefix of them)
        let pack = |(bh, (kp, vp)): (usize, (&mut [f32], &mut [f32]))| {
            let (b, h) = (bh / heads, bh % heads);
            let n = keys_of(b);
            tiles::pack_keys(&k[b * lk * hd + h * dh..], hd, n, dh, kp);
            tiles::pack_values(&v[b * lk * hd + h * dh..], hd, n, dh, vp);
        };
        if batch * heads > 1 && 2 * batch * lq * lk * hd >= PARALLEL_MIN_WORK {
            pk.par_chunks_mut(k_len).zip(pv.par_chunks_mut(v_len)).enumerate().for_each(pack);
        } else {
            pk.chunks_mut(k_len).zip(pv.chunks_mut(v_len)).enumerate().for_each(pack);
        }
        let (pk, pv) = (&*pk, &*pv);
        run_blocks(batch * heads * blocks, 2 * batch * lq * lk * hd, |scr, task| {
            let blk = QueryBlock::of(task, heads, blocks, block_start, kv_lens, lk, causal);
            let (b, h, i0, rows, keys, n) = (blk.b, blk.h, blk.i0, blk.rows, blk.keys, blk.n);
            let row_keys = |r: usize| blk.row_keys(r);
            let o = dst.get().wrapping_add((b * lq + i0) * hd + h * dh);
            if keys == 0 {
                // SAFETY: rows `i0..i0 + rows` of batch b, head h are this task's own part of `out`.
                unsafe { fill_rows(o, hd, rows, dh, 0.0) };
                return;
            }
            let bh = b * heads + h;
            let head = PackedHead { keys: &pk[bh * k_len..][..k_len], values: &pv[bh * v_len..][..v_len], packed_keys: n };
            // SAFETY: this task's own rows of out (as above).
            unsafe { attend_block_tiled(scr, &q[(b * lq + i0) * hd + h * dh..], head, rows, keys, &row_keys, hd, dh, scale, o) };
        });
    });
}

/// Keys visible to batch item `b`: `kv_lens[b]`, or all `lk`.
pub(super) fn visible_keys(kv_lens: Option<&[i32]>, b: usize, lk: usize) -> usize {
    kv_lens.map_or(lk, |l| l[b] as usize)
}

/// One task of a blocked dense attention: block `task % blocks` of the queries of (batch `b`,
/// head `h`), rows `i0..i0 + rows`, over the `n` keys visible to `b`.
#[derive(Clone, Copy)]
pub(super) struct QueryBlock {
    pub(super) b: usize,
    pub(super) h: usize,
    pub(super) i0: usize,
    pub(super) rows: usize,
    /// Keys visible to the batch item.
    pub(super) n: usize,
    /// Keys the block reads: with `causal`, row `i` sees `min(n, i + 1)`.
    keys: usize,
    causal: bool,
}

impl QueryBlock {
    /// Task `task` of `batch·heads·blocks`, block `i` starting at query row `start(i)`.
    pub(super) fn of(
        task: usize,
        heads: usize,
        blocks: usize,
        start: impl Fn(usize) -> usize,
        kv_lens: Option<&[i32]>,
        lk: usize,
        causal: bool,
    ) -> Self {
        let (b, h, i) = (task / (heads * blocks), task / blocks % heads, task % blocks);
        let (i0, n) = (start(i), visible_keys(kv_lens, b, lk));
        let rows = start(i + 1) - i0;
        QueryBlock { b, h, i0, rows, n, keys: if causal { n.min(i0 + rows) } else { n }, causal }
    }

    /// Keys visible to block row `r`.
    pub(super) fn row_keys(&self, r: usize) -> usize {
        if self.causal { self.n.min(self.i0 + r + 1) } else { self.n }
    }
}

/// The keys and values of one (batch, head) as packed by `tiles::pack_keys` and `tiles::pack_values`
/// for its `packed_keys` visible keys.
#[derive(Clone, Copy)]
struct PackedHead<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    packed_keys: usize,
}

thread_local! {
    /// The calling thread's buffers for the packed keys and values of [`attention_dense_tiled`],
    /// kept between calls (about the size of one call's `k` and `v`).
    static PACKED_KV: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One block of [`attention_dense_tiled`]: a register tile of queries at a time
/// ([`tiles::tile_rows`]) from scores through the softmax to the weighted values, the tile's score
/// rows staying in L1. `q`: the block's first query
/// row (row stride `hd`); `head`: the packed keys and values of its (batch, head); `keys`: keys the
/// block reads (≤ `head.packed_keys`); `row_keys(r)`: keys visible to block row `r`.
///
/// # Safety
/// `out` must hold `rows` rows of `dh` values at stride `hd`, owned by the caller's task.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block_tiled(
    scr: &mut BlockScratch,
    q: &[f32],
    head: PackedHead<'_>,
    rows: usize,
    keys: usize,
    row_keys: &dyn Fn(usize) -> usize,
    hd: usize,
    dh: usize,
    scale: f32,
    out: *mut f32,
) {
    let ld = tiles::padded_keys(keys);
    let tile = tiles::tile_rows(super::isa::active());
    let s = self::scratch(&mut scr.scores, tile * ld);
    for t0 in (0..rows).step_by(tile) {
        let tr = tile.min(rows - t0);
        // the keys any row of the tile sees (row_keys grows with the row)
        let tile_keys = row_keys(t0 + tr - 1);
        let mut inv = [0f32; TILE_ROWS_512];
        if tile_keys > 0 {
            let panels = tile_keys.div_ceil(tiles::KEY_PANEL);
            tiles::scores(&q[t0 * hd..], hd, tr, head.keys, panels, dh, s, ld);
            for (r, sr) in s.chunks_exact_mut(ld).take(tr).enumerate() {
                let sum = softmax_numerators(&mut sr[..tile_keys], row_keys(t0 + r), scale);
                inv[r] = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            }
        }
        // SAFETY: rows t0..t0 + tr of the caller's out rows.
        unsafe { tiles::weighted_values(s, ld, tile_keys, head.values, head.packed_keys, dh, &inv[..tr], out.add(t0 * hd), hd) };
    }
}

/// Up to this many multiply-adds per (batch, head) (`2 · lq · lk · dh` for [`attention_dense`],
/// `3 · T² · dh` for the rel-pos attention) the scalar loop runs: below it, the sgemm calls (packing,
/// buffers) cost more than they save (measured: 8 × 8 keys of 64 dims take ~3 µs either way).
pub(super) const SCALAR_MAX_HEAD_WORK: usize = 1 << 13;

/// [`SCALAR_MAX_HEAD_WORK`] of the dense attention when its register tiles run: they pay off
/// sooner (`cargo bench --bench cpu_paths -- attention_dense_crossover`: at 2048 multiply-adds
/// 1.13 µs against the scalar loop's 1.03 µs, at 8192 2.06 µs against 3.17 µs).
const SCALAR_MAX_HEAD_WORK_TILED: usize = 1 << 12;

/// Queries per task of the blocked attentions: a score block of 128 queries × 1000 keys is 512 KB.
pub(super) const BLOCK_ROWS: usize = 128;

/// Queries per task of the dense attention's register-tile path, at most (the S3Gen
/// self-attention over 814 frames: 3 blocks of 45 or 46 tiles per (batch, head)).
const TILED_BLOCK_ROWS: usize = 64 * TILE_ROWS;

/// `C = A · B` (or `C += A · B` with `accumulate`) for `A` [m, k], `B` [k, n], `C` [m, n] given by
/// pointers and element strides as in `matrixmultiply::sgemm`, on the calling thread (matrixmultiply
/// is built without its threading feature: the Cpu backend's parallelism is rayon's, and these calls
/// run inside rayon tasks).
///
/// # Safety
/// Every element `a[i·rsa + p·csa]`, `b[p·rsb + j·csb]`, `c[i·rsc + j·csc]` must be in bounds, `c`
/// must not overlap `a` or `b`, and no other thread may access `c` meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sgemm_serial(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    accumulate: bool,
) {
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: an element of C.
                    unsafe { *c.add(i * rsc + j * csc) = 0.0 };
                }
            }
        }
        return;
    }
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: as required of the caller.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            rsa as isize,
            csa as isize,
            b,
            rsb as isize,
            csb as isize,
            beta,
            c,
            rsc as isize,
            csc as isize,
        );
    }
}

/// Softmax numerators of one score row in place: `s[j] ← exp(scale · s[j] − max)` over the first
/// `keys` entries (max of the scaled scores), 0 after them. Returns their f32 sum (0 when
/// `keys == 0`).
pub(super) fn softmax_numerators(s: &mut [f32], keys: usize, scale: f32) -> f32 {
    let (live, masked) = s.split_at_mut(keys);
    masked.fill(0.0);
    // 8 lanes of max and sum that the compiler vectorises; `if x > m` skips NaN as f32::max does
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut chunks = live.chunks_exact_mut(8);
    for c in &mut chunks {
        for (m, x) in m8.iter_mut().zip(c.iter_mut()) {
            *x *= scale;
            if *x > *m {
                *m = *x;
            }
        }
    }
    let mut m = m8.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for x in chunks.into_remainder() {
        *x *= scale;
        m = m.max(*x);
    }
    // 8-lane AVX2+FMA exp (≤ 2 ulp) when available, f32::exp otherwise; summed in the same pass
    super::fastmath::exp_sub_sum_inplace(live, m)
}

/// `out[r] = (p[r] · V) / sums[r]` for the `rows = sums.len()` rows of `p` ([rows, keys], softmax
/// numerators) over value rows `v[j·rsv..][..dh]`, `j < keys`; rows with `sums[r] == 0` (no
/// visible key) get zeros. `out` rows are `out[r·rso..][..dh]`.
///
/// # Safety
/// `v` must hold `keys` rows and `out` `rows` rows of `dh` values at those strides, `out` not
/// overlapping `v`, and no other thread may access those `out` values meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weighted_values(
    p: &[f32],
    sums: &[f32],
    keys: usize,
    v: *const f32,
    rsv: usize,
    dh: usize,
    out: *mut f32,
    rso: usize,
) {
    let rows = sums.len();
    // SAFETY: as required of the caller; p holds rows × keys values.
    unsafe {
        sgemm_serial(rows, keys, dh, p.as_ptr(), keys, 1, v, rsv, 1, out, rso, 1, false);
        for (r, &sum) in sums.iter().enumerate() {
            let o = std::slice::from_raw_parts_mut(out.add(r * rso), dh);
            if sum == 0.0 {
                o.fill(0.0);
            } else {
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            }
        }
    }
}

/// Sets `rows` rows of `dh` values (row stride `stride`) to `value`.
///
/// # Safety
/// The rows must be in bounds and not accessed by another thread meanwhile.
pub(super) unsafe fn fill_rows(out: *mut f32, stride: usize, rows: usize, dh: usize, value: f32) {
    for r in 0..rows {
        // SAFETY: as required of the caller.
        unsafe { std::slice::from_raw_parts_mut(out.add(r * stride), dh).fill(value) };
    }
}

/// Runs `task(scratch, t)` for every `t < tasks`: as rayon tasks when the job has at least
/// [`PARALLEL_MIN_WORK`] multiply-adds, else in order on the calling thread (waking the pool would
/// cost more than it saves).
pub(super) fn run_blocks(tasks: usize, work: usize, task: impl Fn(&mut BlockScratch, usize) + Send + Sync) {
    if tasks > 1 && work >= PARALLEL_MIN_WORK {
        (0..tasks).into_par_iter().for_each(|t| with_local(&SCRATCH, |scr| task(scr, t)));
    } else {
        with_local(&SCRATCH, |scr| (0..tasks).for_each(|t| task(scr, t)));
    }
}

thread_local! {
    /// Each thread's [`BlockScratch`], kept between calls: per call (rayon's `for_each_init`), the
    /// S3Gen estimator's ~10^3 attention calls per synthesis each allocated and zeroed fresh
    /// buffers of hundreds of KB per split.
    static SCRATCH: std::cell::RefCell<BlockScratch> = std::cell::RefCell::new(BlockScratch::default());
}

/// Runs `f` with this thread's value of `key`, kept between calls (the Cpu kernels' scratch
/// buffers), or with a fresh default one if a caller up the stack holds it: a task that waits
/// inside rayon may run another task on the same thread.
pub(super) fn with_local<T: Default + 'static>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T),
) {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut T::default()),
    })
}

/// See [`run_blocks`]: ~0.3 ms of attention on one core (measured on 2 cores: below it, waking the
/// pool costs about what the second core saves).
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Per-task scratch of the blocked attentions (one set per rayon split, reused across its tasks).
#[derive(Default)]
pub(super) struct BlockScratch {
    pub(super) scores: Vec<f32>,
    pub(super) sums: Vec<f32>,
    /// More room (the rel-pos attention's biased queries and position scores).
    pub(super) aux: Vec<f32>,
}

/// The first `len` values of `buf`, grown as needed (contents unspecified).
pub(super) fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// The output pointer that the tasks of a blocked attention write through, each at its own rows and
/// head columns.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: tasks write disjoint elements (see the users).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// (A method, so that closures capture the whole Send + Sync wrapper, not its raw field.)
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// [`attention_dense`] as one scalar loop per (batch, query, head) over `attend_one`: the path of
/// tiny problems and the tests' oracle. Lengths already checked. `pub` only for `bench_support`.
#[allow(clippy::too_many_arguments)]
pub fn attention_dense_scalar(
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
) {
    let hd = heads * dh;
    let (lq, lk) = (q.len() / (batch * hd), k.len() / (batch * hd));
    let mut scores = Vec::new();
    for b in 0..batch {
        let n = kv_lens.map_or(lk, |l| l[b] as usize);
        let kb = &k[b * lk * hd..(b + 1) * lk * hd];
        let vb = &v[b * lk * hd..(b + 1) * lk * hd];
        for i in 0..lq {
            let keys = if causal { n.min(i + 1) } else { n };
            let row = (b * lq + i) * hd;
            for h in 0..heads {
                let (kh, vh) = if keys > 0 {
                    (&kb[h * dh..][..(keys - 1) * hd + dh], &vb[h * dh..][..(keys - 1) * hd + dh])
                } else {
                    (&kb[..0], &vb[..0])
                };
                attend_one(
                    &q[row + h * dh..row + (h + 1) * dh],
                    kh,
                    vh,
                    keys,
                    hd,
                    scale,
                    &mut scores,
                    &mut out[row + h * dh..row + (h + 1) * dh],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_attention_with_uniform_scores_averages_the_visible_values() {
        // q = 0: every visible key has the same score, so the output is the mean of the visible v
        let (batch, lq, lk, heads, dh) = (1, 3, 4, 1, 2);
        let q = vec![0.0; batch * lq * heads * dh];
        let k: Vec<f32> = (0..lk * dh).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..lk * dh).map(|i| (i / dh) as f32).collect(); // v[j] = [j, j]
        let mut out = vec![f32::NAN; lq * dh];
        attention_dense(&q, &k, &v, Some(&[3]), &mut out, batch, heads, dh, 1.0, true).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 0.5, 0.5, 1.0, 1.0]);
        attention_dense(&q, &k, &v, Some(&[3]), &mut out, batch, heads, dh, 1.0, false).unwrap();
        assert_eq!(out, vec![1.0; 6]);
        attention_dense(&q, &k, &v, Some(&[0]), &mut out, batch, heads, dh, 1.0, false).unwrap();
        assert_eq!(out, vec![0.0; 6]);
        assert_eq!(attention_dense(&q, &k, &v, Some(&[5]), &mut out, batch, heads, dh, 1.0, false), Err((0, 5)));
    }
}

#[cfg(test)]
mod blocked_tests {
    use super::*;
    use crate::testing::{assert_close, compare, fresh_seed, random_f32};

    /// Naive `C = A·B` (+ C) over the same strides, in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive_gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        rsa: usize,
        csa: usize,
        b: &[f32],
        rsb: usize,
        csb: usize,
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * rsa + p * csa] as f64 * b[p * rsb + j * csb] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn sgemm_serial_equals_a_naive_product() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        // odd sizes past matrixmultiply's blocks (k past 256, m past 64); strided and transposed
        for (c, &(m, k, n)) in
            [(1, 1, 1), (3, 5, 7), (300, 150, 700), (257, 64, 256), (64, 65, 600), (2, 200, 1)].iter().enumerate()
        {
            let s = seed.wrapping_add(c as u64 * 10);
            // A as the transpose of a [k, m + 3] array (row stride 1, column stride m + 3)
            let a = random_f32(s, k * (m + 3), 1.0);
            let b = random_f32(s + 1, k * (n + 2), 1.0); // B [k, n] with row stride n + 2
            let want = naive_gemm(m, k, n, &a, 1, m + 3, &b, n + 2, 1);
            // C with row stride n + 1; the padding column must stay untouched
            let mut got = vec![f32::NAN; m * (n + 1)];
            // SAFETY: the strides stay inside a, b and got.
            unsafe { sgemm_serial(m, k, n, a.as_ptr(), 1, m + 3, b.as_ptr(), n + 2, 1, got.as_mut_ptr(), n + 1, 1, false) };
            let dense: Vec<f32> = got.chunks_exact(n + 1).flat_map(|r| r[..n].to_vec()).collect();
            let tol = 1e-5 * (k as f64).sqrt();
            assert_close(&format!("m {m} k {k} n {n} seed {s}"), &dense, &want, 1e-5, tol);
            assert!(got.chunks_exact(n + 1).all(|r| r[n].is_nan()), "m {m} k {k} n {n}: wrote outside C");
            // accumulate: C += A·B
            // SAFETY: the same extents and strides as the call above.
            unsafe { sgemm_serial(m, k, n, a.as_ptr(), 1, m + 3, b.as_ptr(), n + 2, 1, got.as_mut_ptr(), n + 1, 1, true) };
            let dense: Vec<f32> = got.chunks_exact(n + 1).flat_map(|r| r[..n].to_vec()).collect();
            let twice: Vec<f32> = want.iter().map(|x| 2.0 * x).collect();
            assert_close(&format!("accumulate m {m} k {k} n {n} seed {s}"), &dense, &twice, 1e-5, 2.0 * tol);
        }
        // k = 0: C = 0 (or unchanged when accumulating)
        let mut c = vec![f32::NAN; 6];
        // SAFETY: k = 0, so a and b are never read; c's 2×3 elements at row stride 3 are in bounds.
        unsafe { sgemm_serial(2, 0, 3, [].as_ptr(), 0, 1, [].as_ptr(), 3, 1, c.as_mut_ptr(), 3, 1, false) };
        assert_eq!(c, [0.0; 6]);
        c.fill(1.5);
        // SAFETY: as above.
        unsafe { sgemm_serial(2, 0, 3, [].as_ptr(), 0, 1, [].as_ptr(), 3, 1, c.as_mut_ptr(), 3, 1, true) };
        assert_eq!(c, [1.5; 6]);
    }

    /// One case of the blocked attention against the scalar loop. Keys past each `kv_lens` are NaN
    /// (must not be read) and `out` starts NaN (must be written everywhere).
    #[allow(clippy::too_many_arguments)]
    fn check_dense(seed: u64, batch: usize, lq: usize, lk: usize, heads: usize, dh: usize, lens: Option<&[i32]>, causal: bool) {
        let hd = heads * dh;
        let q = random_f32(seed, batch * lq * hd, 1.5);
        let mut k = random_f32(seed + 1, batch * lk * hd, 1.0);
        let mut v = random_f32(seed + 2, batch * lk * hd, 1.0);
        if let Some(lens) = lens {
            for (b, &l) in lens.iter().enumerate() {
                k[(b * lk + l as usize) * hd..(b + 1) * lk * hd].fill(f32::NAN);
                v[(b * lk + l as usize) * hd..(b + 1) * lk * hd].fill(f32::NAN);
            }
        }
        let scale = 1.0 / (dh as f32).sqrt();
        let mut want = vec![f32::NAN; q.len()];
        attention_dense_scalar(&q, &k, &v, lens, &mut want, batch, heads, dh, scale, causal);
        let mut got = vec![f32::NAN; q.len()];
        attention_dense_blocked(&q, &k, &v, lens, &mut got, batch, heads, dh, scale, causal, true);
        let what = format!("b {batch} lq {lq} lk {lk} heads {heads} dh {dh} lens {lens:?} causal {causal} seed {seed}");
        assert_close(&what, &got, &want, 1e-5, 1e-5);
        let mut sgemm = vec![f32::NAN; q.len()];
        attention_dense_blocked(&q, &k, &v, lens, &mut sgemm, batch, heads, dh, scale, causal, false);
        assert_close(&format!("sgemm path {what}"), &sgemm, &want, 1e-5, 1e-5);
        // and through the public function (the scalar loop when tiny)
        let mut pub_out = vec![f32::NAN; q.len()];
        attention_dense(&q, &k, &v, lens, &mut pub_out, batch, heads, dh, scale, causal).unwrap();
        assert_close(&format!("attention_dense {what}"), &pub_out, &want, 1e-5, 1e-5);
    }

    #[test]
    fn blocked_dense_attention_equals_the_scalar_loop() {
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        let lens_of = [1usize, 7, 129, 300];
        let shapes = [(3usize, 1usize), (37, 2), (64, 3), (24, 2), (64, 1), (3, 3), (8, 3), (37, 1), (40, 1)];
        let mut case = 0u64;
        for &lq in &lens_of {
            for &lk in &lens_of {
                for causal in [false, true] {
                    let (dh, heads) = shapes[case as usize % shapes.len()];
                    let s = seed.wrapping_add(case * 1000);
                    case += 1;
                    // no kv_lens; then batch 2 with lens {lk, a random one} and {0, lk}
                    check_dense(s, 1, lq, lk, heads, dh, None, causal);
                    let mid = (s % (lk as u64 + 1)) as i32;
                    check_dense(s + 10, 2, lq, lk, heads, dh, Some(&[lk as i32, mid]), causal);
                    check_dense(s + 20, 2, lq, lk, heads, dh, Some(&[0, lk as i32]), causal);
                }
            }
        }
        // a long block edge: lq just past two blocks, keys past one column chunk
        check_dense(seed ^ 7, 2, 2 * BLOCK_ROWS + 1, 401, 2, 64, Some(&[401, 390]), true);
        check_dense(seed ^ 8, 2, 2 * BLOCK_ROWS + 1, 401, 2, 64, Some(&[17, 401]), false);
        // and the register-tile path's longer blocks
        check_dense(seed ^ 9, 1, 2 * TILED_BLOCK_ROWS + 5, 130, 2, 64, None, true);
        check_dense(seed ^ 10, 2, TILED_BLOCK_ROWS + 1, 50, 1, 24, Some(&[50, 3]), false);
        // no keys at all: zeros
        check_dense(seed ^ 11, 2, 9, 0, 2, 64, None, false);
    }

    #[test]
    fn softmax_numerators_scale_mask_and_sum() {
        let mut s = [1.0, 3.0, 2.0, 100.0, f32::NAN];
        let sum = softmax_numerators(&mut s, 3, 0.5);
        let want = [(-1.0f32).exp(), 1.0, (-0.5f32).exp()];
        assert_eq!(&s[..3], &want);
        assert_eq!(&s[3..], &[0.0, 0.0]);
        assert!((sum - want.iter().sum::<f32>()).abs() < 1e-6);
        // more than 8 lanes: the max is found in any lane and in the tail
        for at in 0..19 {
            let mut s: Vec<f32> = (0..19).map(|j| j as f32 * 0.01).collect();
            s[at] = 10.0;
            softmax_numerators(&mut s, 19, 1.0);
            assert_eq!(s[at], 1.0, "max at {at}");
            assert!(s.iter().all(|&x| x > 0.0 && x <= 1.0));
        }
        assert_eq!(softmax_numerators(&mut [5.0, 6.0], 0, 1.0), 0.0);
    }

    #[test]
    fn the_oracle_catches_a_wrong_fast_path() {
        // the comparison above fails for an attention that drops one key (here: the last visible),
        // on the sgemm path (dh 37) and on the register tiles (dh 64, where AVX2 is present)
        for dh in [37, 64] {
            let (batch, lq, lk, heads) = (1, 9, 300, 2);
            let hd = heads * dh;
            let s = fresh_seed();
            let q = random_f32(s, lq * hd, 1.5);
            let (k, v) = (random_f32(s + 1, lk * hd, 1.0), random_f32(s + 2, lk * hd, 1.0));
            let mut want = vec![0.0; q.len()];
            attention_dense_scalar(&q, &k, &v, None, &mut want, batch, heads, dh, 0.3, false);
            let mut got = vec![0.0; q.len()];
            attention_dense_blocked(&q, &k, &v, Some(&[lk as i32 - 1]), &mut got, batch, heads, dh, 0.3, false, true);
            assert!(!compare(&got, &want, 1e-5, 1e-5).ok(), "dh {dh} seed {s}");
        }
    }
}
