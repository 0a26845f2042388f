//! Seeded randomness for requests whose noise is not injected: the CFM start noise and the NSF
//! source's phases and noise. A Philox-4x32-10 counter stream keyed by the request's seed, with one
//! stream id per use, so that a request's audio depends on its seed only (not on its batch).
use tts_kernels::cpu::philox4x32_10;

/// Stream ids.
pub const CFM_NOISE: u32 = 1;
pub const SOURCE_NOISE: u32 = 2;
pub const SOURCE_PHASES: u32 = 3;

fn uniform_bits(seed: u64, stream: u32, n: usize) -> impl Iterator<Item = u32> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n.div_ceil(4) as u32).flat_map(move |c| philox4x32_10([c, stream, 0, 0], key)).take(n)
}

/// `n` uniforms in [0, 1) (24-bit resolution).
pub fn uniform(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    uniform_bits(seed, stream, n).map(|u| (u >> 8) as f32 / (1u32 << 24) as f32).collect()
}

/// `n` standard normals (Box–Muller on pairs of uniforms, in f64).
pub fn normal(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    let bits: Vec<u32> = uniform_bits(seed, stream, 2 * n.div_ceil(2)).collect();
    let mut out = Vec::with_capacity(n + 1);
    for p in bits.chunks_exact(2) {
        let u1 = ((p[0] >> 8) as f64 + 0.5) / (1u64 << 24) as f64;
        let u2 = (p[1] >> 8) as f64 / (1u64 << 24) as f64;
        let (r, th) = ((-2.0 * u1.ln()).sqrt(), 2.0 * std::f64::consts::PI * u2);
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.truncate(n);
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
}
