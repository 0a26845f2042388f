//! The VoiceEncoder (spec §5.3): a 16 kHz reference recording becomes T3's `speaker_emb`, exactly
//! as `VoiceEncoder.embeds_from_wavs([wav], 16000)` of chatterbox-tts 0.1.7 computes it
//! (`voice_encoder/voice_encoder.py`), with `tts.py`'s mean over the one utterance (an identity):
//!
//! 1. [`trim`]: `librosa.effects.trim(wav, top_db=20)`;
//! 2. [`mel`]: the 40-band linear power mel, `[T][40]`;
//! 3. [`partials`]: windows of 160 frames every 77 (`rate=1.3`, `min_coverage=0.8`), the mel
//!    zero-padded or truncated to fit them;
//! 4. [`VoiceEncoder::partial_embeds`]: a 3-layer LSTM over every window at once (`lstm.rs`),
//!    `h_n` of the last layer → `proj` → ReLU → L2-normalised, `[n][E]`;
//! 5. [`aggregate`]: the mean of the partial embeddings, L2-normalised, `[E]`.
//!
//! `embeds_from_wavs` runs the partials in chunks of `batch_size=32`; each partial's embedding is
//! independent of the others, so this runs them in one batch.
mod lstm;
pub mod mel;
pub mod partials;
pub mod trim;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::cpu::linear;

use crate::{Error, Result, config};
use lstm::LstmLayer;
use mel::{MelExtractor, N_MELS, SAMPLE_RATE};
use partials::{MIN_COVERAGE, Partials, RATE, frame_step, partial_windows};

pub use trim::trim;

/// `embeds_from_wavs`'s `trim_top_db`.
pub const TRIM_TOP_DB: f64 = 20.0;
/// LSTM layers (`nn.LSTM(..., num_layers=3)`).
pub const LSTM_LAYERS: usize = 3;

/// The largest width a config may set (the real model's is 256).
pub const MAX_WIDTH: usize = 1 << 14;

/// VoiceEncoder dimensions: the real ones by default, overridden by `config.json` (the tiny random
/// models of the test fixtures; keys as in tools/reference/README.md).
///
/// The voice encoder's own keys start with `ve_`; an unknown `ve_` key is an [`Error::Config`].
/// `speaker_embed_size` is T3's key (the width of `spkr_enc`'s input): it is read here too, not
/// claimed, because the encoder's projection must produce exactly that width, and
/// [`VoiceEncoder::load`] checks `proj.weight` against it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceEncoderConfig {
    /// LSTM width H (all three layers).
    pub ve_hidden_size: usize,
    /// Mel frames per partial window.
    pub ve_partial_frames: usize,
    /// Width E of the embedding (`proj` output; T3's `speaker_embed_size`).
    pub speaker_embed_size: usize,
}

impl Default for VoiceEncoderConfig {
    fn default() -> Self {
        VoiceEncoderConfig { ve_hidden_size: 256, ve_partial_frames: 160, speaker_embed_size: 256 }
    }
}

impl VoiceEncoderConfig {
    /// The defaults overridden by `config.json` in `dir` when it exists (a real model directory
    /// has none).
    pub fn from_model_dir(dir: &Path) -> Result<VoiceEncoderConfig> {
        config::from_model_dir(dir)
    }

    /// The defaults overridden by the `ve_` keys and `speaker_embed_size` of `v`, a `config.json`
    /// object (`file` names it in errors). The other components' keys are left to them.
    pub fn from_json(file: &Path, v: &Value) -> Result<VoiceEncoderConfig> {
        config::from_json(file, v)
    }

    /// Checks a config built in memory as [`Self::from_json`] does; the file is `(in memory)`.
    pub fn validate(&self) -> Result<()> {
        config::validate(self)
    }
}

