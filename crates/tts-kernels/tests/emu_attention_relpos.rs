//! The relative-position attention kernel (`kernels/attention_relpos.cu`) against its Cpu reference
//! op (itself proved against a literal transcription of ESPnet's rel_shift in `cpu::relpos`), on
//! every kernel backend of this build and machine (Emu in forward, reverse and random thread
//! schedules; Cuda when a GPU is usable), with fresh random inputs (the seed is printed;
//! `TTS_TEST_SEED` replays it), odd shapes, padded batches, outputs that start poisoned on Emu, and
//! key rows / pos rows that must not be read poisoned with NaN (a kernel that reads them turns its
//! output NaN).
use tts_kernels::testing::{
    ATTENTION_ABS, BF16_REL, assert_close, fresh_seed, kernel_devices, random_f32, random_i32, round_bf16,
};
use tts_kernels::{DType, Device, Error, Tensor, ops};

struct RelposCase {
    batch: usize,
    t: usize,
    heads: usize,
    dh: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    pos: Vec<f32>,
    bias_u: Vec<f32>,
    bias_v: Vec<f32>,
    kv_lens: Option<Vec<i32>>,
    scale: f32,
}

impl RelposCase {
    /// Random bf16-exact inputs; with `masked`, random lengths (in a batch of several the first one
    /// full and, from three on, the second one empty) and the keys, values and pos rows no query
    /// may read set to NaN (pos rows only when no batch is full: one full batch reads them all).
    fn random(seed: u64, batch: usize, t: usize, heads: usize, dh: usize, masked: bool) -> RelposCase {
        let w = heads * dh;
        let q = round_bf16(&random_f32(seed, batch * t * w, 1.0));
        let mut k = round_bf16(&random_f32(seed + 1, batch * t * w, 1.0));
        let mut v = round_bf16(&random_f32(seed + 2, batch * t * w, 1.0));
        let mut pos = round_bf16(&random_f32(seed + 3, (2 * t - 1) * w, 1.0));
        let bias_u = random_f32(seed + 4, w, 0.3);
        let bias_v = random_f32(seed + 5, w, 0.3);
        let kv_lens = masked.then(|| {
            let mut l = random_i32(seed + 6, batch, 1, t as i32 + 1);
            if batch > 1 {
                l[0] = t as i32;
            }
            if batch > 2 {
                l[1] = 0;
            }
            for (b, &n) in l.iter().enumerate() {
                let at = b * t * w;
                k[at + n as usize * w..at + t * w].fill(f32::NAN);
                v[at + n as usize * w..at + t * w].fill(f32::NAN);
            }
            // pos rows T − 1 − i + j for j < n: rows 0 ..= T − 2 + max n are read
            let max_n = *l.iter().max().unwrap() as usize;
            pos[(t - 1 + max_n) * w..].fill(f32::NAN);
            l
        });
        RelposCase { batch, t, heads, dh, q, k, v, pos, bias_u, bias_v, kv_lens, scale: 1.0 / (dh as f32).sqrt() }
    }

    /// Runs the op; with `misalign`, q, k, v and pos are views that start one element into their
    /// tensors (not 16-byte aligned: the kernel's scalar loads).
    fn run(&self, dev: &Device, misalign: bool) -> tts_kernels::Result<Vec<f32>> {
        let act = dev.compute_dtype();
        let w = self.heads * self.dh;
        let off = misalign as usize;
        let mk = |data: &[f32]| -> tts_kernels::Result<Tensor> {
            let mut padded = vec![0.0; off];
            padded.extend_from_slice(data);
            Tensor::from_f32(dev, act, &[data.len() + off, 1], &padded)
        };
        let (q, k, v, pos) = (mk(&self.q)?, mk(&self.k)?, mk(&self.v)?, mk(&self.pos)?);
        fn view<'a>(t: &'a Tensor, off: usize, shape: &[usize]) -> tts_kernels::Result<tts_kernels::View<'a>> {
            t.view().narrow_rows(off, t.shape()[0] - off)?.reshape(shape)
        }
        let qs = [self.batch, self.t, w];
        let bu = Tensor::from_f32(dev, DType::F32, &[self.heads, self.dh], &self.bias_u)?;
        let bv = Tensor::from_f32(dev, DType::F32, &[self.heads, self.dh], &self.bias_v)?;
        let lens = self.kv_lens.as_ref().map(|l| Tensor::from_i32(dev, &[self.batch], l)).transpose()?;
        let mut out = Tensor::uninit(dev, act, &qs)?;
        ops::attention_relpos(
            view(&q, off, &qs)?,
            view(&k, off, &qs)?,
            view(&v, off, &qs)?,
            view(&pos, off, &[2 * self.t - 1, w])?,
            bu.view(),
            bv.view(),
            lens.as_ref().map(|l| l.view()),
            out.view_mut(),
            self.heads,
            self.scale,
        )?;
        out.to_f32_vec()
    }
}

