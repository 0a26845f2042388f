//! Runner of `tts_generate`: text → the waveform `ChatterboxTTS.generate` returns (before the
//! watermark), through the engine's parts in the reference's order:
//!
//! 1. the text front-end (`tts_engine::text`: punc_norm, the case's `tokenizer.json`, SOT/EOT) —
//!    code points and ids compared exactly;
//! 2. the voice from `conds.pt` as the engine reads it (`tts_engine::voice::Conditionals`), its
//!    `emotion_adv` replaced by generate's `exaggeration`, as tts.py:225-231 does;
//! 3. T3, teacher-forced over the tokens the reference sampled (T3's sampler draws from the
//!    engine's own RNG, not torch's): every step's logits of both CFG rows compared; on Cpu each
//!    drawn token must also be one the engine's sampler could have drawn from them;
//! 4. the post-processing (`tts_t3::generate::post_process`, then the flow's vocabulary as the
//!    engine filters it) — compared exactly;
//! 5. S3Gen with the reference's flow noise and SineGen draws: `mu`, `mel`, then the vocoder as in
//!    `s3gen_wav` (F0, source, the waveform before and after trim/fade).
use tts_engine::text::{TextTokenizer, punc_norm};
use tts_engine::voice::Conditionals;
use tts_s3gen::{Flow, FlowRequest, Hift, MEL_BINS};

use super::s3gen::{channel_major, check_mel_and_wav, open};
use super::t3::{Runner, device, f64s, prepare_with, sampler_settings, teacher_forced, tokens};
use super::{Case, Compare, Outcome, TensorReport, Tolerance, ids};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn param_f32(case: &Case, key: &str) -> Result<f32, String> {
    case.meta
        .params
        .get(key)
        .and_then(|v| v.as_f64())
        .map(|v| v as f32)
        .ok_or_else(|| format!("{}: params.{key} missing", case.name))
}

/// The case's text input (unicode code points).
fn text_of(case: &Case) -> Result<String, String> {
    case.input("text")?
        .i64s()
        .iter()
        .map(|&c| u32::try_from(c).ok().and_then(char::from_u32).ok_or_else(|| format!("text: invalid code point {c}")))
        .collect()
}

/// The voice in `conds.pt` must be the one the reference's T3 and S3Gen were called with (the
/// case's inputs), bit for bit; `emotion_adv` excepted (generate's `exaggeration` replaces it).
fn check_voice(case: &Case, voice: &Conditionals) -> Result<(), String> {
    let same_f = |name: &str, got: &[f32]| -> Result<(), String> {
        let want = case.input(name)?.f32s();
        if want != got { Err(format!("{}: conds.pt's {name} differs from inputs.safetensors", case.name)) } else { Ok(()) }
    };
    let same_t = |name: &str, got: &[u32]| -> Result<(), String> {
        if tokens(case, name)? != got {
            Err(format!("{}: conds.pt's {name} differs from inputs.safetensors", case.name))
        } else {
            Ok(())
        }
    };
    let (t3, g) = (&voice.t3, &voice.s3gen);
    same_f("speaker_emb", &t3.speaker_emb)?;
    same_t("cond_prompt_speech_tokens", &t3.cond_prompt_speech_tokens)?;
    same_t("prompt_token", &g.prompt_token)?;
    same_t("prompt_token_len", &[g.prompt_token_len as u32])?;
    same_f("prompt_feat", &g.prompt_feat)?;
    same_f("embedding", &g.embedding)
}

/// A pass/fail line of its own (not a tensor of case.json).
fn verdict(name: &str, ok: bool, detail: String) -> TensorReport {
    TensorReport { name: name.into(), compare: Compare::Exact, max_abs: 0.0, max_rel: 0.0, rel_l2: 0.0, ok, detail }
}

