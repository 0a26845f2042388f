//! The whole cloning path: a decoded recording → the conditionals, as
//! `ChatterboxTTS.prepare_conditionals` (tts.py:182-206) computes them, and the target half of voice
//! conversion (`ChatterboxVC.set_target_voice`, vc.py:73-77) and its source tokens (vc.py:93-96).
//!
//! ```text
//! wav24 = librosa.load(path, sr=24000)          decode, mono mean, soxr_hq to 24 kHz
//! wav16 = librosa.resample(wav24, 24000, 16000) soxr_hq
//! ref24 = wav24[:10 s]
//!   prompt_feat  = S3Gen mel(ref24)
//!   ref16        = torchaudio Resample(24000, 16000)(ref24)
//!   embedding    = CAMPPlus(ref16)
//!   prompt_token = S3Tokenizer(ref16), cut to prompt_feat frames / 2 when they disagree
//! t3 prompt tokens = S3Tokenizer(wav16[:6 s], max_len = speech_cond_prompt_len)
//! speaker_emb  = VoiceEncoder.embeds_from_wavs([wav16]) (mean over the one utterance)
//! ```
use std::path::Path;

use serde_json::Value;
use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::config_json;

use crate::audio::Audio;
use crate::campplus::{CampPlus, CampPlusConfig};
use crate::resample::{Resampler, resample};
use crate::s3_tokenizer::{S3Tokenizer, TokenizerConfig};
use crate::voice_encoder::{VoiceEncoder, VoiceEncoderConfig};
use crate::{Error, Result, cond_mel};

/// S3Gen's sample rate (the prompt mel, `librosa.load`'s target), Hz.
pub const S3GEN_SR: u32 = 24_000;
/// The tokenizer's, the VoiceEncoder's and CAMPPlus's sample rate, Hz.
pub const S3_SR: u32 = 16_000;
/// `DEC_COND_LEN`: S3Gen's reference is the first 10 s at 24 kHz.
pub const DEC_COND_LEN: usize = 10 * S3GEN_SR as usize;
/// `ENC_COND_LEN`: T3's prompt tokens come from the first 6 s at 16 kHz.
pub const ENC_COND_LEN: usize = 6 * S3_SR as usize;

/// The shortest recording accepted, seconds. The reference itself fails below 30 ms (S3Gen's mel
/// pads by 720 samples at 24 kHz); well above that, half a second holds too little speech for a
/// voice: 6–10 s is what the models are made for.
pub const MIN_REFERENCE_SECONDS: f64 = 0.5;

/// Checks `audio` is long enough to clone a voice from or to convert ([`MIN_REFERENCE_SECONDS`]);
/// `what` names it in the error.
pub fn check_duration(audio: &Audio, what: &str) -> Result<()> {
    let secs = audio.samples.len() as f64 / audio.sample_rate.max(1) as f64;
    if secs < MIN_REFERENCE_SECONDS {
        return Err(Error::audio(
            what,
            format!("{secs:.3} s of audio is too short: at least {MIN_REFERENCE_SECONDS} s is needed (6-10 s of speech is best)"),
        ));
    }
    Ok(())
}

/// The conditioning models of a Chatterbox model directory: the VoiceEncoder (`ve.safetensors`) and
/// S3Gen's tokenizer and speaker encoder (`s3gen.safetensors`, `tokenizer.*` and `speaker_encoder.*`).
/// Voice conversion needs only the latter two: a directory without `ve.safetensors` loads, and only
/// [`VoiceModels::prepare_conditionals`] fails then (with the error of opening it).
pub struct VoiceModels {
    /// None when the directory has no `ve.safetensors`.
    pub voice_encoder: Option<VoiceEncoder>,
    ve_path: std::path::PathBuf,
    ve_config: VoiceEncoderConfig,
    pub tokenizer: S3Tokenizer,
    pub campplus: CampPlus,
}

/// The S3Gen half of the conditionals (`S3Gen.embed_ref`'s `ref_dict`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceEmbedding {
    /// Prompt speech tokens, `[Tp]`.
    pub prompt_token: Vec<u32>,
    /// Prompt log-mel, `[frames][80]` row-major.
    pub prompt_feat: Vec<f32>,
    pub prompt_feat_frames: usize,
    /// CAMPPlus x-vector, `[spk_embed_dim]` (not normalised).
    pub embedding: Vec<f32>,
}

/// Everything `prepare_conditionals` computes from a recording.
#[derive(Clone, Debug, PartialEq)]
pub struct ClonedVoice {
    /// VoiceEncoder embedding, `[speaker_embed_size]` (T3's `speaker_emb`).
    pub speaker_emb: Vec<f32>,
    /// T3's prompt tokens, `[≤ speech_cond_prompt_len]`.
    pub t3_prompt_tokens: Vec<u32>,
    /// The S3Gen half.
    pub reference: ReferenceEmbedding,
}

impl VoiceModels {
    /// Loads the three models from a model directory (`config.json` when present for non-default
    /// dimensions, `ve.safetensors`, `s3gen.safetensors`). Every error names the file.
    pub fn load(dir: &Path) -> Result<VoiceModels> {
        VoiceModels::load_on(dir, &Device::cpu())
    }

