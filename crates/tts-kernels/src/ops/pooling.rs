//! Poolings over time of time-major `[T, C]` activations: the CAM layer's context and gate, and
//! statistics pooling (CAMPPlus). Kernels: `segment_mean`, `segment_gate` and `stats_pool` in
//! kernels/pooling.cu.
use bytemuck::{Pod, Zeroable};

use crate::device::{Backend, Device};
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::conv::float_dtype;
use crate::tensor::same_device;
use crate::{View, ViewMut, cpu};

/// Threads per block; mirrors POOL_BLOCK in pooling.cu.
const POOL_BLOCK: u32 = 256;

/// Mirrors `PoolParams` in kernels/pooling.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct PoolParams {
    x: u64,
    out: u64,
    frames: u32,
    channels: u32,
    seg_len: u32,
    segments: u32,
    x_f32: u32,
    out_f32: u32,
    pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<PoolParams>() == 48);

/// `[T, C]` of a 2-D view, named `what` in errors.
fn frames_channels(op: &'static str, what: &str, s: &[usize]) -> Result<(usize, usize)> {
    match *s {
        [t, c] => Ok((t, c)),
        _ => Err(Error::shape(op, format!("{what} {s:?} is not [T, C]"))),
    }
}

/// The sizes a pooling kernel is launched for.
struct Geometry {
    frames: usize,
    channels: usize,
    seg_len: usize,
    segments: usize,
}

/// Launches `kernel` with `threads` threads over `x` and `out` (each an address and whether it
/// holds f32), every size checked to fit the kernel's u32 parameters.
fn launch_pool(
    op: &'static str,
    dev: &Device,
    kernel: &'static str,
    threads: usize,
    g: Geometry,
    (x, x_f32): (u64, bool),
    (out, out_f32): (u64, bool),
) -> Result<()> {
    let p = PoolParams {
        x,
        out,
        frames: u32_param(op, "T", g.frames)?,
        channels: u32_param(op, "C", g.channels)?,
        seg_len: u32_param(op, "seg_len", g.seg_len)?,
        segments: u32_param(op, "segments", g.segments)?,
        x_f32: x_f32 as u32,
        out_f32: out_f32 as u32,
        pad: [0; 2],
    };
    u32_param(op, "T·C", g.frames * g.channels)?;
    let grid = blocks_for(op, threads, POOL_BLOCK)?;
    launch(dev, kernel, LaunchDims::new([grid, 1, 1], [POOL_BLOCK, 1, 1], 0), &p)
}

/// The CAM layer's context (`CAMLayer`: `x.mean(-1) + seg_pooling(x)` at each segment):
/// `out[s, c] = total_c / T + seg_{s,c} / n_s`, `seg_{s,c}` the sum of `x[f, c]` over segment s
/// (frames `s·seg_len .. min((s + 1)·seg_len, T)`, `n_s` of them; the last segment may be
/// shorter), `total_c` the sum of the segment sums. Sums in f32 in frame order, the same bits on
/// every backend.
///
/// Shapes: `x` `[T, C]`, `out` `[S, C]` with `S = ⌈T / seg_len⌉`. Dtypes: each f32 or the compute
/// dtype. Errors: T, C or `seg_len` 0, shape and dtype mismatches, sizes of 2^32 or more.
pub fn segment_mean(x: View<'_>, mut out: ViewMut<'_>, seg_len: usize) -> Result<()> {
    const OP: &str = "segment_mean";
    let dev = same_device(OP, x.device(), &[out.device()])?;
    let (t, c) = frames_channels(OP, "x", x.shape())?;
    if t == 0 || c == 0 || seg_len == 0 {
        return Err(Error::invalid(OP, format!("x {:?} with segments of {seg_len}: nothing to average", x.shape())));
    }
    let s = cpu::segments(t, seg_len);
    if out.shape() != [s, c] {
        return Err(Error::shape(
            OP,
            format!("out {:?} for x {:?} in segments of {seg_len} (want [{s}, {c}])", out.shape(), x.shape()),
        ));
    }
    let act = dev.compute_dtype();
    let x_f32 = float_dtype(OP, "x", &x, act)?;
    let out_f32 = float_dtype(OP, "out", &out.as_view(), act)?;
    match &*dev.inner {
        Backend::Cpu => {
            cpu::segment_mean(x.host_f32()?, out.host_f32_mut()?, t, c, seg_len);
            Ok(())
        }
        _ => {
            let geometry = Geometry { frames: t, channels: c, seg_len, segments: s };
            launch_pool(OP, dev, "segment_mean", c, geometry, (x.addr(), x_f32), (out.addr(), out_f32))
        }
    }
}

