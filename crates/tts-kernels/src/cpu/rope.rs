//! Rotary position embedding (Llama-3 scaled frequencies) with the KV-cache write (T3). Mirrors
//! `kernels/rope.cu`.
//!
//! KV caches are `[n_slots, heads, max_len, head_dim]`: one slot per sequence, one row of
//! `head_dim` values per position.

use super::bad_row::{BadRow, RowValue};
use super::kv_value::KvValue;

/// Llama-3 scaled RoPE inverse frequencies (HF `_compute_llama3_parameters`), in f32 exactly as
/// torch computes them: `f_i = 1 / theta^(2i / head_dim)`, wavelength `λ_i = 2π / f_i`; low
/// frequencies (`λ > original_max_position / low_freq_factor`) are divided by `factor`, high ones
/// (`λ < original_max_position / high_freq_factor`) kept, and the band between blended with
/// `s = (original_max_position / λ − low_freq_factor) / (high_freq_factor − low_freq_factor)`:
/// `f' = (1 − s) · f / factor + s · f`. Returns `head_dim / 2` values.
pub fn llama3_inv_freq(
    head_dim: usize,
    theta: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_max_position: usize,
) -> Vec<f32> {
    let old_ctx = original_max_position as f32;
    let low_freq_wavelen = old_ctx / low_freq_factor;
    let high_freq_wavelen = old_ctx / high_freq_factor;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    (0..head_dim / 2)
        .map(|i| {
            let f = 1.0f32 / theta.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = two_pi / f;
            let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
            if wavelen < high_freq_wavelen || wavelen > low_freq_wavelen {
                scaled
            } else {
                let s = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - s) * scaled / factor + s * scaled
            }
        })
        .collect()
}

/// HF `rotate_half` RoPE of one head in place: for `i < d/2`, with `a = pos · inv_freq[i]` (f32),
/// `x[i] ← x[i]·cos a − x[i+d/2]·sin a` and `x[i+d/2] ← x[i+d/2]·cos a + x[i]·sin a`.
fn rope_head(x: &mut [f32], cos_sin: &[(f32, f32)]) {
    let half = cos_sin.len();
    let (lo, hi) = x.split_at_mut(half);
    for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cos_sin) {
        let (x0, x1) = (*a, *b);
        *a = x0 * c - x1 * s;
        *b = x1 * c + x0 * s;
    }
}

/// `(cos, sin)` of `pos · inv_freq[i]`, the angle rounded to f32 first (as torch does).
fn rope_table(pos: i32, inv_freq: &[f32]) -> Vec<(f32, f32)> {
    inv_freq
        .iter()
        .map(|&f| {
            let a = pos as f32 * f;
            (a.cos(), a.sin())
        })
        .collect()
}

