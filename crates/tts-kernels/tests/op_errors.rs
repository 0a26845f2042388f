//! Bad inputs to the op API are errors that name the problem, never panics.
use tts_kernels::testing::kernel_devices;
use tts_kernels::{DType, Device, Error, Tensor, ops};

fn all_devices() -> Vec<(String, Device)> {
    let mut v = vec![("cpu".to_string(), Device::cpu())];
    v.extend(kernel_devices());
    v
}

#[test]
fn shape_dtype_and_device_mismatches_are_errors() {
    for (label, dev) in all_devices() {
        let act = dev.compute_dtype();
        let x = Tensor::zeros(&dev, act, &[2, 8]).unwrap();
        let mut res = Tensor::zeros(&dev, DType::F32, &[2, 8]).unwrap();
        let w_bad = Tensor::zeros(&dev, act, &[7]).unwrap();
        let w = Tensor::zeros(&dev, act, &[8]).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[2, 8]).unwrap();
        let mut out_f32 = Tensor::zeros(&dev, DType::F32, &[2, 8]).unwrap();

        let e = ops::add_rmsnorm(Some(x.view()), res.view_mut(), w_bad.view(), out.view_mut(), 1e-5).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        if act != DType::F32 {
            let e = ops::add_rmsnorm(Some(x.view()), res.view_mut(), w.view(), out_f32.view_mut(), 1e-5).unwrap_err();
            assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        }
        let e = ops::add_rmsnorm(Some(x.view()), res.view_mut(), w.view(), out.view_mut(), f32::NAN).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{label}: {e}");
        let e = ops::linear(x.view(), w_bad.view().reshape(&[7, 1]).unwrap(), None, out.view_mut()).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let ids_f = Tensor::zeros(&dev, DType::F32, &[2]).unwrap();
        let table = Tensor::zeros(&dev, act, &[3, 8]).unwrap();
        let e = ops::embed_pos(ids_f.view(), None, table.view(), out_f32.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "ids", .. }), "{label}: {e}");

        // a tensor of another device
        let other = Device::cpu();
        let w_other = Tensor::zeros(&other, DType::F32, &[8]).unwrap();
        let e = ops::add_rmsnorm(Some(x.view()), res.view_mut(), w_other.view(), out.view_mut(), 1e-5).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");

        // views out of range
        assert!(matches!(x.view().narrow_rows(1, 2), Err(Error::Shape { .. })));
        assert!(matches!(x.view().reshape(&[3, 5]), Err(Error::Shape { .. })));
        assert!(matches!(Tensor::zeros(&dev, act, &[usize::MAX, 4]), Err(Error::Shape { .. })));
        assert!(matches!(Tensor::from_f32(&dev, act, &[2], &[1.0]), Err(Error::Shape { .. })));
    }
}

#[test]
fn unknown_backend_names_are_errors() {
    let e = Device::from_name("tpu").unwrap_err();
    assert!(e.to_string().contains("unknown backend \"tpu\""), "{e}");
    assert!(Device::from_name("CPU").is_ok());
}

#[test]
fn cuda_without_a_driver_is_an_error_not_a_panic() {
    // On GPU-less machines this proves the no-panic path; on a GPU machine it must succeed.
    match Device::cuda(0) {
        Ok(d) => assert_eq!(d.kind(), tts_kernels::BackendKind::Cuda),
        Err(e) => assert!(matches!(e, Error::CudaUnavailable(_)), "{e}"),
    }
}

#[test]
fn emu_outputs_start_poisoned() {
    for (label, dev) in kernel_devices() {
        if dev.kind() != tts_kernels::BackendKind::Emu {
            continue;
        }
        let t = Tensor::uninit(&dev, DType::F32, &[3, 5]).unwrap();
        assert!(t.to_f32_vec().unwrap().iter().all(|v| v.is_nan()), "{label}");
        let t = Tensor::uninit(&dev, DType::I32, &[4]).unwrap();
        assert_eq!(t.to_i32_vec().unwrap(), vec![-1; 4], "{label}");
    }
}

