//! The fused decode attention (`kernels/attention.cu`: `ops::rope_attention_decode` and its split
//! form `ops::rope_attention_decode_split`) against its Cpu reference and against the unfused pair
//! it replaces (`ops::rope_kv_write` + `ops::attention_cached`), on every kernel backend of this build
//! and machine (Emu in forward, reverse and random thread schedules; Cuda when a GPU is usable), with
//! fresh random inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, outputs
//! prefilled with NaN, and cache positions that must not be read poisoned with NaN.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tts_kernels::testing::{
    ATTENTION_ABS, BF16_REL, assert_bits_eq, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16, t3_inv_freq,
};
use tts_kernels::{BackendKind, DType, Device, EmuOptions, Error, Result, Tensor, ViewMut, ops};

/// A decode step: live rows in distinct slots (one with a full context, one at position 0, one with
/// len = position, i.e. its new row is written but not attended), inactive rows (len 0) with an
/// invalid slot and one pointing into a live row's context (it must write nothing there). Cache
/// positions no live row reads hold NaN.
#[derive(Clone)]
struct DecodeCase {
    rows: usize,
    heads: usize,
    d: usize,
    n_slots: usize,
    max_len: usize,
    qkv: Vec<f32>,
    pos: Vec<i32>,
    slots: Vec<i32>,
    lens: Vec<i32>,
    k: Vec<f32>,
    v: Vec<f32>,
    inv: Vec<f32>,
    scale: f32,
}

