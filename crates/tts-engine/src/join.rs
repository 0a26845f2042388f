//! Joining the segments' audio into one waveform, with pauses and without clicks.
//!
//! A long text is spoken as segments (`crate::segment`), each its own waveform. S3Gen fades each
//! waveform in at its start, but nothing fades its end: a segment may stop on a sample far from
//! zero, and butting the next one against it (or against silence) makes a step, heard as a click.
//! [`join`] puts the parts one after another with the pause after each one (seconds of silence)
//! and smooths every join over `crossfade_ms`:
//!
//! - **a pause** (more than zero samples): the end of the part before fades out and the start of the
//!   part after fades in, each over `crossfade_ms`, with the silence between them;
//! - **no pause**: the two parts overlap by `crossfade_ms` and are mixed with complementary gains
//!   (the output is shorter by the overlap).
//!
//! The gains are raised-cosine (Hann) halves, `g(i) = (1 + cos(π (i + 1) / (L + 1))) / 2` for
//! sample `i` of an `L`-sample fade-out and `1 − g(i)` for the fade-in, so the first and last
//! samples of a fade are already slightly faded and a fade's slope is zero at both ends.
//!
//! **What a join's steps are.** A step (the difference of two neighbouring samples) inside a fade
//! is the gains' mix of the signals' own steps, never larger than the largest of them, plus the
//! gain's change between the two samples (at most `π / (2 (L + 1))`) times the difference of the
//! two signals there. So a join steps at most `π · peak / (L + 1)` further than the parts do
//! inside (1.3% of the peak at 10 ms and 24 kHz), where butting them together can step by twice
//! the peak. Fading into or out of silence, a tone of `f` Hz steps no further than itself once
//! `L ≥ 2.22 · rate / (2π f)` (35 Hz and up at 10 ms): the gain falls slower than the tone turns.
//! A crossfade between two different signals cannot promise that exactly (two tones of the same
//! frequency and different phases make, for a moment, a tone whose phase turns faster), only the
//! bound above; the tests check both and that the joins click without the fades.
//!
//! **Why the overlap's gains sum to one (a "linear" crossfade) instead of their squares (equal
//! power):** no pause means the text was cut inside a clause (`segment::Pause::Word`), so the two
//! sides are the same voice going on, correlated rather than independent, and usually both near
//! silence (the model leaves some at its edges; S3Gen's output starts with 20 ms of it). Gains
//! summing to one keep a correlated signal's level, never produce a sample beyond the larger of the
//! two inputs (no clipping, no bump), and mix the two signals' steps without enlarging them (the
//! bound above); equal-power gains sum to up to √2, so they lift correlated audio and its steps by
//! up to 3 dB at the middle of the overlap. The price, a level dip of up to 3 dB for uncorrelated audio, lasts `crossfade_ms`
//! (10 ms by default): inaudible.
//!
//! A fade is at most half of each part it touches, so fades and overlaps never meet inside a part:
//! a part shorter than `2 × crossfade` gets shorter fades (a part of one sample gets none). The very
//! start of the first part and the very end of the last are left as they are (one part comes back
//! unchanged): a caller that needs them faded fades them itself.

/// The default fade and overlap length: 10 ms (240 samples at 24 kHz). A fade of a few samples is
/// a step again (the bound in the module documentation grows as `1 / L`), a long one eats into
/// speech (an overlap mixes two words); at 10 ms a fade into silence steps no further than any
/// tone above 35 Hz does by itself, and a crossfade at most 1.3% of the peak further.
pub const DEFAULT_CROSSFADE_MS: f32 = 10.0;

/// The longest pause [`join`] accepts after a part, in seconds: a guard against a pause computed
/// wrong (a minute of silence per part is already more than any text needs).
pub const MAX_PAUSE_SECONDS: f32 = 60.0;

