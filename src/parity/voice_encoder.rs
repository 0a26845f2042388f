//! The `voice_encoder` kind: `VoiceEncoder.embeds_from_wavs([wav], 16000)` stage by stage (trimmed
//! audio, mel, partial embeddings, speaker embedding), host-only.
use tts_voice::voice_encoder::{VoiceEncoder, VoiceEncoderConfig, mel::N_MELS};

use super::t3::Runner;
use super::{Case, Outcome, Tolerance};

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub(crate) fn run(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let err = |e: tts_voice::Error| format!("{}: {e}", case.name);
    let cfg = VoiceEncoderConfig::from_model_dir(&case.dir).map_err(err)?;
    let ve = VoiceEncoder::load(&case.dir.join("ve.safetensors"), &cfg).map_err(err)?;
    let wav = case.input("wav_16k")?.f32s();
    let s = ve.embed_stages(&wav).map_err(err)?;
    let mut r = Runner { case, tol, reports: Vec::new() };
    let trimmed = &wav[s.trimmed.clone()];
    r.check("trimmed_wav", &f64s(trimmed), &[1, trimmed.len()]);
    let frames = s.mel.len() / N_MELS;
    r.check("mel", &f64s(&s.mel), &[1, frames, N_MELS]);
    let e = ve.embed_size();
    r.check("partial_embeds", &f64s(&s.partial_embeds), &[s.windows.count, e]);
    r.check("speaker_emb", &f64s(&s.speaker_emb), &[1, e]);
    // the public entry point gives the same embedding
    let direct = ve.embed(&wav).map_err(err)?;
    if direct != s.speaker_emb {
        return Err(format!("{}: VoiceEncoder::embed differs from embed_stages", case.name));
    }
    r.finish()
}
