//! Helpers for tests and benchmarks: seeded random data, bf16 rounding, tolerance checks, and the
//! list of kernel backends present in this build and on this machine.
use crate::{Device, EmuOptions, Error, Schedule};

/// A seed for "fresh" random inputs: `TTS_TEST_SEED` if set (to replay a failure), else the clock.
/// Tests print it so that any failure can be reproduced.
pub fn fresh_seed() -> u64 {
    if let Some(s) = std::env::var("TTS_TEST_SEED").ok().and_then(|s| s.parse().ok()) {
        return s;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    splitmix64(&mut (t as u64 ^ (std::process::id() as u64) << 32))
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` normal(0, scale) values from `seed` (Box-Muller over splitmix64).
pub fn random_f32(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1 = ((splitmix64(&mut s) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((splitmix64(&mut s) >> 11) as f64) / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32 * scale);
        if out.len() < n {
            out.push((r * t.sin()) as f32 * scale);
        }
    }
    out
}

/// `n` integers uniform in `lo..hi` from `seed`.
pub fn random_i32(seed: u64, n: usize, lo: i32, hi: i32) -> Vec<i32> {
    let mut s = seed;
    let span = (hi as i64 - lo as i64).max(1) as u64;
    (0..n).map(|_| (lo as i64 + (splitmix64(&mut s) % span) as i64) as i32).collect()
}

/// Rounds every value to the nearest bf16 (what a bf16 tensor stores).
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect()
}

/// The result of comparing an output with its reference.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub max_abs: f64,
    /// max |got - want| / |want| over elements with |want| above the absolute floor.
    pub max_rel: f64,
    /// Index of the worst element (by how far it exceeds the tolerance), if any failed.
    pub first_failure: Option<usize>,
    pub failures: usize,
    pub len: usize,
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.failures == 0
    }
}

/// Element-wise `|got - want| <= abs + rel · |want|`. A NaN or infinity in `got` fails unless `want`
/// has the same value there. Length mismatches fail every element.
pub fn compare(got: &[f32], want: &[f32], rel: f64, abs: f64) -> Comparison {
    let mut c = Comparison { max_abs: 0.0, max_rel: 0.0, first_failure: None, failures: 0, len: want.len() };
    if got.len() != want.len() {
        c.failures = want.len().max(got.len()).max(1);
        c.max_abs = f64::INFINITY;
        return c;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let same_special = (g.is_nan() && w.is_nan()) || (g.is_infinite() && g == w);
        let err = if same_special { 0.0 } else { (g - w).abs() };
        let within = err <= abs + rel * w.abs(); // false for NaN
        let bad = !same_special && !within;
        if err.is_nan() {
            c.max_abs = f64::NAN;
        } else if !c.max_abs.is_nan() {
            c.max_abs = c.max_abs.max(err);
        }
        if w.abs() > abs && !err.is_nan() {
            c.max_rel = c.max_rel.max(err / w.abs());
        }
        if bad {
            c.failures += 1;
            c.first_failure.get_or_insert(i);
        }
    }
    c
}

/// Panics with a readable report when `got` is not within tolerance of `want`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f64, abs: f64) {
    let c = compare(got, want, rel, abs);
    if !c.ok() {
        let i = c.first_failure.unwrap_or(0);
        panic!(
            "{what}: {} of {} elements out of tolerance (rel {rel:e}, abs {abs:e}); first at [{i}]: got {:?}, want {:?}; max abs err {:e}, max rel err {:e}",
            c.failures,
            c.len,
            got.get(i),
            want.get(i),
            c.max_abs,
            c.max_rel
        );
    }
}

/// The relative L2 distance `‖got − want‖₂ / ‖want‖₂` of `got` from the reference `want`, both
/// sums accumulated in f64. The squared norm of `want` is floored at 1e-30, so an all-zero
/// reference gives `‖got‖₂ · 1e15` (0 when `got` is zero too). Panics when the lengths differ (a
/// test helper: a length mismatch is a failed test, not a distance).
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2 of slices of different lengths");
    let (mut n, mut d) = (0.0f64, 0.0f64);
    for (x, y) in got.iter().zip(want) {
        n += (*x as f64 - *y as f64).powi(2);
        d += (*y as f64).powi(2);
    }
    (n / d.max(1e-30)).sqrt()
}

/// The relative tolerance of a bf16 output against the f32 Cpu reference: one rounding of a value
/// computed in f32 is at most 2^-9 relative (2^-8 for 8 significant bits); 8e-3 allows two ulp.
pub const BF16_REL: f64 = 8e-3;

/// The absolute floor of attention outputs compared with the Cpu reference (softmax weights
/// near 0 summed in another order).
pub const ATTENTION_ABS: f64 = 1e-4;

/// A cache's dimensions `[slots, heads, max_len, d]` less the slots.
#[derive(Clone, Copy)]
pub struct CacheDims {
    pub heads: usize,
    pub max_len: usize,
    pub d: usize,
}

/// The largest change that rounding the caches' keys and values to bf16 can make to each output of
/// `attention_cached` (f32 `q [rows, heads·d]`, caches `[slots, heads, max_len, d]` as written,
/// row `r` attending to positions `0..lens[r]` of slot `slots[r]`), derived from the data in f64.
/// Rounding to bf16 (8 significant bits) moves a value by at most `u = 2⁻⁸` of itself, so:
/// - score `j` moves by at most `e_j = scale · Σ |q|·|k_j| · u`;
/// - softmax weight `p_j` becomes `p_j · exp(δ_j) / Σ_i p_i exp(δ_i)` with `|δ_i| ≤ e_i`, so it moves
///   by at most `p_j · (exp(e_j + max e) − 1)`;
/// - the output `Σ p_j v_j` moves by at most `Σ_j p_j (exp(e_j + max e) − 1) |v_j| (1 + u) + Σ_j p_j |v_j| u`.
///
/// Both sides are computed in f32: `(len + d) · 2⁻²² · Σ p_j |v_j| + 1e-6` covers their own rounding
/// (each side's worst case of `len + d` roundings of `2⁻²³`).
pub fn bf16_cache_error_bound(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    c: CacheDims,
    slots: &[i32],
    lens: &[i32],
    scale: f32,
) -> Vec<f64> {
    let u = 2f64.powi(-8);
    let (hd, d) = (c.heads * c.d, c.d);
    let mut bound = vec![0.0; q.len()];
    for (r, (&slot, &len)) in slots.iter().zip(lens).enumerate() {
        for h in 0..c.heads {
            let qh = &q[r * hd + h * d..][..d];
            let at = |j: usize| (slot as usize * c.heads + h) * c.max_len * d + j * d;
            let (mut s, mut e) = (Vec::new(), Vec::new());
            for j in 0..len as usize {
                let kj = &k[at(j)..][..d];
                s.push(scale as f64 * qh.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>());
                e.push(scale as f64 * qh.iter().zip(kj).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>() * u);
            }
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            let probs: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
            let e_max = e.iter().cloned().fold(0.0, f64::max);
            for col in 0..d {
                let (mut b, mut mass) = (0.0, 0.0);
                for (j, &p) in probs.iter().enumerate() {
                    let vj = (v[at(j) + col] as f64).abs();
                    b += p * ((e[j] + e_max).exp() - 1.0) * vj * (1.0 + u) + p * vj * u;
                    mass += p * vj;
                }
                bound[r * hd + h * d + col] = b + (len as usize + d) as f64 * 2f64.powi(-22) * mass + 1e-6;
            }
        }
    }
    bound
}

/// Panics with a readable report unless `|got[i] − want[i]| ≤ bound[i]` for every `i` (a NaN
/// fails).
#[track_caller]
pub fn assert_within_bound(what: &str, got: &[f32], want: &[f32], bound: &[f64]) {
    assert!(got.len() == want.len() && want.len() == bound.len(), "{what}: lengths");
    let bad: Vec<usize> =
        (0..got.len()).filter(|&i| ((got[i] - want[i]) as f64).abs().partial_cmp(&bound[i]).is_none_or(|o| o.is_gt())).collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} elements beyond the bound; first at [{i}]: got {}, want {}, bound {:e}",
            bad.len(),
            got.len(),
            got[i],
            want[i],
            bound[i]
        );
    }
}

/// Asserts `got` equals `want` bit for bit (NaNs included), naming the first differing element.
#[track_caller]
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
        let n = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        panic!("{what}: {n} of {} elements differ; first at [{i}]: got {:?}, want {:?}", got.len(), got[i], want[i]);
    }
}

/// T3's RoPE inverse frequencies for `head_dim` (Llama-3 scaling: θ 500000, factor 8, low 1,
/// high 4, original context 8192; see [`crate::cpu::llama3_inv_freq`]).
pub fn t3_inv_freq(head_dim: usize) -> Vec<f32> {
    crate::cpu::llama3_inv_freq(head_dim, 500000.0, 8.0, 1.0, 4.0, 8192)
}

/// The devices that run the GPU kernels in this build and on this machine, each with a label:
/// Emu in forward, reverse and random schedules (builds with the `emu` feature; the reverse one with
/// the shared-memory race detector on) and Cuda when a usable GPU is present. With
/// `TTS_REQUIRE_CUDA=1` a missing GPU panics instead of being skipped.
pub fn kernel_devices() -> Vec<(String, Device)> {
    let mut out = Vec::new();
    for (label, schedule, race_check) in [
        ("emu/forward", Schedule::Forward, false),
        ("emu/reverse+race-check", Schedule::Reverse, true),
        ("emu/random", Schedule::Random(fresh_seed() as u32), false),
    ] {
        match Device::emu(EmuOptions { schedule, race_check, ..EmuOptions::default() }) {
            Ok(d) => out.push((label.to_string(), d)),
            Err(Error::EmuUnavailable) => break,
            Err(e) => panic!("{label}: {e}"),
        }
    }
    match Device::cuda(0) {
        Ok(d) => out.push((d.describe(), d)),
        Err(e) => {
            if std::env::var("TTS_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!("TTS_REQUIRE_CUDA=1 but the Cuda backend is unavailable: {e}");
            }
            eprintln!("cuda: skipped ({e})");
        }
    }
    if out.is_empty() {
        eprintln!("no kernel backend in this build (enable the `emu` feature): nothing to test");
    }
    out
}

/// Launches one of the deliberately broken kernels of `kernels/faults/faults.cu` (Emu only) with
/// `x`, `y` of f32 and `n = y.len()` (and `dynamic_smem` bytes of dynamic shared memory): the
/// harness self-test uses it to show that such bugs are caught.
#[cfg(feature = "emu")]
pub fn launch_fault_kernel(
    kernel: &'static str,
    x: crate::View<'_>,
    y: crate::ViewMut<'_>,
    grid: u32,
    block: u32,
    dynamic_smem: u32,
) -> crate::Result<()> {
    fault_launch(kernel, x, y, crate::launch::LaunchDims::new([grid, 1, 1], [block, 1, 1], dynamic_smem))
}

/// [`launch_fault_kernel`] as a launch path that forgets to opt in to more than 48 KiB of shared
/// memory: the launch code neither raises the kernel's maximum nor lets Emu do it.
#[cfg(feature = "emu")]
pub fn launch_fault_kernel_without_opt_in(
    kernel: &'static str,
    x: crate::View<'_>,
    y: crate::ViewMut<'_>,
    grid: u32,
    block: u32,
    dynamic_smem: u32,
) -> crate::Result<()> {
    let mut dims = crate::launch::LaunchDims::new([grid, 1, 1], [block, 1, 1], dynamic_smem);
    dims.opt_in = false;
    fault_launch(kernel, x, y, dims)
}

#[cfg(feature = "emu")]
fn fault_launch(
    kernel: &'static str,
    x: crate::View<'_>,
    y: crate::ViewMut<'_>,
    dims: crate::launch::LaunchDims,
) -> crate::Result<()> {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct FaultParams {
        x: u64,
        y: u64,
        n: u32,
        pad: u32,
    }
    if !kernel.starts_with("fault_") {
        return Err(Error::UnknownKernel(kernel.into()));
    }
    let n = crate::launch::u32_param("fault", "n", y.len())?;
    let p = FaultParams { x: x.addr(), y: y.addr(), n, pad: 0 };
    crate::launch::launch(x.device(), kernel, dims, &p)
}

/// The devices a benchmark measures: Cpu always, Emu in builds with the `emu` feature, Cuda when a
/// usable GPU is present (the reason is printed when it is not).
pub fn bench_devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![("cpu", Device::cpu())];
    if let Ok(d) = Device::emu(EmuOptions::default()) {
        v.push(("emu", d));
    }
    match Device::cuda(0) {
        Ok(d) => v.push(("cuda", d)),
        Err(e) => eprintln!("cuda: not benchmarked ({e})"),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_nan_and_length() {
        assert!(compare(&[1.0, 2.0], &[1.0, 2.0], 0.0, 0.0).ok());
        assert!(!compare(&[1.0, f32::NAN], &[1.0, 2.0], 1.0, 1.0).ok());
        assert!(compare(&[f32::NAN], &[f32::NAN], 0.0, 0.0).ok());
        assert!(!compare(&[1.0], &[1.0, 2.0], 1.0, 1.0).ok());
        assert!(!compare(&[1.1], &[1.0], 0.05, 0.0).ok());
        assert!(compare(&[1.04], &[1.0], 0.05, 0.0).ok());
        assert!(!compare(&[f32::INFINITY], &[1.0], 1.0, 1.0).ok());
    }

    #[test]
    fn random_values_look_normal() {
        let v = random_f32(42, 100_000, 2.0);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
        assert_ne!(random_f32(1, 4, 1.0), random_f32(2, 4, 1.0));
    }

    #[test]
    fn rel_l2_is_relative_to_the_reference() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_l2(&[3.0, 0.0], &[0.0, 4.0]) - 1.25).abs() < 1e-15);
        assert!((rel_l2(&[2.0], &[0.0]) - 2e15).abs() < 1.0);
        assert_eq!(rel_l2(&[0.0], &[0.0]), 0.0);
    }
}
