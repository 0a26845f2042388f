//! A linear layer on a [`Device`] for the conditioning models that run on the kernel backends (the
//! S3Tokenizer's encoder, CAMPPlus).
use tts_kernels::{DType, Device, Tensor, View, ops};

use crate::Result;

/// A linear layer on the device: weight `[n, k]` packed for many-row GEMMs, bias in the compute
/// dtype.
pub(crate) struct DeviceLinear {
    /// `[n, k]`, packed.
    pub(crate) w: Tensor,
    /// `[n]`, the compute dtype.
    pub(crate) b: Option<Tensor>,
}

impl DeviceLinear {
    /// From the row-major `[n, k]` weight (`y = x·wᵀ + b`) and an optional `[n]` bias.
    pub(crate) fn new(dev: &Device, w: &[f32], b: Option<&[f32]>, n: usize, k: usize) -> Result<DeviceLinear> {
        Ok(DeviceLinear {
            w: ops::pack_gemm_weight(Tensor::from_f32(dev, dev.weight_dtype(), &[n, k], w)?)?,
            b: b.map(|b| Tensor::from_f32(dev, dev.compute_dtype(), &[n], b)).transpose()?,
        })
    }

    /// A layer for [`ops::linear`]'s precise variant: weight and bias f32 (on Cuda, cuBLAS in f32
    /// without TF32), applied to f32 inputs, for small layers whose rounding would matter (few rows:
    /// the cost is nothing).
    pub(crate) fn precise(dev: &Device, w: &[f32], b: Option<&[f32]>, n: usize, k: usize) -> Result<DeviceLinear> {
        Ok(DeviceLinear {
            w: Tensor::from_f32(dev, DType::F32, &[n, k], w)?,
            b: b.map(|b| Tensor::from_f32(dev, DType::F32, &[n], b)).transpose()?,
        })
    }

    /// `x · wᵀ + b` (`x` `[rows, k]` in the compute dtype, or f32 for a [`Self::precise`] layer) as a new `[rows, n]` tensor in `dtype`
    /// (the compute dtype or f32).
    pub(crate) fn apply(&self, x: View<'_>, dtype: DType) -> Result<Tensor> {
        let mut out = Tensor::uninit(x.device(), dtype, &[x.rows(), self.w.shape()[0]])?;
        ops::linear(x, self.w.view(), self.b.as_ref().map(|b| b.view()), out.view_mut())?;
        Ok(out)
    }
}
