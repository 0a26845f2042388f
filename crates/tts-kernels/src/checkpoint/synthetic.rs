//! Synthetic weights: deterministic random tensors built in memory from a seed, served through
//! [`Checkpoint`](super::Checkpoint) exactly as a file's tensors are (same names, same shape
//! checks), so a model loaded from them runs the same loading code as with the real files.
//!
//! Each tensor's values come from a counter-based generator keyed by (seed, tensor name): value `i`
//! is a SplitMix64 hash of `key + (i + 1)·γ`, so any element can be computed on its own, tensors are
//! independent of the order they are read in, and a tensor is filled in parallel. Values are
//! uniform with a chosen mean and standard deviation ([`Init`], picked per tensor by its role in the
//! model: norm gains ≈ 1, small biases, projections ~ 1/√fan_in, ...). The models' manifests
//! (`tts_t3::synthetic`, `tts_s3gen::synthetic`) list every tensor with its role.
use rayon::prelude::*;

/// How a synthetic tensor's values are drawn: uniform on `[mean − √3·std, mean + √3·std)`, i.e.
/// with mean `mean` and standard deviation `std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Init {
    pub mean: f32,
    pub std: f32,
}

impl Init {
    /// Zero mean, standard deviation `std`.
    pub const fn spread(std: f32) -> Init {
        Init { mean: 0.0, std }
    }

    /// Mean `mean`, standard deviation `std` (norm gains around 1, biases pinned near a value).
    pub const fn around(mean: f32, std: f32) -> Init {
        Init { mean, std }
    }

    /// Zero mean, standard deviation `gain / √fan_in`: a projection that keeps a unit-variance
    /// input's output at variance `gain²`.
    pub fn fan_in(fan_in: usize, gain: f32) -> Init {
        Init { mean: 0.0, std: gain / (fan_in.max(1) as f32).sqrt() }
    }

    /// The same for every element: `value` (standard deviation 0).
    pub const fn constant(value: f32) -> Init {
        Init { mean: value, std: 0.0 }
    }
}

/// One tensor of a synthetic checkpoint: its official name, its shape and how its values are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Dim-0 slices (rows) drawn as another [`Init`] (e.g. a zero row), in place of `init`.
    pub rows: Vec<(usize, Init)>,
}

impl SynthTensor {
    pub fn new(name: impl Into<String>, shape: &[usize], init: Init) -> SynthTensor {
        SynthTensor { name: name.into(), shape: shape.to_vec(), init, rows: Vec::new() }
    }

    /// The same tensor with dim-0 slice `row` drawn as `init`.
    pub fn with_row(mut self, row: usize, init: Init) -> SynthTensor {
        self.rows.push((row, init));
        self
    }

    /// The tensor's values under `seed`: the stream of (seed, name) drawn as `init`, the overridden
    /// rows as theirs (the same elements of the stream, another spread).
    pub fn values(&self, seed: u64) -> Vec<f32> {
        let k = key(seed, &self.name);
        let mut v = vec![0f32; self.len()];
        fill(k, self.init, &mut v);
        let per_row = self.len() / self.shape[0].max(1);
        for &(row, init) in &self.rows {
            let hw = init.std * 3f32.sqrt();
            for (j, x) in v[row * per_row..(row + 1) * per_row].iter_mut().enumerate() {
                *x = init.mean + hw * uniform_pm1(k, (row * per_row + j) as u64);
            }
        }
        v
    }

    /// Elements of the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator key of the tensor `name` under `seed` (FNV-1a of the name, mixed with the seed).
pub fn key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    mix(h ^ mix(seed.wrapping_add(GAMMA)))
}

/// Element `i` of the stream `key`, uniform on [−1, 1) (24 random bits, centred: mean exactly 0).
#[inline]
pub fn uniform_pm1(key: u64, i: u64) -> f32 {
    let bits = (mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA))) >> 40) as f32;
    (bits + 0.5) * (2.0 / (1u32 << 24) as f32) - 1.0
}

