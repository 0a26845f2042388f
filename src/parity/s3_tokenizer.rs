//! Runner of the `s3_tokenizer` kind: S3Tokenizer v2 (tts-voice) on a 16 kHz waveform, stage by
//! stage (log-mel, encoder output, FSQ values before rounding, tokens, tokens with `max_len`).
use std::path::Path;

use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::config_json;
use tts_voice::s3_tokenizer::{FSQ_DIMS, S3Tokenizer, TokenizerConfig};

use super::{Case, Outcome, Tolerance, compare_tensor};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The case's tokenizer config (its `config.json`, or the real dimensions without one).
fn config(dir: &Path) -> Result<TokenizerConfig, String> {
    let path = dir.join("config.json");
    match config_json::read(&path).map_err(|e| format!("{}: {}", path.display(), e.detail))? {
        None => Ok(TokenizerConfig::default()),
        Some(v) => TokenizerConfig::from_json(&path, &v).map_err(err),
    }
}

/// `s3_tokenizer`: `log_mel` (1, 128, T), `encoder_out` (1, T_tok, D), `fsq_pre_round`
/// (1, T_tok, 8), `tokens` (1, T_tok) and `tokens_max_len` (1, ≤ max_len) for `wav_16k` (1, L).
pub fn run(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let cfg = config(&case.dir)?;
    let ck = Checkpoint::open(&case.dir.join("s3gen.safetensors")).map_err(err)?;
    let tok = S3Tokenizer::load(&ck, &cfg).map_err(err)?;
    let wav = case.input("wav_16k")?.f32s();
    let max_len = case.meta.params.get("max_len").and_then(|v| v.as_u64()).ok_or("params.max_len missing")? as usize;

    let mel = tok.log_mel(&wav).map_err(err)?;
    let hidden = tok.encode(&mel).map_err(err)?;
    let d = cfg.tokenizer_n_state;
    let t_tok = hidden.len() / d;
    let pre = tok.fsq_pre_round(&hidden);
    let tokens: Vec<f64> = tok.tokenize(&wav, None).map_err(err)?.iter().map(|&c| c as f64).collect();
    let tokens_ml: Vec<f64> = tok.tokenize(&wav, Some(max_len)).map_err(err)?.iter().map(|&c| c as f64).collect();

    let reports = vec![
        compare_tensor(case, "log_mel", &f64s(&mel.data), &[1, mel.data.len() / mel.frames.max(1), mel.frames], tol),
        compare_tensor(case, "encoder_out", &f64s(&hidden), &[1, t_tok, d], tol),
        compare_tensor(case, "fsq_pre_round", &f64s(&pre), &[1, t_tok, FSQ_DIMS], tol),
        compare_tensor(case, "tokens", &tokens, &[1, tokens.len()], tol),
        compare_tensor(case, "tokens_max_len", &tokens_ml, &[1, tokens_ml.len()], tol),
    ];
    Ok(if reports.iter().all(|r| r.ok) { Outcome::Passed(reports) } else { Outcome::Failed("mismatch".into(), reports) })
}
