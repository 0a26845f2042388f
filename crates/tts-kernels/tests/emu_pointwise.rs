//! The pointwise kernel family (`kernels/pointwise.cu`) against its Cpu reference ops, on every
//! kernel backend of this build and machine (Emu in forward, reverse and random thread schedules;
//! Cuda when a GPU is usable), with fresh random inputs (the seed is printed; `TTS_TEST_SEED`
//! replays it), odd shapes, every dtype combination, outputs that start poisoned (NaN on Emu) and
//! masked input rows poisoned with NaN (a kernel that reads them, or forgets to zero them, fails).
//!
//! Tolerances:
//! - f32 outputs: the kernels evaluate the reference's f32 formula in the same order (products that
//!   feed an add are `__fmul_rn`, so no FMA changes a rounding). Emu calls the same libm as the Cpu
//!   reference, except for the sine of Snake (`sincos_f32`, within 1 ulp of libm); CUDA's libm-level
//!   functions are within 2 ulp. That is a few f32 ulps of the result (1e-6 relative), or of one
//!   term of a cancellation: Gelu's `1 + erf` near −1 and Snake's `x + sin²/α` near 0 (|terms| ≲ 10
//!   here) get a 1e-6 absolute floor, every other activation 1e-8 (so that, e.g., `exp(x) − 1`
//!   instead of `expm1(x)` fails). Ops without a libm function (copies, adds, the Euler step) must
//!   match exactly.
//! - bf16 outputs: one rounding of an f32 value that is within the above of the reference: the
//!   bf16 rounding of the reference or a neighbour (1 bf16 ulp), or within the absolute floor.
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16};
use tts_kernels::{DType, Device, Error, Tensor, ops};

use ops::Activation;

const F32_REL: f64 = 1e-6;

/// The absolute floor of an activation's f32 tolerance (see the top of the file).
fn abs_floor(act: Activation) -> f64 {
    match act {
        Activation::Gelu | Activation::Snake => 1e-6,
        _ => 1e-8,
    }
}

/// Every element of the bf16 `got` is the bf16 rounding of the f32 reference `want`, one of its
/// two bf16 neighbours, or within `abs` of it; NaN only where `want` is NaN.
#[track_caller]
fn assert_bf16_within_ulp(what: &str, got: &[f32], want: &[f32], abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    // bf16 bits as an ordered integer (negative values below positive ones, ±0 adjacent)
    let key = |x: f32| -> i32 {
        let b = half::bf16::from_f32(x).to_bits() as i32;
        if b & 0x8000 != 0 { -(b & 0x7fff) } else { b }
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || g.is_nan() {
            assert!(w.is_nan() && g.is_nan(), "{what}: [{i}] got {g}, want {w}");
            continue;
        }
        assert_eq!(half::bf16::from_f32(g).to_f32(), g, "{what}: [{i}] {g} is not a bf16 value");
        let ulps = (key(g) - key(w)).abs();
        assert!(ulps <= 1 || (g as f64 - w as f64).abs() <= abs, "{what}: [{i}] got {g}, want {w} ({ulps} bf16 ulps)");
    }
}

const ALL: [Activation; 9] = [
    Activation::Identity,
    Activation::Silu,
    Activation::Gelu,
    Activation::Mish,
    Activation::LeakyRelu(0.2),
    Activation::Elu,
    Activation::Abs,
    Activation::Scale(-1.3),
    Activation::Snake,
];

/// One activation case: shape, inputs (x with NaN in masked rows), α, lens.
struct ActCase {
    shape: Vec<usize>,
    x: Vec<f32>,
    alpha: Vec<f32>,
    lens: Option<Vec<i32>>,
}

