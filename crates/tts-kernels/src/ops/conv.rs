//! Convolutions as im2col + GEMM ([`im2col`] then [`crate::ops::linear`]) and transposed
//! convolutions as GEMM + overlap-add ([`crate::ops::linear`] then [`col2im_transpose`]).
//!
//! Layout: time-major, `[batch, time, channels]`. A PyTorch `Conv1d` weight `(C_out, C_in, K)` is
//! used as the GEMM weight `[C_out, C_in·K]` as it is (column `c·K + j`); a `ConvTranspose1d`
//! weight `(C_in, C_out, K)` becomes `[C_out·K, C_in]` (transposed once at load).
//!
//! Kernels: `im2col_1d` and `col2im_transpose_1d` in kernels/conv.cu (one thread per output
//! element; see the header there).
use bytemuck::{Pod, Zeroable};

pub use crate::cpu::{DepthwiseConv, Im2col, PadMode};
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, Device, View, ViewMut, cpu};

/// Threads per block of the conv kernels; mirrors CONV_BLOCK in conv.cu.
pub(crate) const CONV_BLOCK: u32 = 256;

/// Mirrors `Im2colParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct Im2colParams {
    pub x: u64,
    pub lens: u64,
    pub out: u64,
    pub batch: u32,
    pub l_in: u32,
    pub l_out: u32,
    pub channels: u32,
    pub kernel: u32,
    pub stride: u32,
    pub dilation: u32,
    pub pad_left: u32,
    pub upsample: u32,
    pub reflect: u32,
    pub x_f32: u32,
    pub out_f32: u32,
}
const _: () = assert!(std::mem::size_of::<Im2colParams>() == 72);

/// Mirrors `Col2imParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct Col2imParams {
    pub cols: u64,
    pub lens: u64,
    pub bias: u64,
    pub out: u64,
    pub batch: u32,
    pub l_in: u32,
    pub l_out: u32,
    pub channels: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    pub pad_: u32,
}
const _: () = assert!(std::mem::size_of::<Col2imParams>() == 64);

/// Mirrors `DepthwiseConvParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct DepthwiseConvParams {
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub batch: u32,
    pub len: u32,
    pub row: u32,
    pub col_offset: u32,
    pub channels: u32,
    pub taps: u32,
    pub pad_left: u32,
    pub residual: u32,
    pub x_f32: u32,
    pub out_f32: u32,
}
const _: () = assert!(std::mem::size_of::<DepthwiseConvParams>() == 64);

/// A zero-padded, stride-1 depthwise `Conv1d` (no bias) over the `C` channels of `x` that start at
/// column `p.col_offset`, with the input optionally added (the S3Tokenizer's FSMN memory,
/// `conv(v) + v` over the v part of fused QKV rows):
/// `out[b, t, c] = Σ_j w[j, c] · x[b, t + j − pad_left, col_offset + c] (+ x[b, t, col_offset + c])`,
/// rows outside `0..L` reading zero. The sum runs from 0 over increasing `j` in f32, each product
/// and sum rounded alone, the input added last, on every backend: the same bits from the same
/// inputs.
///
/// Shapes: `x` `[B, L, W]` with `col_offset + C ≤ W`, `w` `[K, C]` (tap-major: torch's
/// `(C, 1, K)` transposed), `out` `[B, L, C]`. Dtypes: `w` f32; `x` and `out` each f32 or the
/// compute dtype (Cpu: f32).
///
/// Errors: no taps or channels, shape and dtype mismatches, sizes or `pad_left` of 2^31 or more.
pub fn depthwise_conv1d(x: View<'_>, w: View<'_>, mut out: ViewMut<'_>, p: DepthwiseConv) -> Result<()> {
    const OP: &str = "depthwise_conv1d";
    let dev = same_device(OP, x.device(), &[w.device(), out.device()])?;
    let (batch, len, row) = dims3(OP, "x", x.shape())?;
    let (taps, channels) = match *w.shape() {
        [k, c] if k > 0 && c > 0 => (k, c),
        _ => return Err(Error::shape(OP, format!("w {:?} is not [taps ≥ 1, channels ≥ 1]", w.shape()))),
    };
    if p.col_offset.checked_add(channels).is_none_or(|end| end > row) {
        return Err(Error::shape(
            OP,
            format!("channels {}..{} of x {:?}", p.col_offset, p.col_offset.saturating_add(channels), x.shape()),
        ));
    }
    if out.shape() != [batch, len, channels] {
        return Err(Error::shape(OP, format!("out {:?} for x {:?} and {channels} channels", out.shape(), x.shape())));
    }
    expect_dtype(OP, "w", &w, DType::F32)?;
    let act = dev.compute_dtype();
    let x_f32 = float_dtype(OP, "x", &x, act)?;
    let out_f32 = float_dtype(OP, "out", &out.as_view(), act)?;
    let limit = i32::MAX as usize;
    if p.pad_left > limit || len > limit || taps > limit || row > limit {
        return Err(Error::invalid(OP, format!("{p:?} with L {len}, {taps} taps, rows of {row}: sizes beyond 2^31")));
    }
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let shape = cpu::DepthwiseShape { batch, len, row, channels, taps };
            cpu::depthwise_conv1d(x.host_f32()?, w.host_f32()?, out.host_f32_mut()?, shape, p);
            Ok(())
        }
        _ => {
            let params = DepthwiseConvParams {
                x: x.addr(),
                w: w.addr(),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                len: u32_param(OP, "len", len)?,
                row: u32_param(OP, "row", row)?,
                col_offset: u32_param(OP, "col_offset", p.col_offset)?,
                channels: u32_param(OP, "channels", channels)?,
                taps: u32_param(OP, "taps", taps)?,
                pad_left: u32_param(OP, "pad_left", p.pad_left)?,
                residual: p.residual as u32,
                x_f32: x_f32 as u32,
                out_f32: out_f32 as u32,
            };
            let grid = blocks_for(OP, out.len(), CONV_BLOCK)?;
            launch(dev, "depthwise_conv1d", LaunchDims::new([grid, 1, 1], [CONV_BLOCK, 1, 1], 0), &params)
        }
    }
}

