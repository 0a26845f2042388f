//! The HiFT vocoder (spec §4.6; hifigan.py, f0_predictor.py): F0 prediction, the harmonic NSF
//! source and its STFT, transposed-conv upsampling with Snake resblocks, and the iSTFT output.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops::{self, Activation, HIFT_HARMONICS, Im2col, PadMode};
use tts_kernels::{DType, Device, Tensor, View};

use crate::config::S3GenConfig;
use crate::layers::{Conv1d, ConvTranspose1d, Lens, Linear, apply};
use crate::{Error, MEL_BINS, Result, SAMPLE_RATE, SAMPLES_PER_MEL_FRAME, noise};

pub(crate) const UPSAMPLE_RATES: [usize; 3] = [8, 5, 3];
pub(crate) const UPSAMPLE_KERNELS: [usize; 3] = [16, 11, 7];
pub(crate) const RESBLOCK_KERNELS: [usize; 3] = [3, 7, 11];
const RESBLOCK_DILATIONS: [usize; 3] = [1, 3, 5];
/// (kernel, stride, padding) of `source_downs`; the last kernel is 1.
pub(crate) const SOURCE_DOWNS: [(usize, usize, usize); 3] = [(30, 15, 7), (6, 3, 1), (1, 1, 0)];
pub(crate) const SOURCE_RESBLOCK_KERNELS: [usize; 3] = [7, 7, 11];
const N_FFT: usize = 16;
const HOP: usize = 4;
pub(crate) const STFT_BINS: usize = N_FFT / 2 + 1;
const AUDIO_LIMIT: f32 = 0.99;

/// `ResBlock` with Snake activations: for each dilation d,
/// `x += conv2(snake2(conv1_d(snake1(x))))`.
struct ResBlock {
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv1d>,
    alpha1: Vec<Tensor>,
    alpha2: Vec<Tensor>,
}

impl ResBlock {
    fn load(ck: &Checkpoint, dev: &Device, p: &str, c: usize, k: usize) -> Result<ResBlock> {
        let mut r = ResBlock { convs1: vec![], convs2: vec![], alpha1: vec![], alpha2: vec![] };
        for (i, &d) in RESBLOCK_DILATIONS.iter().enumerate() {
            let pad1 = (k * d - d) / 2;
            r.convs1.push(Conv1d::load(ck, dev, &format!("{p}.convs1.{i}"), [c, c, k], true, (pad1, pad1), 1, d)?);
            r.convs2.push(Conv1d::load(ck, dev, &format!("{p}.convs2.{i}"), [c, c, k], true, ((k - 1) / 2, (k - 1) / 2), 1, 1)?);
            for (name, v) in [("activations1", &mut r.alpha1), ("activations2", &mut r.alpha2)] {
                let a = ck.f32(&format!("{p}.{name}.{i}.alpha"), &[c])?;
                v.push(Tensor::from_f32(dev, DType::F32, &[c], &a)?);
            }
        }
        Ok(r)
    }

    /// `x` `[B, L, C]` f32 → a new tensor.
    fn forward(&self, x: View<'_>, lens: &Lens) -> Result<Tensor> {
        let mut x = apply(x, DType::F32, Activation::Identity, None)?;
        for i in 0..self.convs1.len() {
            let mut t = Tensor::uninit(x.device(), DType::F32, x.shape())?;
            ops::activation(x.view(), t.view_mut(), Activation::Snake, Some(self.alpha1[i].view()), None)?;
            let mut t = self.convs1[i].forward(t.view(), lens)?;
            ops::activation_inplace(t.view_mut(), Activation::Snake, Some(self.alpha2[i].view()), None)?;
            let t = self.convs2[i].forward(t.view(), lens)?;
            ops::add_scaled(x.view_mut(), t.view(), 1.0)?;
        }
        Ok(x)
    }
}

