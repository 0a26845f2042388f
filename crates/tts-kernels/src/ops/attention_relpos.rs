//! Multi-head self-attention with relative positions (ESPnet `RelPositionMultiHeadedAttention`,
//! S3Gen's conformer encoder). Kernel: `kernels/attention_relpos.cu`.
use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `attention_relpos_bf16`; mirrors RELPOS_BLOCK in attention_relpos.cu.
pub(crate) const RELPOS_BLOCK: u32 = 128;
/// Queries per block (one warp each); mirrors RELPOS_WARPS.
const RELPOS_WARPS: u32 = 4;
/// Largest head dim of [`attention_relpos`]; mirrors RELPOS_MAX_D.
pub(crate) const RELPOS_MAX_HEAD_DIM: usize = 256;

/// Mirrors `AttentionRelposParams` in kernels/attention_relpos.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AttentionRelposParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub pos: u64,
    pub bias_u: u64,
    pub bias_v: u64,
    pub kv_lens: u64,
    pub out: u64,
    pub batch: u32,
    pub t: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub vec: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionRelposParams>() == 88);

/// For batch b, query i, head h (vectors of `head_dim` = width / heads):
/// `score[i, j] = ((q_i + u_h)·k_j + (q_i + v_h)·pos[T − 1 − i + j]) · scale` over keys `j < kv_lens[b]`
/// (every key without `kv_lens`), `out_i = Σ_j softmax(score[i])_j · v_j`; a query that sees no key
/// gets zeros. `pos` row r holds the projected encoding of relative position `T − 1 − r`. This is
/// ESPnet's `(matrix_ac + rel_shift(matrix_bd)) / √d_k` with `scale = 1/√d_k` and the padding mask
/// of the keys (padded queries still attend to the valid keys, as in the reference).
///
/// Shapes: `q`, `k`, `v`, `out` `[B, T, heads·head_dim]`; `pos` `[2T − 1, heads·head_dim]` (shared
/// by the batch); `bias_u`, `bias_v` `[heads, head_dim]` f32; `kv_lens` `[B]` i32; head_dim up to
/// 256 (`RELPOS_MAX_HEAD_DIM`). Dtypes: `q`, `k`, `v`, `pos`, `out` the compute dtype (f32 on Cpu, bf16 on
/// Cuda/Emu: f32 scores, softmax and sums inside). `kv_lens[b]` outside `0..=T` is an error on Cpu
/// and NaN rows on Cuda/Emu (the lengths live on the device), as in [`crate::ops::attention_dense`].
#[allow(clippy::too_many_arguments)]
pub fn attention_relpos(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    pos: View<'_>,
    bias_u: View<'_>,
    bias_v: View<'_>,
    kv_lens: Option<View<'_>>,
    mut out: ViewMut<'_>,
    heads: usize,
    scale: f32,
) -> Result<()> {
    const OP: &str = "attention_relpos";
    let mut devs = vec![k.device(), v.device(), pos.device(), bias_u.device(), bias_v.device(), out.device()];
    devs.extend(kv_lens.iter().map(|l| l.device()));
    let dev = same_device(OP, q.device(), &devs)?;
    let qs = q.shape();
    let [batch, t, width] = *qs else {
        return Err(Error::shape(OP, format!("q {qs:?} is not [B, T, heads·head_dim]")));
    };
    for (what, s) in [("k", k.shape()), ("v", v.shape()), ("out", out.shape())] {
        if s != qs {
            return Err(Error::shape(OP, format!("{what} {s:?} vs q {qs:?}")));
        }
    }
    if heads == 0 || width == 0 || width % heads != 0 || width / heads > RELPOS_MAX_HEAD_DIM {
        return Err(Error::shape(OP, format!("width {width} is not heads {heads} × a head_dim in 1..={RELPOS_MAX_HEAD_DIM}")));
    }
    let dh = width / heads;
    let pos_rows = (2 * t).saturating_sub(1);
    if pos.shape() != [pos_rows, width] {
        return Err(Error::shape(OP, format!("pos {:?} for T = {t} (want [{pos_rows}, {width}])", pos.shape())));
    }
    for (what, b) in [("bias_u", &bias_u), ("bias_v", &bias_v)] {
        if b.shape() != [heads, dh] {
            return Err(Error::shape(OP, format!("{what} {:?} (want [{heads}, {dh}])", b.shape())));
        }
        expect_dtype(OP, what, b, DType::F32)?;
    }
    if let Some(l) = &kv_lens {
        if l.shape() != [batch] {
            return Err(Error::shape(OP, format!("kv_lens {:?} for a batch of {batch}", l.shape())));
        }
        expect_dtype(OP, "kv_lens", l, DType::I32)?;
    }
    if t > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("T = {t} is too long")));
    }
    if !scale.is_finite() {
        return Err(Error::invalid(OP, format!("scale = {scale}")));
    }
    let act = dev.compute_dtype();
    expect_dtype(OP, "q", &q, act)?;
    expect_dtype(OP, "k", &k, act)?;
    expect_dtype(OP, "v", &v, act)?;
    expect_dtype(OP, "pos", &pos, act)?;
    expect_dtype(OP, "out", &out.as_view(), act)?;
    if batch == 0 || t == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let lens = kv_lens.map(|l| l.host_i32()).transpose()?;
            cpu::attention_relpos(
                q.host_f32()?,
                k.host_f32()?,
                v.host_f32()?,
                pos.host_f32()?,
                bias_u.host_f32()?,
                bias_v.host_f32()?,
                lens,
                out.host_f32_mut()?,
                batch,
                heads,
                dh,
                scale,
            )
            .map_err(|(b, l)| Error::invalid(OP, format!("batch {b}: kv_len {l} is outside 0..={t}")))
        }
        _ => {
            let p = AttentionRelposParams {
                q: q.addr(),
                k: k.addr(),
                v: v.addr(),
                pos: pos.addr(),
                bias_u: bias_u.addr(),
                bias_v: bias_v.addr(),
                kv_lens: kv_lens.map_or(0, |l| l.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                t: u32_param(OP, "T", t)?,
                heads: u32_param(OP, "heads", heads)?,
                head_dim: dh as u32,
                scale,
                vec: (dh.is_multiple_of(8) && k.addr().is_multiple_of(16) && pos.addr().is_multiple_of(16)) as u32,
            };
            let grid = [blocks_for(OP, t, RELPOS_WARPS)?, p.heads, p.batch];
            launch(dev, "attention_relpos_bf16", LaunchDims::new(grid, [RELPOS_BLOCK, 1, 1], 0), &p)
        }
    }
}
