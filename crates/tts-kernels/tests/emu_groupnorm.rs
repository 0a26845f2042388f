//! The GroupNorm kernel (`group_norm_bf16`, kernels/groupnorm.cu) against its Cpu reference op, on
//! every kernel backend of this build and machine (Emu in forward, reverse and random thread
//! schedules; Cuda when a GPU is usable), with fresh random inputs (the seed is printed;
//! `TTS_TEST_SEED` replays it), odd shapes (1 and 2 channels per group, a group wider than a block,
//! T = 1), batches of different lengths including 0 and T whose padding frames are NaN in x (a kernel
//! that reads them turns its output NaN), and outputs filled with NaN before the call (padding frames
//! must become 0, nothing may stay NaN).
//!
//! Tolerances, as `layer_norm_matches_cpu` in emu_layernorm.rs: a bf16 output is one rounding of an
//! f32 value (2 ulp: 8e-3 relative, 1e-3 absolute floor for outputs near 0); an f32 output differs
//! from the Cpu reference (f64 sums) only by the f32 block reductions of the statistics (1e-5).
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16};
use tts_kernels::{BackendKind, DType, Device, Error, Tensor, ops};

const EPS: f32 = 1e-5;

/// Lengths in `0..=t`: the full length first, then (for larger batches) 0, then random ones.
fn lens_for(seed: u64, batch: usize, t: usize) -> Vec<i32> {
    let mut lens = random_i32(seed, batch, 1.min(t as i32), t as i32 + 1);
    lens[0] = t as i32;
    if batch > 2 {
        lens[1] = 0;
    }
    lens
}

/// `v` `[batch, t, c]` with the frames at and past `lens[b]` set to NaN.
fn poison_padding(v: &mut [f32], lens: &[i32], t: usize, c: usize) {
    for (b, &len) in lens.iter().enumerate() {
        v[(b * t + len as usize) * c..(b + 1) * t * c].fill(f32::NAN);
    }
}

/// Runs `ops::group_norm` on `dev` with `out` filled with NaN first; returns `out` as f32.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: &Device,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lens: Option<&[i32]>,
    shape: [usize; 3],
    groups: usize,
    out_dtype: DType,
) -> tts_kernels::Result<Vec<f32>> {
    let [b, _, c] = shape;
    let act = dev.compute_dtype();
    let xt = Tensor::from_f32(dev, DType::F32, &shape, x)?;
    let wt = Tensor::from_f32(dev, act, &[c], w)?;
    let bt = bias.map(|v| Tensor::from_f32(dev, act, &[c], v)).transpose()?;
    let lt = lens.map(|l| Tensor::from_i32(dev, &[b], l)).transpose()?;
    let mut out = Tensor::from_f32(dev, out_dtype, &shape, &vec![f32::NAN; x.len()])?;
    ops::group_norm(
        xt.view(),
        wt.view(),
        bt.as_ref().map(|t| t.view()),
        lt.as_ref().map(|t| t.view()),
        groups,
        out.view_mut(),
        EPS,
    )?;
    out.to_f32_vec()
}

/// Every padding frame of `out` is exactly 0 and no element is NaN.
#[track_caller]
fn assert_padding_zero_and_no_nan(what: &str, out: &[f32], lens: Option<&[i32]>, t: usize, c: usize) {
    if let Some(i) = out.iter().position(|v| v.is_nan()) {
        panic!("{what}: [{i}] is NaN (never written, or a padding frame of x was read)");
    }
    for (b, &len) in lens.unwrap_or(&[]).iter().enumerate() {
        let pad = &out[(b * t + len as usize) * c..(b + 1) * t * c];
        assert!(pad.iter().all(|&v| v == 0.0), "{what}: padding frames of batch {b} (len {len}) are not 0");
    }
}

