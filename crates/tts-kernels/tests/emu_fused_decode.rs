//! The fused decode ops (`ops::rmsnorm_linear`, `ops::rmsnorm_linear_swiglu`,
//! `ops::linear_add_residual`, `ops::rope_attention_decode` and its split form) against their Cpu reference and against
//! the unfused op chains they replace, on every kernel backend of this build and machine (Emu in
//! forward, reverse and random thread schedules; Cuda when a GPU is usable), with fresh random
//! inputs (the seed is printed; `TTS_TEST_SEED` replays it), odd shapes, outputs prefilled with NaN
//! (every element must be written) inside rows that must stay untouched, and cache positions that
//! must not be read poisoned with NaN.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tts_kernels::testing::{assert_close, fresh_seed, kernel_devices, random_f32, round_bf16};
use tts_kernels::{BackendKind, DType, Device, EmuOptions, Error, Result, Tensor, ViewMut, cpu, ops};

/// bf16 outputs (8 significant bits): one rounding of a value computed in f32 is at most 2^-8
/// ≈ 3.9e-3 relative; 8e-3 allows two (the value of tests/emu_vs_cpu.rs).
const BF16_REL: f64 = 8e-3;
/// Absolute floor for attention outputs (as tests/emu_attention.rs).
const ATTN_ABS: f64 = 1e-4;
const EPS: f32 = 1e-5;

fn devices_or_skip() -> Vec<(String, Device)> {
    let d = kernel_devices();
    if d.is_empty() {
        eprintln!("no kernel backend in this build (enable the `emu` feature): nothing to test");
    }
    d
}

fn rms(v: &[f32]) -> f64 {
    (v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Per output of `a · wᵀ` on Cpu data (a: the f32 RMSNorm activation of the case): (Σ|t|, Σt²)
/// of its terms t_k = a_k·w_k.
fn activation_term_sums(d: &GemvData) -> Vec<(f64, f64)> {
    let mut res = d.h.clone();
    let mut a = vec![0.0; d.m * d.k];
    cpu::add_rmsnorm(None, &mut res, &d.norm_w, &mut a, EPS);
    let mut out = Vec::with_capacity(d.m * d.n);
    for ar in a.chunks(d.k) {
        for wr in d.w.chunks(d.k) {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for (&x, &y) in ar.iter().zip(wr) {
                let t = (x as f64 * y as f64).abs();
                s1 += t;
                s2 += t * t;
            }
            out.push((s1, s2));
        }
    }
    out
}

/// How far the device's dot product may be from the f32 one when each a_k is rounded to bf16 first
/// (8 significant bits: each term moves by at most 2^-8·|t_k|, with random signs):
/// `2^-8 · min(Σ|t|, 6·sqrt(Σt²))`, the strict bound for short sums and ~10σ for long ones, plus
/// f32 summation-order noise.
fn activation_rounding_allowance(d: &GemvData) -> Vec<f64> {
    activation_term_sums(d).iter().map(|&(s1, s2)| s1.min(6.0 * s2.sqrt()) / 256.0 + 1e-6 * s1).collect()
}

/// f32 dot products summed in two different orders: `1e-6 · Σ|t|` (each partial sum rounds at 2^-24).
fn activation_order_allowance(d: &GemvData) -> Vec<f64> {
    activation_term_sums(d).iter().map(|&(s1, _)| 1e-6 * s1).collect()
}

/// Per output of `x · wᵀ` (linear_add_residual's data): what f32 dot products of bf16 inputs summed
/// in two different orders may differ by, `1e-6 · Σ|x_k·w_k|` (each partial sum rounds at 2^-24).
fn summation_order_allowance(d: &GemvData) -> Vec<f64> {
    d.x.chunks(d.k)
        .flat_map(|xr| {
            d.w.chunks(d.k).map(move |wr| 1e-6 * xr.iter().zip(wr).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>())
        })
        .collect()
}

/// `|got − want| <= allow[i] + rel · |want|` element by element.
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], allow: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0.0f64, 0usize);
    for (i, ((&g, &w), &al)) in got.iter().zip(want).zip(allow).enumerate() {
        let excess = (g as f64 - w as f64).abs() / (al + rel * (w as f64).abs() + 1e-12);
        if excess.is_nan() || excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: [{i}] got {}, want {} (allowance {:e}): {:.2}x the tolerance",
        got[i],
        want[i],
        allow[i],
        worst.0
    );
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// SwiGLU outputs whose gate / up inputs carry errors: with g, u the reference's inputs
/// (`gu` [m, 2n], gate then up), allows
/// `|silu'(g)·u|·(rel_gu·|g| + abs_gu) + |silu(g)|·(rel_gu·|u| + abs_gu) + rel_out·|want|` per element
/// (first-order propagation: silu(g)·u is a product, so near-zero u or g give large relative errors).
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn assert_swiglu_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    gu: &[f32],
    n: usize,
    rel_gu: f64,
    abs_gu: Option<&[f64]>,
    rel_out: f64,
) {
    let mut worst = (0.0f64, 0usize);
    for (i, (&gv, &wv)) in got.iter().zip(want).enumerate() {
        let (r, c) = (i / n, i % n);
        let (ig, iu) = (r * 2 * n + c, r * 2 * n + n + c);
        let (g, u) = (gu[ig] as f64, gu[iu] as f64);
        let (ag, au) = abs_gu.map_or((0.0, 0.0), |a| (a[ig], a[iu]));
        let sg = sigmoid(g);
        let (silu, dsilu) = (g * sg, sg * (1.0 + g * (1.0 - sg)));
        let tol = (dsilu * u).abs() * (rel_gu * g.abs() + ag)
            + silu.abs() * (rel_gu * u.abs() + au)
            + rel_out * (wv as f64).abs()
            + 1e-7;
        let excess = (gv as f64 - wv as f64).abs() / tol;
        if excess.is_nan() || excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 1.0, "{what}: [{i}] got {}, want {}: {:.2}x the tolerance", got[i], want[i], worst.0);
}

/// The gate/up GEMM output of the unfused chain on `dev` ([m, n] with n = 2·inner), as f32.
fn gate_up(dev: &Device, d: &GemvData) -> Vec<f32> {
    let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
    let mut h = Tensor::from_f32(dev, DType::F32, &[d.m, d.k], &d.h).unwrap();
    let nw = Tensor::from_f32(dev, act, &[d.k], &d.norm_w).unwrap();
    let w = Tensor::from_f32(dev, wt, &[d.n, d.k], &d.w).unwrap();
    let mut a = Tensor::uninit(dev, act, &[d.m, d.k]).unwrap();
    let mut gu = Tensor::uninit(dev, act, &[d.m, d.n]).unwrap();
    ops::add_rmsnorm(None, h.view_mut(), nw.view(), a.view_mut(), EPS).unwrap();
    ops::linear(a.view(), w.view(), None, gu.view_mut()).unwrap();
    gu.to_f32_vec().unwrap()
}

/// Residual streams after a layer: `|got − want| <= rel · scale[i] + abs` element by element, with
/// `scale` the magnitude of what the layer added there (|attention output| + |MLP output|: the
/// errors scale with each sub-layer's output, which may cancel in the sum).
#[track_caller]
fn assert_layer_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], rel: f64, abs: f64) {
    let mut worst = (0.0f64, 0usize);
    for (i, ((&g, &w), &sc)) in got.iter().zip(want).zip(scale).enumerate() {
        let excess = (g as f64 - w as f64).abs() / (rel * sc as f64 + abs);
        if excess.is_nan() || excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 1.0, "{what}: [{i}] got {}, want {} (scale {}): {:.2}x the tolerance", got[i], want[i], scale[i], worst.0);
}

#[track_caller]
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
        let n = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        panic!("{what}: {n} of {} elements differ; first at [{i}]: got {:?}, want {:?}", got.len(), got[i], want[i]);
    }
}

/// The T3 shapes and the odd ones: (m, k, n). k = 201 is not a multiple of 8 (2-byte weight loads),
/// 1100, 2100 and 4096 take several staged chunks, n = 1 and 5 leave most warps of a block idle.
const GEMV_CASES: &[(usize, usize, usize)] = &[
    (1, 64, 1),
    (2, 200, 5),
    (3, 1024, 96),
    (7, 201, 1000),
    (33, 1024, 1000),
    (33, 64, 96),
    (2, 1024, 1000),
    (7, 1100, 5),
    (1, 4096, 96),
    (3, 2100, 1),
    (9, 200, 33),
];

/// Inputs of one GEMV case (all values exactly representable in bf16 but h, the f32 residual stream).
struct GemvData {
    m: usize,
    k: usize,
    n: usize,
    /// [m, k] f32 residual stream
    h: Vec<f32>,
    /// [k]
    norm_w: Vec<f32>,
    /// [n, k] (the fused SwiGLU takes n = 2·inner)
    w: Vec<f32>,
    /// [m, k] an activation (linear_add_residual)
    x: Vec<f32>,
    /// [m, n] the residual linear_add_residual adds to
    h0: Vec<f32>,
}

impl GemvData {
    fn random(seed: u64, m: usize, k: usize, n: usize) -> GemvData {
        let ws = 1.0 / (k as f32).sqrt();
        GemvData {
            m,
            k,
            n,
            h: random_f32(seed, m * k, 2.0),
            norm_w: round_bf16(&random_f32(seed + 1, k, 1.0)),
            w: round_bf16(&random_f32(seed + 2, n * k, ws)),
            x: round_bf16(&random_f32(seed + 3, m * k, 1.0)),
            h0: random_f32(seed + 4, m * n, 1.0),
        }
    }
}

/// A tensor of `rows + 2` rows whose rows 1..=rows hold `data` and rows 0 and rows + 1 `pad`.
fn padded(dev: &Device, dtype: DType, rows: usize, cols: usize, data: &[f32], pad: f32) -> Tensor {
    let mut v = vec![pad; cols];
    v.extend_from_slice(data);
    v.extend(std::iter::repeat_n(pad, cols));
    Tensor::from_f32(dev, dtype, &[rows + 2, cols], &v).unwrap()
}

