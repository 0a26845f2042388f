use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{View, ViewMut, cpu};

/// Threads per block of the activation kernels; mirrors ACT_BLOCK in swiglu.cu.
pub(crate) const ACT_BLOCK: u32 = 256;

/// Mirrors `SwigluParams` in kernels/swiglu.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct SwigluParams {
    pub gate_up: u64,
    pub out: u64,
    pub rows: u32,
    pub inner: u32,
}
const _: () = assert!(std::mem::size_of::<SwigluParams>() == 24);

/// The Llama MLP gate: `out[r, i] = silu(gate_up[r, i]) · gate_up[r, inner + i]`.
///
/// Shapes: `gate_up` `[rows, 2·inner]` (the gate and up projections stacked in one GEMM), `out`
/// `[rows, inner]`. Dtypes: the device's compute dtype (f32 on Cpu, bf16 on Cuda/Emu).
pub fn swiglu(gate_up: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "swiglu";
    let dev = same_device(OP, gate_up.device(), &[out.device()])?;
    let (rows, inner) = (out.rows(), out.row_len());
    if gate_up.rows() != rows || gate_up.row_len() != 2 * inner {
        return Err(Error::shape(OP, format!("gate_up {:?} for out {:?}", gate_up.shape(), out.shape())));
    }
    let act = dev.compute_dtype();
    expect_dtype(OP, "gate_up", &gate_up, act)?;
    expect_dtype(OP, "out", &out.as_view(), act)?;
    if rows * inner == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::swiglu(gate_up.host_f32()?, out.host_f32_mut()?, inner);
            Ok(())
        }
        _ => {
            let p = SwigluParams {
                gate_up: gate_up.addr(),
                out: out.addr(),
                rows: u32_param(OP, "rows", rows)?,
                inner: u32_param(OP, "inner", inner)?,
            };
            let grid = blocks_for(OP, rows * inner, ACT_BLOCK)?;
            launch(dev, "swiglu_bf16", LaunchDims::new([grid, 1, 1], [ACT_BLOCK, 1, 1], 0), &p)
        }
    }
}
