//! GroupNorm over time-major activations with per-request lengths (S3Gen). Mirrors
//! `kernels/groupnorm.cu`.

/// Elements (`batch·T·C`) from which [`group_norm`] runs its batch items as parallel tasks.
const GROUP_NORM_PAR_MIN: usize = 1 << 15;

/// GroupNorm over time-major activations with per-request lengths, as `torch.nn.GroupNorm(groups,
/// C)` applied to each batch item's valid frames alone: for `t < lens[b]` and channel `c` of group
/// `g = c / (C / groups)`, `out[b, t, c] = (x[b, t, c] − mean) · rsqrt(var + eps) · weight[c] +
/// bias[c]` with the mean and biased variance over `x[b, t', g·C/G .. (g+1)·C/G)`, `t' < lens[b]`.
/// Frames `t ≥ lens[b]` are 0 (x is not read there); a length of 0 gives all zeros; without `lens`
/// every frame of `T` is valid.
///
/// `x`, `out`: `[batch, T, C]` with `C = weight.len()`; `weight`, `bias`: `[C]`; `lens`: `[batch]`;
/// `groups` divides `C` (checked by the op wrapper). Statistics: sums in f64, two passes (per-channel
/// sums of a row-major sweep, then the centred sums of squares about the f32 mean), mean and
/// variance rounded to f32; the output formula in f32 in the order written. Returns the first
/// `(batch, len)` whose length is outside `0..=T`; nothing is written then.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    t: usize,
    groups: usize,
    eps: f32,
) -> Result<(), (usize, i32)> {
    use rayon::prelude::*;
    super::conv::check_lens(lens, t)?;
    let c = weight.len();
    if c == 0 || t == 0 || batch == 0 || groups == 0 {
        return Ok(());
    }
    let cpg = c / groups;
    let item = t * c;
    let one = |(b, (xb, ob)): (usize, (&[f32], &mut [f32]))| {
        let len = lens.map_or(t, |l| l[b] as usize);
        let (valid, padding) = ob.split_at_mut(len * c);
        padding.fill(0.0);
        if len == 0 {
            return;
        }
        let xv = &xb[..len * c];
        let n = (len * cpg) as f64;
        let mut acc = vec![0f64; c];
        for row in xv.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as f64;
            }
        }
        let mean: Vec<f32> = acc.chunks_exact(cpg).map(|s| (s.iter().sum::<f64>() / n) as f32).collect();
        let mean_c: Vec<f32> = (0..c).map(|ch| mean[ch / cpg]).collect();
        acc.fill(0.0);
        for row in xv.chunks_exact(c) {
            for ((a, &v), &m) in acc.iter_mut().zip(row).zip(&mean_c) {
                let d = v as f64 - m as f64;
                *a += d * d;
            }
        }
        let inv: Vec<f32> = acc.chunks_exact(cpg).map(|s| 1.0 / (((s.iter().sum::<f64>() / n) as f32) + eps).sqrt()).collect();
        let inv_c: Vec<f32> = (0..c).map(|ch| inv[ch / cpg]).collect();
        for (o, xr) in valid.chunks_exact_mut(c).zip(xv.chunks_exact(c)) {
            let terms = o.iter_mut().zip(xr).zip(&mean_c).zip(&inv_c).zip(weight);
            match bias {
                Some(bv) => {
                    for ((((o, &v), &m), &s), &w) in terms {
                        *o = (v - m) * s * w;
                    }
                    for (o, &b) in o.iter_mut().zip(bv) {
                        *o += b;
                    }
                }
                None => {
                    for ((((o, &v), &m), &s), &w) in terms {
                        *o = (v - m) * s * w;
                    }
                }
            }
        }
    };
    let (x, out) = (&x[..batch * item], &mut out[..batch * item]);
    if batch > 1 && batch * item >= GROUP_NORM_PAR_MIN {
        x.par_chunks(item).zip(out.par_chunks_mut(item)).enumerate().for_each(one);
    } else {
        x.chunks(item).zip(out.chunks_mut(item)).enumerate().for_each(one);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_f32, random_i32};

    /// GroupNorm straight from its definition, all in f64: for each (b, g) gather the group's values
    /// over the valid frames, their mean and biased variance, then every element of the group.
    #[allow(clippy::too_many_arguments)]
    fn direct_group_norm(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        lens: Option<&[i32]>,
        batch: usize,
        t: usize,
        c: usize,
        groups: usize,
        eps: f64,
    ) -> Vec<f64> {
        let mut out = vec![0f64; batch * t * c];
        let cpg = c / groups;
        for b in 0..batch {
            let len = lens.map_or(t, |l| l[b] as usize);
            for g in 0..groups {
                let chans = g * cpg..(g + 1) * cpg;
                let vals: Vec<f64> = (0..len).flat_map(|f| chans.clone().map(move |ch| x[(b * t + f) * c + ch] as f64)).collect();
                if vals.is_empty() {
                    continue;
                }
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                for f in 0..len {
                    for ch in chans.clone() {
                        let i = (b * t + f) * c + ch;
                        out[i] = (x[i] as f64 - mean) / (var + eps).sqrt() * w[ch] as f64 + bias.map_or(0.0, |v| v[ch] as f64);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn group_norm_matches_its_definition() {
        // (batch, T, C, groups, with lens, with bias)
        let cases = [
            (1, 1, 1, 1, false, true),
            (1, 1, 6, 3, false, false),
            (3, 37, 6, 3, true, true),
            (3, 37, 96, 32, true, true),
            (2, 5, 96, 1, false, true),
            (3, 1, 8, 8, true, false),
            (4, 29, 12, 4, true, true),
            (2, 300, 64, 8, true, true), // large enough for the parallel path
        ];
        for (i, &(batch, t, c, groups, with_lens, with_bias)) in cases.iter().enumerate() {
            let s = 1000 * i as u64 + 7;
            // a non-zero mean per channel and some groups of large scale: cancellation matters
            let x: Vec<f32> =
                random_f32(s, batch * t * c, 2.0).iter().enumerate().map(|(k, v)| v + (k % c) as f32 * 0.5).collect();
            let w = random_f32(s + 1, c, 1.0);
            let b = random_f32(s + 2, c, 1.0);
            let mut lens = random_i32(s + 3, batch, 0, t as i32 + 1);
            lens[0] = t as i32;
            if batch > 2 {
                lens[1] = 0;
            }
            let l = with_lens.then_some(&lens[..]);
            let bias = with_bias.then_some(&b[..]);
            // padding frames of x are NaN: neither implementation may read them
            let mut xp = x.clone();
            if let Some(l) = l {
                for (bb, &len) in l.iter().enumerate() {
                    xp[(bb * t + len as usize) * c..(bb + 1) * t * c].fill(f32::NAN);
                }
            }
            let want = direct_group_norm(&xp, &w, bias, l, batch, t, c, groups, 1e-5);
            let mut out = vec![f32::NAN; batch * t * c];
            group_norm(&xp, &w, bias, l, &mut out, batch, t, groups, 1e-5).unwrap();
            for (k, (&got, &want)) in out.iter().zip(&want).enumerate() {
                let err = (got as f64 - want).abs();
                assert!(err <= 1e-5 + 1e-5 * want.abs(), "case {i} [{k}]: got {got}, want {want}");
            }
            // padding frames are exactly 0
            if let Some(l) = l {
                for (bb, &len) in l.iter().enumerate() {
                    assert!(out[(bb * t + len as usize) * c..(bb + 1) * t * c].iter().all(|&v| v == 0.0), "case {i}");
                }
            }
        }
    }

    #[test]
    fn group_norm_statistics_are_per_group_and_per_item() {
        // each group of each item is an affine copy of one pattern: the output is the same pattern
        let (batch, t, c, groups) = (2, 4, 4, 2);
        let pattern = [1.0f32, -1.0, 3.0, -3.0, 0.5, -0.5, 2.0, -2.0];
        let mut x = vec![0f32; batch * t * c];
        for b in 0..batch {
            for g in 0..groups {
                let (scale, shift) = (1.0 + (2 * b + g) as f32, 10.0 * (b as f32 - g as f32));
                for f in 0..t {
                    for j in 0..2 {
                        x[(b * t + f) * c + g * 2 + j] = pattern[f * 2 + j] * scale + shift;
                    }
                }
            }
        }
        let w = vec![1.0; c];
        let mut out = vec![0f32; batch * t * c];
        group_norm(&x, &w, None, None, &mut out, batch, t, groups, 0.0).unwrap();
        let m = pattern.iter().sum::<f32>() / 8.0;
        let sd = (pattern.iter().map(|p| (p - m) * (p - m)).sum::<f32>() / 8.0).sqrt();
        for b in 0..batch {
            for g in 0..groups {
                for f in 0..t {
                    for j in 0..2 {
                        let got = out[(b * t + f) * c + g * 2 + j];
                        let want = (pattern[f * 2 + j] - m) / sd;
                        assert!((got - want).abs() < 1e-5, "b {b} g {g} t {f} j {j}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn group_norm_rejects_lengths_outside_the_sequence() {
        let (batch, t, c) = (3, 4, 6);
        let x = random_f32(1, batch * t * c, 1.0);
        let w = vec![1.0; c];
        for bad in [[4, 5, 0], [4, -1, 0]] {
            let mut out = vec![f32::NAN; batch * t * c];
            assert_eq!(group_norm(&x, &w, None, Some(&bad), &mut out, batch, t, 3, 1e-5), Err((1, bad[1])));
            assert!(out.iter().all(|v| v.is_nan()), "nothing is written on an error");
        }
    }
}
