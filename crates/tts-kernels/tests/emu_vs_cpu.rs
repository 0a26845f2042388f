//! Every kernel against its Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

/// bf16 output: one rounding of a value computed in f32 is at most 2^-9 relative; allow 2 ulp.
const BF16_REL: f64 = 8e-3;

fn devices_or_skip() -> Vec<(String, Device)> {
    let d = kernel_devices();
    if d.is_empty() {
        eprintln!("no kernel backend in this build (enable the `emu` feature): nothing to test");
    }
    d
}

#[test]
fn add_rmsnorm_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in devices_or_skip() {
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
    for (label, dev) in devices_or_skip() {
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

#[test]
fn embed_pos_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in devices_or_skip() {
        for (i, &(rows, dim, vocab, n_pos, with_pos)) in [
            (1, 1, 1, 1, true),
            (7, 63, 11, 5, true),
            (64, 129, 300, 70, false),
            (33, 1024, 704, 2050, true),
            (5, 1031, 9, 4100, true),
        ]
        .iter()
        .enumerate()
        {
            let s = seed.wrapping_add(i as u64 * 1000);
            let table = round_bf16(&random_f32(s, vocab * dim, 1.0));
            let pos_table = round_bf16(&random_f32(s + 1, n_pos * dim, 0.5));
            let ids = random_i32(s + 2, rows, -1, vocab as i32); // -1: CFG unconditional text rows
            let pos = random_i32(s + 3, rows, -1, n_pos as i32);
            let run = |d: &Device, act: DType| {
                let it = Tensor::from_i32(d, &[rows], &ids).unwrap();
                let pt = Tensor::from_i32(d, &[rows], &pos).unwrap();
                let tt = Tensor::from_f32(d, act, &[vocab, dim], &table).unwrap();
                let ptt = Tensor::from_f32(d, act, &[n_pos, dim], &pos_table).unwrap();
                let mut ot = Tensor::uninit(d, DType::F32, &[rows, dim]).unwrap();
                let positions = with_pos.then(|| (pt.view(), ptt.view()));
                ops::embed_pos(it.view(), positions, tt.view(), ot.view_mut()).unwrap();
                ot.to_f32_vec().unwrap()
            };
            let want = run(&cpu, DType::F32);
            let got = run(&dev, dev.compute_dtype());
            assert_close(&format!("{label}: embed_pos rows {rows} dim {dim} pos={with_pos} seed {s}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn embed_pos_marks_out_of_range_ids_instead_of_reading_past_the_table() {
    for (label, dev) in devices_or_skip() {
        let act = dev.compute_dtype();
        let table = Tensor::from_f32(&dev, act, &[4, 8], &random_f32(1, 32, 1.0)).unwrap();
        let ids = Tensor::from_i32(&dev, &[3], &[0, 4, 3]).unwrap();
        let mut out = Tensor::zeros(&dev, DType::F32, &[3, 8]).unwrap();
        ops::embed_pos(ids.view(), None, table.view(), out.view_mut()).unwrap();
        let o = out.to_f32_vec().unwrap();
        assert!(o[..8].iter().chain(&o[16..]).all(|v| v.is_finite()), "{label}");
        assert!(o[8..16].iter().all(|v| v.is_nan()), "{label}: id 4 of a 4-row table must give a NaN row");
    }
    let cpu = Device::cpu();
    let table = Tensor::from_f32(&cpu, DType::F32, &[4, 8], &random_f32(1, 32, 1.0)).unwrap();
    let ids = Tensor::from_i32(&cpu, &[3], &[0, 4, 3]).unwrap();
    let mut out = Tensor::zeros(&cpu, DType::F32, &[3, 8]).unwrap();
    let e = ops::embed_pos(ids.view(), None, table.view(), out.view_mut()).unwrap_err();
    assert!(e.to_string().contains("row 1: token id 4"), "{e}");
}

#[test]
fn linear_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in devices_or_skip() {
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
    for (label, dev) in devices_or_skip() {
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

#[test]
fn layer_norm_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in devices_or_skip() {
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

#[test]
fn swiglu_and_residual_adds_match_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in devices_or_skip() {
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

            // the adds, on inputs both sides can represent exactly (bf16 values)
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
