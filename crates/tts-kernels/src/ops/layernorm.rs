use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `layer_norm_bf16`; mirrors LAYERNORM_BLOCK in layernorm.cu.
pub(crate) const LAYERNORM_BLOCK: u32 = 256;

/// Mirrors `LayerNormParams` in kernels/layernorm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct LayerNormParams {
    pub x: u64,
    pub weight: u64,
    pub bias: u64,
    pub out: u64,
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    pub out_f32: u32,
}
const _: () = assert!(std::mem::size_of::<LayerNormParams>() == 48);

/// LayerNorm over the last dim (torch.nn.LayerNorm): `out = (x − mean)·rsqrt(var + eps)·weight + bias`.
///
/// Shapes: `x`, `out` `[rows, cols]` (any rank; rows = dim 0), `weight`, `bias` `[cols]`.
/// Dtypes: `x` f32 everywhere; `weight`, `bias` the compute dtype (f32 on Cpu, bf16 on Cuda/Emu);
/// `out` the compute dtype or f32.
pub fn layer_norm(x: View<'_>, weight: View<'_>, bias: Option<View<'_>>, mut out: ViewMut<'_>, eps: f32) -> Result<()> {
    const OP: &str = "layer_norm";
    let mut devs = vec![weight.device(), out.device()];
    if let Some(b) = &bias {
        devs.push(b.device());
    }
    let dev = same_device(OP, x.device(), &devs)?;
    let (rows, cols) = (x.rows(), x.row_len());
    if cols == 0 || weight.len() != cols || bias.as_ref().is_some_and(|b| b.len() != cols) {
        return Err(Error::shape(OP, format!("weight/bias for rows of {cols}: {:?}", weight.shape())));
    }
    if out.shape() != x.shape() {
        return Err(Error::shape(OP, format!("out {:?} vs x {:?}", out.shape(), x.shape())));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps}")));
    }
    expect_dtype(OP, "x", &x, DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "weight", &weight, act)?;
    let out_f32 = out.dtype() == DType::F32;
    if !out_f32 {
        expect_dtype(OP, "out", &out.as_view(), act)?;
    }
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, act)?;
    }
    if rows == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let b = bias.map(|b| b.host_f32()).transpose()?;
            cpu::layer_norm(x.host_f32()?, weight.host_f32()?, b, out.host_f32_mut()?, eps);
            Ok(())
        }
        _ => {
            let p = LayerNormParams {
                x: x.addr(),
                weight: weight.addr(),
                bias: bias.map_or(0, |b| b.addr()),
                out: out.addr(),
                rows: u32_param(OP, "rows", rows)?,
                cols: u32_param(OP, "cols", cols)?,
                eps,
                out_f32: out_f32 as u32,
            };
            launch(dev, "layer_norm_bf16", LaunchDims::new([p.rows, 1, 1], [LAYERNORM_BLOCK, 1, 1], 0), &p)
        }
    }
}