struct DecodeOut {
    out: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl DecodeCase {
    fn random(seed: u64, rows: usize, heads: usize, d: usize, n_slots: usize, max_len: usize, inactive: &[usize]) -> DecodeCase {
        let mut rng = StdRng::seed_from_u64(seed);
        let live: Vec<usize> = (0..rows).filter(|r| !inactive.contains(r)).collect();
        assert!(live.len() <= n_slots && !live.is_empty());
        let mut free: Vec<i32> = (0..n_slots as i32).collect();
        free.shuffle(&mut rng);
        let (mut pos, mut slots, mut lens) = (vec![0i32; rows], vec![0i32; rows], vec![0i32; rows]);
        for (i, &r) in live.iter().enumerate() {
            let p = match i {
                0 => max_len - 1,
                1 => 0,
                _ => rng.random_range(0..max_len),
            } as i32;
            pos[r] = p;
            slots[r] = free[i];
            lens[r] = if i == 2 && p > 0 { p } else { p + 1 };
        }
        for (j, &r) in inactive.iter().enumerate() {
            // an invalid slot, or a valid cell inside the first live row's context
            (slots[r], pos[r]) = if j.is_multiple_of(2) {
                (if seed.is_multiple_of(2) { -1 } else { n_slots as i32 + 5 }, -3)
            } else {
                (slots[live[0]], 1)
            };
            lens[r] = 0;
        }
        let hd = heads * d;
        let mut k = round_bf16(&random_f32(seed + 1, n_slots * hd * max_len, 1.0));
        let mut v = round_bf16(&random_f32(seed + 2, n_slots * hd * max_len, 1.0));
        let mut read = vec![0usize; n_slots];
        for &r in &live {
            read[slots[r] as usize] = lens[r] as usize;
        }
        for (s, &n) in read.iter().enumerate() {
            for h in 0..heads {
                let at = (s * heads + h) * max_len;
                k[(at + n) * d..(at + max_len) * d].fill(f32::NAN);
                v[(at + n) * d..(at + max_len) * d].fill(f32::NAN);
            }
        }
        DecodeCase {
            rows,
            heads,
            d,
            n_slots,
            max_len,
            qkv: round_bf16(&random_f32(seed + 3, rows * 3 * hd, 1.0)),
            pos,
            slots,
            lens,
            k,
            v,
            inv: t3_inv_freq(d),
            scale: 1.0 / (d as f32).sqrt(),
        }
    }

    fn cshape(&self) -> [usize; 4] {
        [self.n_slots, self.heads, self.max_len, self.d]
    }

    fn run_fused(&self, dev: &Device) -> Result<DecodeOut> {
        self.run_fused_with(dev, None)
    }

    /// rope_attention_decode (`splits = None`) or rope_attention_decode_split with a scratch of
    /// `splits` slices (poisoned with NaN: the kernels must write what they read).
    fn run_fused_with(&self, dev: &Device, splits: Option<usize>) -> Result<DecodeOut> {
        self.run_fused_scratch(dev, splits, f32::NAN)
    }

    /// run_fused_with a scratch prefilled with `fill` (a finite value stands for a previous step's
    /// partial results: what a slice leaves unwritten then shows as a finite, wrong output).
    fn run_fused_scratch(&self, dev: &Device, splits: Option<usize>, fill: f32) -> Result<DecodeOut> {
        let act = dev.compute_dtype();
        let hd = self.heads * self.d;
        let qkv = Tensor::from_f32(dev, act, &[self.rows, 3 * hd], &self.qkv)?;
        let pos = Tensor::from_i32(dev, &[self.rows], &self.pos)?;
        let slots = Tensor::from_i32(dev, &[self.rows], &self.slots)?;
        let lens = Tensor::from_i32(dev, &[self.rows], &self.lens)?;
        let inv = Tensor::from_f32(dev, DType::F32, &[self.d / 2], &self.inv)?;
        let mut kc = Tensor::from_f32(dev, act, &self.cshape(), &self.k)?;
        let mut vc = Tensor::from_f32(dev, act, &self.cshape(), &self.v)?;
        let mut out = Tensor::from_f32(dev, act, &[self.rows, hd], &vec![f32::NAN; self.rows * hd])?;
        let (q, p, s, i, l) = (qkv.view(), pos.view(), slots.view(), inv.view(), lens.view());
        match splits {
            None => ops::rope_attention_decode(q, p, s, i, kc.view_mut(), vc.view_mut(), l, out.view_mut(), self.scale)?,
            Some(n) => {
                let shape = [self.rows, self.heads, n, self.d + 2];
                let mut scratch = Tensor::from_f32(dev, DType::F32, &shape, &vec![fill; shape.iter().product()])?;
                let (k, v, o) = (kc.view_mut(), vc.view_mut(), out.view_mut());
                ops::rope_attention_decode_split(q, p, s, i, k, v, l, o, scratch.view_mut(), self.scale)?;
            }
        }
        Ok(DecodeOut { out: out.to_f32_vec()?, k: kc.to_f32_vec()?, v: vc.to_f32_vec()? })
    }

    fn live(&self) -> Vec<usize> {
        (0..self.rows).filter(|&r| self.lens[r] != 0).collect()
    }

    /// rope_kv_write on the live rows, then attention_cached on every row (the existing ops). With
    /// `round`, q and the caches are rounded to bf16 in between (a Cpu run that mirrors what bf16
    /// device tensors store).
    fn run_unfused(&self, dev: &Device, round: bool) -> Result<DecodeOut> {
        self.run_unfused_with(dev, round, None)
    }

    /// run_unfused with attention_cached_split of `splits` slices instead of attention_cached.
    fn run_unfused_with(&self, dev: &Device, round: bool, splits: Option<usize>) -> Result<DecodeOut> {
        let act = dev.compute_dtype();
        let hd = self.heads * self.d;
        let live = self.live();
        let n = live.len();
        let lqkv: Vec<f32> = live.iter().flat_map(|&r| self.qkv[r * 3 * hd..(r + 1) * 3 * hd].to_vec()).collect();
        let lpos: Vec<i32> = live.iter().map(|&r| self.pos[r]).collect();
        let lslots: Vec<i32> = live.iter().map(|&r| self.slots[r]).collect();
        let inv = Tensor::from_f32(dev, DType::F32, &[self.d / 2], &self.inv)?;
        let mut kc = Tensor::from_f32(dev, act, &self.cshape(), &self.k)?;
        let mut vc = Tensor::from_f32(dev, act, &self.cshape(), &self.v)?;
        let mut lq = Tensor::uninit(dev, act, &[n, hd])?;
        ops::rope_kv_write(
            Tensor::from_f32(dev, act, &[n, 3 * hd], &lqkv)?.view(),
            Tensor::from_i32(dev, &[n], &lpos)?.view(),
            Tensor::from_i32(dev, &[n], &lslots)?.view(),
            inv.view(),
            lq.view_mut(),
            kc.view_mut(),
            vc.view_mut(),
        )?;
        let mut lqv = lq.to_f32_vec()?;
        if round {
            lqv = round_bf16(&lqv);
            kc.copy_from_f32(&round_bf16(&kc.to_f32_vec()?))?;
            vc.copy_from_f32(&round_bf16(&vc.to_f32_vec()?))?;
        }
        let mut q = vec![0.0; self.rows * hd];
        for (i, &r) in live.iter().enumerate() {
            q[r * hd..(r + 1) * hd].copy_from_slice(&lqv[i * hd..(i + 1) * hd]);
        }
        let mut out = Tensor::uninit(dev, act, &[self.rows, hd])?;
        let q = Tensor::from_f32(dev, act, &[self.rows, hd], &q)?;
        let slots = Tensor::from_i32(dev, &[self.rows], &self.slots)?;
        let lens = Tensor::from_i32(dev, &[self.rows], &self.lens)?;
        let (q, k, v, s, l) = (q.view(), kc.view(), vc.view(), slots.view(), lens.view());
        match splits {
            None => ops::attention_cached(q, k, v, s, l, out.view_mut(), self.scale)?,
            Some(n) => {
                let mut scratch = Tensor::uninit(dev, DType::F32, &[self.rows, self.heads, n, self.d + 2])?;
                ops::attention_cached_split(q, k, v, s, l, out.view_mut(), scratch.view_mut(), self.scale)?;
            }
        }
        Ok(DecodeOut { out: out.to_f32_vec()?, k: kc.to_f32_vec()?, v: vc.to_f32_vec()? })
    }
}

/// (rows, heads, head_dim, n_slots, max_len, inactive rows)
type DecodeShape = (usize, usize, usize, usize, usize, &'static [usize]);

const DECODE_CASES: &[DecodeShape] = &[
    (5, 16, 64, 6, 70, &[1, 3]), // T3 heads
    (2, 16, 64, 2, 300, &[]),    // one request with CFG, a long context (wide blocks)
    (3, 3, 32, 4, 33, &[0]),
    (4, 2, 128, 5, 17, &[2, 3]),
    (3, 1, 256, 3, 9, &[]),
    (7, 2, 96, 9, 40, &[0, 6]),
    (2, 1, 160, 2, 5, &[]),
    (3, 2, 192, 3, 12, &[1]),
    (2, 1, 224, 2, 6, &[]),
    (1, 1, 64, 1, 1, &[]), // max_len 1: position 0 only
];

#[test]
fn rope_attention_decode_equals_the_unfused_pair_bit_for_bit() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in kernel_devices() {
        for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
            let what = format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} seed {s}", c.lens);
            let fused = c.run_fused(&dev).unwrap();
            let unfused = c.run_unfused(&dev, false).unwrap();
            assert_bits_eq(&format!("{what}: out"), &fused.out, &unfused.out);
            assert_bits_eq(&format!("{what}: k_cache"), &fused.k, &unfused.k);
            assert_bits_eq(&format!("{what}: v_cache"), &fused.v, &unfused.v);
            let hd = heads * d;
            for &r in inactive {
                assert!(fused.out[r * hd..(r + 1) * hd].iter().all(|&x| x == 0.0), "{what}: inactive row {r} must be zeros");
            }
            assert!(fused.out.iter().all(|x| x.is_finite()), "{what}: a live row read a poisoned cache cell");
        }
    }
}

