//! The conv kernels (`im2col_1d`, `col2im_transpose_1d`) against their Cpu reference ops, on every
//! kernel backend of this build and machine (Emu in forward, reverse and random thread schedules;
//! Cuda when a GPU is usable), with fresh random inputs (the seed is printed; `TTS_TEST_SEED`
//! replays it), odd shapes, batches of different lengths whose padding rows are NaN (a kernel that
//! reads them turns its output NaN), and outputs that start poisoned (NaN) on Emu.
use tts_kernels::ops::{Im2col, PadMode};
use tts_kernels::testing::{assert_bits_eq, assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16};
use tts_kernels::{DType, Device, Error, Tensor, ops};

/// Random lengths in `0..=l_in` with the full length first and, for larger batches, a length-1
/// and a length-0 sequence.
fn lens_for(seed: u64, batch: usize, l_in: usize) -> Vec<i32> {
    let mut lens = random_i32(seed, batch, 0, l_in as i32 + 1);
    lens[0] = l_in as i32;
    if batch > 2 {
        lens[1] = 1.min(l_in as i32);
        lens[2] = 0;
    }
    lens
}

/// `v` `[batch, l, width]` with the rows at and past `lens[b]` set to NaN.
fn poison_padding(v: &mut [f32], lens: &[i32], l: usize, width: usize) {
    for (b, &len) in lens.iter().enumerate() {
        v[(b * l + len as usize) * width..(b + 1) * l * width].fill(f32::NAN);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_im2col(
    dev: &Device,
    x: &[f32],
    lens: Option<&[i32]>,
    shape: [usize; 3],
    l_out: usize,
    p: Im2col,
    x_dtype: DType,
    out_dtype: DType,
) -> tts_kernels::Result<Vec<f32>> {
    let [b, _, c] = shape;
    let xt = Tensor::from_f32(dev, x_dtype, &shape, x)?;
    let lt = lens.map(|l| Tensor::from_i32(dev, &[b], l)).transpose()?;
    let mut out = Tensor::uninit(dev, out_dtype, &[b, l_out, c * p.kernel])?;
    ops::im2col(xt.view(), lt.as_ref().map(|t| t.view()), out.view_mut(), p)?;
    out.to_f32_vec()
}

/// The natural output length of a convolution over `s` samples (at least 1).
fn conv_out_len(s: usize, p: &Im2col, pad_right: usize) -> usize {
    (s + p.pad_left + pad_right).saturating_sub(p.dilation * (p.kernel - 1) + 1) / p.stride + 1
}

const IM2COL_CASES: &[(usize, usize, usize, Im2col)] = &[
    // (batch, l_in, channels, geometry)
    (1, 1, 1, Im2col { kernel: 1, stride: 1, dilation: 1, pad_left: 0, upsample: 1, pad: PadMode::Zero }),
    // S3Gen's estimator convs: K = 3, padding 1
    (3, 7, 3, Im2col { kernel: 3, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero }),
    // HiFT ResBlock: K = 11, dilation 5, padding 25
    (2, 129, 3, Im2col { kernel: 11, stride: 1, dilation: 5, pad_left: 25, upsample: 1, pad: PadMode::Zero }),
    // strided with reflection (source downsampling, STFT framing)
    (3, 33, 5, Im2col { kernel: 7, stride: 2, dilation: 1, pad_left: 3, upsample: 1, pad: PadMode::Reflect }),
    // upsampling before the taps, reflected
    (4, 17, 4, Im2col { kernel: 4, stride: 2, dilation: 1, pad_left: 2, upsample: 3, pad: PadMode::Reflect }),
    (3, 9, 2, Im2col { kernel: 2, stride: 3, dilation: 2, pad_left: 0, upsample: 2, pad: PadMode::Zero }),
    // padding beyond one reflection for short sequences
    (3, 5, 3, Im2col { kernel: 9, stride: 1, dilation: 1, pad_left: 6, upsample: 1, pad: PadMode::Reflect }),
    // wide channels (coalesced rows), many blocks
    (2, 40, 67, Im2col { kernel: 3, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero }),
];

#[test]
fn im2col_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        for (i, &(batch, l_in, c, p)) in IM2COL_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let lens = lens_for(s, batch, l_in);
            // bf16-representable values: a copy is exact in either dtype
            let mut x = round_bf16(&random_f32(s + 1, batch * l_in * c, 1.0));
            poison_padding(&mut x, &lens, l_in, c);
            let l_out = conv_out_len(l_in * p.upsample, &p, p.pad_left) + (s % 3) as usize;
            let want = run_im2col(&cpu, &x, Some(&lens), [batch, l_in, c], l_out, p, DType::F32, DType::F32).unwrap();
            assert!(want.iter().all(|v| v.is_finite()), "the reference read a padding row");
            for (xd, od) in [(act, act), (DType::F32, act), (act, DType::F32), (DType::F32, DType::F32)] {
                let got = run_im2col(&dev, &x, Some(&lens), [batch, l_in, c], l_out, p, xd, od).unwrap();
                let what = format!("{label}: im2col {p:?} [{batch}, {l_in}, {c}] lens {lens:?} x {xd} out {od} seed {s}");
                assert_close(&what, &got, &want, 0.0, 0.0);
            }
            // without lens: every row is valid
            let x_full = round_bf16(&random_f32(s + 2, batch * l_in * c, 1.0));
            let want = run_im2col(&cpu, &x_full, None, [batch, l_in, c], l_out, p, DType::F32, DType::F32).unwrap();
            let got = run_im2col(&dev, &x_full, None, [batch, l_in, c], l_out, p, act, act).unwrap();
            assert_close(&format!("{label}: im2col {p:?} no lens seed {s}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn im2col_of_a_batch_is_each_sequence_alone() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let (batch, l_in, c) = (4, 23, 3);
    let p = Im2col { kernel: 5, stride: 2, dilation: 2, pad_left: 4, upsample: 2, pad: PadMode::Reflect };
    let lens = vec![23, 1, 9, 16];
    let mut x = round_bf16(&random_f32(seed, batch * l_in * c, 1.0));
    poison_padding(&mut x, &lens, l_in, c);
    let l_out = conv_out_len(l_in * 2, &p, 4);
    let ck = c * p.kernel;
    for (label, dev) in devices {
        let act = dev.compute_dtype();
        let all = run_im2col(&dev, &x, Some(&lens), [batch, l_in, c], l_out, p, act, act).unwrap();
        for (b, &len) in lens.iter().enumerate() {
            let len = len as usize;
            let xb = &x[b * l_in * c..(b * l_in + len) * c];
            let alone = run_im2col(&dev, xb, None, [1, len, c], l_out, p, act, act).unwrap();
            assert_close(
                &format!("{label}: batch {b} (len {len}) seed {seed}"),
                &all[b * l_out * ck..][..l_out * ck],
                &alone,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn conv1d_through_im2col_and_linear_matches_cpu() {
    // the intended use: Conv1d(C_in -> C_out, K) = im2col, then linear with the torch weight
    // (C_out, C_in, K) viewed as [C_out, C_in·K], bias added by the GEMM
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let (batch, l_in, c_in, c_out) = (3, 37, 5, 7);
    let p = Im2col { kernel: 7, stride: 1, dilation: 3, pad_left: 9, upsample: 1, pad: PadMode::Zero };
    let lens = lens_for(seed, batch, l_in);
    let mut x = round_bf16(&random_f32(seed, batch * l_in * c_in, 1.0));
    poison_padding(&mut x, &lens, l_in, c_in);
    let w = round_bf16(&random_f32(seed + 1, c_out * c_in * p.kernel, 0.3));
    let bias = round_bf16(&random_f32(seed + 2, c_out, 1.0));
    let l_out = l_in;
    let run = |dev: &Device| {
        let act = dev.compute_dtype();
        let xt = Tensor::from_f32(dev, act, &[batch, l_in, c_in], &x).unwrap();
        let lt = Tensor::from_i32(dev, &[batch], &lens).unwrap();
        let wt = Tensor::from_f32(dev, dev.weight_dtype(), &[c_out, c_in * p.kernel], &w).unwrap();
        let bt = Tensor::from_f32(dev, act, &[c_out], &bias).unwrap();
        let mut cols = Tensor::uninit(dev, act, &[batch, l_out, c_in * p.kernel]).unwrap();
        ops::im2col(xt.view(), Some(lt.view()), cols.view_mut(), p).unwrap();
        let mut y = Tensor::uninit(dev, DType::F32, &[batch, l_out, c_out]).unwrap();
        ops::linear(cols.view(), wt.view(), Some(bt.view()), y.view_mut()).unwrap();
        y.to_f32_vec().unwrap()
    };
    let want = run(&cpu);
    // direct formula on Cpu output: one spot check that the weight layout is torch's
    let (b, t, o) = (0, 5, 3);
    let mut direct = bias[o] as f64;
    for ci in 0..c_in {
        for j in 0..p.kernel {
            let pos = (t + j * p.dilation) as i64 - p.pad_left as i64;
            if pos >= 0 && pos < lens[b] as i64 {
                direct += w[(o * c_in + ci) * p.kernel + j] as f64 * x[(b * l_in + pos as usize) * c_in + ci] as f64;
            }
        }
    }
    assert!(
        (want[(b * l_out + t) * c_out + o] as f64 - direct).abs() < 1e-4,
        "{} vs {direct}",
        want[(b * l_out + t) * c_out + o]
    );
    for (label, dev) in kernel_devices() {
        // f32 output of a bf16 GEMM over exactly representable inputs: f32 accumulation-order noise
        assert_close(&format!("{label}: conv1d seed {seed}"), &run(&dev), &want, 1e-5, 1e-5);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_col2im(
    dev: &Device,
    cols: &[f32],
    lens: Option<&[i32]>,
    bias: Option<&[f32]>,
    shape: [usize; 3],
    l_out: usize,
    c: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> tts_kernels::Result<Vec<f32>> {
    let b = shape[0];
    let ct = Tensor::from_f32(dev, DType::F32, &shape, cols)?;
    let lt = lens.map(|l| Tensor::from_i32(dev, &[b], l)).transpose()?;
    let bt = bias.map(|v| Tensor::from_f32(dev, dev.compute_dtype(), &[c], v)).transpose()?;
    let mut out = Tensor::uninit(dev, DType::F32, &[b, l_out, c])?;
    ops::col2im_transpose(
        ct.view(),
        lt.as_ref().map(|t| t.view()),
        bt.as_ref().map(|t| t.view()),
        out.view_mut(),
        kernel,
        stride,
        pad,
    )?;
    out.to_f32_vec()
}

const COL2IM_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    // (batch, l_in, channels, kernel, stride, pad)
    (1, 1, 1, 1, 1, 0),
    (3, 7, 3, 16, 8, 4), // HiFT ups: k16 s8, padding (16 − 8) / 2
    (2, 129, 3, 11, 5, 3),
    (3, 13, 5, 7, 3, 2),
    (2, 20, 4, 3, 1, 1), // stride 1: every tap
    (3, 9, 2, 4, 6, 0),  // stride > kernel: gaps
    (2, 11, 3, 5, 2, 7), // pad > kernel
    (2, 33, 70, 16, 8, 4),
];

#[test]
fn col2im_transpose_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(batch, l_in, c, k, stride, pad)) in COL2IM_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let lens = lens_for(s, batch, l_in);
            let mut cols = random_f32(s + 1, batch * l_in * c * k, 1.0);
            poison_padding(&mut cols, &lens, l_in, c * k);
            let bias = round_bf16(&random_f32(s + 2, c, 1.0));
            let l_out = ((l_in - 1) * stride + k).saturating_sub(2 * pad).max(1) + (s % 3) as usize;
            for with_bias in [true, false] {
                let b = with_bias.then_some(&bias[..]);
                let want = run_col2im(&cpu, &cols, Some(&lens), b, [batch, l_in, c * k], l_out, c, k, stride, pad).unwrap();
                assert!(want.iter().all(|v| v.is_finite()), "the reference read a padding row");
                let got = run_col2im(&dev, &cols, Some(&lens), b, [batch, l_in, c * k], l_out, c, k, stride, pad).unwrap();
                // the same f32 additions in the same order (j ascending, bias last): bit-exact
                let what = format!(
                    "{label}: col2im k{k} s{stride} p{pad} [{batch}, {l_in}, {c}] lens {lens:?} bias {with_bias} seed {s}"
                );
                assert_close(&what, &got, &want, 0.0, 0.0);
            }
            let full = random_f32(s + 3, batch * l_in * c * k, 1.0);
            let want = run_col2im(&cpu, &full, None, Some(&bias), [batch, l_in, c * k], l_out, c, k, stride, pad).unwrap();
            let got = run_col2im(&dev, &full, None, Some(&bias), [batch, l_in, c * k], l_out, c, k, stride, pad).unwrap();
            assert_close(&format!("{label}: col2im no lens k{k} s{stride} seed {s}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn conv_transpose1d_through_linear_and_col2im_matches_cpu() {
    // ConvTranspose1d(C_in -> C_out, K=16, stride 8, padding 4) as HiFT's ups: linear with the torch
    // weight (C_in, C_out, K) transposed to [C_out·K, C_in] (f32 output), then col2im_transpose
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let (batch, l_in, c_in, c_out, k, stride, pad) = (3, 19, 6, 5, 16, 8, 4);
    let lens = lens_for(seed, batch, l_in);
    let mut x = round_bf16(&random_f32(seed, batch * l_in * c_in, 1.0));
    poison_padding(&mut x, &lens, l_in, c_in);
    let w = round_bf16(&random_f32(seed + 1, c_in * c_out * k, 0.3));
    let mut wt = vec![0f32; c_out * k * c_in];
    for ci in 0..c_in {
        for o in 0..c_out {
            for j in 0..k {
                wt[(o * k + j) * c_in + ci] = w[(ci * c_out + o) * k + j];
            }
        }
    }
    let bias = round_bf16(&random_f32(seed + 2, c_out, 1.0));
    let l_out = (l_in - 1) * stride + k - 2 * pad;
    let run = |dev: &Device| {
        let act = dev.compute_dtype();
        let xt = Tensor::from_f32(dev, act, &[batch, l_in, c_in], &x).unwrap();
        let lt = Tensor::from_i32(dev, &[batch], &lens).unwrap();
        let wtt = Tensor::from_f32(dev, dev.weight_dtype(), &[c_out * k, c_in], &wt).unwrap();
        let bt = Tensor::from_f32(dev, act, &[c_out], &bias).unwrap();
        let mut cols = Tensor::uninit(dev, DType::F32, &[batch, l_in, c_out * k]).unwrap();
        ops::linear(xt.view(), wtt.view(), None, cols.view_mut()).unwrap();
        let mut y = Tensor::uninit(dev, DType::F32, &[batch, l_out, c_out]).unwrap();
        ops::col2im_transpose(cols.view(), Some(lt.view()), Some(bt.view()), y.view_mut(), k, stride, pad).unwrap();
        y.to_f32_vec().unwrap()
    };
    let want = run(&cpu);
    // spot check against the scatter definition: y[i·s + j − p] += w[c, o, j]·x[i, c]
    let (b, t, o) = (0, 13, 2);
    let mut direct = bias[o] as f64;
    for i in 0..lens[b] as usize {
        for j in 0..k {
            if i * stride + j == t + pad {
                for ci in 0..c_in {
                    direct += w[(ci * c_out + o) * k + j] as f64 * x[(b * l_in + i) * c_in + ci] as f64;
                }
            }
        }
    }
    assert!(
        (want[(b * l_out + t) * c_out + o] as f64 - direct).abs() < 1e-4,
        "{} vs {direct}",
        want[(b * l_out + t) * c_out + o]
    );
    for (label, dev) in kernel_devices() {
        // f32 GEMM outputs over bf16-exact inputs: f32 accumulation-order noise only
        assert_close(&format!("{label}: conv_transpose1d seed {seed}"), &run(&dev), &want, 1e-5, 1e-5);
    }
}

#[test]
fn out_of_range_lens_are_errors_on_cpu_and_nan_rows_on_kernels() {
    let cpu = Device::cpu();
    let (batch, l_in, c) = (3, 6, 2);
    let p = Im2col { kernel: 3, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero };
    let x = round_bf16(&random_f32(3, batch * l_in * c, 1.0));
    let ck = c * p.kernel;
    for bad in [[6, 7, 2], [6, -1, 2]] {
        let e = run_im2col(&cpu, &x, Some(&bad), [batch, l_in, c], l_in, p, DType::F32, DType::F32).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(&format!("batch 1: len {}", bad[1])), "{e}");
        let cols = random_f32(4, batch * l_in * ck, 1.0);
        let e = run_col2im(&cpu, &cols, Some(&bad), None, [batch, l_in, ck], 8, c, 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("batch 1"), "{e}");
        let good = [6, 0, 2];
        let want = run_im2col(&cpu, &x, Some(&good), [batch, l_in, c], l_in, p, DType::F32, DType::F32).unwrap();
        let want_c = run_col2im(&cpu, &cols, Some(&good), None, [batch, l_in, ck], 8, c, 3, 2, 1).unwrap();
        for (label, dev) in kernel_devices() {
            let act = dev.compute_dtype();
            for od in [act, DType::F32] {
                let got = run_im2col(&dev, &x, Some(&bad), [batch, l_in, c], l_in, p, act, od).unwrap();
                let row = l_in * ck;
                assert!(got[row..2 * row].iter().all(|v| v.is_nan()), "{label}: batch 1 must be NaN");
                assert_close(&format!("{label}: im2col batch 0"), &got[..row], &want[..row], 0.0, 0.0);
                assert_close(&format!("{label}: im2col batch 2"), &got[2 * row..], &want[2 * row..], 0.0, 0.0);
            }
            let got = run_col2im(&dev, &cols, Some(&bad), None, [batch, l_in, ck], 8, c, 3, 2, 1).unwrap();
            let row = 8 * c;
            assert!(got[row..2 * row].iter().all(|v| v.is_nan()), "{label}: col2im batch 1 must be NaN");
            assert_close(&format!("{label}: col2im batch 0"), &got[..row], &want_c[..row], 0.0, 0.0);
            assert_close(&format!("{label}: col2im batch 2"), &got[2 * row..], &want_c[2 * row..], 0.0, 0.0);
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut devices = vec![("cpu".to_string(), Device::cpu())];
    devices.extend(kernel_devices());
    let p = Im2col { kernel: 3, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero };
    for (label, dev) in devices {
        let act = dev.compute_dtype();
        let x = Tensor::zeros(&dev, act, &[2, 5, 4]).unwrap();
        let lens = Tensor::from_i32(&dev, &[2], &[5, 3]).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[2, 5, 12]).unwrap();
        assert!(ops::im2col(x.view(), Some(lens.view()), out.view_mut(), p).is_ok(), "{label}");
        let geoms = [
            Im2col { kernel: 0, ..p },
            Im2col { stride: 0, ..p },
            Im2col { dilation: 0, ..p },
            Im2col { upsample: 0, ..p },
            Im2col { pad_left: 1 << 31, ..p },
            Im2col { kernel: 3, dilation: 1 << 31, ..p },
        ];
        for g in geoms {
            // an invalid geometry is refused before any shape check
            let e = ops::im2col(x.view(), None, out.view_mut(), g).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. } | Error::Shape { .. }), "{label}: {g:?}: {e}");
        }
        // shapes: C·K mismatch, batch mismatch, rank
        let mut bad_out = Tensor::zeros(&dev, act, &[2, 5, 11]).unwrap();
        let e = ops::im2col(x.view(), None, bad_out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let mut bad_out = Tensor::zeros(&dev, act, &[3, 5, 12]).unwrap();
        let e = ops::im2col(x.view(), None, bad_out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let e = ops::im2col(x.view().reshape(&[10, 4]).unwrap(), None, out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        // lens: length, dtype
        let lens3 = Tensor::from_i32(&dev, &[3], &[5, 3, 1]).unwrap();
        let e = ops::im2col(x.view(), Some(lens3.view()), out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let lens_f = Tensor::zeros(&dev, DType::F32, &[2]).unwrap();
        let e = ops::im2col(x.view(), Some(lens_f.view()), out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        // dtypes: i32 input, bf16 on Cpu
        let xi = Tensor::zeros(&dev, DType::I32, &[2, 5, 4]).unwrap();
        let e = ops::im2col(xi.view(), None, out.view_mut(), p).unwrap_err();
        assert!(matches!(e, Error::DType { what: "x", .. }), "{label}: {e}");
        if act == DType::F32 {
            let xb = Tensor::zeros(&dev, DType::BF16, &[2, 5, 4]).unwrap();
            let e = ops::im2col(xb.view(), None, out.view_mut(), p).unwrap_err();
            assert!(matches!(e, Error::DType { what: "x", .. }), "{label}: {e}");
        }

        // col2im_transpose
        let cols = Tensor::zeros(&dev, DType::F32, &[2, 5, 12]).unwrap();
        let bias = Tensor::zeros(&dev, act, &[4]).unwrap();
        let mut y = Tensor::zeros(&dev, DType::F32, &[2, 9, 4]).unwrap();
        assert!(
            ops::col2im_transpose(cols.view(), Some(lens.view()), Some(bias.view()), y.view_mut(), 3, 2, 1).is_ok(),
            "{label}"
        );
        for (k, s) in [(0, 2), (3, 0)] {
            let e = ops::col2im_transpose(cols.view(), None, None, y.view_mut(), k, s, 1).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{label}: k {k} s {s}: {e}");
        }
        let e = ops::col2im_transpose(cols.view(), None, None, y.view_mut(), 4, 2, 1).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let bias5 = Tensor::zeros(&dev, act, &[5]).unwrap();
        let e = ops::col2im_transpose(cols.view(), None, Some(bias5.view()), y.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let mut y3 = Tensor::zeros(&dev, DType::F32, &[3, 9, 4]).unwrap();
        let e = ops::col2im_transpose(cols.view(), None, None, y3.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let e = ops::col2im_transpose(cols.view(), Some(lens3.view()), None, y.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let cols_b = Tensor::zeros(&dev, DType::BF16, &[2, 5, 12]).unwrap();
        let e = ops::col2im_transpose(cols_b.view(), None, None, y.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::DType { what: "cols", .. }), "{label}: {e}");
        let mut y_b = Tensor::zeros(&dev, DType::BF16, &[2, 9, 4]).unwrap();
        let e = ops::col2im_transpose(cols.view(), None, None, y_b.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        let bias_i = Tensor::zeros(&dev, DType::I32, &[4]).unwrap();
        let e = ops::col2im_transpose(cols.view(), None, Some(bias_i.view()), y.view_mut(), 3, 2, 1).unwrap_err();
        assert!(matches!(e, Error::DType { what: "bias", .. }), "{label}: {e}");
        // another device's tensor
        let other = Tensor::zeros(&Device::cpu(), DType::I32, &[2]).unwrap();
        if dev.kind() != tts_kernels::BackendKind::Cpu {
            let e = ops::im2col(x.view(), Some(other.view()), out.view_mut(), p).unwrap_err();
            assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        }
    }
}

/// (batch, len, row width, col_offset, channels, taps, pad_left, residual).
type DepthwiseCase = (usize, usize, usize, usize, usize, usize, usize, bool);

/// The S3Tokenizer's FSMN memory (31 taps, padding 15, the v third of QKV rows) at a small width,
/// shorter sequences than the taps, padding beyond the sequence, one channel, one tap.
const DEPTHWISE_CASES: &[DepthwiseCase] = &[
    (1, 37, 3 * 24, 2 * 24, 24, 31, 15, true),
    (2, 9, 3 * 24, 2 * 24, 24, 31, 15, true),
    (1, 1, 5, 0, 5, 3, 1, false),
    (3, 17, 40, 7, 29, 5, 0, false),
    (2, 6, 13, 12, 1, 7, 9, true),
    (1, 20, 8, 3, 5, 1, 0, true),
];

/// `x` of a case: random values in the convolved columns, NaN in the others (a kernel that reads
/// outside its channels turns its output NaN).
fn depthwise_input(seed: u64, case: DepthwiseCase) -> Vec<f32> {
    let (b, l, row, off, c, ..) = case;
    let mut x = random_f32(seed, b * l * row, 1.0);
    for r in x.chunks_exact_mut(row) {
        r[..off].fill(f32::NAN);
        r[off + c..].fill(f32::NAN);
    }
    x
}

fn run_depthwise(
    dev: &Device,
    x: &[f32],
    w: &[f32],
    case: DepthwiseCase,
    x_dtype: DType,
    out_dtype: DType,
) -> tts_kernels::Result<Vec<f32>> {
    let (b, l, row, col_offset, c, k, pad_left, residual) = case;
    let xt = Tensor::from_f32(dev, x_dtype, &[b, l, row], x)?;
    let wt = Tensor::from_f32(dev, DType::F32, &[k, c], w)?;
    let mut out = Tensor::from_f32(dev, out_dtype, &[b, l, c], &vec![f32::NAN; b * l * c])?;
    ops::depthwise_conv1d(xt.view(), wt.view(), out.view_mut(), ops::DepthwiseConv { col_offset, pad_left, residual })?;
    out.to_f32_vec()
}

#[test]
fn depthwise_conv1d_on_cpu_is_the_convolution() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (i, &case) in DEPTHWISE_CASES.iter().enumerate() {
        let (b, l, row, off, c, k, pad, residual) = case;
        let s = seed + 10 * i as u64;
        let x = depthwise_input(s, case);
        let w = random_f32(s + 1, k * c, 0.5);
        let got = run_depthwise(&Device::cpu(), &x, &w, case, DType::F32, DType::F32).unwrap();
        // f64, straight from the definition
        let mut want = vec![0f32; b * l * c];
        for bi in 0..b {
            for t in 0..l {
                for ch in 0..c {
                    let at = |i: usize| x[(bi * l + i) * row + off + ch] as f64;
                    let mut acc = 0f64;
                    for j in 0..k {
                        let src = t as i64 + j as i64 - pad as i64;
                        if (0..l as i64).contains(&src) {
                            acc += w[j * c + ch] as f64 * at(src as usize);
                        }
                    }
                    if residual {
                        acc += at(t);
                    }
                    want[(bi * l + t) * c + ch] = acc as f32;
                }
            }
        }
        assert_close(&format!("case {case:?} (seed {seed})"), &got, &want, 1e-5, 1e-6);
    }
}

#[test]
fn depthwise_conv1d_kernel_gives_the_cpu_bits() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in kernel_devices() {
        for (i, &case) in DEPTHWISE_CASES.iter().enumerate() {
            let s = seed + 10 * i as u64;
            let x = depthwise_input(s, case);
            let w = random_f32(s + 1, case.5 * case.4, 0.5);
            let cpu = |x: &[f32]| run_depthwise(&Device::cpu(), x, &w, case, DType::F32, DType::F32).unwrap();
            let act = dev.compute_dtype();
            // f32 in and out: the Cpu bits
            let got = run_depthwise(&dev, &x, &w, case, DType::F32, DType::F32).unwrap();
            assert_bits_eq(&format!("{label}: f32, case {case:?} (seed {seed})"), &got, &cpu(&x));
            // bf16 in (widened exactly), f32 out: the Cpu bits over the rounded input
            let want = cpu(&round_bf16(&x));
            let got = run_depthwise(&dev, &x, &w, case, act, DType::F32).unwrap();
            assert_bits_eq(&format!("{label}: {act:?} in, case {case:?} (seed {seed})"), &got, &want);
            // and bf16 out: those bits rounded once
            let got = run_depthwise(&dev, &x, &w, case, act, act).unwrap();
            assert_bits_eq(&format!("{label}: {act:?} in and out, case {case:?} (seed {seed})"), &got, &round_bf16(&want));
        }
    }
}

#[test]
fn depthwise_conv1d_refuses_bad_arguments() {
    let dev = Device::cpu();
    let t = |shape: &[usize], dtype: DType| Tensor::zeros(&dev, dtype, shape).unwrap();
    let p = |col_offset| ops::DepthwiseConv { col_offset, pad_left: 1, residual: true };
    let cases: Vec<(Tensor, Tensor, Tensor, ops::DepthwiseConv, &str)> = vec![
        (t(&[1, 4, 8], DType::F32), t(&[3, 4], DType::F32), t(&[1, 4, 4], DType::F32), p(5), "channels 5..9"),
        (t(&[1, 4, 8], DType::F32), t(&[3, 4, 1], DType::F32), t(&[1, 4, 4], DType::F32), p(0), "w [3, 4, 1]"),
        (t(&[1, 4, 8], DType::F32), t(&[0, 4], DType::F32), t(&[1, 4, 4], DType::F32), p(0), "w [0, 4]"),
        (t(&[1, 4, 8], DType::F32), t(&[3, 4], DType::F32), t(&[1, 5, 4], DType::F32), p(0), "out [1, 5, 4]"),
        (t(&[4, 8], DType::F32), t(&[3, 4], DType::F32), t(&[1, 4, 4], DType::F32), p(0), "x [4, 8]"),
        (t(&[1, 4, 8], DType::F32), t(&[3, 4], DType::BF16), t(&[1, 4, 4], DType::F32), p(0), "w"),
        (t(&[1, 4, 8], DType::BF16), t(&[3, 4], DType::F32), t(&[1, 4, 4], DType::F32), p(0), "x"),
    ];
    for (x, w, mut out, p, names) in cases {
        let e = ops::depthwise_conv1d(x.view(), w.view(), out.view_mut(), p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("depthwise_conv1d") && msg.contains(names), "{names}: {msg}");
    }
}