impl config::Section for VoiceEncoderConfig {
    fn owns(key: &str) -> bool {
        key.starts_with("ve_") || key == "speaker_embed_size"
    }

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (name, v) in [
            ("ve_hidden_size", self.ve_hidden_size),
            ("ve_partial_frames", self.ve_partial_frames),
            ("speaker_embed_size", self.speaker_embed_size),
        ] {
            if v == 0 || v > MAX_WIDTH {
                return Err((name, format!("{v} is outside 1..={MAX_WIDTH}")));
            }
        }
        // the partial step must fit a window (get_frame_step asserts 0 < step <= partial_frames)
        frame_step(SAMPLE_RATE, RATE, self.ve_partial_frames).map_err(|e| ("ve_partial_frames", e.to_string()))?;
        Ok(())
    }
}

/// The VoiceEncoder's weights, loaded once.
pub struct VoiceEncoder {
    config: VoiceEncoderConfig,
    layers: Vec<LstmLayer>,
    /// `proj.weight`, `[E][H]`.
    proj_w: Vec<f32>,
    /// `proj.bias`, `[E]`.
    proj_b: Vec<f32>,
    mel: MelExtractor,
}

/// The tensor names of `ve.safetensors` (loaded strictly, as `tts.py` does).
pub fn tensor_names() -> Vec<String> {
    let mut v: Vec<String> = (0..LSTM_LAYERS)
        .flat_map(|l| ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|p| format!("lstm.{p}_l{l}")))
        .collect();
    v.extend(["proj.weight", "proj.bias", "similarity_weight", "similarity_bias"].map(String::from));
    v
}

impl VoiceEncoder {
    /// Loads `ve.safetensors` at `path`.
    pub fn load(path: &Path, config: &VoiceEncoderConfig) -> Result<VoiceEncoder> {
        VoiceEncoder::from_checkpoint(&Checkpoint::open(path)?, config)
    }

