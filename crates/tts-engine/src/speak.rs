//! Text → 24 kHz speech through the whole model, batched: the text front-end (`punc_norm`, the
//! tokenizer, SOT/EOT), T3 (CFG row pairs, per-request sampling and stop), the reference's token
//! post-processing, and S3Gen (flow matching + HiFT, with the trim/fade).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_s3gen::{FlowRequest, S3Gen, S3GenConfig};
use tts_t3::{SamplerSettings, T3, T3Config};

use crate::output::{AudioFormat, Container, SampleFormat};
use crate::synthesize::{BatchOptions, Row};
use crate::text::{TextTokenizer, punc_norm};
use tts_voice::audio::Audio;
use tts_voice::prepare::VoiceModels;

use crate::voice::cache::{VoiceCache, VoiceFileKind, content_hash, hex};
use crate::voice::saved::VoiceMeta;
use crate::voice::{Conditionals, S3GenConds, T3Conds};
use crate::{Error, Result};

/// Per-request generation settings (the reference's `generate()` defaults).
#[derive(Clone, Debug)]
pub struct SpeakOptions {
    pub exaggeration: f32,
    pub cfg_weight: f32,
    pub temperature: f32,
    pub repetition_penalty: f32,
    pub min_p: f32,
    pub top_p: f32,
    /// Speech tokens at most (25 per second of audio).
    pub max_new_tokens: usize,
    /// Seeds T3's sampling and S3Gen's noise.
    pub seed: u64,
    /// Euler steps of the flow matching.
    pub cfm_steps: usize,
}

/// The defaults live in one place each: T3's sampler settings (`ops::SamplerSettings::ENGLISH_DEFAULT`
/// underneath), T3's exaggeration and S3Gen's CFM steps.
impl Default for SpeakOptions {
    fn default() -> Self {
        let t3 = SamplerSettings::default();
        SpeakOptions {
            exaggeration: tts_t3::DEFAULT_EXAGGERATION,
            cfg_weight: t3.cfg_weight,
            temperature: t3.temperature,
            repetition_penalty: t3.repetition_penalty,
            min_p: t3.min_p,
            top_p: t3.top_p,
            max_new_tokens: t3.max_new_tokens,
            seed: t3.seed,
            cfm_steps: tts_s3gen::DEFAULT_CFM_STEPS,
        }
    }
}

impl SpeakOptions {
    /// Checks every setting, before any work and without a model (a caller validates a request
    /// before it loads one): an [`Error::Setting`] names the field and its value. The sampler
    /// settings follow T3's rules ([`SamplerSettings::validate`]); `exaggeration` and `cfg_weight`
    /// must be finite and ≥ 0, `max_new_tokens` and `cfm_steps` at least 1. The model's own limits
    /// (`max_new_tokens` against its speech positions) are checked by [`Engine::speak`].
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("exaggeration", self.exaggeration), ("cfg_weight", self.cfg_weight)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Setting { field, value: v.to_string(), expected: "finite and ≥ 0".into() });
            }
        }
        self.sampler_settings(self.seed).validate().map_err(|e| match e {
            tts_t3::Error::Input { field, value, expected } => Error::Setting { field, value, expected },
            e => Error::T3(e),
        })?;
        if self.cfm_steps == 0 {
            return Err(Error::Setting { field: "cfm_steps", value: "0".into(), expected: "at least 1".into() });
        }
        Ok(())
    }

    /// T3's sampler settings, seeded `seed` (a request's segment `j` is seeded `self.seed + j`).
    pub(crate) fn sampler_settings(&self, seed: u64) -> SamplerSettings {
        SamplerSettings {
            temperature: self.temperature,
            cfg_weight: self.cfg_weight,
            repetition_penalty: self.repetition_penalty,
            min_p: self.min_p,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            seed,
            ..SamplerSettings::default()
        }
    }
}

/// One utterance: its speech tokens and its waveform (24 kHz mono, in [−0.99, 0.99]).
#[derive(Clone, Debug)]
pub struct Spoken {
    pub speech_tokens: Vec<u32>,
    pub wav: Vec<f32>,
}

/// Where the time of one [`Engine::speak_tokens_timed`] call went, in wall seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpeakTimings {
    /// T3: conditioning, prefill and decoding of the whole batch.
    pub t3_seconds: f64,
    /// S3Gen: flow matching and the vocoder for the whole batch.
    pub s3gen_seconds: f64,
}

