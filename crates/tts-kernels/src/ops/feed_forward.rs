use crate::device::Backend;
use crate::error::{Error, Result};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

use super::Activation;

/// The two layers of a transformer's feed-forward: `ff1` `[f, c]` (+ bias `[f]`), the activation,
/// `ff2` `[c, f]` (+ bias `[c]`), weights prepared by [`super::pack_gemm_weight`].
#[derive(Clone, Copy)]
pub struct FeedForward<'a> {
    pub w1: View<'a>,
    pub b1: Option<View<'a>>,
    /// Any activation but Snake (which needs a per-channel α).
    pub act: Activation,
    pub w2: View<'a>,
    pub b2: Option<View<'a>>,
}

/// The buffers [`feed_forward_residual`] computes the layers in where it takes them one at a time:
/// `hidden` f32 `[.., f]` (ff1's output), `activated` `[.., f]` in the compute dtype (the
/// activation's, ff2's input), `y` f32 `[.., c]` (ff2's output). Their contents afterwards are
/// unspecified: the fused Cpu path keeps its hidden rows in per-thread buffers and leaves these
/// unwritten.
pub struct FeedForwardScratch<'a> {
    pub hidden: ViewMut<'a>,
    pub activated: ViewMut<'a>,
    pub y: ViewMut<'a>,
}

