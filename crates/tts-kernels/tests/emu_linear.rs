//! `ops::linear` (cuBLAS on Cuda, its CPU stand-in on Emu) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn linear_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(m, n, k)) in [(1, 1, 1), (3, 17, 33), (2, 1024, 64), (9, 70, 1031)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let x = round_bf16(&random_f32(s, m * k, 1.0));
            let w = round_bf16(&random_f32(s + 1, n * k, 0.05));
            let run = |d: &Device, act: DType| {
                let xt = Tensor::from_f32(d, act, &[m, k], &x).unwrap();
                let wt = Tensor::from_f32(d, act, &[n, k], &w).unwrap();
                let mut ot = Tensor::uninit(d, act, &[m, n]).unwrap();
                ops::linear(xt.view(), wt.view(), None, ot.view_mut()).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let want = run(&cpu, DType::F32);
            let got = run(&dev, dev.compute_dtype());
            assert_close(&format!("{label}: linear {m}x{n}x{k} seed {s}"), &got, &want, BF16_REL, 1e-4);
        }
    }
}

#[test]
fn linear_with_bias_and_f32_output_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(m, n, k)) in [(1, 3, 5), (7, 129, 64), (2, 401, 33)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let x = round_bf16(&random_f32(s, m * k, 1.0));
            let w = round_bf16(&random_f32(s + 1, n * k, 0.2));
            let b = round_bf16(&random_f32(s + 2, n, 1.0));
            // bf16 output with a bias
            let run = |d: &Device, act: DType, out_dtype: DType, bias: bool| {
                let xt = Tensor::from_f32(d, act, &[m, k], &x).unwrap();
                let wt = Tensor::from_f32(d, act, &[n, k], &w).unwrap();
                let bt = Tensor::from_f32(d, act, &[n], &b).unwrap();
                let mut ot = Tensor::uninit(d, out_dtype, &[m, n]).unwrap();
                ops::linear(xt.view(), wt.view(), bias.then(|| bt.view()), ot.view_mut()).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let want_b = run(&cpu, DType::F32, DType::F32, true);
            let got_b = run(&dev, dev.compute_dtype(), dev.compute_dtype(), true);
            // the bias joins the f32 accumulator before the single rounding: one bf16 rounding of error
            assert_close(&format!("{label}: linear+bias {m}x{n}x{k} seed {s}"), &got_b, &want_b, BF16_REL, 1e-5);
            // f32 output (logits): no rounding of the accumulator
            let want = run(&cpu, DType::F32, DType::F32, false);
            let got = run(&dev, dev.compute_dtype(), DType::F32, false);
            assert_close(&format!("{label}: linear f32 out {m}x{n}x{k} seed {s}"), &got, &want, 1e-5, 1e-5);
        }
    }
}

/// The bias on the kernel backends is written into the output first (`fill_rows_f32` for an f32
/// output of a bf16 GEMM, `fill_rows_f32_f32` for the precise all-f32 GEMM) and the GEMM
/// accumulates onto it: both against the Cpu op (f32 sums in another order: 1e-5).
#[test]
fn linear_with_bias_to_f32_and_precise_match_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(m, n, k)) in [(1, 3, 5), (7, 129, 64), (2, 401, 33)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let x = round_bf16(&random_f32(s, m * k, 1.0));
            let w = round_bf16(&random_f32(s + 1, n * k, 0.2));
            let b = round_bf16(&random_f32(s + 2, n, 1.0));
            let run = |d: &Device, in_dtype: DType, bias_dtype: DType| {
                let xt = Tensor::from_f32(d, in_dtype, &[m, k], &x).unwrap();
                let wt = Tensor::from_f32(d, in_dtype, &[n, k], &w).unwrap();
                let bt = Tensor::from_f32(d, bias_dtype, &[n], &b).unwrap();
                let mut ot = Tensor::uninit(d, DType::F32, &[m, n]).unwrap();
                ops::linear(xt.view(), wt.view(), Some(bt.view()), ot.view_mut()).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let want = run(&cpu, DType::F32, DType::F32);
            let act = dev.compute_dtype();
            let got = run(&dev, act, act);
            assert_close(&format!("{label}: linear+bias f32 out {m}x{n}x{k} seed {s}"), &got, &want, 1e-5, 1e-5);
            let got = run(&dev, DType::F32, DType::F32);
            assert_close(&format!("{label}: precise linear+bias {m}x{n}x{k} seed {s}"), &got, &want, 1e-5, 1e-5);
        }
    }
}
