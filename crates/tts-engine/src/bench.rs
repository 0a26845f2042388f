//! `tts bench-t3` and `tts bench-s3gen`: T3 decode speed and S3Gen synthesis speed on a model
//! directory (real weights, or the full-size random models tools/reference writes), for batch sizes
//! chosen by the caller.
use std::path::Path;
use std::time::Instant;

use tts_kernels::Device;
use tts_kernels::testing::{random_f32, random_i32};
use tts_s3gen::{FlowRequest, MEL_BINS, S3Gen, SAMPLE_RATE};
use tts_t3::{Generator, Request, SamplerSettings, T3, Voice};

use crate::{Error, Result};

/// One measured batch size.
#[derive(Debug, Clone)]
pub struct T3Speed {
    pub batch: usize,
    /// Speech tokens generated per request (the mean; a request may stop early).
    pub tokens_per_request: f64,
    pub decode_steps: usize,
    pub seconds: f64,
    pub ms_per_step: f64,
    /// Generated tokens of all requests per second (prefill included in the time).
    pub tokens_per_second: f64,
}

/// `inputs.safetensors` of a reference case in `dir`, when there is one.
fn case_inputs(dir: &Path) -> Result<Option<Vec<u8>>> {
    let inputs = dir.join("inputs.safetensors");
    if !inputs.exists() {
        return Ok(None);
    }
    std::fs::read(&inputs).map(Some).map_err(|e| Error::Model(format!("{}: {e}", inputs.display())))
}

fn st_f32s(v: safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn st_tokens(v: safetensors::tensor::TensorView<'_>) -> Vec<u32> {
    v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
}

/// One measured S3Gen batch size.
#[derive(Debug, Clone)]
pub struct S3GenSpeed {
    pub batch: usize,
    /// Audio generated per request, in seconds.
    pub audio_seconds: f64,
    /// Wall time of the whole batch (flow + vocoder), in seconds.
    pub seconds: f64,
    /// Wall seconds per second of audio of all requests (the real-time factor; lower is faster).
    pub rtf: f64,
}

/// The built-in voice's prompt size (spec §5.1): 157 prompt tokens, 314 mel frames.
const BUILTIN_PROMPT_TOKENS: usize = 157;

/// Loads S3Gen from `dir` on `dev` and measures synthesis of `tokens` speech tokens per request
/// (with the prompt of the case's `inputs.safetensors`, or a random one of the built-in voice's size)
/// at each batch size, with `steps` CFM steps.
pub fn bench_s3gen(dir: &Path, dev: &Device, batches: &[usize], tokens: usize, steps: usize) -> Result<Vec<S3GenSpeed>> {
    let model = S3Gen::load(dir, dev).map_err(|e| Error::Model(e.to_string()))?;
    let cfg = &model.config;
    let vocab = cfg.flow_vocab_size as i32;
    let (prompt_tokens, prompt_feat, embedding, mut speech) = match case_inputs(dir)? {
        Some(bytes) => {
            let st =
                safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Model(format!("inputs.safetensors: {e}")))?;
            let get = |n: &str| st.tensor(n).map_err(|e| Error::Model(format!("inputs.safetensors: {n}: {e}")));
            (
                st_tokens(get("prompt_token")?),
                st_f32s(get("prompt_feat")?),
                st_f32s(get("embedding")?),
                st_tokens(get("speech_tokens")?),
            )
        }
        None => (
            random_i32(1, BUILTIN_PROMPT_TOKENS, 0, vocab).into_iter().map(|t| t as u32).collect(),
            random_f32(2, 2 * BUILTIN_PROMPT_TOKENS * MEL_BINS, 2.0).iter().map(|v| v - 6.0).collect(),
            random_f32(3, cfg.spk_embed_dim, 1.0),
            Vec::new(),
        ),
    };
    // exactly `tokens` speech tokens: the case's, repeated or cut, else random
    let extra: Vec<u32> = random_i32(4, tokens, 0, vocab).into_iter().map(|t| t as u32).collect();
    if speech.is_empty() {
        speech = extra;
    }
    let speech: Vec<u32> = speech.iter().cycle().take(tokens).copied().collect();
    let mut out = Vec::new();
    for &b in batches {
        let reqs: Vec<tts_s3gen::Request<'_>> = (0..b)
            .map(|i| tts_s3gen::Request {
                flow: FlowRequest {
                    prompt_tokens: &prompt_tokens,
                    prompt_feat: &prompt_feat,
                    embedding: &embedding,
                    tokens: &speech,
                    noise: None,
                    seed: i as u64 + 1,
                },
                source_phases: None,
                source_noise: None,
            })
            .collect();
        let t = Instant::now();
        let wavs = model.synthesize(&reqs, steps).map_err(|e| Error::Model(e.to_string()))?;
        dev.synchronize()?;
        let seconds = t.elapsed().as_secs_f64();
        let audio: f64 = wavs.iter().map(|w| w.len() as f64 / SAMPLE_RATE as f64).sum();
        out.push(S3GenSpeed { batch: b, audio_seconds: audio / b as f64, seconds, rtf: seconds / audio });
    }
    Ok(out)
}