#[test]
fn rope_attention_decode_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
        // Cpu: the fused op is the unfused Cpu ops bit for bit
        let want_fused = c.run_fused(&cpu).unwrap();
        let want_unfused = c.run_unfused(&cpu, false).unwrap();
        let what = format!("cpu: rows {rows} heads {heads} d {d} seed {s}");
        assert_bits_eq(&format!("{what}: out"), &want_fused.out, &want_unfused.out);
        assert_bits_eq(&format!("{what}: k_cache"), &want_fused.k, &want_unfused.k);
        assert_bits_eq(&format!("{what}: v_cache"), &want_fused.v, &want_unfused.v);
        // kernels against the Cpu ops with q and the caches rounded to bf16 as the device stores them
        let want = c.run_unfused(&cpu, true).unwrap();
        let clen = c.k.len();
        let mut written = vec![false; clen];
        for r in c.live() {
            for h in 0..heads {
                let at = ((c.slots[r] as usize * heads + h) * max_len + c.pos[r] as usize) * d;
                written[at..at + d].fill(true);
            }
        }
        let pick = |v: &[f32], w: bool| -> Vec<f32> { v.iter().zip(&written).filter(|x| *x.1 == w).map(|x| *x.0).collect() };
        for (label, dev) in &devices {
            let got = c.run_fused(dev).unwrap();
            let what = format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} seed {s}", c.lens);
            assert_close(&format!("{what}: out"), &got.out, &want.out, BF16_REL, ATTENTION_ABS);
            assert_close(&format!("{what}: k rows"), &pick(&got.k, true), &pick(&want.k, true), BF16_REL, 1e-5);
            assert_bits_eq(&format!("{what}: v rows"), &pick(&got.v, true), &pick(&want.v, true));
            assert_bits_eq(&format!("{what}: k untouched"), &pick(&got.k, false), &pick(&c.k, false));
            assert_bits_eq(&format!("{what}: v untouched"), &pick(&got.v, false), &pick(&c.v, false));
        }
    }
}

