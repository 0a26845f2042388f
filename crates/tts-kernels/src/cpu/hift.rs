//! Cpu reference ops (hift family): HiFT's harmonic NSF source (`SineGen` + `SourceModuleHnNSF`)
//! and its inverse-STFT output stage, for a batch. Mirrors `kernels/hift.cu`; the op wrappers are
//! [`crate::ops::hift_source`] and [`crate::ops::hift_istft`].
//!
//! Both follow the f32 arithmetic of the reference (chatterbox hifigan.py on torch's CPU) step by
//! step; sin/cos are evaluated in f64 and rounded once (within 1 ulp of torch's f32 sin/cos).
use super::conv::check_lens;

/// Harmonics of the source (the fundamental and 8 overtones).
pub const HIFT_SOURCE_HARMONICS: usize = 9;
/// `SineGen.sine_amp` as torch uses it on an f32 tensor.
pub const HIFT_SINE_AMP: f32 = 0.1;
/// `SineGen.noise_std` (voiced noise amplitude).
pub const HIFT_NOISE_STD: f32 = 0.003;
/// Unvoiced noise amplitude, `(1 − uv)·sine_amp / 3` in f32.
pub const HIFT_UNVOICED_NOISE: f32 = HIFT_SINE_AMP / 3.0;
/// `uv = f0 > 10` (`nsf_voiced_threshold`).
pub const HIFT_VOICED_THRESHOLD: f32 = 10.0;
/// `2 * np.pi` as the f32 scalar torch multiplies an f32 tensor by.
pub const HIFT_TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
/// iSTFT geometry of HiFT (`istft_params`): n_fft = win_length = 16, hop 4, 9 one-sided bins.
pub const HIFT_N_FFT: usize = 16;
pub const HIFT_HOP: usize = 4;
pub const HIFT_BINS: usize = HIFT_N_FFT / 2 + 1;

/// `scipy.signal.get_window("hann", 16, fftbins=True).astype(np.float32)` (the periodic Hann
/// window: `0.5 − 0.5·cos(2πi/16)` in f64, rounded to f32).
pub fn hann16() -> [f32; HIFT_N_FFT] {
    std::array::from_fn(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / HIFT_N_FFT as f64).cos()) as f32)
}

/// `sin` of an f32, evaluated in f64 and rounded once.
fn sin_f32(a: f32) -> f32 {
    (a as f64).sin() as f32
}

/// torch's `x % 1` on f32 (`remainder`: `fmod`, then `+ 1` when the result is negative).
pub fn remainder1(x: f32) -> f32 {
    let m = x % 1.0;
    if m != 0.0 && m < 0.0 { m + 1.0 } else { m }
}

/// `F_k = (f0 · k) / sample_rate` in f32, as `f0 * (i + 1) / self.sampling_rate`.
pub fn harmonic_step(f0: f32, k: usize, sample_rate: f32) -> f32 {
    (f0 * k as f32) / sample_rate
}

/// One sample of the source given the running phase sums `cs[k]` (the f32 cumulative sums of
/// `F_{k+1}`): `tanh(Σ_k w_k·e_k + bias)` with
/// `e_k = (0.1·sin(2π·(cs_k % 1) + phase_k))·uv + amp·noise_k`, each product and sum rounded to f32
/// in this order (the products are never fused).
pub fn source_sample(f0: f32, cs: &[f32], phases: &[f32], noise: &[f32], l_weight: &[f32], l_bias: f32) -> f32 {
    let voiced = f0 > HIFT_VOICED_THRESHOLD;
    let uv = if voiced { 1.0f32 } else { 0.0 };
    let amp = if voiced { HIFT_NOISE_STD } else { HIFT_UNVOICED_NOISE };
    let mut acc = 0f32;
    for k in 0..HIFT_SOURCE_HARMONICS {
        let theta = HIFT_TWO_PI * remainder1(cs[k]);
        let sine = HIFT_SINE_AMP * sin_f32(theta + phases[k]);
        let e = sine * uv + amp * noise[k];
        acc += l_weight[k] * e;
    }
    (acc + l_bias).tanh()
}

