//! `cond_mel` cases: S3Gen's prompt log-mel of a 24 kHz waveform and the two resamplers of voice
//! cloning (torchaudio's, ported; librosa's soxr_hq, through libsoxr), host-only (tts-voice).
use tts_voice::cond_mel::{N_MELS, prompt_feat};
use tts_voice::resample::{Resampler, resample};

use super::{Case, Outcome, Tolerance, compare_tensor};

pub(crate) fn run(case: &Case, _backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let wav = case.input("wav_24k")?;
    if wav.shape.first() != Some(&1) {
        return Err(format!("{}: wav_24k has shape {:?}, expected [1, L]", case.name, wav.shape));
    }
    let wav = wav.f32s();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let mut reports = Vec::new();
    for name in case.meta.tensors.keys() {
        let (got, shape) = match name.as_str() {
            "prompt_feat" => {
                let (feat, frames) = prompt_feat(&wav).map_err(|e| e.to_string())?;
                (feat, vec![1, frames, N_MELS])
            }
            "wav_16k_torchaudio" | "wav_16k_librosa" => {
                let how = if name == "wav_16k_torchaudio" { Resampler::Torchaudio } else { Resampler::Soxr };
                let y = resample(&wav, 24_000, 16_000, how).map_err(|e| e.to_string())?;
                let n = y.len();
                (y, vec![1, n])
            }
            other => return Err(format!("{}: cond_mel has no tensor {other:?}", case.name)),
        };
        reports.push(compare_tensor(case, name, &wide(&got), &shape, tol));
    }
    Ok(if reports.iter().all(|r| r.ok) { Outcome::Passed(reports) } else { Outcome::Failed("mismatch".into(), reports) })
}