    /// A VoiceEncoder of dimensions `config` with random weights from `seed`, built in memory through
    /// the real loader (for speed measurements: the embedding it computes is noise).
    pub fn synthetic(config: &VoiceEncoderConfig, seed: u64) -> Result<VoiceEncoder> {
        use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};
        let (h, e) = (config.ve_hidden_size, config.speaker_embed_size);
        let mut m = Vec::new();
        for l in 0..LSTM_LAYERS {
            let input = if l == 0 { N_MELS } else { h };
            m.push(SynthTensor::new(format!("lstm.weight_ih_l{l}"), &[4 * h, input], Init::fan_in(h, 1.0)));
            m.push(SynthTensor::new(format!("lstm.weight_hh_l{l}"), &[4 * h, h], Init::fan_in(h, 1.0)));
            m.push(SynthTensor::new(format!("lstm.bias_ih_l{l}"), &[4 * h], Init::fan_in(h, 1.0)));
            m.push(SynthTensor::new(format!("lstm.bias_hh_l{l}"), &[4 * h], Init::fan_in(h, 1.0)));
        }
        m.push(SynthTensor::new("proj.weight", &[e, h], Init::fan_in(h, 1.0)));
        m.push(SynthTensor::new("proj.bias", &[e], Init::spread(0.02)));
        m.push(SynthTensor::new("similarity_weight", &[1], Init::constant(10.0)));
        m.push(SynthTensor::new("similarity_bias", &[1], Init::constant(-5.0)));
        let ck = Checkpoint::synthetic(&format!("synthetic VoiceEncoder (random weights, seed {seed})"), seed, m)?;
        VoiceEncoder::from_checkpoint(&ck, config)
    }

    /// Loads the weights from an open checkpoint. Like `load_state_dict(strict=True)`, a missing
    /// tensor, a tensor of the wrong shape and an unexpected tensor are errors naming it.
    pub fn from_checkpoint(ck: &Checkpoint, config: &VoiceEncoderConfig) -> Result<VoiceEncoder> {
        config.validate()?;
        let expected = tensor_names();
        let unexpected: Vec<&str> = ck.names().into_iter().filter(|n| !expected.iter().any(|e| e == n)).collect();
        if !unexpected.is_empty() {
            return Err(tts_kernels::Error::Checkpoint {
                path: ck.path().to_string(),
                detail: format!("unexpected tensors for the VoiceEncoder: {}", unexpected.join(", ")),
            }
            .into());
        }
        let (h, e) = (config.ve_hidden_size, config.speaker_embed_size);
        let mut layers = Vec::with_capacity(LSTM_LAYERS);
        for l in 0..LSTM_LAYERS {
            let input = if l == 0 { N_MELS } else { h };
            let w_ih = ck.f32(&format!("lstm.weight_ih_l{l}"), &[4 * h, input])?;
            let w_hh = ck.f32(&format!("lstm.weight_hh_l{l}"), &[4 * h, h])?;
            let b_ih = ck.f32(&format!("lstm.bias_ih_l{l}"), &[4 * h])?;
            let b_hh = ck.f32(&format!("lstm.bias_hh_l{l}"), &[4 * h])?;
            layers.push(LstmLayer::new(input, h, &w_ih, &w_hh, &b_ih, &b_hh));
        }
        let proj_w = ck.f32("proj.weight", &[e, h])?;
        let proj_b = ck.f32("proj.bias", &[e])?;
        // unused at inference, but part of the strict state dict
        ck.f32("similarity_weight", &[1])?;
        ck.f32("similarity_bias", &[1])?;
        Ok(VoiceEncoder { config: config.clone(), layers, proj_w, proj_b, mel: MelExtractor::new() })
    }

    pub fn config(&self) -> &VoiceEncoderConfig {
        &self.config
    }

    /// Width E of the embeddings.
    pub fn embed_size(&self) -> usize {
        self.config.speaker_embed_size
    }

    /// T3's `speaker_emb` of a 16 kHz recording: `embeds_from_wavs([wav], 16000)` (trim, mel,
    /// partials, LSTM, aggregate), `[E]`, unit length.
    ///
    /// Errors: [`Error::Audio`] for empty audio, non-finite samples, silence, and fewer than 201
    /// samples left after trimming; a recording shorter than one partial window (1.6 s after
    /// trimming) is zero-padded to one, as the reference does.
    pub fn embed(&self, wav_16k: &[f32]) -> Result<Vec<f32>> {
        let stages = self.embed_stages(wav_16k)?;
        Ok(stages.speaker_emb)
    }

    /// [`Self::embed`] keeping every stage's output (for the parity runner and diagnostics).
    pub fn embed_stages(&self, wav_16k: &[f32]) -> Result<Stages> {
        const WHAT: &str = "audio";
        if let Some(i) = wav_16k.iter().position(|x| !x.is_finite()) {
            return Err(Error::audio(WHAT, format!("sample {i} is {} (not finite)", wav_16k[i])));
        }
        let kept = trim(wav_16k, TRIM_TOP_DB, WHAT)?;
        let trimmed = &wav_16k[kept.clone()];
        let mel = self.mel(trimmed)?;
        let frames = mel.len() / N_MELS;
        let windows = self.partials(frames)?;
        let partial_embeds = self.partial_embeds(&mel, frames, &windows)?;
        let speaker_emb = aggregate(&partial_embeds, windows.count, self.embed_size())?;
        Ok(Stages { trimmed: kept, mel, windows, partial_embeds, speaker_emb })
    }

    /// The mel spectrogram of (trimmed) 16 kHz audio, `[frames][40]` (see [`mel::MelExtractor::mel`]).
    pub fn mel(&self, wav: &[f32]) -> Result<Vec<f32>> {
        self.mel.mel(wav, "audio")
    }

    /// The partial windows of a `frames`-frame mel (`rate=1.3`, `min_coverage=0.8`).
    pub fn partials(&self, frames: usize) -> Result<Partials> {
        let step = frame_step(SAMPLE_RATE, RATE, self.config.ve_partial_frames)?;
        partial_windows(frames, step, self.config.ve_partial_frames, MIN_COVERAGE)
    }

    /// The L2-normalised embedding of every partial window of `mel` (`[frames][40]`), `[n][E]`:
    /// the windows are cut from the mel zero-padded or truncated to `windows.target_len`, run
    /// through the LSTM as one batch, `h_n` of the last layer → `proj` → ReLU → `/ ‖·‖₂`.
    ///
    /// A window whose embedding is all zero after the ReLU is an [`Error::Audio`] (the reference
    /// would divide by zero and return NaN).
    pub fn partial_embeds(&self, mel: &[f32], frames: usize, windows: &Partials) -> Result<Vec<f32>> {
        if mel.len() != frames * N_MELS {
            return Err(Error::Input {
                field: "mel",
                detail: format!("{} values are not {frames} frames of {N_MELS}", mel.len()),
            });
        }
        if windows.frames != self.config.ve_partial_frames || windows.count == 0 {
            return Err(Error::Input {
                field: "windows",
                detail: format!(
                    "{} windows of {} frames; this encoder takes windows of {}",
                    windows.count, windows.frames, self.config.ve_partial_frames
                ),
            });
        }
        let (n, steps, h, e) = (windows.count, windows.frames, self.config.ve_hidden_size, self.config.speaker_embed_size);
        // time-major batch [steps][n][40]; frames past the real mel are zero (the reference's pad)
        let mut x = vec![0f32; steps * n * N_MELS];
        for b in 0..n {
            for t in 0..steps {
                let f = windows.start(b) + t;
                if f < frames {
                    x[(t * n + b) * N_MELS..(t * n + b + 1) * N_MELS].copy_from_slice(&mel[f * N_MELS..(f + 1) * N_MELS]);
                }
            }
        }
        for layer in &self.layers {
            x = layer.forward(&x, steps, n);
        }
        let h_n = &x[(steps - 1) * n * h..];
        let mut emb = vec![0f32; n * e];
        linear(h_n, &self.proj_w, &mut emb, n, e, h);
        for (b, row) in emb.chunks_mut(e).enumerate() {
            for (v, bias) in row.iter_mut().zip(&self.proj_b) {
                *v = (*v + bias).max(0.0);
            }
            normalize(row).map_err(|_| {
                Error::audio("audio", format!("the voice encoder's embedding of partial window {b} is all zero after its ReLU"))
            })?;
        }
        Ok(emb)
    }
}

