//! `ops::swiglu` (`kernels/swiglu.cu`) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn swiglu_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(rows, inner)) in [(1, 1), (3, 65), (16, 512)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let what = format!("{label}: [{rows}, {inner}] seed {s}");
            let gu = round_bf16(&random_f32(s, rows * 2 * inner, 2.0));
            let swiglu = |d: &Device, act: DType| {
                let gt = Tensor::from_f32(d, act, &[rows, 2 * inner], &gu).unwrap();
                let mut ot = Tensor::uninit(d, act, &[rows, inner]).unwrap();
                ops::swiglu(gt.view(), ot.view_mut()).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let g_swi = swiglu(&dev, dev.compute_dtype());
            assert_close(&format!("{what} swiglu"), &g_swi, &swiglu(&cpu, DType::F32), BF16_REL, 1e-5);
        }
    }
}
