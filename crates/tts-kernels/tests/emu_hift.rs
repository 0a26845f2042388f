//! The HiFT signal kernels (`hift_source`, `hift_istft`) against their Cpu reference ops, on every
//! kernel backend of this build and machine (Emu in forward, reverse and random thread schedules;
//! Cuda when a GPU is usable), with fresh random inputs (the seed is printed; `TTS_TEST_SEED`
//! replays it), odd lengths, batches of different lengths whose padding is NaN (a kernel that reads
//! it turns its output NaN), and outputs that start poisoned (NaN) on Emu.
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, random_i32};
use tts_kernels::{DType, Device, Error, Tensor, ops};

/// hift_source: the kernel's frame-level f64 phase prefix equals the reference's per-sample f64
/// cumsum (every partial sum is exact in f64 for these f0 values: steps >= ~2^-40, sums < 2^11),
/// sincos_f32 and the f64 sin of the reference are both correctly rounded but for rare ties (1 ulp,
/// scaled by 0.1·|w| < 0.15), the products and sums are the same unfused f32 operations, and tanhf
/// is within 2 ulp (a GPU's; Emu uses the same libm as the reference) of outputs in (−1, 1):
/// 2.4e-7, doubled.
const SOURCE_ABS: f64 = 5e-7;
/// hift_istft: the reference synthesises each frame in f64 from its f32 bins, the kernel in f32 with
/// f32 twiddles: per output sample <= 4 frames × (9 bins × 2 products and sums, a window product, a
/// sum) ≈ 80 roundings, each at most 2^-24 of a partial sum bounded by the sample's "scale"
/// `Σ_f w_i·Σ_k (|re_k| + |im_k|)·2/16 / Σ_f w_i²` (see [`istft_tolerance`]), plus the division.
/// So the worst case is ~80·2^-24·scale (observed: within 3·2^-24·scale); the clamp only shrinks
/// errors.
const ISTFT_ROUNDINGS: f64 = 80.0;
/// An error floor for istft rows that are exactly representable / near zero.
const ISTFT_ABS: f64 = 1e-7;

/// Random lengths in `lo..=max` with the full length first and, for larger batches, `lo` second.
fn lens_for(seed: u64, batch: usize, lo: i32, max: usize) -> Vec<i32> {
    let mut lens = random_i32(seed, batch, lo, max as i32 + 1);
    lens[0] = max as i32;
    if batch > 2 {
        lens[1] = lo;
    }
    lens
}

struct SourceCase {
    batch: usize,
    n_frames: usize,
    up: usize,
    sr: f32,
    f0: Vec<f32>,
    lens: Vec<i32>,
    phases: Vec<f32>,
    noise: Vec<f32>,
    w: Vec<f32>,
    bias: f32,
}

impl SourceCase {
    fn random(seed: u64, batch: usize, n_frames: usize, up: usize, sr: f32, lo: i32) -> SourceCase {
        SourceCase::with_lens(seed, n_frames, up, sr, lens_for(seed, batch, lo, n_frames))
    }

    /// Random inputs for the given lengths (one per batch row), padding poisoned with NaN.
    fn with_lens(seed: u64, n_frames: usize, up: usize, sr: f32, lens: Vec<i32>) -> SourceCase {
        let batch = lens.len();
        // voiced contours up to ~600 Hz, with unvoiced (0), at-threshold (10) and just-voiced frames
        let mut f0: Vec<f32> = random_f32(seed + 1, batch * n_frames, 200.0).iter().map(|v| v.abs()).collect();
        for (i, v) in f0.iter_mut().enumerate() {
            match i % 11 {
                3 => *v = 0.0,
                5 => *v = 10.0,
                7 => *v = 10.5,
                _ => {}
            }
        }
        let n = n_frames * up;
        let mut phases = random_f32(seed + 2, batch * 9, 1.8);
        let mut noise = random_f32(seed + 3, batch * 9 * n, 1.0);
        for b in 0..batch {
            phases[b * 9] = 0.0; // SineGen zeroes the fundamental's phase
            let len = lens[b] as usize;
            f0[b * n_frames + len..(b + 1) * n_frames].fill(f32::NAN);
            for k in 0..9 {
                noise[(b * 9 + k) * n + len * up..(b * 9 + k + 1) * n].fill(f32::NAN);
            }
        }
        let w = random_f32(seed + 4, 9, 0.3);
        let bias = random_f32(seed + 5, 1, 0.1)[0];
        SourceCase { batch, n_frames, up, sr, f0, lens, phases, noise, w, bias }
    }

