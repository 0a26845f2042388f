//! The attention kernels (`kernels/attention.cu`: `ops::attention_cached`, its split form,
//! `ops::attention_dense`) against their Cpu reference ops, on every kernel
//! backend of this build and machine (Emu in forward, reverse and random thread schedules; Cuda when
//! a GPU is usable), with fresh random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd
//! shapes, outputs that start poisoned on Emu, and cache / key regions that must not be read
//! poisoned with NaN (a kernel that reads them turns its output NaN).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tts_kernels::testing::{
    ATTENTION_ABS, BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16, t3_inv_freq,
};
use tts_kernels::{BackendKind, DType, Device, Error, Tensor, ops};

/// Inputs of a cached-attention case: caches hold random values at positions below the longest
/// live length of each slot and NaN beyond it (the kernels must never read there).
struct CachedCase {
    rows: usize,
    heads: usize,
    d: usize,
    n_slots: usize,
    max_len: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    slots: Vec<i32>,
    lens: Vec<i32>,
    scale: f32,
}

impl CachedCase {
    fn random(seed: u64, rows: usize, heads: usize, d: usize, n_slots: usize, max_len: usize, q_scale: f32) -> CachedCase {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut lens: Vec<i32> = (0..rows).map(|_| rng.random_range(0..=max_len) as i32).collect();
        let mut slots: Vec<i32> = (0..rows).map(|_| rng.random_range(0..n_slots) as i32).collect();
        // always an inactive row (with a slot that does not exist), a full row and a single position
        lens[0] = 0;
        slots[0] = if seed.is_multiple_of(2) { -1 } else { n_slots as i32 + 7 };
        if rows > 1 {
            lens[1] = max_len as i32;
        }
        if rows > 2 {
            lens[2] = 1;
        }
        let mut live = vec![0usize; n_slots];
        for (&s, &l) in slots.iter().zip(&lens) {
            if l > 0 {
                live[s as usize] = live[s as usize].max(l as usize);
            }
        }
        let hd = heads * d;
        let mut k = round_bf16(&random_f32(seed + 1, n_slots * hd * max_len, 1.0));
        let mut v = round_bf16(&random_f32(seed + 2, n_slots * hd * max_len, 1.0));
        for (s, &live_len) in live.iter().enumerate() {
            for h in 0..heads {
                let at = (s * heads + h) * max_len;
                for p in live_len..max_len {
                    k[(at + p) * d..(at + p + 1) * d].fill(f32::NAN);
                    v[(at + p) * d..(at + p + 1) * d].fill(f32::NAN);
                }
            }
        }
        let q = round_bf16(&random_f32(seed + 3, rows * hd, q_scale));
        CachedCase { rows, heads, d, n_slots, max_len, q, k, v, slots, lens, scale: 1.0 / (d as f32).sqrt() }
    }

    /// Runs attention_cached (`splits = None`) or attention_cached_split with `splits` slices.
    fn run(&self, dev: &Device, splits: Option<usize>) -> tts_kernels::Result<Vec<f32>> {
        let act = dev.compute_dtype();
        let hd = self.heads * self.d;
        let cshape = [self.n_slots, self.heads, self.max_len, self.d];
        let q = Tensor::from_f32(dev, act, &[self.rows, hd], &self.q)?;
        let k = Tensor::from_f32(dev, act, &cshape, &self.k)?;
        let v = Tensor::from_f32(dev, act, &cshape, &self.v)?;
        let slots = Tensor::from_i32(dev, &[self.rows], &self.slots)?;
        let lens = Tensor::from_i32(dev, &[self.rows], &self.lens)?;
        let mut out = Tensor::uninit(dev, act, &[self.rows, hd])?;
        match splits {
            None => ops::attention_cached(q.view(), k.view(), v.view(), slots.view(), lens.view(), out.view_mut(), self.scale)?,
            Some(n) => {
                let mut scratch = Tensor::uninit(dev, DType::F32, &[self.rows, self.heads, n, self.d + 2])?;
                ops::attention_cached_split(
                    q.view(),
                    k.view(),
                    v.view(),
                    slots.view(),
                    lens.view(),
                    out.view_mut(),
                    scratch.view_mut(),
                    self.scale,
                )?
            }
        }
        out.to_f32_vec()
    }
}

