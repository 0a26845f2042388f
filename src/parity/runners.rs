//! Case kinds and the engine part each one exercises.
use tts_engine::text::{TextTokenizer, punc_norm};

use super::{
    Case, Outcome, Tolerance, campplus, clone, compare_tensor, cond_mel, generate, s3_tokenizer, s3gen, t3, voice_encoder,
};

/// Runs a case on a backend ("cpu", "emu", "cuda" or "host") with that backend's tolerance.
pub type Runner = fn(&Case, &str, Tolerance) -> Result<Outcome, String>;

/// One case kind: the engine part it needs, whether that part exists, and how to run it.
pub struct Kind {
    pub name: &'static str,
    /// The engine part, named for the "pending" report.
    pub part: &'static str,
    /// Runs the case on `backend` ("cpu", "emu" or "cuda"); None while the part does not exist.
    pub run: Option<Runner>,
    /// Whether the engine part declares itself implemented. A kind whose part is implemented but has
    /// no runner fails instead of staying pending.
    pub implemented: bool,
    /// Backend-independent (runs once, on the host).
    pub host_only: bool,
}

pub static KINDS: &[Kind] = &[
    Kind { name: "text", part: "text front-end", run: Some(run_text), implemented: true, host_only: true },
    Kind {
        name: "t3_cond_enc",
        part: "T3 conditioning encoder",
        run: Some(t3::run_cond_enc),
        implemented: true,
        host_only: false,
    },
    Kind { name: "t3_prefill", part: "T3 prefill", run: Some(t3::run_prefill), implemented: true, host_only: false },
    Kind { name: "t3_decode_teacher_forced", part: "T3 decode", run: Some(t3::run_decode), implemented: true, host_only: false },
    Kind { name: "t3_sampler", part: "T3 sampler", run: Some(t3::run_sampler), implemented: true, host_only: false },
    Kind {
        name: "s3gen_encoder",
        part: "S3Gen encoder",
        run: Some(s3gen::run_encoder),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
    Kind {
        name: "s3gen_estimator",
        part: "S3Gen CFM estimator",
        run: Some(s3gen::run_estimator),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
    Kind {
        name: "s3gen_cfm",
        part: "S3Gen CFM solver",
        run: Some(s3gen::run_cfm),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
    Kind {
        name: "hift",
        part: "HiFT vocoder",
        run: Some(s3gen::run_hift),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
    Kind {
        name: "s3gen_wav",
        part: "S3Gen end to end",
        run: Some(s3gen::run_wav),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
    Kind {
        name: "voice_encoder",
        part: "VoiceEncoder (voice cloning)",
        run: Some(voice_encoder::run),
        implemented: true,
        host_only: true,
    },
    Kind {
        name: "s3_tokenizer",
        part: "S3Tokenizer (voice cloning)",
        run: Some(s3_tokenizer::run),
        implemented: true,
        host_only: false,
    },
    Kind {
        name: "campplus",
        part: "CAMPPlus x-vector (voice cloning)",
        run: Some(campplus::run),
        implemented: true,
        host_only: false,
    },
    Kind {
        name: "cond_mel",
        part: "S3Gen mel features (voice cloning)",
        run: Some(cond_mel::run),
        implemented: true,
        host_only: true,
    },
    Kind {
        name: "prepare_conditionals",
        part: "voice cloning end to end (audio file -> conditionals)",
        run: Some(clone::run_prepare_conditionals),
        implemented: true,
        host_only: true,
    },
    Kind {
        name: "voice_conversion",
        part: "voice conversion (source speech -> S3 tokens -> S3Gen in the target voice)",
        run: Some(clone::run_voice_conversion),
        implemented: true,
        host_only: false,
    },
    Kind {
        name: "tts_generate",
        part: "text to waveform end to end (ChatterboxTTS.generate: text front-end, T3, post-processing, S3Gen)",
        run: Some(generate::run_tts_generate),
        implemented: tts_s3gen::IMPLEMENTED,
        host_only: false,
    },
];

fn code_points(s: &str) -> Vec<f64> {
    s.chars().map(|c| c as u32 as f64).collect()
}

/// `text`: punc_norm and token ids for each `text_NN` input.
fn run_text(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let tok = TextTokenizer::from_file(&case.dir.join("tokenizer.json")).map_err(|e| e.to_string())?;
    let mut reports = Vec::new();
    let mut names: Vec<&String> = case.meta.tensors.keys().filter(|k| k.starts_with("normalized_")).collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("{}: no normalized_NN tensors", case.name));
    }
    for n in names {
        let idx = &n["normalized_".len()..];
        let input = case.input(&format!("text_{idx}"))?;
        let text: String = input
            .i64s()
            .iter()
            .map(|&c| char::from_u32(c as u32).ok_or_else(|| format!("text_{idx}: invalid code point {c}")))
            .collect::<Result<_, _>>()?;
        let norm = punc_norm(&text);
        let cps = code_points(&norm);
        reports.push(compare_tensor(case, n, &cps, &[cps.len()], tol));
        let ids: Vec<f64> = tok.encode(&norm).map_err(|e| e.to_string())?.iter().map(|&i| i as f64).collect();
        let tn = format!("token_ids_{idx}");
        if !case.meta.tensors.contains_key(&tn) {
            return Err(format!("{}: {tn} missing from case.json", case.name));
        }
        reports.push(compare_tensor(case, &tn, &ids, &[ids.len()], tol));
    }
    Ok(if reports.iter().all(|r| r.ok) { Outcome::Passed(reports) } else { Outcome::Failed("mismatch".into(), reports) })
}