    fn run(&self, dev: &Device, lens: Option<&[i32]>) -> tts_kernels::Result<Vec<f32>> {
        let (b, n) = (self.batch, self.n_frames * self.up);
        let f0 = Tensor::from_f32(dev, DType::F32, &[b, self.n_frames], &self.f0)?;
        let lt = lens.map(|l| Tensor::from_i32(dev, &[b], l)).transpose()?;
        let ph = Tensor::from_f32(dev, DType::F32, &[b, 9], &self.phases)?;
        let nz = Tensor::from_f32(dev, DType::F32, &[b, 9, n], &self.noise)?;
        let w = Tensor::from_f32(dev, DType::F32, &[9], &self.w)?;
        let bias = Tensor::from_f32(dev, DType::F32, &[1], &[self.bias])?;
        let mut out = Tensor::uninit(dev, DType::F32, &[b, n])?;
        ops::hift_source(
            f0.view(),
            lt.as_ref().map(|t| t.view()),
            ph.view(),
            nz.view(),
            w.view(),
            bias.view(),
            out.view_mut(),
            self.up,
            self.sr,
        )?;
        out.to_f32_vec()
    }

    /// Batch row `b` as a case of its own, cut to its length.
    fn alone(&self, b: usize) -> SourceCase {
        let len = self.lens[b] as usize;
        let n = self.n_frames * self.up;
        let mut noise = Vec::new();
        for k in 0..9 {
            noise.extend_from_slice(&self.noise[(b * 9 + k) * n..][..len * self.up]);
        }
        SourceCase {
            batch: 1,
            n_frames: len,
            up: self.up,
            sr: self.sr,
            f0: self.f0[b * self.n_frames..][..len].to_vec(),
            lens: vec![len as i32],
            phases: self.phases[b * 9..][..9].to_vec(),
            noise,
            w: self.w.clone(),
            bias: self.bias,
        }
    }
}

#[test]
fn hift_source_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    // (batch, mel frames, upsample, sample rate)
    let cases = [
        (1, 1, 1, 24000.0),
        (3, 7, 8, 24000.0),
        (2, 50, 480, 24000.0), // one second of HiFT audio: several blocks, a long cumulative phase
        (3, 129, 3, 22050.0),
        (4, 40, 1, 24000.0), // 32 frames per block: the in-block prefix over many frames
        (2, 70, 5, 16000.0),
    ];
    let devices = kernel_devices();
    for (i, &(batch, n_frames, up, sr)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let case = SourceCase::random(s, batch, n_frames, up, sr, 0);
        let want = case.run(&cpu, Some(&case.lens)).unwrap();
        assert!(want.iter().all(|v| v.is_finite()), "the reference read padding");
        for (label, dev) in &devices {
            let got = case.run(dev, Some(&case.lens)).unwrap();
            let what = format!("{label}: hift_source [{batch}, {n_frames}] x{up} lens {:?} seed {s}", case.lens);
            assert_close(&what, &got, &want, 0.0, SOURCE_ABS);
        }
        // without lens: every frame is valid
        let full = SourceCase::with_lens(s + 7, n_frames, up, sr, vec![n_frames as i32; batch]);
        let want = full.run(&cpu, None).unwrap();
        for (label, dev) in &devices {
            let got = full.run(dev, None).unwrap();
            assert_close(&format!("{label}: hift_source no lens seed {s}"), &got, &want, 0.0, SOURCE_ABS);
        }
    }
}

#[test]
fn hift_source_of_a_batch_is_each_sequence_alone() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let case = SourceCase::with_lens(seed, 21, 37, 24000.0, vec![21, 0, 1, 13]);
    let n = case.n_frames * case.up;
    for (label, dev) in &devices {
        let all = case.run(dev, Some(&case.lens)).unwrap();
        for b in 0..case.batch {
            let alone = case.alone(b);
            let len = alone.n_frames * case.up;
            let row = &all[b * n..(b + 1) * n];
            if len > 0 {
                let got = alone.run(dev, None).unwrap();
                assert_close(&format!("{label}: batch {b} alone seed {seed}"), &row[..len], &got, 0.0, 0.0);
            }
            assert!(row[len..].iter().all(|&v| v == 0.0), "{label}: batch {b}: padding must be 0");
        }
    }
}