/// Unfolds a batch of sequences for a 1-D convolution:
/// `out[b, t, c·K + j] = src_b(t·stride + j·dilation − pad_left, c)`, where `src_b` is `x[b]`
/// upsampled ×`upsample` by repetition (`src_b(i, c) = x[b, i / upsample, c]`), of length
/// `S_b = len_b · upsample` with `len_b = lens[b]` (or `L_in` without `lens`). Positions outside
/// `0..S_b` read zero ([`PadMode::Zero`]) or the reflection ([`PadMode::Reflect`]; a position still
/// outside after one reflection reads zero). Rows past the input length are thus the reference's
/// `x * mask` before a convolution.
///
/// Shapes: `x` `[B, L_in, C]`, `lens` `[B]` i32 with `0 ≤ lens[b] ≤ L_in`, `out` `[B, L_out, C·K]`
/// (`L_out` is the caller's choice). Dtypes: `x` and `out` each f32 or the compute dtype.
///
/// Errors: kernel, stride, dilation or upsample 0; `(L_out − 1)·stride + (K − 1)·dilation`,
/// `pad_left` or `L_in·upsample` of 2^31 or more; shape and dtype mismatches. A `lens[b]` outside
/// `0..=L_in` is an error on Cpu (nothing written); on Cuda/Emu (the lengths live on the device)
/// every element of batch b is written as NaN instead.
pub fn im2col(x: View<'_>, lens: Option<View<'_>>, mut out: ViewMut<'_>, p: Im2col) -> Result<()> {
    const OP: &str = "im2col";
    let mut devs = vec![out.device()];
    if let Some(l) = &lens {
        devs.push(l.device());
    }
    let dev = same_device(OP, x.device(), &devs)?;
    if p.kernel == 0 || p.stride == 0 || p.dilation == 0 || p.upsample == 0 {
        return Err(Error::invalid(OP, format!("{p:?}: kernel, stride, dilation and upsample must be at least 1")));
    }
    let (batch, l_in, c) = dims3(OP, "x", x.shape())?;
    let (ob, l_out, ock) = dims3(OP, "out", out.shape())?;
    let ck = c.checked_mul(p.kernel).ok_or_else(|| Error::shape(OP, "C·K overflows"))?;
    if ob != batch || ock != ck {
        return Err(Error::shape(OP, format!("out {:?} for x {:?} and kernel {}", out.shape(), x.shape(), p.kernel)));
    }
    check_lens(OP, &lens, batch)?;
    let act = dev.compute_dtype();
    let x_f32 = float_dtype(OP, "x", &x, act)?;
    let out_f32 = float_dtype(OP, "out", &out.as_view(), act)?;
    // positions are computed in 64-bit signed arithmetic from values kept below 2^31
    let reach = l_out
        .saturating_sub(1)
        .checked_mul(p.stride)
        .and_then(|a| (p.kernel - 1).checked_mul(p.dilation).and_then(|b| a.checked_add(b)));
    let span = l_in.checked_mul(p.upsample);
    let limit = i32::MAX as usize;
    if reach.is_none_or(|r| r > limit) || span.is_none_or(|s| s > limit) || p.pad_left > limit {
        return Err(Error::invalid(OP, format!("{p:?} with L_in {l_in}, L_out {l_out}: positions beyond 2^31")));
    }
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let l = lens.map(|l| l.host_i32()).transpose()?;
            cpu::im2col(x.host_f32()?, l, out.host_f32_mut()?, batch, l_in, c, l_out, &p)
                .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 0..={l_in}")))
        }
        _ => {
            let params = Im2colParams {
                x: x.addr(),
                lens: lens.map_or(0, |l| l.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                l_in: u32_param(OP, "l_in", l_in)?,
                l_out: u32_param(OP, "l_out", l_out)?,
                channels: u32_param(OP, "channels", c)?,
                kernel: u32_param(OP, "kernel", p.kernel)?,
                stride: u32_param(OP, "stride", p.stride)?,
                dilation: u32_param(OP, "dilation", p.dilation)?,
                pad_left: u32_param(OP, "pad_left", p.pad_left)?,
                upsample: u32_param(OP, "upsample", p.upsample)?,
                reflect: (p.pad == PadMode::Reflect) as u32,
                x_f32: x_f32 as u32,
                out_f32: out_f32 as u32,
            };
            u32_param(OP, "C·K", ck)?;
            let grid = blocks_for(OP, out.len(), CONV_BLOCK)?;
            launch(dev, "im2col_1d", LaunchDims::new([grid, 1, 1], [CONV_BLOCK, 1, 1], 0), &params)
        }
    }
}

