//! `ops::add_residual` and `ops::add_bias` (`kernels/elementwise.cu`) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn add_residual_and_add_bias_match_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(rows, inner)) in [(1, 1), (3, 65), (16, 512)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let what = format!("{label}: [{rows}, {inner}] seed {s}");
            // on inputs both sides can represent exactly (bf16 values)
            let x = round_bf16(&random_f32(s + 3, rows * inner, 4.0));
            let res = random_f32(s + 1, rows * inner, 1.0);
            let bias = round_bf16(&random_f32(s + 2, inner, 1.0));
            let adds = |d: &Device, act: DType| {
                let xt = Tensor::from_f32(d, act, &[rows, inner], &x).unwrap();
                let bt = Tensor::from_f32(d, act, &[inner], &bias).unwrap();
                let mut rt = Tensor::from_f32(d, DType::F32, &[rows, inner], &res).unwrap();
                ops::add_residual(rt.view_mut(), xt.view(), Some(bt.view())).unwrap();
                let mut yt = Tensor::from_f32(d, act, &[rows, inner], &x).unwrap();
                ops::add_bias(yt.view_mut(), bt.view()).unwrap();
                (rt.to_f32_vec().unwrap(), yt.to_f32_vec().unwrap())
            };
            let (w_res, w_biased) = adds(&cpu, DType::F32);
            let (g_res, g_biased) = adds(&dev, dev.compute_dtype());
            // residual (f32): the same f32 additions in the same order
            assert_close(&format!("{what} add_residual"), &g_res, &w_res, 0.0, 0.0);
            // bf16 output: one rounding of the f32 sum
            assert_close(&format!("{what} add_bias"), &g_biased, &w_biased, BF16_REL, 1e-6);
        }
    }
}
