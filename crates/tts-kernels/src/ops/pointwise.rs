//! Pointwise activations with an optional padding mask, per-batch broadcasts, column concatenation
//! and the flow-matching Euler step (S3Gen). Kernels: `kernels/pointwise.cu` (one entry point per
//! op; dtypes are flags of the params struct).
use bytemuck::{Pod, Zeroable};

pub use crate::cpu::Activation;
use crate::device::{Backend, Device};
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of the pointwise kernels; mirrors PW_BLOCK in pointwise.cu.
pub(crate) const PW_BLOCK: u32 = 256;

/// The kernel's PW_* code of `act` and its scalar parameter.
fn activation_code(act: Activation) -> (u32, f32) {
    match act {
        Activation::Identity => (0, 0.0),
        Activation::Silu => (1, 0.0),
        Activation::Gelu => (2, 0.0),
        Activation::Mish => (3, 0.0),
        Activation::LeakyRelu(s) => (4, s),
        Activation::Elu => (5, 0.0),
        Activation::Abs => (6, 0.0),
        Activation::Scale(s) => (7, s),
        Activation::Snake => (8, 0.0),
    }
}

/// Mirrors `PwActParams` in kernels/pointwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PwActParams {
    pub x: u64,
    pub out: u64,
    pub alpha: u64,
    pub lens: u64,
    pub rows: u32,
    pub cols: u32,
    pub n: u32,
    pub kind: u32,
    pub param: f32,
    pub x_f32: u32,
    pub out_f32: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<PwActParams>() == 64);

/// Mirrors `PwBiasParams` in kernels/pointwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PwBiasParams {
    pub y: u64,
    pub v: u64,
    pub rows: u32,
    pub cols: u32,
    pub n: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<PwBiasParams>() == 32);

/// Mirrors `PwScaledParams` in kernels/pointwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PwScaledParams {
    pub y: u64,
    pub x: u64,
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub x_f32: u32,
}
const _: () = assert!(std::mem::size_of::<PwScaledParams>() == 32);

/// Mirrors `PwColsParams` in kernels/pointwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PwColsParams {
    pub src: u64,
    pub dst: u64,
    pub rows: u32,
    pub n: u32,
    pub src_n: u32,
    pub cs: u32,
    pub cd: u32,
    pub offset: u32,
    pub src_f32: u32,
    pub dst_f32: u32,
}
const _: () = assert!(std::mem::size_of::<PwColsParams>() == 48);

/// Mirrors `PwEulerParams` in kernels/pointwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PwEulerParams {
    pub x: u64,
    pub v: u64,
    pub est: u64,
    pub rows: u32,
    pub cols: u32,
    pub c_in: u32,
    pub est_f32: u32,
    pub dt: f32,
    pub cfg1: f32,
    pub cfg: f32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<PwEulerParams>() == 56);

/// 1 when `v` is f32, 0 when it is the device's compute dtype (bf16 on Cuda/Emu); any other dtype is
/// an error.
fn f32_flag(op: &'static str, what: &'static str, v: &View<'_>, dev: &Device) -> Result<u32> {
    let act = dev.compute_dtype();
    match v.dtype() {
        DType::F32 => Ok(1),
        d if d == act => Ok(0),
        d => Err(Error::DType { op, what, got: d, expected: format!("f32 or {act}") }),
    }
}

/// `[B, N, C]` of a 3-D view.
fn dims3(op: &'static str, what: &str, s: &[usize]) -> Result<(usize, usize, usize)> {
    match *s {
        [b, n, c] => Ok((b, n, c)),
        _ => Err(Error::shape(op, format!("{what} {s:?} is not [B, N, C]"))),
    }
}

fn launch_1d<P: Pod>(op: &'static str, dev: &Device, kernel: &'static str, threads: usize, p: &P) -> Result<()> {
    let grid = blocks_for(op, threads, PW_BLOCK)?;
    launch(dev, kernel, LaunchDims::new([grid, 1, 1], [PW_BLOCK, 1, 1], 0), p)
}