impl ActCase {
    fn random(seed: u64, shape: &[usize], masked: bool) -> ActCase {
        let len: usize = shape.iter().product();
        let c = *shape.last().unwrap();
        let mut x = random_f32(seed, len, 3.0);
        // a few exact and extreme values: 0, −0, large magnitudes (exp overflow / saturation), small ones
        for (i, v) in [0.0, -0.0, 25.0, -25.0, 95.0, -95.0, 1e-3, -1e-3].iter().enumerate() {
            if i < len {
                x[(i * 7919) % len] = *v;
            }
        }
        let mut x = round_bf16(&x); // bf16-exact: a bf16 x holds the same values
        let alpha: Vec<f32> = random_f32(seed + 1, c, 1.0).iter().map(|a| a.abs() + 0.2).collect();
        let lens = masked.then(|| {
            let (b, n) = (shape[0], shape[1]);
            let mut l = random_i32(seed + 2, b, 0, n as i32 + 1);
            l[0] = n as i32; // a full batch
            if b > 1 {
                l[1] = 0; // an empty one
            }
            if b > 2 {
                l[2] = if seed.is_multiple_of(2) { -3 } else { n as i32 + 5 }; // out-of-range lengths are valid
            }
            for (bi, &lb) in l.iter().enumerate() {
                for t in lb.max(0) as usize..n {
                    let at = (bi * n + t) * c;
                    x[at..at + c].fill(f32::NAN);
                }
            }
            l
        });
        ActCase { shape: shape.to_vec(), x, alpha, lens }
    }

    /// Runs the op out of place (x in `x_dt`, out in `out_dt`) or in place (`out_dt` ignored).
    fn run(&self, dev: &Device, act: Activation, x_dt: DType, out_dt: DType, inplace: bool) -> tts_kernels::Result<Vec<f32>> {
        let mut x = Tensor::from_f32(dev, x_dt, &self.shape, &self.x)?;
        let alpha = Tensor::from_f32(dev, DType::F32, &[self.alpha.len()], &self.alpha)?;
        let lens = self.lens.as_ref().map(|l| Tensor::from_i32(dev, &[l.len()], l)).transpose()?;
        let a = (act == Activation::Snake).then(|| alpha.view());
        let l = lens.as_ref().map(|l| l.view());
        if inplace {
            ops::activation_inplace(x.view_mut(), act, a, l)?;
            x.to_f32_vec()
        } else {
            let mut out = Tensor::uninit(dev, out_dt, &self.shape)?;
            ops::activation(x.view(), out.view_mut(), act, a, l)?;
            out.to_f32_vec()
        }
    }
}

