//! The signal stages of the HiFT vocoder: the harmonic NSF source and the inverse STFT.
//!
//! Kernels: `hift_source` and `hift_istft` in kernels/hift.cu (see the header there for the launch
//! geometry and the one place the kernel may differ from the Cpu reference in the last bit).
use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::conv::check_lens;
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `hift_source`; mirrors SRC_BLOCK in hift.cu.
const SRC_BLOCK: u32 = 256;
/// Most mel frames one `hift_source` block owns; mirrors SRC_MAX_FRAMES.
const SRC_MAX_FRAMES: usize = 32;
/// Threads (output samples) per block of `hift_istft`; mirrors ISTFT_BLOCK.
const ISTFT_BLOCK: u32 = 256;

/// Mirrors `HiftSourceParams` in kernels/hift.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct HiftSourceParams {
    pub f0: u64,
    pub lens: u64,
    pub phases: u64,
    pub noise: u64,
    pub l_weight: u64,
    pub l_bias: u64,
    pub out: u64,
    pub batch: u32,
    pub n_frames: u32,
    pub upsample: u32,
    pub frames_per_block: u32,
    pub sample_rate: f32,
    pub pad_: u32,
}
const _: () = assert!(std::mem::size_of::<HiftSourceParams>() == 80);

/// Mirrors `HiftIstftParams` in kernels/hift.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct HiftIstftParams {
    pub spec: u64,
    pub lens: u64,
    pub out: u64,
    pub batch: u32,
    pub frames: u32,
    pub out_len: u32,
    pub clamp: f32,
}
const _: () = assert!(std::mem::size_of::<HiftIstftParams>() == 40);

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
///
/// The Cpu reference follows the reference's f32 operations one by one (sin in f64, rounded once).
/// The kernels sum the phase per mel frame (`F_k` is constant over `upsample` samples) in f64 in a
/// different order: identical to the per-sample sum whenever the f64 partial sums are exact (they
/// are for real f0 contours), else the cumulative phase may differ in its last f32 bit.
/// Errors: upsample 0, a sample rate that is not finite and positive, shape and dtype mismatches.
/// A `lens[b]` outside `0..=Nm` is an error on Cpu (nothing written); on Cuda/Emu (lengths live on
/// the device) the whole row b is written as NaN.
#[allow(clippy::too_many_arguments)]
pub fn hift_source(
    f0: View<'_>,
    lens: Option<View<'_>>,
    phases: View<'_>,
    noise: View<'_>,
    l_weight: View<'_>,
    l_bias: View<'_>,
    mut out: ViewMut<'_>,
    upsample: usize,
    sample_rate: f32,
) -> Result<()> {
    const OP: &str = "hift_source";
    const H: usize = HIFT_HARMONICS;
    let mut devs = vec![phases.device(), noise.device(), l_weight.device(), l_bias.device(), out.device()];
    if let Some(l) = &lens {
        devs.push(l.device());
    }
    let dev = same_device(OP, f0.device(), &devs)?;
    if upsample == 0 {
        return Err(Error::invalid(OP, "upsample must be at least 1"));
    }
    if !(sample_rate.is_finite() && sample_rate > 0.0) {
        return Err(Error::invalid(OP, format!("sample_rate = {sample_rate}")));
    }
    let (batch, n_frames) = (f0.rows(), f0.row_len());
    if f0.shape().len() != 2 {
        return Err(Error::shape(OP, format!("f0 {:?} is not [batch, frames]", f0.shape())));
    }
    let n = n_frames.checked_mul(upsample).ok_or_else(|| Error::shape(OP, "frames × upsample overflows"))?;
    if phases.shape() != [batch, H] {
        return Err(Error::shape(OP, format!("phases {:?} is not [{batch}, {H}]", phases.shape())));
    }
    if noise.shape() != [batch, H, n] {
        return Err(Error::shape(OP, format!("noise {:?} is not [{batch}, {H}, {n}]", noise.shape())));
    }
    if l_weight.len() != H || l_bias.len() != 1 {
        return Err(Error::shape(
            OP,
            format!("l_weight {:?} / l_bias {:?}: want {H} and 1 values", l_weight.shape(), l_bias.shape()),
        ));
    }
    if out.rows() != batch || out.row_len() != n {
        return Err(Error::shape(OP, format!("out {:?} is not [{batch}, {n}]", out.shape())));
    }
    check_lens(OP, &lens, batch)?;
    for (what, v) in [("f0", &f0), ("phases", &phases), ("noise", &noise), ("l_weight", &l_weight), ("l_bias", &l_bias)] {
        expect_dtype(OP, what, v, DType::F32)?;
    }
    expect_dtype(OP, "out", &out.as_view(), DType::F32)?;
    if batch == 0 || n == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let l = lens.map(|l| l.host_i32()).transpose()?;
            cpu::hift_source(
                f0.host_f32()?,
                l,
                phases.host_f32()?,
                noise.host_f32()?,
                l_weight.host_f32()?,
                l_bias.host_f32()?[0],
                out.host_f32_mut()?,
                batch,
                n_frames,
                upsample,
                sample_rate,
            )
            .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 0..={n_frames}")))
        }
        _ => {
            // about one block of samples per block, at most SRC_MAX_FRAMES frames
            let fpb = (SRC_BLOCK as usize).div_ceil(upsample).clamp(1, SRC_MAX_FRAMES);
            u32_param(OP, "samples", n)?;
            if n_frames > i32::MAX as usize {
                return Err(Error::invalid(OP, format!("{n_frames} frames (lengths are i32)")));
            }
            let p = HiftSourceParams {
                f0: f0.addr(),
                lens: lens.map_or(0, |l| l.addr()),
                phases: phases.addr(),
                noise: noise.addr(),
                l_weight: l_weight.addr(),
                l_bias: l_bias.addr(),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                n_frames: n_frames as u32,
                upsample: u32_param(OP, "upsample", upsample)?,
                frames_per_block: fpb as u32,
                sample_rate,
                pad_: 0,
            };
            let grid = [blocks_for(OP, n_frames, fpb as u32)?, p.batch, 1];
            launch(dev, "hift_source", LaunchDims::new(grid, [SRC_BLOCK, 1, 1], 0), &p)
        }
    }
}