/// Elements per parallel task when filling a tensor.
const CHUNK: usize = 1 << 16;

/// Fills `out` with the values of the stream `key` drawn as `init`, in parallel.
pub fn fill(key: u64, init: Init, out: &mut [f32]) {
    // uniform on [−1, 1) has standard deviation 1/√3
    let half_width = init.std * 3f32.sqrt();
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let base = (c * CHUNK) as u64;
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = init.mean + half_width * uniform_pm1(key, base + j as u64);
        }
    });
}

/// The `n` values of the tensor `name` under `seed`, drawn as `init`.
pub fn values(seed: u64, name: &str, n: usize, init: Init) -> Vec<f32> {
    let mut v = vec![0f32; n];
    fill(key(seed, name), init, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var.sqrt())
    }

    #[test]
    fn values_have_the_asked_mean_and_spread_and_stay_in_range() {
        let seed = crate::testing::fresh_seed();
        for init in [Init::spread(0.03), Init::around(1.0, 0.1), Init::around(-5.0, 2.0)] {
            let n = 1 << 20;
            let v = values(seed, "layer.weight", n, init);
            let (m, s) = mean_std(&v);
            // 1M samples: the mean's standard error is std/1024
            assert!((m - init.mean as f64).abs() < 5.0 * init.std as f64 / 1024.0, "{init:?}: mean {m}");
            assert!((s / init.std as f64 - 1.0).abs() < 0.01, "{init:?}: std {s}");
            let hw = init.std * 3f32.sqrt();
            assert!(v.iter().all(|&x| x >= init.mean - hw && x <= init.mean + hw), "{init:?}: out of range");
            // uniform: a quarter of the values in each quarter of the range
            let q = v.iter().filter(|&&x| x < init.mean - hw / 2.0).count() as f64 / n as f64;
            assert!((q - 0.25).abs() < 0.005, "{init:?}: lowest quarter holds {q}");
        }
        assert!(values(seed, "c", 100, Init::constant(0.5)).iter().all(|&x| x == 0.5));
    }

    #[test]
    fn overridden_rows_change_only_themselves() {
        let seed = crate::testing::fresh_seed();
        let t = SynthTensor::new("head.weight", &[5, 3, 2], Init::spread(1.0));
        let plain = t.values(seed);
        assert_eq!(plain, values(seed, "head.weight", 30, Init::spread(1.0)));
        let v = t.clone().with_row(1, Init::constant(0.0)).with_row(4, Init::around(10.0, 0.0)).values(seed);
        assert!(v[6..12].iter().all(|&x| x == 0.0) && v[24..].iter().all(|&x| x == 10.0), "{v:?}");
        assert_eq!((&v[..6], &v[12..24]), (&plain[..6], &plain[12..24]));
    }

    #[test]
    fn streams_are_deterministic_and_independent_per_name_and_seed() {
        let seed = crate::testing::fresh_seed();
        let n = 1 << 16;
        let a = values(seed, "a.weight", n, Init::spread(1.0));
        assert_eq!(a, values(seed, "a.weight", n, Init::spread(1.0)));
        // a prefix is the same whatever the length (each element is computed on its own)
        assert_eq!(&a[..1000], &values(seed, "a.weight", 1000, Init::spread(1.0))[..]);
        // unit-variance values: the mean product is the correlation (standard error 1/256 here)
        let corr =
            |x: &[f32], y: &[f32]| -> f64 { x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>() / x.len() as f64 };
        for other in [
            values(seed, "b.weight", n, Init::spread(1.0)),
            values(seed, "a.weighu", n, Init::spread(1.0)),
            values(seed.wrapping_add(1), "a.weight", n, Init::spread(1.0)),
        ] {
            assert_ne!(a[..8], other[..8]);
            assert!(corr(&a, &other).abs() < 0.02, "correlated streams: {}", corr(&a, &other));
        }
        // neighbouring elements are uncorrelated
        assert!(corr(&a[1..], &a[..n - 1]).abs() < 0.02);
    }
}