/// The loaded model: T3, S3Gen, and (when the directory has them) the tokenizer and built-in voice.
pub struct Engine {
    pub t3: T3,
    pub s3gen: S3Gen,
    pub tokenizer: Option<TextTokenizer>,
    pub voice: Option<Conditionals>,
    /// `Some(seed)` when the engine is synthetic ([`Engine::synthetic`]): random weights, noise.
    pub synthetic_seed: Option<u64>,
    /// The model directory (None for a synthetic engine): where the cloning models are loaded from,
    /// on first use.
    model_dir: Option<PathBuf>,
    /// The cloning models, loaded by the first voice computed from a recording.
    voice_models: Mutex<Option<Arc<VoiceModels>>>,
    /// Voices read or computed from files, by the SHA-256 of the file's bytes.
    voices: VoiceCache,
    /// How requests are batched and split ([`Engine::synthesize`]).
    pub batching: BatchOptions,
    /// Where the model came from, when [`Engine::load`] resolved it (repo, revision, commit,
    /// files).
    pub source: Option<crate::hub::Resolved>,
}

/// Voices kept by an engine's cache (about 170 KB each).
pub const VOICE_CACHE_CAPACITY: usize = 256;
/// The largest voice file read: a saved voice is about 170 KB, a recording a few MB (a 10-minute
/// 48 kHz stereo float WAV is 230 MB; longer recordings are refused by the decoder).
pub const MAX_VOICE_FILE_BYTES: u64 = 256 << 20;

/// How to open an engine ([`Engine::load`]).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// `auto` (Cuda if usable, else Cpu), `cpu`, `cuda`, `cuda:N` or `emu`.
    pub backend: String,
    /// How requests are batched and split.
    pub batching: BatchOptions,
    /// Where Hub models are cached and fetched from; `None`: the environment's settings
    /// ([`crate::hub::HubOptions::from_env`]).
    pub hub: Option<crate::hub::HubOptions>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { backend: "auto".into(), batching: BatchOptions::default(), hub: None }
    }
}

impl Engine {
    /// Opens the model `model` names (a directory, or a Hugging Face repo id at a revision: see
    /// [`crate::hub`]; missing files are downloaded into the HF cache, reported to `progress`) on
    /// the backend `opts` names. Options are checked before anything is read or downloaded.
    pub fn load(
        model: &crate::hub::ModelRef,
        opts: &EngineOptions,
        progress: &mut dyn crate::hub::DownloadProgress,
    ) -> Result<Engine> {
        opts.batching.validate()?;
        let dev = Device::from_name(&opts.backend)?;
        let hub = match &opts.hub {
            Some(h) => h.clone(),
            None => crate::hub::HubOptions::from_env()?,
        };
        let resolved = crate::hub::resolve_with(model, &hub, progress)?;
        let mut engine = Engine::load_dir(&resolved.dir, &dev)?;
        engine.batching = opts.batching.clone();
        engine.source = Some(resolved);
        Ok(engine)
    }