    /// [`Self::load`] with the S3Tokenizer's encoder (the heaviest part: two passes over up to 10 s
    /// of audio at 1280 channels) and CAMPPlus's network on `dev` when it is a kernel backend (Cuda,
    /// Emu; see [`S3Tokenizer::load_on`], [`CampPlus::load_on`]); everything else (resampling, the
    /// mels and fbank, the VoiceEncoder's LSTM) runs on the host.
    pub fn load_on(dir: &Path, dev: &Device) -> Result<VoiceModels> {
        let cfg_path = dir.join("config.json");
        let cfg = config_json::read(&cfg_path)
            .map_err(|e| Error::Config { file: cfg_path.clone(), key: e.key.clone(), detail: e.detail.clone() })?
            .unwrap_or(Value::Object(Default::default()));
        let ve_cfg = VoiceEncoderConfig::from_json(&cfg_path, &cfg)?;
        let tok_cfg = TokenizerConfig::from_json(&cfg_path, &cfg)?;
        let camp_cfg = CampPlusConfig::from_json(&cfg_path, &cfg)?;
        let ve_path = dir.join("ve.safetensors");
        let voice_encoder = if ve_path.exists() { Some(VoiceEncoder::load(&ve_path, &ve_cfg)?) } else { None };
        let s3gen = Checkpoint::open(&dir.join("s3gen.safetensors"))?;
        let tokenizer = S3Tokenizer::load_on(&s3gen, &tok_cfg, dev)?;
        let campplus = CampPlus::load_on(&s3gen, &camp_cfg, dev)?;
        Ok(VoiceModels { voice_encoder, ve_path, ve_config: ve_cfg, tokenizer, campplus })
    }

    /// The three models at the real dimensions with random weights from `seed`, built in memory (for
    /// speed measurements: the work does not depend on the values; the voice they compute is noise).
    pub fn synthetic(seed: u64) -> Result<VoiceModels> {
        VoiceModels::synthetic_on(seed, &Device::cpu())
    }

    /// [`Self::synthetic`] with the tokenizer's encoder and CAMPPlus on `dev` (as [`Self::load_on`]).
    pub fn synthetic_on(seed: u64, dev: &Device) -> Result<VoiceModels> {
        let tok_config = TokenizerConfig::default();
        let ve_config = VoiceEncoderConfig::default();
        Ok(VoiceModels {
            voice_encoder: Some(VoiceEncoder::synthetic(&ve_config, seed)?),
            ve_path: "(synthetic)".into(),
            ve_config,
            tokenizer: S3Tokenizer::load_on(&crate::s3_tokenizer::synthetic::checkpoint(&tok_config, seed)?, &tok_config, dev)?,
            campplus: CampPlus::synthetic_on(&CampPlusConfig::default(), seed, dev)?,
        })
    }

    /// `librosa.load(path, sr=24000)` after decoding: `audio` (already mono) at 24 kHz.
    pub fn to_24k(audio: &Audio) -> Result<Vec<f32>> {
        resample(&audio.samples, audio.sample_rate, S3GEN_SR, Resampler::Soxr)
    }

    /// `S3Gen.embed_ref(wav24[:10 s], 24000)` (s3gen.py:118-171): the S3Gen half of a voice from a
    /// 24 kHz recording (cut to its first 10 s here).
    pub fn embed_ref(&self, wav_24k: &[f32]) -> Result<ReferenceEmbedding> {
        let ref24 = &wav_24k[..wav_24k.len().min(DEC_COND_LEN)];
        if (ref24.len() as f64) < MIN_REFERENCE_SECONDS * S3GEN_SR as f64 {
            return Err(Error::audio(
                "reference audio",
                format!("{} samples at 24 kHz are too short: at least {MIN_REFERENCE_SECONDS} s is needed", ref24.len()),
            ));
        }
        let (prompt_feat, frames) = cond_mel::prompt_feat(ref24)?;
        let ref16 = resample(ref24, S3GEN_SR, S3_SR, Resampler::Torchaudio)?;
        let embedding = self.campplus.embed(&ref16)?;
        let mut prompt_token = self.tokenizer.tokenize(&ref16, None)?;
        // s3gen.py:157-163: only the tokens are cut when mel frames and tokens disagree
        if frames != 2 * prompt_token.len() {
            prompt_token.truncate(frames / 2);
        }
        Ok(ReferenceEmbedding { prompt_token, prompt_feat, prompt_feat_frames: frames, embedding })
    }

    /// `prepare_conditionals` on a decoded recording; `t3_prompt_len` is T3's
    /// `speech_cond_prompt_len` (150 for the real model).
    pub fn prepare_conditionals(&self, audio: &Audio, t3_prompt_len: usize) -> Result<ClonedVoice> {
        check_duration(audio, "reference audio")?;
        let Some(voice_encoder) = &self.voice_encoder else {
            // the file is missing: opening it gives the error that names it
            return Err(VoiceEncoder::load(&self.ve_path, &self.ve_config).err().unwrap_or_else(|| Error::Input {
                field: "ve.safetensors",
                detail: "appeared after the models were loaded; load them again".into(),
            }));
        };
        let wav24 = Self::to_24k(audio)?;
        let wav16 = resample(&wav24, S3GEN_SR, S3_SR, Resampler::Soxr)?;
        let reference = self.embed_ref(&wav24)?;
        let t3_prompt_tokens = if t3_prompt_len > 0 {
            self.tokenizer.tokenize(&wav16[..wav16.len().min(ENC_COND_LEN)], Some(t3_prompt_len))?
        } else {
            Vec::new()
        };
        let speaker_emb = voice_encoder.embed(&wav16)?;
        Ok(ClonedVoice { speaker_emb, t3_prompt_tokens, reference })
    }

    /// Voice conversion's source: `librosa.load(source, sr=16000)` then the tokenizer's codes
    /// (vc.py:93-96).
    pub fn source_tokens(&self, audio: &Audio) -> Result<Vec<u32>> {
        check_duration(audio, "source audio")?;
        let wav16 = resample(&audio.samples, audio.sample_rate, S3_SR, Resampler::Soxr)?;
        self.tokenizer.tokenize(&wav16, None)
    }
}
