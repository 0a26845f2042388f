//! Seeded randomness for requests whose noise is not injected: the CFM start noise and the NSF
//! source's phases and noise. A Philox-4x32-10 counter stream keyed by the request's seed, with one
//! stream id per use, so that a request's audio depends on its seed only (not on its batch).
//!
//! The noise is addressed by position in time: the CFM noise of mel frame `f` (including the
//! prompt's frames) is values `80·f .. 80·f + 80` of its stream, the source noise of output sample
//! `s` is values `9·s .. 9·s + 9` of its. A frame's noise therefore does not depend on how long the
//! utterance is, and a window of it (a streamed chunk: [`cfm_noise`], [`source_noise`]) draws
//! exactly what the whole utterance draws there.
use tts_kernels::cpu::philox4x32_10;

/// Stream ids.
pub const CFM_NOISE: u32 = 1;
pub const SOURCE_NOISE: u32 = 2;
pub const SOURCE_PHASES: u32 = 3;

/// Values `start .. start + n` of a stream's uniform bits (4 per Philox counter; the counter is
/// 64-bit, split over two words, so that streams longer than 2^34 values stay distinct).
fn uniform_bits(seed: u64, stream: u32, start: usize, n: usize) -> impl Iterator<Item = u32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let (first, skip) = (start / 4, start % 4);
    let last = (start + n).div_ceil(4);
    (first..last).flat_map(move |c| philox4x32_10([c as u32, stream, (c as u64 >> 32) as u32, 0], key)).skip(skip).take(n)
}

/// `n` uniforms in [0, 1) (24-bit resolution).
pub fn uniform(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    uniform_bits(seed, stream, 0, n).map(|u| (u >> 8) as f32 / (1u32 << 24) as f32).collect()
}

/// `n` standard normals (Box–Muller on pairs of uniforms, in f64).
pub fn normal(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    normal_range(seed, stream, 0, n)
}

/// Normals `start .. start + n` of a stream: `normal(seed, stream, start + n)[start..]`, drawn
/// without the values before `start`. Normal `k` comes from uniforms `2·(k/2)` and `2·(k/2) + 1`.
pub fn normal_range(seed: u64, stream: u32, start: usize, n: usize) -> Vec<f32> {
    let (first_pair, last_pair) = (start / 2, (start + n).div_ceil(2));
    let bits: Vec<u32> = uniform_bits(seed, stream, 2 * first_pair, 2 * (last_pair - first_pair)).collect();
    let mut out = Vec::with_capacity(bits.len());
    for p in bits.chunks_exact(2) {
        let u1 = ((p[0] >> 8) as f64 + 0.5) / (1u64 << 24) as f64;
        let u2 = (p[1] >> 8) as f64 / (1u64 << 24) as f64;
        let (r, th) = ((-2.0 * u1.ln()).sqrt(), 2.0 * std::f64::consts::PI * u2);
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.drain(..start - 2 * first_pair);
    out.truncate(n);
    out
}

/// The CFM start noise of mel frames `frames` (prompt frames first, then 2 per speech token),
/// channel-major `[80, frames.len()]` as the flow takes it.
pub fn cfm_noise(seed: u64, frames: std::ops::Range<usize>) -> Vec<f32> {
    let bins = crate::MEL_BINS;
    transposed(&normal_range(seed, CFM_NOISE, frames.start * bins, frames.len() * bins), frames.len(), bins)
}

/// The source noise of output samples `samples` (960 per speech token after the prompt),
/// harmonic-major `[9, samples.len()]` as the vocoder takes it.
pub fn source_noise(seed: u64, samples: std::ops::Range<usize>) -> Vec<f32> {
    let h = tts_kernels::ops::HIFT_HARMONICS;
    transposed(&normal_range(seed, SOURCE_NOISE, samples.start * h, samples.len() * h), samples.len(), h)
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_moments_and_streams_differ() {
        let z = normal(7, CFM_NOISE, 20001);
        let n = z.len() as f64;
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert_ne!(normal(7, SOURCE_NOISE, 4), normal(7, CFM_NOISE, 4));
        assert_eq!(normal(7, CFM_NOISE, 5), normal(7, CFM_NOISE, 5));
        let u = uniform(3, SOURCE_PHASES, 1000);
        assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
    }

    #[test]
    fn ranges_are_windows_of_the_whole_stream() {
        let seed = tts_kernels::testing::fresh_seed();
        let all = normal(seed, CFM_NOISE, 1001);
        for (start, n) in [(0, 1001), (1, 7), (2, 0), (3, 998), (500, 1), (999, 2), (4, 4), (5, 5)] {
            assert_eq!(normal_range(seed, CFM_NOISE, start, n), all[start..start + n], "seed {seed} {start}+{n}");
        }
        // a window of frames is the same frames of the whole utterance's noise
        let (whole, part) = (cfm_noise(seed, 0..40), cfm_noise(seed, 13..29));
        for c in 0..crate::MEL_BINS {
            assert_eq!(&whole[c * 40 + 13..c * 40 + 29], &part[c * 16..(c + 1) * 16], "seed {seed} bin {c}");
        }
        let (whole, part) = (source_noise(seed, 0..3000), source_noise(seed, 961..2001));
        for k in 0..tts_kernels::ops::HIFT_HARMONICS {
            assert_eq!(&whole[k * 3000 + 961..k * 3000 + 2001], &part[k * 1040..(k + 1) * 1040], "seed {seed} harmonic {k}");
        }
    }
}