    /// Loads `t3_cfg.safetensors`, `s3gen.safetensors` (and `config.json`), plus `tokenizer.json` and
    /// `conds.pt` when present, from a model directory. The small files come first (`config.json`
    /// for both models, the tokenizer, the voice), so that a bad one fails before the checkpoints
    /// are read. Every error names the file; a bad built-in voice is an [`Error::ModelFile`].
    pub fn load_dir(dir: &Path, dev: &Device) -> Result<Engine> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::ModelDir { path: dir.to_path_buf(), problem: "not a directory" }),
            Err(_) => return Err(Error::ModelDir { path: dir.to_path_buf(), problem: "does not exist or cannot be read" }),
        }
        let t3_cfg = T3Config::from_model_dir(dir)?;
        let s3gen_cfg = S3GenConfig::from_model_dir(dir)?;
        let tok = dir.join("tokenizer.json");
        let tokenizer = if tok.exists() { Some(TextTokenizer::from_file(&tok)?) } else { None };
        let conds = dir.join("conds.pt");
        let voice = if conds.exists() {
            Some(Conditionals::load(&conds).map_err(|e| match e {
                Error::Voice { path, msg } => Error::ModelFile { path, detail: msg },
                e => e,
            })?)
        } else {
            None
        };
        let t3 = T3::from_checkpoint(t3_cfg, &Checkpoint::open(&dir.join("t3_cfg.safetensors"))?, dev)?;
        let s3gen = S3Gen::from_checkpoint(s3gen_cfg, &Checkpoint::open(&dir.join("s3gen.safetensors"))?, dev)?;
        Ok(Engine {
            t3,
            s3gen,
            tokenizer,
            voice,
            synthetic_seed: None,
            model_dir: Some(dir.to_path_buf()),
            voice_models: Mutex::new(None),
            voices: VoiceCache::new(VOICE_CACHE_CAPACITY),
            batching: BatchOptions::default(),
            source: None,
        })
    }

    /// The synthetic engine (see [`crate::synthetic`]): T3 and S3Gen of dimensions `t3` and `s3gen`
    /// with random weights from `seed`, built in memory through the real loaders, a synthetic
    /// built-in voice and a character-level tokenizer. It runs what a real engine runs and speaks
    /// noise, not speech.
    pub fn synthetic(t3: T3Config, s3gen: S3GenConfig, seed: u64, dev: &Device) -> Result<Engine> {
        t3.validate()?;
        s3gen.validate()?;
        let voice = crate::synthetic::voice(seed, &t3, &s3gen);
        let tokenizer = TextTokenizer::characters(t3.text_tokens_dict_size, &[t3.start_text_token, t3.stop_text_token])?;
        Ok(Engine {
            t3: T3::synthetic(t3, seed, dev)?,
            s3gen: S3Gen::synthetic(s3gen, seed, dev)?,
            tokenizer: Some(tokenizer),
            voice: Some(voice),
            synthetic_seed: Some(seed),
            model_dir: None,
            voice_models: Mutex::new(None),
            voices: VoiceCache::new(VOICE_CACHE_CAPACITY),
            batching: BatchOptions::default(),
            source: None,
        })
    }

    /// The cloning models (VoiceEncoder, S3Tokenizer, CAMPPlus), loaded from the model directory on
    /// first use and kept. A synthetic engine has none ([`Error::NoCloning`]).
    pub fn voice_models(&self) -> Result<Arc<VoiceModels>> {
        let dir = self.model_dir.as_ref().ok_or(Error::NoCloning)?;
        let mut slot = self.voice_models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(VoiceModels::load_on(dir, self.t3.device())?);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// The voice of a file, judged by its content: a `conds.pt`, a saved voice
    /// (`voice.safetensors`) or a recording (WAV, FLAC, MP3), which is cloned as
    /// `prepare_conditionals` does. Cached by the SHA-256 of the file's bytes: a file used by many
    /// requests is read or computed once. Errors name the file.
    pub fn voice_from_file(&self, path: &Path) -> Result<Arc<Conditionals>> {
        let err = |msg: String| Error::Voice { path: path.to_path_buf(), msg };
        let len = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?.len();
        if len > MAX_VOICE_FILE_BYTES {
            return Err(err(format!("{len} bytes: more than the {MAX_VOICE_FILE_BYTES} a voice file may have")));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        self.voice_from_bytes(&bytes, &path.display().to_string()).map(|(v, _)| v)
    }

    /// [`Engine::voice_from_file`] on a file's bytes (`what` names it in errors), with the metadata a
    /// saved voice of it carries (for a recording: the engine's version, the file's SHA-256, its
    /// rate and length, the resampler).
    pub fn voice_from_bytes(&self, bytes: &[u8], what: &str) -> Result<(Arc<Conditionals>, Arc<VoiceMeta>)> {
        let err = |msg: String| Error::Voice { path: what.into(), msg };
        let hash = content_hash(bytes);
        if let Some(v) = self.voices.get(&hash) {
            return Ok(v);
        }
        let mut meta = VoiceMeta::from([
            ("created_by".to_string(), format!("tts {}", env!("CARGO_PKG_VERSION"))),
            ("source_sha256".to_string(), hex(&hash)),
        ]);
        let voice = match VoiceFileKind::sniff(bytes) {
            VoiceFileKind::CondsPt => Conditionals::parse(bytes.to_vec()).map_err(err)?,
            VoiceFileKind::Saved => {
                // a saved voice carries its own provenance
                let (v, m) = Conditionals::from_safetensors(bytes).map_err(err)?;
                meta = m;
                v
            }
            VoiceFileKind::Audio => {
                let audio = tts_voice::audio::decode(bytes, what)?;
                tts_voice::prepare::check_duration(&audio, what)?;
                meta.insert("source_sample_rate".into(), audio.sample_rate.to_string());
                meta.insert("source_seconds".into(), format!("{:.3}", audio.samples.len() as f64 / audio.sample_rate as f64));
                let (voice, resampler) = self.clone_voice(&audio)?;
                meta.insert("resampler".into(), resampler);
                voice
            }
        };
        self.check_voice(&voice, what)?;
        Ok(self.voices.insert(hash, (Arc::new(voice), Arc::new(meta))))
    }

    /// Clones a voice from a decoded recording (`prepare_conditionals`), with the default
    /// exaggeration; returns it and a description of the resampler used.
    pub fn clone_voice(&self, audio: &Audio) -> Result<(Conditionals, String)> {
        let models = self.voice_models()?;
        let c = models.prepare_conditionals(audio, self.t3.config().speech_cond_prompt_len)?;
        let r = c.reference;
        let voice = Conditionals {
            t3: T3Conds {
                speaker_emb: c.speaker_emb,
                cond_prompt_speech_tokens: c.t3_prompt_tokens,
                emotion_adv: tts_t3::DEFAULT_EXAGGERATION,
            },
            s3gen: S3GenConds {
                prompt_token_len: r.prompt_token.len(),
                prompt_token: r.prompt_token,
                prompt_feat: r.prompt_feat,
                prompt_feat_frames: r.prompt_feat_frames,
                embedding: r.embedding,
            },
        };
        voice.validate().map_err(|msg| Error::Voice { path: "(cloned voice)".into(), msg })?;
        let (path, version) = tts_voice::resample::soxr::loaded()?;
        Ok((voice, format!("soxr_hq ({version}, {path}) + torchaudio sinc")))
    }

    /// Voice conversion (`ChatterboxVC.generate`, vc.py:79-107): the source speech is tokenised at
    /// 16 kHz and spoken again by S3Gen with the S3Gen half of `target` (its prompt and x-vector;
    /// T3 takes no part). Seeded by `seed`; `cfm_steps` Euler steps. Returns the 24 kHz waveform.
    pub fn convert(&self, source: &Audio, target: &Conditionals, seed: u64, cfm_steps: usize) -> Result<Vec<f32>> {
        if cfm_steps == 0 {
            return Err(Error::Setting { field: "cfm_steps", value: "0".into(), expected: "at least 1".into() });
        }
        let expected = self.s3gen.config.spk_embed_dim;
        if target.s3gen.embedding.len() != expected {
            return Err(Error::VoiceMismatch { what: "x-vector (gen.embedding)", got: target.s3gen.embedding.len(), expected });
        }
        let tokens = self.voice_models()?.source_tokens(source)?;
        let vocab = self.s3gen.config.flow_vocab_size as u32;
        if let Some(&t) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(Error::Voice {
                path: "(source speech)".into(),
                msg: format!("token {t} is outside the flow's vocabulary of {vocab}"),
            });
        }
        let g = &target.s3gen;
        let req = tts_s3gen::Request {
            flow: FlowRequest {
                prompt_tokens: &g.prompt_token[..g.prompt_token_len.min(g.prompt_token.len())],
                prompt_feat: &g.prompt_feat,
                embedding: &g.embedding,
                tokens: &tokens,
                noise: None,
                seed,
            },
            source_phases: None,
            source_noise: None,
        };
        Ok(self.s3gen.synthesize(&[req], cfm_steps)?.remove(0))
    }

    /// (voices cached, cache hits, cache misses).
    pub fn voice_cache_stats(&self) -> (usize, u64, u64) {
        self.voices.stats()
    }

    /// `[SOT] tokens(punc_norm(text)) [EOT]`, as `tts.py` feeds T3.
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.text_tokens_of(0, text)
    }

    /// [`Engine::text_tokens`] of text `index` of a batch (errors name it).
    pub(crate) fn text_tokens_of(&self, index: usize, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or(Error::NoTokenizer)?;
        if text.trim().is_empty() {
            return Err(Error::Text { index, problem: "empty (or only whitespace)".into() });
        }
        let cfg = &self.t3.config();
        let max = cfg.max_text_tokens.saturating_sub(2);
        let ids = tok.encode(&punc_norm(text))?;
        if ids.len() > max {
            return Err(Error::TooLong { what: format!("text {index}: text tokens"), len: ids.len(), max });
        }
        Ok(std::iter::once(cfg.start_text_token).chain(ids).chain(std::iter::once(cfg.stop_text_token)).collect())
    }

    /// The checks of a request against this model, before any work: the settings
    /// ([`SpeakOptions::validate`]), `max_new_tokens` against T3's speech positions, and the voice's
    /// sizes.
    pub fn check_request(&self, voice: &Conditionals, opts: &SpeakOptions) -> Result<()> {
        opts.validate()?;
        let max = self.t3.config().max_speech_tokens;
        if opts.max_new_tokens > max {
            return Err(Error::TooLong { what: "max_new_tokens".into(), len: opts.max_new_tokens, max });
        }
        self.check_voice(voice, "(voice)")
    }

    /// Checks a voice fits this model: its embeddings' sizes (T3's `speaker_embed_size`, S3Gen's
    /// `spk_embed_dim`) and its prompt tokens (T3's speech vocabulary, S3Gen's flow vocabulary).
    /// `what` names the voice in errors.
    pub fn check_voice(&self, voice: &Conditionals, what: &str) -> Result<()> {
        for (part, got, expected) in [
            ("speaker embedding (t3.speaker_emb)", voice.t3.speaker_emb.len(), self.t3.config().speaker_embed_size),
            ("x-vector (gen.embedding)", voice.s3gen.embedding.len(), self.s3gen.config.spk_embed_dim),
        ] {
            if got != expected {
                return Err(Error::VoiceMismatch { what: part, got, expected });
            }
        }
        for (part, tokens, vocab) in [
            ("t3.cond_prompt_speech_tokens", &voice.t3.cond_prompt_speech_tokens, self.t3.config().speech_tokens_dict_size),
            ("gen.prompt_token", &voice.s3gen.prompt_token, self.s3gen.config.flow_vocab_size),
        ] {
            if let Some((i, t)) = tokens.iter().enumerate().find(|(_, t)| **t as usize >= vocab) {
                return Err(Error::Voice {
                    path: what.into(),
                    msg: format!("{part}: token {t} at index {i} is outside the model's vocabulary of {vocab}"),
                });
            }
        }
        Ok(())
    }

    /// Speaks texts with a voice (the built-in one when `None`).
    pub fn speak(&self, texts: &[&str], voice: Option<&Conditionals>, opts: &SpeakOptions) -> Result<Vec<Spoken>> {
        Ok(self.speak_timed(texts, voice, opts)?.0)
    }

    /// [`Engine::speak`], with where the time went.
    pub fn speak_timed(
        &self,
        texts: &[&str],
        voice: Option<&Conditionals>,
        opts: &SpeakOptions,
    ) -> Result<(Vec<Spoken>, SpeakTimings)> {
        opts.validate()?;
        let tokens = texts.iter().enumerate().map(|(i, t)| self.text_tokens_of(i, t)).collect::<Result<Vec<_>>>()?;
        self.speak_tokens_timed(&tokens, voice, opts)
    }

    /// Speaks already tokenised texts (`[SOT] ids [EOT]` each), all in one T3 batch and one S3Gen
    /// batch. Request `i` is seeded with `opts.seed + i`.
    pub fn speak_tokens(&self, texts: &[Vec<u32>], voice: Option<&Conditionals>, opts: &SpeakOptions) -> Result<Vec<Spoken>> {
        Ok(self.speak_tokens_timed(texts, voice, opts)?.0)
    }

    /// [`Engine::speak_tokens`], with where the time went.
    pub fn speak_tokens_timed(
        &self,
        texts: &[Vec<u32>],
        voice: Option<&Conditionals>,
        opts: &SpeakOptions,
    ) -> Result<(Vec<Spoken>, SpeakTimings)> {
        opts.validate()?;
        let voice = voice.or(self.voice.as_ref()).ok_or(Error::NoVoice)?;
        self.check_request(voice, opts)?;
        let rows: Vec<Row<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Row { index: i, segment: 0, tokens: t, voice, options: opts, seed: opts.seed.wrapping_add(i as u64) })
            .collect();
        let (spoken, timings) = self.run_rows(&rows, &mut |_| {})?;
        Ok((spoken.into_iter().collect::<Result<Vec<_>>>()?, timings))
    }
}

/// Writes a 24 kHz mono 32-bit float WAV (as `torchaudio.save` writes the reference's output),
/// through a temporary file renamed into place, so a failure leaves nothing half-written.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<()> {
    write_wav_with_comment(path, samples, None)
}

/// [`write_wav`], with `comment` (if any) in a `LIST`/`INFO` chunk (`ICMT`) after the samples
/// ([`crate::output::encode`]).
pub fn write_wav_with_comment(path: &Path, samples: &[f32], comment: Option<&str>) -> Result<()> {
    let format = AudioFormat { container: Container::Wav, sample: SampleFormat::F32 };
    crate::output::write_audio(path, samples, tts_s3gen::SAMPLE_RATE, format, comment)
}
