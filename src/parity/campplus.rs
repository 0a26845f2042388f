//! Runner of the `campplus` case kind: CAMPPlus's fbank and x-vector of a 16 kHz waveform
//! (`tts_voice::campplus`), the network on the run's backend.
use std::path::Path;

use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::config_json;
use tts_voice::campplus::{CampPlus, CampPlusConfig, fbank};

use super::t3::Runner;
use super::{Case, Outcome, Tolerance, compare_tensor};

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

/// `campplus`: `fbank` (1, T, 80) and `xvector` (1, spk_embed_dim) of `wav_16k` (1, L). The fbank
/// is computed on the host. The network runs on `backend`: on the Cpu backends (`cpu`, `cpu-bf16`)
/// the host's network, on a kernel backend (`emu`, `cuda`) the device one; both in f32, so both
/// tensors are held to the case's f32 tolerance on every backend.
pub(crate) fn run(case: &Case, backend: &str, _tol: Tolerance) -> Result<Outcome, String> {
    let cfg = config(&case.dir)?;
    let ck = Checkpoint::open(&case.dir.join("s3gen.safetensors")).map_err(err)?;
    let model = CampPlus::load_on(&ck, &cfg, &super::t3::device(backend)?).map_err(err)?;
    let tol = case.meta.tolerance.f32;
    let wav_in = case.input("wav_16k")?;
    if wav_in.shape.len() != 2 || wav_in.shape[0] != 1 {
        return Err(format!("{}: wav_16k has shape {:?}, expected (1, L)", case.name, wav_in.shape));
    }
    let wav = wav_in.f32s();
    let (feats, frames) = fbank(&wav).map_err(err)?;
    let x = model.embed(&wav).map_err(err)?;
    let reports = vec![
        compare_tensor(case, "fbank", &feats.iter().map(|&v| v as f64).collect::<Vec<_>>(), &[1, frames, 80], tol),
        compare_tensor(case, "xvector", &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &[1, x.len()], tol),
    ];
    Runner { case, tol, reports }.finish()
}
