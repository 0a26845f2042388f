//! The fused decode GEMVs (`kernels/gemv.cu`: `ops::rmsnorm_linear`, `ops::rmsnorm_linear_swiglu`,
//! `ops::linear_add_residual`) against their Cpu reference and against the unfused op chains they
//! replace, and a whole T3 decoder layer of fused ops (with `ops::rope_attention_decode`) against the
//! unfused layer, on every kernel backend of this build and machine (Emu in forward, reverse and
//! random thread schedules; Cuda when a GPU is usable), with fresh random inputs (the seed is
//! printed; `TTS_TEST_SEED` replays it), odd shapes, outputs prefilled with NaN (every element must
//! be written) inside rows that must stay untouched.
use tts_kernels::testing::{
    BF16_REL, assert_bits_eq, assert_close, fresh_seed, kernel_devices, random_f32, round_bf16, t3_inv_freq,
};
use tts_kernels::{BackendKind, DType, Device, Error, Result, Tensor, ViewMut, cpu, ops};

const EPS: f32 = 1e-5;

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
    let devices = kernel_devices();
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
    for (label, dev) in kernel_devices() {
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
    for (label, dev) in kernel_devices() {
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
    for (label, dev) in kernel_devices() {
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
    devices.extend(kernel_devices());
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
                    "rope_attention_decode_d64_bf16",
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