#[test]
fn rope_attention_decode_bad_rows_are_nan_on_kernels_and_errors_on_cpu() {
    let (heads, d, n_slots, max_len) = (2, 32, 8, 6);
    let hd = heads * d;
    let mut c = DecodeCase::random(17, 8, heads, d, n_slots, max_len, &[]);
    c.k = round_bf16(&random_f32(18, c.k.len(), 1.0)); // no poison: bad rows vary the read range
    c.v = round_bf16(&random_f32(19, c.v.len(), 1.0));
    // row 0 good; then len > max_len, len < 0, position max_len, position -1, slot n_slots, slot -1;
    // row 7: inactive with every field out of range (zeros)
    c.pos = vec![2, 1, 1, max_len as i32, -1, 3, 3, 99];
    c.lens = vec![3, max_len as i32 + 1, -1, 2, 2, 4, 4, 0];
    c.slots = vec![0, 1, 2, 3, 4, n_slots as i32, -1, -7];
    let cpu = Device::cpu();
    let expect = [
        (1, "row 1: length 7 is outside 0..=6"),
        (2, "row 2: length -1 is outside 0..=6"),
        (3, "row 3: position 6 is outside 0..6"),
        (4, "row 4: position -1 is outside 0..6"),
        (5, "row 5: slot 8 is outside 0..8"),
        (6, "row 6: slot -1 is outside 0..8"),
    ];
    for (bad, msg) in expect {
        // the good row, the bad row and the inactive one: an error, and nothing written
        let mut one = c.clone();
        let pick = [0, bad, 7];
        one.rows = 3;
        one.qkv = pick.iter().flat_map(|&r| c.qkv[r * 3 * hd..(r + 1) * 3 * hd].to_vec()).collect();
        one.pos = pick.iter().map(|&r| c.pos[r]).collect();
        one.lens = pick.iter().map(|&r| c.lens[r]).collect();
        one.slots = pick.iter().map(|&r| c.slots[r]).collect();
        let e = one.run_fused(&cpu).err().unwrap();
        let msg = msg.replacen(&format!("row {bad}"), "row 1", 1);
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(&msg), "want {msg:?}, got {e}");
    }
    // nothing written on Cpu when a row is bad
    let hd3 = 3 * hd;
    let qkv = Tensor::from_f32(&cpu, DType::F32, &[2, hd3], &c.qkv[..2 * hd3]).unwrap();
    let i32t = |v: &[i32]| Tensor::from_i32(&cpu, &[v.len()], v).unwrap();
    let inv = Tensor::from_f32(&cpu, DType::F32, &[d / 2], &c.inv).unwrap();
    let mut kc = Tensor::from_f32(&cpu, DType::F32, &c.cshape(), &c.k).unwrap();
    let mut vc = Tensor::from_f32(&cpu, DType::F32, &c.cshape(), &c.v).unwrap();
    let mut out = Tensor::zeros(&cpu, DType::F32, &[2, hd]).unwrap();
    let decode = |kc: &mut Tensor, vc: &mut Tensor, out: &mut Tensor, p: &Tensor, s: &Tensor, l: &Tensor| {
        ops::rope_attention_decode(
            qkv.view(),
            p.view(),
            s.view(),
            inv.view(),
            kc.view_mut(),
            vc.view_mut(),
            l.view(),
            out.view_mut(),
            c.scale,
        )
    };
    let (p, s, l) = (i32t(&[2, 1]), i32t(&[0, 1]), i32t(&[3, 9]));
    decode(&mut kc, &mut vc, &mut out, &p, &s, &l).unwrap_err();
    assert_bits_eq("cpu: k_cache after an error", &kc.to_f32_vec().unwrap(), &c.k);
    assert_bits_eq("cpu: v_cache after an error", &vc.to_f32_vec().unwrap(), &c.v);
    // duplicate live slots: an error on Cpu; an inactive row may name any slot
    let (p, s, l) = (i32t(&[2, 1]), i32t(&[1, 1]), i32t(&[3, 2]));
    let e = decode(&mut kc, &mut vc, &mut out, &p, &s, &l).unwrap_err();
    assert!(e.to_string().contains("rows 0 and 1 are both live in slot 1"), "{e}");
    assert_bits_eq("cpu: k_cache after a duplicate slot", &kc.to_f32_vec().unwrap(), &c.k);
    let l0 = i32t(&[3, 0]);
    decode(&mut kc, &mut vc, &mut out, &p, &s, &l0).unwrap();

    // kernels: NaN for the bad rows, zeros for the inactive one, the caches as if only row 0 ran
    let good = DecodeCase {
        rows: 2,
        qkv: [&c.qkv[..hd3], &c.qkv[7 * hd3..]].concat(),
        pos: vec![c.pos[0], c.pos[7]],
        lens: vec![c.lens[0], 0],
        slots: vec![c.slots[0], c.slots[7]],
        ..c.clone()
    };
    for (label, dev) in kernel_devices() {
        let got = c.run_fused(&dev).unwrap();
        let want = good.run_unfused(&dev, false).unwrap();
        assert_bits_eq(&format!("{label}: good row"), &got.out[..hd], &want.out[..hd]);
        assert!(got.out[hd..7 * hd].iter().all(|v| v.is_nan()), "{label}: bad rows must be NaN");
        assert!(got.out[7 * hd..].iter().all(|&v| v == 0.0), "{label}: the inactive row must be zeros");
        assert_bits_eq(&format!("{label}: k_cache"), &got.k, &want.k);
        assert_bits_eq(&format!("{label}: v_cache"), &got.v, &want.v);
    }
}

