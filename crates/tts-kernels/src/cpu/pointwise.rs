//! Pointwise activations with a padding mask, per-batch broadcasts, column concatenation and the
//! flow-matching Euler step (S3Gen). Mirrors `kernels/pointwise.cu`: the same f32 formulas in the
//! same order (products rounded before any add).
use super::fastmath::{self, Kind};

/// A pointwise function (math in f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `x` (a copy, a dtype conversion, or just the mask).
    Identity,
    /// `x·sigmoid(x)`, computed as `x / (1 + exp(−x))` (ATen).
    Silu,
    /// The exact GELU, `0.5·x·(1 + erf(x/√2))` (computed as ATen does, `erf(x·√½)`).
    Gelu,
    /// `x·tanh(softplus(x))`, computed as ATen's `torch.nn.Mish` does: `x·tanh(log1p(exp(x)))`,
    /// without a threshold (the same f32 values as softplus with torch's threshold 20: tanh is 1
    /// there either way).
    Mish,
    /// `x` if `x > 0`, else `slope·x` (`F.leaky_relu`; the same values as `x ≥ 0`).
    LeakyRelu(f32),
    /// `x` if `x > 0`, else `exp(x) − 1` (alpha 1, computed with `expm1`).
    Elu,
    /// `|x|`.
    Abs,
    /// `s·x`.
    Scale(f32),
    /// Snake: `x + sin(α_c·x)² / (α_c + 1e-9)` with a per-channel `α` (the `alpha` argument),
    /// computed as hifigan.py does: `x + (1 / (α_c + 1e-9))·sin(x·α_c)²`. On Cuda/Emu the sine of
    /// `|α_c·x| ≥ 2^26` is NaN.
    Snake,
}

/// `act(x)` for channel `c` (`alpha` is the Snake α of that channel, ignored otherwise). The
/// formulas of torch (ATen) in f32:
/// - Silu `x / (1 + exp(−x))`, Gelu `0.5·x·(1 + erf(x·√½))`, Mish `x·tanh(log1p(exp(x)))`,
/// - LeakyRelu `x > 0 ? x : slope·x`, Elu `x > 0 ? x : expm1(x)`,
/// - Snake (hifigan.py) `x + (1 / (α + 1e-9))·sin(α·x)²`.
///
/// Silu, Gelu, Mish and Elu come from [`fastmath`] (each evaluated in f64 and rounded once: within
/// 1 ulp of the exact value, vectorised over slices by [`activation`]); Snake's sine is libm's.
#[inline]
pub fn activate(act: Activation, x: f32, alpha: f32) -> f32 {
    match act {
        Activation::Identity => x,
        Activation::Silu => fastmath::silu(x),
        Activation::Gelu => fastmath::gelu(x),
        Activation::Mish => fastmath::mish(x),
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                x
            } else {
                x * slope
            }
        }
        Activation::Elu => fastmath::elu(x),
        Activation::Abs => x.abs(),
        Activation::Scale(s) => x * s,
        Activation::Snake => {
            let s = (alpha * x).sin();
            x + (1.0 / (alpha + 1e-9)) * (s * s)
        }
    }
}

/// `v = act(v)` in place over whole rows of `cols` values (`v.len()` a multiple of `cols`): the
/// [`fastmath`] activations as one vectorised pass, the others per element ([`activate`]).
pub(super) fn activate_rows(act: Activation, v: &mut [f32], cols: usize, alpha: Option<&[f32]>) {
    let kind = match act {
        Activation::Gelu => Kind::Gelu,
        Activation::Silu => Kind::Silu,
        Activation::Mish => Kind::Mish,
        Activation::Elu => Kind::Elu,
        Activation::Identity => return,
        Activation::Snake => {
            for row in v.chunks_exact_mut(cols) {
                for (c, o) in row.iter_mut().enumerate() {
                    *o = activate(act, *o, alpha.map_or(0.0, |a| a[c]));
                }
            }
            return;
        }
        _ => {
            v.iter_mut().for_each(|o| *o = activate(act, *o, 0.0));
            return;
        }
    };
    fastmath::map_inplace(kind, v);
}

/// Rows per parallel task of the activations (large tensors are split across the CPU's cores).
const ROWS_PER_TASK: usize = 64;

/// The shared loop of [`activation`] and [`activation_inplace`]: `f(r, rows)` computes the rows
/// starting at row `r` in place (`rows` holds their current values: x, or a copy of it); masked
/// rows are 0 and never computed. Rows are independent, so they run in parallel chunks.
fn act_rows(out: &mut [f32], cols: usize, mask: Option<(&[i32], usize)>, f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    if cols == 0 {
        return;
    }
    let chunk = ROWS_PER_TASK * cols;
    out.par_chunks_mut(chunk).enumerate().for_each(|(t, block)| {
        let r0 = t * ROWS_PER_TASK;
        let Some((lens, n)) = mask else {
            f(r0, block);
            return;
        };
        for (rr, row) in block.chunks_exact_mut(cols).enumerate() {
            let r = r0 + rr;
            if ((r % n) as i64) < lens[r / n] as i64 {
                f(r, row);
            } else {
                row.fill(0.0);
            }
        }
    });
}

