use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of the elementwise kernels; mirrors EW_BLOCK in elementwise.cu.
pub(crate) const EW_BLOCK: u32 = 256;

/// Mirrors `BiasParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct BiasParams {
    pub x: u64,
    pub bias: u64,
    pub y: u64,
    pub rows: u32,
    pub cols: u32,
}
const _: () = assert!(std::mem::size_of::<BiasParams>() == 32);

/// `y[r, j] += bias[j]` in place (a GEMM's bias). `y`: `[rows, cols]` (any rank), `bias`: `[cols]`,
/// both in the device's compute dtype.
pub fn add_bias(mut y: ViewMut<'_>, bias: View<'_>) -> Result<()> {
    const OP: &str = "add_bias";
    let dev = same_device(OP, y.device(), &[bias.device()])?;
    let cols = *y.shape().last().unwrap_or(&0);
    if bias.len() != cols {
        return Err(Error::shape(OP, format!("bias {:?} for {:?}", bias.shape(), y.shape())));
    }
    let act = dev.compute_dtype();
    expect_dtype(OP, "y", &y.as_view(), act)?;
    expect_dtype(OP, "bias", &bias, act)?;
    if y.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::add_bias(y.host_f32_mut()?, bias.host_f32()?);
            Ok(())
        }
        _ => {
            let p = BiasParams {
                x: 0,
                bias: bias.addr(),
                y: y.addr(),
                rows: u32_param(OP, "rows", y.len() / cols)?,
                cols: u32_param(OP, "cols", cols)?,
            };
            let grid = blocks_for(OP, y.len(), EW_BLOCK)?;
            launch(dev, "add_bias_bf16", LaunchDims::new([grid, 1, 1], [EW_BLOCK, 1, 1], 0), &p)
        }
    }
}

/// `residual += x (+ bias)`: a sub-layer's output joins the f32 residual stream.
/// Shapes: `residual`, `x` the same (any rank), `bias` `[last dim]`. Dtypes: `residual` f32; `x`,
/// `bias` the compute dtype.
pub fn add_residual(mut residual: ViewMut<'_>, x: View<'_>, bias: Option<View<'_>>) -> Result<()> {
    const OP: &str = "add_residual";
    let mut devs = vec![x.device()];
    if let Some(b) = &bias {
        devs.push(b.device());
    }
    let dev = same_device(OP, residual.device(), &devs)?;
    if x.shape() != residual.shape() {
        return Err(Error::shape(OP, format!("x {:?} vs residual {:?}", x.shape(), residual.shape())));
    }
    let cols = *x.shape().last().unwrap_or(&0);
    if bias.as_ref().is_some_and(|b| b.len() != cols) {
        return Err(Error::shape(OP, format!("bias for rows of {cols}")));
    }
    expect_dtype(OP, "residual", &residual.as_view(), DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "x", &x, act)?;
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, act)?;
    }
    if x.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let b = bias.map(|b| b.host_f32()).transpose()?;
            cpu::add_residual(residual.host_f32_mut()?, x.host_f32()?, b);
            Ok(())
        }
        _ => {
            let p = BiasParams {
                x: x.addr(),
                bias: bias.map_or(0, |b| b.addr()),
                y: residual.addr(),
                rows: u32_param(OP, "rows", x.len() / cols)?,
                cols: u32_param(OP, "cols", cols)?,
            };
            let grid = blocks_for(OP, x.len(), EW_BLOCK)?;
            launch(dev, "add_residual_bf16", LaunchDims::new([grid, 1, 1], [EW_BLOCK, 1, 1], 0), &p)
        }
    }
}

/// `y[r, j] = bias[j]` on a kernel backend (the C operand of a GEMM with beta = 1); `y` is bf16, or
/// f32 with `y_f32`; `bias` is bf16, or f32 with `bias_f32` (then `y` is f32).
pub(crate) fn fill_rows(y: &ViewMut<'_>, bias: &View<'_>, y_f32: bool, bias_f32: bool) -> Result<()> {
    const OP: &str = "fill_rows";
    let cols = bias.len();
    let p = BiasParams {
        x: 0,
        bias: bias.addr(),
        y: y.addr(),
        rows: u32_param(OP, "rows", y.len() / cols.max(1))?,
        cols: u32_param(OP, "cols", cols)?,
    };
    let grid = blocks_for(OP, y.len(), EW_BLOCK)?;
    let kernel = match (y_f32, bias_f32) {
        (true, true) => "fill_rows_f32_f32",
        (true, false) => "fill_rows_f32",
        _ => "fill_rows_bf16",
    };
    launch(y.device(), kernel, LaunchDims::new([grid, 1, 1], [EW_BLOCK, 1, 1], 0), &p)
}
