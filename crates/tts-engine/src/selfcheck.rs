//! Runs core ops of tts-kernels (T3: RMSNorm with residual, embedding, the GEMM; S3Gen: a causal
//! conv as im2col + GEMM, Mish with a padding mask, rel-pos attention) on a device against the Cpu
//! reference on fresh random inputs (the whole kernel suite is the test command): the quickest proof
//! that a deployment's kernels compile, load and compute the right numbers.
use std::time::Instant;

use tts_kernels::ops::{Activation, Im2col, PadMode};
use tts_kernels::testing::{compare, fresh_seed, random_f32, random_i32, round_bf16};
use tts_kernels::{DType, Device, Tensor, ops};

use crate::Result;

/// The outcome of one op check.
#[derive(Debug, Clone)]
pub struct OpCheck {
    pub op: &'static str,
    pub shape: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub ok: bool,
    pub millis: f64,
}

/// Checks the core ops on `dev` against Cpu. `seed` makes the inputs reproducible (None: fresh).
pub fn run(dev: &Device, seed: Option<u64>) -> Result<(u64, Vec<OpCheck>)> {
    let seed = seed.unwrap_or_else(fresh_seed);
    let cpu = Device::cpu();
    let act = dev.compute_dtype();
    let (rel, abs) = if act == DType::BF16 { (1e-2, 1e-2) } else { (1e-5, 1e-6) };
    let mut out = Vec::new();

    // add_rmsnorm, rows x cols with odd cols
    {
        let (rows, cols) = (7usize, 1031usize);
        let x = round_bf16(&random_f32(seed, rows * cols, 1.0));
        let res0 = random_f32(seed ^ 1, rows * cols, 2.0);
        let w = round_bf16(&random_f32(seed ^ 2, cols, 1.0));
        let run_on = |d: &Device, dt: DType| -> Result<(Vec<f32>, Vec<f32>, f64)> {
            let xt = Tensor::from_f32(d, dt, &[rows, cols], &x)?;
            let mut rt = Tensor::from_f32(d, DType::F32, &[rows, cols], &res0)?;
            let wt = Tensor::from_f32(d, dt, &[cols], &w)?;
            let mut ot = Tensor::uninit(d, dt, &[rows, cols])?;
            let t = Instant::now();
            ops::add_rmsnorm(Some(xt.view()), rt.view_mut(), wt.view(), ot.view_mut(), 1e-5)?;
            d.synchronize()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            Ok((ot.to_f32_vec()?, rt.to_f32_vec()?, ms))
        };
        let (want, want_res, _) = run_on(&cpu, DType::F32)?;
        let (got, got_res, ms) = run_on(dev, act)?;
        let c = compare(&got, &want, rel, abs);
        let cr = compare(&got_res, &want_res, 1e-6, 1e-6);
        out.push(OpCheck {
            op: "add_rmsnorm",
            shape: format!("[{rows}, {cols}]"),
            max_abs: c.max_abs.max(cr.max_abs),
            max_rel: c.max_rel.max(cr.max_rel),
            ok: c.ok() && cr.ok(),
            millis: ms,
        });
    }

    // embed_pos with some negative ids (CFG unconditional rows)
    {
        let (rows, dim, vocab, n_pos) = (13usize, 200usize, 57usize, 33usize);
        let table = round_bf16(&random_f32(seed ^ 3, vocab * dim, 1.0));
        let pos_table = round_bf16(&random_f32(seed ^ 4, n_pos * dim, 1.0));
        let ids = random_i32(seed ^ 5, rows, -1, vocab as i32);
        let pos = random_i32(seed ^ 6, rows, 0, n_pos as i32);
        let run_on = |d: &Device, dt: DType| -> Result<(Vec<f32>, f64)> {
            let it = Tensor::from_i32(d, &[rows], &ids)?;
            let pt = Tensor::from_i32(d, &[rows], &pos)?;
            let tt = Tensor::from_f32(d, dt, &[vocab, dim], &table)?;
            let ptt = Tensor::from_f32(d, dt, &[n_pos, dim], &pos_table)?;
            let mut ot = Tensor::uninit(d, DType::F32, &[rows, dim])?;
            let t = Instant::now();
            ops::embed_pos(it.view(), Some((pt.view(), ptt.view())), tt.view(), ot.view_mut())?;
            d.synchronize()?;
            Ok((ot.to_f32_vec()?, t.elapsed().as_secs_f64() * 1e3))
        };
        let (want, _) = run_on(&cpu, DType::F32)?;
        let (got, ms) = run_on(dev, act)?;
        let c = compare(&got, &want, 1e-6, 1e-6);
        out.push(OpCheck {
            op: "embed_pos",
            shape: format!("[{rows}, {dim}]"),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            ok: c.ok(),
            millis: ms,
        });
    }

    // linear
    {
        let (m, n, k) = (5usize, 67usize, 129usize);
        let x = round_bf16(&random_f32(seed ^ 7, m * k, 1.0));
        let w = round_bf16(&random_f32(seed ^ 8, n * k, 0.1));
        let run_on = |d: &Device, dt: DType| -> Result<(Vec<f32>, f64)> {
            let xt = Tensor::from_f32(d, dt, &[m, k], &x)?;
            let wt = Tensor::from_f32(d, dt, &[n, k], &w)?;
            let mut ot = Tensor::uninit(d, dt, &[m, n])?;
            let t = Instant::now();
            ops::linear(xt.view(), wt.view(), None, ot.view_mut())?;
            d.synchronize()?;
            Ok((ot.to_f32_vec()?, t.elapsed().as_secs_f64() * 1e3))
        };
        let (want, _) = run_on(&cpu, DType::F32)?;
        let (got, ms) = run_on(dev, act)?;
        let c = compare(&got, &want, rel, abs);
        out.push(OpCheck {
            op: "linear",
            shape: format!("[{m}, {k}] x [{n}, {k}]^T"),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            ok: c.ok(),
            millis: ms,
        });
    }
    // T3's fused decode GEMV: RMSNorm prologue + projection (odd K: the unaligned weight path),
    // the weight prepared for the device's decode GEMV (packed on Cpu)
    {
        let (m, n, k) = (3usize, 67usize, 1031usize);
        let h = random_f32(seed ^ 21, m * k, 2.0);
        let nw = round_bf16(&random_f32(seed ^ 22, k, 1.0));
        let w = round_bf16(&random_f32(seed ^ 23, n * k, 0.1));
        let run_on = |d: &Device, dt: DType, pack: bool| -> Result<(Vec<f32>, f64)> {
            let ht = Tensor::from_f32(d, DType::F32, &[m, k], &h)?;
            let nwt = Tensor::from_f32(d, dt, &[k], &nw)?;
            let wt = Tensor::from_f32(d, d.weight_dtype(), &[n, k], &w)?;
            let wt = if pack { ops::pack_linear_weight(wt)? } else { wt };
            let mut ot = Tensor::uninit(d, DType::F32, &[m, n])?;
            let t = Instant::now();
            ops::rmsnorm_linear(ht.view(), nwt.view(), 1e-5, wt.view(), ot.view_mut())?;
            d.synchronize()?;
            Ok((ot.to_f32_vec()?, t.elapsed().as_secs_f64() * 1e3))
        };
        let (want, _) = run_on(&cpu, DType::F32, false)?;
        let (got, ms) = run_on(dev, act, true)?;
        let c = compare(&got, &want, rel, abs);
        // bf16 backends round the normalised activation a to bf16 (as add_rmsnorm writes it) before
        // the dot: each output may move by up to 2^-8 · Σ_k |a_k · w_k| (plus f32 summation order)
        let unit = if act == DType::BF16 { 2f64.powi(-8) } else { 1e-6 };
        let ok = (0..m).all(|i| {
            let row = &h[i * k..(i + 1) * k];
            let inv = 1.0 / (row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / k as f64 + 1e-5).sqrt();
            (0..n).all(|j| {
                let s: f64 = (0..k).map(|t| (row[t] as f64 * inv * nw[t] as f64 * w[j * k + t] as f64).abs()).sum();
                let d = (got[i * n + j] as f64 - want[i * n + j] as f64).abs();
                d.is_finite() && d <= unit * s + 1e-5
            })
        });
        out.push(OpCheck {
            op: "rmsnorm_linear",
            shape: format!("[{m}, {k}] x [{n}, {k}]^T"),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            ok,
            millis: ms,
        });
    }
    // S3Gen: a causal conv (k3, left pad 2) as im2col + GEMM over two sequences of different lengths,
    // then Mish with the padding mask
    {
        let (b, l, c_in, c_out, k) = (2usize, 37usize, 19usize, 23usize, 3usize);
        let x = round_bf16(&random_f32(seed ^ 9, b * l * c_in, 1.0)); // exact in bf16: only sums differ
        let w = round_bf16(&random_f32(seed ^ 10, c_out * c_in * k, 0.3));
        let lens = [l as i32, 30];
        let geom = Im2col { kernel: k, stride: 1, dilation: 1, pad_left: 2, upsample: 1, pad: PadMode::Zero };
        let run_on = |d: &Device, dt: DType| -> Result<(Vec<f32>, f64)> {
            let xt = Tensor::from_f32(d, DType::F32, &[b, l, c_in], &x)?;
            let lt = Tensor::from_i32(d, &[b], &lens)?;
            let wt = Tensor::from_f32(d, dt, &[c_out, c_in * k], &w)?;
            let mut cols = Tensor::uninit(d, dt, &[b, l, c_in * k])?;
            let mut y = Tensor::uninit(d, DType::F32, &[b, l, c_out])?;
            let t = Instant::now();
            ops::im2col(xt.view(), Some(lt.view()), cols.view_mut(), geom)?;
            ops::linear(cols.view(), wt.view(), None, y.view_mut())?;
            ops::activation_inplace(y.view_mut(), Activation::Mish, None, Some(lt.view()))?;
            d.synchronize()?;
            Ok((y.to_f32_vec()?, t.elapsed().as_secs_f64() * 1e3))
        };
        let (want, _) = run_on(&cpu, DType::F32)?;
        let (got, ms) = run_on(dev, act)?;
        let c = compare(&got, &want, rel, abs);
        out.push(OpCheck {
            op: "conv+mish",
            shape: format!("[{b}, {l}, {c_in}] k{k}"),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            ok: c.ok(),
            millis: ms,
        });
    }

    // S3Gen: rel-pos attention (2 heads × 64, T = 21, one padded sequence)
    {
        let (b, t, h, dh) = (2usize, 21usize, 2usize, 64usize);
        let w = h * dh;
        let q = round_bf16(&random_f32(seed ^ 11, b * t * w, 1.0));
        let kk = round_bf16(&random_f32(seed ^ 12, b * t * w, 1.0));
        let v = round_bf16(&random_f32(seed ^ 13, b * t * w, 1.0));
        let pos = round_bf16(&random_f32(seed ^ 14, (2 * t - 1) * w, 1.0));
        let (u, bv) = (random_f32(seed ^ 15, w, 0.1), random_f32(seed ^ 16, w, 0.1));
        let lens = [t as i32, 13];
        let run_on = |d: &Device, dt: DType| -> Result<(Vec<f32>, f64)> {
            let f = |data: &[f32], shape: &[usize]| Tensor::from_f32(d, dt, shape, data);
            let (qt, kt, vt, pt) = (f(&q, &[b, t, w])?, f(&kk, &[b, t, w])?, f(&v, &[b, t, w])?, f(&pos, &[2 * t - 1, w])?);
            let ut = Tensor::from_f32(d, DType::F32, &[h, dh], &u)?;
            let bt = Tensor::from_f32(d, DType::F32, &[h, dh], &bv)?;
            let lt = Tensor::from_i32(d, &[b], &lens)?;
            let mut ot = Tensor::uninit(d, dt, &[b, t, w])?;
            let tm = Instant::now();
            let scale = 1.0 / (dh as f32).sqrt();
            ops::attention_relpos(
                qt.view(),
                kt.view(),
                vt.view(),
                pt.view(),
                ut.view(),
                bt.view(),
                Some(lt.view()),
                ot.view_mut(),
                h,
                scale,
            )?;
            d.synchronize()?;
            Ok((ot.to_f32_vec()?, tm.elapsed().as_secs_f64() * 1e3))
        };
        let (want, _) = run_on(&cpu, DType::F32)?;
        let (got, ms) = run_on(dev, act)?;
        let c = compare(&got, &want, rel, abs);
        out.push(OpCheck {
            op: "attention_relpos",
            shape: format!("[{b}, {t}, {h}x{dh}]"),
            max_abs: c.max_abs,
            max_rel: c.max_rel,
            ok: c.ok(),
            millis: ms,
        });
    }
    Ok((seed, out))
}
