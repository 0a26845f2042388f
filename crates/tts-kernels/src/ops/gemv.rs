//! Fused decode GEMVs (`kernels/gemv.cu`): a Llama layer's RMSNorm → projection, RMSNorm →
//! gate/up projection → SwiGLU, and projection → residual add, each one launch on the kernel
//! backends. On Cpu each op is the composition of the Cpu pieces of the unfused ops (bit for bit
//! the unfused ops' results).
//!
//! Rounding on Cuda/Emu mirrors the unfused chain: the normalised activation is rounded to bf16 as
//! [`add_rmsnorm`](crate::ops::add_rmsnorm) writes it (bit for bit: same summation order of the
//! statistics), dot products accumulate in f32 in a fixed order (deterministic; a row's result
//! does not depend on the other rows or on m), and outputs are rounded once — except
//! [`linear_add_residual`], which adds the f32 accumulator to the residual stream unrounded.
//!
//! Launch shape (see the header of gemv.cu): blocks of [`GEMV_BLOCK`] threads, each warp owning two
//! weight rows, the rows of `x` in tiles of 8 staged through shared memory; it depends on the
//! shapes only, so a captured decode step replays with new values. Meant for decode-sized m (a few
//! to a few dozen rows); any m works (tiles loop, each tile re-reading the block's weight slice
//! from cache).
use bytemuck::{Pod, Zeroable};

use crate::device::{Backend, Device};
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::expect_dtype;
use crate::ops::linear::cpu_linear;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of the `gemv_*` kernels; mirrors GEMV_BLOCK in gemv.cu.
pub(crate) const GEMV_BLOCK: u32 = 256;
/// Warps per block; each owns one unit (two weight rows) or a K-slice of one.
const GEMV_WARPS: usize = 8;
/// K values per warp step (32 lanes × 8) and per staged chunk; mirror GEMV_STEP, GEMV_KC.
const GEMV_STEP: usize = 256;
const GEMV_KC: usize = 1024;
/// The K split (`wk`) grows until the grid has at least this many blocks (or wk reaches 4).
const GEMV_MIN_BLOCKS: usize = 128;

// The RMSNorm prologue sums squares in add_rmsnorm_bf16's order, which needs its block size.
const _: () = assert!(GEMV_BLOCK == super::rmsnorm::RMSNORM_BLOCK);

/// Mirrors `GemvParams` in kernels/gemv.cu (device addresses as u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct GemvParams {
    pub x: u64,
    pub norm_w: u64,
    pub w: u64,
    pub out: u64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub wk: u32,
    pub vec: u32,
    pub eps: f32,
}
const _: () = assert!(std::mem::size_of::<GemvParams>() == 56);

/// Warps splitting each unit's K: the smallest of 1, 2, 4 that gives at least [`GEMV_MIN_BLOCKS`]
/// blocks, at most the number of 256-wide steps of a chunk. From the shapes only.
fn split_k(units: usize, k: usize) -> usize {
    let max_wk = match k.min(GEMV_KC).div_ceil(GEMV_STEP) {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    };
    let mut wk = 1;
    while wk < max_wk && units.div_ceil(GEMV_WARPS / wk) < GEMV_MIN_BLOCKS {
        wk *= 2;
    }
    wk
}

/// `(m, k)` of an activation `[.., k]` (rows = the product of the leading dims).
fn rows_and_width(x: &View<'_>) -> (usize, usize) {
    let (&k, lead) = x.shape().split_last().unwrap_or((&0, &[]));
    (lead.iter().product(), k)
}

/// Checks a weight `[n, k]` in the device's weight dtype and returns n.
fn check_weight(op: &'static str, dev: &Device, w: &View<'_>, k: usize) -> Result<usize> {
    if w.shape().len() != 2 || w.row_len() != k {
        return Err(Error::shape(op, format!("weight {:?} for inputs of width {k}", w.shape())));
    }
    expect_dtype(op, "weight", w, dev.weight_dtype())?;
    Ok(w.rows())
}

/// Checks an output of `m` rows of `n` (last dim n).
fn check_out(op: &'static str, what: &str, out: &View<'_>, m: usize, n: usize, inputs: &str) -> Result<()> {
    if *out.shape().last().unwrap_or(&0) != n || out.len() != m * n {
        return Err(Error::shape(op, format!("{what} {:?} for {inputs}: want {m} rows of {n}", out.shape())));
    }
    Ok(())
}

