//! Signal processing shared by the feature extractors: windows, reflect padding, a framed real DFT
//! (power spectra) and librosa's Slaney mel filterbank.
//!
//! The DFTs run in f64: the reference computes them in float32 (torch.stft) or float64 (numpy, as
//! librosa does) and the features then agree with both to about 1e-7 relative, well inside the f32
//! parity tolerance, whatever order the reference's FFT sums in.
use std::f64::consts::PI;
use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::{Error, Result};

/// `torch.hann_window(n, periodic=True)` = `scipy.signal.get_window("hann", n, fftbins=True)`:
/// `0.5 − 0.5·cos(2πi/n)`, `[n]`.
pub fn hann_periodic(n: usize) -> Vec<f64> {
    (0..n).map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos()).collect()
}

/// `x` padded by `pad` samples on each side with numpy/torch `reflect` padding (the edge sample is
/// not repeated: `[x2, x1, x0, x1, x2, …]`), `[len + 2·pad]`. Both libraries refuse `pad >= len`;
/// so does this ([`Error::Input`] naming `field`).
pub fn reflect_pad(x: &[f32], pad: usize, field: &'static str) -> Result<Vec<f32>> {
    if pad >= x.len() {
        return Err(Error::Input {
            field,
            detail: format!("{} samples are too few for reflect padding of {pad} (needs more than {pad})", x.len()),
        });
    }
    let n = x.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| x[i]));
    out.extend_from_slice(x);
    out.extend((0..pad).map(|i| x[n - 2 - i]));
    Ok(out)
}

/// A framed real DFT: frames of `window.len()` samples every `hop`, multiplied by `window`,
/// zero-padded at the end to `n_fft`, transformed. No centring: pad the signal first
/// ([`reflect_pad`]) where the reference centres.
pub struct Stft {
    n_fft: usize,
    hop: usize,
    window: Vec<f64>,
    fft: Arc<dyn Fft<f64>>,
}

impl Stft {
    /// `window.len() <= n_fft`, `hop >= 1`.
    pub fn new(n_fft: usize, hop: usize, window: Vec<f64>) -> Stft {
        assert!(
            !window.is_empty() && window.len() <= n_fft && hop >= 1,
            "Stft::new: window {} n_fft {n_fft} hop {hop}",
            window.len()
        );
        let fft = FftPlanner::new().plan_fft_forward(n_fft);
        Stft { n_fft, hop, window, fft }
    }

    /// Frequency bins per frame: `n_fft / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of `len` samples: `1 + (len − window) / hop`, 0 if `len < window`.
    pub fn frames(&self, len: usize) -> usize {
        if len < self.window.len() { 0 } else { 1 + (len - self.window.len()) / self.hop }
    }

    /// The spectra of every frame of `x`, `[frames][bins]` row-major, after `prepare` has been
    /// applied to each frame's samples (in place, before the window: Kaldi's DC removal and
    /// pre-emphasis; `|_| ()` for none). Frames are computed in parallel.
    pub fn spectra_with(&self, x: &[f32], prepare: impl Fn(&mut [f64]) + Sync) -> Vec<Complex<f64>> {
        let (frames, bins, wlen) = (self.frames(x.len()), self.bins(), self.window.len());
        let mut out = vec![Complex::new(0.0, 0.0); frames * bins];
        out.par_chunks_mut(bins).enumerate().for_each_init(
            || {
                (
                    vec![0f64; wlen],
                    vec![Complex::new(0.0, 0.0); self.n_fft],
                    vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()],
                )
            },
            |(frame, buf, scratch), (f, row)| {
                let start = f * self.hop;
                for (d, &s) in frame.iter_mut().zip(&x[start..start + wlen]) {
                    *d = s as f64;
                }
                prepare(frame);
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = Complex::new(if i < wlen { frame[i] * self.window[i] } else { 0.0 }, 0.0);
                }
                self.fft.process_with_scratch(buf, scratch);
                row.copy_from_slice(&buf[..bins]);
            },
        );
        out
    }

    /// `|X|²` of every frame, `[frames][bins]` row-major.
    pub fn power(&self, x: &[f32]) -> Vec<f64> {
        self.spectra_with(x, |_| ()).iter().map(|c| c.norm_sqr()).collect()
    }
}

/// librosa's Slaney mel scale (`htk=False`): linear below 1 kHz, logarithmic above.
pub fn hz_to_mel(f: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz { min_log_hz / f_sp + (f / min_log_hz).ln() / logstep } else { f / f_sp }
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel { min_log_hz * (logstep * (m - min_log_mel)).exp() } else { f_sp * m }
}

/// `librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)` (Slaney scale,
/// `norm="slaney"`, float32 output), `[n_mels][n_fft/2 + 1]` row-major. Rounds as librosa 0.11 does:
/// each triangle value is stored into the float32 array, then scaled in place by its float64
/// area normalisation.
pub fn slaney_mel_filterbank(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|k| k as f64 * (sr / 2.0) / (bins - 1) as f64).collect();
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut w = vec![0f32; n_mels * bins];
    for i in 0..n_mels {
        let (fdiff_lo, fdiff_hi) = (mel_f[i + 1] - mel_f[i], mel_f[i + 2] - mel_f[i + 1]);
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / fdiff_lo;
            let upper = (mel_f[i + 2] - f) / fdiff_hi;
            let tri = 0f64.max(lower.min(upper)) as f32;
            w[i * bins + k] = (tri as f64 * enorm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_mirrors_without_repeating_the_edge() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(reflect_pad(&x, 2, "x").unwrap(), [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]);
        assert!(matches!(reflect_pad(&x, 4, "x"), Err(Error::Input { field: "x", .. })));
    }

    #[test]
    fn power_matches_a_direct_dft() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let (n_fft, hop, win) = (400, 160, 300);
        let stft = Stft::new(n_fft, hop, hann_periodic(win));
        let p = stft.power(&x);
        assert_eq!(p.len(), stft.frames(x.len()) * stft.bins());
        assert_eq!(stft.frames(x.len()), 1 + (1000 - 300) / 160);
        let w = hann_periodic(win);
        for f in [0, 2, 4] {
            for k in [0, 1, 37, 200] {
                let (mut re, mut im) = (0.0, 0.0);
                for i in 0..win {
                    let v = x[f * hop + i] as f64 * w[i];
                    let a = -2.0 * PI * (k * i) as f64 / n_fft as f64;
                    re += v * a.cos();
                    im += v * a.sin();
                }
                let want = re * re + im * im;
                let got = p[f * stft.bins() + k];
                assert!((got - want).abs() <= 1e-9 * want.max(1.0), "frame {f} bin {k}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn slaney_scale_round_trips_and_the_filterbank_covers_its_band() {
        for f in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9);
        }
        let fb = slaney_mel_filterbank(16000.0, 400, 40, 0.0, 8000.0);
        assert_eq!(fb.len(), 40 * 201);
        // every band has weight, and each band's area (∑ w · Δf) is 1 under the Slaney norm ≈ 2/(width)·width/2
        for m in 0..40 {
            let row = &fb[m * 201..(m + 1) * 201];
            assert!(row.iter().any(|&v| v > 0.0), "band {m} is empty");
            assert!(row.iter().all(|&v| v >= 0.0));
        }
    }
}
