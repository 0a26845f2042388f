use crate::device::Backend;
use crate::error::{Error, Result};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, Tensor, View, ViewMut, cpu};

/// A linear layer, `out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])` (PyTorch weight layout).
///
/// Cpu: f32 (matrixmultiply). Cuda: cuBLAS with bf16 inputs and f32 accumulation. Emu: the same
/// contract computed on the CPU (the stand-in for cuBLAS). The output is either the compute dtype or
/// f32 (logits that feed the sampler): on Cuda/Emu an f32 output keeps the f32 accumulator unrounded.
/// Shapes: `x` `[m, k]` (any rank; the last dim is k), `w` `[n, k]`, `bias` `[n]`, `out` `[m, n]`.
/// The weight is in [`crate::Device::weight_dtype`] (bf16 on `Device::cpu_bf16_weights`).
///
/// A precise variant on every backend: `x`, `w`, `bias` and `out` all f32 (on Cuda, cuBLAS in f32
/// without TF32), for the few small layers whose outputs are integrated over time (HiFT's F0).
pub fn linear(x: View<'_>, w: View<'_>, bias: Option<View<'_>>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "linear";
    let mut devs = vec![w.device(), out.device()];
    if let Some(b) = &bias {
        devs.push(b.device());
    }
    let dev = same_device(OP, x.device(), &devs)?;
    let (&k, lead) = x.shape().split_last().unwrap_or((&0, &[]));
    let m: usize = lead.iter().product();
    let n = w.rows();
    if w.shape().len() != 2 || w.row_len() != k {
        return Err(Error::shape(OP, format!("weight {:?} for inputs of width {k}", w.shape())));
    }
    let out_n = *out.shape().last().unwrap_or(&0);
    if out_n != n || out.len() != m * n {
        return Err(Error::shape(OP, format!("out {:?} for x {:?} and weight {:?}", out.shape(), x.shape(), w.shape())));
    }
    if bias.as_ref().is_some_and(|b| b.len() != n) {
        return Err(Error::shape(OP, format!("bias of {} for {n} outputs", bias.map_or(0, |b| b.len()))));
    }
    let act = dev.compute_dtype();
    let precise = w.dtype() == DType::F32 && x.dtype() == DType::F32 && !(act == DType::F32 && dev.weight_dtype() == DType::F32);
    let (x_dtype, w_dtype, b_dtype) = if precise { (DType::F32, DType::F32, DType::F32) } else { (act, dev.weight_dtype(), act) };
    expect_dtype(OP, "x", &x, x_dtype)?;
    expect_dtype(OP, "weight", &w, w_dtype)?;
    if let Some(b) = &bias {
        expect_dtype(OP, "bias", b, b_dtype)?;
    }
    let out_f32 = out.dtype() == DType::F32;
    if !out_f32 {
        if precise {
            return Err(Error::invalid(OP, "a precise (f32) GEMM writes an f32 output"));
        }
        expect_dtype(OP, "out", &out.as_view(), act)?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if let Backend::Cpu = &*dev.inner {
        let b = bias.map(|b| b.host_f32()).transpose()?;
        cpu_linear(x.host_f32()?, &w, b, out.host_f32_mut()?, m, n, k)?;
        return Ok(());
    }
    // Kernel backends: the bias is the GEMM's C operand (beta = 1), so it is added to the f32
    // accumulator before the single rounding of the output.
    if let Some(b) = &bias {
        super::elementwise::fill_rows(&out, b, out_f32, precise)?;
    }
    let g = crate::backend::Gemm {
        m,
        n,
        k,
        x: x.addr(),
        w: w.addr(),
        out: out.addr(),
        out_f32,
        accumulate: bias.is_some(),
        f32_inputs: precise,
    };
    crate::launch::gemm(dev, &g)
}

/// The Cpu backend's `out[m, n] = x[m, k] · w[n, k]ᵀ` for a checked weight view of either weight
/// dtype: the one place that picks the Cpu GEMM/GEMV for a weight (fused ops call it too).
///
/// `bias` `[n]` (if any) is added to every row: at the store by the panel GEMM of a weight packed
/// with [`pack_gemm_weight`], after the product otherwise.
pub(crate) fn cpu_linear(
    x: &[f32],
    w: &View<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    if w.is_cpu_gemm_bf16_packed() {
        cpu::gemm_bf16_panels(x, w.gemm_bf16_panels()?, bias, out, m, n, k);
        return Ok(());
    }
    if w.is_cpu_gemm_packed() {
        cpu::gemm_panels(x, w.gemm_panels()?, bias, out, m, n, k);
        return Ok(());
    }
    cpu_product(x, w, out, m, n, k)?;
    if let Some(b) = bias {
        cpu::add_bias(&mut out[..m * n], b);
    }
    Ok(())
}

/// `out = x · wᵀ` for a GEMV-packed or row-major weight (no bias).
fn cpu_product(x: &[f32], w: &View<'_>, out: &mut [f32], m: usize, n: usize, k: usize) -> Result<()> {
    if w.is_cpu_gemv_packed() {
        match w.dtype() {
            DType::BF16 => cpu::gemv_packed(x, w.packed_host_slice::<half::bf16>()?, out, m, n, k),
            _ => cpu::gemv_packed(x, w.packed_host_slice::<f32>()?, out, m, n, k),
        }
        return Ok(());
    }
    match w.dtype() {
        DType::BF16 => cpu::linear_bf16_weights(x, w.host_bf16()?, out, m, n, k),
        _ => cpu::linear(x, w.host_f32()?, out, m, n, k),
    }
    Ok(())
}

/// Prepares a linear layer's weight `[n, k]` (f32 or bf16, as loaded) for [`linear`] on its
/// device. On Cpu the rows are regrouped for the decode GEMV (`cpu::pack_gemv`: every weight byte
/// streamed once, sequentially, at memory bandwidth; measured 20 GB/s against 11 GB/s row-major on
/// a 2-core AVX2 machine) and every row count takes that GEMV. On Cuda and Emu the weight is
/// returned as it is (cuBLAS and the kernels read row-major weights).
///
/// The packed tensor keeps its logical shape `[n, k]` but is readable only by [`linear`] (and
/// `to_f32_vec`, which unpacks it): row views, reshapes, copies in and host slices are errors.
/// Use it for weights that decode steps stream (T3's layers); weights that meet many rows at once
/// (S3Gen's convolutions) are better served by the row-major packed GEMM.
pub fn pack_linear_weight(w: Tensor) -> Result<Tensor> {
    match &*w.device().inner {
        Backend::Cpu => w.packed_for_cpu_gemv(),
        _ => Ok(w),
    }
}

/// Prepares a linear layer's weight `[n, k]` (f32 or bf16, as loaded) for [`linear`] over many rows
/// at once (S3Gen's layers: hundreds to thousands of frames per call). On Cpu it becomes f32 panels
/// of 16 output columns, packed once here instead of on every call (`cpu::gemm_panels`: measured
/// 44–45 GFLOP/s on one core of a 2-core AVX2 machine for S3Gen's shapes, against 38–41 for
/// matrixmultiply's sgemm, which packs both operands per call), and the bias is added at the
/// GEMM's store. A bf16 weight is widened exactly (twice the bytes of the bf16 tensor), except on
/// the `avx512bf16` path on a CPU whose `vdpbf16ps` outpaces its f32 FMA ([`cpu::isa::bf16_dot_pays`]:
/// on Sapphire Rapids it does not), where it stays bf16 in panels with the pairs of `k`
/// interleaved and the GEMM rounds `x` to bf16 and sums with `vdpbf16ps` (`cpu::gemm_bf16_panels`:
/// within bf16 tolerance of the f32 GEMM, not equal to it). Few rows
/// (decode steps) are slower this way than on [`pack_linear_weight`]'s GEMV. On Cuda and Emu the
/// weight is returned as it is. The packed tensor is readable only by [`linear`] and `to_f32_vec`.
pub fn pack_gemm_weight(w: Tensor) -> Result<Tensor> {
    match &*w.device().inner {
        Backend::Cpu => w.packed_for_cpu_gemm(),
        _ => Ok(w),
    }
}