/// Rows 1..=rows of a padded tensor, after checking that the two padding rows still hold `pad`
/// bit for bit (nothing was written outside the view).
#[track_caller]
fn inner_rows(what: &str, t: &Tensor, rows: usize, pad: f32) -> Vec<f32> {
    let v = t.to_f32_vec().unwrap();
    let cols = v.len() / (rows + 2);
    let padv = if t.dtype() == DType::BF16 { round_bf16(&[pad])[0] } else { pad };
    for (i, &x) in v[..cols].iter().chain(&v[(rows + 1) * cols..]).enumerate() {
        assert_eq!(x.to_bits(), padv.to_bits(), "{what}: padding element {i} outside the output rows was written");
    }
    v[cols..(rows + 1) * cols].to_vec()
}

fn view_rows(t: &mut Tensor, rows: usize) -> ViewMut<'_> {
    t.view_mut().narrow_rows(1, rows).unwrap()
}

/// Runs the fused op `which` (0 rmsnorm_linear, 1 rmsnorm_linear with an f32 output,
/// 2 rmsnorm_linear_swiglu, 3 linear_add_residual) on rows 1..=m of padded tensors; the output
/// starts as NaN (the residual as `h0`).
fn run_fused(dev: &Device, which: usize, d: &GemvData) -> Result<Vec<f32>> {
    let (m, k, n) = (d.m, d.k, d.n);
    let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
    let h = padded(dev, DType::F32, m, k, &d.h, 1e30);
    let nw = Tensor::from_f32(dev, act, &[k], &d.norm_w)?;
    let w = Tensor::from_f32(dev, wt, &[n, k], &d.w)?;
    let hv = h.view().narrow_rows(1, m)?;
    Ok(match which {
        0 | 1 => {
            let od = if which == 1 { DType::F32 } else { act };
            let mut out = padded(dev, od, m, n, &vec![f32::NAN; m * n], f32::NAN);
            ops::rmsnorm_linear(hv, nw.view(), EPS, w.view(), view_rows(&mut out, m))?;
            inner_rows("rmsnorm_linear out", &out, m, f32::NAN)
        }
        2 => {
            let inner = n / 2;
            let mut out = padded(dev, act, m, inner, &vec![f32::NAN; m * inner], f32::NAN);
            ops::rmsnorm_linear_swiglu(hv, nw.view(), EPS, w.view(), view_rows(&mut out, m))?;
            inner_rows("rmsnorm_linear_swiglu out", &out, m, f32::NAN)
        }
        _ => {
            let x = padded(dev, act, m, k, &d.x, f32::NAN);
            let mut hr = padded(dev, DType::F32, m, n, &d.h0, f32::NAN);
            ops::linear_add_residual(x.view().narrow_rows(1, m)?, w.view(), view_rows(&mut hr, m))?;
            inner_rows("linear_add_residual h", &hr, m, f32::NAN)
        }
    })
}

/// The unfused chain `which` replaces, with the existing ops on the same device.
fn run_unfused(dev: &Device, which: usize, d: &GemvData) -> Result<Vec<f32>> {
    let (m, k, n) = (d.m, d.k, d.n);
    let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
    let mut h = Tensor::from_f32(dev, DType::F32, &[m, k], &d.h)?;
    let nw = Tensor::from_f32(dev, act, &[k], &d.norm_w)?;
    let w = Tensor::from_f32(dev, wt, &[n, k], &d.w)?;
    let mut a = Tensor::uninit(dev, act, &[m, k])?;
    Ok(match which {
        0 | 1 => {
            let mut out = Tensor::uninit(dev, if which == 1 { DType::F32 } else { act }, &[m, n])?;
            ops::add_rmsnorm(None, h.view_mut(), nw.view(), a.view_mut(), EPS)?;
            ops::linear(a.view(), w.view(), None, out.view_mut())?;
            out.to_f32_vec()?
        }
        2 => {
            let mut gu = Tensor::uninit(dev, act, &[m, n])?;
            let mut out = Tensor::uninit(dev, act, &[m, n / 2])?;
            ops::add_rmsnorm(None, h.view_mut(), nw.view(), a.view_mut(), EPS)?;
            ops::linear(a.view(), w.view(), None, gu.view_mut())?;
            ops::swiglu(gu.view(), out.view_mut())?;
            out.to_f32_vec()?
        }
        _ => {
            let x = Tensor::from_f32(dev, act, &[m, k], &d.x)?;
            let mut y = Tensor::uninit(dev, act, &[m, n])?;
            let mut hr = Tensor::from_f32(dev, DType::F32, &[m, n], &d.h0)?;
            ops::linear(x.view(), w.view(), None, y.view_mut())?;
            ops::add_residual(hr.view_mut(), y.view(), None)?;
            hr.to_f32_vec()?
        }
    })
}

const OP_NAMES: [&str; 4] = ["rmsnorm_linear", "rmsnorm_linear(f32 out)", "rmsnorm_linear_swiglu", "linear_add_residual"];

/// The case data of op `which`: the fused SwiGLU takes a [2n, k] weight (n output columns).
fn case_data(seed: u64, which: usize, m: usize, k: usize, n: usize) -> GemvData {
    GemvData::random(seed, m, k, if which == 2 { 2 * n } else { n })
}

#[test]
fn fused_gemvs_match_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = devices_or_skip();
    for (i, &(m, k, n)) in GEMV_CASES.iter().enumerate() {
        for (which, op) in OP_NAMES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000 + which as u64 * 100);
            let d = case_data(s, which, m, k, n);
            let want = run_fused(&cpu, which, &d).unwrap();
            assert!(want.iter().all(|v| v.is_finite()), "cpu reference");
            for (label, dev) in &devices {
                let got = run_fused(dev, which, &d).unwrap();
                let what = format!("{label}: {} m {m} k {k} n {n} seed {s}", op);
                assert!(got.iter().all(|v| v.is_finite()), "{what}: an output element was not written");
                match which {
                    // the activation rounded to bf16 on the device; the output rounded
                    0 => assert_within(&what, &got, &want, &activation_rounding_allowance(&d), BF16_REL),
                    1 => assert_within(&what, &got, &want, &activation_rounding_allowance(&d), 1e-6),
                    // g and u: the activation's rounding (as above) and their own rounding to bf16
                    // (at most 2^-8 relative), propagated through silu(g)·u; the output's rounding
                    2 => {
                        let allow = activation_rounding_allowance(&d);
                        assert_swiglu_close(&what, &got, &want, &gate_up(&cpu, &d), n, 1.0 / 256.0, Some(&allow), BF16_REL)
                    }
                    // bf16 inputs on both sides, f32 accumulation and add: only the summation order differs
                    _ => assert_within(&what, &got, &want, &summation_order_allowance(&d), 1e-7),
                }
            }
        }
    }
}

#[test]
fn fused_gemvs_match_the_unfused_chains_on_kernel_backends() {
    // The activation is add_rmsnorm's bit for bit: what remains is the GEMM's summation order (and,
    // for linear_add_residual, the bf16 rounding of the product that the fused op skips).
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in devices_or_skip() {
        for (i, &(m, k, n)) in GEMV_CASES.iter().enumerate() {
            for (which, op) in OP_NAMES.iter().enumerate() {
                let s = seed.wrapping_add(i as u64 * 1000 + which as u64 * 100);
                let d = case_data(s, which, m, k, n);
                let fused = run_fused(&dev, which, &d).unwrap();
                let unfused = run_unfused(&dev, which, &d).unwrap();
                let what = format!("{label}: fused vs unfused {} m {m} k {k} n {n} seed {s}", op);
                match which {
                    // one output rounding apart at most
                    0 => assert_within(&what, &fused, &unfused, &activation_order_allowance(&d), BF16_REL),
                    1 => assert_within(&what, &fused, &unfused, &activation_order_allowance(&d), 1e-7),
                    // g and u: the unfused chain rounds them to bf16 (allowed: one bf16 ulp, 2^-7
                    // relative) after summing in another order (allowed: the f32 order noise, which is
                    // absolute: a g that cancels to ~1e-6 of its Σ|t| has no relative bound), both
                    // propagated through silu(g)·u
                    2 => {
                        let order = activation_order_allowance(&d);
                        assert_swiglu_close(&what, &fused, &unfused, &gate_up(&dev, &d), n, 1.0 / 128.0, Some(&order), BF16_REL)
                    }
                    _ => {
                        // |fused − unfused| <= one bf16 rounding of the product (+ summation order)
                        let y: Vec<f32> = fused.iter().zip(&d.h0).map(|(a, b)| a - b).collect();
                        let allow: Vec<f64> =
                            summation_order_allowance(&d).iter().zip(&y).map(|(a, &yv)| a + yv.abs() as f64 / 256.0).collect();
                        assert_within(&what, &fused, &unfused, &allow, 1e-7);
                    }
                }
            }
        }
    }
}

#[test]
fn fused_gemvs_equal_the_unfused_cpu_ops_bit_for_bit() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in [("cpu", Device::cpu()), ("cpu-bf16", Device::cpu_bf16_weights())] {
        for (i, &(m, k, n)) in GEMV_CASES.iter().enumerate() {
            for (which, op) in OP_NAMES.iter().enumerate() {
                let s = seed.wrapping_add(i as u64 * 1000 + which as u64 * 100);
                let d = case_data(s, which, m, k, n);
                let what = format!("{label}: {} m {m} k {k} n {n} seed {s}", op);
                assert_bits_eq(&what, &run_fused(&dev, which, &d).unwrap(), &run_unfused(&dev, which, &d).unwrap());
            }
        }
    }
}