/// A zero-padded, stride-1 `Conv1d` on the Cpu backend, straight from `x` (no im2col buffer; see
/// `cpu::conv1d_panels`): `out[b, t, o] = bias[o] + Σ_j Σ_c x[b, t + j·dilation − pad_left, c]·W[o, c, j]`
/// for `j < taps`, rows of `x` outside `0..len_b` reading zero (`len_b = lens[b]`, or `L_in`).
///
/// Shapes: `x` `[B, L_in, C_in]` f32, `lens` `[B]` i32, `w` `[C_out, taps·C_in]`: the tap-major
/// weight (`cpu::tap_major` of torch's `(C_out, C_in, K)`) through [`crate::ops::pack_gemm_weight`],
/// `bias` `[C_out]` f32, `out` `[B, L_out, C_out]` f32 (`L_out` is the caller's: the padding after
/// the last sample is implied by it).
///
/// Errors: another backend (there, im2col + linear), a weight not packed for the Cpu GEMM, `taps`
/// or `dilation` 0, `L_out + (taps − 1)·dilation` or `pad_left` of 2^31 or more (or a padded input
/// too large to address), a `lens[b]` outside `0..=L_in`, shape and dtype mismatches.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_packed(
    x: View<'_>,
    lens: Option<View<'_>>,
    w: View<'_>,
    bias: Option<View<'_>>,
    mut out: ViewMut<'_>,
    taps: usize,
    dilation: usize,
    pad_left: usize,
) -> Result<()> {
    const OP: &str = "conv1d_packed";
    let mut devs = vec![w.device(), out.device()];
    devs.extend(lens.iter().map(|l| l.device()));
    devs.extend(bias.iter().map(|b| b.device()));
    let dev = same_device(OP, x.device(), &devs)?;
    if !matches!(&*dev.inner, Backend::Cpu) {
        return Err(Error::invalid(OP, format!("runs on the Cpu backend only, not {:?}", dev.kind())));
    }
    if !w.is_cpu_gemm_packed() {
        return Err(Error::invalid(OP, "the weight must be packed by ops::pack_gemm_weight"));
    }
    if taps == 0 || dilation == 0 {
        return Err(Error::invalid(OP, format!("taps {taps} and dilation {dilation} must be at least 1")));
    }
    let (batch, l_in, c_in) = dims3(OP, "x", x.shape())?;
    let (ob, l_out, c_out) = dims3(OP, "out", out.shape())?;
    let shape = cpu::ConvShape { batch, l_in, c_in, l_out, c_out, taps, dilation, pad_left };
    // as im2col: positions below 2^31 (beyond, the taps would only read padding anyway)
    let reach = (taps - 1).checked_mul(dilation).and_then(|r| r.checked_add(l_out));
    let Some((_, _, k)) =
        shape.extents().filter(|_| reach.is_some_and(|r| r <= i32::MAX as usize) && pad_left <= i32::MAX as usize)
    else {
        return Err(Error::invalid(
            OP,
            format!("{taps} taps, dilation {dilation}, pad {pad_left} with L_out {l_out}: positions beyond 2^31"),
        ));
    };
    if ob != batch || w.shape() != [c_out, k] {
        return Err(Error::shape(
            OP,
            format!("x {:?}, weight {:?} and out {:?} with {taps} taps", x.shape(), w.shape(), out.shape()),
        ));
    }
    if bias.as_ref().is_some_and(|b| b.len() != c_out) {
        return Err(Error::shape(OP, format!("bias of {} for {c_out} outputs", bias.map_or(0, |b| b.len()))));
    }
    check_lens(OP, &lens, batch)?;
    expect_dtype(OP, "x", &x, DType::F32)?;
    expect_dtype(OP, "out", &out.as_view(), DType::F32)?;
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, DType::F32)?;
    }
    let l = lens.map(|l| l.host_i32()).transpose()?;
    let b = bias.map(|b| b.host_f32()).transpose()?;
    let isa = cpu::isa::active();
    let (x, out) = (x.host_f32()?, out.host_f32_mut()?);
    if w.is_cpu_gemm_bf16_packed() {
        cpu::conv1d_bf16_panels_with(isa, x, l, w.gemm_bf16_panels()?, b, out, shape)
    } else {
        cpu::conv1d_panels_with(isa, x, l, w.gemm_panels()?, b, out, shape)
    }
    .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 0..={l_in}")))
}