/// RoPE on q and k of fused QKV rows, k and v written into the KV cache.
///
/// `qkv`: [rows, 3·heads·d] laid out `[q | k | v]`; `positions`, `slots`: [rows]; `inv_freq`: [d/2];
/// `q_out`: [rows, heads·d]; `k_cache`, `v_cache`: [n_slots, heads, max_len, d] of f32 or bf16
/// (each value rounded once as it is stored, [`KvValue::narrow`]) with
/// `n_slots = k_cache.len() / (heads · max_len · d)`. For row r with `p = positions[r]`,
/// `s = slots[r]`: `q_out[r] = rope(q, p)`, `k_cache[s, h, p] = rope(k_h, p)`, `v_cache[s, h, p] = v_h`.
///
/// Every row is checked before anything is written: returns the first (row, what, value) whose
/// position is outside `0..max_len` or whose slot is outside `0..n_slots`.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv_write<T: KvValue>(
    qkv: &[f32],
    positions: &[i32],
    slots: &[i32],
    inv_freq: &[f32],
    q_out: &mut [f32],
    k_cache: &mut [T],
    v_cache: &mut [T],
    heads: usize,
    max_len: usize,
) -> Result<(), BadRow> {
    let d = 2 * inv_freq.len();
    let hd = heads * d;
    if hd == 0 || max_len == 0 {
        return Ok(());
    }
    let n_slots = k_cache.len() / (hd * max_len);
    for (r, (&p, &s)) in positions.iter().zip(slots).enumerate() {
        if p < 0 || p as usize >= max_len {
            return Err((r, RowValue::Position, p));
        }
        if s < 0 || s as usize >= n_slots {
            return Err((r, RowValue::Slot, s));
        }
    }
    let mut k = vec![0f32; d];
    for ((row, qo), (&p, &s)) in qkv.chunks_exact(3 * hd).zip(q_out.chunks_exact_mut(hd)).zip(positions.iter().zip(slots)) {
        let cs = rope_table(p, inv_freq);
        qo.copy_from_slice(&row[..hd]);
        for h in 0..heads {
            rope_head(&mut qo[h * d..(h + 1) * d], &cs);
            let at = ((s as usize * heads + h) * max_len + p as usize) * d;
            k.copy_from_slice(&row[hd + h * d..hd + (h + 1) * d]);
            rope_head(&mut k, &cs);
            for (c, &x) in k_cache[at..at + d].iter_mut().zip(&k) {
                *c = T::narrow(x);
            }
            for (c, &x) in v_cache[at..at + d].iter_mut().zip(&row[2 * hd + h * d..2 * hd + (h + 1) * d]) {
                *c = T::narrow(x);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_inv_freq_matches_the_spec() {
        // /work/shared/spec/chatterbox.md §3.2: T3's inv_freq (θ 500000, factor 8, low 1, high 4, 8192)
        let f = llama3_inv_freq(64, 500000.0, 8.0, 1.0, 4.0, 8192);
        assert_eq!(f.len(), 32);
        let first = [1.0, 0.663601, 0.440367];
        let last = [8.554969e-07, 5.677088e-07, 3.767323e-07];
        for (i, &w) in first.iter().enumerate() {
            assert!(((f[i] - w) / w).abs() < 2e-6, "f[{i}] = {} want {w}", f[i]);
        }
        for (i, &w) in last.iter().enumerate() {
            let g = f[29 + i];
            assert!(((g - w) / w).abs() < 2e-6, "f[{}] = {g} want {w}", 29 + i);
        }
        // low frequencies divided by 8, high ones kept, the band between blended monotonically
        let plain: Vec<f32> = (0..32).map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / 64.0)).collect();
        assert_eq!(f[0], plain[0]);
        assert_eq!(f[31], plain[31] / 8.0);
        assert!(f.windows(2).all(|w| w[1] < w[0]));
        let max_diff = f.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!((max_diff - 8.9e-4).abs() < 0.05e-4, "max |f' - f| = {max_diff} (spec: 8.9e-4)");
    }

    /// bf16 caches get each f32 cache value rounded to nearest even, and q_out is unchanged.
    #[test]
    fn rope_kv_write_into_bf16_caches_rounds_the_f32_values() {
        use half::bf16;
        let seed = crate::testing::fresh_seed();
        let (heads, d, max_len, n_slots, rows) = (3, 10, 9, 4, 5);
        let hd = heads * d;
        let inv = llama3_inv_freq(d, 500000.0, 8.0, 1.0, 4.0, 8192);
        let qkv = crate::testing::random_f32(seed, rows * 3 * hd, 2.0);
        let (pos, slots) = ([0, 8, 3, 5, 3], [1, 3, 0, 2, 2]);
        let cache_len = n_slots * heads * max_len * d;
        let (mut k32, mut v32, mut q32) = (vec![f32::NAN; cache_len], vec![f32::NAN; cache_len], vec![f32::NAN; rows * hd]);
        rope_kv_write(&qkv, &pos, &slots, &inv, &mut q32, &mut k32, &mut v32, heads, max_len).unwrap();
        let poison = bf16::from_f32(f32::NAN);
        let (mut kb, mut vb, mut qb) = (vec![poison; cache_len], vec![poison; cache_len], vec![f32::NAN; rows * hd]);
        rope_kv_write(&qkv, &pos, &slots, &inv, &mut qb, &mut kb, &mut vb, heads, max_len).unwrap();
        assert_eq!(qb, q32, "seed {seed}");
        let written = k32.iter().filter(|x| !x.is_nan()).count();
        assert_eq!(written, rows * hd, "seed {seed}");
        for (i, (&b, &f)) in kb.iter().zip(&k32).chain(vb.iter().zip(&v32)).enumerate() {
            if f.is_nan() {
                assert!(b.is_nan(), "value {i} written (seed {seed})");
            } else {
                assert_eq!(b.to_bits(), bf16::from_f32(f).to_bits(), "value {i} (seed {seed})");
            }
        }
        let e = rope_kv_write(&qkv[..3 * hd], &[9], &[0], &inv, &mut qb[..hd], &mut kb, &mut vb, heads, max_len).unwrap_err();
        assert_eq!(e, (0, RowValue::Position, 9));
    }

    #[test]
    fn rope_is_a_rotation_of_each_pair() {
        let inv = llama3_inv_freq(8, 10000.0, 1.0, 1.0, 4.0, 8192);
        let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let mut y = x.clone();
        rope_head(&mut y, &rope_table(7, &inv));
        for i in 0..4 {
            let (a, b) = (x[i], x[i + 4]);
            let (c, s) = ((7.0 * inv[i]).cos(), (7.0 * inv[i]).sin());
            assert!((y[i] - (a * c - b * s)).abs() < 1e-6);
            assert!((y[i + 4] - (b * c + a * s)).abs() < 1e-6);
            assert!(((y[i] * y[i] + y[i + 4] * y[i + 4]) - (a * a + b * b)).abs() < 1e-4);
        }
        let mut z = x.clone();
        rope_head(&mut z, &rope_table(0, &inv));
        assert_eq!(z, x);
    }
}
