//! Eval-mode BatchNorm as a per-channel affine map over time-major activations, with an optional
//! residual and ReLU (CAMPPlus). Kernel: `batch_norm` in kernels/batchnorm.cu.
use bytemuck::{Pod, Zeroable};

pub use crate::cpu::BatchNormCols;
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::conv::float_dtype;
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block; mirrors BN_BLOCK in batchnorm.cu.
const BN_BLOCK: u32 = 256;

/// Mirrors `BatchNormParams` in kernels/batchnorm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct BatchNormParams {
    x: u64,
    scale: u64,
    shift: u64,
    residual: u64,
    out: u64,
    rows: u32,
    row: u32,
    col_offset: u32,
    channels: u32,
    relu: u32,
    x_f32: u32,
    res_f32: u32,
    out_f32: u32,
}
const _: () = assert!(std::mem::size_of::<BatchNormParams>() == 72);

/// `out[r, c] = act(x[r, col_offset + c]·scale[c] + shift[c] (+ residual[r, c]))`: an eval-mode
/// `BatchNorm1d/2d` (`scale = γ/√(var + ε)`, `shift = β − mean·scale`, folded by the caller) of
/// the C channels that start at column `p.col_offset` of each row of `x`, the residual added after
/// it, then ReLU when `p.relu` (`y > 0 ? y : 0`). The product, the sum and the residual add are
/// each rounded alone, in that order, on every backend: the same bits from the same inputs.
///
/// Shapes: `x` `[…, W]` (rows = all leading dims), `scale`, `shift` `[C]` f32 with
/// `col_offset + C ≤ W`, `residual` and `out` `[…, C]` with the same rows. Dtypes: `x`,
/// `residual` and `out` each f32 or the compute dtype (Cpu: f32).
///
/// Errors: no channels, shape and dtype mismatches, sizes of 2^32 or more.
pub fn batch_norm(
    x: View<'_>,
    scale: View<'_>,
    shift: View<'_>,
    residual: Option<View<'_>>,
    mut out: ViewMut<'_>,
    p: BatchNormCols,
) -> Result<()> {
    const OP: &str = "batch_norm";
    let mut devs = vec![scale.device(), shift.device(), out.device()];
    devs.extend(residual.iter().map(|r| r.device()));
    let dev = same_device(OP, x.device(), &devs)?;
    let c = scale.len();
    if c == 0 || scale.shape().len() != 1 || shift.shape() != scale.shape() {
        return Err(Error::shape(OP, format!("scale {:?} and shift {:?} are not both [C ≥ 1]", scale.shape(), shift.shape())));
    }
    let (row, rows) = (x.row_len(), x.rows());
    if x.shape().is_empty() || p.col_offset.checked_add(c).is_none_or(|end| end > row) {
        return Err(Error::shape(
            OP,
            format!("channels {}..{} of x {:?}", p.col_offset, p.col_offset.saturating_add(c), x.shape()),
        ));
    }
    if out.shape().last() != Some(&c) || out.len() != rows * c {
        return Err(Error::shape(OP, format!("out {:?} for x {:?} and {c} channels", out.shape(), x.shape())));
    }
    if let Some(r) = residual.as_ref().filter(|r| r.shape() != out.shape()) {
        return Err(Error::shape(OP, format!("residual {:?} vs out {:?}", r.shape(), out.shape())));
    }
    expect_dtype(OP, "scale", &scale, DType::F32)?;
    expect_dtype(OP, "shift", &shift, DType::F32)?;
    let act = dev.compute_dtype();
    let x_f32 = float_dtype(OP, "x", &x, act)?;
    let res_f32 = residual.as_ref().map(|r| float_dtype(OP, "residual", r, act)).transpose()?.unwrap_or(true);
    let out_f32 = float_dtype(OP, "out", &out.as_view(), act)?;
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let res = residual.as_ref().map(|r| r.host_f32()).transpose()?;
            cpu::batch_norm(x.host_f32()?, row, scale.host_f32()?, shift.host_f32()?, res, out.host_f32_mut()?, p);
            Ok(())
        }
        _ => {
            let params = BatchNormParams {
                x: x.addr(),
                scale: scale.addr(),
                shift: shift.addr(),
                residual: residual.as_ref().map_or(0, |r| r.addr()),
                out: out.addr(),
                rows: u32_param(OP, "rows", rows)?,
                row: u32_param(OP, "row", row)?,
                col_offset: u32_param(OP, "col_offset", p.col_offset)?,
                channels: u32_param(OP, "channels", c)?,
                relu: p.relu as u32,
                x_f32: x_f32 as u32,
                res_f32: res_f32 as u32,
                out_f32: out_f32 as u32,
            };
            let grid = blocks_for(OP, out.len(), BN_BLOCK)?;
            launch(dev, "batch_norm", LaunchDims::new([grid, 1, 1], [BN_BLOCK, 1, 1], 0), &params)
        }
    }
}