/// `out = act(x)` over rows of `cols` values (`cols` = the channel count C), `alpha` `[C]` the
/// per-channel Snake α (required by [`Activation::Snake`]). With `mask = (lens, N)` the data is
/// `[B, N, C]` and every element of a row `t >= lens[b]` is 0 (x is not read there).
pub fn activation(
    x: &[f32],
    out: &mut [f32],
    cols: usize,
    act: Activation,
    alpha: Option<&[f32]>,
    mask: Option<(&[i32], usize)>,
) {
    act_rows(out, cols, mask, |r, rows| {
        rows.copy_from_slice(&x[r * cols..r * cols + rows.len()]);
        activate_rows(act, rows, cols, alpha);
    });
}

/// [`activation`] in place.
pub fn activation_inplace(x: &mut [f32], cols: usize, act: Activation, alpha: Option<&[f32]>, mask: Option<(&[i32], usize)>) {
    act_rows(x, cols, mask, |_, rows| activate_rows(act, rows, cols, alpha));
}

/// `y[b, t, c] += v[b, c]`; `y` `[B, N, C]` with `N = n`, `C = cols`; `v` `[B, C]`.
pub fn add_batch_bias(y: &mut [f32], v: &[f32], n: usize, cols: usize) {
    if n == 0 || cols == 0 {
        return;
    }
    for (r, row) in y.chunks_exact_mut(cols).enumerate() {
        let b = r / n;
        for (o, &x) in row.iter_mut().zip(&v[b * cols..(b + 1) * cols]) {
            *o += x;
        }
    }
}

/// `y += scale·x` elementwise (the product rounded, then the add).
pub fn add_scaled(y: &mut [f32], x: &[f32], scale: f32) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += scale * v;
    }
}

/// `dst[b, t, offset + c] = src[b, t', c]` with `t' = t` when `src_n == n`, `t' = 0` when
/// `src_n == 1`; `src` `[B, src_n, cs]`, `dst` `[B, n, cd]`.
pub fn write_cols(src: &[f32], dst: &mut [f32], n: usize, src_n: usize, cs: usize, cd: usize, offset: usize) {
    if cs == 0 || cd == 0 || n == 0 {
        return;
    }
    for (r, row) in dst.chunks_exact_mut(cd).enumerate() {
        let (b, t) = (r / n, if src_n == 1 { 0 } else { r % n });
        let s = (b * src_n + t) * cs;
        row[offset..offset + cs].copy_from_slice(&src[s..s + cs]);
    }
}

