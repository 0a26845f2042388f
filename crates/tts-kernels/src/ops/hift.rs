//! The signal stages of the HiFT vocoder: the harmonic NSF source and the inverse STFT.
use crate::error::{Error, Result};
use crate::{View, ViewMut};

/// Harmonics of the NSF source including the fundamental (`nb_harmonics + 1`).
pub const HIFT_HARMONICS: usize = 9;

/// The harmonic source of HiFT (`SineGen` + `SourceModuleHnNSF`, hifigan.py:169-283), for a batch.
/// With `F0 = f0[b, n / upsample]` (nearest upsampling) and `F_k = k·F0 / sample_rate` (f32),
/// k = 1..=9:
/// - `θ_k[n] = 2π · (cumsum_n F_k mod 1)`: the cumulative sum accumulated in f64 and rounded to f32
///   per sample (torch's CPU cumsum), then `% 1` and `· (f32)2π` in f32;
/// - `uv = F0 > 10`; `e_k = 0.1·sin(θ_k + phases[b, k−1])·uv + (uv·0.003 + (1−uv)·0.1/3)·noise[b, k−1, n]`;
/// - `out[b, n] = tanh(Σ_k l_weight[k−1]·e_k + l_bias[0])`.
///
/// Samples `n ≥ lens[b]·upsample` are written as 0. Shapes: `f0` `[B, Nm]` f32 (Hz), `lens` `[B]`
/// i32 (mel frames), `phases` `[B, 9]` f32, `noise` `[B, 9, Nm·upsample]` f32, `l_weight` `[9]` f32,
/// `l_bias` `[1]` f32, `out` `[B, Nm·upsample]` f32.
#[allow(clippy::too_many_arguments)]
pub fn hift_source(
    f0: View<'_>,
    lens: Option<View<'_>>,
    phases: View<'_>,
    noise: View<'_>,
    l_weight: View<'_>,
    l_bias: View<'_>,
    out: ViewMut<'_>,
    upsample: usize,
    sample_rate: f32,
) -> Result<()> {
    let _ = (f0, lens, phases, noise, l_weight, l_bias, out, upsample, sample_rate);
    Err(Error::invalid("hift_source", "not implemented yet"))
}

/// HiFT's output stage (hifigan.py:439-445, `torch.istft` semantics): with `x = spec[b, f]`,
/// `mag_k = min(exp(x[k]), 100)` and `ph_k = sin(x[9 + k])` for k = 0..=8, frame f is
/// `irfft(mag·cos(ph) + i·mag·sin(ph), n = 16)` (the imaginary parts of bins 0 and 8 ignored), times
/// the periodic Hann window of 16; frames overlap-add at hop 4, the sum is divided by the overlap-
/// added squared window, `center=True` trims 8 samples at each end, and the result is clamped to
/// `±clamp`. Output samples `n ≥ (lens[b] − 1)·4` are written as 0.
///
/// Shapes: `spec` `[B, F, 18]` f32 (conv_post output, time-major), `lens` `[B]` i32 (frames,
/// `1 ≤ lens[b] ≤ F`), `out` `[B, (F − 1)·4]` f32.
pub fn hift_istft(spec: View<'_>, lens: Option<View<'_>>, out: ViewMut<'_>, clamp: f32) -> Result<()> {
    let _ = (spec, lens, out, clamp);
    Err(Error::invalid("hift_istft", "not implemented yet"))
}
