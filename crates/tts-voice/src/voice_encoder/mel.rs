//! The voice encoder's mel spectrogram (`voice_encoder/melspec.py`, `melspectrogram(wav, hp)`):
//! `librosa.stft(n_fft=400, hop_length=160, win_length=400, center=True, pad_mode="reflect")`
//! (melspec.py passes `"reflect"` explicitly; librosa 0.11's own default would be `"constant"`),
//! `|X|²`, then `librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=0, fmax=8000) · |X|²`:
//! linear power, no log, no normalisation, no pre-emphasis.
//!
//! Rounding as librosa: the DFT of the float64-windowed frame is stored as complex64, its
//! magnitude taken and squared in float32, and the filterbank product is a float32 GEMM.
use tts_kernels::cpu::linear;

use crate::dsp::{Stft, hann_periodic, reflect_pad, slaney_mel_filterbank};
use crate::{Error, Result};

/// Sample rate the voice encoder works at (Hz).
pub const SAMPLE_RATE: usize = 16000;
/// STFT size and window length (25 ms).
pub const N_FFT: usize = 400;
/// STFT hop (10 ms).
pub const HOP: usize = 160;
/// Mel bands (the LSTM's input width).
pub const N_MELS: usize = 40;

/// The STFT and the filterbank, built once.
pub struct MelExtractor {
    stft: Stft,
    /// `[N_MELS][N_FFT/2 + 1]` row-major.
    filterbank: Vec<f32>,
}

impl Default for MelExtractor {
    fn default() -> Self {
        MelExtractor::new()
    }
}

impl MelExtractor {
    pub fn new() -> MelExtractor {
        MelExtractor {
            stft: Stft::new(N_FFT, HOP, hann_periodic(N_FFT)),
            filterbank: slaney_mel_filterbank(SAMPLE_RATE as f64, N_FFT, N_MELS, 0.0, SAMPLE_RATE as f64 / 2.0),
        }
    }

    /// Mel frames of `len` samples: `1 + len / 160` (centred frames).
    pub fn frames(len: usize) -> usize {
        1 + len / HOP
    }

    /// The mel spectrogram of 16 kHz `wav`, `[frames][N_MELS]` row-major (time-major, as the
    /// reference's `melspectrogram(wav).T`), `frames` = [`Self::frames`]`(wav.len())`.
    ///
    /// The reflect padding needs more than `N_FFT / 2` = 200 samples (12.5 ms); fewer is an
    /// [`Error::Audio`] (numpy would reflect such a clip several times over into a frame made
    /// mostly of copies of itself: nothing to take a voice from).
    pub fn mel(&self, wav: &[f32], what: &str) -> Result<Vec<f32>> {
        let pad = N_FFT / 2;
        if wav.len() <= pad {
            return Err(Error::audio(
                what,
                format!(
                    "{} samples ({:.1} ms at 16 kHz) after trimming silence are too few for the voice encoder: it needs more than {pad}",
                    wav.len(),
                    wav.len() as f64 * 1000.0 / SAMPLE_RATE as f64
                ),
            ));
        }
        let padded = reflect_pad(wav, pad, "wav")?;
        let bins = self.stft.bins();
        let frames = self.stft.frames(padded.len());
        debug_assert_eq!(frames, Self::frames(wav.len()));
        let power: Vec<f32> = self
            .stft
            .spectra_with(&padded, |_| ())
            .iter()
            .map(|c| {
                // complex64 storage, float32 |X|, float32 square (melspec.py: abs, **= 2)
                let mag = (c.re as f32).hypot(c.im as f32);
                mag * mag
            })
            .collect();
        let mut mel = vec![0f32; frames * N_MELS];
        linear(&power, &self.filterbank, &mut mel, frames, N_MELS, bins);
        Ok(mel)
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tts_kernels::testing::fresh_seed;

    use super::*;

    /// Direct f64 transcription: reflect index, windowed DFT, power, filterbank.
    fn naive_mel(wav: &[f32]) -> Vec<f64> {
        let n = wav.len() as isize;
        let pad = (N_FFT / 2) as isize;
        let at = |i: isize| {
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            wav[j as usize] as f64
        };
        let fb = slaney_mel_filterbank(16000.0, N_FFT, N_MELS, 0.0, 8000.0);
        let bins = N_FFT / 2 + 1;
        let frames = 1 + wav.len() / HOP;
        let mut out = vec![0f64; frames * N_MELS];
        for f in 0..frames {
            let x: Vec<f64> = (0..N_FFT)
                .map(|i| at((f * HOP + i) as isize - pad) * (0.5 - 0.5 * (2.0 * PI * i as f64 / N_FFT as f64).cos()))
                .collect();
            for k in 0..bins {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, &v) in x.iter().enumerate() {
                    let a = -2.0 * PI * ((k * i) % N_FFT) as f64 / N_FFT as f64;
                    re += v * a.cos();
                    im += v * a.sin();
                }
                let p = re * re + im * im;
                for m in 0..N_MELS {
                    out[f * N_MELS + m] += fb[m * bins + k] as f64 * p;
                }
            }
        }
        out
    }

    #[test]
    fn mel_matches_a_direct_transcription() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let ex = MelExtractor::new();
        for len in [201, 399, 1000 + rng.random_range(0..700)] {
            let wav: Vec<f32> = (0..len).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            let got = ex.mel(&wav, "audio").unwrap();
            let want = naive_mel(&wav);
            assert_eq!(got.len(), want.len(), "len {len}");
            let scale = want.iter().cloned().fold(0.0, f64::max);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-7 * scale, "len {len} [{i}]: {g} vs {w}");
            }
        }
        assert!(matches!(ex.mel(&[0.1; 200], "clip"), Err(Error::Audio { what, .. }) if what == "clip"));
    }
}
