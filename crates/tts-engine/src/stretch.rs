//! Time-stretching without a change of pitch (WSOLA: waveform-similarity overlap-add), for the
//! server's `speed` (OpenAI's: 0.25 to 4.0, the speech that much faster).
//!
//! Output frames of [`FRAME`] samples (40 ms at 24 kHz) are Hann-windowed and overlap-added every
//! [`FRAME`]/2 samples. Output frame `k` is taken from the input near `k · FRAME/2 · speed`, at the
//! offset within ±[`TOLERANCE`] samples whose waveform best continues the previous frame (the
//! largest normalised cross-correlation with the input that followed the previous frame), so that
//! periods line up and no phasing is heard. The Hann windows at half a frame sum to one: a
//! stationary signal keeps its level. `speed == 1` returns the input unchanged.
use crate::{Error, Result};

/// Samples per frame (40 ms at 24 kHz).
pub const FRAME: usize = 960;
/// How far (samples, each way) a frame may move from its nominal input position to line up.
pub const TOLERANCE: usize = 240;
/// OpenAI's range of `speed`.
pub const MIN_SPEED: f64 = 0.25;
pub const MAX_SPEED: f64 = 4.0;

/// Checks `speed` against [`MIN_SPEED`]..=[`MAX_SPEED`] (an error naming `speed`).
pub fn check_speed(speed: f64) -> Result<()> {
    if speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed) {
        return Ok(());
    }
    Err(Error::Setting { field: "speed", value: speed.to_string(), expected: format!("{MIN_SPEED} to {MAX_SPEED}") })
}

/// `x` played `speed` times faster at the same pitch: about `x.len() / speed` samples.
pub fn time_stretch(x: &[f32], speed: f64) -> Result<Vec<f32>> {
    check_speed(speed)?;
    if speed == 1.0 || x.is_empty() {
        return Ok(x.to_vec());
    }
    let hop = FRAME / 2;
    let out_len = (x.len() as f64 / speed).round() as usize;
    let window: Vec<f32> =
        (0..FRAME).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / FRAME as f64).cos() as f32).collect();
    let at = |i: isize| -> f32 { if i >= 0 && (i as usize) < x.len() { x[i as usize] } else { 0.0 } };
    // the output, with one frame of room past its end
    let mut y = vec![0f32; out_len + FRAME];
    let frames = out_len.div_ceil(hop) + 1;
    let mut prev: Option<isize> = None;
    for k in 0..frames {
        let nominal = (k as f64 * hop as f64 * speed).round() as isize;
        let start = match prev {
            None => nominal,
            Some(p) => {
                // the input that naturally follows the previous frame's first half-frame
                let natural = p + hop as isize;
                let mut best = (f64::NEG_INFINITY, nominal);
                for d in -(TOLERANCE as isize)..=(TOLERANCE as isize) {
                    let c = nominal + d;
                    let (mut dot, mut energy) = (0f64, 0f64);
                    // correlate over the overlapping half frame, every second sample (enough to
                    // find the period, half the work)
                    for i in (0..hop as isize).step_by(2) {
                        let a = at(c + i) as f64;
                        dot += a * at(natural + i) as f64;
                        energy += a * a;
                    }
                    let score = if energy > 0.0 { dot / energy.sqrt() } else { 0.0 };
                    if score > best.0 {
                        best = (score, c);
                    }
                }
                best.1
            }
        };
        let base = k * hop;
        for (i, w) in window.iter().enumerate() {
            if let Some(o) = y.get_mut(base + i) {
                *o += w * at(start + i as isize);
            }
        }
        prev = Some(start);
    }
    // the first half frame had one window, not two: its level is restored
    for (i, v) in y.iter_mut().take(hop).enumerate() {
        let w = window[i];
        if w > 1e-3 {
            *v /= w;
        }
    }
    y.truncate(out_len);
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    /// A tone keeps its pitch (zero crossings per second) and level; the length scales by 1/speed.
    #[test]
    fn the_length_changes_and_the_pitch_and_level_do_not() {
        let (mut rng, seed) = Rng::fresh();
        for _ in 0..4 {
            let f0 = rng.uniform(90.0, 300.0);
            let speed = rng.uniform(MIN_SPEED, MAX_SPEED);
            let n = 24000 * 2 + rng.below(5000);
            let x: Vec<f32> =
                (0..n).map(|i| (0.3 * (2.0 * std::f64::consts::PI * f0 * i as f64 / 24000.0).sin()) as f32).collect();
            let y = time_stretch(&x, speed).unwrap();
            let want = (n as f64 / speed).round() as usize;
            assert_eq!(y.len(), want, "seed {seed}: speed {speed}");
            // away from the ends (the last frames fade out)
            let mid = &y[FRAME..y.len().saturating_sub(2 * FRAME)];
            let hz = zero_crossings(mid) as f64 / 2.0 / (mid.len() as f64 / 24000.0);
            assert!((hz / f0 - 1.0).abs() < 0.03, "seed {seed}: speed {speed}: {f0} Hz became {hz} Hz");
            let level = rms(mid) / rms(&x);
            assert!((0.85..1.15).contains(&level), "seed {seed}: speed {speed}: level ×{level}");
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn speed_one_is_the_identity_and_bad_speeds_are_named() {
        let (mut rng, _) = Rng::fresh();
        let x: Vec<f32> = (0..3000).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        assert_eq!(time_stretch(&x, 1.0).unwrap(), x);
        assert!(time_stretch(&[], 2.0).unwrap().is_empty());
        for bad in [0.0, 0.2, 4.01, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(time_stretch(&x, bad), Err(Error::Setting { field: "speed", .. })), "{bad}");
        }
        // shorter than a frame
        assert_eq!(time_stretch(&x[..100], 2.0).unwrap().len(), 50);
    }
}