#[test]
fn attention_relpos_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = kernel_devices();
    // (batch, T, heads, head_dim, kv_lens): the real head dim 64, odd head dims, N = 1, 7, 129
    let cases = [
        (1, 1, 1, 64, false),
        (2, 7, 2, 64, true),
        (1, 13, 2, 64, true), // one padded sequence: unread pos rows poisoned
        (3, 129, 3, 64, true),
        (2, 33, 2, 37, true), // odd head dim: scalar loads
        (1, 50, 1, 128, false),
        (3, 40, 3, 24, true), // head_dim % 8 == 0 but not a multiple of 32
        (2, 9, 2, 3, true),
        (1, 17, 2, 256, false), // the largest head dim
        (1, 1200, 1, 64, true), // a long sequence: 38 key steps per query
    ];
    for (i, &(batch, t, heads, dh, masked)) in cases.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let c = RelposCase::random(s, batch, t, heads, dh, masked);
        let want = c.run(&cpu, false).unwrap();
        assert!(want.iter().all(|v| v.is_finite()), "the Cpu reference read a poisoned row");
        if let Some(l) = &c.kv_lens {
            for (b, &n) in l.iter().enumerate() {
                if n == 0 {
                    assert!(want[b * t * heads * dh..(b + 1) * t * heads * dh].iter().all(|&v| v == 0.0));
                }
            }
        }
        for (label, dev) in &devices {
            let what =
                format!("{label}: attention_relpos b {batch} T {t} heads {heads} dh {dh} kv_lens {:?} seed {s}", c.kv_lens);
            assert_close(&what, &c.run(dev, false).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            if dh == 64 && t > 1 && t < 1000 {
                assert_close(&format!("{what} unaligned"), &c.run(dev, true).unwrap(), &want, BF16_REL, ATTENTION_ABS);
            }
        }
    }
}

#[test]
fn attention_relpos_without_kv_lens_equals_full_lengths() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in kernel_devices() {
        let mut c = RelposCase::random(seed, 2, 21, 2, 64, false);
        let none = c.run(&dev, false).unwrap();
        c.kv_lens = Some(vec![21, 21]);
        assert_eq!(none, c.run(&dev, false).unwrap(), "{label}");
    }
}

#[test]
fn attention_relpos_bad_lengths_are_errors_or_nan() {
    for dh in [64, 20] {
        let mut c = RelposCase::random(31, 2, 6, 2, dh, false);
        c.kv_lens = Some(vec![7, 3]);
        let e = c.run(&Device::cpu(), false).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("batch 0: kv_len 7 is outside 0..=6"), "{e}");
        let mut neg = RelposCase { kv_lens: Some(vec![3, -1]), ..RelposCase::random(31, 2, 6, 2, dh, false) };
        let e = neg.run(&Device::cpu(), false).unwrap_err();
        assert!(e.to_string().contains("batch 1: kv_len -1 is outside 0..=6"), "{e}");
        neg.kv_lens = Some(vec![3, 3]);
        let want = neg.run(&Device::cpu(), false).unwrap();
        neg.kv_lens = Some(vec![3, -1]);
        let half = want.len() / 2;
        for (label, dev) in kernel_devices() {
            // the lengths live on the device: the kernel marks the batch NaN instead
            let got = c.run(&dev, false).unwrap();
            assert!(got[..half].iter().all(|v| v.is_nan()), "{label} dh {dh}: kv_len 7 > T 6 must give NaN");
            let got = neg.run(&dev, false).unwrap();
            assert_close(&format!("{label} dh {dh}"), &got[..half], &want[..half], BF16_REL, ATTENTION_ABS);
            assert!(got[half..].iter().all(|v| v.is_nan()), "{label} dh {dh}: kv_len -1 must give NaN");
        }
    }
}