#[test]
fn fused_gemvs_on_cpu_take_packed_weights() {
    // The Cpu branch multiplies through the one Cpu dispatch of linear (never reading the weight's
    // host data itself), so weights prepared with pack_linear_weight work and give linear's result.
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for dev in [Device::cpu(), Device::cpu_bf16_weights()] {
        let (m, k, n) = (3, 200, 40);
        let d = GemvData::random(seed, m, k, n);
        let act = dev.compute_dtype();
        let w = ops::pack_linear_weight(Tensor::from_f32(&dev, dev.weight_dtype(), &[n, k], &d.w).unwrap()).unwrap();
        let h = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
        let nw = Tensor::from_f32(&dev, act, &[k], &d.norm_w).unwrap();
        // fused
        let mut out = Tensor::zeros(&dev, act, &[m, n]).unwrap();
        ops::rmsnorm_linear(h.view(), nw.view(), EPS, w.view(), out.view_mut()).unwrap();
        let mut sw = Tensor::zeros(&dev, act, &[m, n / 2]).unwrap();
        ops::rmsnorm_linear_swiglu(h.view(), nw.view(), EPS, w.view(), sw.view_mut()).unwrap();
        let x = Tensor::from_f32(&dev, act, &[m, k], &d.x).unwrap();
        let mut hr = Tensor::from_f32(&dev, DType::F32, &[m, n], &d.h0).unwrap();
        ops::linear_add_residual(x.view(), w.view(), hr.view_mut()).unwrap();
        // unfused, same packed weight
        let mut hm = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
        let mut a = Tensor::zeros(&dev, act, &[m, k]).unwrap();
        ops::add_rmsnorm(None, hm.view_mut(), nw.view(), a.view_mut(), EPS).unwrap();
        let mut want = Tensor::zeros(&dev, act, &[m, n]).unwrap();
        ops::linear(a.view(), w.view(), None, want.view_mut()).unwrap();
        assert_bits_eq("packed rmsnorm_linear", &out.to_f32_vec().unwrap(), &want.to_f32_vec().unwrap());
        let mut want_sw = Tensor::zeros(&dev, act, &[m, n / 2]).unwrap();
        ops::swiglu(want.view(), want_sw.view_mut()).unwrap();
        assert_bits_eq("packed rmsnorm_linear_swiglu", &sw.to_f32_vec().unwrap(), &want_sw.to_f32_vec().unwrap());
        let mut y = Tensor::zeros(&dev, act, &[m, n]).unwrap();
        ops::linear(x.view(), w.view(), None, y.view_mut()).unwrap();
        let mut want_h = Tensor::from_f32(&dev, DType::F32, &[m, n], &d.h0).unwrap();
        ops::add_residual(want_h.view_mut(), y.view(), None).unwrap();
        assert_bits_eq("packed linear_add_residual", &hr.to_f32_vec().unwrap(), &want_h.to_f32_vec().unwrap());
    }
}

/// An identity weight `[k, k]` (or `[2k, k]`: two stacked identities).
fn identity(k: usize, stacks: usize) -> Vec<f32> {
    let mut w = vec![0.0; stacks * k * k];
    for s in 0..stacks {
        for i in 0..k {
            w[(s * k + i) * k + i] = 1.0;
        }
    }
    w
}

#[test]
fn fused_prologues_and_epilogues_round_exactly_as_the_unfused_ops() {
    // With identity weights every dot product is exact, so the fused ops expose their activation:
    // rmsnorm_linear must equal add_rmsnorm's output, the fused SwiGLU swiglu([a, a]), and
    // linear_add_residual add_residual(h, x), bit for bit.
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in devices_or_skip() {
        let act = dev.compute_dtype();
        for (i, &(m, k)) in [(1usize, 64usize), (3, 201), (33, 200), (9, 1100)].iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 100);
            let d = GemvData::random(s, m, k, 2 * k);
            let what = format!("{label}: m {m} k {k} seed {s}");
            let h = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
            let nw = Tensor::from_f32(&dev, act, &[k], &d.norm_w).unwrap();
            let eye = Tensor::from_f32(&dev, act, &[k, k], &identity(k, 1)).unwrap();
            let eye2 = Tensor::from_f32(&dev, act, &[2 * k, k], &identity(k, 2)).unwrap();
            // the unfused activation
            let mut hm = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
            let mut a = Tensor::uninit(&dev, act, &[m, k]).unwrap();
            ops::add_rmsnorm(None, hm.view_mut(), nw.view(), a.view_mut(), EPS).unwrap();
            let a_host = a.to_f32_vec().unwrap();

            let mut out = Tensor::uninit(&dev, act, &[m, k]).unwrap();
            ops::rmsnorm_linear(h.view(), nw.view(), EPS, eye.view(), out.view_mut()).unwrap();
            assert_bits_eq(&format!("{what}: rmsnorm_linear activation"), &out.to_f32_vec().unwrap(), &a_host);
            let mut out32 = Tensor::uninit(&dev, DType::F32, &[m, k]).unwrap();
            ops::rmsnorm_linear(h.view(), nw.view(), EPS, eye.view(), out32.view_mut()).unwrap();
            assert_bits_eq(&format!("{what}: rmsnorm_linear f32 activation"), &out32.to_f32_vec().unwrap(), &a_host);

            let aa: Vec<f32> = a_host.chunks(k).flat_map(|r| r.iter().chain(r).copied()).collect();
            let gu = Tensor::from_f32(&dev, act, &[m, 2 * k], &aa).unwrap();
            let mut want = Tensor::uninit(&dev, act, &[m, k]).unwrap();
            ops::swiglu(gu.view(), want.view_mut()).unwrap();
            let mut got = Tensor::uninit(&dev, act, &[m, k]).unwrap();
            ops::rmsnorm_linear_swiglu(h.view(), nw.view(), EPS, eye2.view(), got.view_mut()).unwrap();
            assert_bits_eq(&format!("{what}: rmsnorm_linear_swiglu"), &got.to_f32_vec().unwrap(), &want.to_f32_vec().unwrap());

            let x = Tensor::from_f32(&dev, act, &[m, k], &d.x).unwrap();
            let mut hr = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
            ops::linear_add_residual(x.view(), eye.view(), hr.view_mut()).unwrap();
            let mut want_h = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
            ops::add_residual(want_h.view_mut(), x.view(), None).unwrap();
            assert_bits_eq(&format!("{what}: linear_add_residual"), &hr.to_f32_vec().unwrap(), &want_h.to_f32_vec().unwrap());
        }
    }
}

#[test]
fn a_rows_result_depends_neither_on_the_batch_nor_on_alignment() {
    // Each row of an m-row launch equals the same row launched alone, and a weight view at an odd
    // address (2-byte loads instead of 16-byte ones) gives the same bits: the summation order is
    // fixed by (n, k) only.
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in devices_or_skip() {
        let act = dev.compute_dtype();
        let (m, k, n) = (11, 1024, 70);
        let d = GemvData::random(seed, m, k, n);
        let h = Tensor::from_f32(&dev, DType::F32, &[m, k], &d.h).unwrap();
        let nw = Tensor::from_f32(&dev, act, &[k], &d.norm_w).unwrap();
        let w = Tensor::from_f32(&dev, act, &[n, k], &d.w).unwrap();
        let mut shifted = vec![0.0];
        shifted.extend_from_slice(&d.w);
        let w_odd_t = Tensor::from_f32(&dev, act, &[n * k + 1, 1], &shifted).unwrap();
        let w_odd = w_odd_t.view().narrow_rows(1, n * k).unwrap().reshape(&[n, k]).unwrap();
        let x = Tensor::from_f32(&dev, act, &[m, k], &d.x).unwrap();

        let mut all = Tensor::uninit(&dev, act, &[m, n]).unwrap();
        ops::rmsnorm_linear(h.view(), nw.view(), EPS, w.view(), all.view_mut()).unwrap();
        let all = all.to_f32_vec().unwrap();
        let mut odd = Tensor::uninit(&dev, act, &[m, n]).unwrap();
        ops::rmsnorm_linear(h.view(), nw.view(), EPS, w_odd, odd.view_mut()).unwrap();
        assert_bits_eq(&format!("{label}: rmsnorm_linear unaligned weight"), &odd.to_f32_vec().unwrap(), &all);
        let mut hr = Tensor::from_f32(&dev, DType::F32, &[m, n], &d.h0).unwrap();
        ops::linear_add_residual(x.view(), w.view(), hr.view_mut()).unwrap();
        let hr = hr.to_f32_vec().unwrap();
        let mut hr_odd = Tensor::from_f32(&dev, DType::F32, &[m, n], &d.h0).unwrap();
        ops::linear_add_residual(x.view(), w_odd, hr_odd.view_mut()).unwrap();
        assert_bits_eq(&format!("{label}: linear_add_residual unaligned weight"), &hr_odd.to_f32_vec().unwrap(), &hr);
        for r in [0, 5, 8, 10] {
            let mut one = Tensor::uninit(&dev, act, &[1, n]).unwrap();
            ops::rmsnorm_linear(h.view().narrow_rows(r, 1).unwrap(), nw.view(), EPS, w.view(), one.view_mut()).unwrap();
            assert_bits_eq(
                &format!("{label}: rmsnorm_linear row {r} alone"),
                &one.to_f32_vec().unwrap(),
                &all[r * n..(r + 1) * n],
            );
            let mut h1 = Tensor::from_f32(&dev, DType::F32, &[1, n], &d.h0[r * n..(r + 1) * n]).unwrap();
            ops::linear_add_residual(x.view().narrow_rows(r, 1).unwrap(), w.view(), h1.view_mut()).unwrap();
            assert_bits_eq(
                &format!("{label}: linear_add_residual row {r} alone"),
                &h1.to_f32_vec().unwrap(),
                &hr[r * n..(r + 1) * n],
            );
        }
    }
}