#[test]
fn rope_attention_decode_errors_are_errors() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let act = dev.compute_dtype();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let i = |n: usize| Tensor::from_i32(&dev, &[n], &vec![0; n]).unwrap();
        let inv = |n: usize| Tensor::zeros(&dev, DType::F32, &[n]).unwrap();
        let run = |qkv: &Tensor, lens: &Tensor, inv: &Tensor, kc: &mut Tensor, vc: &mut Tensor, out: &mut Tensor| {
            let rows = qkv.shape()[0];
            ops::rope_attention_decode(
                qkv.view(),
                i(rows).view(),
                i(rows).view(),
                inv.view(),
                kc.view_mut(),
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                0.125,
            )
        };
        // head_dim 48 is not a multiple of 32
        let (mut kc, mut vc) = (z(&[2, 2, 8, 48]), z(&[2, 2, 8, 48]));
        let e = run(&z(&[2, 3 * 96]), &i(2), &inv(24), &mut kc, &mut vc, &mut z(&[2, 96])).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("head_dim 48"), "{label}: {e}");
        let (mut kc, mut vc) = (z(&[2, 2, 8, 32]), z(&[2, 2, 8, 32]));
        let e = run(&z(&[2, 3 * 64 + 1]), &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("qkv"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[3, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("out"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(3), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("lens"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(15), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("inv_freq"), "{label}: {e}");
        let mut v_bad = z(&[2, 2, 9, 32]);
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(16), &mut kc, &mut v_bad, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let lens_f = Tensor::zeros(&dev, DType::F32, &[2]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &lens_f, &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        let inv_bf = Tensor::zeros(&dev, DType::BF16, &[16]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv_bf, &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "inv_freq", .. }), "{label}: {e}");
        let qkv_other = Tensor::zeros(&dev, if act == DType::F32 { DType::BF16 } else { DType::F32 }, &[2, 3 * 64]).unwrap();
        let e = run(&qkv_other, &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "qkv", .. }), "{label}: {e}");
        let other = Device::cpu();
        let inv_other = Tensor::zeros(&other, DType::F32, &[16]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv_other, &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        // no rows: nothing to do
        run(&z(&[0, 3 * 64]), &i(0), &inv(16), &mut kc, &mut vc, &mut z(&[0, 64])).unwrap();
        // caches at an address that is not 16-byte aligned (the kernels load cache rows with 16-byte loads)
        if dev.kind() != BackendKind::Cpu {
            let n = 2 * 2 * 8 * 32;
            let mut big = z(&[n + 1, 1]);
            let kv = big.view_mut().narrow_rows(1, n).unwrap().reshape(&[2, 2, 8, 32]).unwrap();
            let (qkv, lens, invt, mut out) = (z(&[2, 3 * 64]), i(2), inv(16), z(&[2, 64]));
            let e = ops::rope_attention_decode(
                qkv.view(),
                lens.view(),
                lens.view(),
                invt.view(),
                kv,
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                0.125,
            )
            .unwrap_err();
            assert!(e.to_string().contains("16-byte aligned"), "{label}: {e}");
        }
    }
}

