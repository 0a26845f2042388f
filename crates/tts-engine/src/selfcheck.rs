//! Runs the core ops of tts-kernels (RMSNorm with residual, embedding, the GEMM) on a device against
//! the Cpu reference on fresh random inputs (the whole kernel suite is the test command):
//! the quickest proof that a deployment's kernels compile, load and compute the right numbers.
use std::time::Instant;

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
    Ok((seed, out))
}
