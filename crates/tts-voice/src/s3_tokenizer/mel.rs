//! The tokenizer's Whisper-style log-mel (`S3Tokenizer.log_mel_spectrogram`, chatterbox
//! `models/s3tokenizer/s3tokenizer.py`): `torch.stft(n_fft 400, hop 160, periodic Hann, center,
//! reflect)` with its last frame dropped, power `|X|²`, 128 Slaney mel bands
//! (`librosa.filters.mel(sr=16000, n_fft=400, n_mels=128)`), `log10(max(·, 1e-10))`, floored at the
//! utterance's maximum − 8, then `(x + 4) / 4`.
use rayon::prelude::*;

use crate::dsp::{Stft, hann_periodic, reflect_pad, slaney_mel_filterbank};
use crate::{Error, Result};

/// Sample rate of the tokenizer's input, Hz.
pub const SAMPLE_RATE: usize = 16_000;
/// FFT size (= window length), samples.
pub const N_FFT: usize = 400;
/// Frame hop, samples (100 frames per second).
pub const HOP: usize = 160;
/// Mel bands.
pub const N_MELS: usize = 128;
/// Mel frames per token: the encoder's two stride-2 convolutions (25 tokens per second).
pub const FRAMES_PER_TOKEN: usize = 4;
/// The shortest input taken: one token's worth of samples (40 ms, 4 frames).
pub const MIN_SAMPLES: usize = FRAMES_PER_TOKEN * HOP;

/// A log-mel spectrogram, `[N_MELS][frames]` row-major (the reference's `(128, T)` layout).
#[derive(Clone, Debug, PartialEq)]
pub struct LogMel {
    pub frames: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    /// Frames `start..end` (the same bands), `[N_MELS][end − start]`, the range clamped to the
    /// frames there are.
    pub fn frame_range(&self, start: usize, end: usize) -> LogMel {
        let end = end.min(self.frames);
        let start = start.min(end);
        let mut data = Vec::with_capacity(N_MELS * (end - start));
        for band in self.data.chunks_exact(self.frames.max(1)).take(N_MELS) {
            data.extend_from_slice(&band[start..end]);
        }
        LogMel { frames: end - start, data }
    }

    /// The first `frames` frames (all of them when there are fewer): `mel[..., :frames]`.
    pub fn truncated(&self, frames: usize) -> LogMel {
        self.frame_range(0, frames.min(self.frames))
    }
}

/// Checks a 16 kHz waveform can be tokenized: not empty, every sample finite, at least
/// [`MIN_SAMPLES`] long. The error ([`Error::Audio`] for "audio") says what is wrong.
pub fn check_audio(wav: &[f32]) -> Result<()> {
    if wav.is_empty() {
        return Err(Error::audio("audio", "no samples"));
    }
    if let Some(i) = wav.iter().position(|v| !v.is_finite()) {
        return Err(Error::audio("audio", format!("sample {i} is {} (every sample must be finite)", wav[i])));
    }
    if wav.len() < MIN_SAMPLES {
        return Err(Error::audio(
            "audio",
            format!(
                "{} samples ({:.1} ms at 16 kHz) are too short for the speech tokenizer: it needs at least {MIN_SAMPLES} (one 40 ms token)",
                wav.len(),
                wav.len() as f64 * 1000.0 / SAMPLE_RATE as f64
            ),
        ));
    }
    Ok(())
}

/// The log-mel front end: the STFT plan and the mel filterbank, built once.
pub struct MelFrontEnd {
    stft: Stft,
    /// `[N_MELS][N_FFT/2 + 1]`, librosa's float32 values.
    filters: Vec<f32>,
    /// The non-zero bins `lo..hi` of each band.
    support: Vec<(usize, usize)>,
}

impl Default for MelFrontEnd {
    fn default() -> Self {
        MelFrontEnd::new()
    }
}

impl MelFrontEnd {
    pub fn new() -> MelFrontEnd {
        let stft = Stft::new(N_FFT, HOP, hann_periodic(N_FFT));
        let bins = stft.bins();
        let filters = slaney_mel_filterbank(SAMPLE_RATE as f64, N_FFT, N_MELS, 0.0, SAMPLE_RATE as f64 / 2.0);
        let support = filters
            .chunks_exact(bins)
            .map(|row| match row.iter().position(|&w| w != 0.0) {
                Some(lo) => (lo, bins - row.iter().rev().position(|&w| w != 0.0).unwrap_or(0)),
                None => (0, 0),
            })
            .collect();
        MelFrontEnd { stft, filters, support }
    }