const CASES: &[(usize, usize, usize, usize)] = &[
    // (batch, T, C, groups)
    (1, 1, 1, 1),
    (1, 1, 6, 3),
    (3, 37, 6, 3),    // 2 channels per group
    (3, 37, 96, 32),  // 3 channels per group
    (3, 1, 96, 32),   // T = 1: lens 1, 0, 1
    (2, 37, 96, 1),   // one group: LayerNorm over the whole [len, C] slab
    (4, 53, 256, 8),  // S3Gen's decoder widths
    (2, 7, 1040, 2),  // a group wider than a block (520 channels)
    (3, 200, 24, 24), // one channel per group, many frames
];

#[test]
fn group_norm_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        for (i, &(batch, t, c, groups)) in CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let lens = lens_for(s, batch, t);
            // a non-zero mean that differs between channels, and some spread
            let mut x: Vec<f32> =
                random_f32(s + 1, batch * t * c, 2.0).iter().enumerate().map(|(k, v)| v + 3.0 + (k % c % 5) as f32).collect();
            let w = round_bf16(&random_f32(s + 2, c, 1.0));
            let bias = round_bf16(&random_f32(s + 3, c, 1.0));
            let x_full = x.clone();
            poison_padding(&mut x, &lens, t, c);
            for with_bias in [true, false] {
                let b = with_bias.then_some(&bias[..]);
                let what =
                    format!("{label}: group_norm [{batch}, {t}, {c}] groups {groups} lens {lens:?} bias {with_bias} seed {s}");
                let want = run(&cpu, &x, &w, b, Some(&lens), [batch, t, c], groups, DType::F32).unwrap();
                assert_padding_zero_and_no_nan(&format!("{what} (cpu)"), &want, Some(&lens), t, c);
                let got = run(&dev, &x, &w, b, Some(&lens), [batch, t, c], groups, act).unwrap();
                assert_padding_zero_and_no_nan(&what, &got, Some(&lens), t, c);
                assert_close(&what, &got, &want, BF16_REL, 1e-3);
                let got = run(&dev, &x, &w, b, Some(&lens), [batch, t, c], groups, DType::F32).unwrap();
                assert_padding_zero_and_no_nan(&format!("{what} f32 out"), &got, Some(&lens), t, c);
                assert_close(&format!("{what} f32 out"), &got, &want, 1e-5, 1e-5);
            }
            // without lens every frame is valid
            let what = format!("{label}: group_norm [{batch}, {t}, {c}] groups {groups} no lens seed {s}");
            let want = run(&cpu, &x_full, &w, Some(&bias), None, [batch, t, c], groups, DType::F32).unwrap();
            let got = run(&dev, &x_full, &w, Some(&bias), None, [batch, t, c], groups, act).unwrap();
            assert_padding_zero_and_no_nan(&what, &got, None, t, c);
            assert_close(&what, &got, &want, BF16_REL, 1e-3);
            let got = run(&dev, &x_full, &w, Some(&bias), None, [batch, t, c], groups, DType::F32).unwrap();
            assert_close(&format!("{what} f32 out"), &got, &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn group_norm_of_a_batch_is_each_item_alone() {
    // the statistics of an item read only its valid frames, in the same order batched or alone
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let (batch, t, c, groups) = (4, 41, 48, 8);
    let lens = vec![41, 1, 17, 0];
    let mut x = random_f32(seed, batch * t * c, 1.5);
    poison_padding(&mut x, &lens, t, c);
    let w = round_bf16(&random_f32(seed + 1, c, 1.0));
    let bias = round_bf16(&random_f32(seed + 2, c, 1.0));
    for (label, dev) in devices {
        let act = dev.compute_dtype();
        let all = run(&dev, &x, &w, Some(&bias), Some(&lens), [batch, t, c], groups, act).unwrap();
        for (b, &len) in lens.iter().enumerate() {
            let len = len as usize;
            if len == 0 {
                continue;
            }
            let xb = &x[b * t * c..(b * t + len) * c];
            let alone = run(&dev, xb, &w, Some(&bias), None, [1, len, c], groups, act).unwrap();
            assert_close(&format!("{label}: batch {b} (len {len}) seed {seed}"), &all[b * t * c..][..len * c], &alone, 0.0, 0.0);
        }
    }
}

#[test]
fn out_of_range_lens_are_errors_on_cpu_and_nan_on_kernels() {
    let cpu = Device::cpu();
    let (batch, t, c, groups) = (3, 6, 8, 4);
    let x = random_f32(3, batch * t * c, 1.0);
    let w = round_bf16(&random_f32(4, c, 1.0));
    let item = t * c;
    for bad in [[6, 7, 2], [6, -1, 2]] {
        let e = run(&cpu, &x, &w, None, Some(&bad), [batch, t, c], groups, DType::F32).unwrap_err();
        assert!(
            matches!(e, Error::Invalid { op: "group_norm", .. }) && e.to_string().contains(&format!("batch 1: len {}", bad[1])),
            "{e}"
        );
        let good = [6, 0, 2];
        for (label, dev) in kernel_devices() {
            for od in [dev.compute_dtype(), DType::F32] {
                let want = run(&dev, &x, &w, None, Some(&good), [batch, t, c], groups, od).unwrap();
                let got = run(&dev, &x, &w, None, Some(&bad), [batch, t, c], groups, od).unwrap();
                assert!(got[item..2 * item].iter().all(|v| v.is_nan()), "{label}: batch 1 (len {}) must be NaN", bad[1]);
                // the other items are untouched by batch 1's length (same kernel, same data: exact)
                assert_close(&format!("{label}: batch 0"), &got[..item], &want[..item], 0.0, 0.0);
                assert_close(&format!("{label}: batch 2"), &got[2 * item..], &want[2 * item..], 0.0, 0.0);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    for (label, dev) in devices {
        let act = dev.compute_dtype();
        let (b, t, c) = (2, 5, 12);
        let x = Tensor::zeros(&dev, DType::F32, &[b, t, c]).unwrap();
        let w = Tensor::zeros(&dev, act, &[c]).unwrap();
        let bias = Tensor::zeros(&dev, act, &[c]).unwrap();
        let lens = Tensor::from_i32(&dev, &[b], &[5, 3]).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[b, t, c]).unwrap();
        let gn =
            |x: &Tensor, w: &Tensor, bias: Option<&Tensor>, lens: Option<&Tensor>, groups: usize, out: &mut Tensor, eps: f32| {
                ops::group_norm(x.view(), w.view(), bias.map(|t| t.view()), lens.map(|t| t.view()), groups, out.view_mut(), eps)
            };
        let shape_err = |r: tts_kernels::Result<()>, what: &str| {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Shape { op: "group_norm", .. }), "{label}: {what}: {e}");
        };
        let invalid_err = |r: tts_kernels::Result<()>, what: &str| {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Invalid { op: "group_norm", .. }), "{label}: {what}: {e}");
        };
        assert!(gn(&x, &w, Some(&bias), Some(&lens), 4, &mut out, 1e-5).is_ok(), "{label}");
        assert!(gn(&x, &w, None, None, 12, &mut out, 0.0).is_ok(), "{label}");

        // groups: 0, not dividing C, more than C
        invalid_err(gn(&x, &w, None, None, 0, &mut out, 1e-5), "groups 0");
        shape_err(gn(&x, &w, None, None, 5, &mut out, 1e-5), "C % groups");
        shape_err(gn(&x, &w, None, None, 24, &mut out, 1e-5), "groups > C");
        // eps: negative, NaN, infinite
        for eps in [-1e-5, f32::NAN, f32::INFINITY] {
            invalid_err(gn(&x, &w, None, None, 4, &mut out, eps), &format!("eps {eps}"));
        }
        // shapes: rank, out, weight, bias, lens, C = 0
        let x2 = Tensor::zeros(&dev, DType::F32, &[b * t, c]).unwrap();
        let mut out2 = Tensor::zeros(&dev, act, &[b * t, c]).unwrap();
        shape_err(gn(&x2, &w, None, None, 4, &mut out2, 1e-5), "rank 2");
        let mut out_t = Tensor::zeros(&dev, act, &[b, t + 1, c]).unwrap();
        shape_err(gn(&x, &w, None, None, 4, &mut out_t, 1e-5), "out shape");
        let w11 = Tensor::zeros(&dev, act, &[c - 1]).unwrap();
        shape_err(gn(&x, &w11, None, None, 4, &mut out, 1e-5), "weight length");
        shape_err(gn(&x, &w, Some(&w11), None, 4, &mut out, 1e-5), "bias length");
        let w_2d = Tensor::zeros(&dev, act, &[1, c]).unwrap();
        shape_err(gn(&x, &w_2d, None, None, 4, &mut out, 1e-5), "weight rank");
        let lens3 = Tensor::from_i32(&dev, &[3], &[5, 3, 1]).unwrap();
        shape_err(gn(&x, &w, None, Some(&lens3), 4, &mut out, 1e-5), "lens length");
        let x0 = Tensor::zeros(&dev, DType::F32, &[b, t, 0]).unwrap();
        let w0 = Tensor::zeros(&dev, act, &[0]).unwrap();
        let mut out0 = Tensor::zeros(&dev, act, &[b, t, 0]).unwrap();
        shape_err(gn(&x0, &w0, None, None, 1, &mut out0, 1e-5), "C = 0");
        // dtypes: x bf16, weight / bias / out of the wrong dtype, lens f32
        let xb = Tensor::zeros(&dev, DType::BF16, &[b, t, c]).unwrap();
        let e = gn(&xb, &w, None, None, 4, &mut out, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DType { op: "group_norm", what: "x", .. }), "{label}: {e}");
        let other = if act == DType::F32 { DType::BF16 } else { DType::F32 };
        let w_other = Tensor::zeros(&dev, other, &[c]).unwrap();
        let e = gn(&x, &w_other, None, None, 4, &mut out, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DType { what: "weight", .. }), "{label}: {e}");
        let e = gn(&x, &w, Some(&w_other), None, 4, &mut out, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DType { what: "bias", .. }), "{label}: {e}");
        let mut out_i = Tensor::zeros(&dev, DType::I32, &[b, t, c]).unwrap();
        let e = gn(&x, &w, None, None, 4, &mut out_i, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        if act != DType::BF16 {
            let mut out_b = Tensor::zeros(&dev, DType::BF16, &[b, t, c]).unwrap();
            let e = gn(&x, &w, None, None, 4, &mut out_b, 1e-5).unwrap_err();
            assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        }
        let lens_f = Tensor::zeros(&dev, DType::F32, &[b]).unwrap();
        let e = gn(&x, &w, None, Some(&lens_f), 4, &mut out, 1e-5).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        // another device's tensor (every argument in turn)
        if dev.kind() != BackendKind::Cpu {
            let cpu = Device::cpu();
            let x_c = Tensor::zeros(&cpu, DType::F32, &[b, t, c]).unwrap();
            let w_c = Tensor::zeros(&cpu, DType::F32, &[c]).unwrap();
            let l_c = Tensor::from_i32(&cpu, &[b], &[5, 3]).unwrap();
            let mut o_c = Tensor::zeros(&cpu, DType::F32, &[b, t, c]).unwrap();
            for r in [
                gn(&x_c, &w, None, None, 4, &mut out, 1e-5),
                gn(&x, &w_c, None, None, 4, &mut out, 1e-5),
                gn(&x, &w, Some(&w_c), None, 4, &mut out, 1e-5),
                gn(&x, &w, None, Some(&l_c), 4, &mut out, 1e-5),
                gn(&x, &w, None, None, 4, &mut o_c, 1e-5),
            ] {
                let e = r.unwrap_err();
                assert!(matches!(e, Error::DeviceMismatch { op: "group_norm" }), "{label}: {e}");
            }
        }
        // empty batches and sequences are no-ops
        for shape in [[0, t, c], [b, 0, c]] {
            let xe = Tensor::zeros(&dev, DType::F32, &shape).unwrap();
            let mut oe = Tensor::zeros(&dev, act, &shape).unwrap();
            let le = Tensor::from_i32(&dev, &[shape[0]], &vec![0; shape[0]]).unwrap();
            assert!(gn(&xe, &w, None, Some(&le), 4, &mut oe, 1e-5).is_ok(), "{label}: {shape:?}");
        }
    }
}