#[test]
fn attention_cached_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (rows, heads, head_dim, n_slots, max_len, q scale): every supported head dim, odd counts
    let cases = [
        (5, 3, 64, 4, 300, 1.0),
        (9, 16, 64, 3, 45, 4.0), // T3 heads, peaky softmax
        (3, 1, 32, 2, 77, 1.0),
        (4, 3, 96, 3, 50, 2.0),
        (3, 2, 128, 3, 65, 1.0),
        (3, 1, 160, 2, 40, 1.0),
        (4, 3, 192, 2, 20, 1.0),
        (3, 1, 224, 1, 33, 3.0),
        (3, 5, 256, 2, 70, 1.0),
        (1, 1, 64, 1, 1, 1.0), // a single inactive row
    ];
    for (i, &(rows, heads, d, n_slots, max_len, qs)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let c = CachedCase::random(s, rows, heads, d, n_slots, max_len, qs);
        let want = c.run(&cpu, None).unwrap();
        assert!(want.iter().all(|v| v.is_finite()), "the Cpu reference read a poisoned position");
        for (label, dev) in &devices {
            let what =
                format!("{label}: attention_cached rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} seed {s}", c.lens);
            assert_close(&what, &c.run(dev, None).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            for n in [1, 3, 8] {
                assert_close(&format!("{what} splits {n}"), &c.run(dev, Some(n)).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            }
        }
    }
}

#[test]
fn attention_cached_long_context_with_few_rows() {
    // the decode shape that takes wide blocks (16 warps) or many key slices: 2 rows (a CFG pair)
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let c = CachedCase::random(seed, 3, 2, 64, 2, 1500, 2.0);
    let want = c.run(&cpu, None).unwrap();
    let splits = ops::attention_cached_splits(3, 2, 1500);
    assert!(splits > 1, "few rows and a long context should be split ({splits})");
    for (label, dev) in kernel_devices() {
        let what = format!("{label}: lens {:?} seed {seed}", c.lens);
        assert_close(&what, &c.run(&dev, None).unwrap(), &want, BF16_REL, ATTENTION_ABS);
        assert_close(&format!("{what} splits {splits}"), &c.run(&dev, Some(splits)).unwrap(), &want, BF16_REL, ATTENTION_ABS);
    }
}

#[test]
fn attention_cached_inactive_rows_are_zero_and_bad_rows_nan() {
    let (heads, d, n_slots, max_len) = (3, 32, 2, 10);
    let hd = heads * d;
    let mut c = CachedCase::random(11, 5, heads, d, n_slots, max_len, 1.0);
    c.k = round_bf16(&random_f32(12, c.k.len(), 1.0)); // no poison: the bad rows' lengths vary
    c.v = round_bf16(&random_f32(13, c.v.len(), 1.0));
    // row 0 inactive with a slot that does not exist; row 1 fine; rows 2..4: len > max_len,
    // len < 0, a slot outside the cache
    c.slots = vec![99, 1, 0, 0, 2];
    c.lens = vec![0, 4, max_len as i32 + 1, -1, 3];
    let cpu = Device::cpu();
    let e = c.run(&cpu, None).unwrap_err();
    assert!(e.to_string().contains("row 2: length 11 is outside 0..=10"), "{e}");
    // the Cpu reference of the first two rows
    let good = CachedCase {
        rows: 2,
        q: c.q[..2 * hd].to_vec(),
        slots: c.slots[..2].to_vec(),
        lens: c.lens[..2].to_vec(),
        k: c.k.clone(),
        v: c.v.clone(),
        ..c
    };
    let want = good.run(&cpu, None).unwrap();
    assert!(want[..hd].iter().all(|&v| v == 0.0), "cpu: the inactive row must be zeros");
    let mut bad_slot =
        CachedCase { rows: 1, q: c.q[..hd].to_vec(), slots: vec![2], lens: vec![3], k: c.k.clone(), v: c.v.clone(), ..good };
    let e = bad_slot.run(&cpu, None).unwrap_err();
    assert!(e.to_string().contains("row 0: slot 2 is outside 0..2"), "{e}");
    bad_slot.slots = vec![-3];
    assert!(bad_slot.run(&cpu, None).is_err());
    for (label, dev) in kernel_devices() {
        for splits in [None, Some(4)] {
            let got = c.run(&dev, splits).unwrap();
            assert!(got[..hd].iter().all(|&v| v == 0.0), "{label} {splits:?}: the inactive row must be zeros");
            assert_close(&format!("{label} {splits:?}: good row"), &got[hd..2 * hd], &want[hd..], BF16_REL, ATTENTION_ABS);
            assert!(got[2 * hd..].iter().all(|v| v.is_nan()), "{label} {splits:?}: bad rows must be NaN");
        }
    }
}

/// Rounds every value of an f32 Cpu tensor to bf16 (what a bf16 device tensor holds).
fn rounded(t: &Tensor) -> Tensor {
    Tensor::from_f32(t.device(), DType::F32, t.shape(), &round_bf16(&t.to_f32_vec().unwrap())).unwrap()
}

#[test]
fn rope_then_cached_attention_prefill_then_replayed_decode_steps() {
    // Two sequences in slots 2 and 0 of a 3-slot cache: a prefill of all prompt tokens (causal:
    // the row of position p has len p + 1), then decode steps of one token per sequence plus an
    // inactive row, captured once as a graph and replayed with new positions / lengths on the device.
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (heads, d, n_slots, max_len) = (3, 64, 3, 40);
    let hd = heads * d;
    let prompts = [(2usize, 7usize), (0, 12)];
    let inv = t3_inv_freq(d);
    let scale = 1.0 / (d as f32).sqrt();
    let cpu = Device::cpu();
    let cshape = [n_slots, heads, max_len, d];

    // prefill rows
    let (mut pslots, mut ppos) = (Vec::new(), Vec::new());
    for &(s, n) in &prompts {
        for p in 0..n {
            pslots.push(s as i32);
            ppos.push(p as i32);
        }
    }
    let prows = pslots.len();
    let plens: Vec<i32> = ppos.iter().map(|p| p + 1).collect();
    let pqkv = round_bf16(&random_f32(seed, prows * 3 * hd, 1.0));
    let steps = 3;
    let dqkv: Vec<Vec<f32>> = (0..steps).map(|i| round_bf16(&random_f32(seed + 10 + i as u64, 3 * 3 * hd, 1.0))).collect();
    // decode rows: sequence 0, an inactive row, sequence 1
    let dslots = [2, -1, 0];

    // the Cpu reference, with q and the caches rounded to bf16 after each RoPE (as a bf16 device stores them)
    let mut want = Vec::new();
    {
        let f32t = |shape: &[usize], v: &[f32]| Tensor::from_f32(&cpu, DType::F32, shape, v).unwrap();
        let i32t = |v: &[i32]| Tensor::from_i32(&cpu, &[v.len()], v).unwrap();
        let inv_t = f32t(&[d / 2], &inv);
        let mut kc = Tensor::zeros(&cpu, DType::F32, &cshape).unwrap();
        let mut vc = Tensor::zeros(&cpu, DType::F32, &cshape).unwrap();
        let mut q = Tensor::zeros(&cpu, DType::F32, &[prows, hd]).unwrap();
        let qkv = f32t(&[prows, 3 * hd], &pqkv);
        ops::rope_kv_write(
            qkv.view(),
            i32t(&ppos).view(),
            i32t(&pslots).view(),
            inv_t.view(),
            q.view_mut(),
            kc.view_mut(),
            vc.view_mut(),
        )
        .unwrap();
        let (q, mut kc_r, mut vc_r) = (rounded(&q), rounded(&kc), rounded(&vc));
        let mut out = Tensor::zeros(&cpu, DType::F32, &[prows, hd]).unwrap();
        ops::attention_cached(
            q.view(),
            kc_r.view(),
            vc_r.view(),
            i32t(&pslots).view(),
            i32t(&plens).view(),
            out.view_mut(),
            scale,
        )
        .unwrap();
        want.push(out.to_f32_vec().unwrap());
        for (i, qkv) in dqkv.iter().enumerate() {
            let pos = [7 + i as i32, 0, 12 + i as i32];
            let lens = [8 + i as i32, 0, 13 + i as i32];
            // RoPE only the live rows (the Cpu op rejects the inactive row's slot -1)
            let live = [0usize, 2];
            let lqkv: Vec<f32> = live.iter().flat_map(|&r| qkv[r * 3 * hd..(r + 1) * 3 * hd].to_vec()).collect();
            let lpos: Vec<i32> = live.iter().map(|&r| pos[r]).collect();
            let lslots: Vec<i32> = live.iter().map(|&r| dslots[r]).collect();
            let mut q = Tensor::zeros(&cpu, DType::F32, &[2, hd]).unwrap();
            ops::rope_kv_write(
                f32t(&[2, 3 * hd], &lqkv).view(),
                i32t(&lpos).view(),
                i32t(&lslots).view(),
                inv_t.view(),
                q.view_mut(),
                kc_r.view_mut(),
                vc_r.view_mut(),
            )
            .unwrap();
            kc_r = rounded(&kc_r);
            vc_r = rounded(&vc_r);
            let ql = rounded(&q).to_f32_vec().unwrap();
            let mut q3 = vec![0.0; 3 * hd];
            q3[..hd].copy_from_slice(&ql[..hd]);
            q3[2 * hd..].copy_from_slice(&ql[hd..]);
            let mut out = Tensor::zeros(&cpu, DType::F32, &[3, hd]).unwrap();
            ops::attention_cached(
                f32t(&[3, hd], &q3).view(),
                kc_r.view(),
                vc_r.view(),
                i32t(&dslots).view(),
                i32t(&lens).view(),
                out.view_mut(),
                scale,
            )
            .unwrap();
            want.push(out.to_f32_vec().unwrap());
        }
    }

    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        let inv_t = Tensor::from_f32(&dev, DType::F32, &[d / 2], &inv).unwrap();
        let mut kc = Tensor::uninit(&dev, act, &cshape).unwrap();
        let mut vc = Tensor::uninit(&dev, act, &cshape).unwrap(); // poisoned on Emu: only written cells may be read
        // prefill
        let qkv = Tensor::from_f32(&dev, act, &[prows, 3 * hd], &pqkv).unwrap();
        let pos_t = Tensor::from_i32(&dev, &[prows], &ppos).unwrap();
        let slot_t = Tensor::from_i32(&dev, &[prows], &pslots).unwrap();
        let lens_t = Tensor::from_i32(&dev, &[prows], &plens).unwrap();
        let mut q = Tensor::uninit(&dev, act, &[prows, hd]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[prows, hd]).unwrap();
        ops::rope_kv_write(qkv.view(), pos_t.view(), slot_t.view(), inv_t.view(), q.view_mut(), kc.view_mut(), vc.view_mut())
            .unwrap();
        ops::attention_cached(q.view(), kc.view(), vc.view(), slot_t.view(), lens_t.view(), out.view_mut(), scale).unwrap();
        assert_close(&format!("{label}: prefill seed {seed}"), &out.to_f32_vec().unwrap(), &want[0], BF16_REL, ATTENTION_ABS);

        // decode: per-step values in device tensors, the step captured once as a graph
        let mut dqkv_t = Tensor::uninit(&dev, act, &[3, 3 * hd]).unwrap();
        let mut dpos_t = Tensor::from_i32(&dev, &[3], &[0, 0, 0]).unwrap();
        let dslot_t = Tensor::from_i32(&dev, &[3], &dslots).unwrap();
        let mut dlens_t = Tensor::from_i32(&dev, &[3], &[0, 0, 0]).unwrap();
        let mut dq = Tensor::uninit(&dev, act, &[3, hd]).unwrap();
        let mut dout = Tensor::uninit(&dev, act, &[3, hd]).unwrap();
        let graph = dev
            .capture(|| {
                ops::rope_kv_write(
                    dqkv_t.view(),
                    dpos_t.view(),
                    dslot_t.view(),
                    inv_t.view(),
                    dq.view_mut(),
                    kc.view_mut(),
                    vc.view_mut(),
                )?;
                ops::attention_cached(dq.view(), kc.view(), vc.view(), dslot_t.view(), dlens_t.view(), dout.view_mut(), scale)
            })
            .unwrap();
        assert_eq!(graph.kernel_names(), ["rope_kv_write_bf16", "attention_cached_d64_bf16"], "{label}");
        for (i, qkv) in dqkv.iter().enumerate() {
            dqkv_t.copy_from_f32(qkv).unwrap();
            dpos_t.copy_from_i32(&[7 + i as i32, 0, 12 + i as i32]).unwrap();
            dlens_t.copy_from_i32(&[8 + i as i32, 0, 13 + i as i32]).unwrap();
            graph.replay().unwrap();
            let got = dout.to_f32_vec().unwrap();
            let dq_got = dq.to_f32_vec().unwrap();
            assert!(dq_got[hd..2 * hd].iter().all(|v| v.is_nan()), "{label}: the inactive row's slot -1 gives a NaN q row");
            assert!(got[hd..2 * hd].iter().all(|&v| v == 0.0), "{label}: the inactive row's output is zeros");
            assert_close(&format!("{label}: decode step {i} seed {seed}"), &got, &want[i + 1], BF16_REL, ATTENTION_ABS);
        }
    }
}