/// Captures one fused decode step (`rope_attention_decode`, or with `Some(n)` key slices
/// `rope_attention_decode_split`) over caches `[3 slots, 4 heads, max_len, 64]`, replays it for 4
/// steps with new qkv, positions and lengths on the device (`step_rows(step)` gives each row's
/// position and length), and checks every step bit for bit against the unfused ops run directly on a
/// second copy of the caches; the capture must hold exactly `kernels`.
fn check_replayed_decode(
    splits: Option<usize>,
    max_len: usize,
    step_rows: impl Fn(i32) -> ([i32; 3], [i32; 3]),
    kernels: &[&str],
) {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (rows, heads, d, n_slots) = (3, 4, 64, 3);
    let hd = heads * d;
    for (label, dev) in kernel_devices() {
        let act = dev.compute_dtype();
        let cshape = [n_slots, heads, max_len, d];
        let c0 = round_bf16(&random_f32(seed, n_slots * hd * max_len, 1.0));
        let (mut kc, mut vc) =
            (Tensor::from_f32(&dev, act, &cshape, &c0).unwrap(), Tensor::from_f32(&dev, act, &cshape, &c0).unwrap());
        let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &t3_inv_freq(d)).unwrap();
        let mut qkv = Tensor::uninit(&dev, act, &[rows, 3 * hd]).unwrap();
        let mut pos = Tensor::from_i32(&dev, &[rows], &[0; 3]).unwrap();
        let slots = Tensor::from_i32(&dev, &[rows], &[2, 0, 1]).unwrap();
        let mut lens = Tensor::from_i32(&dev, &[rows], &[0; 3]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[rows, hd]).unwrap();
        let mut scratch = Tensor::uninit(&dev, DType::F32, &[rows, heads, splits.unwrap_or(1), d + 2]).unwrap();
        let graph = dev
            .capture(|| {
                let (q, p, sl, inv, k, v, l, o) =
                    (qkv.view(), pos.view(), slots.view(), inv.view(), kc.view_mut(), vc.view_mut(), lens.view(), out.view_mut());
                match splits {
                    None => ops::rope_attention_decode(q, p, sl, inv, k, v, l, o, 0.125),
                    Some(_) => ops::rope_attention_decode_split(q, p, sl, inv, k, v, l, o, scratch.view_mut(), 0.125),
                }
            })
            .unwrap();
        assert_eq!(graph.kernel_names(), kernels, "{label}");
        let mut reference = DecodeCase {
            rows,
            heads,
            d,
            n_slots,
            max_len,
            qkv: vec![],
            pos: vec![],
            slots: vec![2, 0, 1],
            lens: vec![],
            k: c0.clone(),
            v: c0.clone(),
            inv: t3_inv_freq(d),
            scale: 0.125,
        };
        for step in 0..4i32 {
            let q = round_bf16(&random_f32(seed + 1 + step as u64, rows * 3 * hd, 1.0));
            let (p, l) = step_rows(step);
            qkv.copy_from_f32(&q).unwrap();
            pos.copy_from_i32(&p).unwrap();
            lens.copy_from_i32(&l).unwrap();
            graph.replay().unwrap();
            reference.qkv = q;
            reference.pos = p.to_vec();
            reference.lens = l.to_vec();
            let want = reference.run_unfused_with(&dev, false, splits).unwrap();
            let what = format!("{label}: step {step} seed {seed}");
            assert_bits_eq(&format!("{what}: out"), &out.to_f32_vec().unwrap(), &want.out);
            assert_bits_eq(&format!("{what}: k_cache"), &kc.to_f32_vec().unwrap(), &want.k);
            assert_bits_eq(&format!("{what}: v_cache"), &vc.to_f32_vec().unwrap(), &want.v);
            (reference.k, reference.v) = (want.k, want.v);
        }
    }
}

#[test]
fn rope_attention_decode_replays_as_one_launch() {
    // row 1 finishes after step 1 (len 0 from then on)
    let rows = |step: i32| ([5 + step, 9 + step, step], [6 + step, if step < 2 { 10 + step } else { 0 }, step + 1]);
    check_replayed_decode(None, 24, rows, &["rope_attention_decode_d64_bf16"]);
}

// ---- rope_attention_decode_split (flash-decoding for few rows × heads)

/// Key slice counts the split tests run: no split, even and odd counts, more slices than 32-position
/// chunks of most lengths (trailing empty slices), and the most the chooser picks.
const SPLITS: [usize; 5] = [1, 2, 3, 7, ops::DECODE_MAX_SPLITS];

#[test]
fn rope_attention_decode_split_equals_the_unfused_split_pair_bit_for_bit() {
    // the fused split kernel + combine against rope_kv_write then attention_cached_split with the same
    // scratch shape: the same slices, block widths and summation order
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in kernel_devices() {
        for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
            for n in SPLITS {
                let what =
                    format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} splits {n} seed {s}", c.lens);
                let fused = c.run_fused_with(&dev, Some(n)).unwrap();
                let unfused = c.run_unfused_with(&dev, false, Some(n)).unwrap();
                assert_bits_eq(&format!("{what}: out"), &fused.out, &unfused.out);
                assert_bits_eq(&format!("{what}: k_cache"), &fused.k, &unfused.k);
                assert_bits_eq(&format!("{what}: v_cache"), &fused.v, &unfused.v);
                let hd = heads * d;
                for &r in inactive {
                    assert!(fused.out[r * hd..(r + 1) * hd].iter().all(|&x| x == 0.0), "{what}: inactive row {r} must be zeros");
                }
                assert!(fused.out.iter().all(|x| x.is_finite()), "{what}: a live row read a poisoned cache cell");
                if n == 1 {
                    // one slice is the unsplit op, launch for launch
                    let plain = c.run_fused(&dev).unwrap();
                    assert_bits_eq(&format!("{what}: out vs rope_attention_decode"), &fused.out, &plain.out);
                }
            }
        }
    }
}