#[test]
fn fused_gemv_errors_are_errors() {
    let mut all = vec![("cpu".to_string(), Device::cpu()), ("cpu-bf16".to_string(), Device::cpu_bf16_weights())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
        let h = Tensor::zeros(&dev, DType::F32, &[2, 8]).unwrap();
        let nw = Tensor::zeros(&dev, act, &[8]).unwrap();
        let w = Tensor::zeros(&dev, wt, &[6, 8]).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[2, 6]).unwrap();
        let mut out3 = Tensor::zeros(&dev, act, &[2, 3]).unwrap();
        let x = Tensor::zeros(&dev, act, &[2, 8]).unwrap();
        let mut hr = Tensor::zeros(&dev, DType::F32, &[2, 6]).unwrap();
        let is_shape = |e: &Error| matches!(e, Error::Shape { .. });

        // shapes
        let nw7 = Tensor::zeros(&dev, act, &[7]).unwrap();
        let e = ops::rmsnorm_linear(h.view(), nw7.view(), EPS, w.view(), out.view_mut()).unwrap_err();
        assert!(is_shape(&e) && e.to_string().contains("norm weight"), "{label}: {e}");
        let w9 = Tensor::zeros(&dev, wt, &[6, 9]).unwrap();
        let e = ops::rmsnorm_linear(h.view(), nw.view(), EPS, w9.view(), out.view_mut()).unwrap_err();
        assert!(is_shape(&e) && e.to_string().contains("weight"), "{label}: {e}");
        let e = ops::rmsnorm_linear(h.view(), nw.view(), EPS, w.view(), out3.view_mut()).unwrap_err();
        assert!(is_shape(&e) && e.to_string().contains("out"), "{label}: {e}");
        let e = ops::rmsnorm_linear_swiglu(h.view(), nw.view(), EPS, w.view(), out.view_mut()).unwrap_err();
        assert!(is_shape(&e), "{label}: swiglu out of 6 columns for 3 gate/up pairs: {e}");
        let w5 = Tensor::zeros(&dev, wt, &[5, 8]).unwrap();
        let mut out2 = Tensor::zeros(&dev, act, &[2, 2]).unwrap();
        let e = ops::rmsnorm_linear_swiglu(h.view(), nw.view(), EPS, w5.view(), out2.view_mut()).unwrap_err();
        assert!(is_shape(&e) && e.to_string().contains("odd"), "{label}: {e}");
        let e = ops::linear_add_residual(x.view(), w9.view(), hr.view_mut()).unwrap_err();
        assert!(is_shape(&e), "{label}: {e}");
        let mut hr_bad = Tensor::zeros(&dev, DType::F32, &[3, 6]).unwrap();
        let e = ops::linear_add_residual(x.view(), w.view(), hr_bad.view_mut()).unwrap_err();
        assert!(is_shape(&e) && e.to_string().contains('h'), "{label}: {e}");
        let h0 = Tensor::zeros(&dev, DType::F32, &[2, 0]).unwrap();
        let nw0 = Tensor::zeros(&dev, act, &[0]).unwrap();
        let w0 = Tensor::zeros(&dev, wt, &[6, 0]).unwrap();
        let e = ops::rmsnorm_linear(h0.view(), nw0.view(), EPS, w0.view(), out.view_mut()).unwrap_err();
        assert!(is_shape(&e), "{label}: RMSNorm of empty rows: {e}");
        let w3d = Tensor::zeros(&dev, wt, &[2, 3, 8]).unwrap();
        let e = ops::linear_add_residual(x.view(), w3d.view(), hr.view_mut()).unwrap_err();
        assert!(is_shape(&e), "{label}: a 3-d weight: {e}");

        // eps, dtypes
        for eps in [f32::NAN, -1.0, f32::INFINITY] {
            let e = ops::rmsnorm_linear(h.view(), nw.view(), eps, w.view(), out.view_mut()).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{label}: eps {eps}: {e}");
        }
        if act != DType::F32 {
            let e = ops::rmsnorm_linear(x.view(), nw.view(), EPS, w.view(), out.view_mut()).unwrap_err();
            assert!(matches!(e, Error::DType { what: "h", .. }), "{label}: {e}");
        }
        let mut ints = Tensor::from_i32(&dev, &[2, 6], &[0; 12]).unwrap();
        let e = ops::rmsnorm_linear(h.view(), nw.view(), EPS, w.view(), ints.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
        let mut out3_f32 = Tensor::zeros(&dev, DType::F32, &[2, 3]).unwrap();
        if act != DType::F32 {
            let e = ops::rmsnorm_linear_swiglu(h.view(), nw.view(), EPS, w.view(), out3_f32.view_mut()).unwrap_err();
            assert!(matches!(e, Error::DType { what: "out", .. }), "{label}: {e}");
            let e = ops::linear_add_residual(h.view(), w.view(), hr.view_mut()).unwrap_err();
            assert!(matches!(e, Error::DType { what: "x", .. }), "{label}: {e}");
        }
        let other_w = if wt == DType::F32 { DType::BF16 } else { DType::F32 };
        let w_other = Tensor::zeros(&dev, other_w, &[6, 8]).unwrap();
        let e = ops::rmsnorm_linear(h.view(), nw.view(), EPS, w_other.view(), out.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "weight", .. }), "{label}: {e}");
        let e = ops::linear_add_residual(x.view(), w_other.view(), hr.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "weight", .. }), "{label}: {e}");
        let mut hr_bf = Tensor::zeros(&dev, DType::BF16, &[2, 6]).unwrap();
        let e = ops::linear_add_residual(x.view(), w.view(), hr_bf.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "h", .. }), "{label}: {e}");

        // a tensor of another device
        let other = Device::cpu();
        let nw_other = Tensor::zeros(&other, DType::F32, &[8]).unwrap();
        let e = ops::rmsnorm_linear(h.view(), nw_other.view(), EPS, w.view(), out.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        let x_other = Tensor::zeros(&other, DType::F32, &[2, 8]).unwrap();
        let e = ops::linear_add_residual(x_other.view(), w.view(), hr.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");

        // empty row counts are no-ops
        let he = Tensor::zeros(&dev, DType::F32, &[0, 8]).unwrap();
        let mut oe = Tensor::zeros(&dev, act, &[0, 6]).unwrap();
        ops::rmsnorm_linear(he.view(), nw.view(), EPS, w.view(), oe.view_mut()).unwrap();
    }
}

// ---- rope_attention_decode

fn t3_inv_freq(d: usize) -> Vec<f32> {
    cpu::llama3_inv_freq(d, 500000.0, 8.0, 1.0, 4.0, 8192)
}

/// A decode step: live rows in distinct slots (one with a full context, one at position 0, one with
/// len = position, i.e. its new row is written but not attended), inactive rows (len 0) with an
/// invalid slot and one pointing into a live row's context (it must write nothing there). Cache
/// positions no live row reads hold NaN.
#[derive(Clone)]
struct DecodeCase {
    rows: usize,
    heads: usize,
    d: usize,
    n_slots: usize,
    max_len: usize,
    qkv: Vec<f32>,
    pos: Vec<i32>,
    slots: Vec<i32>,
    lens: Vec<i32>,
    k: Vec<f32>,
    v: Vec<f32>,
    inv: Vec<f32>,
    scale: f32,
}