/// The flow-matching Euler step with classifier-free guidance (flow_matching.py:139-141):
/// `x[i] = x[i] + dt·((1 + cfg)·v[i] − cfg·v[len + i])` for `x` `[B, N, C]` (`len` elements, rows of
/// `cols`), `v` `[2B, N, C]` conditional rows first; `1 + cfg` is rounded to f32 first. With `est`
/// (`[2B, N, c_in]`), the new row `r` of x is also written to columns `0..cols` of est rows `r` and
/// `B·N + r`.
pub fn cfm_euler_cfg(x: &mut [f32], v: &[f32], est: Option<(&mut [f32], usize)>, cols: usize, dt: f32, cfg: f32) {
    let len = x.len();
    let cfg1 = 1.0 + cfg;
    for (i, xi) in x.iter_mut().enumerate() {
        let d = cfg1 * v[i] - cfg * v[len + i];
        *xi += dt * d;
    }
    if let Some((est, c_in)) = est
        && cols > 0
    {
        let rows = len / cols;
        for (r, xr) in x.chunks_exact(cols).enumerate() {
            est[r * c_in..r * c_in + cols].copy_from_slice(xr);
            est[(rows + r) * c_in..(rows + r) * c_in + cols].copy_from_slice(xr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 without cancellation: `erf(x) = 2/√π · e^(−x²) · Σ_k 2^k x^(2k+1) / (1·3·…·(2k+1))`
    /// (all terms positive), for the Gelu check.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 6.0 {
            return x.signum(); // 1 − erf(6) < 1e-16
        }
        let (mut term, mut sum, mut k) = (x, x, 0.0);
        while term.abs() > 1e-18 * sum.abs() && k < 500.0 {
            k += 1.0;
            term *= 2.0 * x * x / (2.0 * k + 1.0);
            sum += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
    }

    fn reference64(act: Activation, x: f64, alpha: f64) -> f64 {
        match act {
            Activation::Identity => x,
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
            Activation::Mish => x * (1.0 + x.exp()).ln().tanh(),
            Activation::LeakyRelu(s) => x.max(0.0) + (s as f64) * x.min(0.0),
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp() - 1.0
                }
            }
            Activation::Abs => x.abs(),
            Activation::Scale(s) => s as f64 * x,
            Activation::Snake => x + (alpha * x).sin().powi(2) / alpha,
        }
    }

    const ALL: [Activation; 9] = [
        Activation::Identity,
        Activation::Silu,
        Activation::Gelu,
        Activation::Mish,
        Activation::LeakyRelu(0.1),
        Activation::Elu,
        Activation::Abs,
        Activation::Scale(-1.75),
        Activation::Snake,
    ];

    #[test]
    fn activations_match_independent_f64_formulas() {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).chain([-30.0, -15.0, 15.0, 30.0, 90.0, -90.0]).collect();
        for act in ALL {
            for &alpha in &[0.37f32, 1.0, 2.9] {
                for &x in &xs {
                    let got = activate(act, x, alpha) as f64;
                    let want = reference64(act, x as f64, alpha as f64);
                    // a few f32 ulps of the terms, plus an absolute floor for the cancellations of
                    // Gelu (1 + erf near −1) and Snake (x + sin²/α near 0)
                    let tol = 4e-7 * want.abs().max(x.abs() as f64) + 1e-7;
                    assert!((got - want).abs() <= tol, "{act:?} α {alpha} x {x}: got {got}, want {want}");
                }
            }
        }
        // exact special values
        assert_eq!(activate(Activation::Mish, 100.0, 0.0), 100.0);
        assert_eq!(activate(Activation::Gelu, 0.0, 0.0), 0.0);
        assert_eq!(activate(Activation::Elu, -1e-3, 0.0), (-1e-3f32).exp_m1());
        assert_eq!(activate(Activation::LeakyRelu(0.2), -2.0, 0.0), -0.4);
        assert!(activate(Activation::Silu, f32::NAN, 0.0).is_nan());
    }

    #[test]
    fn masked_rows_are_zero_without_reading_x() {
        // [B 2, N 3, C 2]; batch 0 keeps 2 rows, batch 1 none; masked inputs are NaN
        let mut x = vec![1.5f32; 12];
        for v in &mut x[4..12] {
            *v = f32::NAN;
        }
        let mut out = vec![7.0; 12];
        activation(&x, &mut out, 2, Activation::Silu, None, Some((&[2, 0], 3)));
        let s = activate(Activation::Silu, 1.5, 0.0);
        assert_eq!(out, [s, s, s, s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // lens beyond N keeps every row; negative lens masks all
        let x2: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut y = x2.clone();
        activation_inplace(&mut y, 2, Activation::Scale(2.0), None, Some((&[7, -1], 3)));
        let want: Vec<f32> = (0..12).map(|i| if i < 6 { 2.0 * i as f32 } else { 0.0 }).collect();
        assert_eq!(y, want);
        // Snake reads α per channel
        let mut o = vec![0.0; 4];
        activation(&[1.0, 1.0, 2.0, 2.0], &mut o, 2, Activation::Snake, Some(&[1.0, 0.5]), None);
        let sn = |x: f32, a: f32| x + (1.0 / (a + 1e-9)) * (a * x).sin().powi(2);
        assert_eq!(o, [sn(1.0, 1.0), sn(1.0, 0.5), sn(2.0, 1.0), sn(2.0, 0.5)]);
    }

    #[test]
    fn broadcasts_concat_and_euler_step() {
        // add_batch_bias: [B 2, N 2, C 3]
        let mut y = vec![1.0f32; 12];
        add_batch_bias(&mut y, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], 2, 3);
        assert_eq!(y, [2.0, 3.0, 4.0, 2.0, 3.0, 4.0, 11.0, 21.0, 31.0, 11.0, 21.0, 31.0]);
        let mut y = vec![0.5f32; 3];
        add_scaled(&mut y, &[1.0, -2.0, 4.0], 0.25);
        assert_eq!(y, [0.75, 0.0, 1.5]);
        // write_cols: [B 2, N 2, 2] into columns 1..3 of [B 2, N 2, 4], and a broadcast row per batch
        let mut d = vec![0.0f32; 16];
        let src: Vec<f32> = (1..=8).map(|i| i as f32).collect();
        write_cols(&src, &mut d, 2, 2, 2, 4, 1);
        assert_eq!(d, [0., 1., 2., 0., 0., 3., 4., 0., 0., 5., 6., 0., 0., 7., 8., 0.]);
        write_cols(&[9.0, 8.0], &mut d, 2, 1, 1, 4, 3);
        assert_eq!(d, [0., 1., 2., 9., 0., 3., 4., 9., 0., 5., 6., 8., 0., 7., 8., 8.]);
        // Euler + CFG: x [B 1, N 2, C 2], v [2, 2, 2], est [2, 2, 3]
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        let v = [1.0f32, 1.0, 2.0, 0.0, 0.5, -1.0, 0.0, 4.0];
        let mut est = vec![-1.0f32; 12];
        cfm_euler_cfg(&mut x, &v, Some((&mut est, 3)), 2, 0.5, 0.5);
        // d = 1.5·vc − 0.5·vu
        let want = [1.0 + 0.5 * (1.5 - 0.25), 2.0 + 0.5 * (1.5 + 0.5), 3.0 + 0.5 * 3.0, 4.0 + 0.5 * (0.0 - 2.0)];
        assert_eq!(x, want);
        assert_eq!(est, [want[0], want[1], -1.0, want[2], want[3], -1.0, want[0], want[1], -1.0, want[2], want[3], -1.0]);
    }
}
