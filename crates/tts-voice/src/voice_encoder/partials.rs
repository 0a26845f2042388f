//! Where an utterance's mel is cut into overlapping partial windows (`voice_encoder.py`:
//! `get_frame_step`, `get_num_wins`, and the slicing of `VoiceEncoder.inference`).
//!
//! `embeds_from_wavs` passes `rate=1.3` and `min_coverage=0.8`: windows of `partial_frames` (160)
//! mel frames every `round((16000 / rate) / partial_frames)` = 77 frames. (The reference divides
//! by the window length where a hop would make sense; 77 is what it computes, so 77 it is.) The
//! mel is zero-padded or truncated to `partial_frames + step·(n − 1)` frames, so an utterance
//! shorter than one window still gets one, padded with silence (as the reference does).
use crate::{Error, Result};

/// `embeds_from_wavs`'s default rate: partial windows per second.
pub const RATE: f64 = 1.3;
/// `inference`'s default `min_coverage`.
pub const MIN_COVERAGE: f64 = 0.8;

/// The partial windows of one utterance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partials {
    /// Number of windows (≥ 1).
    pub count: usize,
    /// Mel frames from one window's start to the next's.
    pub step: usize,
    /// Frames per window.
    pub frames: usize,
    /// Mel frames after padding or truncation: `frames + step·(count − 1)`.
    pub target_len: usize,
}

impl Partials {
    /// First mel frame of window `i`.
    pub fn start(&self, i: usize) -> usize {
        i * self.step
    }
}

/// `get_frame_step(overlap, rate, hp)` with a rate: `int(np.round((sample_rate / rate) /
/// partial_frames))` (numpy rounds half to even). Must be in `1..=partial_frames`.
pub fn frame_step(sample_rate: usize, rate: f64, partial_frames: usize) -> Result<usize> {
    let step = ((sample_rate as f64 / rate) / partial_frames as f64).round_ties_even();
    if !(step >= 1.0 && step <= partial_frames as f64) {
        return Err(Error::Input {
            field: "rate",
            detail: format!("{rate} partials per second give a step of {step} frames, outside 1..={partial_frames}"),
        });
    }
    Ok(step as usize)
}

/// `get_num_wins(n_frames, step, min_coverage, hp)`: the windows of an `n_frames`-frame mel. A
/// last window is added when it covers at least `min_coverage` of real frames (the comparison in
/// f64 as Python's).
pub fn partial_windows(n_frames: usize, step: usize, partial_frames: usize, min_coverage: f64) -> Result<Partials> {
    if n_frames == 0 {
        return Err(Error::Input { field: "n_frames", detail: "an empty mel has no partial windows".into() });
    }
    if step == 0 || step > partial_frames {
        return Err(Error::Input { field: "step", detail: format!("{step} is outside 1..={partial_frames}") });
    }
    let covered = (n_frames + step).saturating_sub(partial_frames);
    let (mut count, remainder) = (covered / step, covered % step);
    if count == 0 || (remainder + (partial_frames - step)) as f64 / partial_frames as f64 >= min_coverage {
        count += 1;
    }
    Ok(Partials { count, step, frames: partial_frames, target_len: partial_frames + step * (count - 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's formula, transcribed with signed arithmetic as in Python.
    fn reference(n_frames: i64, step: i64, win: i64, min_coverage: f64) -> (i64, i64) {
        let x = (n_frames - win + step).max(0);
        let (mut n, r) = (x.div_euclid(step), x.rem_euclid(step));
        if n == 0 || (r + (win - step)) as f64 / win as f64 >= min_coverage {
            n += 1;
        }
        (n, win + step * (n - 1))
    }

    #[test]
    fn window_counts_and_positions_follow_the_reference() {
        assert_eq!(frame_step(16000, RATE, 160).unwrap(), 77);
        // the fixture: 26624 trimmed samples → 167 frames → one window, truncated to 160
        let p = partial_windows(167, 77, 160, MIN_COVERAGE).unwrap();
        assert_eq!(p, Partials { count: 1, step: 77, frames: 160, target_len: 160 });
        // the second window appears once its remainder r satisfies (r + 83)/160 ≥ 0.8, r ≥ 45
        assert_eq!(partial_windows(160 + 44, 77, 160, MIN_COVERAGE).unwrap().count, 1);
        assert_eq!(partial_windows(160 + 45, 77, 160, MIN_COVERAGE).unwrap().count, 2);
        for n in (1..3000).chain([1, 2, 83, 159, 160, 161, 236, 237, 238, 1001]) {
            for (step, win, cov) in [(77, 160, 0.8), (77, 160, 1.0), (13, 31, 0.5), (31, 31, 0.8), (1, 7, 0.8)] {
                let p = partial_windows(n, step, win, cov).unwrap();
                let (count, target) = reference(n as i64, step as i64, win as i64, cov);
                assert_eq!((p.count as i64, p.target_len as i64), (count, target), "n {n} step {step} win {win}");
                assert_eq!(p.start(p.count - 1) + win, p.target_len);
                // windows never start past the real frames
                assert!(p.start(p.count - 1) < n.max(1), "n {n}: last window starts at {}", p.start(p.count - 1));
            }
        }
        assert!(partial_windows(0, 77, 160, 0.8).is_err());
        assert!(partial_windows(10, 0, 160, 0.8).is_err());
        assert!(frame_step(16000, 0.01, 160).is_err());
        assert!(frame_step(16000, f64::NAN, 160).is_err());
    }
}