struct DecodeOut {
    out: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl DecodeCase {
    fn random(seed: u64, rows: usize, heads: usize, d: usize, n_slots: usize, max_len: usize, inactive: &[usize]) -> DecodeCase {
        let mut rng = StdRng::seed_from_u64(seed);
        let live: Vec<usize> = (0..rows).filter(|r| !inactive.contains(r)).collect();
        assert!(live.len() <= n_slots && !live.is_empty());
        let mut free: Vec<i32> = (0..n_slots as i32).collect();
        free.shuffle(&mut rng);
        let (mut pos, mut slots, mut lens) = (vec![0i32; rows], vec![0i32; rows], vec![0i32; rows]);
        for (i, &r) in live.iter().enumerate() {
            let p = match i {
                0 => max_len - 1,
                1 => 0,
                _ => rng.random_range(0..max_len),
            } as i32;
            pos[r] = p;
            slots[r] = free[i];
            lens[r] = if i == 2 && p > 0 { p } else { p + 1 };
        }
        for (j, &r) in inactive.iter().enumerate() {
            // an invalid slot, or a valid cell inside the first live row's context
            (slots[r], pos[r]) = if j.is_multiple_of(2) {
                (if seed.is_multiple_of(2) { -1 } else { n_slots as i32 + 5 }, -3)
            } else {
                (slots[live[0]], 1)
            };
            lens[r] = 0;
        }
        let hd = heads * d;
        let mut k = round_bf16(&random_f32(seed + 1, n_slots * hd * max_len, 1.0));
        let mut v = round_bf16(&random_f32(seed + 2, n_slots * hd * max_len, 1.0));
        let mut read = vec![0usize; n_slots];
        for &r in &live {
            read[slots[r] as usize] = lens[r] as usize;
        }
        for (s, &n) in read.iter().enumerate() {
            for h in 0..heads {
                let at = (s * heads + h) * max_len;
                k[(at + n) * d..(at + max_len) * d].fill(f32::NAN);
                v[(at + n) * d..(at + max_len) * d].fill(f32::NAN);
            }
        }
        DecodeCase {
            rows,
            heads,
            d,
            n_slots,
            max_len,
            qkv: round_bf16(&random_f32(seed + 3, rows * 3 * hd, 1.0)),
            pos,
            slots,
            lens,
            k,
            v,
            inv: t3_inv_freq(d),
            scale: 1.0 / (d as f32).sqrt(),
        }
    }

    fn cshape(&self) -> [usize; 4] {
        [self.n_slots, self.heads, self.max_len, self.d]
    }

    fn run_fused(&self, dev: &Device) -> Result<DecodeOut> {
        self.run_fused_with(dev, None)
    }

    /// rope_attention_decode (`splits = None`) or rope_attention_decode_split with a scratch of
    /// `splits` slices (poisoned with NaN: the kernels must write what they read).
    fn run_fused_with(&self, dev: &Device, splits: Option<usize>) -> Result<DecodeOut> {
        self.run_fused_scratch(dev, splits, f32::NAN)
    }

    /// run_fused_with a scratch prefilled with `fill` (a finite value stands for a previous step's
    /// partial results: what a slice leaves unwritten then shows as a finite, wrong output).
    fn run_fused_scratch(&self, dev: &Device, splits: Option<usize>, fill: f32) -> Result<DecodeOut> {
        let act = dev.compute_dtype();
        let hd = self.heads * self.d;
        let qkv = Tensor::from_f32(dev, act, &[self.rows, 3 * hd], &self.qkv)?;
        let pos = Tensor::from_i32(dev, &[self.rows], &self.pos)?;
        let slots = Tensor::from_i32(dev, &[self.rows], &self.slots)?;
        let lens = Tensor::from_i32(dev, &[self.rows], &self.lens)?;
        let inv = Tensor::from_f32(dev, DType::F32, &[self.d / 2], &self.inv)?;
        let mut kc = Tensor::from_f32(dev, act, &self.cshape(), &self.k)?;
        let mut vc = Tensor::from_f32(dev, act, &self.cshape(), &self.v)?;
        let mut out = Tensor::from_f32(dev, act, &[self.rows, hd], &vec![f32::NAN; self.rows * hd])?;
        let (q, p, s, i, l) = (qkv.view(), pos.view(), slots.view(), inv.view(), lens.view());
        match splits {
            None => ops::rope_attention_decode(q, p, s, i, kc.view_mut(), vc.view_mut(), l, out.view_mut(), self.scale)?,
            Some(n) => {
                let shape = [self.rows, self.heads, n, self.d + 2];
                let mut scratch = Tensor::from_f32(dev, DType::F32, &shape, &vec![fill; shape.iter().product()])?;
                let (k, v, o) = (kc.view_mut(), vc.view_mut(), out.view_mut());
                ops::rope_attention_decode_split(q, p, s, i, k, v, l, o, scratch.view_mut(), self.scale)?;
            }
        }
        Ok(DecodeOut { out: out.to_f32_vec()?, k: kc.to_f32_vec()?, v: vc.to_f32_vec()? })
    }

    fn live(&self) -> Vec<usize> {
        (0..self.rows).filter(|&r| self.lens[r] != 0).collect()
    }

    /// rope_kv_write on the live rows, then attention_cached on every row (the existing ops). With
    /// `round`, q and the caches are rounded to bf16 in between (a Cpu run that mirrors what bf16
    /// device tensors store).
    fn run_unfused(&self, dev: &Device, round: bool) -> Result<DecodeOut> {
        self.run_unfused_with(dev, round, None)
    }

    /// run_unfused with attention_cached_split of `splits` slices instead of attention_cached.
    fn run_unfused_with(&self, dev: &Device, round: bool, splits: Option<usize>) -> Result<DecodeOut> {
        let act = dev.compute_dtype();
        let hd = self.heads * self.d;
        let live = self.live();
        let n = live.len();
        let lqkv: Vec<f32> = live.iter().flat_map(|&r| self.qkv[r * 3 * hd..(r + 1) * 3 * hd].to_vec()).collect();
        let lpos: Vec<i32> = live.iter().map(|&r| self.pos[r]).collect();
        let lslots: Vec<i32> = live.iter().map(|&r| self.slots[r]).collect();
        let inv = Tensor::from_f32(dev, DType::F32, &[self.d / 2], &self.inv)?;
        let mut kc = Tensor::from_f32(dev, act, &self.cshape(), &self.k)?;
        let mut vc = Tensor::from_f32(dev, act, &self.cshape(), &self.v)?;
        let mut lq = Tensor::uninit(dev, act, &[n, hd])?;
        ops::rope_kv_write(
            Tensor::from_f32(dev, act, &[n, 3 * hd], &lqkv)?.view(),
            Tensor::from_i32(dev, &[n], &lpos)?.view(),
            Tensor::from_i32(dev, &[n], &lslots)?.view(),
            inv.view(),
            lq.view_mut(),
            kc.view_mut(),
            vc.view_mut(),
        )?;
        let mut lqv = lq.to_f32_vec()?;
        if round {
            lqv = round_bf16(&lqv);
            kc.copy_from_f32(&round_bf16(&kc.to_f32_vec()?))?;
            vc.copy_from_f32(&round_bf16(&vc.to_f32_vec()?))?;
        }
        let mut q = vec![0.0; self.rows * hd];
        for (i, &r) in live.iter().enumerate() {
            q[r * hd..(r + 1) * hd].copy_from_slice(&lqv[i * hd..(i + 1) * hd]);
        }
        let mut out = Tensor::uninit(dev, act, &[self.rows, hd])?;
        let q = Tensor::from_f32(dev, act, &[self.rows, hd], &q)?;
        let slots = Tensor::from_i32(dev, &[self.rows], &self.slots)?;
        let lens = Tensor::from_i32(dev, &[self.rows], &self.lens)?;
        let (q, k, v, s, l) = (q.view(), kc.view(), vc.view(), slots.view(), lens.view());
        match splits {
            None => ops::attention_cached(q, k, v, s, l, out.view_mut(), self.scale)?,
            Some(n) => {
                let mut scratch = Tensor::uninit(dev, DType::F32, &[self.rows, self.heads, n, self.d + 2])?;
                ops::attention_cached_split(q, k, v, s, l, out.view_mut(), scratch.view_mut(), self.scale)?;
            }
        }
        Ok(DecodeOut { out: out.to_f32_vec()?, k: kc.to_f32_vec()?, v: vc.to_f32_vec()? })
    }
}

/// (rows, heads, head_dim, n_slots, max_len, inactive rows)
type DecodeShape = (usize, usize, usize, usize, usize, &'static [usize]);

const DECODE_CASES: &[DecodeShape] = &[
    (5, 16, 64, 6, 70, &[1, 3]), // T3 heads
    (2, 16, 64, 2, 300, &[]),    // one request with CFG, a long context (wide blocks)
    (3, 3, 32, 4, 33, &[0]),
    (4, 2, 128, 5, 17, &[2, 3]),
    (3, 1, 256, 3, 9, &[]),
    (7, 2, 96, 9, 40, &[0, 6]),
    (2, 1, 160, 2, 5, &[]),
    (3, 2, 192, 3, 12, &[1]),
    (2, 1, 224, 2, 6, &[]),
    (1, 1, 64, 1, 1, &[]), // max_len 1: position 0 only
];

#[test]
fn rope_attention_decode_equals_the_unfused_pair_bit_for_bit() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in devices_or_skip() {
        for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
            let what = format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} seed {s}", c.lens);
            let fused = c.run_fused(&dev).unwrap();
            let unfused = c.run_unfused(&dev, false).unwrap();
            assert_bits_eq(&format!("{what}: out"), &fused.out, &unfused.out);
            assert_bits_eq(&format!("{what}: k_cache"), &fused.k, &unfused.k);
            assert_bits_eq(&format!("{what}: v_cache"), &fused.v, &unfused.v);
            let hd = heads * d;
            for &r in inactive {
                assert!(fused.out[r * hd..(r + 1) * hd].iter().all(|&x| x == 0.0), "{what}: inactive row {r} must be zeros");
            }
            assert!(fused.out.iter().all(|x| x.is_finite()), "{what}: a live row read a poisoned cache cell");
        }
    }
}

#[test]
fn rope_attention_decode_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = devices_or_skip();
    for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000);
        let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
        // Cpu: the fused op is the unfused Cpu ops bit for bit
        let want_fused = c.run_fused(&cpu).unwrap();
        let want_unfused = c.run_unfused(&cpu, false).unwrap();
        let what = format!("cpu: rows {rows} heads {heads} d {d} seed {s}");
        assert_bits_eq(&format!("{what}: out"), &want_fused.out, &want_unfused.out);
        assert_bits_eq(&format!("{what}: k_cache"), &want_fused.k, &want_unfused.k);
        assert_bits_eq(&format!("{what}: v_cache"), &want_fused.v, &want_unfused.v);
        // kernels against the Cpu ops with q and the caches rounded to bf16 as the device stores them
        let want = c.run_unfused(&cpu, true).unwrap();
        let clen = c.k.len();
        let mut written = vec![false; clen];
        for r in c.live() {
            for h in 0..heads {
                let at = ((c.slots[r] as usize * heads + h) * max_len + c.pos[r] as usize) * d;
                written[at..at + d].fill(true);
            }
        }
        let pick = |v: &[f32], w: bool| -> Vec<f32> { v.iter().zip(&written).filter(|x| *x.1 == w).map(|x| *x.0).collect() };
        for (label, dev) in &devices {
            let got = c.run_fused(dev).unwrap();
            let what = format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} seed {s}", c.lens);
            assert_close(&format!("{what}: out"), &got.out, &want.out, BF16_REL, ATTN_ABS);
            assert_close(&format!("{what}: k rows"), &pick(&got.k, true), &pick(&want.k, true), BF16_REL, 1e-5);
            assert_bits_eq(&format!("{what}: v rows"), &pick(&got.v, true), &pick(&want.v, true));
            assert_bits_eq(&format!("{what}: k untouched"), &pick(&got.k, false), &pick(&c.k, false));
            assert_bits_eq(&format!("{what}: v untouched"), &pick(&got.v, false), &pick(&c.v, false));
        }
    }
}