/// The voice and text of the bench: `inputs.safetensors` of a reference case when the directory
/// has one (so both engines do the same work), else seeded random ones.
fn bench_request(dir: &Path, model: &T3, tokens: usize) -> Result<Request> {
    let cfg = &model.cfg;
    let (speaker_emb, prompt, text) = if let Some(bytes) = case_inputs(dir)? {
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Model(format!("inputs.safetensors: {e}")))?;
        let get = |n: &str| st.tensor(n).map_err(|e| Error::Model(format!("inputs.safetensors: {n}: {e}")));
        let text = st_tokens(get("text_tokens")?);
        let t = text.len() / 2;
        (st_f32s(get("speaker_emb")?), st_tokens(get("cond_prompt_speech_tokens")?), text[..t].to_vec())
    } else {
        let mut text: Vec<u32> = random_i32(3, 60, 3, cfg.text_tokens_dict_size as i32).into_iter().map(|t| t as u32).collect();
        text.insert(0, cfg.start_text_token);
        text.push(cfg.stop_text_token);
        let prompt =
            random_i32(2, cfg.speech_cond_prompt_len, 0, cfg.start_speech_token as i32).into_iter().map(|t| t as u32).collect();
        (random_f32(1, cfg.speaker_embed_size, 0.1), prompt, text)
    };
    Ok(Request {
        text_tokens: text,
        voice: Voice { speaker_emb, prompt_tokens: prompt },
        exaggeration: 0.5,
        settings: SamplerSettings { max_new_tokens: tokens, ..SamplerSettings::default() },
    })
}

/// Loads T3 from `dir` on `dev` and measures `tokens` new tokens per request at each batch size.
pub fn bench_t3(dir: &Path, dev: &Device, batches: &[usize], tokens: usize) -> Result<Vec<T3Speed>> {
    let model = T3::load(dir, dev).map_err(|e| Error::Model(e.to_string()))?;
    let base = bench_request(dir, &model, tokens)?;
    let max_len = model.cfg.len_cond() + base.text_tokens.len() + 2 + tokens + 1;
    let mut out = Vec::new();
    for &b in batches {
        let reqs: Vec<Request> = (0..b)
            .map(|i| {
                let mut r = base.clone();
                r.settings.seed = i as u64 + 1;
                r
            })
            .collect();
        let mut g = Generator::new(&model, b, max_len, tokens).map_err(|e| Error::Model(e.to_string()))?;
        let t = Instant::now();
        let done = g.run(&reqs, 8).map_err(|e| Error::Model(e.to_string()))?;
        dev.synchronize()?;
        let seconds = t.elapsed().as_secs_f64();
        let generated: usize = done.iter().map(|f| f.raw.len()).sum();
        out.push(T3Speed {
            batch: b,
            tokens_per_request: generated as f64 / b as f64,
            decode_steps: g.steps,
            seconds,
            ms_per_step: seconds * 1e3 / g.steps.max(1) as f64,
            tokens_per_second: generated as f64 / seconds,
        });
    }
    Ok(out)
}