/// The checks and the launch of [`activation`] (`x` = Some) and [`activation_inplace`] (`x` = None:
/// `out` is read and written).
fn act_impl(
    op: &'static str,
    x: Option<View<'_>>,
    mut out: ViewMut<'_>,
    act: Activation,
    alpha: Option<View<'_>>,
    lens: Option<View<'_>>,
) -> Result<()> {
    let mut devs = vec![out.device()];
    devs.extend(x.iter().map(|v| v.device()));
    devs.extend(alpha.iter().map(|v| v.device()));
    devs.extend(lens.iter().map(|v| v.device()));
    let dev = same_device(op, devs[0], &devs[1..])?;
    if let Some(x) = &x
        && x.shape() != out.shape()
    {
        return Err(Error::shape(op, format!("out {:?} vs x {:?}", out.shape(), x.shape())));
    }
    let shape = out.shape().to_vec();
    let cols = *shape.last().unwrap_or(&0);
    match (act, &alpha) {
        (Activation::Snake, None) => return Err(Error::invalid(op, "Snake needs the per-channel alpha")),
        (Activation::Snake, Some(a)) => {
            if a.len() != cols || a.shape().len() != 1 {
                return Err(Error::shape(op, format!("alpha {:?} for {cols} channels", a.shape())));
            }
            expect_dtype(op, "alpha", a, DType::F32)?;
        }
        (_, Some(_)) => return Err(Error::invalid(op, format!("alpha is only an input of Snake, not of {act:?}"))),
        (_, None) => {}
    }
    let mut n = 0;
    if let Some(l) = &lens {
        let (b, nn, _) = dims3(op, "a masked tensor", &shape)?;
        if l.len() != b || l.shape().len() != 1 {
            return Err(Error::shape(op, format!("lens {:?} for a batch of {b}", l.shape())));
        }
        expect_dtype(op, "lens", l, DType::I32)?;
        n = nn;
    }
    let x_f32 = match &x {
        Some(x) => f32_flag(op, "x", x, dev)?,
        None => f32_flag(op, "x", &out.as_view(), dev)?,
    };
    let out_f32 = f32_flag(op, "out", &out.as_view(), dev)?;
    if out.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let a = alpha.map(|a| a.host_f32()).transpose()?;
            let l = lens.map(|l| l.host_i32()).transpose()?;
            let mask = l.map(|l| (l, n));
            match x {
                Some(x) => cpu::activation(x.host_f32()?, out.host_f32_mut()?, cols, act, a, mask),
                None => cpu::activation_inplace(out.host_f32_mut()?, cols, act, a, mask),
            }
            Ok(())
        }
        _ => {
            let (kind, param) = activation_code(act);
            let p = PwActParams {
                x: x.map_or(out.addr(), |x| x.addr()),
                out: out.addr(),
                alpha: alpha.map_or(0, |a| a.addr()),
                lens: lens.map_or(0, |l| l.addr()),
                rows: u32_param(op, "rows", out.len() / cols)?,
                cols: u32_param(op, "cols", cols)?,
                n: u32_param(op, "N", n)?,
                kind,
                param,
                x_f32,
                out_f32,
                pad: 0,
            };
            launch_1d(op, dev, "pw_activation", out.len(), &p)
        }
    }
}

/// `out = act(x)`, and with `lens`, rows `t ≥ lens[b]` of `[B, N, C]` written as 0 (the
/// reference's `* mask`; x is not read there, any `lens[b]` is valid: `≤ 0` masks every row,
/// `≥ N` none). Shapes: `x`, `out` the same; with `lens` (`[B]` i32) they must be 3-D
/// `[B, N, C]`; `alpha` `[C]` f32, required by [`Activation::Snake`] and refused otherwise. Dtypes:
/// `x` and `out` each f32 or the compute dtype.
pub fn activation(x: View<'_>, out: ViewMut<'_>, act: Activation, alpha: Option<View<'_>>, lens: Option<View<'_>>) -> Result<()> {
    act_impl("activation", Some(x), out, act, alpha, lens)
}