#[test]
fn rope_attention_decode_bad_rows_are_nan_on_kernels_and_errors_on_cpu() {
    let (heads, d, n_slots, max_len) = (2, 32, 8, 6);
    let hd = heads * d;
    let mut c = DecodeCase::random(17, 8, heads, d, n_slots, max_len, &[]);
    c.k = round_bf16(&random_f32(18, c.k.len(), 1.0)); // no poison: bad rows vary the read range
    c.v = round_bf16(&random_f32(19, c.v.len(), 1.0));
    // row 0 good; then len > max_len, len < 0, position max_len, position -1, slot n_slots, slot -1;
    // row 7: inactive with every field out of range (zeros)
    c.pos = vec![2, 1, 1, max_len as i32, -1, 3, 3, 99];
    c.lens = vec![3, max_len as i32 + 1, -1, 2, 2, 4, 4, 0];
    c.slots = vec![0, 1, 2, 3, 4, n_slots as i32, -1, -7];
    let cpu = Device::cpu();
    let expect = [
        (1, "row 1: length 7 is outside 0..=6"),
        (2, "row 2: length -1 is outside 0..=6"),
        (3, "row 3: position 6 is outside 0..6"),
        (4, "row 4: position -1 is outside 0..6"),
        (5, "row 5: slot 8 is outside 0..8"),
        (6, "row 6: slot -1 is outside 0..8"),
    ];
    for (bad, msg) in expect {
        // the good row, the bad row and the inactive one: an error, and nothing written
        let mut one = c.clone();
        let pick = [0, bad, 7];
        one.rows = 3;
        one.qkv = pick.iter().flat_map(|&r| c.qkv[r * 3 * hd..(r + 1) * 3 * hd].to_vec()).collect();
        one.pos = pick.iter().map(|&r| c.pos[r]).collect();
        one.lens = pick.iter().map(|&r| c.lens[r]).collect();
        one.slots = pick.iter().map(|&r| c.slots[r]).collect();
        let e = one.run_fused(&cpu).err().unwrap();
        let msg = msg.replacen(&format!("row {bad}"), "row 1", 1);
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains(&msg), "want {msg:?}, got {e}");
    }
    // nothing written on Cpu when a row is bad
    let hd3 = 3 * hd;
    let qkv = Tensor::from_f32(&cpu, DType::F32, &[2, hd3], &c.qkv[..2 * hd3]).unwrap();
    let i32t = |v: &[i32]| Tensor::from_i32(&cpu, &[v.len()], v).unwrap();
    let inv = Tensor::from_f32(&cpu, DType::F32, &[d / 2], &c.inv).unwrap();
    let mut kc = Tensor::from_f32(&cpu, DType::F32, &c.cshape(), &c.k).unwrap();
    let mut vc = Tensor::from_f32(&cpu, DType::F32, &c.cshape(), &c.v).unwrap();
    let mut out = Tensor::zeros(&cpu, DType::F32, &[2, hd]).unwrap();
    let decode = |kc: &mut Tensor, vc: &mut Tensor, out: &mut Tensor, p: &Tensor, s: &Tensor, l: &Tensor| {
        ops::rope_attention_decode(
            qkv.view(),
            p.view(),
            s.view(),
            inv.view(),
            kc.view_mut(),
            vc.view_mut(),
            l.view(),
            out.view_mut(),
            c.scale,
        )
    };
    let (p, s, l) = (i32t(&[2, 1]), i32t(&[0, 1]), i32t(&[3, 9]));
    decode(&mut kc, &mut vc, &mut out, &p, &s, &l).unwrap_err();
    assert_bits_eq("cpu: k_cache after an error", &kc.to_f32_vec().unwrap(), &c.k);
    assert_bits_eq("cpu: v_cache after an error", &vc.to_f32_vec().unwrap(), &c.v);
    // duplicate live slots: an error on Cpu; an inactive row may name any slot
    let (p, s, l) = (i32t(&[2, 1]), i32t(&[1, 1]), i32t(&[3, 2]));
    let e = decode(&mut kc, &mut vc, &mut out, &p, &s, &l).unwrap_err();
    assert!(e.to_string().contains("rows 0 and 1 are both live in slot 1"), "{e}");
    assert_bits_eq("cpu: k_cache after a duplicate slot", &kc.to_f32_vec().unwrap(), &c.k);
    let l0 = i32t(&[3, 0]);
    decode(&mut kc, &mut vc, &mut out, &p, &s, &l0).unwrap();

    // kernels: NaN for the bad rows, zeros for the inactive one, the caches as if only row 0 ran
    let good = DecodeCase {
        rows: 2,
        qkv: [&c.qkv[..hd3], &c.qkv[7 * hd3..]].concat(),
        pos: vec![c.pos[0], c.pos[7]],
        lens: vec![c.lens[0], 0],
        slots: vec![c.slots[0], c.slots[7]],
        ..c.clone()
    };
    for (label, dev) in devices_or_skip() {
        let got = c.run_fused(&dev).unwrap();
        let want = good.run_unfused(&dev, false).unwrap();
        assert_bits_eq(&format!("{label}: good row"), &got.out[..hd], &want.out[..hd]);
        assert!(got.out[hd..7 * hd].iter().all(|v| v.is_nan()), "{label}: bad rows must be NaN");
        assert!(got.out[7 * hd..].iter().all(|&v| v == 0.0), "{label}: the inactive row must be zeros");
        assert_bits_eq(&format!("{label}: k_cache"), &got.k, &want.k);
        assert_bits_eq(&format!("{label}: v_cache"), &got.v, &want.v);
    }
}

#[test]
fn rope_attention_decode_errors_are_errors() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    for (label, dev) in all {
        let act = dev.compute_dtype();
        let z = |shape: &[usize]| Tensor::zeros(&dev, act, shape).unwrap();
        let i = |n: usize| Tensor::from_i32(&dev, &[n], &vec![0; n]).unwrap();
        let inv = |n: usize| Tensor::zeros(&dev, DType::F32, &[n]).unwrap();
        let run = |qkv: &Tensor, lens: &Tensor, inv: &Tensor, kc: &mut Tensor, vc: &mut Tensor, out: &mut Tensor| {
            let rows = qkv.shape()[0];
            ops::rope_attention_decode(
                qkv.view(),
                i(rows).view(),
                i(rows).view(),
                inv.view(),
                kc.view_mut(),
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                0.125,
            )
        };
        // head_dim 48 is not a multiple of 32
        let (mut kc, mut vc) = (z(&[2, 2, 8, 48]), z(&[2, 2, 8, 48]));
        let e = run(&z(&[2, 3 * 96]), &i(2), &inv(24), &mut kc, &mut vc, &mut z(&[2, 96])).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("head_dim 48"), "{label}: {e}");
        let (mut kc, mut vc) = (z(&[2, 2, 8, 32]), z(&[2, 2, 8, 32]));
        let e = run(&z(&[2, 3 * 64 + 1]), &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("qkv"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[3, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("out"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(3), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("lens"), "{label}: {e}");
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(15), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("inv_freq"), "{label}: {e}");
        let mut v_bad = z(&[2, 2, 9, 32]);
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv(16), &mut kc, &mut v_bad, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: {e}");
        let lens_f = Tensor::zeros(&dev, DType::F32, &[2]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &lens_f, &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "lens", .. }), "{label}: {e}");
        let inv_bf = Tensor::zeros(&dev, DType::BF16, &[16]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv_bf, &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "inv_freq", .. }), "{label}: {e}");
        let qkv_other = Tensor::zeros(&dev, if act == DType::F32 { DType::BF16 } else { DType::F32 }, &[2, 3 * 64]).unwrap();
        let e = run(&qkv_other, &i(2), &inv(16), &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DType { what: "qkv", .. }), "{label}: {e}");
        let other = Device::cpu();
        let inv_other = Tensor::zeros(&other, DType::F32, &[16]).unwrap();
        let e = run(&z(&[2, 3 * 64]), &i(2), &inv_other, &mut kc, &mut vc, &mut z(&[2, 64])).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        // no rows: nothing to do
        run(&z(&[0, 3 * 64]), &i(0), &inv(16), &mut kc, &mut vc, &mut z(&[0, 64])).unwrap();
        // caches at an address that is not 16-byte aligned (the kernels load cache rows with 16-byte loads)
        if dev.kind() != BackendKind::Cpu {
            let n = 2 * 2 * 8 * 32;
            let mut big = z(&[n + 1, 1]);
            let kv = big.view_mut().narrow_rows(1, n).unwrap().reshape(&[2, 2, 8, 32]).unwrap();
            let (qkv, lens, invt, mut out) = (z(&[2, 3 * 64]), i(2), inv(16), z(&[2, 64]));
            let e = ops::rope_attention_decode(
                qkv.view(),
                lens.view(),
                lens.view(),
                invt.view(),
                kv,
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                0.125,
            )
            .unwrap_err();
            assert!(e.to_string().contains("16-byte aligned"), "{label}: {e}");
        }
    }
}

/// Captures one fused decode step (`rope_attention_decode`, or with `Some(n)` key slices
/// `rope_attention_decode_split`) over caches `[3 slots, 4 heads, max_len, 64]`, replays it for 4
/// steps with new qkv, positions and lengths on the device (`step_rows(step)` gives each row's
/// position and length), and checks every step bit for bit against the unfused ops run directly on a
/// second copy of the caches; the capture must hold exactly `kernels`.
fn check_replayed_decode(
    splits: Option<usize>,
    max_len: usize,
    step_rows: impl Fn(i32) -> ([i32; 3], [i32; 3]),
    kernels: &[&str],
) {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (rows, heads, d, n_slots) = (3, 4, 64, 3);
    let hd = heads * d;
    for (label, dev) in devices_or_skip() {
        let act = dev.compute_dtype();
        let cshape = [n_slots, heads, max_len, d];
        let c0 = round_bf16(&random_f32(seed, n_slots * hd * max_len, 1.0));
        let (mut kc, mut vc) =
            (Tensor::from_f32(&dev, act, &cshape, &c0).unwrap(), Tensor::from_f32(&dev, act, &cshape, &c0).unwrap());
        let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &t3_inv_freq(d)).unwrap();
        let mut qkv = Tensor::uninit(&dev, act, &[rows, 3 * hd]).unwrap();
        let mut pos = Tensor::from_i32(&dev, &[rows], &[0; 3]).unwrap();
        let slots = Tensor::from_i32(&dev, &[rows], &[2, 0, 1]).unwrap();
        let mut lens = Tensor::from_i32(&dev, &[rows], &[0; 3]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[rows, hd]).unwrap();
        let mut scratch = Tensor::uninit(&dev, DType::F32, &[rows, heads, splits.unwrap_or(1), d + 2]).unwrap();
        let graph = dev
            .capture(|| {
                let (q, p, sl, inv, k, v, l, o) =
                    (qkv.view(), pos.view(), slots.view(), inv.view(), kc.view_mut(), vc.view_mut(), lens.view(), out.view_mut());
                match splits {
                    None => ops::rope_attention_decode(q, p, sl, inv, k, v, l, o, 0.125),
                    Some(_) => ops::rope_attention_decode_split(q, p, sl, inv, k, v, l, o, scratch.view_mut(), 0.125),
                }
            })
            .unwrap();
        assert_eq!(graph.kernel_names(), kernels, "{label}");
        let mut reference = DecodeCase {
            rows,
            heads,
            d,
            n_slots,
            max_len,
            qkv: vec![],
            pos: vec![],
            slots: vec![2, 0, 1],
            lens: vec![],
            k: c0.clone(),
            v: c0.clone(),
            inv: t3_inv_freq(d),
            scale: 0.125,
        };
        for step in 0..4i32 {
            let q = round_bf16(&random_f32(seed + 1 + step as u64, rows * 3 * hd, 1.0));
            let (p, l) = step_rows(step);
            qkv.copy_from_f32(&q).unwrap();
            pos.copy_from_i32(&p).unwrap();
            lens.copy_from_i32(&l).unwrap();
            graph.replay().unwrap();
            reference.qkv = q;
            reference.pos = p.to_vec();
            reference.lens = l.to_vec();
            let want = reference.run_unfused_with(&dev, false, splits).unwrap();
            let what = format!("{label}: step {step} seed {seed}");
            assert_bits_eq(&format!("{what}: out"), &out.to_f32_vec().unwrap(), &want.out);
            assert_bits_eq(&format!("{what}: k_cache"), &kc.to_f32_vec().unwrap(), &want.k);
            assert_bits_eq(&format!("{what}: v_cache"), &vc.to_f32_vec().unwrap(), &want.v);
            (reference.k, reference.v) = (want.k, want.v);
        }
    }
}

