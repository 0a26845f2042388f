//! AVX2+FMA register tiles of the blocked dense attention (`attention::attention_dense_blocked`):
//! scores and weighted values computed a few query rows at a time, straight from the row-major q, v
//! and out (no packing of the score rows), with the keys and values of each (batch, head) packed once
//! (keys transposed into panels, values into 16-column chunks) for all the blocks of its queries.
//!
//! Why: through matrixmultiply, the `P · V` product re-packs the whole score block for only
//! `head_dim` (64) output columns, and a 128-query score block (~400 KB over 814 keys) leaves the
//! L1/L2 caches between the score product, the softmax passes and `P · V`. Here a tile of
//! [`TILE_ROWS`] queries keeps its score rows (6 × 814 keys = 19.5 KB) in L1 from the score
//! product through the softmax to `P · V`.
//!
//! - Keys: `pack_keys` writes keys `0..keys` of one head as `⌈keys/16⌉` panels of `[head_dim, 16]`
//!   (`panel[d·16 + t]` = key `16p + t`, value `d`), zeros past `keys`.
//! - Scores: a tile of `R ≤ 6` rows × 16 keys in 12 accumulators; for each `d`, two loads of the
//!   panel and one broadcast of `q[r, d]` per row. Lane order: each score is one FMA chain over
//!   `d = 0, 1, ...` (the scalar loop's order, with fused multiply-adds).
//! - Weighted values: a tile of `R` rows × 16 value columns (8 for a last odd chunk); for each key
//!   `j`, two loads of `v[j]` and one broadcast of `p[r, j]` per row; each output is one FMA chain
//!   over `j = 0, 1, ...`, multiplied by the row's `1/sum` at the store.
//!
//! Each row is computed alone, in an order that does not depend on the other rows of the tile (batch
//! invariance). Needs AVX2 and FMA and a head_dim that is a multiple of 8 ([`available`]).
//!
//! On the AVX-512F path ([`super::isa`]) the same layouts are read a zmm at a time: a score tile of
//! `R` rows × two key panels (one zmm each), a value tile of `R` rows × two 16-column chunks (a last
//! chunk of 8 columns masked); each score and output is the same FMA chain as on AVX2, so the
//! results are equal bit for bit. [`scores`] and [`weighted_values`] take [`super::isa::active`]'s
//! path, the `*_with` forms the one they are given.

use super::isa::Isa;

/// Query rows per register tile on AVX2 (12 accumulators of its 16 registers), and the granularity
/// of the blocked attention's query blocks.
pub(super) const TILE_ROWS: usize = 6;
/// Query rows per register tile on AVX-512F: 24 accumulators of its 32 registers, so that each
/// key (or value) vector loaded serves twice the rows of the AVX2 tile (half the L2 traffic per
/// multiply-add).
pub(super) const TILE_ROWS_512: usize = 12;

/// Query rows per register tile on the path `isa`: [`TILE_ROWS_512`] where it runs AVX-512F,
/// [`TILE_ROWS`] otherwise. Each score and output is the same FMA chain whatever the tile.
pub(super) fn tile_rows(isa: Isa) -> usize {
    if isa.runnable().allows(Isa::Avx512) { TILE_ROWS_512 } else { TILE_ROWS }
}
/// Keys per packed panel (two 8-lane vectors).
pub(super) const KEY_PANEL: usize = 16;

/// `$m::$f::<R>(args)` with `R = rows` for rows `1..=max` (12 or 6: the tile kernels' row counts
/// are const generics); the callers assert `1 ≤ rows ≤ max` beforehand.
macro_rules! by_rows {
    ($rows:expr, $m:ident::$f:ident $args:tt, 12) => {
        by_rows!(@arms $rows, $m::$f $args, [1 2 3 4 5 6 7 8 9 10 11] 12)
    };
    ($rows:expr, $m:ident::$f:ident $args:tt, 6) => {
        by_rows!(@arms $rows, $m::$f $args, [1 2 3 4 5] 6)
    };
    (@arms $rows:expr, $m:ident::$f:ident $args:tt, [$($n:literal)*] $max:literal) => {
        match $rows {
            $($n => $m::$f::<$n> $args,)*
            _ => $m::$f::<$max> $args,
        }
    };
}

/// Whether the tiles can run: an x86-64 CPU with AVX2 and FMA, and `dh` a non-zero multiple of 8.
pub(super) fn available(dh: usize) -> bool {
    dh > 0 && dh.is_multiple_of(8) && super::linear::simd_available()
}

