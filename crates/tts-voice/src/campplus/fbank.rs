//! Kaldi filterbank features as CAMPPlus takes them: `torchaudio.compliance.kaldi.fbank(wav[None],
//! num_mel_bins=80)` with every other option at its default, minus the time mean of each band
//! (`xvector.py:extract_feature`).
//!
//! The defaults: 16 kHz, frames of 400 samples (25 ms) every 160 (10 ms), `snip_edges` (only whole
//! frames: `1 + (len − 400) / 160` of them), no dither, per frame: the DC offset removed, then
//! pre-emphasis 0.97 (`x[j] −= 0.97·x[j−1]`, and `x[0] −= 0.97·x[0]`: Kaldi replicates the first
//! sample), then the Povey window (`hann(400, periodic=False)^0.85`), zero-padded to 512 (round to a
//! power of two); the power spectrum `|X|²`; 80 triangular bands on the HTK mel scale
//! (`1127·ln(1 + f/700)`) from 20 Hz to Nyquist over FFT bins 0–255 (bin 256 has no weight);
//! `ln(max(energy, f32::EPSILON))`.
//!
//! The DFT, the band sums, the logarithm and the mean run in f64 and are rounded once at the end: the
//! reference computes them in float32, and agrees with this to about 1e-6 (absolute, on log values).
use std::f64::consts::PI;

use crate::dsp::Stft;
use crate::{Error, Result};

/// Sample rate the features are defined at (Hz).
pub const SAMPLE_RATE: f64 = 16000.0;
/// Frame length in samples (25 ms).
pub const FRAME_LEN: usize = 400;
/// Frame shift in samples (10 ms).
pub const FRAME_SHIFT: usize = 160;
/// FFT size: the frame length rounded up to a power of two.
pub const N_FFT: usize = 512;
/// Mel bands.
pub const N_MELS: usize = 80;
/// Lowest band edge (Hz); the highest is Nyquist.
pub const LOW_FREQ: f64 = 20.0;
/// Pre-emphasis coefficient.
pub const PREEMPH: f64 = 0.97;

/// Frames of `len` samples: `1 + (len − 400) / 160` (`snip_edges`), 0 if `len < 400`.
pub fn frames(len: usize) -> usize {
    if len < FRAME_LEN { 0 } else { 1 + (len - FRAME_LEN) / FRAME_SHIFT }
}

/// Kaldi's HTK mel scale: `1127·ln(1 + f/700)`.
pub fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Kaldi's Povey window over `n` samples: `(0.5 − 0.5·cos(2πi/(n−1)))^0.85`, `[n]`.
pub fn povey_window(n: usize) -> Vec<f64> {
    (0..n).map(|i| (0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1) as f64).cos()).powf(0.85)).collect()
}

/// One triangular band: its weights over FFT bins `start..start + weights.len()` (zero elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    pub start: usize,
    pub weights: Vec<f64>,
}

/// `torchaudio.compliance.kaldi.get_mel_banks(80, 512, 16000, 20, 0, …)` without VTLN: band `b` rises
/// from mel `lo + b·Δ` to its peak at `lo + (b+1)·Δ` and falls to `lo + (b+2)·Δ`, with `Δ = (mel(8000)
/// − mel(20)) / 81`, evaluated at the mel of each FFT bin's frequency `k·31.25` Hz for `k < 256`.
///
/// Rounded as torchaudio computes it: the band edges and the bins' mels are float32 tensors (torch's
/// default dtype), every operation rounded to float32. This matters: the low bands span two or three
/// FFT bins, and the same triangles computed in f64 move their log-energies by up to 1.2e-4, more
/// than the parity tolerance allows. The logarithm here is correctly rounded; torch's vectorized
/// float32 log (Sleef) is 1 ulp off it for 21 of the 256 bins, which moves the features by up to
/// 3e-5 (measured on the campplus_a case; the weights agree with torch's to 7e-6).
pub fn mel_banks() -> Vec<Band> {
    let nyquist = SAMPLE_RATE / 2.0;
    let (lo, hi) = (mel(LOW_FREQ), mel(nyquist));
    let delta = (hi - lo) / (N_MELS + 1) as f64;
    let (lo32, delta32) = (lo as f32, delta as f32);
    let bin_width = (SAMPLE_RATE / N_FFT as f64) as f32;
    // `1127.0 * (1.0 + freq / 700.0).log()` in float32
    let mel32 = |f: f32| 1127.0f32 * ((1.0f32 + f / 700.0f32) as f64).ln() as f32;
    let bin_mels: Vec<f32> = (0..N_FFT / 2).map(|k| mel32(bin_width * k as f32)).collect();
    (0..N_MELS)
        .map(|b| {
            let edge = |j: f32| lo32 + (b as f32 + j) * delta32;
            let (left, center, right) = (edge(0.0), edge(1.0), edge(2.0));
            let w: Vec<f64> = bin_mels
                .iter()
                .map(|&m| {
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    up.min(down).max(0.0) as f64
                })
                .collect();
            let start = w.iter().position(|&v| v > 0.0).unwrap_or(0);
            let end = w.iter().rposition(|&v| v > 0.0).map_or(start, |e| e + 1);
            Band { start, weights: w[start..end].to_vec() }
        })
        .collect()
}