#[test]
fn attention_relpos_bad_shapes_and_dtypes_are_errors() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let act = dev.compute_dtype();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let f = |shape: &[usize]| Tensor::zeros(&dev, DType::F32, shape).unwrap();
        let (b, t, heads, dh) = (2, 5, 2, 8);
        let w = heads * dh;
        let (q, pos, bias) = (z(&[b, t, w]), z(&[2 * t - 1, w]), f(&[heads, dh]));
        let mut out = z(&[b, t, w]);
        let lens = Tensor::from_i32(&dev, &[b], &[5, 2]).unwrap();
        let run = |q: &Tensor,
                   k: &Tensor,
                   pos: &Tensor,
                   bu: &Tensor,
                   lens: Option<&Tensor>,
                   out: &mut Tensor,
                   heads: usize,
                   scale: f32| {
            ops::attention_relpos(
                q.view(),
                k.view(),
                k.view(),
                pos.view(),
                bu.view(),
                bias.view(),
                lens.map(|l| l.view()),
                out.view_mut(),
                heads,
                scale,
            )
        };
        run(&q, &q, &pos, &bias, Some(&lens), &mut out, heads, 0.3).unwrap();
        let shape_err = |r: tts_kernels::Result<()>, what: &str| {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{label} {what}: {e}");
        };
        shape_err(run(&q, &z(&[b, t + 1, w]), &pos, &bias, None, &mut out, heads, 0.3), "k length");
        shape_err(run(&q, &q, &z(&[2 * t, w]), &bias, None, &mut out, heads, 0.3), "pos rows");
        shape_err(run(&q, &q, &z(&[1, 2 * t - 1, w]), &bias, None, &mut out, heads, 0.3), "pos rank");
        shape_err(run(&q, &q, &pos, &f(&[heads * dh]), None, &mut out, heads, 0.3), "bias shape");
        shape_err(run(&q, &q, &pos, &f(&[dh, heads]), None, &mut out, heads, 0.3), "bias transposed");
        shape_err(run(&q, &q, &pos, &bias, None, &mut out, 3, 0.3), "width % heads");
        shape_err(run(&q, &q, &pos, &bias, None, &mut out, 0, 0.3), "zero heads");
        shape_err(run(&q, &q, &pos, &bias, None, &mut z(&[b, t, w + 1]), heads, 0.3), "out shape");
        shape_err(run(&z(&[b * t, w]), &z(&[b * t, w]), &pos, &bias, None, &mut z(&[b * t, w]), heads, 0.3), "2-D q");
        let lens3 = Tensor::from_i32(&dev, &[3], &[1, 1, 1]).unwrap();
        shape_err(run(&q, &q, &pos, &bias, Some(&lens3), &mut out, heads, 0.3), "kv_lens count");
        // head_dim 257 > 256
        let (qb, pb, bb) = (z(&[1, 2, 257]), z(&[3, 257]), f(&[1, 257]));
        let e = ops::attention_relpos(
            qb.view(),
            qb.view(),
            qb.view(),
            pb.view(),
            bb.view(),
            bb.view(),
            None,
            z(&[1, 2, 257]).view_mut(),
            1,
            1.0,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("head_dim"), "{label}: {e}");
        // dtypes: kv_lens f32, biases in the compute dtype on bf16 devices, q in f32 on bf16 devices
        let e = run(&q, &q, &pos, &bias, Some(&f(&[b])), &mut out, heads, 0.3).unwrap_err();
        assert!(matches!(e, Error::DType { what: "kv_lens", .. }), "{label}: {e}");
        if act != DType::F32 {
            let e = run(&q, &q, &pos, &z(&[heads, dh]), None, &mut out, heads, 0.3).unwrap_err();
            assert!(matches!(e, Error::DType { what: "bias_u", .. }), "{label}: {e}");
            let e = run(&f(&[b, t, w]), &q, &pos, &bias, None, &mut out, heads, 0.3).unwrap_err();
            assert!(matches!(e, Error::DType { what: "q", .. }), "{label}: {e}");
        } else {
            let bf = |shape: &[usize]| Tensor::zeros(&dev, DType::BF16, shape).unwrap();
            let e = run(&q, &q, &bf(&[2 * t - 1, w]), &bias, None, &mut out, heads, 0.3).unwrap_err();
            assert!(matches!(e, Error::DType { what: "pos", .. }), "{label}: {e}");
        }
        // a non-finite scale
        let e = run(&q, &q, &pos, &bias, None, &mut out, heads, f32::NAN).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{label}: {e}");
        // another device
        let other = Tensor::zeros(&Device::cpu(), DType::F32, &[heads, dh]).unwrap();
        let e = run(&q, &q, &pos, &other, None, &mut out, heads, 0.3).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
    }
}