/// [`activation`] in place.
pub fn activation_inplace(x: ViewMut<'_>, act: Activation, alpha: Option<View<'_>>, lens: Option<View<'_>>) -> Result<()> {
    act_impl("activation_inplace", None, x, act, alpha, lens)
}

/// `y[b, t, c] += v[b, c]`: a per-batch vector broadcast over time (the time embedding of a
/// ResNet block). Shapes: `y` `[B, N, C]` f32, `v` `[B, C]` f32.
pub fn add_batch_bias(mut y: ViewMut<'_>, v: View<'_>) -> Result<()> {
    const OP: &str = "add_batch_bias";
    let dev = same_device(OP, y.device(), &[v.device()])?;
    let (b, n, c) = dims3(OP, "y", y.shape())?;
    if v.shape() != [b, c] {
        return Err(Error::shape(OP, format!("v {:?} for y {:?} (want [{b}, {c}])", v.shape(), y.shape())));
    }
    expect_dtype(OP, "y", &y.as_view(), DType::F32)?;
    expect_dtype(OP, "v", &v, DType::F32)?;
    if y.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::add_batch_bias(y.host_f32_mut()?, v.host_f32()?, n, c);
            Ok(())
        }
        _ => {
            let p = PwBiasParams {
                y: y.addr(),
                v: v.addr(),
                rows: u32_param(OP, "rows", b * n)?,
                cols: u32_param(OP, "cols", c)?,
                n: n as u32,
                pad: 0,
            };
            launch_1d(OP, dev, "pw_add_batch_bias", y.len(), &p)
        }
    }
}

/// `y += scale·x` elementwise (the product rounded to f32, then the add). Shapes: the same.
/// Dtypes: `y` f32; `x` f32 or the compute dtype.
pub fn add_scaled(mut y: ViewMut<'_>, x: View<'_>, scale: f32) -> Result<()> {
    const OP: &str = "add_scaled";
    let dev = same_device(OP, y.device(), &[x.device()])?;
    if x.shape() != y.shape() {
        return Err(Error::shape(OP, format!("x {:?} vs y {:?}", x.shape(), y.shape())));
    }
    expect_dtype(OP, "y", &y.as_view(), DType::F32)?;
    let x_f32 = f32_flag(OP, "x", &x, dev)?;
    if y.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::add_scaled(y.host_f32_mut()?, x.host_f32()?, scale);
            Ok(())
        }
        _ => {
            let cols = *y.shape().last().unwrap_or(&1);
            let p = PwScaledParams {
                y: y.addr(),
                x: x.addr(),
                rows: u32_param(OP, "rows", y.len() / cols)?,
                cols: u32_param(OP, "cols", cols)?,
                scale,
                x_f32,
            };
            launch_1d(OP, dev, "pw_add_scaled", y.len(), &p)
        }
    }
}

/// Writes `src` into columns `offset..offset + C_src` of `dst` (a channel concatenation):
/// `dst[b, t, offset + c] = src[b, t', c]` with `t' = t`, or `t' = 0` when `src` has one row per
/// batch (a broadcast over time). Shapes: `src` `[B, N, C_src]` or `[B, 1, C_src]`, `dst`
/// `[B, N, C_dst]` with `offset + C_src ≤ C_dst`. Dtypes: each f32 or the compute dtype (an
/// f32 → bf16 copy rounds to nearest even; every other copy is exact).
pub fn write_cols(src: View<'_>, mut dst: ViewMut<'_>, offset: usize) -> Result<()> {
    const OP: &str = "write_cols";
    let dev = same_device(OP, dst.device(), &[src.device()])?;
    let (b, n, cd) = dims3(OP, "dst", dst.shape())?;
    let (sb, sn, cs) = dims3(OP, "src", src.shape())?;
    if sb != b || (sn != n && sn != 1) {
        return Err(Error::shape(OP, format!("src {:?} is neither [{b}, {n}, C] nor [{b}, 1, C]", src.shape())));
    }
    if offset.checked_add(cs).is_none_or(|end| end > cd) {
        return Err(Error::shape(OP, format!("columns {offset}..{} of dst {:?}", offset.saturating_add(cs), dst.shape())));
    }
    let src_f32 = f32_flag(OP, "src", &src, dev)?;
    let dst_f32 = f32_flag(OP, "dst", &dst.as_view(), dev)?;
    if b * n * cs == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::write_cols(src.host_f32()?, dst.host_f32_mut()?, n, sn, cs, cd, offset);
            Ok(())
        }
        _ => {
            let p = PwColsParams {
                src: src.addr(),
                dst: dst.addr(),
                rows: u32_param(OP, "rows", b * n)?,
                n: n as u32,
                src_n: sn as u32,
                cs: cs as u32,
                cd: u32_param(OP, "C_dst", cd)?,
                offset: offset as u32,
                src_f32,
                dst_f32,
            };
            launch_1d(OP, dev, "pw_write_cols", b * n * cs, &p)
        }
    }
}