/// A transformer's feed-forward with its residual add: `x += ff2(act(ff1(a)))`.
///
/// Shapes: `a` and `x` `[.., c]` (the same), the weights as [`FeedForward`] says, the scratch as
/// [`FeedForwardScratch`] says. Dtypes: `a` the compute dtype, `x` f32, the weights and biases as
/// [`super::linear`]'s.
///
/// Layer by layer ([`super::linear`], [`super::activation`], [`super::linear`],
/// [`super::add_scaled`]) on every backend, except the `cpu-bf16` device on the AMX path
/// (`cpu::feed_forward_amx`): there blocks of rows go through both layers with their hidden rows in
/// the core's caches, the same values bit for bit.
pub fn feed_forward_residual(ff: FeedForward<'_>, a: View<'_>, mut x: ViewMut<'_>, s: FeedForwardScratch<'_>) -> Result<()> {
    const OP: &str = "feed_forward_residual";
    let FeedForward { w1, b1, act, w2, b2 } = ff;
    let dev = same_device(OP, x.device(), &[a.device(), w1.device(), w2.device()])?;
    if a.shape() != x.shape() {
        return Err(Error::shape(OP, format!("a {:?} vs x {:?}", a.shape(), x.shape())));
    }
    let c = *x.shape().last().unwrap_or(&0);
    let m = x.len().checked_div(c).unwrap_or(0);
    let f = w1.rows();
    if w1.shape() != [f, c] || w2.shape() != [c, f] {
        return Err(Error::shape(OP, format!("ff1 {:?} and ff2 {:?} for a width of {c}", w1.shape(), w2.shape())));
    }
    if act == Activation::Snake {
        return Err(Error::invalid(OP, "Snake needs its per-channel alpha"));
    }
    // the scratch is checked on every path, though the fused one leaves it unwritten: the same
    // call is valid or not whatever the device and CPU
    let rows_of = |v: &ViewMut<'_>, n: usize| *v.shape().last().unwrap_or(&0) == n && v.len() == m * n;
    for (what, v, n) in [("hidden", &s.hidden, f), ("activated", &s.activated, f), ("y", &s.y, c)] {
        if !rows_of(v, n) {
            return Err(Error::shape(OP, format!("scratch {what} {:?} for {m} rows of {n}", v.shape())));
        }
    }
    let fused = matches!(&*dev.inner, Backend::Cpu)
        && w1.is_cpu_gemm_bf16_packed()
        && w2.is_cpu_gemm_bf16_packed()
        && cpu::isa::active() == cpu::Isa::Amx;
    if !fused {
        let FeedForwardScratch { mut hidden, mut activated, mut y } = s;
        super::linear(a, w1, b1, hidden.reborrow())?;
        super::activation(hidden.as_view(), activated.reborrow(), act, None, None)?;
        super::linear(activated.as_view(), w2, b2, y.reborrow())?;
        return super::add_scaled(x, y.as_view(), 1.0);
    }
    // the checks the layer-by-layer ops make of the operands this path reads
    for (what, b, n) in [("ff1 bias", &b1, f), ("ff2 bias", &b2, c)] {
        if let Some(b) = b {
            if b.len() != n || b.shape().len() != 1 {
                return Err(Error::shape(OP, format!("{what} {:?} for {n} outputs", b.shape())));
            }
            same_device(OP, b.device(), &[dev])?;
            expect_dtype(OP, what, b, DType::F32)?;
        }
    }
    expect_dtype(OP, "a", &a, DType::F32)?;
    expect_dtype(OP, "x", &x.as_view(), DType::F32)?;
    let b1 = b1.map(|b| b.host_f32()).transpose()?;
    let b2 = b2.map(|b| b.host_f32()).transpose()?;
    let ff = cpu::FeedForwardBf16 { w1: w1.gemm_bf16_panels()?, b1, act, w2: w2.gemm_bf16_panels()?, b2, c, f };
    cpu::feed_forward_amx(ff, a.host_f32()?, x.host_f32_mut()?, m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32};
    use crate::{Device, Tensor};

    /// A packed `[n, k]` weight and its bias on `dev`.
    fn layer(dev: &Device, seed: u64, n: usize, k: usize) -> (Tensor, Tensor) {
        let w = random_f32(seed, n * k, 1.0 / (k as f32).sqrt());
        let w = super::super::pack_gemm_weight(Tensor::from_f32(dev, dev.weight_dtype(), &[n, k], &w).unwrap()).unwrap();
        (w, Tensor::from_f32(dev, DType::F32, &[n], &random_f32(seed ^ 1, n, 0.5)).unwrap())
    }

    /// On the `cpu-bf16` device, the op (fused on AMX) equals the four ops one after another bit for
    /// bit: odd widths, row counts around the 32-row blocks, with and without biases, scratch
    /// poisoned with NaN (the fused path must not read it).
    #[test]
    fn fused_feed_forward_is_the_layer_by_layer_result() {
        if cpu::isa::active() != cpu::Isa::Amx {
            eprintln!("skipped fused_feed_forward_is_the_layer_by_layer_result: this process's path is not amx");
            return;
        }
        let dev = Device::cpu_bf16_weights();
        let seed = fresh_seed();
        eprintln!("seed {seed}");
        for (i, &(m, c, f, bias, act)) in [
            (1, 8, 32, true, Activation::Gelu),
            (31, 40, 100, true, Activation::Gelu),
            (32, 64, 256, false, Activation::Gelu),
            (33, 33, 67, true, Activation::Silu),
            (97, 256, 1024, true, Activation::Gelu),
            (70, 24, 9, false, Activation::Mish),
        ]
        .iter()
        .enumerate()
        {
            let s = seed ^ (i as u64) << 8;
            let (w1, b1) = layer(&dev, s ^ 2, f, c);
            let (w2, b2) = layer(&dev, s ^ 3, c, f);
            let a = Tensor::from_f32(&dev, DType::F32, &[m, c], &random_f32(s ^ 4, m * c, 2.0)).unwrap();
            let x0 = random_f32(s ^ 5, m * c, 1.0);
            let ff = FeedForward { w1: w1.view(), b1: bias.then(|| b1.view()), act, w2: w2.view(), b2: bias.then(|| b2.view()) };
            let nan = |n: usize, shape: &[usize]| Tensor::from_f32(&dev, DType::F32, shape, &vec![f32::NAN; n]).unwrap();
            let (mut h, mut ha, mut y) = (nan(m * f, &[m, f]), nan(m * f, &[m, f]), nan(m * c, &[m, c]));
            let mut fused = Tensor::from_f32(&dev, DType::F32, &[m, c], &x0).unwrap();
            let sc = FeedForwardScratch { hidden: h.view_mut(), activated: ha.view_mut(), y: y.view_mut() };
            feed_forward_residual(ff, a.view(), fused.view_mut(), sc).unwrap();
            // layer by layer
            let mut want = Tensor::from_f32(&dev, DType::F32, &[m, c], &x0).unwrap();
            super::super::linear(a.view(), w1.view(), ff.b1, h.view_mut()).unwrap();
            super::super::activation(h.view(), ha.view_mut(), act, None, None).unwrap();
            super::super::linear(ha.view(), w2.view(), ff.b2, y.view_mut()).unwrap();
            super::super::add_scaled(want.view_mut(), y.view(), 1.0).unwrap();
            let (got, want) = (fused.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
            assert!(want.iter().all(|v| v.is_finite()), "case {i}: the reference is not finite");
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "case {i} (m {m}, c {c}, f {f}) element {j}: {g} vs {w}");
            }
            assert_ne!(got, x0, "case {i}: x unchanged");
        }
    }

    /// Mismatched shapes and Snake are refused with the op's name, on every path.
    #[test]
    fn bad_shapes_are_refused() {
        let dev = Device::cpu_bf16_weights();
        let (w1, b1) = layer(&dev, 1, 16, 8);
        let (w2, b2) = layer(&dev, 2, 8, 16);
        let t = |shape: &[usize]| Tensor::zeros(&dev, DType::F32, shape).unwrap();
        let (a, mut x, mut h, mut ha, mut y) = (t(&[3, 8]), t(&[3, 8]), t(&[3, 16]), t(&[3, 16]), t(&[3, 8]));
        let ff = FeedForward { w1: w1.view(), b1: Some(b1.view()), act: Activation::Gelu, w2: w2.view(), b2: Some(b2.view()) };
        let mut run = |ff: FeedForward<'_>, a: View<'_>| {
            let sc = FeedForwardScratch { hidden: h.view_mut(), activated: ha.view_mut(), y: y.view_mut() };
            feed_forward_residual(ff, a, x.view_mut(), sc)
        };
        let wide = t(&[3, 9]);
        let err = run(ff, wide.view()).unwrap_err().to_string();
        assert!(err.contains("feed_forward_residual"), "{err}");
        let err = run(FeedForward { w1: w2.view(), w2: w1.view(), ..ff }, a.view()).unwrap_err().to_string();
        assert!(err.contains("feed_forward_residual"), "{err}");
        let err = run(FeedForward { act: Activation::Snake, ..ff }, a.view()).unwrap_err().to_string();
        assert!(err.contains("Snake"), "{err}");
        let err = run(FeedForward { b1: Some(b2.view()), ..ff }, a.view()).unwrap_err().to_string();
        assert!(err.contains("bias"), "{err}");
        run(ff, a.view()).unwrap();
        // a scratch of the wrong width, on every path
        let mut narrow = t(&[3, 15]);
        let sc = FeedForwardScratch { hidden: narrow.view_mut(), activated: ha.view_mut(), y: y.view_mut() };
        let err = feed_forward_residual(ff, a.view(), x.view_mut(), sc).unwrap_err().to_string();
        assert!(err.contains("scratch hidden"), "{err}");
    }
}