struct DenseCase {
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    dh: usize,
    causal: bool,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    kv_lens: Option<Vec<i32>>,
    scale: f32,
}

impl DenseCase {
    #[allow(clippy::too_many_arguments)]
    fn random(seed: u64, batch: usize, lq: usize, lk: usize, heads: usize, dh: usize, causal: bool, masked: bool) -> DenseCase {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = heads * dh;
        let kv_lens = masked.then(|| {
            let mut l: Vec<i32> = (0..batch).map(|_| rng.random_range(0..=lk) as i32).collect();
            l[0] = lk as i32;
            if batch > 1 {
                l[1] = 0; // a batch with no keys: zeros
            }
            if batch > 2 {
                l[2] = 1.min(lk as i32);
            }
            l
        });
        let mut k = round_bf16(&random_f32(seed + 1, batch * lk * w, 1.0));
        let mut v = round_bf16(&random_f32(seed + 2, batch * lk * w, 1.0));
        if let Some(lens) = &kv_lens {
            // masked keys hold NaN: a kernel that lets them in turns its output NaN
            for (b, &l) in lens.iter().enumerate() {
                k[(b * lk + l as usize) * w..(b + 1) * lk * w].fill(f32::NAN);
                v[(b * lk + l as usize) * w..(b + 1) * lk * w].fill(f32::NAN);
            }
        }
        let q = round_bf16(&random_f32(seed + 3, batch * lq * w, 1.5));
        DenseCase { batch, lq, lk, heads, dh, causal, q, k, v, kv_lens, scale: 1.0 / (dh as f32).sqrt() }
    }