/// The overlap-add half of a transposed convolution (`ConvTranspose1d` after its GEMM):
/// `out[b, t, c] = bias[c] + Σ cols[b, i, c·K + j]` over `i < len_b`, `j < K` with
/// `i·stride + j − pad = t`. `len_b = lens[b]` (or `L_in`).
///
/// Shapes: `cols` `[B, L_in, C·K]` f32 (`x · W` with `W` `[C_out·K, C_in]`), `lens` `[B]` i32,
/// `bias` `[C]` in the compute dtype, `out` `[B, L_out, C]` f32 (PyTorch's
/// `L_out = (L_in − 1)·stride − 2·pad + K`; any `L_out` is accepted).
///
/// The sum runs over increasing j in f32 from 0, the bias added last, on every backend (a gather:
/// deterministic, no atomics). Errors: kernel or stride 0, shape and dtype mismatches. A `lens[b]`
/// outside `0..=L_in` is an error on Cpu (nothing written) and NaN for all of batch b on Cuda/Emu.
pub fn col2im_transpose(
    cols: View<'_>,
    lens: Option<View<'_>>,
    bias: Option<View<'_>>,
    mut out: ViewMut<'_>,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<()> {
    const OP: &str = "col2im_transpose";
    let mut devs = vec![out.device()];
    if let Some(l) = &lens {
        devs.push(l.device());
    }
    if let Some(b) = &bias {
        devs.push(b.device());
    }
    let dev = same_device(OP, cols.device(), &devs)?;
    if kernel == 0 || stride == 0 {
        return Err(Error::invalid(OP, format!("kernel {kernel}, stride {stride}: both must be at least 1")));
    }
    let (batch, l_in, ck) = dims3(OP, "cols", cols.shape())?;
    let (ob, l_out, c) = dims3(OP, "out", out.shape())?;
    if ob != batch || c.checked_mul(kernel) != Some(ck) {
        return Err(Error::shape(OP, format!("out {:?} for cols {:?} and kernel {kernel}", out.shape(), cols.shape())));
    }
    if bias.as_ref().is_some_and(|b| b.len() != c) {
        return Err(Error::shape(OP, format!("bias of {} for {c} channels", bias.map_or(0, |b| b.len()))));
    }
    if l_in > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("L_in {l_in}: lengths are i32")));
    }
    check_lens(OP, &lens, batch)?;
    expect_dtype(OP, "cols", &cols, DType::F32)?;
    expect_dtype(OP, "out", &out.as_view(), DType::F32)?;
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, dev.compute_dtype())?;
    }
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let l = lens.map(|l| l.host_i32()).transpose()?;
            let b = bias.map(|b| b.host_f32()).transpose()?;
            cpu::col2im_transpose(cols.host_f32()?, l, b, out.host_f32_mut()?, batch, l_in, c, l_out, kernel, stride, pad)
                .map_err(|(b, v)| Error::invalid(OP, format!("batch {b}: len {v} is outside 0..={l_in}")))
        }
        _ => {
            let params = Col2imParams {
                cols: cols.addr(),
                lens: lens.map_or(0, |l| l.addr()),
                bias: bias.map_or(0, |b| b.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                l_in: u32_param(OP, "l_in", l_in)?,
                l_out: u32_param(OP, "l_out", l_out)?,
                channels: u32_param(OP, "channels", c)?,
                kernel: u32_param(OP, "kernel", kernel)?,
                stride: u32_param(OP, "stride", stride)?,
                pad: u32_param(OP, "pad", pad)?,
                pad_: 0,
            };
            let grid = blocks_for(OP, out.len(), CONV_BLOCK)?;
            launch(dev, "col2im_transpose_1d", LaunchDims::new([grid, 1, 1], [CONV_BLOCK, 1, 1], 0), &params)
        }
    }
}