/// The HiFT source for a batch (see [`crate::ops::hift_source`]): `f0` `[batch, n_frames]`,
/// `phases` `[batch, 9]`, `noise` `[batch, 9, n_frames·upsample]`, `out` `[batch,
/// n_frames·upsample]`. The cumulative phase is torch's CPU cumsum: accumulated in f64 sample by
/// sample and rounded to f32 per sample. Samples past `lens[b]·upsample` are 0; a length outside
/// `0..=n_frames` is an error `(batch, len)` and nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn hift_source(
    f0: &[f32],
    lens: Option<&[i32]>,
    phases: &[f32],
    noise: &[f32],
    l_weight: &[f32],
    l_bias: f32,
    out: &mut [f32],
    batch: usize,
    n_frames: usize,
    upsample: usize,
    sample_rate: f32,
) -> Result<(), (usize, i32)> {
    const H: usize = HIFT_SOURCE_HARMONICS;
    check_lens(lens, n_frames)?;
    let n = n_frames * upsample;
    let mut nz = [0f32; H];
    for b in 0..batch {
        let valid = lens.map_or(n_frames, |l| l[b] as usize) * upsample;
        let ph = &phases[b * H..(b + 1) * H];
        let mut acc = [0f64; H];
        let mut cs = [0f32; H];
        for s in 0..n {
            let o = &mut out[b * n + s];
            if s >= valid {
                *o = 0.0;
                continue;
            }
            let f = f0[b * n_frames + s / upsample];
            for k in 0..H {
                acc[k] += harmonic_step(f, k + 1, sample_rate) as f64;
                cs[k] = acc[k] as f32;
                nz[k] = noise[(b * H + k) * n + s];
            }
            *o = source_sample(f, &cs, ph, &nz, l_weight, l_bias);
        }
    }
    Ok(())
}

/// The complex bins `(re, im)` of one frame as the reference builds them from `x = spec[b, f]`
/// (18 values): `mag = min(exp(x[k]), 100)`, `ph = sin(x[9 + k])`, `re = mag·cos(ph)`,
/// `im = mag·sin(ph)`, all f32.
pub fn istft_bins(x: &[f32]) -> ([f32; HIFT_BINS], [f32; HIFT_BINS]) {
    let mut re = [0f32; HIFT_BINS];
    let mut im = [0f32; HIFT_BINS];
    for k in 0..HIFT_BINS {
        let e = x[k].exp();
        let mag = if e > 100.0 { 100.0 } else { e };
        let ph = sin_f32(x[HIFT_BINS + k]);
        re[k] = mag * ((ph as f64).cos() as f32);
        im[k] = mag * sin_f32(ph);
    }
    (re, im)
}

/// `irfft(re + i·im, n = 16)` in f64 (the imaginary parts of bins 0 and 8 are ignored, as a C2R
/// transform does): `x[i] = (re_0 + (−1)^i·re_8 + 2·Σ_{k=1..7} (re_k·cos(2πki/16) − im_k·sin(2πki/16))) / 16`.
pub fn irfft16(re: &[f32; HIFT_BINS], im: &[f32; HIFT_BINS]) -> [f64; HIFT_N_FFT] {
    let tw: [(f64, f64); HIFT_N_FFT] = std::array::from_fn(|m| {
        let a = 2.0 * std::f64::consts::PI * m as f64 / HIFT_N_FFT as f64;
        (a.cos(), a.sin())
    });
    std::array::from_fn(|i| {
        let mut v = re[0] as f64 + if i.is_multiple_of(2) { re[8] as f64 } else { -(re[8] as f64) };
        for k in 1..HIFT_BINS - 1 {
            let (c, s) = tw[(k * i) % HIFT_N_FFT];
            v += 2.0 * (re[k] as f64 * c - im[k] as f64 * s);
        }
        v / HIFT_N_FFT as f64
    })
}

