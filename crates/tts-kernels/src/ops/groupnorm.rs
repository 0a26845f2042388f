//! GroupNorm over time-major `[B, T, C]` activations with per-request lengths (S3Gen).
//! Kernel: `group_norm_bf16` in kernels/groupnorm.cu (one block per (batch item, group)).
use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::conv::check_lens;
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `group_norm_bf16`; mirrors GROUPNORM_BLOCK in groupnorm.cu.
pub(crate) const GROUPNORM_BLOCK: u32 = 512;

/// Mirrors `GroupNormParams` in kernels/groupnorm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct GroupNormParams {
    pub x: u64,
    pub weight: u64,
    pub bias: u64,
    pub lens: u64,
    pub out: u64,
    pub batch: u32,
    pub t: u32,
    pub channels: u32,
    pub groups: u32,
    pub eps: f32,
    pub out_f32: u32,
}
const _: () = assert!(std::mem::size_of::<GroupNormParams>() == 64);

/// GroupNorm (torch.nn.GroupNorm(groups, C)) of each batch item's valid frames: for `t < lens[b]`
/// and channel `c` of group `g = c / (C / groups)`,
/// `out[b, t, c] = (x[b, t, c] − mean) · rsqrt(var + eps) · weight[c] + bias[c]`, with the mean and
/// biased variance (f32, two passes) over the `lens[b] · C/groups` values of group g in the frames
/// `t' < lens[b]` of item b (every frame without `lens`). Frames `t ≥ lens[b]` are written 0 (x is
/// not read there); an item of length 0 is all zeros. A padded batch thus normalises exactly like
/// its requests one at a time.
///
/// Shapes: `x`, `out` `[B, T, C]` (time-major: rows are frames, columns channels); `weight`, `bias`
/// `[C]`; `lens` `[B]` i32 with `0 ≤ lens[b] ≤ T` (frames); `groups ≥ 1` divides `C`.
/// Dtypes: `x` f32 everywhere; `weight`, `bias` the compute dtype (f32 on Cpu, bf16 on Cuda/Emu);
/// `out` the compute dtype or f32.
///
/// Errors: `groups` 0, `C` 0 or not a multiple of `groups`, `T·C ≥ 2^31`, a negative or non-finite
/// `eps`, shape, dtype and device mismatches. A `lens[b]` outside `0..=T` is an error on Cpu
/// (nothing written); on Cuda/Emu (the lengths live on the device) every element of item b is
/// written as NaN instead, as in [`crate::ops::im2col`].
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: View<'_>,
    weight: View<'_>,
    bias: Option<View<'_>>,
    lens: Option<View<'_>>,
    groups: usize,
    mut out: ViewMut<'_>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "group_norm";
    let mut devs = vec![weight.device(), out.device()];
    devs.extend(bias.iter().map(|b| b.device()));
    devs.extend(lens.iter().map(|l| l.device()));
    let dev = same_device(OP, x.device(), &devs)?;
    let xs = x.shape();
    let [batch, t, c] = *xs else {
        return Err(Error::shape(OP, format!("x {xs:?} is not [B, T, C]")));
    };
    if out.shape() != xs {
        return Err(Error::shape(OP, format!("out {:?} vs x {xs:?}", out.shape())));
    }
    if groups == 0 {
        return Err(Error::invalid(OP, "groups = 0"));
    }
    if c == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(OP, format!("C = {c} channels is not a positive multiple of groups = {groups}")));
    }
    if weight.shape() != [c] || bias.as_ref().is_some_and(|b| b.shape() != [c]) {
        let b = bias.as_ref().map(|b| b.shape());
        return Err(Error::shape(OP, format!("weight {:?} / bias {b:?} for C = {c}", weight.shape())));
    }
    check_lens(OP, &lens, batch)?;
    if t.checked_mul(c).is_none_or(|n| n > i32::MAX as usize) {
        return Err(Error::invalid(OP, format!("T·C = {t}·{c} is 2^31 or more")));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(OP, format!("eps = {eps}")));
    }
    expect_dtype(OP, "x", &x, DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "weight", &weight, act)?;
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, act)?;
    }
    let out_f32 = out.dtype() == DType::F32;
    if !out_f32 {
        expect_dtype(OP, "out", &out.as_view(), act)?;
    }
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let b = bias.map(|b| b.host_f32()).transpose()?;
            let l = lens.map(|l| l.host_i32()).transpose()?;
            cpu::group_norm(x.host_f32()?, weight.host_f32()?, b, l, out.host_f32_mut()?, batch, t, groups, eps)
                .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 0..={t}")))
        }
        _ => {
            let p = GroupNormParams {
                x: x.addr(),
                weight: weight.addr(),
                bias: bias.map_or(0, |b| b.addr()),
                lens: lens.map_or(0, |l| l.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                t: u32_param(OP, "T", t)?,
                channels: u32_param(OP, "C", c)?,
                groups: u32_param(OP, "groups", groups)?,
                eps,
                out_f32: out_f32 as u32,
            };
            // one block per (batch item, group); B·G ≤ B·T·C fits a usize (out is allocated)
            let blocks = batch * groups;
            if blocks > i32::MAX as usize {
                return Err(Error::invalid(OP, format!("B·groups = {blocks} blocks is 2^31 or more")));
            }
            launch(dev, "group_norm_bf16", LaunchDims::new([blocks as u32, 1, 1], [GROUPNORM_BLOCK, 1, 1], 0), &p)
        }
    }
}