/// The three dims of a `[batch, time, channels]` tensor.
fn dims3(op: &'static str, what: &str, s: &[usize]) -> Result<(usize, usize, usize)> {
    match *s {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(Error::shape(op, format!("{what} {s:?} is not [batch, time, channels]"))),
    }
}

/// `lens`, when given, is `[batch]` i32.
pub(crate) fn check_lens(op: &'static str, lens: &Option<View<'_>>, batch: usize) -> Result<()> {
    if let Some(l) = lens {
        if l.len() != batch || l.shape().len() != 1 {
            return Err(Error::shape(op, format!("lens {:?} for a batch of {batch}", l.shape())));
        }
        expect_dtype(op, "lens", l, DType::I32)?;
    }
    Ok(())
}

/// Whether a tensor that may be f32 or the compute dtype is f32 (an error for anything else).
pub(crate) fn float_dtype(op: &'static str, what: &'static str, v: &View<'_>, act: DType) -> Result<bool> {
    match v.dtype() {
        DType::F32 => Ok(true),
        d if d == act => Ok(false),
        d => Err(Error::DType { op, what, got: d, expected: format!("f32 or {act}") }),
    }
}

/// How a `Conv1d` of a given geometry runs on a device (decided here, so that the layers above
/// tts-kernels never ask which backend they run on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv1dPlan {
    /// Straight from the input by [`conv1d_packed`] (no im2col buffer), with the tap-major GEMM
    /// weight `[C_out, K·C_in]`: the Cpu backend, for zero-padded stride-1 convolutions without
    /// upsampling.
    Direct,
    /// [`im2col`] into a `[B, L_out, C_in·K]` buffer, then a GEMM with the channel-major weight
    /// `[C_out, C_in·K]` (torch's layout, flattened): every other case.
    Im2col,
}

impl Conv1dPlan {
    /// The plan `dev` runs a convolution of geometry `geom` with.
    pub fn for_device(dev: &Device, geom: &Im2col) -> Conv1dPlan {
        let direct = matches!(&*dev.inner, Backend::Cpu) && geom.stride == 1 && geom.upsample == 1 && geom.pad == PadMode::Zero;
        if direct { Conv1dPlan::Direct } else { Conv1dPlan::Im2col }
    }

    /// The GEMM weight `[C_out, C_in·K]` (row-major) this plan multiplies by, from torch's Conv1d
    /// weight `w` `[C_out, C_in, K]`: tap-major for [`Conv1dPlan::Direct`], unchanged for
    /// [`Conv1dPlan::Im2col`].
    ///
    /// Errors: `w.len() != C_out·C_in·K`.
    pub fn gemm_weight(self, w: Vec<f32>, c_out: usize, c_in: usize, k: usize) -> Result<Vec<f32>> {
        if c_out.checked_mul(c_in).and_then(|n| n.checked_mul(k)) != Some(w.len()) {
            return Err(Error::shape("conv1d_gemm_weight", format!("{} weights for [{c_out}, {c_in}, {k}]", w.len())));
        }
        Ok(match self {
            Conv1dPlan::Direct => cpu::tap_major(&w, c_out, c_in, k),
            Conv1dPlan::Im2col => w,
        })
    }
}