/// The CAM layer's gate, in place: `y[f, c] *= sigmoid(z[f / seg_len, c])`, `sigmoid(v) =
/// 1 / (1 + exp(−v))` (libm-level agreement between backends), the product rounded once.
///
/// Shapes: `y` `[T, C]`, `z` `[⌈T / seg_len⌉, C]`. Dtypes: each f32 or the compute dtype.
/// Errors: `seg_len` 0, shape and dtype mismatches, sizes of 2^32 or more.
pub fn segment_gate(mut y: ViewMut<'_>, z: View<'_>, seg_len: usize) -> Result<()> {
    const OP: &str = "segment_gate";
    let dev = same_device(OP, y.device(), &[z.device()])?;
    let (t, c) = frames_channels(OP, "y", y.shape())?;
    if seg_len == 0 {
        return Err(Error::invalid(OP, "segments of 0 frames"));
    }
    let s = cpu::segments(t, seg_len);
    if z.shape() != [s, c] {
        return Err(Error::shape(
            OP,
            format!("z {:?} for y {:?} in segments of {seg_len} (want [{s}, {c}])", z.shape(), y.shape()),
        ));
    }
    let act = dev.compute_dtype();
    let z_f32 = float_dtype(OP, "z", &z, act)?;
    let y_f32 = float_dtype(OP, "y", &y.as_view(), act)?;
    if y.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::segment_gate(y.host_f32_mut()?, z.host_f32()?, c, seg_len);
            Ok(())
        }
        _ => {
            let geometry = Geometry { frames: t, channels: c, seg_len, segments: s };
            launch_pool(OP, dev, "segment_gate", t * c, geometry, (z.addr(), z_f32), (y.addr(), y_f32))
        }
    }
}

/// Statistics pooling (`StatsPool`): `out[c]` the mean of `x[·, c]` over the T frames, `out[C + c]`
/// its unbiased standard deviation `√(Σ_f (x[f, c] − mean_c)² / (T − 1))`; two sweeps in f32 in
/// frame order, the same bits on every backend.
///
/// Shapes: `x` `[T, C]`, `out` `[2C]`. Dtypes: each f32 or the compute dtype. Errors: fewer than 2
/// frames (the unbiased std is undefined), no channels, shape and dtype mismatches, sizes of 2^32
/// or more.
pub fn stats_pool(x: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "stats_pool";
    let dev = same_device(OP, x.device(), &[out.device()])?;
    let (t, c) = frames_channels(OP, "x", x.shape())?;
    if t < 2 || c == 0 {
        return Err(Error::invalid(OP, format!("x {:?}: the unbiased std needs 2 frames or more and a channel", x.shape())));
    }
    if out.shape() != [2 * c] {
        return Err(Error::shape(OP, format!("out {:?} for x {:?} (want [{}])", out.shape(), x.shape(), 2 * c)));
    }
    let act = dev.compute_dtype();
    let x_f32 = float_dtype(OP, "x", &x, act)?;
    let out_f32 = float_dtype(OP, "out", &out.as_view(), act)?;
    match &*dev.inner {
        Backend::Cpu => {
            cpu::stats_pool(x.host_f32()?, out.host_f32_mut()?, t, c);
            Ok(())
        }
        _ => {
            let geometry = Geometry { frames: t, channels: c, seg_len: 0, segments: 0 };
            launch_pool(OP, dev, "stats_pool", c, geometry, (x.addr(), x_f32), (out.addr(), out_f32))
        }
    }
}