/// The RMSNorm prologue's checks: `h` f32 `[m, k]`, `norm_w` `[k]` in the compute dtype, eps.
fn check_norm(op: &'static str, dev: &Device, h: &View<'_>, norm_w: &View<'_>, eps: f32) -> Result<(usize, usize)> {
    let (m, k) = rows_and_width(h);
    if k == 0 || norm_w.len() != k {
        return Err(Error::shape(op, format!("norm weight {:?} for h {:?}", norm_w.shape(), h.shape())));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, format!("eps = {eps}")));
    }
    expect_dtype(op, "h", h, DType::F32)?;
    expect_dtype(op, "norm_w", norm_w, dev.compute_dtype())?;
    Ok((m, k))
}

/// The Cpu RMSNorm prologue: `cpu::add_rmsnorm` without a residual add into a scratch activation.
fn cpu_rmsnorm(h: &View<'_>, norm_w: &View<'_>, eps: f32) -> Result<Vec<f32>> {
    let mut res = h.host_f32()?.to_vec(); // not modified: no residual add
    let mut a = vec![0f32; res.len()];
    cpu::add_rmsnorm(None, &mut res, norm_w.host_f32()?, &mut a, eps);
    Ok(a)
}

#[allow(clippy::too_many_arguments)]
fn launch_gemv(
    op: &'static str,
    dev: &Device,
    kernel: &'static str,
    x: &View<'_>,
    norm_w: Option<&View<'_>>,
    w: &View<'_>,
    out: u64,
    (m, n, k): (usize, usize, usize),
    units: usize,
    eps: f32,
) -> Result<()> {
    let wk = split_k(units, k);
    // 16-byte weight loads need aligned rows; the plain prologue copies x with them too
    let vec = k.is_multiple_of(8) && w.addr().is_multiple_of(16) && (norm_w.is_some() || x.addr().is_multiple_of(16));
    let p = GemvParams {
        x: x.addr(),
        norm_w: norm_w.map_or(0, |v| v.addr()),
        w: w.addr(),
        out,
        m: u32_param(op, "m", m)?,
        n: u32_param(op, "n", n)?,
        k: u32_param(op, "k", k)?,
        wk: wk as u32,
        vec: vec as u32,
        eps,
    };
    let grid = u32_param(op, "blocks", units.div_ceil(GEMV_WARPS / wk))?;
    launch(dev, kernel, LaunchDims::new([grid, 1, 1], [GEMV_BLOCK, 1, 1], 0), &p)
}

/// RMSNorm fused into the projection that follows it (a Llama layer's input norm → QKV, or the
/// final norm → the head): `out = (rmsnorm(h) · norm_w) · wᵀ`, i.e. `out[r, n] = Σ_k a[r, k] · w[n, k]`
/// with `a[r, :] = h[r, :] · rsqrt(mean(h[r, :]²) + eps) · norm_w`. The same result as
/// [`add_rmsnorm`](crate::ops::add_rmsnorm) without `x` followed by [`linear`](crate::ops::linear),
/// in one launch on Cuda/Emu; `h` is not modified.
///
/// Shapes: `h` `[m, k]` (any rank; the last dim is k), `norm_w` `[k]`, `w` `[n, k]`, `out` `[m, n]`.
/// Dtypes: `h` f32; `norm_w` the compute dtype; `w` [`Device::weight_dtype`]; `out` the compute
/// dtype or f32 (logits: the accumulator unrounded). Cuda/Emu: `a` is rounded to bf16 exactly as
/// add_rmsnorm writes it, the dot accumulates in f32. Cpu: `cpu::add_rmsnorm` then the Cpu GEMM of
/// [`linear`](crate::ops::linear) (bit for bit the unfused ops).
pub fn rmsnorm_linear(h: View<'_>, norm_w: View<'_>, eps: f32, w: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "rmsnorm_linear";
    let dev = same_device(OP, h.device(), &[norm_w.device(), w.device(), out.device()])?;
    let (m, k) = check_norm(OP, dev, &h, &norm_w, eps)?;
    let n = check_weight(OP, dev, &w, k)?;
    check_out(OP, "out", &out.as_view(), m, n, "h and weight")?;
    let out_f32 = out.dtype() == DType::F32;
    if !out_f32 {
        expect_dtype(OP, "out", &out.as_view(), dev.compute_dtype())?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let a = cpu_rmsnorm(&h, &norm_w, eps)?;
            cpu_linear(&a, &w, None, out.host_f32_mut()?, m, n, k)
        }
        _ => {
            let kernel = if out_f32 { "gemv_rmsnorm_f32" } else { "gemv_rmsnorm_bf16" };
            launch_gemv(OP, dev, kernel, &h, Some(&norm_w), &w, out.addr(), (m, n, k), n.div_ceil(2), eps)
        }
    }
}

