//! Runner of the `s3_tokenizer` kind: S3Tokenizer v2 (tts-voice) on a 16 kHz waveform, stage by
//! stage (log-mel, encoder output, FSQ values before rounding, tokens, tokens with `max_len`).
use std::path::Path;

use tts_kernels::BackendKind;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::config_json;
use tts_voice::s3_tokenizer::{FSQ_DIMS, S3Tokenizer, TokenizerConfig, digit_agreement};

use super::{Case, Compare, Outcome, TensorReport, Tolerance, agreement, compare_tensor, ids};

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
///
/// The encoder runs on `backend`: on the Cpu backends (`cpu`, `cpu-bf16`) it is the host's f32
/// encoder, held to the f32 tolerance with the tokens exact. On a kernel backend (`emu`, `cuda`;
/// bf16 activations) the encoder output and the FSQ values are held to the bf16 tolerance, and the
/// tokens digit by digit: every FSQ digit whose reference value is clear of a rounding edge (±0.5)
/// by more than that tolerance's `abs` must be the reference's (a value closer may round the other
/// way); the share of identical tokens is printed. The log-mel is computed on the host (f32).
pub fn run(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let cfg = config(&case.dir)?;
    let ck = Checkpoint::open(&case.dir.join("s3gen.safetensors")).map_err(err)?;
    let dev = super::t3::device(backend)?;
    let tok = S3Tokenizer::load_on(&ck, &cfg, &dev).map_err(err)?;
    let on_host = tok.encoder_backend() == BackendKind::Cpu;
    let f32_tol = case.meta.tolerance.f32;
    let enc_tol = if on_host { f32_tol } else { tol };
    let wav = case.input("wav_16k")?.f32s();
    let max_len = case.meta.params.get("max_len").and_then(|v| v.as_u64()).ok_or("params.max_len missing")? as usize;

    let mel = tok.log_mel(&wav).map_err(err)?;
    let hidden = tok.encode(&mel).map_err(err)?;
    let d = cfg.tokenizer_n_state;
    let t_tok = hidden.len() / d;
    let pre = tok.fsq_pre_round(&hidden);
    let tokens = tok.tokenize(&wav, None).map_err(err)?;
    let tokens_ml = tok.tokenize(&wav, Some(max_len)).map_err(err)?;

    let mut reports = vec![
        compare_tensor(case, "log_mel", &f64s(&mel.data), &[1, mel.data.len() / mel.frames.max(1), mel.frames], f32_tol),
        compare_tensor(case, "encoder_out", &f64s(&hidden), &[1, t_tok, d], enc_tol),
        compare_tensor(case, "fsq_pre_round", &f64s(&pre), &[1, t_tok, FSQ_DIMS], enc_tol),
    ];
    if on_host {
        reports.push(compare_tensor(case, "tokens", &ids(&tokens), &[1, tokens.len()], enc_tol));
        reports.push(compare_tensor(case, "tokens_max_len", &ids(&tokens_ml), &[1, tokens_ml.len()], enc_tol));
    } else {
        reports.push(clear_digits(case, &pre, enc_tol.abs));
        for (name, got) in [("tokens", &tokens), ("tokens_max_len", &tokens_ml)] {
            let want = &case.expected[name].data;
            let (same, n) = agreement(got, want);
            println!("    {} {backend}: {name}: {same}/{n} identical", case.name);
            if got.len() != want.len() {
                reports.push(TensorReport {
                    name: name.into(),
                    compare: Compare::Exact,
                    max_abs: f64::INFINITY,
                    max_rel: f64::INFINITY,
                    rel_l2: f64::INFINITY,
                    ok: false,
                    detail: format!("{} tokens, expected {}", got.len(), want.len()),
                });
            }
        }
    }
    Ok(if reports.iter().all(|r| r.ok) { Outcome::Passed(reports) } else { Outcome::Failed("mismatch".into(), reports) })
}

/// The FSQ digits of `pre` against the reference's `fsq_pre_round` where its values are clear of a
/// rounding edge by more than `margin` ([`digit_agreement`]); a report named `fsq_digits` that fails
/// on the first that differs (or on too few such digits to judge).
fn clear_digits(case: &Case, pre: &[f32], margin: f64) -> TensorReport {
    let want = &case.expected["fsq_pre_round"].data;
    let a = digit_agreement(pre, want, margin);
    let enough = 2 * a.clear >= want.len();
    let detail = match (a.first_mismatch, enough) {
        (Some(i), _) => format!("token {} digit {}: {} against {}", i / FSQ_DIMS, i % FSQ_DIMS, pre[i], want[i]),
        (None, false) => format!("only {} of {} digits clear of a rounding edge by {margin}", a.clear, want.len()),
        (None, true) => format!("{} of {} digits clear of a rounding edge by {margin}, all equal", a.clear, want.len()),
    };
    TensorReport {
        name: "fsq_digits".into(),
        compare: Compare::Exact,
        max_abs: 0.0,
        max_rel: 0.0,
        rel_l2: 0.0,
        ok: a.first_mismatch.is_none() && enough && pre.len() == want.len(),
        detail,
    }
}
