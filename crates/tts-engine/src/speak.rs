//! Text → 24 kHz speech through the whole model, batched: the text front-end (`punc_norm`, the
//! tokenizer, SOT/EOT), T3 (CFG row pairs, per-request sampling and stop), the reference's token
//! post-processing, and S3Gen (flow matching + HiFT, with the trim/fade).
use std::path::Path;

use std::time::Instant;

use tts_kernels::Device;
use tts_s3gen::{FlowRequest, S3Gen, S3GenConfig};
use tts_t3::{Generator, SamplerSettings, T3, T3Config};

use crate::text::{TextTokenizer, punc_norm};
use crate::voice::BuiltinVoice;
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

impl Default for SpeakOptions {
    fn default() -> Self {
        SpeakOptions {
            exaggeration: 0.5,
            cfg_weight: 0.5,
            temperature: 0.8,
            repetition_penalty: 1.2,
            min_p: 0.05,
            top_p: 1.0,
            max_new_tokens: 1000,
            seed: 0,
            cfm_steps: tts_s3gen::DEFAULT_CFM_STEPS,
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
    pub voice: Option<BuiltinVoice>,
    /// `Some(seed)` when the engine is synthetic ([`Engine::synthetic`]): random weights, noise.
    pub synthetic_seed: Option<u64>,
}

impl Engine {
    /// Loads `t3_cfg.safetensors`, `s3gen.safetensors` (and `config.json`), plus `tokenizer.json` and
    /// `conds.pt` when present, from a model directory.
    pub fn load(dir: &Path, dev: &Device) -> Result<Engine> {
        let model = |e: &dyn std::fmt::Display| Error::Model(e.to_string());
        let t3 = T3::load(dir, dev).map_err(|e| model(&e))?;
        let s3gen = S3Gen::load(dir, dev).map_err(|e| model(&e))?;
        let tok = dir.join("tokenizer.json");
        let tokenizer = if tok.exists() { Some(TextTokenizer::from_file(&tok)?) } else { None };
        let conds = dir.join("conds.pt");
        let voice = if conds.exists() { Some(BuiltinVoice::load(&conds)?) } else { None };
        Ok(Engine { t3, s3gen, tokenizer, voice, synthetic_seed: None })
    }

    /// The synthetic engine (see [`crate::synthetic`]): T3 and S3Gen of dimensions `t3` and `s3gen`
    /// with random weights from `seed`, built in memory through the real loaders, a synthetic
    /// built-in voice and a character-level tokenizer. It runs what a real engine runs and speaks
    /// noise, not speech.
    pub fn synthetic(t3: T3Config, s3gen: S3GenConfig, seed: u64, dev: &Device) -> Result<Engine> {
        let model = |e: &dyn std::fmt::Display| Error::Model(e.to_string());
        let voice = crate::synthetic::voice(seed, &t3, &s3gen);
        let tokenizer = TextTokenizer::characters(t3.text_tokens_dict_size, &[t3.start_text_token, t3.stop_text_token])?;
        Ok(Engine {
            t3: T3::synthetic(t3, seed, dev).map_err(|e| model(&e))?,
            s3gen: S3Gen::synthetic(s3gen, seed, dev).map_err(|e| model(&e))?,
            tokenizer: Some(tokenizer),
            voice: Some(voice),
            synthetic_seed: Some(seed),
        })
    }

    /// `[SOT] tokens(punc_norm(text)) [EOT]`, as `tts.py` feeds T3.
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| Error::Model("the model directory has no tokenizer.json".into()))?;
        if text.trim().is_empty() {
            return Err(Error::Model("empty text".into()));
        }
        let cfg = &self.t3.cfg;
        let ids = tok.encode(&punc_norm(text))?;
        if ids.len() + 2 > cfg.max_text_tokens {
            return Err(Error::Model(format!("text of {} tokens is longer than T3's {}", ids.len(), cfg.max_text_tokens - 2)));
        }
        Ok(std::iter::once(cfg.start_text_token).chain(ids).chain(std::iter::once(cfg.stop_text_token)).collect())
    }

    /// Speaks texts with a voice (the built-in one when `None`).
    pub fn speak(&self, texts: &[&str], voice: Option<&BuiltinVoice>, opts: &SpeakOptions) -> Result<Vec<Spoken>> {
        Ok(self.speak_timed(texts, voice, opts)?.0)
    }

    /// [`Engine::speak`], with where the time went.
    pub fn speak_timed(
        &self,
        texts: &[&str],
        voice: Option<&BuiltinVoice>,
        opts: &SpeakOptions,
    ) -> Result<(Vec<Spoken>, SpeakTimings)> {
        let tokens = texts.iter().map(|t| self.text_tokens(t)).collect::<Result<Vec<_>>>()?;
        self.speak_tokens_timed(&tokens, voice, opts)
    }

    /// Speaks already tokenised texts (`[SOT] ids [EOT]` each), all in one T3 batch and one S3Gen
    /// batch. Request `i` is seeded with `opts.seed + i`.
    pub fn speak_tokens(&self, texts: &[Vec<u32>], voice: Option<&BuiltinVoice>, opts: &SpeakOptions) -> Result<Vec<Spoken>> {
        Ok(self.speak_tokens_timed(texts, voice, opts)?.0)
    }

