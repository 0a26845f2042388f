//! `librosa.effects.trim(y, top_db)` of librosa 0.11 with its defaults (`ref=np.max`,
//! `frame_length=2048`, `hop_length=512`): the leading and trailing frames whose RMS is `top_db`
//! below the loudest frame's are cut off.
//!
//! librosa computes `feature.rms(y)` with `center=True` and `pad_mode="constant"` (1024 zeros on
//! each side, `1 + len/512` frames, frame `i` covering samples `[512·i − 1024, 512·i + 1024)`), the
//! mean of float32 squares, `sqrt`; then `amplitude_to_db(rms, ref=max)` =
//! `10·log10(max(1e-10, rms²)) − 10·log10(max(1e-10, max rms²))`, and keeps the frames above
//! `−top_db`. The kept range is `[512·first, min(len, 512·(last + 1)))` in samples.
//!
//! Here each frame's sum of squares runs in f64 over the float32 squares (numpy sums them in
//! float32), then rounds to float32 like librosa's `rms`: the two agree to about 1e-7 relative, so
//! a frame can only be judged differently if its level lies within ~1e-6 dB of the threshold.
use std::ops::Range;

use crate::{Error, Result};

/// librosa's `trim` frame length (samples).
pub const TRIM_FRAME_LENGTH: usize = 2048;
/// librosa's `trim` hop (samples).
pub const TRIM_HOP: usize = 512;
/// `amplitude_to_db`'s `amin` is 1e-5, squared to a power floor of 1e-10.
const POWER_FLOOR: f64 = 1e-10;

/// The per-frame mean square `rms²` of `wav` as librosa's `feature.rms` computes it (centred,
/// zero-padded frames of [`TRIM_FRAME_LENGTH`] every [`TRIM_HOP`]), rounded to float32 as there:
/// `[1 + len / 512]`.
pub fn frame_powers(wav: &[f32]) -> Vec<f32> {
    let half = TRIM_FRAME_LENGTH as isize / 2;
    (0..1 + wav.len() / TRIM_HOP)
        .map(|f| {
            let centre = (f * TRIM_HOP) as isize;
            let lo = (centre - half).max(0) as usize;
            let hi = ((centre + half) as usize).min(wav.len());
            let sum: f64 = wav[lo..hi].iter().map(|&x| (x * x) as f64).sum();
            let rms = ((sum / TRIM_FRAME_LENGTH as f64) as f32).sqrt();
            rms * rms
        })
        .collect()
}

