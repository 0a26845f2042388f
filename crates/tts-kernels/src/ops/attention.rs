//! Attention (`kernels/attention.cu`): over a static KV cache (T3's decode step and causal
//! prefill) and over contiguous sequences (the T3 Perceiver, S3Gen's transformer blocks).
//! [`rope_attention_decode`] fuses [`super::rope_kv_write`] (`ops/rope.rs`) and `attention_cached`
//! into one launch for decode steps.
//!
//! KV caches are `[n_slots, heads, max_len, head_dim]` tensors (one slot per sequence). Per-step
//! values (positions, slots, lengths) are device tensors and the launch configurations depend only
//! on shapes, so a captured decode step replays with new values.
use bytemuck::{Pod, Zeroable};

use crate::device::{Backend, BackendKind, Device};
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Most warps per block of `attention_cached_d*_bf16`; mirrors ATTN_MAX_WARPS in attention.cu.
pub(crate) const ATTN_MAX_WARPS: u32 = 16;
/// Threads per block of `attention_cached_combine_bf16`; mirrors ATTN_COMBINE_BLOCK.
pub(crate) const ATTN_COMBINE_BLOCK: u32 = 256;
/// Threads per block of both dense attention kernels; mirrors ATTN_DENSE_BLOCK.
pub(crate) const ATTN_DENSE_BLOCK: u32 = 128;
/// Queries per block of `attention_dense_bf16` (one warp each) and of `attention_dense_d64_bf16`.
const ATTN_DENSE_WARPS: u32 = 4;
const ATTN_DQ: u32 = 64;
/// Largest head dim of the attention ops.
pub(crate) const ATTN_MAX_HEAD_DIM: usize = 256;

/// Mirrors `AttentionCachedParams` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AttentionCachedParams {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub slots: u64,
    pub lens: u64,
    pub out: u64,
    pub partial: u64,
    pub rows: u32,
    pub heads: u32,
    pub max_len: u32,
    pub n_slots: u32,
    pub n_splits: u32,
    pub scale: f32,
}
const _: () = assert!(std::mem::size_of::<AttentionCachedParams>() == 80);

/// Mirrors `RopeAttentionParams` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct RopeAttentionParams {
    pub qkv: u64,
    pub positions: u64,
    pub slots: u64,
    pub lens: u64,
    pub inv_freq: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub out: u64,
    pub partial: u64,
    pub rows: u32,
    pub heads: u32,
    pub max_len: u32,
    pub n_slots: u32,
    pub n_splits: u32,
    pub scale: f32,
}
const _: () = assert!(std::mem::size_of::<RopeAttentionParams>() == 96);

/// Mirrors `AttentionCombineParams` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AttentionCombineParams {
    pub partial: u64,
    pub slots: u64,
    pub lens: u64,
    pub out: u64,
    pub rows: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub n_splits: u32,
    pub max_len: u32,
    pub n_slots: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionCombineParams>() == 56);

/// Mirrors `AttentionDenseParams` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AttentionDenseParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub kv_lens: u64,
    pub out: u64,
    pub batch: u32,
    pub lq: u32,
    pub lk: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub causal: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionDenseParams>() == 72);

/// The dtype of a pair of KV caches on `dev`: on Cpu f32 or bf16, the same for both (the `cpu`
/// backend keeps f32 caches, `cpu-bf16` bf16 ones: [`crate::Device::kv_dtype`]); on Cuda and Emu the
/// compute dtype (bf16).
pub(super) fn kv_cache_dtype(op: &'static str, dev: &Device, k: &View<'_>, v: &View<'_>) -> Result<DType> {
    if dev.kind() != BackendKind::Cpu {
        let act = dev.compute_dtype();
        expect_dtype(op, "k_cache", k, act)?;
        expect_dtype(op, "v_cache", v, act)?;
        return Ok(act);
    }
    if !matches!(k.dtype(), DType::F32 | DType::BF16) {
        return Err(Error::DType { op, what: "k_cache", got: k.dtype(), expected: "f32 or bf16".into() });
    }
    expect_dtype(op, "v_cache", v, k.dtype())?;
    Ok(k.dtype())
}

/// `(n_slots, heads, max_len, head_dim)` of a KV-cache pair.
pub(super) fn cache_dims(op: &'static str, k: &View<'_>, v: &View<'_>) -> Result<(usize, usize, usize, usize)> {
    let s = k.shape();
    if s.len() != 4 || s.contains(&0) {
        return Err(Error::shape(op, format!("k_cache {s:?} is not a non-empty [n_slots, heads, max_len, head_dim]")));
    }
    if v.shape() != s {
        return Err(Error::shape(op, format!("v_cache {:?} vs k_cache {s:?}", v.shape())));
    }
    Ok((s[0], s[1], s[2], s[3]))
}