#[test]
fn rope_attention_decode_split_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000 + 7);
        let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
        // Cpu: the split op is the unsplit one (the scratch is not touched)
        let plain = c.run_fused(&cpu).unwrap();
        let split = c.run_fused_with(&cpu, Some(3)).unwrap();
        assert_bits_eq(&format!("cpu: rows {rows} d {d} seed {s}: out"), &split.out, &plain.out);
        let want = c.run_unfused(&cpu, true).unwrap();
        for (label, dev) in &devices {
            for n in SPLITS {
                let got = c.run_fused_with(dev, Some(n)).unwrap();
                let what =
                    format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} splits {n} seed {s}", c.lens);
                assert_close(&format!("{what}: out"), &got.out, &want.out, BF16_REL, ATTENTION_ABS);
                assert_close(&format!("{what}: k_cache"), &got.k, &want.k, BF16_REL, 1e-5);
                assert_close(&format!("{what}: v_cache"), &got.v, &want.v, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn rope_attention_decode_split_bad_rows_are_nan_and_write_nothing() {
    // A bad position with a valid length and slot is seen only by the fused kernel, not by the
    // combine: its slices must still make the row NaN.
    let (heads, d, n_slots, max_len) = (2, 32, 8, 70);
    let hd = heads * d;
    let mut c = DecodeCase::random(fresh_seed(), 8, heads, d, n_slots, max_len, &[]);
    c.k = round_bf16(&random_f32(18, c.k.len(), 1.0));
    c.v = round_bf16(&random_f32(19, c.v.len(), 1.0));
    let m = max_len as i32;
    c.pos = vec![40, 1, 1, m, -1, 3, 3, 99];
    c.lens = vec![41, m + 1, -1, 40, 40, 4, 4, 0];
    c.slots = vec![0, 1, 2, 3, 4, n_slots as i32, -1, -7];
    let good = DecodeCase {
        rows: 2,
        qkv: [&c.qkv[..3 * hd], &c.qkv[7 * 3 * hd..]].concat(),
        pos: vec![c.pos[0], c.pos[7]],
        lens: vec![c.lens[0], 0],
        slots: vec![c.slots[0], c.slots[7]],
        ..c.clone()
    };
    for (label, dev) in kernel_devices() {
        for n in [2, 5] {
            let what = format!("{label}: splits {n}");
            // a scratch holding finite stale partials (max 1, sum 1, acc 1): every slice of a bad row
            // must be overwritten
            let got = c.run_fused_scratch(&dev, Some(n), 1.0).unwrap();
            let want = good.run_unfused_with(&dev, false, Some(n)).unwrap();
            assert_bits_eq(&format!("{what}: good row"), &got.out[..hd], &want.out[..hd]);
            for r in 1..7 {
                assert!(got.out[r * hd..(r + 1) * hd].iter().all(|v| v.is_nan()), "{what}: bad row {r} must be NaN");
            }
            assert!(got.out[7 * hd..].iter().all(|&v| v == 0.0), "{what}: the inactive row must be zeros");
            assert_bits_eq(&format!("{what}: k_cache"), &got.k, &want.k);
            assert_bits_eq(&format!("{what}: v_cache"), &got.v, &want.v);
        }
    }
}

#[test]
fn rope_attention_decode_split_scratch_errors_and_one_slice_leaves_it_alone() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    let (rows, heads, d, n_slots, max_len) = (3, 2, 32, 3, 20);
    for (label, dev) in all {
        let c = DecodeCase::random(fresh_seed(), rows, heads, d, n_slots, max_len, &[1]);
        let act = dev.compute_dtype();
        let hd = heads * d;
        let qkv = Tensor::from_f32(&dev, act, &[rows, 3 * hd], &c.qkv).unwrap();
        let i32t = |v: &[i32]| Tensor::from_i32(&dev, &[v.len()], v).unwrap();
        let (pos, slots, lens) = (i32t(&c.pos), i32t(&c.slots), i32t(&c.lens));
        let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &c.inv).unwrap();
        let mut kc = Tensor::from_f32(&dev, act, &c.cshape(), &c.k).unwrap();
        let mut vc = Tensor::from_f32(&dev, act, &c.cshape(), &c.v).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[rows, hd]).unwrap();
        let mut run = |scratch: ViewMut<'_>| {
            ops::rope_attention_decode_split(
                qkv.view(),
                pos.view(),
                slots.view(),
                inv.view(),
                kc.view_mut(),
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                scratch,
                c.scale,
            )
        };
        for bad in [[rows + 1, heads, 2, d + 2], [rows, heads + 1, 2, d + 2], [rows, heads, 0, d + 2], [rows, heads, 2, d]] {
            let mut s = Tensor::zeros(&dev, DType::F32, &bad).unwrap();
            let e = run(s.view_mut()).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("scratch"), "{label} {bad:?}: {e}");
        }
        let mut s3 = Tensor::zeros(&dev, DType::F32, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s3.view_mut().reshape(&[rows * heads, 2, d + 2]).unwrap()).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: a rank-3 scratch: {e}");
        let mut s_bf = Tensor::zeros(&dev, DType::BF16, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s_bf.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "scratch", .. }), "{label}: {e}");
        let other = if dev.kind() == BackendKind::Cpu { Device::cpu_bf16_weights() } else { Device::cpu() };
        let mut s_other = Tensor::zeros(&other, DType::F32, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s_other.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        // one slice: the unsplit launch, the scratch untouched
        let marker = random_f32(5, rows * heads * (d + 2), 1.0);
        let mut s1 = Tensor::from_f32(&dev, DType::F32, &[rows, heads, 1, d + 2], &marker).unwrap();
        run(s1.view_mut()).unwrap();
        assert_bits_eq(&format!("{label}: a one-slice scratch"), &s1.to_f32_vec().unwrap(), &marker);
    }
}

