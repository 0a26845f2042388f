//! `ops::embed_pos` (`kernels/embedding.cu`) against the Cpu reference op, on every kernel backend of this build and machine
//! (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh
//! random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, and outputs that
//! start poisoned (NaN) on Emu so that an element a kernel forgets to write fails the comparison.
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

#[test]
fn embed_pos_matches_cpu_exactly() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
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
    for (label, dev) in kernel_devices() {
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
