//! RoPE on the q and k parts of fused QKV rows with the KV-cache write (`kernels/rope.cu`), T3's
//! prefill and unfused decode step. The decode step's fused form is
//! [`super::rope_attention_decode`] (`ops/attention.rs`).
use bytemuck::{Pod, Zeroable};

use super::attention::{cache_dims, check_i32, cpu_rope_kv_write, kv_cache_dtype};
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `rope_kv_write_bf16` (one block per row); mirrors ROPE_BLOCK in rope.cu.
pub(crate) const ROPE_BLOCK: u32 = 128;
/// Largest head dim of [`rope_kv_write`] (the kernel's shared (cos, sin) table); ROPE_MAX_HALF · 2.
pub(crate) const ROPE_MAX_HEAD_DIM: usize = 256;

/// Mirrors `RopeKvParams` in kernels/rope.cu (device addresses as u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct RopeKvParams {
    pub qkv: u64,
    pub positions: u64,
    pub slots: u64,
    pub inv_freq: u64,
    pub q_out: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub rows: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub max_len: u32,
    pub n_slots: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<RopeKvParams>() == 80);

/// RoPE on the q and k parts of fused QKV rows, with k and v written into the KV cache: for row r
/// with `p = positions[r]`, `s = slots[r]`, `q_out[r] = rope(q, p)`, `k_cache[s, h, p] = rope(k_h, p)`,
/// `v_cache[s, h, p] = v_h`. Serves the prefill (rows = every prompt token of every sequence) and
/// the decode step (one row per sequence).
///
/// RoPE is HF's `rotate_half` with the angle `p · inv_freq[i]` rounded to f32 (see
/// [`cpu::llama3_inv_freq`] for T3's frequencies).
///
/// Shapes: `qkv` `[rows, 3·heads·head_dim]` laid out `[q | k | v]`; `positions`, `slots` `[rows]` i32;
/// `inv_freq` `[head_dim / 2]` f32; `q_out` `[rows, heads·head_dim]`; `k_cache`, `v_cache`
/// `[n_slots, heads, max_len, head_dim]` (heads and head_dim come from the cache), head_dim even and
/// at most 256. Dtypes: Cpu f32, the caches f32 or bf16 (both alike, [`crate::Device::kv_dtype`]);
/// Cuda/Emu `qkv`, `q_out` and the caches bf16.
/// A position outside `0..max_len` or a slot outside `0..n_slots` is an error on Cpu (nothing is
/// written); on Cuda and Emu that row's `q_out` is NaN and the caches are left alone.
/// The kernels evaluate sin/cos exactly (within 1 ulp of libm) for angles `|p · inv_freq[i]| < 2^26`
/// (any position below 2^26 with T3's frequencies, all <= 1); larger angles give NaN.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv_write(
    qkv: View<'_>,
    positions: View<'_>,
    slots: View<'_>,
    inv_freq: View<'_>,
    mut q_out: ViewMut<'_>,
    mut k_cache: ViewMut<'_>,
    mut v_cache: ViewMut<'_>,
) -> Result<()> {
    const OP: &str = "rope_kv_write";
    let dev = same_device(
        OP,
        qkv.device(),
        &[positions.device(), slots.device(), inv_freq.device(), q_out.device(), k_cache.device(), v_cache.device()],
    )?;
    let (n_slots, heads, max_len, d) = cache_dims(OP, &k_cache.as_view(), &v_cache.as_view())?;
    if d % 2 != 0 || d > ROPE_MAX_HEAD_DIM {
        return Err(Error::invalid(OP, format!("head_dim {d}: RoPE needs an even head_dim of at most {ROPE_MAX_HEAD_DIM}")));
    }
    let rows = qkv.rows();
    let hd = heads * d;
    if qkv.row_len() != 3 * hd {
        return Err(Error::shape(OP, format!("qkv {:?} for 3 × {heads} heads × {d}", qkv.shape())));
    }
    if q_out.rows() != rows || q_out.row_len() != hd {
        return Err(Error::shape(OP, format!("q_out {:?} for {rows} rows of {heads} heads × {d}", q_out.shape())));
    }
    check_i32(OP, "positions", &positions, rows)?;
    check_i32(OP, "slots", &slots, rows)?;
    if inv_freq.len() != d / 2 {
        return Err(Error::shape(OP, format!("inv_freq has {} values for head_dim {d}", inv_freq.len())));
    }
    expect_dtype(OP, "inv_freq", &inv_freq, DType::F32)?;
    let act = dev.compute_dtype();
    expect_dtype(OP, "qkv", &qkv, act)?;
    expect_dtype(OP, "q_out", &q_out.as_view(), act)?;
    kv_cache_dtype(OP, dev, &k_cache.as_view(), &v_cache.as_view())?;
    if rows == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let (qkv, pos, sl, f, q) =
                (qkv.host_f32()?, positions.host_i32()?, slots.host_i32()?, inv_freq.host_f32()?, q_out.host_f32_mut()?);
            cpu_rope_kv_write(qkv, pos, sl, f, q, &mut k_cache, &mut v_cache, heads, max_len)?
        }
        .map_err(|(r, what, v)| {
            let bound = match what {
                cpu::RowValue::Slot => n_slots,
                _ => max_len,
            };
            Error::invalid(OP, format!("row {r}: {what} {v} is outside 0..{bound}"))
        }),
        _ => {
            let p = RopeKvParams {
                qkv: qkv.addr(),
                positions: positions.addr(),
                slots: slots.addr(),
                inv_freq: inv_freq.addr(),
                q_out: q_out.addr(),
                k_cache: k_cache.addr(),
                v_cache: v_cache.addr(),
                rows: u32_param(OP, "rows", rows)?,
                heads: u32_param(OP, "heads", heads)?,
                head_dim: d as u32,
                max_len: u32_param(OP, "max_len", max_len)?.min(i32::MAX as u32),
                n_slots: u32_param(OP, "n_slots", n_slots)?.min(i32::MAX as u32),
                pad: 0,
            };
            launch(dev, "rope_kv_write_bf16", LaunchDims::new([p.rows, 1, 1], [ROPE_BLOCK, 1, 1], 0), &p)
        }
    }
}
