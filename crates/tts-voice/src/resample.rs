//! The two resamplers of voice cloning, each an exact port of the one the reference calls:
//!
//! - [`Resampler::Soxr`]: `librosa.resample(y, orig_sr, target_sr)` (librosa 0.11, `res_type="soxr_hq"`),
//!   which `librosa.load(path, sr=…)` and `prepare_conditionals` use. It calls libsoxr through
//!   python-soxr 1.1.0; this crate calls the same C library, loaded at run time ([`soxr`]).
//! - [`Resampler::Torchaudio`]: `torchaudio.transforms.Resample(from, to)` with its defaults
//!   (`sinc_interp_hann`, `lowpass_filter_width` 6, `rolloff` 0.99), as S3Gen's `get_resampler`
//!   builds it (s3gen.py), ported here in Rust ([`torchaudio_resample`]).
use rayon::prelude::*;

use crate::{Error, Result};

pub mod soxr;

/// Which reference resampler to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resampler {
    /// librosa's default, `soxr_hq`: libsoxr's HQ recipe, loaded at run time (see [`soxr`]).
    Soxr,
    /// `torchaudio.functional.resample` with its defaults (windowed-sinc polyphase filter).
    Torchaudio,
}

/// Sample rates this crate resamples between, Hz (the same bounds as [`crate::audio`]'s).
pub const MIN_RATE: u32 = 1000;
pub const MAX_RATE: u32 = 384_000;

/// `x` at `from` Hz resampled to `to` Hz the way `how`'s reference does it. Equal rates return `x`
/// unchanged (both references do). Rates outside [`MIN_RATE`, `MAX_RATE`] are an [`Error::Input`];
/// a missing libsoxr is an [`Error::Soxr`].
pub fn resample(x: &[f32], from: u32, to: u32, how: Resampler) -> Result<Vec<f32>> {
    for (field, rate) in [("from", from), ("to", to)] {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(Error::Input { field, detail: format!("sample rate {rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz") });
        }
    }
    if from == to {
        return Ok(x.to_vec());
    }
    match how {
        Resampler::Soxr => soxr::librosa_resample(x, from, to),
        Resampler::Torchaudio => Ok(torchaudio_resample(x, from, to)),
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `torchaudio._get_sinc_resample_kernel` with the defaults: the `new` polyphase filters of
/// `2·width + orig` taps each (`[new][taps]` row-major, rounded to f32 as torchaudio caches them) and
/// `width`, for the rates reduced by their gcd.
fn sinc_kernel(orig: u64, new: u64) -> (Vec<f32>, usize) {
    const LPW: f64 = 6.0; // lowpass_filter_width
    const ROLLOFF: f64 = 0.99;
    let base = orig.min(new) as f64 * ROLLOFF;
    let width = (LPW * orig as f64 / base).ceil() as usize;
    let taps = 2 * width + orig as usize;
    let mut kernel = vec![0f32; new as usize * taps];
    for j in 0..new as usize {
        // torch.arange(0, -new, -1) / new: an int64 tensor divided in the default dtype (float32),
        // then added to the float64 idx
        let phase = (-(j as f32) / new as f32) as f64;
        for k in 0..taps {
            let idx = (k as f64 - width as f64) / orig as f64;
            let t = ((phase + idx) * base).clamp(-LPW, LPW);
            let window = (t * std::f64::consts::PI / LPW / 2.0).cos().powi(2);
            let t = t * std::f64::consts::PI;
            let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
            kernel[j * taps + k] = (sinc * (window * (base / orig as f64))) as f32;
        }
    }
    (kernel, width)
}

/// `torchaudio.functional.resample(x, from, to)` with the defaults (`sinc_interp_hann`,
/// `lowpass_filter_width=6`, `rolloff=0.99`): the rates are reduced by their gcd to `orig`/`new`,
/// `x` is zero-padded by `width` on the left and `width + orig` on the right, each of the `new`
/// polyphase filters is applied with stride `orig` (conv1d), the phases are interleaved and the
/// result is cut to `ceil(new · len / orig)` samples. The kernel is f32 as torchaudio caches it; the
/// sums run in f64 (torch's conv1d sums f32 in an unspecified order: the results agree to ~1e-7).
pub fn torchaudio_resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    let g = gcd(from as u64, to as u64);
    let (orig, new) = (from as u64 / g, to as u64 / g);
    let (kernel, width) = sinc_kernel(orig, new);
    let taps = kernel.len() / new as usize;
    let len = x.len();
    let target = (new as u128 * len as u128).div_ceil(orig as u128) as usize;
    // conv1d outputs floor((len + 2·width + orig − taps) / orig) + 1 = len / orig + 1 frames of `new`
    let frames = len / orig as usize + 1;
    let at = |i: isize| -> f64 { if i < 0 || i as usize >= len { 0.0 } else { x[i as usize] as f64 } };
    let mut out = vec![0f32; target.min(frames * new as usize)];
    out.par_chunks_mut(new as usize).enumerate().for_each(|(f, phases)| {
        let start = (f * orig as usize) as isize - width as isize;
        for (j, y) in phases.iter_mut().enumerate() {
            let row = &kernel[j * taps..(j + 1) * taps];
            let mut acc = 0f64;
            if start >= 0 && start as usize + taps <= len {
                let seg = &x[start as usize..start as usize + taps];
                for (&w, &s) in row.iter().zip(seg) {
                    acc += w as f64 * s as f64;
                }
            } else {
                for (k, &w) in row.iter().enumerate() {
                    acc += w as f64 * at(start + k as isize);
                }
            }
            *y = acc as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_geometry_matches_torchaudio() {
        // 24000 -> 16000: gcd 8000, orig 3, new 2, base 1.98, width ceil(6·3/1.98) = 10
        let (k, w) = sinc_kernel(3, 2);
        assert_eq!((w, k.len()), (10, 2 * 23));
        // phase 0, tap at t = 0 (k = width): sinc 1 · window 1 · scale base/orig
        assert!((k[w] as f64 - 1.98 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn output_length_is_ceil_new_len_over_orig() {
        for (len, from, to, want) in
            [(24000, 24000, 16000, 16000), (1001, 24000, 16000, 668), (7, 44100, 16000, 3), (5, 16000, 24000, 8)]
        {
            assert_eq!(torchaudio_resample(&vec![0.5; len], from, to).len(), want, "{len} {from}->{to}");
        }
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(matches!(resample(&[0.0; 10], 999, 16000, Resampler::Torchaudio), Err(Error::Input { field: "from", .. })));
        assert!(matches!(resample(&[0.0; 10], 16000, 400_000, Resampler::Torchaudio), Err(Error::Input { field: "to", .. })));
    }
}
