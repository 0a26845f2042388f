//! Tests of the `cpu-bf16` KV cache (in the library's test binary rather than one of their own:
//! each test binary takes room in the GPU check's payload). T3's caches are bf16 on
//! `Device::cpu_bf16_weights` (as on Cuda/Emu) and f32 on `Device::cpu`. The Cpu cache ops take
//! either; with bf16 caches each key and value is rounded once when written and widened exactly
//! when read, so a prefill and a decode step give the bits of the f32 ops over caches rounded to
//! bf16 after every write.
use crate::testing::{CacheDims, assert_within_bound, bf16_cache_error_bound, fresh_seed, random_f32, round_bf16, t3_inv_freq};
use crate::{DType, Device, Error, Tensor, ops};

fn i32t(dev: &Device, v: &[i32]) -> Tensor {
    Tensor::from_i32(dev, &[v.len()], v).unwrap()
}

/// An f32 cache's values rounded to bf16, still f32.
fn round_cache(t: &mut Tensor) {
    let r = round_bf16(&t.to_f32_vec().unwrap());
    *t = Tensor::from_f32(t.device(), DType::F32, t.shape(), &r).unwrap();
}

#[test]
fn each_backend_picks_its_kv_dtype() {
    assert_eq!(Device::cpu().kv_dtype(), DType::F32);
    assert_eq!(Device::cpu_bf16_weights().kv_dtype(), DType::BF16);
}

#[test]
fn bf16_caches_give_the_f32_ops_over_caches_rounded_after_each_write() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let dev = Device::cpu_bf16_weights();
    let (heads, d, n_slots, max_len) = (4, 64, 3, 48);
    let hd = heads * d;
    let cshape = [n_slots, heads, max_len, d];
    let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &t3_inv_freq(d)).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    // a causal prefill of two prompts (slots 2 and 0), then decode steps with an inactive row
    let (mut pslots, mut ppos) = (Vec::new(), Vec::new());
    for (s, n) in [(2, 9), (0, 14)] {
        for p in 0..n {
            pslots.push(s);
            ppos.push(p);
        }
    }
    let plens: Vec<i32> = ppos.iter().map(|p| p + 1).collect();
    let prows = pslots.len();
    let pqkv = Tensor::from_f32(&dev, DType::F32, &[prows, 3 * hd], &random_f32(seed, prows * 3 * hd, 1.5)).unwrap();
    let caches = |dtype: DType| (Tensor::zeros(&dev, dtype, &cshape).unwrap(), Tensor::zeros(&dev, dtype, &cshape).unwrap());
    let (mut kb, mut vb) = caches(dev.kv_dtype());
    let (mut kf, mut vf) = caches(DType::F32);
    let (mut unrounded_k, mut unrounded_v) = caches(DType::F32);
    let prefill = |k: &mut Tensor, v: &mut Tensor, round: bool| {
        let mut q = Tensor::zeros(&dev, DType::F32, &[prows, hd]).unwrap();
        ops::rope_kv_write(
            pqkv.view(),
            i32t(&dev, &ppos).view(),
            i32t(&dev, &pslots).view(),
            inv.view(),
            q.view_mut(),
            k.view_mut(),
            v.view_mut(),
        )
        .unwrap();
        if round {
            round_cache(k);
            round_cache(v);
        }
        let mut out = Tensor::from_f32(&dev, DType::F32, &[prows, hd], &vec![f32::NAN; prows * hd]).unwrap();
        ops::attention_cached(
            q.view(),
            k.view(),
            v.view(),
            i32t(&dev, &pslots).view(),
            i32t(&dev, &plens).view(),
            out.view_mut(),
            scale,
        )
        .unwrap();
        (out.to_f32_vec().unwrap(), q.to_f32_vec().unwrap())
    };
    let (got, _) = prefill(&mut kb, &mut vb, false);
    assert_eq!(kb.dtype(), DType::BF16);
    assert_eq!(got, prefill(&mut kf, &mut vf, true).0, "prefill (seed {seed})");
    let (unrounded, q) = prefill(&mut unrounded_k, &mut unrounded_v, false);
    assert_ne!(got, unrounded, "the caches' rounding has no effect (seed {seed})");
    let (k, v) = (unrounded_k.to_f32_vec().unwrap(), unrounded_v.to_f32_vec().unwrap());
    let cache = CacheDims { heads, max_len, d };
    let bound = bf16_cache_error_bound(&q, &k, &v, cache, &pslots, &plens, scale);
    assert_within_bound(&format!("prefill: bf16 caches vs f32 caches (seed {seed})"), &got, &unrounded, &bound);
    assert_eq!(kb.to_f32_vec().unwrap(), kf.to_f32_vec().unwrap(), "the bf16 cache is the rounded f32 cache (seed {seed})");
    // decode steps: rows (slot 2, slot 0, inactive), fused op and its split form
    let slots = [2, 0, 1];
    for step in 0..4i32 {
        let pos = [9 + step, 14 + step, 0];
        let lens = [10 + step, 15 + step, 0];
        let qkv = Tensor::from_f32(&dev, DType::F32, &[3, 3 * hd], &random_f32(seed + 7 + step as u64, 3 * 3 * hd, 1.5)).unwrap();
        let mut out = Tensor::from_f32(&dev, DType::F32, &[3, hd], &vec![f32::NAN; 3 * hd]).unwrap();
        let (p, s, l) = (i32t(&dev, &pos), i32t(&dev, &slots), i32t(&dev, &lens));
        if step % 2 == 0 {
            ops::rope_attention_decode(
                qkv.view(),
                p.view(),
                s.view(),
                inv.view(),
                kb.view_mut(),
                vb.view_mut(),
                l.view(),
                out.view_mut(),
                scale,
            )
            .unwrap();
        } else {
            let mut scratch = Tensor::zeros(&dev, DType::F32, &[3, heads, 2, d + 2]).unwrap();
            let (kv, vv) = (kb.view_mut(), vb.view_mut());
            ops::rope_attention_decode_split(
                qkv.view(),
                p.view(),
                s.view(),
                inv.view(),
                kv,
                vv,
                l.view(),
                out.view_mut(),
                scratch.view_mut(),
                scale,
            )
            .unwrap();
        }
        // the f32 reference: the live rows written, the caches rounded, then the cached attention
        let (live_qkv, live_pos, live_slots) = (qkv.to_f32_vec().unwrap()[..2 * 3 * hd].to_vec(), &pos[..2], &slots[..2]);
        let lq = Tensor::from_f32(&dev, DType::F32, &[2, 3 * hd], &live_qkv).unwrap();
        let mut q = Tensor::zeros(&dev, DType::F32, &[2, hd]).unwrap();
        ops::rope_kv_write(
            lq.view(),
            i32t(&dev, live_pos).view(),
            i32t(&dev, live_slots).view(),
            inv.view(),
            q.view_mut(),
            kf.view_mut(),
            vf.view_mut(),
        )
        .unwrap();
        round_cache(&mut kf);
        round_cache(&mut vf);
        let mut q3 = q.to_f32_vec().unwrap();
        q3.extend(vec![0f32; hd]);
        let q3 = Tensor::from_f32(&dev, DType::F32, &[3, hd], &q3).unwrap();
        let mut want = Tensor::zeros(&dev, DType::F32, &[3, hd]).unwrap();
        ops::attention_cached(q3.view(), kf.view(), vf.view(), s.view(), l.view(), want.view_mut(), scale).unwrap();
        let got = out.to_f32_vec().unwrap();
        assert_eq!(got, want.to_f32_vec().unwrap(), "decode step {step} (seed {seed})");
        assert!(got[2 * hd..].iter().all(|&x| x == 0.0), "the inactive row is zeros");
        assert_eq!(kb.to_f32_vec().unwrap(), kf.to_f32_vec().unwrap(), "caches after step {step} (seed {seed})");
    }
}

