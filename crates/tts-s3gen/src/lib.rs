//! S3Gen: speech tokens to 24 kHz audio (spec §4): the flow (token encoder with rel-pos conformer
//! layers, conditional flow matching with classifier-free guidance over a causal conv + transformer
//! UNet estimator) and the HiFT vocoder (F0 predictor, harmonic NSF source, transposed-conv
//! upsampling with Snake resblocks, iSTFT).
//!
//! - [`config`]: dimensions (real ones by default, `config.json` overrides);
//! - [`layers`]: linear, conv (im2col + GEMM), transposed conv (GEMM + overlap-add), LayerNorm;
//! - [`encoder`], [`estimator`], [`flow`]: tokens → mel;
//! - [`hift`]: mel → waveform;
//! - [`S3Gen`]: both, batched across requests of different lengths, with the reference's trim/fade;
//! - [`synthetic`]: random weights at the real dimensions, built in memory from a seed (noise, not speech).
//!
//! Every stage runs on the op API of tts-kernels, so the same code runs on Cpu (f32, the parity
//! reference), Emu and Cuda (bf16 GEMM inputs, f32 streams).
use std::path::Path;

use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;

pub mod config;
pub mod encoder;
pub mod error;
pub mod estimator;
pub mod flow;
pub mod hift;
pub mod layers;
pub mod noise;
pub mod synthetic;

pub use config::S3GenConfig;
pub use flow::{Flow, FlowOut, FlowRequest};
pub use hift::{Hift, HiftOut, HiftRequest};

/// Output sample rate in Hz.
pub const SAMPLE_RATE: u32 = 24_000;
/// Mel bins of the flow's output and of the vocoder's input.
pub const MEL_BINS: usize = 80;
/// Mel frames per speech token (tokens are 25 Hz, mels 50 Hz).
pub const MEL_FRAMES_PER_TOKEN: usize = 2;
/// Output samples per mel frame (hop 480 at 24 kHz).
pub const SAMPLES_PER_MEL_FRAME: usize = 480;
/// Default number of Euler steps of the flow-matching solver.
pub const DEFAULT_CFM_STEPS: usize = 10;
/// Classifier-free guidance rate of the flow-matching decoder.
pub const CFM_CFG_RATE: f32 = 0.7;

/// Whether the model is implemented. The parity harness reports its fixture cases as pending
/// while this is false, and as failures if it is true but they have no runner.
pub const IMPLEMENTED: bool = true;

pub use error::{Error, Result};

/// The reference's output fade (s3gen.py:254-258, 359-360): the first 20 ms silenced, the next
/// 20 ms faded in with a raised cosine `(cos(linspace(π, 0, 480)) + 1)/2`, in f32.
pub fn trim_fade(wav: &mut [f32]) {
    let n = SAMPLE_RATE as usize / 50;
    for (i, s) in wav.iter_mut().take(2 * n).enumerate() {
        let f = if i < n { 0.0 } else { (flow::linspace_f32(std::f32::consts::PI, 0.0, n, i - n).cos() + 1.0) / 2.0 };
        *s *= f;
    }
}

/// One synthesis request: the voice's prompt, the speech tokens and the seed of its randomness.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub flow: FlowRequest<'a>,
    /// Injected NSF phases `[9]` and noise `[9, 480·frames]` (tests); `None` draws them from the seed.
    pub source_phases: Option<&'a [f32]>,
    pub source_noise: Option<&'a [f32]>,
}

/// S3Gen: the flow and the vocoder.
pub struct S3Gen {
    pub config: S3GenConfig,
    pub flow: Flow,
    pub hift: Hift,
    device: Device,
}

impl S3Gen {
    /// Loads `s3gen.safetensors` (and `config.json` when present) from a model directory.
    pub fn load(dir: &Path, dev: &Device) -> Result<S3Gen> {
        let config = S3GenConfig::from_model_dir(dir)?;
        let ck = Checkpoint::open(&dir.join("s3gen.safetensors"))?;
        S3Gen::from_checkpoint(config, &ck, dev)
    }

    /// Loads the flow and the vocoder of dimensions `config` from a checkpoint (a file or a
    /// synthetic one).
    pub fn from_checkpoint(config: S3GenConfig, ck: &Checkpoint, dev: &Device) -> Result<S3Gen> {
        config.validate()?;
        Ok(S3Gen { flow: Flow::load(ck, dev, &config)?, hift: Hift::load(ck, dev, &config)?, config, device: dev.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Speech tokens → 24 kHz waveforms (with the trim/fade), one per request, batched.
    pub fn synthesize(&self, reqs: &[Request<'_>], n_steps: usize) -> Result<Vec<Vec<f32>>> {
        let flow_reqs: Vec<FlowRequest<'_>> = reqs.iter().map(|r| r.flow).collect();
        let out = self.flow.inference(&self.device, &flow_reqs, n_steps)?;
        let hift_reqs: Vec<HiftRequest<'_>> = reqs
            .iter()
            .zip(&out.mels)
            .map(|(r, mel)| HiftRequest { mel, phases: r.source_phases, noise: r.source_noise, f0: None, seed: r.flow.seed })
            .collect();
        let mut wavs = self.hift.inference(&self.device, &hift_reqs)?.wav;
        for w in &mut wavs {
            trim_fade(w);
        }
        Ok(wavs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_token_is_960_samples() {
        assert_eq!(super::MEL_FRAMES_PER_TOKEN * super::SAMPLES_PER_MEL_FRAME, 960);
    }

    #[test]
    fn trim_fade_silences_20ms_then_fades_in() {
        let mut w = vec![1.0f32; 2000];
        super::trim_fade(&mut w);
        assert!(w[..480].iter().all(|&v| v == 0.0));
        assert!(w[480] < 1e-6 && (w[959] - 1.0).abs() < 1e-6 && w[960] == 1.0);
        assert!(w[480..960].windows(2).all(|p| p[0] <= p[1]));
    }
}