/// The inverse STFT of one sequence of frames given as f32 bins (torch.istft with center=True):
/// each frame [`irfft16`] (f64) times the periodic Hann window, overlap-added at hop 4, divided by
/// the overlap-added squared window of the frames present; `out[n]` is uncut position `n + 8`
/// (`center=True` trims 8 samples at each end; at most `(frames − 1)·4` samples), rounded once to
/// f32 and clamped to `±clamp`.
pub fn istft_overlap_add(bins: &[([f32; HIFT_BINS], [f32; HIFT_BINS])], out: &mut [f32], clamp: f32) {
    let w = hann16();
    let total = HIFT_N_FFT + HIFT_HOP * bins.len().saturating_sub(1);
    let (mut y, mut env) = (vec![0f64; total], vec![0f64; total]);
    for (f, (re, im)) in bins.iter().enumerate() {
        for (i, (v, &wi)) in irfft16(re, im).iter().zip(&w).enumerate() {
            y[f * HIFT_HOP + i] += wi as f64 * v;
            env[f * HIFT_HOP + i] += wi as f64 * wi as f64;
        }
    }
    for (n, o) in out.iter_mut().enumerate() {
        let p = n + HIFT_N_FFT / 2;
        let v = (y[p] / env[p]) as f32;
        *o = if v < -clamp {
            -clamp
        } else if v > clamp {
            clamp
        } else {
            v
        };
    }
}

