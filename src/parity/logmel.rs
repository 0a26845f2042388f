//! Log-mel spectral distance between two waveforms, for bf16 backends where a sample-wise comparison
//! of a vocoder's output is meaningless: HiFT's NSF source integrates F0 over every sample, so an F0
//! that differs by a bf16 rounding shifts the phase of the harmonics by radians within a second while
//! the spectrum stays the same.
//!
//! The features are S3Gen's own mel (spec §4.5): n_fft 1920, hop 480, periodic Hann, reflect padding
//! of 720, magnitude `sqrt(re² + im² + 1e-9)`, 80 Slaney mel bands over 0–8 kHz (librosa's
//! `filters.mel` with `norm="slaney"`), natural log of `max(mel, 1e-5)`. Computed in f64 with a direct
//! DFT (test-sized inputs only).
const SR: f64 = 24000.0;
const N_FFT: usize = 1920;
const HOP: usize = 480;
const N_MELS: usize = 80;
const FMAX: f64 = 8000.0;

fn hz_to_mel(f: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if f >= min_log_hz { min_log_mel + (f / min_log_hz).ln() / logstep } else { f / f_sp }
}

fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel { min_log_hz * (logstep * (m - min_log_mel)).exp() } else { f_sp * m }
}

/// librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=8000), `[80, 961]`.
fn mel_filterbank() -> Vec<Vec<f64>> {
    let bins = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|k| k as f64 * SR / N_FFT as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(FMAX));
    let mel_f: Vec<f64> = (0..N_MELS + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64)).collect();
    (0..N_MELS)
        .map(|i| {
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
                    let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

/// The log-mel of `wav`, `[frames][80]` with `frames = len / 480`.
pub fn log_mel(wav: &[f32]) -> Vec<Vec<f64>> {
    let pad = (N_FFT - HOP) / 2;
    let n = wav.len();
    let at = |i: isize| -> f64 {
        let j = if i < 0 {
            -i
        } else if i as usize >= n {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        wav[j.clamp(0, n as isize - 1) as usize] as f64
    };
    let window: Vec<f64> = (0..N_FFT).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()).collect();
    let fb = mel_filterbank();
    let bins = N_FFT / 2 + 1;
    let (cos_t, sin_t): (Vec<f64>, Vec<f64>) =
        (0..N_FFT).map(|i| (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).sin_cos()).map(|(s, c)| (c, s)).unzip();
    (0..n / HOP)
        .map(|f| {
            let frame: Vec<f64> = (0..N_FFT).map(|i| at((f * HOP + i) as isize - pad as isize) * window[i]).collect();
            let mag: Vec<f64> = (0..bins)
                .map(|k| {
                    let (mut re, mut im) = (0.0, 0.0);
                    for (i, &x) in frame.iter().enumerate() {
                        let idx = (k * i) % N_FFT;
                        re += x * cos_t[idx];
                        im -= x * sin_t[idx];
                    }
                    (re * re + im * im + 1e-9).sqrt()
                })
                .collect();
            fb.iter().map(|w| w.iter().zip(&mag).map(|(a, b)| a * b).sum::<f64>().max(1e-5).ln()).collect()
        })
        .collect()
}

/// Mean absolute difference of the log-mels of two equally long waveforms (natural log units).
pub fn log_mel_distance(a: &[f32], b: &[f32]) -> f64 {
    let (ma, mb) = (log_mel(a), log_mel(b));
    let mut sum = 0.0;
    let mut n = 0usize;
    for (fa, fb) in ma.iter().zip(&mb) {
        for (x, y) in fa.iter().zip(fb) {
            sum += (x - y).abs();
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_mel_scale_round_trips_and_is_linear_below_1khz() {
        for f in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9);
        }
        assert!((hz_to_mel(600.0) - 9.0).abs() < 1e-12);
    }

    #[test]
    fn a_tone_lands_in_its_band_and_distance_sees_a_pitch_change() {
        let tone = |hz: f64| {
            (0..9600).map(|i| (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / SR).sin()) as f32).collect::<Vec<_>>()
        };
        let m = log_mel(&tone(440.0));
        let loudest = m[10].iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let band = |f: f64| ((hz_to_mel(f) / hz_to_mel(FMAX)) * (N_MELS + 1) as f64) as usize;
        assert!(loudest.abs_diff(band(440.0)) <= 1, "{loudest} vs {}", band(440.0));
        assert_eq!(log_mel_distance(&tone(440.0), &tone(440.0)), 0.0);
        assert!(log_mel_distance(&tone(440.0), &tone(660.0)) > 1.0);
    }
}
