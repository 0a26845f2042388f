//! S3Gen's prompt log-mel (spec §4.5): `S3Token2Mel.embed_ref` computes
//! `prompt_feat = mel_spectrogram(ref_wav_24k).transpose(1, 2)` with `s3gen/utils/mel.py`
//! (Matcha-TTS's, CosyVoice's settings): n_fft 1920, hop 480, a periodic Hann window of 1920,
//! reflect padding of (n_fft − hop)/2 = 720 on both sides and no centring, the magnitude
//! `sqrt(re² + im² + 1e-9)`, 80 Slaney mel bands over 0–8 kHz (`librosa.filters.mel`), and the
//! natural log of `max(mel, 1e-5)`.
use std::sync::OnceLock;

use crate::dsp::{Stft, hann_periodic, reflect_pad, slaney_mel_filterbank};
use crate::{Error, Result};

/// Sample rate of the input, Hz.
pub const SAMPLE_RATE: u32 = 24_000;
pub const N_FFT: usize = 1920;
pub const HOP: usize = 480;
pub const N_MELS: usize = 80;
const FMAX: f64 = 8000.0;

/// The STFT and the mel filterbank, `[N_MELS][N_FFT/2 + 1]` widened to f64, built once.
fn tables() -> &'static (Stft, Vec<f64>) {
    static T: OnceLock<(Stft, Vec<f64>)> = OnceLock::new();
    T.get_or_init(|| {
        let mel = slaney_mel_filterbank(SAMPLE_RATE as f64, N_FFT, N_MELS, 0.0, FMAX);
        (Stft::new(N_FFT, HOP, hann_periodic(N_FFT)), mel.iter().map(|&v| v as f64).collect())
    })
}

/// The prompt log-mel of a 24 kHz waveform: `([frames][80]` row-major, `frames = len / 480`). The
/// waveform must be longer than 720 samples (30 ms; the reflect padding needs it) and finite.
pub fn prompt_feat(wav_24k: &[f32]) -> Result<(Vec<f32>, usize)> {
    if let Some(i) = wav_24k.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input { field: "wav_24k", detail: format!("sample {i} is {}", wav_24k[i]) });
    }
    let padded = reflect_pad(wav_24k, (N_FFT - HOP) / 2, "wav_24k")?;
    let (stft, mel) = tables();
    let frames = stft.frames(padded.len());
    let bins = stft.bins();
    let mag: Vec<f64> = stft.power(&padded).into_iter().map(|p| (p + 1e-9).sqrt()).collect();
    // out[f][m] = Σ_k mag[f][k] · mel[m][k]
    let mut out = vec![0f64; frames * N_MELS];
    // SAFETY: mag is frames×bins (row stride bins), mel is N_MELS×bins read as its transpose
    // (bins×N_MELS: row stride 1, column stride bins), out is frames×N_MELS; all in bounds.
    unsafe {
        matrixmultiply::dgemm(
            frames,
            bins,
            N_MELS,
            1.0,
            mag.as_ptr(),
            bins as isize,
            1,
            mel.as_ptr(),
            1,
            bins as isize,
            0.0,
            out.as_mut_ptr(),
            N_MELS as isize,
            1,
        );
    }
    Ok((out.into_iter().map(|v| v.max(1e-5).ln() as f32).collect(), frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_len_over_hop_and_short_input_is_refused() {
        for len in [721usize, 959, 960, 24_000, 24_479] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
            let (feat, frames) = prompt_feat(&x).unwrap();
            assert_eq!(frames, len / HOP, "len {len}");
            assert_eq!(feat.len(), frames * N_MELS);
            assert!(feat.iter().all(|v| v.is_finite() && *v >= 1e-5f32.ln()));
        }
        assert!(matches!(prompt_feat(&[0.1; 720]), Err(Error::Input { field: "wav_24k", .. })));
        let mut x = vec![0.1f32; 2000];
        x[7] = f32::NAN;
        assert!(matches!(prompt_feat(&x), Err(Error::Input { field: "wav_24k", .. })));
    }

    #[test]
    fn silence_is_the_clamp_floor() {
        let (feat, _) = prompt_feat(&[0.0; 4800]).unwrap();
        // sqrt(1e-9) · Σ mel weights is below 1e-5 for every band: all log(1e-5)
        assert!(feat.iter().all(|&v| v == 1e-5f64.ln() as f32));
    }
}