#[test]
fn cpu_cache_ops_refuse_mixed_or_non_float_caches() {
    let dev = Device::cpu();
    let (heads, d, max_len) = (2, 32, 8);
    let shape = [1, heads, max_len, d];
    let hd = heads * d;
    let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &t3_inv_freq(d)).unwrap();
    let qkv = Tensor::from_f32(&dev, DType::F32, &[1, 3 * hd], &random_f32(1, 3 * hd, 1.0)).unwrap();
    let q = Tensor::from_f32(&dev, DType::F32, &[1, hd], &random_f32(2, hd, 1.0)).unwrap();
    let (p, s, l) = (i32t(&dev, &[0]), i32t(&dev, &[0]), i32t(&dev, &[1]));
    let decode = |k: &mut Tensor, v: &mut Tensor, out: &mut Tensor| {
        ops::rope_attention_decode(
            qkv.view(),
            p.view(),
            s.view(),
            inv.view(),
            k.view_mut(),
            v.view_mut(),
            l.view(),
            out.view_mut(),
            0.1,
        )
    };
    let cases = [(DType::F32, DType::BF16, "v_cache"), (DType::BF16, DType::F32, "v_cache"), (DType::I32, DType::I32, "k_cache")];
    for (kt, vt, what) in cases {
        let mk = |t: DType| match t {
            DType::I32 => Tensor::from_i32(&dev, &shape, &vec![0; max_len * hd]).unwrap(),
            _ => Tensor::zeros(&dev, t, &shape).unwrap(),
        };
        let (mut k, mut v) = (mk(kt), mk(vt));
        let mut out = Tensor::zeros(&dev, DType::F32, &[1, hd]).unwrap();
        let mut qo = Tensor::zeros(&dev, DType::F32, &[1, hd]).unwrap();
        let errs = [
            ops::rope_kv_write(qkv.view(), p.view(), s.view(), inv.view(), qo.view_mut(), k.view_mut(), v.view_mut())
                .unwrap_err(),
            ops::attention_cached(q.view(), k.view(), v.view(), s.view(), l.view(), out.view_mut(), 0.1).unwrap_err(),
            decode(&mut k, &mut v, &mut out).unwrap_err(),
        ];
        for e in errs {
            assert!(matches!(e, Error::DType { what: w, .. } if w == what), "{kt:?}/{vt:?}: {e}");
        }
    }
    // the f32 device also takes bf16 caches (the op follows the cache; the device picks what T3 allocates)
    let (mut k, mut v) = (Tensor::zeros(&dev, DType::BF16, &shape).unwrap(), Tensor::zeros(&dev, DType::BF16, &shape).unwrap());
    let mut out = Tensor::from_f32(&dev, DType::F32, &[1, hd], &vec![f32::NAN; hd]).unwrap();
    decode(&mut k, &mut v, &mut out).unwrap();
    let want = round_bf16(&qkv.to_f32_vec().unwrap()[2 * hd..]);
    assert_eq!(out.to_f32_vec().unwrap(), want, "one position: the output is its (rounded) value");
}