#[test]
fn rope_attention_decode_replays_as_one_launch() {
    // row 1 finishes after step 1 (len 0 from then on)
    let rows = |step: i32| ([5 + step, 9 + step, step], [6 + step, if step < 2 { 10 + step } else { 0 }, step + 1]);
    check_replayed_decode(None, 24, rows, &["rope_attn_decode_d64_bf16"]);
}

// ---- rope_attention_decode_split (flash-decoding for few rows × heads)

/// Key slice counts the split tests run: no split, even and odd counts, more slices than 32-position
/// chunks of most lengths (trailing empty slices), and the most the chooser picks.
const SPLITS: [usize; 5] = [1, 2, 3, 7, ops::DECODE_MAX_SPLITS];

#[test]
fn rope_attention_decode_split_equals_the_unfused_split_pair_bit_for_bit() {
    // the fused split kernel + combine against rope_kv_write then attention_cached_split with the same
    // scratch shape: the same slices, block widths and summation order
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for (label, dev) in devices_or_skip() {
        for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
            let s = seed.wrapping_add(i as u64 * 1000);
            let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
            for n in SPLITS {
                let what =
                    format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} splits {n} seed {s}", c.lens);
                let fused = c.run_fused_with(&dev, Some(n)).unwrap();
                let unfused = c.run_unfused_with(&dev, false, Some(n)).unwrap();
                assert_bits_eq(&format!("{what}: out"), &fused.out, &unfused.out);
                assert_bits_eq(&format!("{what}: k_cache"), &fused.k, &unfused.k);
                assert_bits_eq(&format!("{what}: v_cache"), &fused.v, &unfused.v);
                let hd = heads * d;
                for &r in inactive {
                    assert!(fused.out[r * hd..(r + 1) * hd].iter().all(|&x| x == 0.0), "{what}: inactive row {r} must be zeros");
                }
                assert!(fused.out.iter().all(|x| x.is_finite()), "{what}: a live row read a poisoned cache cell");
                if n == 1 {
                    // one slice is the unsplit op, launch for launch
                    let plain = c.run_fused(&dev).unwrap();
                    assert_bits_eq(&format!("{what}: out vs rope_attention_decode"), &fused.out, &plain.out);
                }
            }
        }
    }
}