/// `[batch, frames, 18]` conv_post outputs: log-magnitudes N(0, 1) with a few at 5 (exp > 100:
/// clipped), phase inputs N(0, 2); frames at and past each length NaN.
fn random_spec(seed: u64, batch: usize, frames: usize, lens: &[i32]) -> Vec<f32> {
    let mut spec = random_f32(seed, batch * frames * 18, 1.0);
    let ph = random_f32(seed + 1, batch * frames * 9, 2.0);
    for r in 0..batch * frames {
        spec[r * 18 + 9..r * 18 + 18].copy_from_slice(&ph[r * 9..r * 9 + 9]);
        if r % 7 == 3 {
            spec[r * 18 + r % 9] = 5.0;
        }
    }
    for (b, &len) in lens.iter().enumerate() {
        let len = (len.max(0) as usize).min(frames);
        spec[(b * frames + len) * 18..(b + 1) * frames * 18].fill(f32::NAN);
    }
    spec
}

/// Per-sample tolerance of hift_istft for `spec` (see [`ISTFT_ROUNDINGS`]); 0 for padding samples.
fn istft_tolerance(spec: &[f32], lens: Option<&[i32]>, batch: usize, frames: usize) -> Vec<f64> {
    let w = tts_kernels::cpu::hann16();
    let n_out = (frames - 1) * 4;
    let mut tol = vec![0f64; batch * n_out];
    for b in 0..batch {
        let len = lens.map_or(frames, |l| l[b] as usize);
        let mags: Vec<f64> = (0..len)
            .map(|f| {
                let (re, im) = tts_kernels::cpu::istft_bins(&spec[(b * frames + f) * 18..][..18]);
                re.iter().zip(&im).map(|(r, i)| (r.abs() + i.abs()) as f64).sum::<f64>() / 8.0
            })
            .collect();
        for n in 0..(len - 1) * 4 {
            let p = n + 8;
            let (mut scale, mut env) = (0f64, 0f64);
            for (f, m) in mags.iter().enumerate() {
                if 4 * f <= p && p < 4 * f + 16 {
                    scale += w[p - 4 * f] as f64 * m;
                    env += (w[p - 4 * f] as f64).powi(2);
                }
            }
            tol[b * n_out + n] = ISTFT_ABS + ISTFT_ROUNDINGS * f32::EPSILON as f64 / 2.0 * scale / env;
        }
    }
    tol
}

#[track_caller]
fn assert_istft_close(what: &str, got: &[f32], want: &[f32], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!((g as f64 - w as f64).abs() <= t, "{what}: [{i}] got {g}, want {w} (tolerance {t:e})");
    }
}

fn run_istft(
    dev: &Device,
    spec: &[f32],
    lens: Option<&[i32]>,
    batch: usize,
    frames: usize,
    clamp: f32,
) -> tts_kernels::Result<Vec<f32>> {
    let st = Tensor::from_f32(dev, DType::F32, &[batch, frames, 18], spec)?;
    let lt = lens.map(|l| Tensor::from_i32(dev, &[batch], l)).transpose()?;
    let mut out = Tensor::uninit(dev, DType::F32, &[batch, (frames - 1) * 4])?;
    ops::hift_istft(st.view(), lt.as_ref().map(|t| t.view()), out.view_mut(), clamp)?;
    out.to_f32_vec()
}

