//! `ops::layer_norm` (`kernels/layernorm.cu`) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn layer_norm_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(rows, cols, with_bias)) in [(1, 1, true), (3, 33, false), (32, 128, true), (5, 1031, true)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let x: Vec<f32> = random_f32(s, rows * cols, 2.0).iter().map(|v| v + 3.0).collect(); // non-zero mean
            let w = round_bf16(&random_f32(s + 1, cols, 1.0));
            let b = round_bf16(&random_f32(s + 2, cols, 1.0));
            let run = |d: &Device, act: DType, out: DType| {
                let xt = Tensor::from_f32(d, DType::F32, &[rows, cols], &x).unwrap();
                let wt = Tensor::from_f32(d, act, &[cols], &w).unwrap();
                let bt = Tensor::from_f32(d, act, &[cols], &b).unwrap();
                let mut ot = Tensor::uninit(d, out, &[rows, cols]).unwrap();
                ops::layer_norm(xt.view(), wt.view(), with_bias.then(|| bt.view()), ot.view_mut(), 1e-5).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let want = run(&cpu, DType::F32, DType::F32);
            let got = run(&dev, dev.compute_dtype(), dev.compute_dtype());
            // cols = 1: the output is exactly the bias (or 0): an absolute floor covers it
            assert_close(&format!("{label}: layer_norm [{rows}, {cols}] seed {s}"), &got, &want, BF16_REL, 1e-3);
            // an f32 output (S3Gen's streams) is unrounded: f32 accuracy (bf16-exact weights)
            let got = run(&dev, dev.compute_dtype(), DType::F32);
            assert_close(&format!("{label}: layer_norm f32 out [{rows}, {cols}] seed {s}"), &got, &want, 1e-5, 1e-5);
        }
    }
}
