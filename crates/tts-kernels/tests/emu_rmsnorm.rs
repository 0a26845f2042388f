//! `ops::add_rmsnorm` (`kernels/rmsnorm.cu`) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn add_rmsnorm_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        for (i, &(rows, cols, with_x)) in
            [(1, 1, true), (3, 31, true), (2, 255, false), (5, 257, true), (17, 1024, true), (4, 1031, false), (3, 4099, true)]
                .iter()
                .enumerate()
        {
            let s = seed.wrapping_add(i as u64 * 1000);
            let x = round_bf16(&random_f32(s, rows * cols, 1.0));
            let res = random_f32(s + 1, rows * cols, 3.0);
            let w = round_bf16(&random_f32(s + 2, cols, 1.0));
            let eps = 1e-5;

            let run = |d: &Device, act: DType| {
                let xt = Tensor::from_f32(d, act, &[rows, cols], &x).unwrap();
                let mut rt = Tensor::from_f32(d, DType::F32, &[rows, cols], &res).unwrap();
                let wt = Tensor::from_f32(d, act, &[cols], &w).unwrap();
                let mut ot = Tensor::uninit(d, act, &[rows, cols]).unwrap();
                ops::add_rmsnorm(with_x.then(|| xt.view()), rt.view_mut(), wt.view(), ot.view_mut(), eps).unwrap();
                (ot.to_f32_vec().unwrap(), rt.to_f32_vec().unwrap())
            };
            let (want, want_res) = run(&cpu, DType::F32);
            let (got, got_res) = run(&dev, dev.compute_dtype());
            let what = format!("{label}: add_rmsnorm [{rows}, {cols}] x={with_x} seed {s}");
            assert_close(&format!("{what} residual"), &got_res, &want_res, 1e-6, 1e-6);
            assert_close(&format!("{what} out"), &got, &want, BF16_REL, 1e-5);
        }
    }
}

#[test]
fn add_rmsnorm_on_a_row_range_leaves_other_rows_alone() {
    let seed = fresh_seed();
    for (label, dev) in kernel_devices() {
        let (rows, cols) = (6, 40);
        let act = dev.compute_dtype();
        let x = Tensor::from_f32(&dev, act, &[2, cols], &random_f32(seed, 2 * cols, 1.0)).unwrap();
        let res0 = random_f32(seed + 1, rows * cols, 1.0);
        let mut res = Tensor::from_f32(&dev, DType::F32, &[rows, cols], &res0).unwrap();
        let w = Tensor::from_f32(&dev, act, &[cols], &vec![1.0; cols]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[rows, cols]).unwrap();
        let res_rows = res.view_mut().narrow_rows(3, 2).unwrap();
        let out_rows = out.view_mut().narrow_rows(1, 2).unwrap();
        ops::add_rmsnorm(Some(x.view()), res_rows, w.view(), out_rows, 1e-5).unwrap();
        let after = res.to_f32_vec().unwrap();
        assert_eq!(&after[..3 * cols], &res0[..3 * cols], "{label}: rows before the range changed");
        assert_eq!(&after[5 * cols..], &res0[5 * cols..], "{label}: rows after the range changed");
        assert_ne!(&after[3 * cols..5 * cols], &res0[3 * cols..5 * cols], "{label}: the range was not updated");
        let o = out.to_f32_vec().unwrap();
        assert!(o[cols..3 * cols].iter().all(|v| v.is_finite()), "{label}: output rows not written");
        if dev.kind() == tts_kernels::BackendKind::Emu {
            assert!(o[..cols].iter().chain(&o[3 * cols..]).all(|v| v.is_nan()), "{label}: rows outside the range were written");
        }
    }
}
