//! A `Linear` whose weight is packed once at load for the project's panel GEMM
//! ([`tts_kernels::cpu::gemm_panels`]: AVX2+FMA register tiles, rows in parallel on rayon's pool,
//! faster than an sgemm that packs both operands on every call). Each output is one chain of
//! multiply-adds over the input, then `+ bias`, as `F.linear`'s `x·Wᵀ + b`.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::cpu;

use crate::Result;

/// `y = x·Wᵀ (+ b)` for `W` `[n, k]`.
pub struct Linear {
    n: usize,
    k: usize,
    panels: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Packs the row-major weight `w` `[n, k]`.
    pub fn new(w: &[f32], bias: Option<Vec<f32>>, n: usize, k: usize) -> Linear {
        let mut panels = vec![0f32; cpu::packed_gemm_len(n, k)];
        cpu::pack_gemm(w, n, k, &mut panels);
        Linear { n, k, panels, bias }
    }

    /// Reads `{prefix}.weight` `[n, k]` and, with `bias`, `{prefix}.bias` `[n]`.
    pub fn load(ckpt: &Checkpoint, prefix: &str, n: usize, k: usize, bias: bool) -> Result<Linear> {
        let w = ckpt.f32(&format!("{prefix}.weight"), &[n, k])?;
        let b = if bias { Some(ckpt.f32(&format!("{prefix}.bias"), &[n])?) } else { None };
        Ok(Linear::new(&w, b, n, k))
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `out[m, n] = x[m, k]·Wᵀ + b` for the `m = x.len() / k` rows of `x`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let m = x.len() / self.k;
        cpu::gemm_panels(x, &self.panels, self.bias.as_deref(), &mut out[..m * self.n], m, self.n, self.k);
    }
}