    /// The log-mel of `wav` (16 kHz), `floor(len / 160)` frames. Audio [`check_audio`] refuses is
    /// an error.
    ///
    /// The STFT and the mel projection run in f64 (the reference: float32 FFT and matmul); the mel
    /// energies are rounded to f32 before the clamp and log, and the floor and scaling are f32 as
    /// in the reference.
    pub fn log_mel(&self, wav: &[f32]) -> Result<LogMel> {
        check_audio(wav)?;
        let padded = reflect_pad(wav, N_FFT / 2, "audio")?;
        let bins = self.stft.bins();
        let power = self.stft.power(&padded);
        // the last frame is dropped (`stft[..., :-1]`)
        let frames = power.len() / bins - 1;
        debug_assert_eq!(frames, wav.len() / HOP);
        // [frames][N_MELS] first (frames in parallel), transposed below
        let mut by_frame = vec![0f32; frames * N_MELS];
        by_frame.par_chunks_mut(N_MELS).zip(power.par_chunks(bins)).for_each(|(out, p)| {
            for (m, o) in out.iter_mut().enumerate() {
                let (lo, hi) = self.support[m];
                let w = &self.filters[m * bins + lo..m * bins + hi];
                let e: f64 = w.iter().zip(&p[lo..hi]).map(|(&w, &p)| w as f64 * p).sum();
                *o = ((e as f32).max(1e-10) as f64).log10() as f32;
            }
        });
        let max = by_frame.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let floor = max - 8.0;
        let mut data = vec![0f32; N_MELS * frames];
        for (t, row) in by_frame.chunks_exact(N_MELS).enumerate() {
            for (m, &v) in row.iter().enumerate() {
                data[m * frames + t] = (v.max(floor) + 4.0) / 4.0;
            }
        }
        Ok(LogMel { frames, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_audio_is_refused_by_name() {
        let fe = MelFrontEnd::new();
        for (wav, needle) in [
            (vec![], "no samples"),
            (vec![0.1; MIN_SAMPLES - 1], "too short"),
            ([vec![0.1; 700], vec![f32::NAN]].concat(), "sample 700 is NaN"),
            ([vec![0.1; 900], vec![f32::NEG_INFINITY]].concat(), "sample 900 is -inf"),
        ] {
            let e = fe.log_mel(&wav).unwrap_err();
            assert!(matches!(e, Error::Audio { .. }) && e.to_string().contains(needle), "{e}");
        }
        assert_eq!(fe.log_mel(&vec![0.0; MIN_SAMPLES]).unwrap().frames, FRAMES_PER_TOKEN);
    }

    /// One band of one frame recomputed from its definition (a direct DFT in f64), on a fresh
    /// random signal; and the Whisper floor/scaling: every value lies in [max − 2, max].
    #[test]
    fn log_mel_matches_its_definition() {
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let len = MIN_SAMPLES + 37 + (seed % 1000) as usize;
        let wav = tts_kernels::testing::random_f32(seed, len, 0.3);
        let fe = MelFrontEnd::new();
        let mel = fe.log_mel(&wav).unwrap();
        assert_eq!(mel.frames, len / HOP);
        assert_eq!(mel.data.len(), N_MELS * mel.frames);
        let max = mel.data.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        assert!(mel.data.iter().all(|&v| v >= max - 2.0 - 1e-6 && v <= max));
        let at = |i: isize| -> f64 {
            let n = len as isize;
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            wav[j as usize] as f64
        };
        let bins = N_FFT / 2 + 1;
        let win = hann_periodic(N_FFT);
        let mut log = vec![vec![0f64; N_MELS]; mel.frames];
        for (t, row) in log.iter_mut().enumerate() {
            let power: Vec<f64> = (0..bins)
                .map(|k| {
                    let (mut re, mut im) = (0.0, 0.0);
                    for (i, w) in win.iter().enumerate() {
                        let x = at((t * HOP + i) as isize - (N_FFT / 2) as isize) * w;
                        let a = -2.0 * std::f64::consts::PI * ((k * i) % N_FFT) as f64 / N_FFT as f64;
                        re += x * a.cos();
                        im += x * a.sin();
                    }
                    re * re + im * im
                })
                .collect();
            for (m, v) in row.iter_mut().enumerate() {
                let e: f64 = (0..bins).map(|k| fe.filters[m * bins + k] as f64 * power[k]).sum();
                *v = e.max(1e-10).log10();
            }
        }
        let want_max = log.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        for (t, row) in log.iter().enumerate() {
            for (m, &v) in row.iter().enumerate() {
                let want = (v.max(want_max - 8.0) + 4.0) / 4.0;
                let got = mel.data[m * mel.frames + t] as f64;
                assert!((got - want).abs() <= 2e-6 * want.abs().max(1.0), "band {m} frame {t}: {got} vs {want}");
            }
        }
        // truncation keeps the bands' first frames
        let cut = mel.truncated(2);
        assert_eq!(cut.frames, 2);
        assert_eq!(cut.data[2 + 1], mel.data[mel.frames + 1]);
        assert_eq!(mel.truncated(usize::MAX), mel);
        assert_eq!(mel.frame_range(mel.frames - 1, mel.frames + 5).frames, 1);
        assert_eq!(mel.frame_range(7, 3).frames, 0);
    }
}