#[test]
fn rope_attention_decode_split_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cpu = Device::cpu();
    let devices = devices_or_skip();
    for (i, &(rows, heads, d, n_slots, max_len, inactive)) in DECODE_CASES.iter().enumerate() {
        let s = seed.wrapping_add(i as u64 * 1000 + 7);
        let c = DecodeCase::random(s, rows, heads, d, n_slots, max_len, inactive);
        // Cpu: the split op is the unsplit one (the scratch is not touched)
        let plain = c.run_fused(&cpu).unwrap();
        let split = c.run_fused_with(&cpu, Some(3)).unwrap();
        assert_bits_eq(&format!("cpu: rows {rows} d {d} seed {s}: out"), &split.out, &plain.out);
        let want = c.run_unfused(&cpu, true).unwrap();
        for (label, dev) in &devices {
            for n in SPLITS {
                let got = c.run_fused_with(dev, Some(n)).unwrap();
                let what =
                    format!("{label}: rows {rows} heads {heads} d {d} max_len {max_len} lens {:?} splits {n} seed {s}", c.lens);
                assert_close(&format!("{what}: out"), &got.out, &want.out, BF16_REL, ATTN_ABS);
                assert_close(&format!("{what}: k_cache"), &got.k, &want.k, BF16_REL, 1e-5);
                assert_close(&format!("{what}: v_cache"), &got.v, &want.v, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn rope_attention_decode_split_bad_rows_are_nan_and_write_nothing() {
    // A bad position with a valid length and slot is seen only by the fused kernel, not by the
    // combine: its slices must still make the row NaN.
    let (heads, d, n_slots, max_len) = (2, 32, 8, 70);
    let hd = heads * d;
    let mut c = DecodeCase::random(fresh_seed(), 8, heads, d, n_slots, max_len, &[]);
    c.k = round_bf16(&random_f32(18, c.k.len(), 1.0));
    c.v = round_bf16(&random_f32(19, c.v.len(), 1.0));
    let m = max_len as i32;
    c.pos = vec![40, 1, 1, m, -1, 3, 3, 99];
    c.lens = vec![41, m + 1, -1, 40, 40, 4, 4, 0];
    c.slots = vec![0, 1, 2, 3, 4, n_slots as i32, -1, -7];
    let good = DecodeCase {
        rows: 2,
        qkv: [&c.qkv[..3 * hd], &c.qkv[7 * 3 * hd..]].concat(),
        pos: vec![c.pos[0], c.pos[7]],
        lens: vec![c.lens[0], 0],
        slots: vec![c.slots[0], c.slots[7]],
        ..c.clone()
    };
    for (label, dev) in devices_or_skip() {
        for n in [2, 5] {
            let what = format!("{label}: splits {n}");
            // a scratch holding finite stale partials (max 1, sum 1, acc 1): every slice of a bad row
            // must be overwritten
            let got = c.run_fused_scratch(&dev, Some(n), 1.0).unwrap();
            let want = good.run_unfused_with(&dev, false, Some(n)).unwrap();
            assert_bits_eq(&format!("{what}: good row"), &got.out[..hd], &want.out[..hd]);
            for r in 1..7 {
                assert!(got.out[r * hd..(r + 1) * hd].iter().all(|v| v.is_nan()), "{what}: bad row {r} must be NaN");
            }
            assert!(got.out[7 * hd..].iter().all(|&v| v == 0.0), "{what}: the inactive row must be zeros");
            assert_bits_eq(&format!("{what}: k_cache"), &got.k, &want.k);
            assert_bits_eq(&format!("{what}: v_cache"), &got.v, &want.v);
        }
    }
}

#[test]
fn rope_attention_decode_split_scratch_errors_and_one_slice_leaves_it_alone() {
    let mut all = vec![("cpu".to_string(), Device::cpu())];
    all.extend(kernel_devices());
    let (rows, heads, d, n_slots, max_len) = (3, 2, 32, 3, 20);
    for (label, dev) in all {
        let c = DecodeCase::random(fresh_seed(), rows, heads, d, n_slots, max_len, &[1]);
        let act = dev.compute_dtype();
        let hd = heads * d;
        let qkv = Tensor::from_f32(&dev, act, &[rows, 3 * hd], &c.qkv).unwrap();
        let i32t = |v: &[i32]| Tensor::from_i32(&dev, &[v.len()], v).unwrap();
        let (pos, slots, lens) = (i32t(&c.pos), i32t(&c.slots), i32t(&c.lens));
        let inv = Tensor::from_f32(&dev, DType::F32, &[d / 2], &c.inv).unwrap();
        let mut kc = Tensor::from_f32(&dev, act, &c.cshape(), &c.k).unwrap();
        let mut vc = Tensor::from_f32(&dev, act, &c.cshape(), &c.v).unwrap();
        let mut out = Tensor::zeros(&dev, act, &[rows, hd]).unwrap();
        let mut run = |scratch: ViewMut<'_>| {
            ops::rope_attention_decode_split(
                qkv.view(),
                pos.view(),
                slots.view(),
                inv.view(),
                kc.view_mut(),
                vc.view_mut(),
                lens.view(),
                out.view_mut(),
                scratch,
                c.scale,
            )
        };
        for bad in [[rows + 1, heads, 2, d + 2], [rows, heads + 1, 2, d + 2], [rows, heads, 0, d + 2], [rows, heads, 2, d]] {
            let mut s = Tensor::zeros(&dev, DType::F32, &bad).unwrap();
            let e = run(s.view_mut()).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("scratch"), "{label} {bad:?}: {e}");
        }
        let mut s3 = Tensor::zeros(&dev, DType::F32, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s3.view_mut().reshape(&[rows * heads, 2, d + 2]).unwrap()).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{label}: a rank-3 scratch: {e}");
        let mut s_bf = Tensor::zeros(&dev, DType::BF16, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s_bf.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DType { what: "scratch", .. }), "{label}: {e}");
        let other = if dev.kind() == BackendKind::Cpu { Device::cpu_bf16_weights() } else { Device::cpu() };
        let mut s_other = Tensor::zeros(&other, DType::F32, &[rows, heads, 2, d + 2]).unwrap();
        let e = run(s_other.view_mut()).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{label}: {e}");
        // one slice: the unsplit launch, the scratch untouched
        let marker = random_f32(5, rows * heads * (d + 2), 1.0);
        let mut s1 = Tensor::from_f32(&dev, DType::F32, &[rows, heads, 1, d + 2], &marker).unwrap();
        run(s1.view_mut()).unwrap();
        assert_bits_eq(&format!("{label}: a one-slice scratch"), &s1.to_f32_vec().unwrap(), &marker);
    }
}

#[test]
fn rope_attention_decode_split_replays_as_two_launches() {
    // row 0 crosses slice boundaries as it grows; row 1 finishes after step 1; row 2 starts at 0
    let rows =
        |step: i32| ([95 + 13 * step, 140 + step, step], [96 + 13 * step, if step < 2 { 141 + step } else { 0 }, step + 1]);
    check_replayed_decode(Some(5), 150, rows, &["rope_attn_decode_d64_bf16", "attn_cached_combine_bf16"]);
}

#[test]
fn the_decode_split_follows_rows_times_heads_against_the_sm_count() {
    // split exactly when rows · heads < SMs; about two blocks per SM; never on Cpu
    for sms in [1usize, 7, 108, 132] {
        for rows in 1..=20usize {
            for heads in [1usize, 3, 16] {
                let s = ops::decode_attention_splits(rows, heads, Some(sms));
                if rows * heads < sms {
                    assert!((2..=ops::DECODE_MAX_SPLITS).contains(&s), "{rows} × {heads} on {sms} SMs: {s}");
                    let want = (2 * sms).div_ceil(rows * heads).clamp(2, ops::DECODE_MAX_SPLITS);
                    assert_eq!(s, want, "{rows} × {heads} on {sms} SMs");
                } else {
                    assert_eq!(s, 1, "{rows} × {heads} on {sms} SMs");
                }
                assert_eq!(ops::decode_attention_splits(rows, heads, None), 1);
            }
        }
    }
    // T3 at batch 1 (2 CFG rows × 16 heads = 32 blocks) on an H100: 9 slices, 288 blocks
    assert_eq!(ops::decode_attention_splits(2, 16, Some(132)), 9);
    assert_eq!(ops::decode_attention_splits(8, 16, Some(132)), 3);
    assert_eq!(ops::decode_attention_splits(10, 16, Some(132)), 1);
    assert_eq!(ops::decode_attention_splits(0, 16, Some(132)), 1);
    // the device reports its SM count: the emulated one follows EmuOptions
    assert_eq!(Device::cpu().multiprocessor_count().unwrap(), None);
    if let Ok(dev) = Device::emu(EmuOptions::default()) {
        assert_eq!(dev.multiprocessor_count().unwrap(), Some(tts_kernels::EMU_DEFAULT_MULTIPROCESSORS as usize));
        assert_eq!(tts_kernels::EMU_DEFAULT_MULTIPROCESSORS, 132);
        let seven = Device::emu(EmuOptions { multiprocessors: 7, ..EmuOptions::default() }).unwrap();
        assert_eq!(seven.multiprocessor_count().unwrap(), Some(7));
        let e = Device::emu(EmuOptions { multiprocessors: 0, ..EmuOptions::default() }).unwrap_err();
        assert!(e.to_string().contains("multiprocessors"), "{e}");
    }
    for (label, dev) in kernel_devices() {
        let sms = dev.multiprocessor_count().unwrap();
        assert!(sms.is_some_and(|n| n > 0), "{label}: {sms:?}");
    }
}

// ---- a Llama decoder layer: 5 fused launches against the 9 unfused ones

struct Layer {
    in_norm: Tensor,
    qkv: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate_up: Tensor,
    down: Tensor,
}

#[test]
fn a_decoder_layer_takes_five_launches_and_matches_the_unfused_layer() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let (rows, hidden, heads, d, inner, n_slots, max_len) = (3usize, 128usize, 2usize, 64usize, 200usize, 3usize, 16usize);
    let hd = heads * d;
    let cpu = Device::cpu();
    let mut devices = vec![("cpu".to_string(), cpu.clone())];
    devices.extend(devices_or_skip());
    let h0 = random_f32(seed, rows * hidden, 1.0);
    let cache0 = round_bf16(&random_f32(seed + 1, n_slots * hd * max_len, 1.0));
    let (pos, slots, lens) = ([4, 7, 0], [1, 0, -1], [5, 8, 0]); // row 2 finished (len 0, no slot)
    let ws = |s: u64, n: usize, k: usize| round_bf16(&random_f32(seed + s, n * k, 1.0 / (k as f32).sqrt()));
    let weights = [
        round_bf16(&random_f32(seed + 2, hidden, 1.0)),
        ws(3, 3 * hd, hidden),
        ws(4, hidden, hd),
        round_bf16(&random_f32(seed + 5, hidden, 1.0)),
        ws(6, 2 * inner, hidden),
        ws(7, hidden, inner),
    ];
    let mut results = Vec::new();
    for (label, dev) in &devices {
        let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
        let t = |dt: DType, shape: &[usize], v: &[f32]| Tensor::from_f32(dev, dt, shape, v).unwrap();
        let lw = Layer {
            in_norm: t(act, &[hidden], &weights[0]),
            qkv: t(wt, &[3 * hd, hidden], &weights[1]),
            o: t(wt, &[hidden, hd], &weights[2]),
            post_norm: t(act, &[hidden], &weights[3]),
            gate_up: t(wt, &[2 * inner, hidden], &weights[4]),
            down: t(wt, &[hidden, inner], &weights[5]),
        };
        let inv = t(DType::F32, &[d / 2], &t3_inv_freq(d));
        let cshape = [n_slots, heads, max_len, d];
        let (p, s, l) = (
            Tensor::from_i32(dev, &[rows], &pos).unwrap(),
            Tensor::from_i32(dev, &[rows], &slots).unwrap(),
            Tensor::from_i32(dev, &[rows], &lens).unwrap(),
        );
        let scale = 1.0 / (d as f32).sqrt();
        // fused
        let mut h = t(DType::F32, &[rows, hidden], &h0);
        let (mut kc, mut vc) = (t(act, &cshape, &cache0), t(act, &cshape, &cache0));
        let mut qkv = Tensor::uninit(dev, act, &[rows, 3 * hd]).unwrap();
        let mut attn = Tensor::uninit(dev, act, &[rows, hd]).unwrap();
        let mut m = Tensor::uninit(dev, act, &[rows, inner]).unwrap();
        let mut fused_layer = || -> Result<()> {
            ops::rmsnorm_linear(h.view(), lw.in_norm.view(), EPS, lw.qkv.view(), qkv.view_mut())?;
            ops::rope_attention_decode(
                qkv.view(),
                p.view(),
                s.view(),
                inv.view(),
                kc.view_mut(),
                vc.view_mut(),
                l.view(),
                attn.view_mut(),
                scale,
            )?;
            ops::linear_add_residual(attn.view(), lw.o.view(), h.view_mut())?;
            ops::rmsnorm_linear_swiglu(h.view(), lw.post_norm.view(), EPS, lw.gate_up.view(), m.view_mut())?;
            ops::linear_add_residual(m.view(), lw.down.view(), h.view_mut())
        };
        if dev.kind() != BackendKind::Cpu {
            let names = dev.capture(&mut fused_layer).unwrap().kernel_names().to_vec();
            assert_eq!(
                names,
                [
                    "gemv_rmsnorm_bf16",
                    "rope_attn_decode_d64_bf16",
                    "gemv_add_residual_f32",
                    "gemv_rmsnorm_swiglu_bf16",
                    "gemv_add_residual_f32"
                ],
                "{label}"
            );
        }
        fused_layer().unwrap();
        let fused_h = h.to_f32_vec().unwrap();
        let fused_k = kc.to_f32_vec().unwrap();
        // unfused (T3's layer today, with the MLP output joining the residual at the end)
        let mut h = t(DType::F32, &[rows, hidden], &h0);
        let (mut kc, mut vc) = (t(act, &cshape, &cache0), t(act, &cshape, &cache0));
        let u = |c: usize| Tensor::uninit(dev, act, &[rows, c]).unwrap();
        let (mut a, mut qkv, mut q, mut attn, mut x, mut gu, mut m) =
            (u(hidden), u(3 * hd), u(hd), u(hd), u(hidden), u(2 * inner), u(inner));
        // the Cpu rope_kv_write rejects the finished row's slot -1: rotate the live rows only there
        let live = if dev.kind() == BackendKind::Cpu { 2 } else { rows };
        ops::add_rmsnorm(None, h.view_mut(), lw.in_norm.view(), a.view_mut(), EPS).unwrap();
        ops::linear(a.view(), lw.qkv.view(), None, qkv.view_mut()).unwrap();
        ops::rope_kv_write(
            qkv.view().narrow_rows(0, live).unwrap(),
            p.view().narrow_rows(0, live).unwrap(),
            s.view().narrow_rows(0, live).unwrap(),
            inv.view(),
            q.view_mut().narrow_rows(0, live).unwrap(),
            kc.view_mut(),
            vc.view_mut(),
        )
        .unwrap();
        if live < rows {
            q.view_mut().narrow_rows(live, rows - live).unwrap().copy_from_f32(&vec![0.0; (rows - live) * hd]).unwrap();
        }
        ops::attention_cached(q.view(), kc.view(), vc.view(), s.view(), l.view(), attn.view_mut(), scale).unwrap();
        ops::linear(attn.view(), lw.o.view(), None, x.view_mut()).unwrap();
        let x_attn = x.to_f32_vec().unwrap();
        ops::add_rmsnorm(Some(x.view()), h.view_mut(), lw.post_norm.view(), a.view_mut(), EPS).unwrap();
        ops::linear(a.view(), lw.gate_up.view(), None, gu.view_mut()).unwrap();
        ops::swiglu(gu.view(), m.view_mut()).unwrap();
        ops::linear(m.view(), lw.down.view(), None, x.view_mut()).unwrap();
        ops::add_residual(h.view_mut(), x.view(), None).unwrap();
        let unfused_h = h.to_f32_vec().unwrap();
        let scale: Vec<f32> = x_attn.iter().zip(x.to_f32_vec().unwrap()).map(|(a, b)| a.abs() + b.abs()).collect();
        let floor = rms(&scale);
        let what = format!("{label}: layer seed {seed}");
        if dev.kind() == BackendKind::Cpu {
            assert_bits_eq(&format!("{what}: h"), &fused_h, &unfused_h);
            assert_bits_eq(&format!("{what}: k_cache"), &fused_k, &kc.to_f32_vec().unwrap());
        } else {
            // the fused layer skips two bf16 roundings of sub-layer outputs (and its GEMMs sum in
            // another order): errors of a few 2^-8 of each sub-layer's output
            assert_layer_close(&format!("{what}: h"), &fused_h, &unfused_h, &scale, 2.0 * BF16_REL, 2e-2 * floor);
            // qkv differs in the last bf16 bit where the two GEMMs' summation orders round apart
            assert_close(&format!("{what}: k_cache"), &fused_k, &kc.to_f32_vec().unwrap(), 2.0 * BF16_REL, 1e-2);
        }
        results.push((label.clone(), fused_h, scale, floor));
    }
    // and every backend against the f32 Cpu layer
    let (_, want, scale, floor) = &results[0];
    for (label, got, _, _) in &results[1..] {
        assert_layer_close(&format!("{label}: fused layer vs cpu seed {seed}"), got, want, scale, 4.0 * BF16_REL, 3e-2 * floor);
    }
}
