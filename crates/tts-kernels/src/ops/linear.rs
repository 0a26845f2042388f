use crate::device::Backend;
use crate::error::{Error, Result};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{View, ViewMut, cpu};

/// A bias-free linear layer, `out[m, n] = x[m, k] · w[n, k]ᵀ` (PyTorch weight layout).
///
/// Cpu: f32 (matrixmultiply). Cuda: cuBLAS, bf16 in and out with f32 accumulation. Emu: the same
/// bf16-in, f32-accumulate, bf16-out contract computed on the CPU (the stand-in for cuBLAS).
/// Shapes: `x` is `[m, k]` (any rank; the last dim is k), `w` is `[n, k]`, `out` is `[m, n]`.
pub fn linear(x: View<'_>, w: View<'_>, mut out: ViewMut<'_>) -> Result<()> {
    const OP: &str = "linear";
    let dev = same_device(OP, x.device(), &[w.device(), out.device()])?;
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
    let act = dev.compute_dtype();
    expect_dtype(OP, "x", &x, act)?;
    expect_dtype(OP, "weight", &w, act)?;
    expect_dtype(OP, "out", &out.as_view(), act)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            cpu::linear(x.host_f32()?, w.host_f32()?, out.host_f32_mut()?, m, n, k);
            Ok(())
        }
        Backend::Cuda(c) => c.gemm_bf16(m, n, k, x.addr(), w.addr(), out.addr()),
        #[cfg(feature = "emu")]
        Backend::Emu(e) => e.gemm_bf16(m, n, k, x.addr(), w.addr(), out.addr()),
    }
}