/// Keys rounded up to whole panels.
pub(super) fn padded_keys(keys: usize) -> usize {
    keys.div_ceil(KEY_PANEL) * KEY_PANEL
}

/// Length of [`pack_keys`]' output for `keys` keys of `dh` values.
pub(super) fn packed_keys_len(keys: usize, dh: usize) -> usize {
    padded_keys(keys) * dh
}

/// Packs keys `0..keys` of one head (key `j` at `k[j·rsk..][..dh]`) into `out` as panels of
/// [`KEY_PANEL`] keys: `out[(p·dh + d)·16 + t] = k[(16p + t)·rsk + d]`, zeros for keys past `keys`.
/// Writes all of `out[..packed_keys_len(keys, dh)]` and nothing after it.
pub(super) fn pack_keys(k: &[f32], rsk: usize, keys: usize, dh: usize, out: &mut [f32]) {
    let panels = keys.div_ceil(KEY_PANEL);
    for (p, panel) in out[..panels * dh * KEY_PANEL].chunks_exact_mut(dh * KEY_PANEL).enumerate() {
        let n = KEY_PANEL.min(keys - p * KEY_PANEL);
        let rows: [&[f32]; KEY_PANEL] = std::array::from_fn(|t| if t < n { &k[(p * KEY_PANEL + t) * rsk..][..dh] } else { &[] });
        // written in order, the panel's 16 key rows read across (they stay in L1)
        for (d, dst) in panel.chunks_exact_mut(KEY_PANEL).enumerate() {
            for (x, row) in dst[..n].iter_mut().zip(&rows) {
                *x = row[d];
            }
            dst[n..].fill(0.0);
        }
    }
}

/// Raw scores of `rows ≤ 6` queries (query `r` at `q[r·rsq..][..dh]`) against the first `panels`
/// panels of `packed` (from [`pack_keys`]): `s[r·lds + j] = Σ_d q[r, d]·key_j[d]` for
/// `j < 16·panels` (padding keys give 0).
///
/// # Panics
/// If the CPU lacks AVX2/FMA or `dh` is not a multiple of 8 (see [`available`]), or a slice is too
/// short for these extents.
#[allow(clippy::too_many_arguments)]
pub(super) fn scores(q: &[f32], rsq: usize, rows: usize, packed: &[f32], panels: usize, dh: usize, s: &mut [f32], lds: usize) {
    scores_with(super::isa::active(), q, rsq, rows, packed, panels, dh, s, lds);
}