/// RMSNorm, the stacked gate/up projection and SwiGLU in one op (a Llama layer's post-attention
/// norm → MLP up to the down projection): with `a = rmsnorm(h) · norm_w` as in [`rmsnorm_linear`],
/// `g = a · w_gate_up[i]ᵀ`, `u = a · w_gate_up[inner + i]ᵀ`, `out[r, i] = silu(g) · u`. Rows
/// `0..inner` of `w_gate_up` are the gate and rows `inner..2·inner` the up projection, the layout
/// [`swiglu`](crate::ops::swiglu) expects of its `gate_up` input.
///
/// Shapes: `h` `[m, k]`, `norm_w` `[k]`, `w_gate_up` `[2·inner, k]`, `out` `[m, inner]`. Dtypes: `h`
/// f32, `norm_w` and `out` the compute dtype, `w_gate_up` [`Device::weight_dtype`]. Cuda/Emu: `g`
/// and `u` are rounded to bf16 before the SiLU product, as the unfused linear → swiglu pair does
/// (then swiglu's formula, one rounding). Cpu: add_rmsnorm, the Cpu GEMM, `cpu::swiglu`.
pub fn rmsnorm_linear_swiglu(h: View<'_>, norm_w: View<'_>, eps: f32, w_gate_up: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "rmsnorm_linear_swiglu";
    let dev = same_device(OP, h.device(), &[norm_w.device(), w_gate_up.device(), out.device()])?;
    let (m, k) = check_norm(OP, dev, &h, &norm_w, eps)?;
    let n2 = check_weight(OP, dev, &w_gate_up, k)?;
    if n2 % 2 != 0 {
        return Err(Error::shape(OP, format!("w_gate_up {:?} does not stack two halves (odd row count)", w_gate_up.shape())));
    }
    let inner = n2 / 2;
    check_out(OP, "out", &out.as_view(), m, inner, "h and w_gate_up")?;
    expect_dtype(OP, "out", &out.as_view(), dev.compute_dtype())?;
    if m == 0 || inner == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let a = cpu_rmsnorm(&h, &norm_w, eps)?;
            let mut gu = vec![0f32; m * n2];
            cpu_linear(&a, &w_gate_up, None, &mut gu, m, n2, k)?;
            cpu::swiglu(&gu, out.host_f32_mut()?, inner);
            Ok(())
        }
        _ => {
            launch_gemv(OP, dev, "gemv_rmsnorm_swiglu_bf16", &h, Some(&norm_w), &w_gate_up, out.addr(), (m, inner, k), inner, eps)
        }
    }
}

/// A projection whose output joins the f32 residual stream (a Llama layer's attention output and
/// down projections): `h += x · wᵀ`, i.e. `h[r, n] += Σ_k x[r, k] · w[n, k]`. On Cuda/Emu the f32
/// accumulator is added to `h` directly (no bf16 rounding of the product, unlike
/// [`linear`](crate::ops::linear) into a bf16 tensor followed by a residual add). Cpu: the Cpu GEMM of
/// `linear` into a scratch, then `cpu::add_residual` (bit for bit linear + add_residual in f32).
///
/// Shapes: `x` `[m, k]` (any rank; the last dim is k), `w` `[n, k]`, `h` `[m, n]`. Dtypes: `x` the
/// compute dtype, `w` [`Device::weight_dtype`], `h` f32.
pub fn linear_add_residual(x: View<'_>, w: View<'_>, mut h: ViewMut<'_>) -> Result<()> {
    const OP: &str = "linear_add_residual";
    let dev = same_device(OP, x.device(), &[w.device(), h.device()])?;
    let (m, k) = rows_and_width(&x);
    let n = check_weight(OP, dev, &w, k)?;
    check_out(OP, "h", &h.as_view(), m, n, "x and weight")?;
    expect_dtype(OP, "x", &x, dev.compute_dtype())?;
    expect_dtype(OP, "h", &h.as_view(), DType::F32)?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(()); // an empty sum adds nothing
    }
    match &*dev.inner {
        Backend::Cpu => {
            let mut y = vec![0f32; m * n];
            cpu_linear(x.host_f32()?, &w, None, &mut y, m, n, k)?;
            cpu::add_residual(h.host_f32_mut()?, &y, None);
            Ok(())
        }
        _ => launch_gemv(OP, dev, "gemv_add_residual_f32", &x, None, &w, h.addr(), (m, n, k), n.div_ceil(2), 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_k_fills_the_grid_for_small_n_only() {
        // T3: qkv (3072 columns), gate/up (4096 SwiGLU columns), o and down (1024 columns)
        assert_eq!(split_k(1536, 1024), 1);
        assert_eq!(split_k(4096, 1024), 1);
        assert_eq!(split_k(512, 1024), 2);
        assert_eq!(split_k(512, 4096), 2);
        // tiny n: as far as K allows
        assert_eq!(split_k(1, 1024), 4);
        assert_eq!(split_k(1, 600), 2);
        assert_eq!(split_k(1, 200), 1);
    }
}