/// HiFT's output stage (hifigan.py:439-445, `torch.istft` semantics): with `x = spec[b, f]`,
/// `mag_k = min(exp(x[k]), 100)` and `ph_k = sin(x[9 + k])` for k = 0..=8, frame f is
/// `irfft(mag·cos(ph) + i·mag·sin(ph), n = 16)` (the imaginary parts of bins 0 and 8 ignored), times
/// the periodic Hann window of 16; frames overlap-add at hop 4, the sum is divided by the overlap-
/// added squared window, `center=True` trims 8 samples at each end, and the result is clamped to
/// `±clamp`. Output samples `n ≥ (lens[b] − 1)·4` are written as 0.
///
/// Shapes: `spec` `[B, F, 18]` f32 (conv_post output, time-major), `lens` `[B]` i32 (frames,
/// `1 ≤ lens[b] ≤ F`), `out` `[B, (F − 1)·4]` f32 (any shape with B rows of that many values,
/// e.g. `[B, 1, (F − 1)·4]`).
///
/// The envelope is exact for every sample (the frames present, edges included), so a batched
/// sequence gives what it gives alone. Cpu synthesises the frames in f64 from the f32 bins; the
/// kernel in f32 (16-entry twiddle tables): they agree to ~1e-6 of the bins' magnitudes.
/// Errors: `clamp` NaN or not positive (+inf disables it), shape and dtype mismatches, no frames.
/// A `lens[b]` outside `1..=F` is an error on Cpu (nothing written) and a NaN row b on Cuda/Emu.
pub fn hift_istft(spec: View<'_>, lens: Option<View<'_>>, mut out: ViewMut<'_>, clamp: f32) -> Result<()> {
    const OP: &str = "hift_istft";
    let mut devs = vec![out.device()];
    if let Some(l) = &lens {
        devs.push(l.device());
    }
    let dev = same_device(OP, spec.device(), &devs)?;
    let (batch, frames) = match *spec.shape() {
        [b, f, 18] if f > 0 => (b, f),
        _ => return Err(Error::shape(OP, format!("spec {:?} is not [batch, frames >= 1, 18]", spec.shape()))),
    };
    let n = (frames - 1) * cpu::HIFT_HOP;
    if out.rows() != batch || out.row_len() != n || out.shape().len() < 2 {
        return Err(Error::shape(OP, format!("out {:?} is not [{batch}, {n}]", out.shape())));
    }
    if clamp.is_nan() || clamp <= 0.0 {
        return Err(Error::invalid(OP, format!("clamp = {clamp}")));
    }
    check_lens(OP, &lens, batch)?;
    expect_dtype(OP, "spec", &spec, DType::F32)?;
    expect_dtype(OP, "out", &out.as_view(), DType::F32)?;
    if batch == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let l = lens.map(|l| l.host_i32()).transpose()?;
            cpu::hift_istft(spec.host_f32()?, l, out.host_f32_mut()?, batch, frames, clamp)
                .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 1..={frames}")))
        }
        _ => {
            if n == 0 {
                return Ok(()); // nothing to write (the lengths are not looked at, as on Cpu they would be)
            }
            // out_len < 2^32 bounds the frames below 2^30: lengths compare as i32 in the kernel
            let p = HiftIstftParams {
                spec: spec.addr(),
                lens: lens.map_or(0, |l| l.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                frames: u32_param(OP, "frames", frames)?,
                out_len: u32_param(OP, "samples", n)?,
                clamp,
            };
            let grid = [blocks_for(OP, n, ISTFT_BLOCK)?, p.batch, 1];
            launch(dev, "hift_istft", LaunchDims::new(grid, [ISTFT_BLOCK, 1, 1], 0), &p)
        }
    }
}