/// The HiFT generator.
///
/// The F0 predictor runs in f32 on every backend (f32 weights and GEMMs; it is ~2% of the vocoder's
/// work): the NSF source integrates F0 over every output sample, so a bf16-rounded F0 (~4e-3 relative)
/// would drift the harmonics' phases by radians within a second of audio.
pub struct Hift {
    f0_convs: Vec<Conv1d>,
    f0_classifier: Linear,
    l_weight: Tensor,
    l_bias: Tensor,
    stft: Linear,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    source_downs: Vec<Conv1d>,
    source_resblocks: Vec<ResBlock>,
    resblocks: Vec<ResBlock>,
    conv_post: Conv1d,
}

/// One vocoder request: a mel `[frames, 80]` (time-major) and the source's randomness.
#[derive(Clone, Copy, Debug)]
pub struct HiftRequest<'a> {
    pub mel: &'a [f32],
    /// Initial phases of the 9 sinusoids (`[0]` is 0 in the reference); `None` draws them from `seed`.
    pub phases: Option<&'a [f32]>,
    /// Standard-normal noise `[9, 480·frames]`; `None` draws it from `seed`.
    pub noise: Option<&'a [f32]>,
    /// F0 per frame in Hz to use instead of the predictor's (teacher forcing in tests).
    pub f0: Option<&'a [f32]>,
    pub seed: u64,
}

/// The vocoder's results for a batch, per request.
pub struct HiftOut {
    /// F0 in Hz per mel frame.
    pub f0: Vec<Vec<f32>>,
    /// The NSF source, 480 samples per frame.
    pub source: Vec<Vec<f32>>,
    /// The waveform (clamped to ±0.99), 480 samples per frame.
    pub wav: Vec<Vec<f32>>,
}

/// The periodic Hann window of `n` (scipy `get_window("hann", n, fftbins=True)`), f64 then f32.
fn hann_periodic(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect()
}

/// The windowed DFT as a `[18, 16]` GEMM weight: rows 0..9 the real parts, 9..18 the imaginary
/// parts (`−Σ x·w·sin`), as `torch.stft` then `cat([real, imag])`.
fn stft_matrix() -> Vec<f32> {
    let w = hann_periodic(N_FFT);
    let mut m = vec![0f32; 2 * STFT_BINS * N_FFT];
    for k in 0..STFT_BINS {
        for n in 0..N_FFT {
            let a = 2.0 * std::f64::consts::PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
            m[k * N_FFT + n] = (w[n] as f64 * a.cos()) as f32;
            m[(STFT_BINS + k) * N_FFT + n] = (-(w[n] as f64) * a.sin()) as f32;
        }
    }
    m
}