#[test]
fn activation_matches_cpu_for_every_variant_dtype_and_mask() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (shape, masked): odd channel counts, N = 1, 7, 129, a 2-D tensor (no mask possible)
    let cases: [(&[usize], bool); 7] = [
        (&[1, 1, 3], true),
        (&[2, 7, 3], true),
        (&[3, 129, 5], true),
        (&[4, 33, 64], true),
        (&[2, 1, 80], false),
        (&[3, 19, 7], false),
        (&[37, 11], false),
    ];
    for (ci, &(shape, masked)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(ci as u64 * 1000);
        let c = ActCase::random(s, shape, masked);
        for act in ALL {
            let want = c.run(&cpu, act, DType::F32, DType::F32, false).unwrap();
            let want_inplace = c.run(&cpu, act, DType::F32, DType::F32, true).unwrap();
            assert_eq!(
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want_inplace.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "cpu: {act:?} in place differs"
            );
            if let Some(l) = &c.lens {
                // masked rows are zeros although x is NaN there
                let (n, ch) = (shape[1], shape[2]);
                for (b, &lb) in l.iter().enumerate() {
                    for t in lb.max(0) as usize..n {
                        assert!(want[(b * n + t) * ch..(b * n + t + 1) * ch].iter().all(|&v| v == 0.0), "cpu: {act:?} mask");
                    }
                }
            }
            for (label, dev) in &devices {
                let bf = dev.compute_dtype();
                for (x_dt, out_dt) in [(DType::F32, DType::F32), (bf, DType::F32), (DType::F32, bf), (bf, bf)] {
                    let what = format!("{label}: {act:?} {shape:?} x {x_dt} out {out_dt} lens {:?} seed {s}", c.lens);
                    let got = c.run(dev, act, x_dt, out_dt, false).unwrap();
                    if out_dt == DType::F32 {
                        assert_close(&what, &got, &want, F32_REL, abs_floor(act));
                    } else {
                        assert_bf16_within_ulp(&what, &got, &want, abs_floor(act));
                    }
                    if x_dt == out_dt {
                        let got = c.run(dev, act, x_dt, out_dt, true).unwrap();
                        let what = format!("{what} in place");
                        if out_dt == DType::F32 {
                            assert_close(&what, &got, &want, F32_REL, abs_floor(act));
                        } else {
                            assert_bf16_within_ulp(&what, &got, &want, abs_floor(act));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn activation_on_a_row_range_leaves_other_rows_alone() {
    let seed = fresh_seed();
    for (label, dev) in kernel_devices() {
        let (rows, cols) = (6, 9);
        let x0 = random_f32(seed, rows * cols, 1.0);
        let mut x = Tensor::from_f32(&dev, DType::F32, &[rows, cols], &x0).unwrap();
        let mut out = Tensor::uninit(&dev, dev.compute_dtype(), &[rows, cols]).unwrap();
        let xr = x.view().narrow_rows(2, 3).unwrap();
        ops::activation(xr, out.view_mut().narrow_rows(1, 3).unwrap(), Activation::Abs, None, None).unwrap();
        let o = out.to_f32_vec().unwrap();
        let want = round_bf16(&x0[2 * cols..5 * cols].iter().map(|v| v.abs()).collect::<Vec<_>>());
        assert_eq!(&o[cols..4 * cols], &want[..], "{label}");
        if dev.kind() == tts_kernels::BackendKind::Emu {
            assert!(o[..cols].iter().chain(&o[4 * cols..]).all(|v| v.is_nan()), "{label}: rows outside the range were written");
        }
        ops::activation_inplace(x.view_mut().narrow_rows(4, 1).unwrap(), Activation::Scale(2.0), None, None).unwrap();
        let after = x.to_f32_vec().unwrap();
        assert_eq!(&after[..4 * cols], &x0[..4 * cols], "{label}");
        assert_eq!(&after[5 * cols..], &x0[5 * cols..], "{label}");
        let doubled: Vec<f32> = x0[4 * cols..5 * cols].iter().map(|v| 2.0 * v).collect();
        assert_eq!(&after[4 * cols..5 * cols], &doubled[..], "{label}");
    }
}

#[test]
fn add_batch_bias_and_add_scaled_match_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    for (i, &(b, n, c)) in [(1, 1, 3), (2, 7, 3), (3, 129, 5), (2, 814, 256)].iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let y0 = random_f32(s, b * n * c, 2.0);
        let v = random_f32(s + 1, b * c, 1.0);
        let x = round_bf16(&random_f32(s + 2, b * n * c, 1.5));
        let scale = 0.37 + i as f32;
        let run = |dev: &Device, x_dt: DType| -> (Vec<f32>, Vec<f32>) {
            let mut y = Tensor::from_f32(dev, DType::F32, &[b, n, c], &y0).unwrap();
            let vt = Tensor::from_f32(dev, DType::F32, &[b, c], &v).unwrap();
            ops::add_batch_bias(y.view_mut(), vt.view()).unwrap();
            let biased = y.to_f32_vec().unwrap();
            let xt = Tensor::from_f32(dev, x_dt, &[b, n, c], &x).unwrap();
            ops::add_scaled(y.view_mut(), xt.view(), scale).unwrap();
            (biased, y.to_f32_vec().unwrap())
        };
        let (want_b, want_s) = run(&cpu, DType::F32);
        // an independent check of the reference
        for (j, w) in want_b.iter().enumerate() {
            let (bi, ci) = (j / (n * c), j % c);
            assert_eq!(*w, y0[j] + v[bi * c + ci]);
            assert_eq!(want_s[j], w + scale * x[j]);
        }
        for (label, dev) in &devices {
            for x_dt in [DType::F32, dev.compute_dtype()] {
                let (got_b, got_s) = run(dev, x_dt);
                let what = format!("{label}: [{b}, {n}, {c}] x {x_dt} seed {s}");
                // single f32 roundings of the same operations: exact
                assert_close(&format!("{what} add_batch_bias"), &got_b, &want_b, 0.0, 0.0);
                assert_close(&format!("{what} add_scaled"), &got_s, &want_s, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn write_cols_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (B, N, C_src, C_dst, offset, broadcast over time)
    for (i, &(b, n, cs, cd, off, bcast)) in [
        (1, 1, 3, 3, 0, false),
        (2, 7, 3, 10, 5, false),
        (3, 129, 5, 12, 7, true),
        (2, 33, 80, 320, 240, true),
        (2, 1, 4, 9, 2, true),
        (1, 129, 64, 130, 1, false),
    ]
    .iter()
    .enumerate()
    {
        let s = seed.wrapping_add(i as u64 * 1000);
        let sn = if bcast { 1 } else { n };
        let src = round_bf16(&random_f32(s, b * sn * cs, 1.0));
        // src in f32 with more than bf16 precision, to see the f32 -> bf16 rounding
        let src_fine = random_f32(s + 2, b * sn * cs, 1.0);
        let dst0 = round_bf16(&random_f32(s + 1, b * n * cd, 1.0));
        let run = |dev: &Device, src: &[f32], s_dt: DType, d_dt: DType| -> Vec<f32> {
            let st = Tensor::from_f32(dev, s_dt, &[b, sn, cs], src).unwrap();
            let mut dt = Tensor::from_f32(dev, d_dt, &[b, n, cd], &dst0).unwrap();
            ops::write_cols(st.view(), dt.view_mut(), off).unwrap();
            dt.to_f32_vec().unwrap()
        };
        for (label, dev) in &devices {
            let bf = dev.compute_dtype();
            for (s_dt, d_dt) in [(DType::F32, DType::F32), (bf, DType::F32), (DType::F32, bf), (bf, bf)] {
                for (fine, data) in [(false, &src), (true, &src_fine)] {
                    if fine && s_dt != DType::F32 {
                        continue;
                    }
                    let mut want = run(&cpu, data, DType::F32, DType::F32);
                    if d_dt != DType::F32 {
                        want = round_bf16(&want);
                    }
                    let got = run(dev, data, s_dt, d_dt);
                    let what =
                        format!("{label}: write_cols [{b}, {sn}, {cs}] -> [{b}, {n}, {cd}] @ {off} {s_dt} -> {d_dt} seed {s}");
                    assert_close(&what, &got, &want, 0.0, 0.0);
                }
            }
        }
        // the reference itself: written columns from src, the others untouched
        let want = run(&cpu, &src, DType::F32, DType::F32);
        for r in 0..b * n {
            let srow = (r / n) * sn + if bcast { 0 } else { r % n };
            for col in 0..cd {
                let w = if (off..off + cs).contains(&col) { src[srow * cs + col - off] } else { dst0[r * cd + col] };
                assert_eq!(want[r * cd + col], w, "cpu write_cols row {r} col {col}");
            }
        }
    }
}

#[test]
fn cfm_euler_cfg_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (B, N, C, C_in or none)
    for (i, &(b, n, c, c_in)) in
        [(1, 1, 3, Some(3)), (2, 7, 3, Some(8)), (1, 129, 80, Some(320)), (3, 33, 5, None), (2, 814, 80, Some(320))]
            .iter()
            .enumerate()
    {
        let s = seed.wrapping_add(i as u64 * 1000);
        let x0 = random_f32(s, b * n * c, 1.0);
        let v = random_f32(s + 1, 2 * b * n * c, 2.0);
        let (dt, cfg) = (0.1 + 0.013 * i as f32, 0.7);
        let est0 = c_in.map(|ci| round_bf16(&random_f32(s + 2, 2 * b * n * ci, 1.0)));
        let run = |dev: &Device, e_dt: DType| -> (Vec<f32>, Option<Vec<f32>>) {
            let mut x = Tensor::from_f32(dev, DType::F32, &[b, n, c], &x0).unwrap();
            let vt = Tensor::from_f32(dev, DType::F32, &[2 * b, n, c], &v).unwrap();
            let mut est = c_in.map(|ci| Tensor::from_f32(dev, e_dt, &[2 * b, n, ci], est0.as_ref().unwrap()).unwrap());
            ops::cfm_euler_cfg(x.view_mut(), vt.view(), est.as_mut().map(|e| e.view_mut()), dt, cfg).unwrap();
            (x.to_f32_vec().unwrap(), est.map(|e| e.to_f32_vec().unwrap()))
        };
        let (want_x, want_est) = run(&cpu, DType::F32);
        // the reference against the formula of flow_matching.py, and est rows b and B + b
        let len = b * n * c;
        for j in 0..len {
            let d = (1.0 + cfg) * v[j] - cfg * v[len + j];
            assert_eq!(want_x[j], x0[j] + dt * d, "cpu x[{j}]");
        }
        if let (Some(e), Some(ci), Some(e0)) = (&want_est, c_in, &est0) {
            for r in 0..2 * b * n {
                for col in 0..ci {
                    let w = if col < c { want_x[(r % (b * n)) * c + col] } else { e0[r * ci + col] };
                    assert_eq!(e[r * ci + col], w, "cpu est row {r} col {col}");
                }
            }
        }
        for (label, dev) in &devices {
            for e_dt in [DType::F32, dev.compute_dtype()] {
                let (got_x, got_est) = run(dev, e_dt);
                let what = format!("{label}: cfm_euler_cfg [{b}, {n}, {c}] est {c_in:?} {e_dt} seed {s}");
                assert_close(&format!("{what} x"), &got_x, &want_x, 0.0, 0.0);
                if let (Some(g), Some(w)) = (got_est, &want_est) {
                    let w = if e_dt == DType::F32 { w.clone() } else { round_bf16(w) };
                    assert_close(&format!("{what} est_in"), &g, &w, 0.0, 0.0);
                }
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let act = dev.compute_dtype();
        let f = |shape: &[usize]| Tensor::zeros(&dev, DType::F32, shape).unwrap();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let ints = |n: usize| Tensor::from_i32(&dev, &[n], &vec![1; n]).unwrap();
        let x = f(&[2, 3, 4]);
        let mut out = f(&[2, 3, 4]);
        let alpha = f(&[4]);
        let lens = ints(2);
        let shape_err = |e: Error| assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let invalid =
            |e: Error, s: &str| assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(s), "{label}: {e}");

        // activation: Snake without alpha, alpha on another activation, alpha of the wrong length / dtype
        invalid(ops::activation(x.view(), out.view_mut(), Activation::Snake, None, None).unwrap_err(), "alpha");
        invalid(ops::activation(x.view(), out.view_mut(), Activation::Silu, Some(alpha.view()), None).unwrap_err(), "alpha");
        invalid(ops::activation_inplace(out.view_mut(), Activation::Gelu, Some(alpha.view()), None).unwrap_err(), "alpha");
        shape_err(ops::activation(x.view(), out.view_mut(), Activation::Snake, Some(f(&[3]).view()), None).unwrap_err());
        let e = ops::activation(x.view(), out.view_mut(), Activation::Snake, Some(ints(4).view()), None).unwrap_err();
        assert!(matches!(e, Error::DType { what: "alpha", .. }), "{label}: {e}");
        // lens on a 2-D tensor, lens of the wrong count / dtype
        let x2 = f(&[6, 4]);
        let mut out2 = f(&[6, 4]);
        shape_err(ops::activation(x2.view(), out2.view_mut(), Activation::Mish, None, Some(lens.view())).unwrap_err());
        shape_err(ops::activation_inplace(out2.view_mut(), Activation::Mish, None, Some(lens.view())).unwrap_err());
        shape_err(ops::activation(x.view(), out.view_mut(), Activation::Mish, None, Some(ints(3).view())).unwrap_err());
        let e = ops::activation(x.view(), out.view_mut(), Activation::Mish, None, Some(f(&[2]).view())).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        // x / out shapes and dtypes
        shape_err(ops::activation(x.view(), f(&[2, 4, 3]).view_mut(), Activation::Elu, None, None).unwrap_err());
        let e = ops::activation(ints(24).view(), f(&[24]).view_mut(), Activation::Abs, None, None).unwrap_err();
        assert!(matches!(e, Error::DType { what: "x", .. }), "{label}: {e}");
        let mut bad_out = Tensor::zeros(&dev, DType::I32, &[2, 3, 4]).unwrap();
        let e = ops::activation(x.view(), bad_out.view_mut(), Activation::Abs, None, None).unwrap_err();
        assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        if act != DType::F32 {
            // Cpu has no bf16 activations; the kernels take both
            ops::activation(z(&[2, 3, 4]).view(), out.view_mut(), Activation::Abs, None, None).unwrap();
        } else {
            let e = ops::activation(
                Tensor::zeros(&dev, DType::BF16, &[2, 3, 4]).unwrap().view(),
                out.view_mut(),
                Activation::Abs,
                None,
                None,
            )
            .unwrap_err();
            assert!(matches!(e, Error::DType { what: "x", .. }), "{label}: {e}");
        }
        // another device
        let other = Tensor::zeros(&Device::cpu(), DType::F32, &[4]).unwrap();
        let e = ops::activation(x.view(), out.view_mut(), Activation::Snake, Some(other.view()), None).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");

        // add_batch_bias: v shape, y rank, dtypes
        shape_err(ops::add_batch_bias(out.view_mut(), f(&[2, 3]).view()).unwrap_err());
        shape_err(ops::add_batch_bias(out2.view_mut(), f(&[6, 4]).view()).unwrap_err());
        if act != DType::F32 {
            let e = ops::add_batch_bias(out.view_mut(), z(&[2, 4]).view()).unwrap_err();
            assert!(matches!(e, Error::DType { what: "v", .. }), "{label}: {e}");
            // add_scaled: y must be f32
            let e = ops::add_scaled(z(&[2, 3, 4]).view_mut(), x.view(), 1.0).unwrap_err();
            assert!(matches!(e, Error::DType { what: "y", .. }), "{label}: {e}");
        }
        shape_err(ops::add_scaled(out.view_mut(), x2.view(), 1.0).unwrap_err());

        // write_cols: columns past the end, batch mismatch, time mismatch, rank
        shape_err(ops::write_cols(f(&[2, 3, 3]).view(), out.view_mut(), 2).unwrap_err());
        shape_err(ops::write_cols(f(&[1, 3, 2]).view(), out.view_mut(), 0).unwrap_err());
        shape_err(ops::write_cols(f(&[2, 2, 2]).view(), out.view_mut(), 0).unwrap_err());
        shape_err(ops::write_cols(f(&[6, 2]).view(), out.view_mut(), 0).unwrap_err());
        ops::write_cols(f(&[2, 1, 2]).view(), out.view_mut(), 2).unwrap();
        let e = ops::write_cols(ints(12).view().reshape(&[2, 3, 2]).unwrap(), out.view_mut(), 0).unwrap_err();
        assert!(matches!(e, Error::DType { what: "src", .. }), "{label}: {e}");

        // cfm_euler_cfg: v not [2B, N, C], est_in narrower than C, wrong batch
        let mut xe = f(&[1, 3, 4]);
        shape_err(ops::cfm_euler_cfg(xe.view_mut(), f(&[1, 3, 4]).view(), None, 0.1, 0.7).unwrap_err());
        let v = f(&[2, 3, 4]);
        shape_err(ops::cfm_euler_cfg(xe.view_mut(), v.view(), Some(f(&[2, 3, 3]).view_mut()), 0.1, 0.7).unwrap_err());
        shape_err(ops::cfm_euler_cfg(xe.view_mut(), v.view(), Some(f(&[1, 3, 8]).view_mut()), 0.1, 0.7).unwrap_err());
        let e = ops::cfm_euler_cfg(
            xe.view_mut(),
            v.view(),
            Some(Tensor::zeros(&dev, DType::I32, &[2, 3, 8]).unwrap().view_mut()),
            0.1,
            0.7,
        )
        .unwrap_err();
        assert!(matches!(e, Error::DType { what: "est_in", .. }), "{label}: {e}");
        ops::cfm_euler_cfg(xe.view_mut(), v.view(), Some(z(&[2, 3, 8]).view_mut()), 0.1, 0.7).unwrap();
    }
}