/// HiFT's iSTFT for a batch (see [`crate::ops::hift_istft`]): `spec` `[batch, frames, 18]`,
/// `out` `[batch, (frames − 1)·4]`. Frames are synthesised from their f32 bins in f64 and
/// overlap-added with the exact envelope of the frames present; one rounding to f32, then the
/// clamp. Samples past `(lens[b] − 1)·4` are 0; a length outside `1..=frames` is an error.
pub fn hift_istft(
    spec: &[f32],
    lens: Option<&[i32]>,
    out: &mut [f32],
    batch: usize,
    frames: usize,
    clamp: f32,
) -> Result<(), (usize, i32)> {
    if let Some(l) = lens
        && let Some(b) = l.iter().position(|&v| v < 1 || v as i64 > frames as i64)
    {
        return Err((b, l[b]));
    }
    if frames == 0 {
        return Ok(());
    }
    let n_out = (frames - 1) * HIFT_HOP;
    let row = 2 * HIFT_BINS;
    for b in 0..batch {
        let len = lens.map_or(frames, |l| l[b] as usize);
        let bins: Vec<_> = (0..len).map(|f| istft_bins(&spec[(b * frames + f) * row..][..row])).collect();
        let o = &mut out[b * n_out..(b + 1) * n_out];
        let valid = (len - 1) * HIFT_HOP;
        istft_overlap_add(&bins, &mut o[..valid], clamp);
        o[valid..].fill(0.0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_f32;

    #[test]
    fn hann_window_is_scipys() {
        // bits of scipy.signal.get_window("hann", 16, fftbins=True).astype(np.float32)
        let want: [u32; 16] = [
            0, 1025238284, 1041626650, 1050544245, 1056964608, 1060174789, 1062896250, 1064714671, 1065353216, 1064714671,
            1062896250, 1060174789, 1056964608, 1050544245, 1041626650, 1025238284,
        ];
        assert_eq!(hann16().map(f32::to_bits), want);
    }

    #[test]
    fn remainder_follows_torch() {
        // torch.tensor([-0.3, -1e-9, 2.5, -2.0, 1e8]) % 1 = [0.7, 1.0, 0.5, -0.0, 0.0]
        let got = [-0.3f32, -1e-9, 2.5, -2.0, 1e8].map(remainder1);
        assert_eq!(got.map(f32::to_bits), [0.7f32, 1.0, 0.5, -0.0, 0.0].map(f32::to_bits));
    }

    /// A direct transcription of SineGen + SourceModuleHnNSF in f64 (cumsum, `% 1` as
    /// `x − floor(x)`, no intermediate roundings): the f32 reference must stay within f32 rounding
    /// of it (the phase argument loses ~1e-7 relative to the cumulative sum, i.e. ~1e-7·|cs|·2π).
    #[test]
    fn source_matches_the_formula() {
        let (batch, n_frames, up, sr) = (3usize, 23usize, 7usize, 24000f32);
        let lens = [23, 0, 11];
        let mut f0 = random_f32(11, batch * n_frames, 150.0).iter().map(|v| v.abs() + 5.0).collect::<Vec<f32>>();
        f0[3] = 0.0; // unvoiced frames, and one exactly at the threshold
        f0[4] = 10.0;
        f0[5] = 10.001;
        let phases = random_f32(12, batch * 9, 1.5);
        let noise = random_f32(13, batch * 9 * n_frames * up, 1.0);
        let w = random_f32(14, 9, 0.5);
        let bias = 0.1f32;
        let n = n_frames * up;
        let mut out = vec![f32::NAN; batch * n];
        hift_source(&f0, Some(&lens), &phases, &noise, &w, bias, &mut out, batch, n_frames, up, sr).unwrap();
        for b in 0..batch {
            let mut cum = [0f64; 9];
            for s in 0..n {
                let got = out[b * n + s];
                if s >= lens[b] as usize * up {
                    assert_eq!(got, 0.0, "b {b} s {s}");
                    continue;
                }
                let f = f0[b * n_frames + s / up] as f64;
                let uv = if f > 10.0 { 1.0 } else { 0.0 };
                let mut acc = bias as f64;
                for k in 0..9 {
                    cum[k] += f * (k + 1) as f64 / sr as f64;
                    let theta = 2.0 * std::f64::consts::PI * (cum[k] - cum[k].floor());
                    let e = 0.1 * (theta + phases[b * 9 + k] as f64).sin() * uv
                        + (uv * 0.003 + (1.0 - uv) * 0.1 / 3.0) * noise[(b * 9 + k) * n + s] as f64;
                    acc += w[k] as f64 * e;
                }
                let want = acc.tanh();
                // |cs| <= n·9·f0/sr ~ 30 here: phase error ~ 30·2π·6e-8 ~ 1e-5, times 0.1·|w| <= ~0.2
                assert!((got as f64 - want).abs() < 1e-5, "b {b} s {s}: {got} vs {want}");
            }
        }
    }

    /// The sample-by-sample cumulative sum is torch's: f64 accumulation rounded per sample (an f32
    /// running sum drifts visibly over a second of audio).
    #[test]
    fn source_cumsum_is_accumulated_in_f64() {
        let (n_frames, up, sr) = (50usize, 480usize, 24000f32);
        let f0: Vec<f32> = (0..n_frames).map(|i| 100.0 + 3.7 * i as f32).collect();
        let noise = vec![0f32; 9 * n_frames * up];
        let w = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let mut out = vec![0f32; n_frames * up];
        hift_source(&f0, None, &[0.0; 9], &noise, &w, 0.0, &mut out, 1, n_frames, up, sr).unwrap();
        let (mut acc, mut acc32) = (0f64, 0f32);
        let mut worst32 = 0f64;
        for s in 0..n_frames * up {
            let fk = harmonic_step(f0[s / up], 1, sr);
            acc += fk as f64;
            acc32 += fk;
            let want = (0.1 * sin_f32(HIFT_TWO_PI * remainder1(acc as f32))).tanh();
            assert_eq!(out[s], want, "sample {s}");
            let alt = (0.1 * sin_f32(HIFT_TWO_PI * remainder1(acc32))).tanh();
            worst32 = worst32.max((alt - want).abs() as f64);
        }
        assert!(worst32 > 1e-6, "an f32 running sum should differ ({worst32})");
    }

    /// The STFT of `torch.stft(center=True, pad_mode="reflect")` with the periodic Hann window,
    /// `X[f, k] = Σ_i w[i]·x_pad[4f + i]·e^{−2πi·ki/16}`, in f64.
    fn stft(x: &[f64]) -> Vec<([f64; 9], [f64; 9])> {
        let n = x.len();
        let w = hann16();
        let pad = |p: i64| -> f64 {
            let i = p - 8;
            let r = if i < 0 {
                -i
            } else if i >= n as i64 {
                2 * (n as i64 - 1) - i
            } else {
                i
            };
            x[r as usize]
        };
        let frames = n / HIFT_HOP + 1;
        (0..frames)
            .map(|f| {
                let mut re = [0f64; 9];
                let mut im = [0f64; 9];
                for k in 0..9 {
                    for (i, &wi) in w.iter().enumerate() {
                        let a = 2.0 * std::f64::consts::PI * (k * i) as f64 / 16.0;
                        let v = wi as f64 * pad((4 * f + i) as i64);
                        re[k] += v * a.cos();
                        im[k] -= v * a.sin();
                    }
                }
                (re, im)
            })
            .collect()
    }

    /// The overlap-add inverts an STFT: every output sample (interior and edges, since the envelope
    /// is exact) is the signal again, up to the f32 rounding of the bins.
    #[test]
    fn istft_inverts_an_stft() {
        // 64 samples: 17 frames, output (17 − 1)·4 = 64 samples
        let n = 64;
        let x: Vec<f64> = (0..n).map(|i| 0.3 * (0.37 * i as f64).sin() + 0.2 * (1.3 * i as f64 + 0.5).cos()).collect();
        let bins: Vec<([f32; 9], [f32; 9])> = stft(&x).iter().map(|(r, i)| (r.map(|v| v as f32), i.map(|v| v as f32))).collect();
        assert_eq!(bins.len(), 17);
        let mut out = vec![f32::NAN; n];
        istft_overlap_add(&bins, &mut out, 0.99);
        for (s, (&got, &want)) in out.iter().zip(&x).enumerate() {
            assert!((got as f64 - want).abs() < 1e-6, "sample {s}: {got} vs {want}");
        }
    }

    /// hift_istft against a direct definition: build each frame with a naive inverse DFT over the
    /// full 16 bins (Hermitian extension), window, overlap-add into the uncut signal, divide by the
    /// overlap-added squared window, trim 8 at each end.
    #[test]
    fn istft_matches_the_direct_definition() {
        let (batch, frames) = (3usize, 13usize);
        let lens = [13, 1, 6];
        let mut spec = random_f32(21, batch * frames * 18, 1.0);
        spec[5] = 6.0; // exp > 100: clipped
        for b in 0..batch {
            for f in lens[b] as usize..frames {
                spec[(b * frames + f) * 18..(b * frames + f + 1) * 18].fill(f32::NAN);
            }
        }
        let n_out = (frames - 1) * 4;
        let mut out = vec![f32::NAN; batch * n_out];
        hift_istft(&spec, Some(&lens), &mut out, batch, frames, 0.99).unwrap();
        let w = hann16();
        for b in 0..batch {
            let len = lens[b] as usize;
            let total = 16 + 4 * (len - 1);
            let (mut y, mut env) = (vec![0f64; total], vec![0f64; total]);
            for f in 0..len {
                let x = &spec[(b * frames + f) * 18..][..18];
                let mut re = [0f64; 16];
                let mut im = [0f64; 16];
                for k in 0..9 {
                    let mag = (x[k].exp()).min(100.0) as f64;
                    let ph = (x[9 + k] as f64).sin();
                    re[k] = mag * ph.cos();
                    im[k] = if k == 0 || k == 8 { 0.0 } else { mag * ph.sin() };
                }
                for k in 9..16 {
                    re[k] = re[16 - k];
                    im[k] = -im[16 - k];
                }
                for i in 0..16 {
                    let mut v = 0f64;
                    for k in 0..16 {
                        let a = 2.0 * std::f64::consts::PI * (k * i) as f64 / 16.0;
                        v += re[k] * a.cos() - im[k] * a.sin();
                    }
                    y[4 * f + i] += w[i] as f64 * v / 16.0;
                    env[4 * f + i] += (w[i] as f64).powi(2);
                }
            }
            for n in 0..n_out {
                let got = out[b * n_out + n];
                if n >= 4 * (len - 1) {
                    assert_eq!(got, 0.0, "b {b} n {n}");
                    continue;
                }
                let want = (y[n + 8] / env[n + 8]).clamp(-0.99, 0.99);
                // the reference's bins are f32 (mag·cos(ph) rounded): ~1e-7 relative of |mag| <= 100
                assert!((got as f64 - want).abs() < 2e-6 * (1.0 + want.abs()), "b {b} n {n}: {got} vs {want}");
            }
        }
        assert!(out.iter().any(|&v| v.abs() == 0.99), "the clamp was never reached: widen the test data");
    }

    /// Deterministic inputs of the torch golden tests (exact f64 formulas rounded to f32, the same in
    /// tools-side Python): f0 `(m·73.37) % 400` Hz, phases `((k·1.7) % 6.28) − 3.14` (0 for the
    /// fundamental), noise `((n·13 + k·7) % 29 − 14) / 7`, weights `0.1·(k+1)·(−1)^k`, bias 0.05.
    #[allow(clippy::approx_constant)] // 6.28 and 3.14 are the test's own constants
    fn golden_source(n_frames: usize, up: usize) -> Vec<f32> {
        let f0: Vec<f32> = (0..n_frames).map(|m| ((m as f64 * 73.37) % 400.0) as f32).collect();
        let mut phases = [0f32; 9];
        for (k, p) in phases.iter_mut().enumerate().skip(1) {
            *p = ((k as f64 * 1.7) % 6.28 - 3.14) as f32;
        }
        let n = n_frames * up;
        let mut noise = vec![0f32; 9 * n];
        for k in 0..9 {
            for s in 0..n {
                noise[k * n + s] = (((s * 13 + k * 7) % 29) as f64 - 14.0) as f32 / 7.0;
            }
        }
        let w: Vec<f32> = (0..9).map(|k| (0.1 * (k + 1) as f64 * if k % 2 == 0 { 1.0 } else { -1.0 }) as f32).collect();
        let mut out = vec![f32::NAN; n];
        hift_source(&f0, None, &phases, &noise, &w, 0.05, &mut out, 1, n_frames, up, 24000.0).unwrap();
        out
    }

    /// The source against torch 2.6 (SineGen + SourceModuleHnNSF with the phases and noise above
    /// substituted for the random draws): 48 samples at upsample 8, and every 997th sample of one
    /// second at upsample 480 (where the f64 cumsum matters). torch's sin (SLEEF, 1 ulp) and its
    /// GEMM order differ from ours by a few f32 ulp of values <= ~0.4.
    #[test]
    #[allow(clippy::excessive_precision)] // torch's f32 outputs printed as f64
    fn source_matches_torch() {
        let small = [
            0.1217736229300499,
            0.1250561773777008,
            0.12833599746227264,
            0.11801886558532715,
            0.1213044747710228,
            -0.05423245206475258,
            0.004285689443349838,
            -0.06135142222046852,
            -0.014730144292116165,
            -0.0029066160786896944,
            0.012288574129343033,
            0.023177938535809517,
            0.034446705132722855,
            0.04823068529367447,
            0.051740165799856186,
            0.06685847043991089,
            0.09012220799922943,
            0.12074128538370132,
            0.13328921794891357,
            0.15574611723423004,
            0.15741418302059174,
            0.1429724097251892,
            0.11956389248371124,
            0.08718182146549225,
            0.026627112179994583,
            -0.028585128486156464,
            -0.04803107678890228,
            -0.04555586352944374,
            0.0046884408220648766,
            0.09172505140304565,
            0.18230420351028442,
            0.2659757137298584,
            0.331549733877182,
            0.3199975788593292,
            0.20245416462421417,
            0.02784961648285389,
            -0.1768651008605957,
            -0.3164471387863159,
            -0.3620028793811798,
            -0.30365607142448425,
            -0.11103694885969162,
            0.13017219305038452,
            0.28978997468948364,
            0.30253487825393677,
            0.2092447280883789,
            0.06235450133681297,
            -0.02931925095617771,
            -0.03908493369817734,
        ];
        let long = [
            0.1217736229300499,
            0.026074763387441635,
            0.0790490210056305,
            -0.01228800043463707,
            -0.2821495532989502,
            0.0811339020729065,
            0.02562536671757698,
            -0.01253614854067564,
            0.0668652132153511,
            0.10698355734348297,
            0.11143920570611954,
            -0.20372804999351501,
            -0.013052582740783691,
            -0.017769526690244675,
            0.04067305102944374,
            -0.19272516667842865,
            -0.006063871085643768,
            0.30618828535079956,
            0.07215727120637894,
            0.04125732555985451,
            0.08986201137304306,
            -0.014792163856327534,
            0.2504981458187103,
            -0.03044520504772663,
            0.12244857847690582,
        ];
        let got = golden_source(6, 8);
        crate::testing::assert_close("source, upsample 8", &got, &small, 0.0, 1e-7);
        let got = golden_source(50, 480);
        let picked: Vec<f32> = got.iter().step_by(997).copied().collect();
        crate::testing::assert_close("source, one second at upsample 480", &picked, &long, 0.0, 1e-7);
    }

    /// The iSTFT against torch 2.6 (`_istft` + clamp of hifigan.py) on 9 frames of
    /// `x[k] = ((f·7 + 3k²) % 17) / 8 − 2.5` (k < 9), `x[k] = ((f·5 + 11k) % 23) / 4 − 2.75` (k >= 9),
    /// with `x[2, 3] = 5` (clipped at 100). torch synthesises and overlap-adds in f32 (pocketfft):
    /// a few f32 ulp of outputs <= 1 (observed 6e-8).
    #[test]
    #[allow(clippy::excessive_precision)]
    fn istft_matches_torch() {
        let want = [
            0.00039551855297759175,
            0.4401524066925049,
            0.2849591076374054,
            -0.9900000095367432,
            -0.9900000095367432,
            0.9900000095367432,
            0.9900000095367432,
            0.9900000095367432,
            -0.9900000095367432,
            -0.9900000095367432,
            -0.9900000095367432,
            0.9900000095367432,
            0.9900000095367432,
            -0.5878353118896484,
            -0.9900000095367432,
            -0.2961632311344147,
            0.011864320375025272,
            -0.0003779875405598432,
            0.01189464796334505,
            -0.06603161990642548,
            0.0595947690308094,
            0.10936804860830307,
            0.019140610471367836,
            0.012007348239421844,
            -0.0032939661759883165,
            -0.045146819204092026,
            0.010457546450197697,
            0.07096301019191742,
            -0.01785021834075451,
            -0.00809146836400032,
            -0.029800675809383392,
            0.03351103886961937,
        ];
        let frames = 9;
        let mut spec = vec![0f32; frames * 18];
        for f in 0..frames {
            for k in 0..18 {
                spec[f * 18 + k] = if k < 9 {
                    (((f * 7 + k * k * 3) % 17) as f64 / 8.0 - 2.5) as f32
                } else {
                    (((f * 5 + k * 11) % 23) as f64 / 4.0 - 2.75) as f32
                };
            }
        }
        spec[2 * 18 + 3] = 5.0;
        let mut out = vec![f32::NAN; (frames - 1) * 4];
        hift_istft(&spec, None, &mut out, 1, frames, 0.99).unwrap();
        crate::testing::assert_close("istft", &out, &want, 0.0, 5e-7);
    }

    #[test]
    fn istft_rejects_bad_lens() {
        let mut out = vec![5.0f32; 8];
        assert_eq!(hift_istft(&[0.0; 36], Some(&[0]), &mut out, 1, 2, 0.99), Err((0, 0)));
        assert_eq!(hift_istft(&[0.0; 36], Some(&[3]), &mut out, 1, 2, 0.99), Err((0, 3)));
        assert!(out.iter().all(|&v| v == 5.0));
    }
}