    /// With `misalign`, q, k and v are views starting 2 bytes into their tensors (the kernels then
    /// cannot use 16-byte loads).
    fn run(&self, dev: &Device, misalign: bool) -> tts_kernels::Result<Vec<f32>> {
        let act = dev.compute_dtype();
        let w = self.heads * self.dh;
        let mk = |len: usize, data: &[f32]| -> tts_kernels::Result<Tensor> {
            let off = misalign as usize;
            let mut padded = vec![0.0; off];
            padded.extend_from_slice(data);
            Tensor::from_f32(dev, act, &[len + off, 1], &padded)
        };
        let q = mk(self.q.len(), &self.q)?;
        let k = mk(self.k.len(), &self.k)?;
        let v = mk(self.v.len(), &self.v)?;
        let off = misalign as usize;
        fn view<'a>(t: &'a Tensor, off: usize, len: usize, shape: &[usize]) -> tts_kernels::Result<tts_kernels::View<'a>> {
            t.view().narrow_rows(off, len)?.reshape(shape)
        }
        let qv = view(&q, off, self.q.len(), &[self.batch, self.lq, w])?;
        let kv = view(&k, off, self.k.len(), &[self.batch, self.lk, w])?;
        let vv = view(&v, off, self.v.len(), &[self.batch, self.lk, w])?;
        let lens = self.kv_lens.as_ref().map(|l| Tensor::from_i32(dev, &[self.batch], l)).transpose()?;
        let mut out = Tensor::uninit(dev, act, &[self.batch, self.lq, w])?;
        ops::attention_dense(qv, kv, vv, lens.as_ref().map(|l| l.view()), out.view_mut(), self.heads, self.scale, self.causal)?;
        out.to_f32_vec()
    }
}