    /// [`Engine::speak_tokens`], with where the time went.
    pub fn speak_tokens_timed(
        &self,
        texts: &[Vec<u32>],
        voice: Option<&BuiltinVoice>,
        opts: &SpeakOptions,
    ) -> Result<(Vec<Spoken>, SpeakTimings)> {
        let voice =
            voice.or(self.voice.as_ref()).ok_or_else(|| Error::Model("no voice: the model directory has no conds.pt".into()))?;
        if texts.is_empty() {
            return Ok((Vec::new(), SpeakTimings::default()));
        }
        let t3_start = Instant::now();
        let settings = |i: usize| SamplerSettings {
            temperature: opts.temperature,
            cfg_weight: opts.cfg_weight,
            repetition_penalty: opts.repetition_penalty,
            min_p: opts.min_p,
            top_p: opts.top_p,
            max_new_tokens: opts.max_new_tokens,
            seed: opts.seed.wrapping_add(i as u64),
            ..SamplerSettings::default()
        };
        let reqs: Vec<tts_t3::Request> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| tts_t3::Request {
                text_tokens: t.clone(),
                voice: tts_t3::Voice {
                    speaker_emb: voice.t3.speaker_emb.clone(),
                    prompt_tokens: voice.t3.cond_prompt_speech_tokens.clone(),
                },
                exaggeration: opts.exaggeration,
                settings: settings(i),
            })
            .collect();
        let cfg = &self.t3.cfg;
        let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        let max_len = cfg.kv_positions(longest, opts.max_new_tokens);
        let mut generator =
            Generator::new(&self.t3, texts.len(), max_len, opts.max_new_tokens).map_err(|e| Error::Model(e.to_string()))?;
        let done = generator.run(&reqs, 8).map_err(|e| Error::Model(e.to_string()))?; // in request order
        let t3_seconds = t3_start.elapsed().as_secs_f64();
        // the reference keeps only tokens the flow knows (`speech_tokens < 6561`)
        let vocab = self.s3gen.config.flow_vocab_size as u32;
        let speech: Vec<Vec<u32>> = done.iter().map(|f| f.tokens.iter().copied().filter(|&t| t < vocab).collect()).collect();
        if let Some(i) = speech.iter().position(|s| s.is_empty()) {
            return Err(Error::Model(format!("text {i}: T3 produced no speech tokens")));
        }
        let g = &voice.s3gen;
        let prompt = &g.prompt_token[..g.prompt_token_len.min(g.prompt_token.len())];
        let s3_reqs: Vec<tts_s3gen::Request<'_>> = speech
            .iter()
            .enumerate()
            .map(|(i, s)| tts_s3gen::Request {
                flow: FlowRequest {
                    prompt_tokens: prompt,
                    prompt_feat: &g.prompt_feat,
                    embedding: &g.embedding,
                    tokens: s,
                    noise: None,
                    seed: opts.seed.wrapping_add(i as u64),
                },
                source_phases: None,
                source_noise: None,
            })
            .collect();
        let s3gen_start = Instant::now();
        let wavs = self.s3gen.synthesize(&s3_reqs, opts.cfm_steps).map_err(|e| Error::Model(e.to_string()))?;
        let timings = SpeakTimings { t3_seconds, s3gen_seconds: s3gen_start.elapsed().as_secs_f64() };
        Ok((speech.into_iter().zip(wavs).map(|(speech_tokens, wav)| Spoken { speech_tokens, wav }).collect(), timings))
    }
}

/// Writes a 24 kHz mono 32-bit float WAV (as `torchaudio.save` writes the reference's output),
/// through a temporary file renamed into place, so a failure leaves nothing half-written.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<()> {
    write_wav_with_comment(path, samples, None)
}

/// [`write_wav`], with `comment` (if any) in a `LIST`/`INFO` chunk (`ICMT`) after the samples,
/// where players and `soxi` show it and readers that do not know it skip it.
pub fn write_wav_with_comment(path: &Path, samples: &[f32], comment: Option<&str>) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Model(format!("writing {}: {e}", path.display()));
    let tmp = path.with_extension("wav.partial");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: tts_s3gen::SAMPLE_RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let result = (|| -> std::result::Result<(), hound::Error> {
        let mut w = hound::WavWriter::create(&tmp, spec)?;
        for &s in samples {
            w.write_sample(s)?;
        }
        w.finalize()?;
        if let Some(c) = comment {
            append_info_comment(&tmp, c)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(&e)
    })
}

/// Appends a `LIST` chunk of type `INFO` holding one `ICMT` (comment) sub-chunk to the RIFF file at
/// `path`, and updates the RIFF size.
fn append_info_comment(path: &Path, comment: &str) -> std::result::Result<(), hound::Error> {
    use std::io::{Seek, SeekFrom, Write};
    let mut text = comment.as_bytes().to_vec();
    text.push(0);
    let text_len = text.len() as u32;
    if text.len() % 2 == 1 {
        text.push(0); // chunks are padded to an even size
    }
    let mut chunk = Vec::with_capacity(text.len() + 20);
    chunk.extend_from_slice(b"LIST");
    chunk.extend_from_slice(&(4 + 8 + text.len() as u32).to_le_bytes());
    chunk.extend_from_slice(b"INFO");
    chunk.extend_from_slice(b"ICMT");
    chunk.extend_from_slice(&text_len.to_le_bytes());
    chunk.extend_from_slice(&text);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let end = f.seek(SeekFrom::End(0))?;
    f.write_all(&chunk)?;
    let riff = u32::try_from(end + chunk.len() as u64 - 8)
        .map_err(|_| std::io::Error::other("the WAV would pass 4 GB with its comment"))?;
    f.seek(SeekFrom::Start(4))?;
    f.write_all(&riff.to_le_bytes())?;
    f.sync_all()?;
    Ok(())
}
