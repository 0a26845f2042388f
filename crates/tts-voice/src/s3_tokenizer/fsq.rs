//! The finite scalar quantizer (`FSQCodebook.encode`, `s3tokenizer/model_v2.py`): each encoder row
//! is projected to 8 values `h = tanh(x·Wᵀ + b)·0.999`, each rounded to −1, 0 or 1 (half to even,
//! as `torch.round`), and the digits `h + 1 ∈ {0, 1, 2}` read as a base-3 number, least significant
//! first: `code = Σ_i (round(h_i) + 1)·3^i ∈ [0, 6560]`.
use tts_kernels::checkpoint::Checkpoint;

use super::linear::Linear;
use crate::Result;

/// Projected dimensions (base-3 digits of a code).
pub const FSQ_DIMS: usize = 8;
/// Codes: `3^8`.
pub const CODEBOOK_SIZE: usize = 6561;
/// The factor after tanh: float32 `0.999` (`0.9990000128746033` in the reference).
pub const FSQ_SCALE: f32 = 0.999;

/// `project_down` of the quantizer.
pub struct Fsq {
    /// `[8, D]` with its bias.
    project_down: Linear,
}

impl Fsq {
    /// Reads `{prefix}project_down.{weight (8, D), bias (8)}` (prefix `tokenizer.quantizer._codebook.`).
    pub fn load(ckpt: &Checkpoint, prefix: &str, d: usize) -> Result<Fsq> {
        Ok(Fsq { project_down: Linear::load(ckpt, &format!("{prefix}project_down"), FSQ_DIMS, d, true)? })
    }

    /// `tanh(h·Wᵀ + b)·0.999` for encoder rows `h` `[T, D]`: `[T, 8]`, the values that are rounded.
    pub fn pre_round(&self, h: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; h.len() / self.project_down.in_features() * FSQ_DIMS];
        self.project_down.forward(h, &mut out);
        for v in out.iter_mut() {
            *v = v.tanh() * FSQ_SCALE;
        }
        out
    }
}

/// The code of each row of 8 pre-round values ([`Fsq::pre_round`]): `Σ_i (round(v_i) + 1)·3^i`
/// with `round` half to even (±0.5 → 0, as `torch.round`). Values outside (−1.5, 1.5) cannot come
/// from `tanh·0.999`; they are clamped to a digit so that a code always lies in `[0, 6560]`.
pub fn codes(pre_round: &[f32]) -> Vec<u32> {
    pre_round
        .chunks_exact(FSQ_DIMS)
        .map(|row| {
            row.iter().rev().fold(0u32, |acc, &v| {
                let digit = (v.round_ties_even() + 1.0).clamp(0.0, 2.0) as u32;
                acc * 3 + digit
            })
        })
        .collect()
}

/// How the digits of pre-round values `got` agree with those of a reference `want` (the same
/// layout, `[T, 8]`) where they can be judged: at the values of `want` farther than `margin` from a
/// rounding edge (±0.5). Closer to an edge, an error within `margin` may round either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitAgreement {
    /// Values of `want` clear of every rounding edge by more than the margin.
    pub clear: usize,
    /// The index of the first of those whose digit in `got` differs.
    pub first_mismatch: Option<usize>,
}

/// [`DigitAgreement`] of `got` against `want` with `margin` (over the shorter of the two).
pub fn digit_agreement(got: &[f32], want: &[f64], margin: f64) -> DigitAgreement {
    let mut a = DigitAgreement { clear: 0, first_mismatch: None };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if (w.abs() - 0.5).abs() > margin {
            a.clear += 1;
            if a.first_mismatch.is_none() && (g as f64).round_ties_even() != w.round_ties_even() {
                a.first_mismatch = Some(i);
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_rounded_digits_in_base_three_and_round_ties_to_even() {
        // digit i is round(v_i) + 1, least significant first
        assert_eq!(codes(&[-0.9; 8]), vec![0]);
        assert_eq!(codes(&[0.9; 8]), vec![6560]);
        assert_eq!(codes(&[0.0; 8]), vec![3280]); // Σ 3^i = (3^8 − 1) / 2
        assert_eq!(codes(&[0.6, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), vec![3278]); // 2 + 0·3 + (3280 − 1 − 3)
        // ties: ±0.5 round to (−)0 (half to even), just past them to ±1
        assert_eq!(codes(&[0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), vec![3280]);
        let above = 0.5f32.next_up();
        assert_eq!(codes(&[above, -above, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), vec![3278]);
        assert_eq!(codes(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.999]), vec![3280 + 2187]);
        assert_eq!(codes(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5f32.next_down()]), vec![3280]);
        // two rows; a trailing partial row is not a code
        assert_eq!(codes(&[[-0.9; 8], [0.9; 8]].concat()), vec![0, 6560]);
        // every code of random digits decodes back
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let v = tts_kernels::testing::random_f32(seed, 8 * 500, 0.8);
        let v: Vec<f32> = v.iter().map(|x| x.tanh() * FSQ_SCALE).collect();
        for (row, code) in v.chunks_exact(8).zip(codes(&v)) {
            assert!(code < CODEBOOK_SIZE as u32);
            let mut c = code;
            for &x in row {
                let want = if x > 0.5 {
                    2
                } else if x < -0.5 {
                    0
                } else {
                    1
                };
                assert_eq!(c % 3, want, "{row:?} -> {code}");
                c /= 3;
            }
        }
    }
}