/// Arguments [`join`] refuses.
#[derive(Clone, Debug, PartialEq)]
pub enum JoinError {
    /// The pause after part `index` is NaN, infinite, negative or above [`MAX_PAUSE_SECONDS`].
    Pause { index: usize, seconds: f32 },
    /// A sample rate of 0 Hz.
    SampleRate,
    /// A crossfade length that is NaN, infinite or negative.
    Crossfade { ms: f32 },
    /// The joined waveform (`samples` long) could not be allocated.
    OutOfMemory { samples: usize },
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Pause { index, seconds } => {
                write!(f, "the pause after audio part {index} is {seconds} s: must be between 0 and {MAX_PAUSE_SECONDS} s")
            }
            JoinError::SampleRate => write!(f, "a sample rate of 0 Hz: must be positive"),
            JoinError::Crossfade { ms } => write!(f, "a crossfade of {ms} ms: must be finite and not negative"),
            JoinError::OutOfMemory { samples } => write!(f, "out of memory for the joined audio ({samples} samples)"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Joins `parts` into one waveform: each part's samples (mono, at `sample_rate` Hz, any range,
/// usually −1..1; they are not checked), then the pause after it (seconds of silence, rounded to
/// whole samples), but the last part's pause, which is checked and not added. Joins are smoothed
/// over `crossfade_ms` milliseconds (rounded to whole samples; 0 turns smoothing off; see the
/// module documentation): a fade-out and a fade-in around a pause, an overlap of that length
/// where the pause is zero.
///
/// Empty parts contribute no samples, only their pause: the join is then between the non-empty
/// parts around them, over the sum of the pauses in between (a leading empty part with a pause
/// gives leading silence, and the first audio then fades in).
///
/// The output has `Σ len(part) + Σ silence − Σ overlap` samples. One part comes back unchanged;
/// no parts give no samples. Errors: [`JoinError`] for a pause or crossfade that is NaN, infinite
/// or negative, a pause above [`MAX_PAUSE_SECONDS`], a zero sample rate, or an output that cannot
/// be allocated; never a panic.
pub fn join(parts: &[(&[f32], f32)], sample_rate: u32, crossfade_ms: f32) -> Result<Vec<f32>, JoinError> {
    join_with_starts(parts, sample_rate, crossfade_ms).map(|(out, _)| out)
}

/// [`join`], with where each part's first sample landed in the output (for an overlapped part,
/// the start of the overlap; for an empty part, where it would have been).
pub fn join_with_starts(
    parts: &[(&[f32], f32)],
    sample_rate: u32,
    crossfade_ms: f32,
) -> Result<(Vec<f32>, Vec<usize>), JoinError> {
    if sample_rate == 0 {
        return Err(JoinError::SampleRate);
    }
    if !crossfade_ms.is_finite() || crossfade_ms < 0.0 {
        return Err(JoinError::Crossfade { ms: crossfade_ms });
    }
    for (index, &(_, seconds)) in parts.iter().enumerate() {
        if !(0.0..=MAX_PAUSE_SECONDS).contains(&seconds) {
            return Err(JoinError::Pause { index, seconds });
        }
    }
    let rate = f64::from(sample_rate);
    let fade = fade_samples(crossfade_ms, sample_rate);
    let silence_after = |k: usize| if k + 1 < parts.len() { (f64::from(parts[k].1) * rate).round() as usize } else { 0 };

    // the plan: for each non-empty part, the silence before it and the fade or overlap with the one before
    let mut total = 0usize;
    let mut silence = 0usize;
    let mut previous: Option<usize> = None; // length of the last non-empty part
    for (k, &(samples, _)) in parts.iter().enumerate() {
        if !samples.is_empty() {
            let overlap = match previous {
                Some(p) if silence == 0 => fade.min(p / 2).min(samples.len() / 2),
                _ => 0,
            };
            total = total.saturating_add(silence).saturating_add(samples.len() - overlap);
            previous = Some(samples.len());
            silence = 0;
        }
        silence = silence.saturating_add(silence_after(k));
    }
    total = total.saturating_add(silence);
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| JoinError::OutOfMemory { samples: total })?;

    let mut silence = 0usize;
    let mut previous: Option<usize> = None;
    let mut starts = Vec::with_capacity(parts.len());
    for (k, &(samples, _)) in parts.iter().enumerate() {
        if samples.is_empty() {
            starts.push(out.len() + silence);
        } else {
            match previous {
                Some(p) if silence == 0 => {
                    let overlap = fade.min(p / 2).min(samples.len() / 2);
                    let base = out.len() - overlap;
                    starts.push(base);
                    for (i, (o, &s)) in out[base..].iter_mut().zip(&samples[..overlap]).enumerate() {
                        let g = fade_out_gain(i, overlap);
                        *o = *o * g + s * (1.0 - g);
                    }
                    out.extend_from_slice(&samples[overlap..]);
                }
                _ => {
                    if let Some(p) = previous {
                        fade_out_tail(&mut out, fade.min(p / 2));
                    }
                    out.resize(out.len() + silence, 0.0);
                    let start = out.len();
                    starts.push(start);
                    out.extend_from_slice(samples);
                    if silence > 0 {
                        let n = fade.min(samples.len() / 2);
                        for (i, o) in out[start..start + n].iter_mut().enumerate() {
                            *o *= 1.0 - fade_out_gain(i, n);
                        }
                    }
                }
            }
            previous = Some(samples.len());
            silence = 0;
        }
        silence = silence.saturating_add(silence_after(k));
    }
    if silence > 0 {
        if let Some(p) = previous {
            fade_out_tail(&mut out, fade.min(p / 2));
        }
        out.resize(out.len() + silence, 0.0);
    }
    debug_assert_eq!(out.len(), total);
    Ok((out, starts))
}

/// `crossfade_ms` in whole samples at `sample_rate` (saturating).
pub(crate) fn fade_samples(crossfade_ms: f32, sample_rate: u32) -> usize {
    (f64::from(crossfade_ms) * f64::from(sample_rate) / 1000.0).round() as usize
}

/// The gain of sample `i` of an `n`-sample raised-cosine fade-out: from just under 1 down to just
/// above 0 (`1 − gain` is the matching fade-in).
pub(crate) fn fade_out_gain(i: usize, n: usize) -> f32 {
    let theta = std::f64::consts::PI * (i + 1) as f64 / (n + 1) as f64;
    (0.5 * (1.0 + theta.cos())) as f32
}

/// Fades out the last `n` samples of `out`.
fn fade_out_tail(out: &mut [f32], n: usize) {
    let base = out.len() - n;
    for (i, o) in out[base..].iter_mut().enumerate() {
        *o *= fade_out_gain(i, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 24_000;

    use crate::test_rng::Rng;

    /// The largest step between neighbouring samples of `x`.
    fn largest_step(x: &[f32]) -> f32 {
        x.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f32::max)
    }

    /// A random band-limited signal: 1–6 sinusoids of 150 Hz–4 kHz with random amplitudes and
    /// phases, cut so that it starts and ends on a sample of at least 80% of its peak (of random
    /// sign): the worst case for a join. Tones whose envelope reaches 80% of its peak only within
    /// less than half of the `seconds` are drawn again: the cut would be shorter than the two fades
    /// a join needs (a beat of several tones can peak once).
    fn random_signal(rng: &mut Rng, seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(RATE)) as usize;
        loop {
            let tones: Vec<(f64, f64, f64)> = (0..1 + rng.below(6))
                .map(|_| (rng.uniform(150.0, 4000.0), rng.uniform(0.1, 1.0), rng.uniform(0.0, std::f64::consts::TAU)))
                .collect();
            let x: Vec<f32> = (0..n)
                .map(|t| {
                    let t = t as f64 / f64::from(RATE);
                    tones.iter().map(|&(f, a, p)| a * (std::f64::consts::TAU * f * t + p).sin()).sum::<f64>() as f32
                })
                .collect();
            let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let big = |v: &f32| v.abs() >= 0.8 * peak;
            let first = x.iter().position(big).unwrap();
            let last = x.iter().rposition(big).unwrap();
            if last + 1 - first >= n / 2 {
                let scale = 0.95 / peak;
                return x[first..=last].iter().map(|v| v * scale).collect();
            }
        }
    }

    /// A pure tone of `freq` Hz starting at phase `phase`, `n` samples.
    fn tone(freq: f64, phase: f64, n: usize) -> Vec<f32> {
        (0..n).map(|t| (0.9 * (std::f64::consts::TAU * freq * t as f64 / f64::from(RATE) + phase).sin()) as f32).collect()
    }

    /// Where the joins of `parts` lie in the output of [`join`] (every part at least `2 × fade`
    /// long, no empty parts): `(first, last)` sample indices of the region from the start of the
    /// part before's fade to the end of the part after's fade, worked out here from the lengths.
    fn join_regions(parts: &[(&[f32], f32)], fade: usize) -> Vec<(usize, usize)> {
        let mut regions = Vec::new();
        let mut end = parts[0].0.len(); // where the part before ends in the output
        for w in parts.windows(2) {
            let silence = (f64::from(w[0].1) * f64::from(RATE)).round() as usize;
            let (first, after_start) = if silence == 0 { (end - fade, end - fade) } else { (end - fade, end + silence) };
            regions.push((first.saturating_sub(1), after_start + fade));
            end = after_start + w[1].0.len();
        }
        regions
    }

    /// The largest step at the joins of `join(parts)` and the largest step inside the parts.
    fn steps(parts: &[(&[f32], f32)], crossfade_ms: f32) -> (f32, f32) {
        let out = join(parts, RATE, crossfade_ms).unwrap();
        let fade = (f64::from(crossfade_ms) * f64::from(RATE) / 1000.0).round() as usize;
        let inside = parts.iter().map(|p| largest_step(p.0)).fold(0.0, f32::max);
        let at_joins =
            join_regions(parts, fade).iter().map(|&(a, b)| largest_step(&out[a..=b.min(out.len() - 1)])).fold(0.0, f32::max);
        (at_joins, inside)
    }

    /// The most a join may step beyond the parts' own largest step: a step inside a fade is the
    /// gains' mix of the two signals' steps (no larger than their largest) plus the change of the
    /// gain between two samples (at most `π / (2 (L + 1))` for an `L`-sample raised cosine) times
    /// the difference of the two signals (at most twice their peak).
    fn fade_allowance(parts: &[(&[f32], f32)], crossfade_ms: f32) -> f32 {
        let fade = (f64::from(crossfade_ms) * f64::from(RATE) / 1000.0).round();
        let peak = parts.iter().flat_map(|p| p.0.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
        (std::f64::consts::PI / (fade + 1.0)) as f32 * peak
    }

    #[test]
    fn random_signals_ending_on_large_values_join_without_clicks() {
        let (mut rng, seed) = Rng::fresh();
        eprintln!("seed {seed}");
        let mut worst = 0.0f32; // the largest excess over the parts' own steps, relative to the allowance
        let mut clicks = 0;
        for round in 0..200 {
            let signals: Vec<Vec<f32>> = (0..2 + rng.below(4))
                .map(|_| {
                    let seconds = rng.uniform(0.05, 0.3);
                    random_signal(&mut rng, seconds)
                })
                .collect();
            let pauses: Vec<f32> = signals.iter().map(|_| [0.0, 0.0, 0.12, 0.3, 0.7][rng.below(5)]).collect();
            let parts: Vec<(&[f32], f32)> = signals.iter().map(|s| s.as_slice()).zip(pauses).collect();
            let (at_joins, inside) = steps(&parts, DEFAULT_CROSSFADE_MS);
            let allowance = fade_allowance(&parts, DEFAULT_CROSSFADE_MS);
            assert!(
                at_joins <= inside + allowance,
                "seed {seed}, round {round}: a join steps {at_joins}, the parts {inside} (+{allowance} allowed)"
            );
            worst = worst.max((at_joins - inside) / allowance);
            // and the test can fail: without fades, ends far apart step further than that
            let hard_step = |w: &[(&[f32], f32)]| {
                let (end, start) = (w[0].0[w[0].0.len() - 1], w[1].0[0]);
                if w[0].1 == 0.0 { (end - start).abs() } else { end.abs().max(start.abs()) }
            };
            if parts.windows(2).any(|w| hard_step(w) > inside + allowance) {
                let (hard, _) = steps(&parts, 0.0);
                assert!(hard > inside + allowance, "seed {seed}, round {round}: no click without fades ({hard} vs {inside})");
                clicks += 1;
            }
        }
        assert!(clicks > 50, "seed {seed}: only {clicks} rounds would click without fades");
        println!("random signals: the joins stepped at most {worst:.3} of the allowance beyond the parts' steps");
    }

    #[test]
    fn pure_tones_fade_into_silence_stepping_no_further_than_themselves() {
        let (mut rng, seed) = Rng::fresh();
        for freq in [40.0, 80.0, 110.0, 220.0, 440.0, 1000.0, 3000.0, 8000.0, 11_000.0] {
            for pause in [0.01, 0.3] {
                let a = tone(freq, rng.uniform(0.0, std::f64::consts::TAU), 2400 + rng.below(4800));
                let b = tone(freq, rng.uniform(0.0, std::f64::consts::TAU), 2400 + rng.below(4800));
                let parts = [(a.as_slice(), pause), (b.as_slice(), 0.0)];
                let (at_join, inside) = steps(&parts, DEFAULT_CROSSFADE_MS);
                assert!(at_join <= inside, "seed {seed}: {freq} Hz, pause {pause}: the join steps {at_join}, the tones {inside}");
                let (hard, _) = steps(&parts, 0.0);
                let ends = a[a.len() - 1].abs().max(b[0].abs());
                assert!(ends <= inside || hard > inside, "seed {seed}: {freq} Hz: no click without fades");
            }
        }
    }

    #[test]
    fn pure_tones_cross_fade_within_the_allowance() {
        let (mut rng, seed) = Rng::fresh();
        let mut worst = 0.0f32;
        for freq in [80.0, 110.0, 220.0, 440.0, 1000.0, 3000.0, 8000.0] {
            for _ in 0..20 {
                let a = tone(freq, rng.uniform(0.0, std::f64::consts::TAU), 2400 + rng.below(4800));
                let b = tone(freq * rng.uniform(0.5, 2.0), rng.uniform(0.0, std::f64::consts::TAU), 2400 + rng.below(4800));
                let parts = [(a.as_slice(), 0.0), (b.as_slice(), 0.0)];
                let (at_join, inside) = steps(&parts, DEFAULT_CROSSFADE_MS);
                let allowance = fade_allowance(&parts, DEFAULT_CROSSFADE_MS);
                assert!(at_join <= inside + allowance, "seed {seed}: {freq} Hz: the join steps {at_join}, the tones {inside}");
                worst = worst.max((at_join - inside) / inside);
            }
        }
        println!("pure tones: the crossfades stepped at most {:.2}% beyond the tones' own steps", 100.0 * worst);
    }

    #[test]
    fn lengths_silences_and_untouched_samples_are_exact() {
        let (mut rng, seed) = Rng::fresh();
        for round in 0..100 {
            let crossfade_ms = [0.0f32, 2.5, 10.0, 20.0][rng.below(4)];
            let fade = (f64::from(crossfade_ms) * f64::from(RATE) / 1000.0).round() as usize;
            // samples never zero, so silence is recognisable
            let signals: Vec<Vec<f32>> = (0..1 + rng.below(5))
                .map(|_| (0..2 * fade + 1 + rng.below(2000)).map(|_| rng.uniform(0.1, 1.0) as f32).collect())
                .collect();
            let pauses: Vec<f32> = signals.iter().map(|_| [0.0f32, 0.01, 0.12, 0.3][rng.below(4)]).collect();
            let parts: Vec<(&[f32], f32)> = signals.iter().map(|s| s.as_slice()).zip(pauses.iter().copied()).collect();
            let out = join(&parts, RATE, crossfade_ms).unwrap();
            let silences: Vec<usize> =
                pauses[..pauses.len() - 1].iter().map(|&p| (f64::from(p) * 24_000.0).round() as usize).collect();
            let overlaps = silences.iter().filter(|&&s| s == 0).count() * fade;
            let want = signals.iter().map(Vec::len).sum::<usize>() + silences.iter().sum::<usize>() - overlaps;
            assert_eq!(out.len(), want, "seed {seed}, round {round}");
            // walk the output: untouched middles, faded edges, zeros of exactly the pause
            let mut at = 0;
            for (k, s) in signals.iter().enumerate() {
                let head = if k == 0 { 0 } else { fade };
                let tail = if k + 1 == signals.len() { 0 } else { fade };
                let middle = &out[at + head..at + s.len() - tail];
                assert_eq!(middle, &s[head..s.len() - tail], "seed {seed}, round {round}: part {k}'s middle changed");
                assert!(out[at..at + s.len()].iter().all(|&v| v > 0.0), "seed {seed}, round {round}: a zero inside part {k}");
                at += s.len();
                if k + 1 < signals.len() {
                    if silences[k] == 0 {
                        at -= fade;
                    } else {
                        assert!(out[at..at + silences[k]].iter().all(|&v| v == 0.0), "seed {seed}, round {round}: silence {k}");
                        at += silences[k];
                    }
                }
            }
            assert_eq!(at, out.len());
        }
    }

    #[test]
    fn one_part_comes_back_unchanged() {
        let (mut rng, seed) = Rng::fresh();
        for n in [0, 1, 2, 3, 479, 480, 481, 10_000] {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            for pause in [0.0, 0.3, MAX_PAUSE_SECONDS] {
                assert_eq!(join(&[(&x, pause)], RATE, DEFAULT_CROSSFADE_MS).unwrap(), x, "seed {seed}, {n} samples");
            }
        }
        assert_eq!(join(&[], RATE, DEFAULT_CROSSFADE_MS).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn empty_parts_give_only_their_pauses() {
        let a = vec![0.5f32; 1000];
        let b = vec![-0.5f32; 1000];
        let empty: &[f32] = &[];
        let j = |parts: &[(&[f32], f32)]| join(parts, RATE, DEFAULT_CROSSFADE_MS).unwrap();
        assert!(j(&[(empty, 0.5)]).is_empty(), "the last part's pause is not added");
        assert_eq!(j(&[(empty, 0.5), (empty, 0.0)]), vec![0.0; 12_000]);
        // leading silence, then the first audio fades in
        let lead = j(&[(empty, 0.1), (&a, 0.0)]);
        assert_eq!(lead.len(), 2400 + 1000);
        assert!(lead[..2400].iter().all(|&v| v == 0.0) && lead[2400] < 0.01 && lead[2400 + 240..] == a[240..]);
        // pauses around an empty part add up, and the join fades as with one pause
        let summed = j(&[(&a, 0.1), (empty, 0.2), (&b, 0.0)]);
        assert_eq!(summed, j(&[(&a, 0.3), (&b, 0.0)]));
        assert_eq!(summed.len(), 1000 + 7200 + 1000);
        // zero pauses around an empty part: the parts around it cross-fade
        assert_eq!(j(&[(&a, 0.0), (empty, 0.0), (&b, 0.0)]), j(&[(&a, 0.0), (&b, 0.0)]));
        // trailing: the part before the empty last one keeps its pause, faded out into it
        let trail = j(&[(&a, 0.1), (empty, 0.2)]);
        assert_eq!(trail.len(), 1000 + 2400);
        assert!(trail[999].abs() < 0.01 && trail[1000..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn overlaps_stay_within_the_larger_input_and_shrink_for_short_parts() {
        let a = vec![0.8f32; 1000];
        let b = vec![-0.6f32; 1000];
        let out = join(&[(&a, 0.0), (&b, 0.0)], RATE, DEFAULT_CROSSFADE_MS).unwrap();
        assert_eq!(out.len(), 2000 - 240);
        assert!(out.iter().all(|v| (-0.6..=0.8).contains(v)));
        assert!(out[760..1000].windows(2).all(|w| w[1] < w[0]), "a monotone crossfade");
        // parts shorter than two fades get fades of half their length
        let short = vec![0.5f32; 101];
        let out = join(&[(&short, 0.0), (&short, 0.0), (&short, 0.0)], RATE, DEFAULT_CROSSFADE_MS).unwrap();
        assert_eq!(out.len(), 303 - 2 * 50);
        assert!(out.iter().all(|&v| (v - 0.5).abs() < 1e-6), "a constant-sum crossfade of a constant");
        let one = [0.7f32];
        assert_eq!(join(&[(&one, 0.0), (&one, 0.0)], RATE, DEFAULT_CROSSFADE_MS).unwrap(), vec![0.7, 0.7]);
    }

    #[test]
    fn bad_pauses_and_settings_are_errors() {
        let a = [0.1f32; 10];
        for bad in [f32::NAN, -0.001, -0.0 - 1.0, f32::INFINITY, f32::NEG_INFINITY, MAX_PAUSE_SECONDS * 1.01] {
            for index in 0..3 {
                let mut parts = [(&a[..], 0.1), (&a[..], 0.1), (&a[..], 0.1)];
                parts[index].1 = bad;
                match join(&parts, RATE, DEFAULT_CROSSFADE_MS) {
                    Err(JoinError::Pause { index: i, seconds }) => {
                        assert_eq!(i, index);
                        assert!(seconds.is_nan() && bad.is_nan() || seconds == bad);
                    }
                    other => panic!("pause {bad} at {index}: {other:?}"),
                }
            }
        }
        assert!(join(&[(&a[..], -0.0)], RATE, 10.0).is_ok(), "-0 is zero");
        assert_eq!(join(&[(&a[..], 0.0)], 0, 10.0), Err(JoinError::SampleRate));
        for bad in [f32::NAN, -1.0, f32::INFINITY] {
            assert!(matches!(join(&[(&a[..], 0.0)], RATE, bad), Err(JoinError::Crossfade { .. })), "{bad}");
        }
        // a huge crossfade is only as long as the parts allow
        assert_eq!(join(&[(&a[..], 0.0), (&a[..], 0.0)], RATE, f32::MAX).unwrap().len(), 15);
        let message = JoinError::Pause { index: 3, seconds: f32::NAN }.to_string();
        assert!(message.contains("part 3") && message.contains("NaN"), "{message}");
    }
}