pub(super) fn check_i32(op: &'static str, what: &'static str, v: &View<'_>, rows: usize) -> Result<()> {
    if v.len() != rows {
        return Err(Error::shape(op, format!("{what} has {} values for {rows} rows", v.len())));
    }
    expect_dtype(op, what, v, DType::I32)
}

/// The kernels load cache rows and queries with 16-byte vector accesses.
fn check_aligned(op: &'static str, views: &[(&'static str, u64)]) -> Result<()> {
    for &(what, addr) in views {
        if addr % 16 != 0 {
            return Err(Error::invalid(
                op,
                format!("{what} does not start at a 16-byte aligned address (a view at an odd offset)"),
            ));
        }
    }
    Ok(())
}

/// The `attention_cached_d*_bf16` kernel of a head dim, or an error naming the supported ones.
fn cached_kernel(op: &'static str, d: usize) -> Result<&'static str> {
    Ok(match d {
        32 => "attention_cached_d32_bf16",
        64 => "attention_cached_d64_bf16",
        96 => "attention_cached_d96_bf16",
        128 => "attention_cached_d128_bf16",
        160 => "attention_cached_d160_bf16",
        192 => "attention_cached_d192_bf16",
        224 => "attention_cached_d224_bf16",
        256 => "attention_cached_d256_bf16",
        _ => return Err(Error::invalid(op, format!("head_dim {d} is not supported (multiples of 32 up to 256)"))),
    })
}

/// Warps per block of `attention_cached_d*_bf16` for `blocks` blocks: about 2048 warps in total (enough
/// to fill a large GPU), at most [`ATTN_MAX_WARPS`], and no more than `max_len / 64` (each warp
/// then has at least 64 positions of the longest context). Depends on shapes only.
fn cached_warps(blocks: usize, max_len: usize) -> u32 {
    let want = (2048 / blocks.max(1)).clamp(1, ATTN_MAX_WARPS as usize);
    want.min(max_len.div_ceil(64)).max(1) as u32
}

/// A suggested number of key slices for [`attention_cached_split`]: 1 (no split) when `rows · heads`
/// blocks already fill a GPU, else enough slices for about 512 blocks, each slice at least 256
/// positions of `max_len`, at most 32.
pub fn attention_cached_splits(rows: usize, heads: usize, max_len: usize) -> usize {
    let blocks = (rows * heads).max(1);
    if blocks >= 256 {
        return 1;
    }
    512usize.div_ceil(blocks).min(max_len.div_ceil(256)).clamp(1, 32)
}

/// Most key slices of [`rope_attention_decode_split`] that [`decode_attention_splits`] picks.
pub const DECODE_MAX_SPLITS: usize = 32;

/// Key slices for a decode step's fused attention ([`rope_attention_decode_split`]) of `rows` rows ×
/// `heads` heads on a device with `multiprocessors` streaming multiprocessors
/// ([`Device::multiprocessor_count`]): 1 (one block per (row, head), no split) when `rows · heads`
/// blocks reach the SM count or the device has none (Cpu); else enough slices for about two blocks
/// per SM, `ceil(2 · SMs / (rows · heads))`, between 2 and [`DECODE_MAX_SPLITS`]. Depends on shapes
/// only (a captured step keeps its launch configuration). The factor 2 is arithmetic, not measured
/// on a GPU.
pub fn decode_attention_splits(rows: usize, heads: usize, multiprocessors: Option<usize>) -> usize {
    let blocks = rows * heads;
    match multiprocessors {
        Some(sms) if blocks > 0 && blocks < sms => (2 * sms).div_ceil(blocks).clamp(2, DECODE_MAX_SPLITS),
        _ => 1,
    }
}

struct CachedArgs {
    dev: Device,
    rows: usize,
    heads: usize,
    max_len: usize,
    n_slots: usize,
    d: usize,
}

#[allow(clippy::too_many_arguments)]
fn check_cached(
    op: &'static str,
    q: &View<'_>,
    k_cache: &View<'_>,
    v_cache: &View<'_>,
    slots: &View<'_>,
    lens: &View<'_>,
    out: &View<'_>,
    scale: f32,
    extra: &[&Device],
) -> Result<CachedArgs> {
    let mut devs = vec![k_cache.device(), v_cache.device(), slots.device(), lens.device(), out.device()];
    devs.extend_from_slice(extra);
    let dev = same_device(op, q.device(), &devs)?.clone();
    let (n_slots, heads, max_len, d) = cache_dims(op, k_cache, v_cache)?;
    cached_kernel(op, d)?;
    let rows = q.rows();
    if q.row_len() != heads * d {
        return Err(Error::shape(op, format!("q {:?} for {heads} heads × {d}", q.shape())));
    }
    if out.rows() != rows || out.row_len() != heads * d {
        return Err(Error::shape(op, format!("out {:?} vs q {:?}", out.shape(), q.shape())));
    }
    check_i32(op, "slots", slots, rows)?;
    check_i32(op, "lens", lens, rows)?;
    if !scale.is_finite() {
        return Err(Error::invalid(op, format!("scale = {scale}")));
    }
    let act = dev.compute_dtype();
    expect_dtype(op, "q", q, act)?;
    kv_cache_dtype(op, &dev, k_cache, v_cache)?;
    expect_dtype(op, "out", out, act)?;
    Ok(CachedArgs { dev, rows, heads, max_len, n_slots, d })
}

/// [`cpu::attention_cached`] over the caches' own element (f32 or bf16, as [`kv_cache_dtype`]
/// checked): the outer error is a view's, the inner one the first bad row.
#[allow(clippy::too_many_arguments)]
fn cpu_attention_cached(
    q: &[f32],
    k_cache: &View<'_>,
    v_cache: &View<'_>,
    slots: &[i32],
    lens: &[i32],
    out: &mut [f32],
    heads: usize,
    d: usize,
    max_len: usize,
    scale: f32,
) -> Result<std::result::Result<(), cpu::BadRow>> {
    Ok(match k_cache.dtype() {
        DType::BF16 => {
            cpu::attention_cached(q, k_cache.host_bf16()?, v_cache.host_bf16()?, slots, lens, out, heads, d, max_len, scale)
        }
        _ => cpu::attention_cached(q, k_cache.host_f32()?, v_cache.host_f32()?, slots, lens, out, heads, d, max_len, scale),
    })
}

/// [`cpu::rope_kv_write`] into the caches' own element (f32 or bf16, as [`kv_cache_dtype`]
/// checked): the outer error is a view's, the inner one the first bad row.
#[allow(clippy::too_many_arguments)]
pub(super) fn cpu_rope_kv_write(
    qkv: &[f32],
    positions: &[i32],
    slots: &[i32],
    inv_freq: &[f32],
    q_out: &mut [f32],
    k_cache: &mut ViewMut<'_>,
    v_cache: &mut ViewMut<'_>,
    heads: usize,
    max_len: usize,
) -> Result<std::result::Result<(), cpu::BadRow>> {
    Ok(match k_cache.dtype() {
        DType::BF16 => {
            let (k, v) = (k_cache.host_bf16_mut()?, v_cache.host_bf16_mut()?);
            cpu::rope_kv_write(qkv, positions, slots, inv_freq, q_out, k, v, heads, max_len)
        }
        _ => {
            let (k, v) = (k_cache.host_f32_mut()?, v_cache.host_f32_mut()?);
            cpu::rope_kv_write(qkv, positions, slots, inv_freq, q_out, k, v, heads, max_len)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn cpu_cached(
    op: &'static str,
    a: &CachedArgs,
    q: &View<'_>,
    k_cache: &View<'_>,
    v_cache: &View<'_>,
    slots: &View<'_>,
    lens: &View<'_>,
    out: &mut ViewMut<'_>,
    scale: f32,
) -> Result<()> {
    let (q, slots, lens, out) = (q.host_f32()?, slots.host_i32()?, lens.host_i32()?, out.host_f32_mut()?);
    cpu_attention_cached(q, k_cache, v_cache, slots, lens, out, a.heads, a.d, a.max_len, scale)?.map_err(|(r, what, v)| {
        let bound = match what {
            cpu::RowValue::Slot => format!("0..{}", a.n_slots),
            _ => format!("0..={}", a.max_len),
        };
        Error::invalid(op, format!("row {r}: {what} {v} is outside {bound}"))
    })
}

#[allow(clippy::too_many_arguments)]
fn launch_cached(
    op: &'static str,
    a: &CachedArgs,
    q: &View<'_>,
    k_cache: &View<'_>,
    v_cache: &View<'_>,
    slots: &View<'_>,
    lens: &View<'_>,
    out: &ViewMut<'_>,
    partial: Option<(u64, usize)>,
    scale: f32,
) -> Result<()> {
    check_aligned(op, &[("q", q.addr()), ("k_cache", k_cache.addr()), ("v_cache", v_cache.addr())])?;
    let n_splits = partial.map_or(1, |(_, s)| s);
    let p = AttentionCachedParams {
        q: q.addr(),
        k_cache: k_cache.addr(),
        v_cache: v_cache.addr(),
        slots: slots.addr(),
        lens: lens.addr(),
        out: out.addr(),
        partial: partial.map_or(0, |(addr, _)| addr),
        rows: u32_param(op, "rows", a.rows)?,
        heads: u32_param(op, "heads", a.heads)?,
        max_len: u32_param(op, "max_len", a.max_len)?.min(i32::MAX as u32),
        n_slots: u32_param(op, "n_slots", a.n_slots)?.min(i32::MAX as u32),
        n_splits: u32_param(op, "n_splits", n_splits)?,
        scale,
    };
    let nwarps = cached_warps(a.rows * a.heads * n_splits, a.max_len);
    let smem = 4 * nwarps * (a.d as u32 + 2);
    let dims = LaunchDims::new([p.rows, p.heads, p.n_splits], [32 * nwarps, 1, 1], smem);
    launch(&a.dev, cached_kernel(op, a.d)?, dims, &p)?;
    if let Some((addr, _)) = partial {
        let c = AttentionCombineParams {
            partial: addr,
            slots: p.slots,
            lens: p.lens,
            out: p.out,
            rows: p.rows,
            heads: p.heads,
            head_dim: a.d as u32,
            n_splits: p.n_splits,
            max_len: p.max_len,
            n_slots: p.n_slots,
        };
        let dims = LaunchDims::new([p.rows, p.heads, 1], [ATTN_COMBINE_BLOCK, 1, 1], 0);
        launch(&a.dev, "attention_cached_combine_bf16", dims, &c)?;
    }
    Ok(())
}

/// Attention of each row's query over its KV-cache slot (T3's decode step, and its causal prefill
/// after [`rope_kv_write`] filled the cache):
/// `out[r, h] = softmax(scale · q[r, h] · K[s, h, 0..len]ᵀ) · V[s, h, 0..len]` with `s = slots[r]`,
/// `len = lens[r]`. Only positions `< len` are read. `len == 0` marks an inactive row (a finished
/// request): its output is zeros and its slot is not looked at. For a causal prefill, the row of
/// prompt position p has `len = p + 1`.
///
/// Shapes: `q`, `out` `[rows, heads·head_dim]`; `k_cache`, `v_cache` `[n_slots, heads, max_len,
/// head_dim]` with head_dim a multiple of 32 up to 256; `slots`, `lens` `[rows]` i32. Dtypes: Cpu
/// f32, the caches f32 or bf16 (both alike, [`Device::kv_dtype`]; bf16 widened exactly as read);
/// Cuda/Emu bf16 (f32 softmax and accumulation inside). `len` outside `0..=max_len` or (for
/// `len > 0`) a slot outside `0..n_slots` is an error on Cpu and a NaN row on Cuda/Emu.
///
/// One kernel launch, grid `(rows, heads)`; blocks get wider (up to 16 warps splitting the
/// positions) when `rows · heads` is small. For few rows and long contexts see
/// [`attention_cached_split`].
#[allow(clippy::too_many_arguments)]
pub fn attention_cached(
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    slots: View<'_>,
    lens: View<'_>,
    mut out: ViewMut<'_>,
    scale: f32,
) -> Result<()> {
    const OP: &str = "attention_cached";
    let a = check_cached(OP, &q, &k_cache, &v_cache, &slots, &lens, &out.as_view(), scale, &[])?;
    if a.rows == 0 {
        return Ok(());
    }
    match &*a.dev.inner {
        Backend::Cpu => cpu_cached(OP, &a, &q, &k_cache, &v_cache, &slots, &lens, &mut out, scale),
        _ => launch_cached(OP, &a, &q, &k_cache, &v_cache, &slots, &lens, &out, None, scale),
    }
}

/// [`attention_cached`] with the keys of each (row, head) split into `n_splits` slices processed by
/// separate blocks, merged by a second kernel (flash-decoding): for few rows and long contexts,
/// where `rows · heads` blocks alone would leave most of a GPU idle. The slices are cut on the device
/// from each row's live length, so the launch stays capture-safe.
///
/// `scratch` is an f32 tensor `[rows, heads, n_splits, head_dim + 2]` (`n_splits` from its shape;
/// see [`attention_cached_splits`]) that the kernels overwrite; preallocate it with the cache. On
/// Cpu the result is the same op as [`attention_cached`] and `scratch` is not touched.
#[allow(clippy::too_many_arguments)]
pub fn attention_cached_split(
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    slots: View<'_>,
    lens: View<'_>,
    mut out: ViewMut<'_>,
    scratch: ViewMut<'_>,
    scale: f32,
) -> Result<()> {
    const OP: &str = "attention_cached_split";
    let a = check_cached(OP, &q, &k_cache, &v_cache, &slots, &lens, &out.as_view(), scale, &[scratch.device()])?;
    let s = scratch.shape();
    if s.len() != 4 || s[0] != a.rows || s[1] != a.heads || s[2] == 0 || s[3] != a.d + 2 {
        return Err(Error::shape(
            OP,
            format!("scratch {s:?} is not [rows {}, heads {}, n_splits >= 1, head_dim + 2 = {}]", a.rows, a.heads, a.d + 2),
        ));
    }
    let n_splits = s[2];
    expect_dtype(OP, "scratch", &scratch.as_view(), DType::F32)?;
    if a.rows == 0 {
        return Ok(());
    }
    match &*a.dev.inner {
        Backend::Cpu => cpu_cached(OP, &a, &q, &k_cache, &v_cache, &slots, &lens, &mut out, scale),
        _ => {
            let partial = (n_splits > 1).then(|| (scratch.addr(), n_splits));
            launch_cached(OP, &a, &q, &k_cache, &v_cache, &slots, &lens, &out, partial, scale)
        }
    }
}

/// The `rope_attention_decode_d*_bf16` kernel of a head dim (the head dims of [`attention_cached`]).
fn rope_attention_kernel(op: &'static str, d: usize) -> Result<&'static str> {
    Ok(match d {
        32 => "rope_attention_decode_d32_bf16",
        64 => "rope_attention_decode_d64_bf16",
        96 => "rope_attention_decode_d96_bf16",
        128 => "rope_attention_decode_d128_bf16",
        160 => "rope_attention_decode_d160_bf16",
        192 => "rope_attention_decode_d192_bf16",
        224 => "rope_attention_decode_d224_bf16",
        256 => "rope_attention_decode_d256_bf16",
        _ => return Err(Error::invalid(op, format!("head_dim {d} is not supported (multiples of 32 up to 256)"))),
    })
}

/// A decode step's [`rope_kv_write`] and [`attention_cached`] fused: for each row r with
/// `p = positions[r]`, `s = slots[r]`, `len = lens[r] > 0`, RoPE of the row's q and k at p, k and v
/// written into `k_cache[s, h, p]`, `v_cache[s, h, p]`, then
/// `out[r, h] = softmax(scale · rope(q_h, p) · K[s, h, 0..len]ᵀ) · V[s, h, 0..len]`. The rotated q
/// never leaves the kernel. A decode step sets `len = p + 1` for a live row (other lengths are
/// allowed: the row attends over `0..len` of its slot whatever p is).
///
/// Rows with `len == 0` (finished requests) output zeros and write nothing; their position and slot
/// are not looked at. For rows with `len > 0`, `len` outside `1..=max_len`, a position outside
/// `0..max_len` or a slot outside `0..n_slots` is an error on Cpu (checked for every row before
/// anything is written) and, on Cuda/Emu, a NaN output row with nothing written to the caches
/// (the rules of the two unfused ops, applied to live rows only).
///
/// Precondition: no two rows with `len > 0` share a slot (each row writes its slot while the others
/// read theirs). Cpu checks it (an error); on Cuda/Emu the values live on the device and sharing rows
/// race (their outputs are unspecified; memory stays in bounds).
///
/// Shapes and dtypes: those of the two ops: `qkv` `[rows, 3·heads·head_dim]` (`[q | k | v]`);
/// `positions`, `slots`, `lens` `[rows]` i32; `inv_freq` `[head_dim / 2]` f32; caches `[n_slots,
/// heads, max_len, head_dim]` with head_dim a multiple of 32 up to 256; `out` `[rows,
/// heads·head_dim]`; Cpu f32 with f32 or bf16 caches, Cuda/Emu bf16. Cuda/Emu: one launch, grid
/// `(rows, heads)`, the block width of [`attention_cached`]; the rotation and the attention are the
/// device code of the two kernels, so outputs and cache rows equal `rope_kv_write` (on the live
/// rows) followed by `attention_cached` bit for bit on Emu. Cpu: the Cpu ops composed (bit for
/// bit the unfused ops).
/// For few rows × heads see [`rope_attention_decode_split`].
#[allow(clippy::too_many_arguments)]
pub fn rope_attention_decode(
    qkv: View<'_>,
    positions: View<'_>,
    slots: View<'_>,
    inv_freq: View<'_>,
    k_cache: ViewMut<'_>,
    v_cache: ViewMut<'_>,
    lens: View<'_>,
    out: ViewMut<'_>,
    scale: f32,
) -> Result<()> {
    rope_attention_decode_impl("rope_attention_decode", qkv, positions, slots, inv_freq, k_cache, v_cache, lens, out, None, scale)
}

/// [`rope_attention_decode`] with the keys of each (row, head) cut into `n_splits` slices
/// (flash-decoding), for decode steps whose `rows · heads` blocks would leave most of a GPU idle (see
/// [`decode_attention_splits`]). Same results as [`rope_attention_decode`] up to the summation order
/// of the softmax (bit for bit [`rope_kv_write`] followed by [`attention_cached_split`] with the same
/// scratch shape, on Emu).
///
/// `scratch` is an f32 tensor `[rows, heads, n_splits, head_dim + 2]` (`n_splits >= 1` from its shape)
/// that the kernels overwrite; preallocate it (a captured step must not allocate). Cuda/Emu: with
/// `n_splits == 1` the single launch of [`rope_attention_decode`] (scratch untouched); with more,
/// two launches: `rope_attention_decode_d*_bf16` over grid `(rows, heads, n_splits)`, each block
/// rotating q itself and the block whose slice holds the row's position writing the new cache row,
/// then `attention_cached_combine_bf16`. Cpu: the same op as [`rope_attention_decode`], scratch untouched.
#[allow(clippy::too_many_arguments)]
pub fn rope_attention_decode_split(
    qkv: View<'_>,
    positions: View<'_>,
    slots: View<'_>,
    inv_freq: View<'_>,
    k_cache: ViewMut<'_>,
    v_cache: ViewMut<'_>,
    lens: View<'_>,
    out: ViewMut<'_>,
    scratch: ViewMut<'_>,
    scale: f32,
) -> Result<()> {
    const OP: &str = "rope_attention_decode_split";
    let partial = Some(scratch);
    rope_attention_decode_impl(OP, qkv, positions, slots, inv_freq, k_cache, v_cache, lens, out, partial, scale)
}

#[allow(clippy::too_many_arguments)]
fn rope_attention_decode_impl(
    op: &'static str,
    qkv: View<'_>,
    positions: View<'_>,
    slots: View<'_>,
    inv_freq: View<'_>,
    mut k_cache: ViewMut<'_>,
    mut v_cache: ViewMut<'_>,
    lens: View<'_>,
    mut out: ViewMut<'_>,
    scratch: Option<ViewMut<'_>>,
    scale: f32,
) -> Result<()> {
    let mut devs = vec![
        positions.device(),
        slots.device(),
        inv_freq.device(),
        k_cache.device(),
        v_cache.device(),
        lens.device(),
        out.device(),
    ];
    if let Some(s) = &scratch {
        devs.push(s.device());
    }
    let dev = same_device(op, qkv.device(), &devs)?;
    let (n_slots, heads, max_len, d) = cache_dims(op, &k_cache.as_view(), &v_cache.as_view())?;
    let kernel = rope_attention_kernel(op, d)?;
    let rows = qkv.rows();
    let hd = heads * d;
    if qkv.row_len() != 3 * hd {
        return Err(Error::shape(op, format!("qkv {:?} for 3 × {heads} heads × {d}", qkv.shape())));
    }
    if out.rows() != rows || out.row_len() != hd {
        return Err(Error::shape(op, format!("out {:?} for {rows} rows of {heads} heads × {d}", out.shape())));
    }
    check_i32(op, "positions", &positions, rows)?;
    check_i32(op, "slots", &slots, rows)?;
    check_i32(op, "lens", &lens, rows)?;
    if inv_freq.len() != d / 2 {
        return Err(Error::shape(op, format!("inv_freq has {} values for head_dim {d}", inv_freq.len())));
    }
    expect_dtype(op, "inv_freq", &inv_freq, DType::F32)?;
    if !scale.is_finite() {
        return Err(Error::invalid(op, format!("scale = {scale}")));
    }
    let act = dev.compute_dtype();
    expect_dtype(op, "qkv", &qkv, act)?;
    kv_cache_dtype(op, dev, &k_cache.as_view(), &v_cache.as_view())?;
    expect_dtype(op, "out", &out.as_view(), act)?;
    let n_splits = match &scratch {
        None => 1,
        Some(sc) => {
            let s = sc.shape();
            if s.len() != 4 || s[0] != rows || s[1] != heads || s[2] == 0 || s[3] != d + 2 {
                return Err(Error::shape(
                    op,
                    format!("scratch {s:?} is not [rows {rows}, heads {heads}, n_splits >= 1, head_dim + 2 = {}]", d + 2),
                ));
            }
            expect_dtype(op, "scratch", &sc.as_view(), DType::F32)?;
            s[2]
        }
    };
    if rows == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let (pos, sl, ln) = (positions.host_i32()?, slots.host_i32()?, lens.host_i32()?);
            // every row first: nothing is written when one is bad
            let mut live_slots = Vec::new();
            for r in 0..rows {
                let (len, p, s) = (ln[r], pos[r], sl[r]);
                if len == 0 {
                    continue;
                }
                if len < 0 || len as usize > max_len {
                    return Err(Error::invalid(op, format!("row {r}: length {len} is outside 0..={max_len}")));
                }
                if p < 0 || p as usize >= max_len {
                    return Err(Error::invalid(op, format!("row {r}: position {p} is outside 0..{max_len}")));
                }
                if s < 0 || s as usize >= n_slots {
                    return Err(Error::invalid(op, format!("row {r}: slot {s} is outside 0..{n_slots}")));
                }
                live_slots.push((s, r));
            }
            live_slots.sort_unstable();
            if let Some(w) = live_slots.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(Error::invalid(op, format!("rows {} and {} are both live in slot {}", w[0].1, w[1].1, w[0].0)));
            }
            // rope_kv_write on the live rows, then attention_cached over every row (zeros for the others)
            let live: Vec<usize> = (0..rows).filter(|&r| ln[r] != 0).collect();
            let qkv_all = qkv.host_f32()?;
            let lqkv: Vec<f32> = live.iter().flat_map(|&r| &qkv_all[r * 3 * hd..(r + 1) * 3 * hd]).copied().collect();
            let lpos: Vec<i32> = live.iter().map(|&r| pos[r]).collect();
            let lslots: Vec<i32> = live.iter().map(|&r| sl[r]).collect();
            let mut lq = vec![0f32; live.len() * hd];
            let f = inv_freq.host_f32()?;
            cpu_rope_kv_write(&lqkv, &lpos, &lslots, f, &mut lq, &mut k_cache, &mut v_cache, heads, max_len)?
                .map_err(|(r, what, v)| Error::invalid(op, format!("row {}: {what} {v} is invalid", live[r])))?;
            let mut q = vec![0f32; rows * hd];
            for (i, &r) in live.iter().enumerate() {
                q[r * hd..(r + 1) * hd].copy_from_slice(&lq[i * hd..(i + 1) * hd]);
            }
            let (kc, vc) = (k_cache.as_view(), v_cache.as_view());
            cpu_attention_cached(&q, &kc, &vc, sl, ln, out.host_f32_mut()?, heads, d, max_len, scale)?
                .map_err(|(r, what, v)| Error::invalid(op, format!("row {r}: {what} {v} is invalid")))
        }
        _ => {
            check_aligned(op, &[("k_cache", k_cache.addr()), ("v_cache", v_cache.addr())])?;
            let partial = match &scratch {
                Some(sc) if n_splits > 1 => sc.addr(),
                _ => 0,
            };
            let p = RopeAttentionParams {
                qkv: qkv.addr(),
                positions: positions.addr(),
                slots: slots.addr(),
                lens: lens.addr(),
                inv_freq: inv_freq.addr(),
                k_cache: k_cache.addr(),
                v_cache: v_cache.addr(),
                out: out.addr(),
                partial,
                rows: u32_param(op, "rows", rows)?,
                heads: u32_param(op, "heads", heads)?,
                max_len: u32_param(op, "max_len", max_len)?.min(i32::MAX as u32),
                n_slots: u32_param(op, "n_slots", n_slots)?.min(i32::MAX as u32),
                n_splits: u32_param(op, "n_splits", n_splits)?,
                scale,
            };
            // the width attention_cached(_split) takes for these shapes: the same summation order
            let nwarps = cached_warps(rows * heads * n_splits, max_len);
            let smem = 4 * nwarps * (d as u32 + 2);
            launch(dev, kernel, LaunchDims::new([p.rows, p.heads, p.n_splits], [32 * nwarps, 1, 1], smem), &p)?;
            if n_splits > 1 {
                let c = AttentionCombineParams {
                    partial,
                    slots: p.slots,
                    lens: p.lens,
                    out: p.out,
                    rows: p.rows,
                    heads: p.heads,
                    head_dim: d as u32,
                    n_splits: p.n_splits,
                    max_len: p.max_len,
                    n_slots: p.n_slots,
                };
                launch(
                    dev,
                    "attention_cached_combine_bf16",
                    LaunchDims::new([p.rows, p.heads, 1], [ATTN_COMBINE_BLOCK, 1, 1], 0),
                    &c,
                )?;
            }
            Ok(())
        }
    }
}

/// Multi-head attention over contiguous sequences, without a cache: for batch b, query i, head h,
/// `out[b, i, h] = softmax(scale · q[b, i, h] · k[b, j, h]ᵀ over visible j) · v[b, j, h]`, where key j
/// is visible when `j < kv_lens[b]` (every key without `kv_lens`: padding of batched sequences)
/// and, with `causal`, `j <= i`. A query that sees no key (`kv_lens[b] == 0`) gets zeros.
///
/// Shapes: `q`, `out` `[batch, lq, heads·head_dim]`; `k`, `v` `[batch, lk, heads·head_dim]`;
/// `kv_lens` `[batch]` i32; any head_dim up to 256 (head_dim 64 takes a tiled kernel). Dtypes: Cpu
/// f32 (on `cpu-bf16` on the `amx` path the products take bf16 operands: `cpu::attention_dense_amx`);
/// Cuda/Emu bf16. `kv_lens[b]` outside `0..=lk` is an error on Cpu and NaN rows on Cuda/Emu.
#[allow(clippy::too_many_arguments)]
pub fn attention_dense(
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    kv_lens: Option<View<'_>>,
    mut out: ViewMut<'_>,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<()> {
    const OP: &str = "attention_dense";
    let mut devs = vec![k.device(), v.device(), out.device()];
    if let Some(l) = &kv_lens {
        devs.push(l.device());
    }
    let dev = same_device(OP, q.device(), &devs)?;
    let (qs, ks) = (q.shape(), k.shape());
    if qs.len() != 3 || ks.len() != 3 || qs[0] != ks[0] || qs[2] != ks[2] {
        return Err(Error::shape(
            OP,
            format!("q {qs:?} and k {ks:?} are not [batch, len, heads·head_dim] of one batch and width"),
        ));
    }
    if v.shape() != ks {
        return Err(Error::shape(OP, format!("v {:?} vs k {ks:?}", v.shape())));
    }
    if out.shape() != qs {
        return Err(Error::shape(OP, format!("out {:?} vs q {qs:?}", out.shape())));
    }
    let (batch, lq, lk, width) = (qs[0], qs[1], ks[1], qs[2]);
    if heads == 0 || width % heads != 0 || width / heads > ATTN_MAX_HEAD_DIM || width == 0 {
        return Err(Error::shape(OP, format!("width {width} is not heads {heads} × a head_dim in 1..={ATTN_MAX_HEAD_DIM}")));
    }
    let dh = width / heads;
    if let Some(l) = &kv_lens {
        check_i32(OP, "kv_lens", l, batch)?;
    }
    if !scale.is_finite() {
        return Err(Error::invalid(OP, format!("scale = {scale}")));
    }
    let act = dev.compute_dtype();
    expect_dtype(OP, "q", &q, act)?;
    expect_dtype(OP, "k", &k, act)?;
    expect_dtype(OP, "v", &v, act)?;
    expect_dtype(OP, "out", &out.as_view(), act)?;
    if batch == 0 || lq == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let lens = kv_lens.map(|l| l.host_i32()).transpose()?;
            // cpu-bf16 on AMX: bf16 operands, as the kernel backends' attention
            let attend = if dev.weight_dtype() == DType::BF16 && cpu::attention_amx_available() {
                cpu::attention_dense_amx
            } else {
                cpu::attention_dense
            };
            attend(q.host_f32()?, k.host_f32()?, v.host_f32()?, lens, out.host_f32_mut()?, batch, heads, dh, scale, causal)
                .map_err(|(b, l)| Error::invalid(OP, format!("batch {b}: kv_len {l} is outside 0..={lk}")))
        }
        _ => {
            let p = AttentionDenseParams {
                q: q.addr(),
                k: k.addr(),
                v: v.addr(),
                kv_lens: kv_lens.map_or(0, |l| l.addr()),
                out: out.addr(),
                batch: u32_param(OP, "batch", batch)?,
                lq: u32_param(OP, "lq", lq)?,
                lk: u32_param(OP, "lk", lk)?.min(i32::MAX as u32),
                heads: u32_param(OP, "heads", heads)?,
                head_dim: dh as u32,
                scale,
                causal: causal as u32,
                pad: 0,
            };
            let aligned = [p.q, p.k, p.v].iter().all(|a| a % 16 == 0);
            let (kernel, per_block) = if dh == 64 && aligned {
                ("attention_dense_d64_bf16", ATTN_DQ)
            } else {
                ("attention_dense_bf16", ATTN_DENSE_WARPS)
            };
            let grid = [blocks_for(OP, lq, per_block)?, p.heads, p.batch];
            launch(dev, kernel, LaunchDims::new(grid, [ATTN_DENSE_BLOCK, 1, 1], 0), &p)
        }
    }
}

#[cfg(test)]
#[path = "attention_kv_cache_tests.rs"]
mod kv_cache_tests;