#[test]
fn hift_istft_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (batch, frames): 65 frames = exactly one block of 256 outputs, 66 one more sample
    let cases = [(1, 1), (1, 2), (3, 7), (2, 65), (3, 66), (2, 129), (3, 300)];
    for (i, &(batch, frames)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let lens = lens_for(s, batch, 1, frames);
        let spec = random_spec(s + 1, batch, frames, &lens);
        for clamp in [0.99, f32::INFINITY] {
            let want = run_istft(&cpu, &spec, Some(&lens), batch, frames, clamp).unwrap();
            assert!(want.iter().all(|v| v.is_finite()), "the reference read padding");
            if clamp < 1.0 && want.len() > 40 {
                assert!(want.iter().any(|v| v.abs() == clamp), "seed {s}: the clamp is never reached");
            }
            let tol = istft_tolerance(&spec, Some(&lens), batch, frames);
            for (label, dev) in &devices {
                let got = run_istft(dev, &spec, Some(&lens), batch, frames, clamp).unwrap();
                let what = format!("{label}: hift_istft [{batch}, {frames}] lens {lens:?} clamp {clamp} seed {s}");
                assert_istft_close(&what, &got, &want, &tol);
            }
        }
        let full = random_spec(s + 2, batch, frames, &vec![frames as i32; batch]);
        let want = run_istft(&cpu, &full, None, batch, frames, 0.99).unwrap();
        let tol = istft_tolerance(&full, None, batch, frames);
        for (label, dev) in &devices {
            let got = run_istft(dev, &full, None, batch, frames, 0.99).unwrap();
            assert_istft_close(&format!("{label}: hift_istft no lens [{batch}, {frames}] seed {s}"), &got, &want, &tol);
        }
    }
}

#[test]
fn hift_istft_of_a_batch_is_each_sequence_alone() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let (batch, frames) = (4, 90);
    let lens = [90, 1, 2, 67];
    let spec = random_spec(seed, batch, frames, &lens);
    let n = (frames - 1) * 4;
    for (label, dev) in &devices {
        let all = run_istft(dev, &spec, Some(&lens), batch, frames, 0.99).unwrap();
        for (b, &len) in lens.iter().enumerate() {
            let len = len as usize;
            let row = &all[b * n..(b + 1) * n];
            let alone = run_istft(dev, &spec[b * frames * 18..][..len * 18], None, 1, len, 0.99).unwrap();
            assert_close(&format!("{label}: batch {b} alone seed {seed}"), &row[..alone.len()], &alone, 0.0, 0.0);
            assert!(row[alone.len()..].iter().all(|&v| v == 0.0), "{label}: batch {b}: padding must be 0");
        }
    }
}