/// One Euler step of the flow-matching ODE fused with the classifier-free-guidance combine
/// (flow_matching.py:139-141): `x[b] += dt·((1 + cfg)·v[b] − cfg·v[B + b])`, then, with `est_in`,
/// the new `x[b]` written to columns `0..C` of rows `b` and `B + b` of the next estimator input.
/// In f32 as torch computes it: `1 + cfg` rounded first, each product rounded before the
/// subtraction / add (no fused multiply-adds).
///
/// Shapes: `x` `[B, N, C]` f32; `v` `[2B, N, C]` f32 (the estimator output, conditional rows first);
/// `est_in` `[2B, N, C_in]` with `C ≤ C_in`, f32 or the compute dtype.
pub fn cfm_euler_cfg(mut x: ViewMut<'_>, v: View<'_>, est_in: Option<ViewMut<'_>>, dt: f32, cfg: f32) -> Result<()> {
    const OP: &str = "cfm_euler_cfg";
    let mut devs = vec![v.device()];
    devs.extend(est_in.iter().map(|e| e.device()));
    let dev = same_device(OP, x.device(), &devs)?;
    let (b, n, c) = dims3(OP, "x", x.shape())?;
    if v.shape() != [2 * b, n, c] {
        return Err(Error::shape(OP, format!("v {:?} for x {:?} (want [{}, {n}, {c}])", v.shape(), x.shape(), 2 * b)));
    }
    let mut c_in = 0;
    let mut est_f32 = 0;
    if let Some(e) = &est_in {
        let (eb, en, ec) = dims3(OP, "est_in", e.shape())?;
        if eb != 2 * b || en != n || ec < c {
            return Err(Error::shape(OP, format!("est_in {:?} for x {:?} (want [{}, {n}, ≥ {c}])", e.shape(), x.shape(), 2 * b)));
        }
        c_in = ec;
        est_f32 = f32_flag(OP, "est_in", &e.as_view(), dev)?;
    }
    expect_dtype(OP, "x", &x.as_view(), DType::F32)?;
    expect_dtype(OP, "v", &v, DType::F32)?;
    if x.is_empty() {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let mut est_in = est_in;
            let est = match &mut est_in {
                Some(e) => Some((e.host_f32_mut()?, c_in)),
                None => None,
            };
            cpu::cfm_euler_cfg(x.host_f32_mut()?, v.host_f32()?, est, c, dt, cfg);
            Ok(())
        }
        _ => {
            let p = PwEulerParams {
                x: x.addr(),
                v: v.addr(),
                est: est_in.as_ref().map_or(0, |e| e.addr()),
                rows: u32_param(OP, "rows", b * n)?,
                cols: u32_param(OP, "cols", c)?,
                c_in: u32_param(OP, "C_in", c_in)?,
                est_f32,
                dt,
                cfg1: 1.0 + cfg,
                cfg,
                pad: 0,
            };
            launch_1d(OP, dev, "pw_cfm_euler_cfg", x.len(), &p)
        }
    }
}