pub(crate) fn run_tts_generate(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let mut r = Runner { case, tol, reports: Vec::new() };

    // 1. text front-end
    let text = text_of(case)?;
    let normalized = punc_norm(&text);
    let cps: Vec<f64> = normalized.chars().map(|c| c as u32 as f64).collect();
    r.check("normalized", &cps, &[cps.len()]);
    let tokenizer = TextTokenizer::from_file(&case.dir.join("tokenizer.json")).map_err(err)?;
    let ids_ = tokenizer.encode(&normalized).map_err(err)?;

    // 2. the voice, with generate's exaggeration
    let voice = Conditionals::load(&case.dir.join("conds.pt")).map_err(err)?;
    check_voice(case, &voice)?;
    let exaggeration = param_f32(case, "exaggeration")?;
    if case.input("emotion_adv")?.f32s() != [exaggeration] {
        return Err(format!("{}: inputs' emotion_adv is not params.exaggeration", case.name));
    }
    let p = prepare_with(case, backend, &voice.t3.speaker_emb, &voice.t3.cond_prompt_speech_tokens, exaggeration)?;
    let cfg = p.model.config().clone();
    let text_tokens: Vec<u32> =
        std::iter::once(cfg.start_text_token).chain(ids_).chain(std::iter::once(cfg.stop_text_token)).collect();
    let rows = [text_tokens.clone(), text_tokens.clone()].concat();
    r.check("text_tokens", &ids(&rows), &[2, text_tokens.len()]);
    r.check("cond_emb", &f64s(&p.cond)?, &[1, cfg.len_cond(), cfg.hidden_size]);

    // 3. T3 over the reference's draws: token k was drawn from the logits after feeding tokens ..k
    let raw = tokens(case, "speech_tokens_raw")?;
    let (n, v) = (raw.len(), cfg.speech_tokens_dict_size);
    if n == 0 {
        return Err(format!("{}: speech_tokens_raw is empty", case.name));
    }
    let tf = teacher_forced(&p, &text_tokens, &raw[..n - 1])?;
    let logits: Vec<f64> = tf.steps.iter().flatten().map(|&x| x as f64).collect();
    r.check("step_logits", &logits, &[n, 2, v]);
    if backend == "cpu" {
        let settings = sampler_settings(case)?;
        let mut history = vec![cfg.start_speech_token as i32];
        let mut refused = Vec::new();
        for (k, (s, &tok)) in tf.steps.iter().zip(&raw).enumerate() {
            let st = tts_kernels::cpu::sampler_stages(&s[..v], &s[v..], &history, &settings);
            if st.probs.get(tok as usize).is_none_or(|&q| q <= 0.0) {
                refused.push(format!("step {k} token {tok}"));
            }
            history.push(tok as i32);
        }
        let detail = if refused.is_empty() { String::new() } else { format!("not drawable: {}", refused.join(", ")) };
        r.reports.push(verdict("speech_tokens_raw (each drawable by the engine's sampler)", refused.is_empty(), detail));
    }

    // 4. post-processing: the reference's drop_invalid_tokens + `< 6561`, then the flow's vocabulary
    let (s3cfg, ck) = open(case)?;
    let flow_vocab = u32::try_from(s3cfg.flow_vocab_size).map_err(err)?;
    let speech: Vec<u32> = tts_t3::generate::post_process(&raw, cfg.start_speech_token, cfg.stop_speech_token)
        .into_iter()
        .filter(|&t| t < flow_vocab)
        .collect();
    r.check("speech_tokens", &ids(&speech), &[1, speech.len()]);
    if !r.reports.last().is_some_and(|t| t.ok) {
        return Ok(Outcome::Failed("post-processed speech tokens differ (S3Gen not run)".into(), r.reports));
    }

    // 5. S3Gen with the recorded draws
    let dev = device(backend)?;
    let flow = Flow::load(&ck, &dev, &s3cfg).map_err(err)?;
    let hift = Hift::load(&ck, &dev, &s3cfg).map_err(err)?;
    let g = &voice.s3gen;
    let z = case.input("z")?.f32s();
    let req = FlowRequest {
        prompt_tokens: &g.prompt_token[..g.prompt_token_len.min(g.prompt_token.len())],
        prompt_feat: &g.prompt_feat,
        embedding: &g.embedding,
        tokens: &speech,
        noise: Some(&z),
        seed: 0,
    };
    let fout = flow.inference(&dev, &[req], tts_s3gen::DEFAULT_CFM_STEPS).map_err(err)?;
    let nm = fout.encoder.mu.shape()[1];
    r.check("mu", &channel_major(&fout.encoder.mu.to_f32_vec().map_err(err)?, 1, nm, MEL_BINS), &[1, MEL_BINS, nm]);
    check_mel_and_wav(&mut r, &dev, &hift, &fout.mels[0])?;
    r.finish()
}
