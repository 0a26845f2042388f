use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `add_rmsnorm_bf16` (one block per row); mirrors RMSNORM_BLOCK in rmsnorm.cu.
pub(crate) const RMSNORM_BLOCK: u32 = 256;

/// Mirrors `AddRmsNormParams` in kernels/rmsnorm.cu (device addresses as u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AddRmsNormParams {
    pub x: u64,
    pub residual: u64,
    pub weight: u64,
    pub out: u64,
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<AddRmsNormParams>() == 48);

/// RMSNorm with a fused residual add (a Llama decoder layer's `residual + x → norm`):
/// `residual += x` (when `x` is given), then `out = residual · rsqrt(mean(residual²) + eps) · weight`.
///
/// Shapes: `residual`, `x`, `out` are `[rows, cols]` (any rank; rows = dim 0), `weight` is `[cols]`.
/// Dtypes: Cpu all f32; Cuda/Emu `x`, `weight`, `out` bf16 and `residual` f32.
pub fn add_rmsnorm(
    x: Option<View<'_>>,
    mut residual: ViewMut<'_>,
    weight: View<'_>,
    mut out: ViewMut<'_>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "add_rmsnorm";
    let mut devs = vec![weight.device(), out.device()];
    if let Some(x) = &x {
        devs.push(x.device());
    }
    let dev = same_device(OP, residual.device(), &devs)?;
    let (rows, cols) = (residual.rows(), residual.row_len());
    if cols == 0 || weight.len() != cols {
        return Err(Error::shape(OP, format!("weight {:?} for rows of {cols}", weight.shape())));
    }
    if out.shape() != residual.shape() {
        return Err(Error::shape(OP, format!("out {:?} vs residual {:?}", out.shape(), residual.shape())));
    }
    if let Some(x) = &x
        && x.shape() != residual.shape()
    {
        return Err(Error::shape(OP, format!("x {:?} vs residual {:?}", x.shape(), residual.shape())));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps}")));
    }
    expect_dtype(OP, "residual", &residual.as_view(), DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "weight", &weight, act)?;
    expect_dtype(OP, "out", &out.as_view(), act)?;
    if let Some(x) = &x {
        expect_dtype(OP, "x", x, act)?;
    }
    if rows == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let x = x.map(|x| x.host_f32()).transpose()?;
            cpu::add_rmsnorm(x, residual.host_f32_mut()?, weight.host_f32()?, out.host_f32_mut()?, eps);
            Ok(())
        }
        _ => {
            let p = AddRmsNormParams {
                x: x.map_or(0, |x| x.addr()),
                residual: residual.addr(),
                weight: weight.addr(),
                out: out.addr(),
                rows: u32_param(OP, "rows", rows)?,
                cols: u32_param(OP, "cols", cols)?,
                eps,
                pad: 0,
            };
            let grid_x = u32_param(OP, "rows", rows)?;
            launch(dev, "add_rmsnorm_bf16", LaunchDims::new([grid_x, 1, 1], [RMSNORM_BLOCK, 1, 1], 0), &p)
        }
    }
}
