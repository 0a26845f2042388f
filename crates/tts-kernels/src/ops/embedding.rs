use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `embed_pos_bf16`; mirrors EMBED_BLOCK in embedding.cu.
pub(crate) const EMBED_BLOCK: u32 = 128;

/// Mirrors `EmbedParams` in kernels/embedding.cu (device addresses as u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct EmbedParams {
    pub ids: u64,
    pub pos: u64,
    pub table: u64,
    pub pos_table: u64,
    pub out: u64,
    pub rows: u32,
    pub dim: u32,
    pub vocab: u32,
    pub n_pos: u32,
}
const _: () = assert!(std::mem::size_of::<EmbedParams>() == 56);

/// Token-embedding gather with a learned-position add (T3's text and speech inputs):
/// `out[r] = (ids[r] >= 0 ? table[ids[r]] : 0) + (pos[r] >= 0 ? pos_table[pos[r]] : 0)`.
///
/// A negative id leaves out the token embedding (the CFG unconditional row keeps only the text
/// positions); `positions = None` adds no position embedding.
/// Shapes: `ids`, `pos`: `[rows]` i32; `table`: `[vocab, dim]`; `pos_table`: `[n_pos, dim]`;
/// `out`: `[rows, dim]` f32. Tables are f32 on Cpu, bf16 on Cuda/Emu.
/// An id or position past the end of its table is an error on Cpu; on Cuda and Emu (where ids live
/// on the device) its row is written as NaN.
pub fn embed_pos(ids: View<'_>, positions: Option<(View<'_>, View<'_>)>, table: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "embed_pos";
    let mut devs = vec![table.device(), out.device()];
    if let Some((p, pt)) = &positions {
        devs.extend([p.device(), pt.device()]);
    }
    let dev = same_device(OP, ids.device(), &devs)?;
    let rows = ids.len();
    let dim = table.row_len();
    if dim == 0 || table.rows() == 0 {
        return Err(Error::shape(OP, format!("empty table {:?}", table.shape())));
    }
    if out.rows() != rows || out.row_len() != dim {
        return Err(Error::shape(OP, format!("out {:?} for {rows} ids of dim {dim}", out.shape())));
    }
    expect_dtype(OP, "ids", &ids, DType::I32)?;
    expect_dtype(OP, "out", &out.as_view(), DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "table", &table, act)?;
    if let Some((p, pt)) = &positions {
        if p.len() != rows {
            return Err(Error::shape(OP, format!("{} positions for {rows} ids", p.len())));
        }
        if pt.row_len() != dim || pt.rows() == 0 {
            return Err(Error::shape(OP, format!("position table {:?} for dim {dim}", pt.shape())));
        }
        expect_dtype(OP, "positions", p, DType::I32)?;
        expect_dtype(OP, "position table", pt, act)?;
    }
    if rows == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let pos = match &positions {
                Some((p, pt)) => Some((p.host_i32()?, pt.host_f32()?)),
                None => None,
            };
            cpu::embed_pos(ids.host_i32()?, pos, table.host_f32()?, out.host_f32_mut()?, dim)
                .map_err(|(r, what, v)| Error::invalid(OP, format!("row {r}: {what} {v} is past the end of its table")))
        }
        _ => {
            let p = EmbedParams {
                ids: ids.addr(),
                pos: positions.as_ref().map_or(0, |(p, _)| p.addr()),
                table: table.addr(),
                pos_table: positions.as_ref().map_or(0, |(_, pt)| pt.addr()),
                out: out.addr(),
                rows: u32_param(OP, "rows", rows)?,
                dim: u32_param(OP, "dim", dim)?,
                vocab: u32_param(OP, "vocab", table.rows()).map(|v| v.min(i32::MAX as u32))?,
                n_pos: positions.as_ref().map_or(Ok(0), |(_, pt)| u32_param(OP, "positions", pt.rows()))?,
            };
            let grid = [p.rows, blocks_for(OP, dim, EMBED_BLOCK)?, 1];
            launch(dev, "embed_pos_bf16", LaunchDims::new(grid, [EMBED_BLOCK, 1, 1], 0), &p)
        }
    }
}