/// Every stage of [`VoiceEncoder::embed_stages`].
#[derive(Clone, Debug)]
pub struct Stages {
    /// The samples `librosa.effects.trim` keeps.
    pub trimmed: std::ops::Range<usize>,
    /// The trimmed audio's mel, `[frames][40]`.
    pub mel: Vec<f32>,
    pub windows: Partials,
    /// `[windows.count][E]`.
    pub partial_embeds: Vec<f32>,
    /// `[E]`.
    pub speaker_emb: Vec<f32>,
}

/// Divides `v` by its L2 norm (f32 accumulation as `torch.linalg.norm`); a zero norm is an error.
fn normalize(v: &mut [f32]) -> std::result::Result<(), ()> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(());
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(())
}

/// The utterance embedding from its `n` partial embeddings `[n][e]`: their mean, L2-normalised
/// (`VoiceEncoder.inference`), `[e]`.
pub fn aggregate(partial_embeds: &[f32], n: usize, e: usize) -> Result<Vec<f32>> {
    if n == 0 || partial_embeds.len() != n * e {
        return Err(Error::Input {
            field: "partial_embeds",
            detail: format!("{} values are not {n} (≥ 1) embeddings of {e}", partial_embeds.len()),
        });
    }
    let mut mean = vec![0f32; e];
    for row in partial_embeds.chunks(e) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f32);
    normalize(&mut mean).map_err(|_| Error::audio("audio", "the mean of the voice encoder's partial embeddings is zero"))?;
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};
    use tts_kernels::testing::fresh_seed;

    use super::*;

    fn manifest(h: usize, e: usize) -> Vec<SynthTensor> {
        let mut v = Vec::new();
        for l in 0..LSTM_LAYERS {
            let input = if l == 0 { N_MELS } else { h };
            v.push(SynthTensor::new(format!("lstm.weight_ih_l{l}"), &[4 * h, input], Init::fan_in(input, 1.5)));
            v.push(SynthTensor::new(format!("lstm.weight_hh_l{l}"), &[4 * h, h], Init::fan_in(h, 1.5)));
            v.push(SynthTensor::new(format!("lstm.bias_ih_l{l}"), &[4 * h], Init::spread(0.2)));
            v.push(SynthTensor::new(format!("lstm.bias_hh_l{l}"), &[4 * h], Init::spread(0.2)));
        }
        v.push(SynthTensor::new("proj.weight", &[e, h], Init::fan_in(h, 1.0)));
        v.push(SynthTensor::new("proj.bias", &[e], Init::around(0.1, 0.05)));
        v.push(SynthTensor::new("similarity_weight", &[1], Init::constant(10.0)));
        v.push(SynthTensor::new("similarity_bias", &[1], Init::constant(-5.0)));
        v
    }

    fn config(h: usize, e: usize) -> VoiceEncoderConfig {
        VoiceEncoderConfig { ve_hidden_size: h, speaker_embed_size: e, ..Default::default() }
    }

    fn model(seed: u64, h: usize, e: usize) -> VoiceEncoder {
        let ck = Checkpoint::synthetic("ve", seed, manifest(h, e)).unwrap();
        VoiceEncoder::from_checkpoint(&ck, &config(h, e)).unwrap()
    }

    /// Silence, a noisy tone burst of `body` samples, silence.
    fn burst(rng: &mut StdRng, lead: usize, body: usize, tail: usize) -> Vec<f32> {
        let mut wav = vec![0f32; lead + body + tail];
        let f = rng.random_range(100.0..300.0f32);
        for (i, x) in wav[lead..lead + body].iter_mut().enumerate() {
            let t = i as f32 / 16000.0;
            *x = 0.3 * (std::f32::consts::TAU * f * t).sin() + 0.05 * rng.random_range(-1.0f32..1.0);
        }
        wav
    }

    #[test]
    fn config_reads_its_keys_and_names_the_bad_one() {
        let f = Path::new("config.json");
        let c = VoiceEncoderConfig::from_json(f, &json!({"ve_hidden_size": 64, "hidden_size": 1024, "speaker_embed_size": 48}))
            .unwrap();
        assert_eq!(c, VoiceEncoderConfig { ve_hidden_size: 64, ve_partial_frames: 160, speaker_embed_size: 48 });
        assert_eq!(VoiceEncoderConfig::from_json(f, &json!({"campplus_x": 1})).unwrap(), VoiceEncoderConfig::default());
        for (v, key) in [
            (json!({"ve_hidden_sise": 64}), "ve_hidden_sise"),
            (json!({"ve_hidden_size": "wide"}), "ve_hidden_size"),
            (json!({"ve_hidden_size": 0}), "ve_hidden_size"),
            (json!({"speaker_embed_size": -1}), "speaker_embed_size"),
            (json!({"ve_partial_frames": 20}), "ve_partial_frames"),
        ] {
            match VoiceEncoderConfig::from_json(f, &v) {
                Err(Error::Config { key: Some(k), .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(matches!(VoiceEncoderConfig::from_json(f, &json!([1])), Err(Error::Config { key: None, .. })));
    }

    #[test]
    fn loading_is_strict() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let (h, e) = (12, 10);
        let load = |tensors: Vec<SynthTensor>, cfg: &VoiceEncoderConfig| {
            VoiceEncoder::from_checkpoint(&Checkpoint::synthetic("ve", seed, tensors).unwrap(), cfg).map(|_| ())
        };
        load(manifest(h, e), &config(h, e)).unwrap();
        let mut extra = manifest(h, e);
        extra.push(SynthTensor::new("lstm.weight_ih_l3", &[4 * h, h], Init::spread(0.1)));
        let msg = load(extra, &config(h, e)).unwrap_err().to_string();
        assert!(msg.contains("unexpected") && msg.contains("lstm.weight_ih_l3"), "{msg}");
        let missing: Vec<SynthTensor> = manifest(h, e).into_iter().filter(|t| t.name != "proj.bias").collect();
        let msg = load(missing, &config(h, e)).unwrap_err().to_string();
        assert!(msg.contains("proj.bias"), "{msg}");
        // proj must produce speaker_embed_size (T3's spkr_enc input)
        let msg = load(manifest(h, e), &config(h, e + 1)).unwrap_err().to_string();
        assert!(msg.contains("proj.weight"), "{msg}");
        let msg = load(manifest(h, e), &config(h + 1, e)).unwrap_err().to_string();
        assert!(msg.contains("lstm.weight_ih_l0"), "{msg}");
    }

    #[test]
    fn partials_batched_equal_partials_alone_and_the_embedding_is_their_normalised_mean() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let (h, e) = (19, 11);
        let ve = model(seed, h, e);
        let body = 16000 * 3 + rng.random_range(0..9000);
        let wav = burst(&mut rng, 3000, body, 2000);
        let s = ve.embed_stages(&wav).unwrap();
        let frames = s.mel.len() / N_MELS;
        assert_eq!(frames, 1 + s.trimmed.len() / mel::HOP);
        assert!(s.windows.count >= 3, "{:?}", s.windows);
        assert_eq!(s.partial_embeds.len(), s.windows.count * e);
        for i in 0..s.windows.count {
            let start = s.windows.start(i);
            let one = Partials { count: 1, target_len: s.windows.frames, ..s.windows };
            let alone = ve.partial_embeds(&s.mel[start * N_MELS..], frames - start, &one).unwrap();
            let batched = &s.partial_embeds[i * e..(i + 1) * e];
            for (a, b) in alone.iter().zip(batched) {
                assert!((a - b).abs() <= 1e-6, "partial {i}: {a} vs {b}");
            }
            let norm: f32 = batched.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5 && batched.iter().all(|&v| v >= 0.0), "partial {i}: norm {norm}");
        }
        let mut mean = vec![0f64; e];
        for row in s.partial_embeds.chunks(e) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (g, m) in s.speaker_emb.iter().zip(&mean) {
            assert!((*g as f64 - m / norm).abs() < 1e-6, "{g} vs {}", m / norm);
        }
        assert_eq!(ve.embed(&wav).unwrap(), s.speaker_emb);
    }

    #[test]
    fn short_audio_is_padded_to_one_partial_and_bad_audio_is_an_error() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let ve = model(seed, 9, 7);
        // 0.4 s: 41 mel frames, one window padded with 119 zero frames
        let short = burst(&mut rng, 0, 6400, 0);
        let s = ve.embed_stages(&short).unwrap();
        assert_eq!((s.windows.count, s.mel.len() / N_MELS), (1, 41));
        assert_eq!(s.speaker_emb.len(), 7);
        let audio_err = |wav: &[f32], what: &str| match ve.embed(wav) {
            Err(Error::Audio { detail, .. }) => assert!(detail.contains(what), "{detail}"),
            other => panic!("{what}: {other:?}"),
        };
        audio_err(&[], "no samples");
        audio_err(&vec![0.0; 32000], "silent");
        let mut nan = short.clone();
        nan[777] = f32::NAN;
        audio_err(&nan, "sample 777");
        nan[777] = f32::INFINITY;
        audio_err(&nan, "sample 777");
        audio_err(&burst(&mut rng, 0, 150, 0), "too few");
        assert!(matches!(aggregate(&[], 0, 4), Err(Error::Input { .. })));
        assert!(matches!(aggregate(&[0.0; 8], 2, 4), Err(Error::Audio { .. })));
    }
}