impl Hift {
    pub fn load(ck: &Checkpoint, dev: &Device, cfg: &S3GenConfig) -> Result<Hift> {
        let p = "mel2wav";
        let (c, fc) = (cfg.hift_base_channels, cfg.f0_cond_channels);
        let f0_convs = (0..5)
            .map(|i| {
                let c_in = if i == 0 { MEL_BINS } else { fc };
                // precise: the NSF source integrates F0 over every sample (see `Hift`)
                Conv1d::load_with(
                    ck,
                    dev,
                    &format!("{p}.f0_predictor.condnet.{}", 2 * i),
                    [fc, c_in, 3],
                    true,
                    (1, 1),
                    1,
                    1,
                    true,
                )
            })
            .collect::<Result<_>>()?;
        let lw = ck.f32(&format!("{p}.m_source.l_linear.weight"), &[1, HIFT_HARMONICS])?;
        let lb = ck.f32(&format!("{p}.m_source.l_linear.bias"), &[1])?;
        let mut ups = Vec::new();
        let mut source_downs = Vec::new();
        let mut source_resblocks = Vec::new();
        let mut resblocks = Vec::new();
        for i in 0..3 {
            let (c_in, c_out) = (c >> i, c >> (i + 1));
            let (u, k) = (UPSAMPLE_RATES[i], UPSAMPLE_KERNELS[i]);
            ups.push(ConvTranspose1d::load_weight_norm(ck, dev, &format!("{p}.ups.{i}"), [c_in, c_out, k], u, (k - u) / 2)?);
            let (sk, ss, sp) = SOURCE_DOWNS[i];
            source_downs.push(Conv1d::load(
                ck,
                dev,
                &format!("{p}.source_downs.{i}"),
                [c_out, 2 * STFT_BINS, sk],
                false,
                (sp, sp),
                ss,
                1,
            )?);
            source_resblocks.push(ResBlock::load(
                ck,
                dev,
                &format!("{p}.source_resblocks.{i}"),
                c_out,
                SOURCE_RESBLOCK_KERNELS[i],
            )?);
            for (j, &rk) in RESBLOCK_KERNELS.iter().enumerate() {
                resblocks.push(ResBlock::load(ck, dev, &format!("{p}.resblocks.{}", 3 * i + j), c_out, rk)?);
            }
        }
        Ok(Hift {
            f0_convs,
            f0_classifier: {
                let w = ck.f32(&format!("{p}.f0_predictor.classifier.weight"), &[1, fc])?;
                let b = ck.f32(&format!("{p}.f0_predictor.classifier.bias"), &[1])?;
                Linear::from_f32_precise(dev, &w, 1, fc, Some(&b))?
            },
            l_weight: Tensor::from_f32(dev, DType::F32, &[HIFT_HARMONICS], &lw)?,
            l_bias: Tensor::from_f32(dev, DType::F32, &[1], &lb)?,
            stft: Linear::from_f32(dev, &stft_matrix(), 2 * STFT_BINS, N_FFT, None)?,
            conv_pre: Conv1d::load(ck, dev, &format!("{p}.conv_pre"), [c, MEL_BINS, 7], true, (3, 3), 1, 1)?,
            ups,
            source_downs,
            source_resblocks,
            resblocks,
            conv_post: Conv1d::load(ck, dev, &format!("{p}.conv_post"), [2 * STFT_BINS, c >> 3, 7], true, (3, 3), 1, 1)?,
        })
    }