#[test]
fn cpu_with_bf16_weights_computes_the_f32_result_of_the_rounded_weights() {
    use tts_kernels::testing::{assert_close, random_f32, round_bf16};
    let (m, n, k) = (3, 37, 70);
    let x = random_f32(1, m * k, 1.0);
    let w = round_bf16(&random_f32(2, n * k, 0.2));
    let run = |d: &Device| {
        let xt = Tensor::from_f32(d, DType::F32, &[m, k], &x).unwrap();
        let wt = Tensor::from_f32(d, d.weight_dtype(), &[n, k], &w).unwrap();
        let mut ot = Tensor::uninit(d, DType::F32, &[m, n]).unwrap();
        ops::linear(xt.view(), wt.view(), None, ot.view_mut()).unwrap();
        ot.to_f32_vec().unwrap()
    };
    let bf = Device::cpu_bf16_weights();
    assert_eq!(bf.weight_dtype(), DType::BF16);
    assert_eq!(bf.compute_dtype(), DType::F32);
    assert_close("cpu-bf16 linear", &run(&bf), &run(&Device::cpu()), 1e-5, 1e-6);
    // an f32 weight on the bf16-weight device is the precise (all-f32) linear: the f32 result itself
    let wt = Tensor::from_f32(&bf, DType::F32, &[n, k], &w).unwrap();
    let xt = Tensor::from_f32(&bf, DType::F32, &[m, k], &x).unwrap();
    let mut ot = Tensor::uninit(&bf, DType::F32, &[m, n]).unwrap();
    ops::linear(xt.view(), wt.view(), None, ot.view_mut()).unwrap();
    assert_eq!(ot.to_f32_vec().unwrap(), run(&Device::cpu()));
    // any other weight dtype is an error, not a silent conversion
    let wi = Tensor::from_i32(&bf, &[n, k], &vec![1; n * k]).unwrap();
    assert!(matches!(ops::linear(xt.view(), wi.view(), None, ot.view_mut()), Err(Error::DType { what: "weight", .. })));
}

