//! `ops::rope_kv_write` (`kernels/rope.cu`: RoPE on q and k, k and v written into the KV cache)
//! against its Cpu reference op, on every kernel backend of this build and machine (Emu in forward,
//! reverse and random thread schedules; Cuda when a GPU is usable), with fresh random inputs (the
//! seed is printed; `TTS_TEST_SEED` replays it), odd shapes, outputs that start poisoned on Emu, and
//! cache cells that must stay untouched.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use tts_kernels::testing::{BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16, t3_inv_freq};
use tts_kernels::{DType, Device, Tensor, ops};

/// `rows` distinct (slot, position) pairs.
fn distinct_cells(rng: &mut StdRng, rows: usize, n_slots: usize, max_len: usize) -> (Vec<i32>, Vec<i32>) {
    assert!(rows <= n_slots * max_len);
    let mut seen = HashSet::new();
    let (mut slots, mut pos) = (Vec::new(), Vec::new());
    while slots.len() < rows {
        let (s, p) = (rng.random_range(0..n_slots), rng.random_range(0..max_len));
        if seen.insert((s, p)) {
            slots.push(s as i32);
            pos.push(p as i32);
        }
    }
    (slots, pos)
}

struct RopeOut {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn run_rope(
    dev: &Device,
    rows: usize,
    heads: usize,
    d: usize,
    n_slots: usize,
    max_len: usize,
    qkv: &[f32],
    pos: &[i32],
    slots: &[i32],
    inv: &[f32],
    cache0: (&[f32], &[f32]),
) -> tts_kernels::Result<RopeOut> {
    let act = dev.compute_dtype();
    let cshape = [n_slots, heads, max_len, d];
    let qkv_t = Tensor::from_f32(dev, act, &[rows, 3 * heads * d], qkv)?;
    let pos_t = Tensor::from_i32(dev, &[rows], pos)?;
    let slot_t = Tensor::from_i32(dev, &[rows], slots)?;
    let inv_t = Tensor::from_f32(dev, DType::F32, &[d / 2], inv)?;
    let mut q_t = Tensor::uninit(dev, act, &[rows, heads * d])?;
    let mut k_t = Tensor::from_f32(dev, act, &cshape, cache0.0)?;
    let mut v_t = Tensor::from_f32(dev, act, &cshape, cache0.1)?;
    ops::rope_kv_write(qkv_t.view(), pos_t.view(), slot_t.view(), inv_t.view(), q_t.view_mut(), k_t.view_mut(), v_t.view_mut())?;
    Ok(RopeOut { q: q_t.to_f32_vec()?, k: k_t.to_f32_vec()?, v: v_t.to_f32_vec()? })
}

#[test]
fn rope_kv_write_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    for (label, dev) in kernel_devices() {
        // (rows, heads, head_dim, n_slots, max_len, llama3 frequencies)
        for (i, &(rows, heads, d, n_slots, max_len, llama3)) in [
            (1, 1, 2, 1, 1, false),
            (7, 3, 8, 2, 5, true),
            (37, 5, 64, 3, 4100, true), // T3 head dim, positions up to 4099 (angles up to 4099 rad)
            (19, 16, 64, 4, 37, true),  // T3 heads
            (5, 3, 30, 2, 300, false),  // head_dim not a multiple of 4
            (6, 1, 256, 3, 9, false),   // the largest head dim
        ]
        .iter()
        .enumerate()
        {
            let s = seed.wrapping_add(i as u64 * 1000);
            let mut rng = StdRng::seed_from_u64(s);
            let hd = heads * d;
            let qkv = round_bf16(&random_f32(s, rows * 3 * hd, 1.0));
            let (slots, pos) = distinct_cells(&mut rng, rows, n_slots, max_len);
            let inv = if llama3 {
                t3_inv_freq(d)
            } else {
                (0..d / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / d as f32)).collect()
            };
            let clen = n_slots * hd * max_len;
            let k0 = round_bf16(&random_f32(s + 1, clen, 1.0));
            let v0 = round_bf16(&random_f32(s + 2, clen, 1.0));
            let want = run_rope(&cpu, rows, heads, d, n_slots, max_len, &qkv, &pos, &slots, &inv, (&k0, &v0)).unwrap();
            let got = run_rope(&dev, rows, heads, d, n_slots, max_len, &qkv, &pos, &slots, &inv, (&k0, &v0)).unwrap();
            let what = format!("{label}: rope_kv_write rows {rows} heads {heads} d {d} max_len {max_len} seed {s}");
            assert_close(&format!("{what} q_out"), &got.q, &want.q, BF16_REL, 1e-5);
            // written cache rows within one bf16 rounding; every other cell untouched (bit-exact)
            let mut written = vec![false; clen];
            for (&sl, &p) in slots.iter().zip(&pos) {
                for h in 0..heads {
                    let at = ((sl as usize * heads + h) * max_len + p as usize) * d;
                    written[at..at + d].fill(true);
                }
            }
            let pick = |v: &[f32], w: bool| -> Vec<f32> { v.iter().zip(&written).filter(|x| *x.1 == w).map(|x| *x.0).collect() };
            assert_close(&format!("{what} k_cache rows"), &pick(&got.k, true), &pick(&want.k, true), BF16_REL, 1e-5);
            assert_close(&format!("{what} v_cache rows"), &pick(&got.v, true), &pick(&want.v, true), 0.0, 0.0);
            assert_eq!(pick(&got.k, false), pick(&k0, false), "{what}: k_cache cells outside the written rows changed");
            assert_eq!(pick(&got.v, false), pick(&v0, false), "{what}: v_cache cells outside the written rows changed");
        }
    }
}