    fn check(reqs: &[HiftRequest<'_>]) -> Result<()> {
        if reqs.is_empty() {
            return Err(Error::Input { request: None, detail: "an empty vocoder batch".into() });
        }
        for (i, r) in reqs.iter().enumerate() {
            let frames = r.mel.len() / MEL_BINS;
            let bad = |m: String| Err(Error::Input { request: Some(i), detail: format!("vocoder: {m}") });
            if frames == 0 || !r.mel.len().is_multiple_of(MEL_BINS) {
                return bad(format!("mel of {} values is not [frames ≥ 1, {MEL_BINS}]", r.mel.len()));
            }
            if r.phases.is_some_and(|p| p.len() != HIFT_HARMONICS) {
                return bad(format!("{HIFT_HARMONICS} phases expected"));
            }
            if r.noise.is_some_and(|z| z.len() != HIFT_HARMONICS * SAMPLES_PER_MEL_FRAME * frames) {
                return bad(format!("noise must be [{HIFT_HARMONICS}, {}]", SAMPLES_PER_MEL_FRAME * frames));
            }
            if r.f0.is_some_and(|f| f.len() != frames) {
                return bad(format!("{frames} F0 values expected"));
            }
            if r.mel.iter().any(|v| !v.is_finite()) {
                return bad("non-finite mel".into());
            }
        }
        Ok(())
    }

    /// Mel → waveform for a batch (no trim/fade: see [`crate::trim_fade`]).
    pub fn inference(&self, dev: &Device, reqs: &[HiftRequest<'_>]) -> Result<HiftOut> {
        Self::check(reqs)?;
        let b = reqs.len();
        let frames: Vec<usize> = reqs.iter().map(|r| r.mel.len() / MEL_BINS).collect();
        let nm = *frames.iter().max().unwrap_or(&0);
        let s_len = nm * SAMPLES_PER_MEL_FRAME;
        let mut mel = vec![0f32; b * nm * MEL_BINS];
        let mut phases = vec![0f32; b * HIFT_HARMONICS];
        let mut noise_all = vec![0f32; b * HIFT_HARMONICS * s_len];
        for (i, r) in reqs.iter().enumerate() {
            mel[i * nm * MEL_BINS..][..r.mel.len()].copy_from_slice(r.mel);
            let n_i = frames[i] * SAMPLES_PER_MEL_FRAME;
            let drawn;
            let z = match r.noise {
                Some(z) => z,
                None => {
                    drawn = noise::source_noise(r.seed, 0..n_i);
                    &drawn
                }
            };
            for h in 0..HIFT_HARMONICS {
                noise_all[(i * HIFT_HARMONICS + h) * s_len..][..n_i].copy_from_slice(&z[h * n_i..(h + 1) * n_i]);
            }
            // U(−π, π) with the fundamental's phase 0, as SineGen draws them
            let ph = match r.phases {
                Some(p) => p.to_vec(),
                None => noise::uniform(r.seed, noise::SOURCE_PHASES, HIFT_HARMONICS)
                    .iter()
                    .enumerate()
                    .map(|(h, u)| if h == 0 { 0.0 } else { (u * 2.0 - 1.0) * std::f32::consts::PI })
                    .collect(),
            };
            phases[i * HIFT_HARMONICS..][..HIFT_HARMONICS].copy_from_slice(&ph);
        }
        // Uploads: everything the vocoder reads from the host goes up before its first launch (on a
        // GPU a copy from the host waits for the queue; none may sit between the stages).
        let lens = Lens::new(dev, &frames)?;
        let mel = Tensor::from_f32(dev, DType::F32, &[b, nm, MEL_BINS], &mel)?;
        let phases = Tensor::from_f32(dev, DType::F32, &[b, HIFT_HARMONICS], &phases)?;
        let noise_t = Tensor::from_f32(dev, DType::F32, &[b, HIFT_HARMONICS, s_len], &noise_all)?;
        let s_lens = lens.map(|f| f * SAMPLES_PER_MEL_FRAME)?;
        let stft_lens = s_lens.map(|s| s / HOP + 1)?;
        // the decoder's lengths after conv_pre and after each upsampling stage (+1: the last stage's
        // ReflectionPad1d((1, 0)))
        let pre_lens = self.conv_pre.out_lens(&lens)?;
        // per stage: (after the upsampling, after the pad)
        let mut stage_lens: Vec<(Lens, Lens)> = Vec::with_capacity(self.ups.len());
        for (i, up) in self.ups.iter().enumerate() {
            let l = up.out_lens(stage_lens.last().map_or(&pre_lens, |s| &s.1))?;
            let padded = if i == 2 { l.map(|n| n + 1)? } else { l.clone() };
            stage_lens.push((l, padded));
        }
        let post_lens = self.conv_post.out_lens(stage_lens.last().map_or(&pre_lens, |s| &s.1))?;
        // teacher-forced F0: rows of the forced requests are zeroed on the device (lengths 0), then
        // their values added
        let forced = if reqs.iter().any(|r| r.f0.is_some()) {
            let keep: Vec<usize> = reqs.iter().map(|r| if r.f0.is_some() { 0 } else { nm }).collect();
            let mut values = vec![0f32; b * nm];
            for (i, r) in reqs.iter().enumerate() {
                if let Some(f) = r.f0 {
                    values[i * nm..i * nm + f.len()].copy_from_slice(f);
                }
            }
            Some((Lens::new(dev, &keep)?, Tensor::from_f32(dev, DType::F32, &[b, nm, 1], &values)?))
        } else {
            None
        };

        // F0: 5 × (conv k3 → ELU), Linear → |·|
        let mut h = apply(mel.view(), DType::F32, Activation::Identity, None)?;
        for c in &self.f0_convs {
            let mut y = c.forward(h.view(), &lens)?;
            ops::activation_inplace(y.view_mut(), Activation::Elu, None, None)?;
            h = y;
        }
        let mut f0 = self.f0_classifier.apply(h.view(), DType::F32)?;
        ops::activation_inplace(f0.view_mut(), Activation::Abs, None, None)?;
        if let Some((keep, values)) = &forced {
            ops::activation_inplace(f0.view_mut(), Activation::Identity, None, Some(keep.view()))?;
            ops::add_scaled(f0.view_mut(), values.view(), 1.0)?;
        }

        // the NSF source and its STFT
        let mut source = Tensor::uninit(dev, DType::F32, &[b, s_len])?;
        ops::hift_source(
            f0.view().reshape(&[b, nm])?,
            Some(lens.view()),
            phases.view(),
            noise_t.view(),
            self.l_weight.view(),
            self.l_bias.view(),
            source.view_mut(),
            SAMPLES_PER_MEL_FRAME,
            SAMPLE_RATE as f32,
        )?;
        let n_frames = s_len / HOP + 1;
        let mut cols = Tensor::uninit(dev, dev.compute_dtype(), &[b, n_frames, N_FFT])?;
        let geom = Im2col { kernel: N_FFT, stride: HOP, dilation: 1, pad_left: N_FFT / 2, upsample: 1, pad: PadMode::Reflect };
        ops::im2col(source.view().reshape(&[b, s_len, 1])?, Some(s_lens.view()), cols.view_mut(), geom)?;
        let s_stft = self.stft.apply(cols.view(), DType::F32)?;

        // decode
        let mut x = self.conv_pre.forward(mel.view(), &lens)?;
        let mut x_lens = &pre_lens;
        for (i, (up_lens, y_lens)) in stage_lens.iter().enumerate() {
            let a = apply(x.view(), dev.compute_dtype(), Activation::LeakyRelu(0.1), None)?;
            let mut y = self.ups[i].forward(a.view(), x_lens)?;
            if i == 2 {
                // ReflectionPad1d((1, 0))
                let (l, c) = (y.shape()[1], y.shape()[2]);
                let mut padded = Tensor::uninit(dev, DType::F32, &[b, l + 1, c])?;
                let g = Im2col { kernel: 1, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Reflect };
                ops::im2col(y.view(), Some(up_lens.view()), padded.view_mut(), g)?;
                y = padded;
            }
            let si = self.source_downs[i].forward(s_stft.view(), &stft_lens)?;
            if si.shape() != y.shape() {
                return Err(Error::Misuse(format!("HiFT stage {i}: source {:?} vs upsampled {:?}", si.shape(), y.shape())));
            }
            let si = self.source_resblocks[i].forward(si.view(), y_lens)?;
            ops::add_scaled(y.view_mut(), si.view(), 1.0)?;
            let mut acc = self.resblocks[3 * i].forward(y.view(), y_lens)?;
            for j in 1..3 {
                let r = self.resblocks[3 * i + j].forward(y.view(), y_lens)?;
                ops::add_scaled(acc.view_mut(), r.view(), 1.0)?;
            }
            ops::activation_inplace(acc.view_mut(), Activation::Scale(1.0 / 3.0), None, None)?;
            x = acc;
            x_lens = y_lens;
        }
        ops::activation_inplace(x.view_mut(), Activation::LeakyRelu(0.01), None, None)?;
        let spec = self.conv_post.forward(x.view(), x_lens)?;
        let f = spec.shape()[1];
        let mut wav = Tensor::uninit(dev, DType::F32, &[b, (f - 1) * HOP])?;
        ops::hift_istft(spec.view(), Some(post_lens.view()), wav.view_mut(), AUDIO_LIMIT)?;

        let (f0h, srch, wavh) = (f0.to_f32_vec()?, source.to_f32_vec()?, wav.to_f32_vec()?);
        let wl = (f - 1) * HOP;
        Ok(HiftOut {
            f0: frames.iter().enumerate().map(|(i, &n)| f0h[i * nm..i * nm + n].to_vec()).collect(),
            source: frames
                .iter()
                .enumerate()
                .map(|(i, &n)| srch[i * s_len..i * s_len + n * SAMPLES_PER_MEL_FRAME].to_vec())
                .collect(),
            wav: frames.iter().enumerate().map(|(i, &n)| wavh[i * wl..i * wl + n * SAMPLES_PER_MEL_FRAME].to_vec()).collect(),
        })
    }
}