/// [`scores`] on the path `isa` (AVX-512F where it allows and the CPU has it, else AVX2).
#[allow(clippy::too_many_arguments)]
pub(super) fn scores_with(
    isa: Isa,
    q: &[f32],
    rsq: usize,
    rows: usize,
    packed: &[f32],
    panels: usize,
    dh: usize,
    s: &mut [f32],
    lds: usize,
) {
    assert!(available(dh) && (1..=tile_rows(isa)).contains(&rows), "attention tiles: not available for dh {dh}, rows {rows}");
    assert!(q.len() >= (rows - 1) * rsq + dh, "attention tiles: q too short");
    assert!(packed.len() >= panels * dh * KEY_PANEL, "attention tiles: packed keys too short");
    assert!(lds >= panels * KEY_PANEL && s.len() >= (rows - 1) * lds + panels * KEY_PANEL, "attention tiles: s too short");
    #[cfg(target_arch = "x86_64")]
    if isa.runnable().allows(Isa::Avx512) {
        // SAFETY: AVX-512F is present (runnable), and the asserts above bound every access.
        unsafe {
            let (q, k, s) = (q.as_ptr(), packed.as_ptr(), s.as_mut_ptr());
            by_rows!(rows, avx512::scores_tile(q, rsq, k, panels, dh, s, lds), 12)
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present (available), and the asserts above bound every access.
    unsafe {
        let (q, k, s) = (q.as_ptr(), packed.as_ptr(), s.as_mut_ptr());
        by_rows!(rows, avx::scores_tile(q, rsq, k, panels, dh, s, lds), 6)
    }
}

/// Length of [`pack_values`]' output for `keys` values of `dh` columns.
pub(super) fn packed_values_len(keys: usize, dh: usize) -> usize {
    dh.div_ceil(KEY_PANEL) * KEY_PANEL * keys
}

/// Packs values `0..keys` of one head (value `j` at `v[j·rsv..][..dh]`) into `out` as `⌈dh/16⌉`
/// column chunks of `[keys, 16]`: `out[(ch·keys + j)·16 + t] = v[j·rsv + 16ch + t]`, zeros for columns
/// past `dh`. Writes all of `out[..packed_values_len(keys, dh)]` and nothing after it.
///
/// Why: read in place, a 16-column chunk of the values sits at a stride of `heads·dh` floats (2 KB in
/// S3Gen's estimator), so that every pass of a tile over 814 keys touched ~400 pages; packed, it is
/// 52 KB read in order. Measured (`cargo bench --bench cpu_paths -- attention_dense_s3gen`, blocked,
/// 2 cores): 42.3 ms → 38.8 ms.
pub(super) fn pack_values(v: &[f32], rsv: usize, keys: usize, dh: usize, out: &mut [f32]) {
    let chunks = dh.div_ceil(KEY_PANEL);
    let out = &mut out[..chunks * keys * KEY_PANEL];
    for (j, row) in v.chunks(rsv).take(keys).enumerate() {
        for (ch, src) in row[..dh].chunks(KEY_PANEL).enumerate() {
            let dst = &mut out[(ch * keys + j) * KEY_PANEL..][..KEY_PANEL];
            if let (Ok(dst), Ok(src)) = (<&mut [f32; KEY_PANEL]>::try_from(&mut *dst), <&[f32; KEY_PANEL]>::try_from(src)) {
                // a whole chunk: a fixed-size copy (a memmove call per 64 bytes was ~4% of the attention)
                *dst = *src;
            } else {
                dst[..src.len()].copy_from_slice(src);
                dst[src.len()..].fill(0.0);
            }
        }
    }
}

/// `out[r·rso + c] = inv[r] · Σ_{j < keys} p[r·ldp + j] · v_j[c]` for `r < inv.len() ≤ 6`, `c < dh`,
/// with the values packed by [`pack_values`] for `packed_keys ≥ keys` keys.
///
/// # Safety
/// `out` must hold `inv.len()` rows of `dh` values at stride `rso`, not overlapping `p` or `packed`,
/// and no other thread may access them meanwhile.
///
/// # Panics
/// As [`scores`], or if `p` or `packed` is too short.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weighted_values(
    p: &[f32],
    ldp: usize,
    keys: usize,
    packed: &[f32],
    packed_keys: usize,
    dh: usize,
    inv: &[f32],
    out: *mut f32,
    rso: usize,
) {
    // SAFETY: forwarded (the caller's contract).
    unsafe { weighted_values_with(super::isa::active(), p, ldp, keys, packed, packed_keys, dh, inv, out, rso) }
}

/// [`weighted_values`] on the path `isa` (AVX-512F where it allows and the CPU has it, else AVX2).
///
/// # Safety
/// As [`weighted_values`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn weighted_values_with(
    isa: Isa,
    p: &[f32],
    ldp: usize,
    keys: usize,
    packed: &[f32],
    packed_keys: usize,
    dh: usize,
    inv: &[f32],
    out: *mut f32,
    rso: usize,
) {
    let rows = inv.len();
    assert!(available(dh) && (1..=tile_rows(isa)).contains(&rows), "attention tiles: not available for dh {dh}, rows {rows}");
    assert!(ldp >= keys && p.len() >= (rows - 1) * ldp + keys, "attention tiles: p too short");
    assert!(
        keys <= packed_keys && packed.len() >= dh.div_ceil(KEY_PANEL) * packed_keys * KEY_PANEL,
        "attention tiles: packed values too short"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.runnable().allows(Isa::Avx512) {
        // SAFETY: AVX-512F is present (runnable), p and packed are bounded by the asserts, out by
        // the caller.
        unsafe {
            let (pp, vp) = (p.as_ptr(), packed.as_ptr());
            by_rows!(rows, avx512::values_tile(pp, ldp, keys, vp, packed_keys, dh, inv, out, rso), 12)
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present, p and packed are bounded by the asserts, out by the caller.
    unsafe {
        let (pp, vp) = (p.as_ptr(), packed.as_ptr());
        by_rows!(rows, avx::values_tile(pp, ldp, keys, vp, packed_keys, dh, inv, out, rso), 6)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::KEY_PANEL;

    /// See [`super::scores`] (extents already checked).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_tile<const R: usize>(
        q: *const f32,
        rsq: usize,
        packed: *const f32,
        panels: usize,
        dh: usize,
        s: *mut f32,
        lds: usize,
    ) {
        for p in 0..panels {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            // SAFETY (all pointer arithmetic below): within the extents checked by `scores`.
            unsafe {
                let panel = packed.add(p * dh * KEY_PANEL);
                for d in 0..dh {
                    let k0 = _mm256_loadu_ps(panel.add(d * KEY_PANEL));
                    let k1 = _mm256_loadu_ps(panel.add(d * KEY_PANEL + 8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*q.add(r * rsq + d));
                        a[0] = _mm256_fmadd_ps(x, k0, a[0]);
                        a[1] = _mm256_fmadd_ps(x, k1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let dst = s.add(r * lds + p * KEY_PANEL);
                    _mm256_storeu_ps(dst, a[0]);
                    _mm256_storeu_ps(dst.add(8), a[1]);
                }
            }
        }
    }

    /// See [`super::weighted_values`] (extents already checked).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn values_tile<const R: usize>(
        p: *const f32,
        ldp: usize,
        keys: usize,
        packed: *const f32,
        packed_keys: usize,
        dh: usize,
        inv: &[f32],
        out: *mut f32,
        rso: usize,
    ) {
        // SAFETY (all pointer arithmetic below): within the extents checked by `weighted_values`
        // and guaranteed by its caller.
        unsafe {
            for c0 in (0..dh).step_by(KEY_PANEL) {
                let chunk = packed.add(c0 * packed_keys);
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for j in 0..keys {
                    let vr = chunk.add(j * KEY_PANEL);
                    let (v0, v1) = (_mm256_loadu_ps(vr), _mm256_loadu_ps(vr.add(8)));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*p.add(r * ldp + j));
                        a[0] = _mm256_fmadd_ps(w, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(w, v1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let f = _mm256_set1_ps(inv[r]);
                    let dst = out.add(r * rso + c0);
                    _mm256_storeu_ps(dst, _mm256_mul_ps(a[0], f));
                    if c0 + 8 < dh {
                        // (dh is a multiple of 8: a last chunk of 8 columns stores one vector)
                        _mm256_storeu_ps(dst.add(8), _mm256_mul_ps(a[1], f));
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::KEY_PANEL;

    /// See [`super::scores`] (extents already checked): two panels per pass (one zmm each), the
    /// last one alone when their number is odd.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_tile<const R: usize>(
        q: *const f32,
        rsq: usize,
        packed: *const f32,
        panels: usize,
        dh: usize,
        s: *mut f32,
        lds: usize,
    ) {
        let mut p = 0;
        while p < panels {
            // SAFETY: within the extents checked by `scores`.
            unsafe {
                if p + 1 < panels {
                    scores_panels::<R, 2>(q, rsq, packed.add(p * dh * KEY_PANEL), dh, s.add(p * KEY_PANEL), lds);
                    p += 2;
                } else {
                    scores_panels::<R, 1>(q, rsq, packed.add(p * dh * KEY_PANEL), dh, s.add(p * KEY_PANEL), lds);
                    p += 1;
                }
            }
        }
    }

    /// `R` rows × `P` consecutive key panels from `panel` (the next one `dh·16` values on), stored
    /// at `s` (rows of stride `lds`).
    ///
    /// # Safety
    /// AVX-512F present; extents as [`super::scores`] checks them.
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_panels<const R: usize, const P: usize>(
        q: *const f32,
        rsq: usize,
        panel: *const f32,
        dh: usize,
        s: *mut f32,
        lds: usize,
    ) {
        // SAFETY (all pointer arithmetic below): within the extents checked by `scores`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for d in 0..dh {
                let k: [__m512; P] = std::array::from_fn(|c| _mm512_loadu_ps(panel.add((c * dh + d) * KEY_PANEL)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*q.add(r * rsq + d));
                    for (v, kc) in a.iter_mut().zip(&k) {
                        *v = _mm512_fmadd_ps(x, *kc, *v);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (c, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(s.add(r * lds + c * KEY_PANEL), *v);
                }
            }
        }
    }

    /// See [`super::weighted_values`] (extents already checked): two 16-column chunks per pass,
    /// the last one alone when their number is odd; a last chunk of 8 columns masked.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn values_tile<const R: usize>(
        p: *const f32,
        ldp: usize,
        keys: usize,
        packed: *const f32,
        packed_keys: usize,
        dh: usize,
        inv: &[f32],
        out: *mut f32,
        rso: usize,
    ) {
        let chunks = dh.div_ceil(KEY_PANEL);
        let mut ch = 0;
        while ch < chunks {
            // SAFETY: within the extents checked by `weighted_values` and its caller's contract.
            unsafe {
                let t = Values { p, ldp, keys, chunk: packed.add(ch * KEY_PANEL * packed_keys), packed_keys, inv, rso };
                let c0 = ch * KEY_PANEL;
                let cols = dh - c0;
                if ch + 1 < chunks {
                    values_chunks::<R, 2>(t, out.add(c0), cols.min(2 * KEY_PANEL));
                    ch += 2;
                } else {
                    values_chunks::<R, 1>(t, out.add(c0), cols.min(KEY_PANEL));
                    ch += 1;
                }
            }
        }
    }

    /// The operands of one value tile: `p` (rows of stride `ldp`) over `keys` keys, the first of
    /// its chunks (the next one `packed_keys·16` values on), the rows' `1/sum` and out's stride.
    #[derive(Clone, Copy)]
    struct Values<'a> {
        p: *const f32,
        ldp: usize,
        keys: usize,
        chunk: *const f32,
        packed_keys: usize,
        inv: &'a [f32],
        rso: usize,
    }

    /// `R` rows × `P` chunks, `cols` real columns (`16·(P − 1) < cols ≤ 16·P`), stored at `out`.
    ///
    /// # Safety
    /// AVX-512F present; extents as [`super::weighted_values`] checks them and its caller
    /// guarantees.
    #[target_feature(enable = "avx512f")]
    unsafe fn values_chunks<const R: usize, const P: usize>(t: Values<'_>, out: *mut f32, cols: usize) {
        // SAFETY (all pointer arithmetic below): as the contract says; the mask keeps the stores
        // of a last 8-column chunk within dh.
        unsafe {
            let mask: [__mmask16; P] = std::array::from_fn(|c| {
                let n = cols.saturating_sub(c * KEY_PANEL).min(KEY_PANEL);
                ((1u32 << n) - 1) as __mmask16
            });
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for j in 0..t.keys {
                let v: [__m512; P] = std::array::from_fn(|c| _mm512_loadu_ps(t.chunk.add((c * t.packed_keys + j) * KEY_PANEL)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*t.p.add(r * t.ldp + j));
                    for (x, vc) in a.iter_mut().zip(&v) {
                        *x = _mm512_fmadd_ps(w, *vc, *x);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let f = _mm512_set1_ps(t.inv[r]);
                for (c, x) in a.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(r * t.rso + c * KEY_PANEL), mask[c], _mm512_mul_ps(*x, f));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, fresh_seed, random_f32};

    #[test]
    fn tiles_equal_naive_products_at_odd_extents() {
        if !available(8) {
            eprintln!("no AVX2+FMA on this CPU: the tiles are not used here");
            return;
        }
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        for (c, &(rows, keys, dh)) in [
            (1, 1, 8),
            (6, 16, 64),
            (5, 17, 24),
            (3, 40, 16),
            (6, 33, 40),
            (2, 0, 8),
            (4, 70, 72),
            (6, 49, 80),
            (12, 33, 64),
            (7, 16, 24),
            (11, 50, 72),
            (25, 20, 16),
        ]
        .iter()
        .enumerate()
        {
            let (mut score_runs, mut value_runs) = (Vec::new(), Vec::new());
            for isa in Isa::tested_paths().into_iter().filter(|i| i.allows(Isa::Avx2)) {
                let s = seed.wrapping_add(c as u64 * 10);
                let (rsq, rsk) = (dh + 5, dh + 3);
                let q = random_f32(s, (rows - 1) * rsq + dh, 1.0);
                let k = random_f32(s + 1, keys.max(1) * rsk, 1.0);
                let panels = keys.div_ceil(KEY_PANEL);
                assert_eq!(packed_keys_len(keys, dh), panels * dh * KEY_PANEL);
                // poisoned: every element up to the length is written, none after it
                let mut packed = vec![f32::NAN; packed_keys_len(keys, dh) + 3];
                pack_keys(&k, rsk, keys, dh, &mut packed);
                assert!(packed[..packed_keys_len(keys, dh)].iter().all(|x| !x.is_nan()), "pack_keys left a hole");
                assert!(packed[packed_keys_len(keys, dh)..].iter().all(|x| x.is_nan()), "pack_keys wrote past its length");
                let lds = padded_keys(keys) + 3;
                let mut sc = vec![f32::NAN; rows * lds];
                // whole tiles of the path's rows, as the attention takes them
                let tile = tile_rows(isa);
                for t0 in (0..rows).step_by(tile) {
                    let tr = tile.min(rows - t0);
                    scores_with(isa, &q[t0 * rsq..], rsq, tr, &packed, panels, dh, &mut sc[t0 * lds..], lds);
                }
                score_runs.push(sc.clone());
                let what = format!("{isa} rows {rows} keys {keys} dh {dh} seed {s}");
                for r in 0..rows {
                    for j in 0..padded_keys(keys) {
                        let want: f64 =
                            if j < keys { (0..dh).map(|d| q[r * rsq + d] as f64 * k[j * rsk + d] as f64).sum() } else { 0.0 };
                        let got = sc[r * lds + j] as f64;
                        assert!((got - want).abs() <= 1e-5 * (dh as f64).sqrt(), "{what}: score [{r}, {j}] {got} want {want}");
                    }
                    assert!(
                        sc[r * lds + padded_keys(keys)..(r + 1) * lds].iter().all(|x| x.is_nan()),
                        "{what}: wrote past the keys"
                    );
                }
                // weighted values: p [rows, keys] with stride ldp; out rows of stride rso, padding untouched
                let (ldp, rsv, rso) = (keys + 2, dh + 7, dh + 1);
                let p = random_f32(s + 2, rows * ldp, 1.0);
                let v = random_f32(s + 3, keys.max(1) * rsv, 1.0);
                let inv: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
                let mut out = vec![f32::NAN; rows * rso];
                // the values of more keys than the tile reads (a causal block's later rows)
                let packed_keys = keys + 3;
                let vlen = packed_values_len(packed_keys, dh);
                assert_eq!(vlen, dh.div_ceil(KEY_PANEL) * KEY_PANEL * packed_keys);
                let mut vp = vec![f32::NAN; vlen + 5];
                let mut v_long = v.clone();
                v_long.extend(random_f32(s + 5, 3 * rsv, 1.0));
                pack_values(&v_long, rsv, packed_keys, dh, &mut vp);
                assert!(vp[..vlen].iter().all(|x| !x.is_nan()), "pack_values left a hole");
                assert!(vp[vlen..].iter().all(|x| x.is_nan()), "pack_values wrote past its length");
                for t0 in (0..rows).step_by(tile) {
                    let tr = tile.min(rows - t0);
                    // SAFETY: out holds rows rows of dh values at stride rso.
                    unsafe {
                        weighted_values_with(
                            isa,
                            &p[t0 * ldp..],
                            ldp,
                            keys,
                            &vp,
                            packed_keys,
                            dh,
                            &inv[t0..t0 + tr],
                            out.as_mut_ptr().add(t0 * rso),
                            rso,
                        )
                    };
                }
                value_runs.push(out.clone());
                let mut want = Vec::new();
                let mut got = Vec::new();
                for r in 0..rows {
                    for c in 0..dh {
                        let sum: f64 = (0..keys).map(|j| p[r * ldp + j] as f64 * v[j * rsv + c] as f64).sum();
                        want.push((sum * inv[r] as f64) as f32);
                        got.push(out[r * rso + c]);
                    }
                    assert!(out[r * rso + dh..(r + 1) * rso].iter().all(|x| x.is_nan()), "{what}: wrote past the row");
                }
                assert_close(&format!("values {what}"), &got, &want, 1e-5, 1e-5 * (keys.max(1) as f64).sqrt());
            }
            // AVX2 and AVX-512 run the same FMA chains: equal bits
            for runs in [&score_runs, &value_runs] {
                for w in runs.windows(2) {
                    assert!(w[0].iter().zip(&w[1]).all(|(a, b)| a.to_bits() == b.to_bits()), "paths differ at extents {c}");
                }
            }
        }
    }

    #[test]
    fn tiles_refuse_what_they_cannot_do() {
        assert!(!available(0) && !available(12) && !available(7));
        if !available(8) {
            return;
        }
        let r = std::panic::catch_unwind(|| scores_with(Isa::Avx2, &[0.0; 8 * 7], 8, 7, &[0.0; 128], 1, 8, &mut [0.0; 128], 16));
        assert!(r.is_err(), "7 rows is more than an AVX2 tile");
        let r = std::panic::catch_unwind(|| scores(&[0.0; 8 * 13], 8, 13, &[0.0; 128], 1, 8, &mut [0.0; 16 * 13], 16));
        assert!(r.is_err(), "13 rows is more than any tile");
        let r = std::panic::catch_unwind(|| scores(&[0.0; 8], 8, 1, &[0.0; 127], 1, 8, &mut [0.0; 16], 16));
        assert!(r.is_err(), "a short panel");
    }
}