/// Rejects samples CAMPPlus cannot take: empty, non-finite, or fewer than `min_len`. `what` says why
/// `min_len` is needed.
pub(crate) fn check_audio(wav: &[f32], min_len: usize, what: &str) -> Result<()> {
    if wav.is_empty() {
        return Err(Error::audio("audio", "no samples"));
    }
    if let Some(i) = wav.iter().position(|v| !v.is_finite()) {
        return Err(Error::audio("audio", format!("sample {i} is {} (not finite)", wav[i])));
    }
    if wav.len() < min_len {
        return Err(Error::audio(
            "audio",
            format!("{} samples at 16 kHz are too few: {what} needs at least {min_len}", wav.len()),
        ));
    }
    Ok(())
}

/// CAMPPlus's input features of `wav_16k` (mono, 16 kHz, nominally in [−1, 1]): Kaldi fbank minus
/// its time mean, `[frames][80]` row-major, and `frames` (see [`frames`]).
///
/// Errors ([`Error::Audio`]): no samples, a non-finite sample, fewer than 400 samples (one frame).
pub fn fbank(wav_16k: &[f32]) -> Result<(Vec<f32>, usize)> {
    check_audio(wav_16k, FRAME_LEN, "one 25 ms fbank frame")?;
    let stft = Stft::new(N_FFT, FRAME_SHIFT, povey_window(FRAME_LEN));
    let n = stft.frames(wav_16k.len());
    let spectra = stft.spectra_with(wav_16k, |frame| {
        let mean = frame.iter().sum::<f64>() / frame.len() as f64;
        frame.iter_mut().for_each(|v| *v -= mean);
        for j in (1..frame.len()).rev() {
            frame[j] -= PREEMPH * frame[j - 1];
        }
        frame[0] -= PREEMPH * frame[0];
    });
    let bins = stft.bins();
    let banks = mel_banks();
    let floor = f32::EPSILON as f64;
    let mut logmel = vec![0f64; n * N_MELS];
    for (f, row) in logmel.chunks_mut(N_MELS).enumerate() {
        let spec = &spectra[f * bins..(f + 1) * bins];
        for (out, band) in row.iter_mut().zip(&banks) {
            let e: f64 = band.weights.iter().zip(&spec[band.start..]).map(|(w, c)| w * c.norm_sqr()).sum();
            *out = e.max(floor).ln();
        }
    }
    let mut mean = vec![0f64; N_MELS];
    for row in logmel.chunks(N_MELS) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let out = logmel.chunks(N_MELS).flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (v - m) as f32)).collect();
    Ok((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The banks against a dense evaluation in f64 written from Kaldi's definition (mel-domain
    /// triangles between consecutive equally spaced mel points), every bin of every band, within
    /// the float32 rounding the banks are computed with (a few ulps of mels ≈ 2000 over triangles
    /// ≈ 35 mels wide: < 2e-5).
    #[test]
    fn mel_banks_match_the_kaldi_definition() {
        let banks = mel_banks();
        assert_eq!(banks.len(), 80);
        let mel_of = |hz: f64| 1127.0 * (hz / 700.0).ln_1p();
        let (lo, hi) = (mel_of(20.0), mel_of(8000.0));
        for (b, band) in banks.iter().enumerate() {
            let pts: Vec<f64> = (0..3).map(|j| lo + (hi - lo) * (b + j) as f64 / 81.0).collect();
            for k in 0..257 {
                let m = mel_of(k as f64 * 16000.0 / 512.0);
                let want = if k == 256 || m <= pts[0] || m >= pts[2] {
                    0.0
                } else if m <= pts[1] {
                    (m - pts[0]) / (pts[1] - pts[0])
                } else {
                    (pts[2] - m) / (pts[2] - pts[1])
                };
                let got = if k >= band.start && k < band.start + band.weights.len() { band.weights[k - band.start] } else { 0.0 };
                assert!((got - want).abs() < 2e-5, "band {b} bin {k}: {got} vs {want}");
            }
            assert!(!band.weights.is_empty(), "band {b} is empty");
        }
        // the lowest band starts above 20 Hz (bin 1 = 31.25 Hz), the highest ends below Nyquist
        assert_eq!(banks[0].start, 1);
        assert!(banks[79].start + banks[79].weights.len() <= 256);
    }

    #[test]
    fn povey_window_is_hann_to_the_085_vanishing_at_both_ends() {
        let w = povey_window(400);
        for (i, &v) in w.iter().enumerate() {
            let hann = (std::f64::consts::PI * i as f64 / 399.0).sin().powi(2);
            assert!((v - hann.powf(0.85)).abs() < 1e-14, "sample {i}");
        }
        assert_eq!(w[0], 0.0);
        assert!(w[399].abs() < 1e-14 && (w[199] - w[200]).abs() < 1e-14);
    }

    /// One frame computed by hand from the Kaldi recipe (direct f64 DFT) against [`fbank`] on a
    /// signal of exactly three frames (whose mean is then known from the three).
    #[test]
    fn fbank_follows_the_kaldi_recipe() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let mut s = seed;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32
        };
        let len = 400 + 2 * 160 + 37; // 3 frames and a tail that is ignored
        let wav: Vec<f32> = (0..len).map(|i| 0.3 * rnd() + 0.2 * (i as f32 * 0.07).sin() + 0.05).collect();
        let (got, n) = fbank(&wav).unwrap();
        assert_eq!((n, got.len()), (3, 3 * 80));
        let by_hand: Vec<Vec<f64>> = (0..3)
            .map(|f| {
                let x: Vec<f64> = wav[f * 160..f * 160 + 400].iter().map(|&v| v as f64).collect();
                let mean = x.iter().sum::<f64>() / 400.0;
                let d: Vec<f64> = x.iter().map(|v| v - mean).collect();
                let pre: Vec<f64> = (0..400).map(|j| d[j] - 0.97 * d[j.saturating_sub(1)]).collect();
                let win: Vec<f64> =
                    (0..400).map(|j| pre[j] * (0.5 - 0.5 * (2.0 * PI * j as f64 / 399.0).cos()).powf(0.85)).collect();
                let power: Vec<f64> = (0..257)
                    .map(|k| {
                        let (re, im) = win.iter().enumerate().fold((0.0, 0.0), |(re, im), (j, v)| {
                            let a = -2.0 * PI * (k * j) as f64 / 512.0;
                            (re + v * a.cos(), im + v * a.sin())
                        });
                        re * re + im * im
                    })
                    .collect();
                mel_banks()
                    .iter()
                    .map(|b| {
                        let e: f64 = b.weights.iter().enumerate().map(|(i, w)| w * power[b.start + i]).sum();
                        e.max(f32::EPSILON as f64).ln()
                    })
                    .collect()
            })
            .collect();
        for m in 0..80 {
            let mean = (by_hand[0][m] + by_hand[1][m] + by_hand[2][m]) / 3.0;
            for f in 0..3 {
                let want = by_hand[f][m] - mean;
                let g = got[f * 80 + m] as f64;
                assert!((g - want).abs() < 1e-5 * (1.0 + want.abs()), "frame {f} band {m}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn bad_audio_is_a_typed_error() {
        assert!(matches!(fbank(&[]), Err(Error::Audio { .. })));
        assert!(matches!(fbank(&[0.1; 399]), Err(Error::Audio { .. })));
        let mut w = vec![0.1f32; 1000];
        w[517] = f32::NAN;
        let e = fbank(&w).unwrap_err().to_string();
        assert!(e.contains("sample 517"), "{e}");
        w[517] = f32::INFINITY;
        assert!(matches!(fbank(&w), Err(Error::Audio { .. })));
        assert_eq!(fbank(&[0.1; 400]).unwrap().1, 1);
    }
}