#[test]
fn out_of_range_lens_are_errors_on_cpu_and_nan_rows_on_kernels() {
    let cpu = Device::cpu();
    let good = vec![6, 0, 3];
    let case = SourceCase::with_lens(5, 6, 4, 24000.0, good.clone());
    let want = case.run(&cpu, Some(&good)).unwrap();
    let n = 24;
    let (frames, m) = (8, 28);
    let spec = random_spec(6, 3, frames, &[8, 8, 8]);
    let good_i = [8, 1, 5];
    let want_i = run_istft(&cpu, &spec, Some(&good_i), 3, frames, 0.99).unwrap();
    let tol_i = istft_tolerance(&spec, Some(&good_i), 3, frames);
    for bad in [[6, 7, 3], [6, -1, 3]] {
        let e = case.run(&cpu, Some(&bad)).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(&format!("batch 1: len {}", bad[1])), "{e}");
        for (label, dev) in kernel_devices() {
            let got = case.run(&dev, Some(&bad)).unwrap();
            assert!(got[n..2 * n].iter().all(|v| v.is_nan()), "{label}: source row 1 must be NaN");
            assert_close(&format!("{label}: source row 0"), &got[..n], &want[..n], 0.0, SOURCE_ABS);
            assert_close(&format!("{label}: source row 2"), &got[2 * n..], &want[2 * n..], 0.0, SOURCE_ABS);
        }
    }
    for bad in [[8, 0, 5], [8, 9, 5], [8, -3, 5]] {
        let e = run_istft(&cpu, &spec, Some(&bad), 3, frames, 0.99).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(&format!("batch 1: len {}", bad[1])), "{e}");
        for (label, dev) in kernel_devices() {
            let got = run_istft(&dev, &spec, Some(&bad), 3, frames, 0.99).unwrap();
            assert!(got[m..2 * m].iter().all(|v| v.is_nan()), "{label}: istft row 1 must be NaN");
            assert_istft_close(&format!("{label}: istft row 0"), &got[..m], &want_i[..m], &tol_i[..m]);
            assert_istft_close(&format!("{label}: istft row 2"), &got[2 * m..], &want_i[2 * m..], &tol_i[2 * m..]);
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    for (label, dev) in devices {
        let t = |shape: &[usize]| Tensor::zeros(&dev, DType::F32, shape).unwrap();
        let (f0, ph, nz, w, b) = (t(&[2, 3]), t(&[2, 9]), t(&[2, 9, 12]), t(&[9]), t(&[1]));
        let mut out = t(&[2, 12]);
        let lens = Tensor::from_i32(&dev, &[2], &[3, 1]).unwrap();
        let src = |f0: &Tensor,
                   lens: Option<&Tensor>,
                   ph: &Tensor,
                   nz: &Tensor,
                   w: &Tensor,
                   out: &mut Tensor,
                   up: usize,
                   sr: f32| {
            ops::hift_source(f0.view(), lens.map(|l| l.view()), ph.view(), nz.view(), w.view(), b.view(), out.view_mut(), up, sr)
        };
        assert!(src(&f0, Some(&lens), &ph, &nz, &w, &mut out, 4, 24000.0).is_ok(), "{label}");
        for (up, sr) in [(0, 24000.0), (4, 0.0), (4, f32::NAN), (4, f32::INFINITY), (4, -1.0)] {
            let e = src(&f0, None, &ph, &nz, &w, &mut out, up, sr).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{label}: up {up} sr {sr}: {e}");
        }
        let shape_errors = [
            src(&f0, None, &ph, &nz, &w, &mut out, 3, 24000.0), // noise and out for upsample 4
            src(&f0, None, &t(&[2, 8]), &nz, &w, &mut out, 4, 24000.0), // phases
            src(&f0, None, &ph, &t(&[2, 8, 12]), &w, &mut out, 4, 24000.0), // noise
            src(&f0, None, &ph, &nz, &t(&[8]), &mut out, 4, 24000.0), // weight
            src(&f0, None, &ph, &nz, &w, &mut t(&[2, 11]), 4, 24000.0), // out
            src(&t(&[6]), None, &ph, &nz, &w, &mut out, 4, 24000.0), // f0 rank
            src(&f0, Some(&Tensor::from_i32(&dev, &[3], &[1, 1, 1]).unwrap()), &ph, &nz, &w, &mut out, 4, 24000.0),
        ];
        for (i, e) in shape_errors.into_iter().enumerate() {
            assert!(matches!(e, Err(Error::Shape { .. })), "{label}: shape case {i}: {e:?}");
        }
        let f0_b = Tensor::zeros(&dev, DType::BF16, &[2, 3]).unwrap();
        let e = src(&f0_b, None, &ph, &nz, &w, &mut out, 4, 24000.0).unwrap_err();
        assert!(matches!(e, Error::DType { what: "f0", .. }), "{label}: {e}");
        let lens_f = t(&[2]);
        let e = src(&f0, Some(&lens_f), &ph, &nz, &w, &mut out, 4, 24000.0).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");

        // hift_istft
        let spec = t(&[2, 5, 18]);
        let mut o = t(&[2, 16]);
        assert!(ops::hift_istft(spec.view(), Some(lens.view()), o.view_mut(), 0.99).is_ok(), "{label}");
        assert!(ops::hift_istft(spec.view(), None, t(&[2, 1, 16]).view_mut(), 0.99).is_ok(), "{label}: [B, 1, N]");
        for clamp in [0.0, -1.0, f32::NAN] {
            let e = ops::hift_istft(spec.view(), None, o.view_mut(), clamp).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{label}: clamp {clamp}: {e}");
        }
        for (s, os) in [(&[2, 5, 17][..], &[2, 16][..]), (&[2, 5, 18], &[2, 17]), (&[2, 5, 18], &[3, 16]), (&[2, 0, 18], &[2, 0])]
        {
            let e = ops::hift_istft(t(s).view(), None, t(os).view_mut(), 0.99).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{label}: spec {s:?} out {os:?}: {e}");
        }
        let spec_b = Tensor::zeros(&dev, DType::BF16, &[2, 5, 18]).unwrap();
        let e = ops::hift_istft(spec_b.view(), None, o.view_mut(), 0.99).unwrap_err();
        assert!(matches!(e, Error::DType { what: "spec", .. }), "{label}: {e}");
        let lens3 = Tensor::from_i32(&dev, &[3], &[1, 1, 1]).unwrap();
        let e = ops::hift_istft(spec.view(), Some(lens3.view()), o.view_mut(), 0.99).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
    }
}