#[test]
fn rope_attention_decode_split_replays_as_two_launches() {
    // row 0 crosses slice boundaries as it grows; row 1 finishes after step 1; row 2 starts at 0
    let rows =
        |step: i32| ([95 + 13 * step, 140 + step, step], [96 + 13 * step, if step < 2 { 141 + step } else { 0 }, step + 1]);
    check_replayed_decode(Some(5), 150, rows, &["rope_attention_decode_d64_bf16", "attention_cached_combine_bf16"]);
}

#[test]
fn the_decode_split_follows_rows_times_heads_against_the_sm_count() {
    // split exactly when rows · heads < SMs; about two blocks per SM; never on Cpu
    for sms in [1usize, 7, 108, 132] {
        for rows in 1..=20usize {
            for heads in [1usize, 3, 16] {
                let s = ops::decode_attention_splits(rows, heads, Some(sms));
                if rows * heads < sms {
                    assert!((2..=ops::DECODE_MAX_SPLITS).contains(&s), "{rows} × {heads} on {sms} SMs: {s}");
                    let want = (2 * sms).div_ceil(rows * heads).clamp(2, ops::DECODE_MAX_SPLITS);
                    assert_eq!(s, want, "{rows} × {heads} on {sms} SMs");
                } else {
                    assert_eq!(s, 1, "{rows} × {heads} on {sms} SMs");
                }
                assert_eq!(ops::decode_attention_splits(rows, heads, None), 1);
            }
        }
    }
    // T3 at batch 1 (2 CFG rows × 16 heads = 32 blocks) on an H100: 9 slices, 288 blocks
    assert_eq!(ops::decode_attention_splits(2, 16, Some(132)), 9);
    assert_eq!(ops::decode_attention_splits(8, 16, Some(132)), 3);
    assert_eq!(ops::decode_attention_splits(10, 16, Some(132)), 1);
    assert_eq!(ops::decode_attention_splits(0, 16, Some(132)), 1);
    // the device reports its SM count: the emulated one follows EmuOptions
    assert_eq!(Device::cpu().multiprocessor_count().unwrap(), None);
    if let Ok(dev) = Device::emu(EmuOptions::default()) {
        assert_eq!(dev.multiprocessor_count().unwrap(), Some(tts_kernels::EMU_DEFAULT_MULTIPROCESSORS as usize));
        assert_eq!(tts_kernels::EMU_DEFAULT_MULTIPROCESSORS, 132);
        let seven = Device::emu(EmuOptions { multiprocessors: 7, ..EmuOptions::default() }).unwrap();
        assert_eq!(seven.multiprocessor_count().unwrap(), Some(7));
        let e = Device::emu(EmuOptions { multiprocessors: 0, ..EmuOptions::default() }).unwrap_err();
        assert!(e.to_string().contains("multiprocessors"), "{e}");
    }
    for (label, dev) in kernel_devices() {
        let sms = dev.multiprocessor_count().unwrap();
        assert!(sms.is_some_and(|n| n > 0), "{label}: {sms:?}");
    }
}