/// The sample range of `wav` that `librosa.effects.trim(wav, top_db=top_db)` keeps
/// (`y[start:end]`).
///
/// Errors ([`Error::Audio`], `what` names the audio): empty audio, and audio whose loudest frame is
/// at or below librosa's power floor (RMS ≤ 1e-5, −100 dBFS): librosa keeps all of such a
/// silent recording, which carries no voice to embed.
pub fn trim(wav: &[f32], top_db: f64, what: &str) -> Result<Range<usize>> {
    if wav.is_empty() {
        return Err(Error::audio(what, "no samples"));
    }
    if !(top_db.is_finite() && top_db > 0.0) {
        return Err(Error::Input { field: "top_db", detail: format!("{top_db} is not a positive number of decibels") });
    }
    let powers = frame_powers(wav);
    let loudest = powers.iter().fold(0f32, |m, &p| m.max(p)) as f64;
    if loudest <= POWER_FLOOR {
        return Err(Error::audio(
            what,
            format!(
                "silent: its loudest {TRIM_FRAME_LENGTH}-sample frame has an RMS of {:.3e} (at most 1e-5, -100 dBFS)",
                loudest.sqrt()
            ),
        ));
    }
    let reference_db = 10.0 * loudest.log10();
    let loud = |p: &f32| 10.0 * (p.max(POWER_FLOOR as f32) as f64).log10() - reference_db > -top_db;
    // the loudest frame is always kept (0 dB > −top_db)
    let first = powers.iter().position(loud).unwrap_or(0);
    let last = powers.iter().rposition(loud).unwrap_or(powers.len() - 1);
    Ok(first * TRIM_HOP..wav.len().min((last + 1) * TRIM_HOP))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tts_kernels::testing::fresh_seed;

    use super::*;

    /// Frames by a direct transcription of librosa: explicit zero padding, then each frame.
    fn naive_keep(wav: &[f32], top_db: f64) -> Range<usize> {
        let mut padded = vec![0f32; TRIM_FRAME_LENGTH / 2];
        padded.extend_from_slice(wav);
        padded.extend(std::iter::repeat_n(0f32, TRIM_FRAME_LENGTH / 2));
        let n = 1 + (padded.len() - TRIM_FRAME_LENGTH) / TRIM_HOP;
        let db: Vec<f64> = (0..n)
            .map(|f| {
                let ms: f64 =
                    padded[f * TRIM_HOP..f * TRIM_HOP + TRIM_FRAME_LENGTH].iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
                        / TRIM_FRAME_LENGTH as f64;
                10.0 * ms.max(1e-10).log10()
            })
            .collect();
        let top = db.iter().cloned().fold(f64::MIN, f64::max);
        let keep: Vec<usize> = (0..n).filter(|&i| db[i] - top > -top_db).collect();
        keep[0] * TRIM_HOP..wav.len().min((keep[keep.len() - 1] + 1) * TRIM_HOP)
    }

    #[test]
    fn trim_cuts_known_silent_edges() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..20 {
            // silence (or a faint hiss 40 dB down), a loud burst, silence again; odd lengths
            let lead = rng.random_range(0..9000);
            let body = rng.random_range(300..7000);
            let tail = rng.random_range(0..9000);
            let hiss = if rng.random_bool(0.5) { 0.0 } else { 0.005 };
            let mut wav: Vec<f32> = (0..lead + body + tail).map(|_| hiss * rng.random_range(-1.0f32..1.0)).collect();
            for x in &mut wav[lead..lead + body] {
                *x = 0.5 * rng.random_range(-1.0f32..1.0);
            }
            let r = trim(&wav, 20.0, "audio").unwrap();
            assert_eq!(r, naive_keep(&wav, 20.0), "lead {lead} body {body} tail {tail} hiss {hiss}");
            // the kept range covers the burst and is cut on the 512-sample grid, at most a frame's
            // reach (1024 + 512 samples) beyond it
            assert!(r.start <= lead && r.end >= lead + body, "{r:?} lead {lead} body {body}");
            assert!(r.start.is_multiple_of(TRIM_HOP));
            assert!(r.end == wav.len() || r.end.is_multiple_of(TRIM_HOP));
            assert!(lead - r.start <= TRIM_FRAME_LENGTH / 2 + TRIM_HOP, "{r:?} lead {lead}");
            assert!(r.end - (lead + body) <= TRIM_FRAME_LENGTH / 2 + TRIM_HOP, "{r:?} end {}", lead + body);
        }
    }

    #[test]
    fn silent_or_empty_audio_is_an_error() {
        assert!(matches!(trim(&[], 20.0, "audio"), Err(Error::Audio { .. })));
        let e = trim(&[0.0; 5000], 20.0, "ref.wav").unwrap_err();
        assert!(matches!(&e, Error::Audio { what, detail } if what == "ref.wav" && detail.contains("silent")), "{e}");
        assert!(trim(&[1e-6; 5000], 20.0, "audio").is_err());
        // a uniform signal above the floor is kept whole, as librosa does
        assert_eq!(trim(&[0.1; 5000], 20.0, "audio").unwrap(), 0..5000);
        assert!(matches!(trim(&[0.1; 10], f64::NAN, "audio"), Err(Error::Input { field: "top_db", .. })));
    }
}