#[test]
fn rope_kv_write_rejects_out_of_range_rows() {
    let (heads, d, n_slots, max_len) = (2, 8, 2, 6);
    let hd = heads * d;
    let qkv = round_bf16(&random_f32(5, 4 * 3 * hd, 1.0));
    let inv = t3_inv_freq(d);
    let clen = n_slots * hd * max_len;
    let k0 = round_bf16(&random_f32(6, clen, 1.0));
    let v0 = round_bf16(&random_f32(7, clen, 1.0));
    // rows 1..3 are bad: position max_len, position -1, slot n_slots
    let pos = [2, max_len as i32, -1, 3];
    let slots = [1, 0, 1, n_slots as i32];
    // Cpu: an error naming the row, and nothing written
    let cpu = Device::cpu();
    let e = run_rope(&cpu, 4, heads, d, n_slots, max_len, &qkv, &pos, &slots, &inv, (&k0, &v0)).err().unwrap();
    assert!(e.to_string().contains("row 1: position 6 is outside 0..6"), "{e}");
    let e = run_rope(&cpu, 1, heads, d, n_slots, max_len, &qkv[3 * 3 * hd..], &pos[3..], &slots[3..], &inv, (&k0, &v0))
        .err()
        .unwrap();
    assert!(e.to_string().contains("row 0: slot 2 is outside 0..2"), "{e}");
    // kernels: NaN q rows, caches untouched but for the good rows
    let want = run_rope(&cpu, 1, heads, d, n_slots, max_len, &qkv[..3 * hd], &pos[..1], &slots[..1], &inv, (&k0, &v0)).unwrap();
    for (label, dev) in kernel_devices() {
        let got = run_rope(&dev, 4, heads, d, n_slots, max_len, &qkv, &pos, &slots, &inv, (&k0, &v0)).unwrap();
        assert_close(&format!("{label}: good row"), &got.q[..hd], &want.q, BF16_REL, 1e-5);
        assert!(got.q[hd..].iter().all(|v| v.is_nan()), "{label}: bad rows must be NaN");
        assert_close(&format!("{label}: k_cache"), &got.k, &want.k, BF16_REL, 1e-5);
        assert_eq!(got.v, want.v, "{label}: v_cache");
    }
}