#[test]
fn attention_dense_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (batch, lq, lk, heads, head_dim, causal, kv_lens)
    let cases = [
        (2, 32, 47, 4, 16, false, true),    // Perceiver cross-attention (tiny hidden), padded prompts
        (3, 32, 32, 4, 32, false, false),   // Perceiver self-attention
        (1, 32, 150, 4, 256, false, false), // the real Perceiver head dim, longest prompt
        (3, 70, 70, 3, 64, true, true),     // tiled head dim 64: causal, padded
        (3, 65, 130, 2, 64, false, true),   // tiled: padding masks, a partial query tile
        (2, 100, 37, 3, 64, true, false),   // tiled: causal with lq > lk
        (1, 200, 161, 1, 64, false, false),
        (3, 9, 13, 5, 24, true, true), // odd everything
        (2, 17, 200, 2, 100, false, true),
        (1, 5, 7, 1, 1, false, false),
        (2, 6, 3, 3, 40, true, false),
    ];
    for (i, &(batch, lq, lk, heads, dh, causal, masked)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let c = DenseCase::random(s, batch, lq, lk, heads, dh, causal, masked);
        let want = c.run(&cpu, false).unwrap();
        assert!(want.iter().all(|v| v.is_finite()), "the Cpu reference let a masked key in");
        for (label, dev) in &devices {
            let what = format!(
                "{label}: attention_dense b {batch} lq {lq} lk {lk} heads {heads} dh {dh} causal {causal} kv_lens {:?} seed {s}",
                c.kv_lens
            );
            assert_close(&what, &c.run(dev, false).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            if dh == 64 && i == 3 {
                // the same case through the any-head-dim kernel (unaligned views)
                assert_close(&format!("{what} unaligned"), &c.run(dev, true).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            }
        }
    }
}

#[test]
fn attention_dense_bad_lengths_are_errors_or_nan() {
    for dh in [64, 20] {
        let mut c = DenseCase::random(21, 2, 5, 6, 2, dh, false, false);
        c.kv_lens = Some(vec![7, 3]);
        let e = c.run(&Device::cpu(), false).unwrap_err();
        assert!(e.to_string().contains("batch 0: kv_len 7 is outside 0..=6"), "{e}");
        let mut good = DenseCase { kv_lens: Some(vec![3, 3]), ..DenseCase::random(21, 2, 5, 6, 2, dh, false, false) };
        let want = good.run(&Device::cpu(), false).unwrap();
        good.kv_lens = Some(vec![-1, 3]);
        let half = want.len() / 2;
        for (label, dev) in kernel_devices() {
            let got = c.run(&dev, false).unwrap();
            assert!(got[..half].iter().all(|v| v.is_nan()), "{label} dh {dh}: kv_len 7 > lk 6 must give NaN");
            assert_close(&format!("{label} dh {dh}"), &got[half..], &want[half..], BF16_REL, ATTENTION_ABS);
            let got = good.run(&dev, false).unwrap();
            assert!(got[..half].iter().all(|v| v.is_nan()), "{label} dh {dh}: kv_len -1 must give NaN");
        }
    }
}

#[test]
fn unsupported_shapes_and_dtypes_are_errors() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let act = dev.compute_dtype();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let i = |n: usize| Tensor::from_i32(&dev, &[n], &vec![0; n]).unwrap();
        // cached attention: head_dim 48 is not a multiple of 32
        let (q, k, v, mut out) = (z(&[2, 96]), z(&[1, 2, 8, 48]), z(&[1, 2, 8, 48]), z(&[2, 96]));
        let e = ops::attention_cached(q.view(), k.view(), v.view(), i(2).view(), i(2).view(), out.view_mut(), 1.0).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("head_dim 48"), "{label}: {e}");
        // mismatched q width, lens count, cache shapes, dtypes
        let (k, v) = (z(&[1, 2, 8, 32]), z(&[1, 2, 8, 32]));
        let e = ops::attention_cached(q.view(), k.view(), v.view(), i(2).view(), i(2).view(), out.view_mut(), 1.0).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let (q, mut out) = (z(&[2, 64]), z(&[2, 64]));
        let e = ops::attention_cached(q.view(), k.view(), v.view(), i(2).view(), i(3).view(), out.view_mut(), 1.0).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let v_bad = z(&[1, 2, 9, 32]);
        let e =
            ops::attention_cached(q.view(), k.view(), v_bad.view(), i(2).view(), i(2).view(), out.view_mut(), 1.0).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let lens_f = Tensor::zeros(&dev, DType::F32, &[2]).unwrap();
        let e = ops::attention_cached(q.view(), k.view(), v.view(), i(2).view(), lens_f.view(), out.view_mut(), 1.0).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        let mut scratch = Tensor::zeros(&dev, DType::F32, &[2, 2, 3, 33]).unwrap();
        let e = ops::attention_cached_split(
            q.view(),
            k.view(),
            v.view(),
            i(2).view(),
            i(2).view(),
            out.view_mut(),
            scratch.view_mut(),
            1.0,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("scratch"), "{label}: {e}");
        // rope: odd head dim, inv_freq length
        let (qkv, mut qo) = (z(&[2, 3 * 2 * 7]), z(&[2, 14]));
        let (mut kc, mut vc) = (z(&[1, 2, 4, 7]), z(&[1, 2, 4, 7]));
        let inv = Tensor::zeros(&dev, DType::F32, &[3]).unwrap();
        let e = ops::rope_kv_write(qkv.view(), i(2).view(), i(2).view(), inv.view(), qo.view_mut(), kc.view_mut(), vc.view_mut())
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("even head_dim"), "{label}: {e}");
        let (qkv, mut qo) = (z(&[2, 3 * 2 * 8]), z(&[2, 16]));
        let (mut kc, mut vc) = (z(&[1, 2, 4, 8]), z(&[1, 2, 4, 8]));
        let e = ops::rope_kv_write(qkv.view(), i(2).view(), i(2).view(), inv.view(), qo.view_mut(), kc.view_mut(), vc.view_mut())
            .unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("inv_freq"), "{label}: {e}");
        // dense: width not divisible by heads, head_dim > 256, k / v mismatch
        let (q, k, mut out) = (z(&[1, 3, 30]), z(&[1, 4, 30]), z(&[1, 3, 30]));
        let e = ops::attention_dense(q.view(), k.view(), k.view(), None, out.view_mut(), 4, 1.0, false).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let (q, k, mut out) = (z(&[1, 3, 514]), z(&[1, 4, 514]), z(&[1, 3, 514]));
        let e = ops::attention_dense(q.view(), k.view(), k.view(), None, out.view_mut(), 2, 1.0, false).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let (q, k, v, mut out) = (z(&[1, 3, 32]), z(&[1, 4, 32]), z(&[1, 5, 32]), z(&[1, 3, 32]));
        let e = ops::attention_dense(q.view(), k.view(), v.view(), None, out.view_mut(), 1, 1.0, false).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        // cached attention on views that are not 16-byte aligned (kernels only)
        if dev.kind() != BackendKind::Cpu {
            let big = z(&[2 * 64 + 1, 1]);
            let qv = big.view().narrow_rows(1, 128).unwrap().reshape(&[2, 64]).unwrap();
            let (k, v) = (z(&[1, 2, 8, 32]), z(&[1, 2, 8, 32]));
            let e =
                ops::attention_cached(qv, k.view(), v.view(), i(2).view(), i(2).view(), out_of(&dev, &[2, 64]).view_mut(), 1.0)
                    .unwrap_err();
            assert!(e.to_string().contains("16-byte aligned"), "{label}: {e}");
        }
    }
}

