//! Runners of the voice-cloning kinds end to end: `prepare_conditionals` (an audio file → the
//! conditionals) and `voice_conversion` (source speech → S3 tokens → S3Gen in the target voice).
//!
//! Besides the tensor comparisons, each prints the figures the issue asks for: the share of prompt
//! tokens identical to the reference's, and the cosine similarity of the embeddings (which must be
//! at least [`MIN_COSINE`]).
use tts_s3gen::{Flow, FlowRequest, Hift, MEL_BINS};
use tts_voice::prepare::{S3_SR, VoiceModels};
use tts_voice::resample::{Resampler, resample};

use super::s3gen::{check_mel_and_wav, open};
use super::t3::{Runner, device};
use super::{Case, Outcome, Tolerance, agreement, compare_tensor, ids};

/// The least cosine similarity accepted between an embedding and the reference's.
pub const MIN_COSINE: f64 = 0.9999;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn v64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Identical tokens at the same positions / the reference's count (a length difference counts as
/// mismatches).
impl Runner<'_> {
    /// Compares an embedding and adds a report that fails below [`MIN_COSINE`]; returns the cosine.
    fn check_cosine(&mut self, name: &str, got: &[f32]) -> f64 {
        let want = &self.case.expected[name].data;
        let c = cosine(&v64(got), want);
        let mut rep = compare_tensor(self.case, name, &v64(got), &self.case.expected[name].shape, self.tol);
        rep.name = format!("{name} (cosine)");
        rep.ok = c >= MIN_COSINE;
        rep.detail = format!("cosine similarity {c:.7} (at least {MIN_COSINE})");
        self.reports.push(rep);
        c
    }
}

fn param_usize(case: &Case, key: &str) -> Result<usize, String> {
    case.meta
        .params
        .get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| format!("{}: params.{key} missing", case.name))
}

fn param_file(case: &Case, key: &str) -> Result<std::path::PathBuf, String> {
    Ok(case.dir.join(case.param_str(key).ok_or_else(|| format!("{}: params.{key} missing", case.name))?))
}

/// `prepare_conditionals`: the audio file → every tensor of `Conditionals`.
pub(crate) fn run_prepare_conditionals(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let models = VoiceModels::load(&case.dir).map_err(err)?;
    let audio = tts_voice::audio::load(&param_file(case, "file")?).map_err(err)?;
    let plen = param_usize(case, "speech_cond_prompt_len")?;
    let mut r = Runner { case, tol, reports: Vec::new() };
    let c = models.prepare_conditionals(&audio, plen).map_err(err)?;
    let g = &c.reference;
    let exaggeration = case.meta.params.get("exaggeration").and_then(|v| v.as_f64()).unwrap_or(0.5);
    r.check("speaker_emb", &v64(&c.speaker_emb), &[1, c.speaker_emb.len()]);
    r.check("cond_prompt_speech_tokens", &ids(&c.t3_prompt_tokens), &[1, c.t3_prompt_tokens.len()]);
    r.check("emotion_adv", &[exaggeration as f32 as f64], &[1, 1, 1]);
    r.check("prompt_token", &ids(&g.prompt_token), &[1, g.prompt_token.len()]);
    r.check("prompt_token_len", &[g.prompt_token.len() as f64], &[1]);
    r.check("prompt_feat", &v64(&g.prompt_feat), &[1, g.prompt_feat_frames, MEL_BINS]);
    r.check("embedding", &v64(&g.embedding), &[1, g.embedding.len()]);
    let cos_spk = r.check_cosine("speaker_emb", &c.speaker_emb);
    let cos_x = r.check_cosine("embedding", &g.embedding);
    let (t3_same, t3_n) = agreement(&c.t3_prompt_tokens, &case.expected["cond_prompt_speech_tokens"].data);
    let (s3_same, s3_n) = agreement(&g.prompt_token, &case.expected["prompt_token"].data);
    println!(
        "    {}: identical tokens: T3 prompt {t3_same}/{t3_n}, S3Gen prompt {s3_same}/{s3_n}; cosine: speaker_emb {cos_spk:.7}, x-vector {cos_x:.7}",
        case.name
    );
    r.finish()
}

/// `voice_conversion`: the source's tokens and the target's reference embedding computed from the
/// files, then S3Gen (on `backend`) with the recorded flow noise and SineGen draws.
pub(crate) fn run_voice_conversion(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let models = VoiceModels::load(&case.dir).map_err(err)?;
    let source = tts_voice::audio::load(&param_file(case, "source_file")?).map_err(err)?;
    let target = tts_voice::audio::load(&param_file(case, "target_file")?).map_err(err)?;
    let mut r = Runner { case, tol: if tol.bf16 { case.meta.tolerance.f32 } else { tol }, reports: Vec::new() };
    // the cloning side runs on the host in f32 whatever the backend: f32 tolerance
    let src16 = resample(&source.samples, source.sample_rate, S3_SR, Resampler::Soxr).map_err(err)?;
    r.check("source_16k", &v64(&src16), &[1, src16.len()]);
    let tokens = models.source_tokens(&source).map_err(err)?;
    r.check("speech_tokens", &ids(&tokens), &[1, tokens.len()]);
    let g = models.embed_ref(&VoiceModels::to_24k(&target).map_err(err)?).map_err(err)?;
    r.check("prompt_token", &ids(&g.prompt_token), &[1, g.prompt_token.len()]);
    r.check("prompt_feat", &v64(&g.prompt_feat), &[1, g.prompt_feat_frames, MEL_BINS]);
    r.check("embedding", &v64(&g.embedding), &[1, g.embedding.len()]);
    let cos_x = r.check_cosine("embedding", &g.embedding);
    let (same, n) = agreement(&tokens, &case.expected["speech_tokens"].data);
    println!("    {}: identical source tokens {same}/{n}; target x-vector cosine {cos_x:.7}", case.name);

    // S3Gen on the backend, from what was computed, with the reference's recorded draws
    r.tol = tol;
    let dev = device(backend)?;
    let (cfg, ck) = open(case)?;
    let flow = Flow::load(&ck, &dev, &cfg).map_err(err)?;
    let hift = Hift::load(&ck, &dev, &cfg).map_err(err)?;
    let z = case.input("z")?.f32s();
    let req = FlowRequest {
        prompt_tokens: &g.prompt_token,
        prompt_feat: &g.prompt_feat,
        embedding: &g.embedding,
        tokens: &tokens,
        noise: Some(&z),
        seed: 0,
    };
    let fout = flow.inference(&dev, &[req], tts_s3gen::DEFAULT_CFM_STEPS).map_err(err)?;
    check_mel_and_wav(&mut r, &dev, &hift, &fout.mels[0])?;
    r.finish()
}
