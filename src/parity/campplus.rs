//! Runner of the `campplus` case kind: CAMPPlus's fbank and x-vector of a 16 kHz waveform
//! (host-only: `tts_voice::campplus`).
use std::path::Path;

use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::config_json;
use tts_voice::campplus::{CampPlus, CampPlusConfig, fbank};

use super::t3::Runner;
use super::{Case, Outcome, Tolerance};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The case's config (its `config.json`, the defaults without one).
fn config(dir: &Path) -> Result<CampPlusConfig, String> {
    let path = dir.join("config.json");
    match config_json::read(&path).map_err(|e| format!("{}: {}", path.display(), e.detail))? {
        None => Ok(CampPlusConfig::default()),
        Some(v) => CampPlusConfig::from_json(&path, &v).map_err(err),
    }
}

pub(crate) fn run(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let cfg = config(&case.dir)?;
    let ck = Checkpoint::open(&case.dir.join("s3gen.safetensors")).map_err(err)?;
    let model = CampPlus::load(&ck, &cfg).map_err(err)?;
    let wav_in = case.input("wav_16k")?;
    if wav_in.shape.len() != 2 || wav_in.shape[0] != 1 {
        return Err(format!("{}: wav_16k has shape {:?}, expected (1, L)", case.name, wav_in.shape));
    }
    let wav = wav_in.f32s();
    let mut r = Runner { case, tol, reports: Vec::new() };
    let (feats, frames) = fbank(&wav).map_err(err)?;
    r.check("fbank", &feats.iter().map(|&v| v as f64).collect::<Vec<_>>(), &[1, frames, 80]);
    let x = model.embed(&wav).map_err(err)?;
    r.check("xvector", &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &[1, x.len()]);
    r.finish()
}