fn out_of(dev: &Device, shape: &[usize]) -> Tensor {
    Tensor::zeros(dev, dev.compute_dtype(), shape).unwrap()
}

#[test]
fn each_shape_takes_the_intended_kernels() {
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let names = |f: &mut dyn FnMut() -> tts_kernels::Result<()>| dev.capture(f).unwrap().kernel_names().to_vec();
        // dense: head_dim 64 on aligned views is tiled; unaligned views and other head dims are not
        let (q, k, mut out) = (z(&[2, 5, 128]), z(&[2, 7, 128]), z(&[2, 5, 128]));
        let big = z(&[2 * 7 * 128 + 1, 1]);
        let k_odd = big.view().narrow_rows(1, 2 * 7 * 128).unwrap().reshape(&[2, 7, 128]).unwrap();
        assert_eq!(
            names(&mut || ops::attention_dense(q.view(), k.view(), k.view(), None, out.view_mut(), 2, 1.0, true)),
            ["attention_dense_d64_bf16"],
            "{label}"
        );
        assert_eq!(
            names(&mut || ops::attention_dense(q.view(), k_odd, k.view(), None, out.view_mut(), 2, 1.0, true)),
            ["attention_dense_bf16"],
            "{label}"
        );
        assert_eq!(
            names(&mut || ops::attention_dense(q.view(), k.view(), k.view(), None, out.view_mut(), 4, 1.0, true)),
            ["attention_dense_bf16"],
            "{label}"
        );
        // cached: one kernel, or the sliced kernel and the combine
        let (q, kc, mut out) = (z(&[3, 128]), z(&[2, 2, 16, 64]), z(&[3, 128]));
        let ints = Tensor::from_i32(&dev, &[3], &[0, 1, 0]).unwrap();
        let mut scratch = Tensor::zeros(&dev, DType::F32, &[3, 2, 5, 66]).unwrap();
        assert_eq!(
            names(&mut || ops::attention_cached(q.view(), kc.view(), kc.view(), ints.view(), ints.view(), out.view_mut(), 1.0)),
            ["attention_cached_d64_bf16"],
            "{label}"
        );
        assert_eq!(
            names(&mut || ops::attention_cached_split(
                q.view(),
                kc.view(),
                kc.view(),
                ints.view(),
                ints.view(),
                out.view_mut(),
                scratch.view_mut(),
                1.0
            )),
            ["attention_cached_d64_bf16", "attention_cached_combine_bf16"],
            "{label}"
        );
    }
}