#[test]
fn conv1d_packed_runs_on_cpu_and_refuses_what_it_cannot_run() {
    use tts_kernels::cpu::tap_major;
    use tts_kernels::testing::{fresh_seed, random_f32};
    let seed = fresh_seed();
    let (b, l_in, c_in, c_out, taps, dil, pad) = (2usize, 23usize, 5usize, 18usize, 3usize, 2usize, 4usize);
    let l_out = l_in + 1;
    let dev = Device::cpu();
    let xs = random_f32(seed, b * l_in * c_in, 1.0);
    let ws = random_f32(seed + 1, c_out * c_in * taps, 0.5);
    let bs = random_f32(seed + 2, c_out, 1.0);
    let x = Tensor::from_f32(&dev, DType::F32, &[b, l_in, c_in], &xs).unwrap();
    let w = ops::pack_gemm_weight(
        Tensor::from_f32(&dev, DType::F32, &[c_out, taps * c_in], &tap_major(&ws, c_out, c_in, taps)).unwrap(),
    )
    .unwrap();
    let bias = Tensor::from_f32(&dev, DType::F32, &[c_out], &bs).unwrap();
    let lens_v = [l_in as i32, 9];
    let lens = Tensor::from_i32(&dev, &[b], &lens_v).unwrap();
    let mut out = Tensor::from_f32(&dev, DType::F32, &[b, l_out, c_out], &vec![f32::NAN; b * l_out * c_out]).unwrap();
    ops::conv1d_packed(x.view(), Some(lens.view()), w.view(), Some(bias.view()), out.view_mut(), taps, dil, pad).unwrap();
    // the op's plumbing (lengths, bias, shapes) against the convolution in f64, within the f32
    // summation bound (k + 1)·u·Σ|terms|
    let got = out.to_f32_vec().unwrap();
    let u = f32::EPSILON as f64 / 2.0;
    for bi in 0..b {
        for t in 0..l_out {
            for o in 0..c_out {
                let (mut want, mut mag) = (bs[o] as f64, (bs[o] as f64).abs());
                for j in 0..taps {
                    let pos = (t + j * dil) as i64 - pad as i64;
                    if pos >= 0 && (pos as usize) < lens_v[bi] as usize {
                        for c in 0..c_in {
                            let term = xs[(bi * l_in + pos as usize) * c_in + c] as f64 * ws[(o * c_in + c) * taps + j] as f64;
                            want += term;
                            mag += term.abs();
                        }
                    }
                }
                let g = got[(bi * l_out + t) * c_out + o] as f64;
                assert!((g - want).abs() <= ((taps * c_in + 1) as f64) * u * mag, "[{bi}, {t}, {o}] {g} vs {want} (seed {seed})");
            }
        }
    }
    let run = |x: &Tensor, lens: &Tensor, w: &Tensor, out: &mut Tensor, taps: usize| {
        ops::conv1d_packed(x.view(), Some(lens.view()), w.view(), Some(bias.view()), out.view_mut(), taps, dil, pad).unwrap_err()
    };
    // a row-major (unpacked) weight, a wrong tap count, taps 0, a length past L_in, a bf16 input
    let raw = Tensor::from_f32(&dev, DType::F32, &[c_out, taps * c_in], &tap_major(&ws, c_out, c_in, taps)).unwrap();
    let e = run(&x, &lens, &raw, &mut out, taps);
    assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("pack_gemm_weight"), "{e}");
    let e = run(&x, &lens, &w, &mut out, taps + 1);
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = run(&x, &lens, &w, &mut out, 0);
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let long = Tensor::from_i32(&dev, &[b], &[l_in as i32, l_in as i32 + 1]).unwrap();
    let e = run(&x, &long, &w, &mut out, taps);
    assert!(e.to_string().contains("batch 1: len 24"), "{e}");
    // a dilation or tap count whose reach overflows (or passes 2^31) is refused before any memory is
    // touched (taps·C_in wrapping to the weight's width must not pass the shape check either)
    for (t, d) in [(taps, 1usize << 62), (taps, 1 << 31), ((1usize << 63) + 1, 1)] {
        let e =
            ops::conv1d_packed(x.view(), Some(lens.view()), w.view(), Some(bias.view()), out.view_mut(), t, d, pad).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("beyond 2^31"), "taps {t} dilation {d}: {e}");
    }
    let x_bf16 = Tensor::from_f32(&dev, DType::BF16, &[b, l_in, c_in], &xs).unwrap();
    let e = run(&x_bf16, &lens, &w, &mut out, taps);
    assert!(matches!(e, Error::DType { what: "x", .. }), "{e}");
    // the kernel backends run convolutions as im2col + linear: this op is refused there
    for (label, kdev) in kernel_devices() {
        let x = Tensor::zeros(&kdev, DType::F32, &[b, l_in, c_in]).unwrap();
        let w = Tensor::zeros(&kdev, kdev.weight_dtype(), &[c_out, taps * c_in]).unwrap();
        let mut out = Tensor::zeros(&kdev, DType::F32, &[b, l_out, c_out]).unwrap();
        let e = ops::conv1d_packed(x.view(), None, w.view(), None, out.view_mut(), taps, dil, pad).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("Cpu backend only"), "{label}: {e}");
    }
}

/// An allocation no allocator can satisfy is `Error::OutOfMemory` (a resource limit the engine
/// reports as such), zeroed or not, never an abort or a panic; a shape whose byte count overflows
/// is a shape error.
#[test]
fn impossible_allocations_are_out_of_memory_errors() {
    for (label, dev) in all_devices() {
        // 2^60 f32 = 4 EiB: below isize::MAX, above any machine's memory
        for zeroed in [true, false] {
            let shape = [1usize << 30, 1 << 30];
            let r = if zeroed { Tensor::zeros(&dev, DType::F32, &shape) } else { Tensor::uninit(&dev, DType::F32, &shape) };
            let e = r.err().unwrap_or_else(|| panic!("{label}: a 4 EiB tensor was allocated"));
            assert!(matches!(e, Error::OutOfMemory { bytes, .. } if bytes == 1 << 62), "{label}: {e}");
        }
        let Err(e) = Tensor::zeros(&dev, DType::F32, &[usize::MAX / 2, 3]) else {
            panic!("{label}: an overflowing shape was allocated")
        };
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
    }
}
