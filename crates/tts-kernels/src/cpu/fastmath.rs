//! Branch-free f32 transcendental functions for the Cpu activations, written so that a loop over a
//! slice auto-vectorises (AVX2 when the CPU has it, selected at run time; SSE2 otherwise).
//!
//! Every function widens its f32 argument to f64, evaluates a polynomial approximation whose
//! relative error is below 1e-12 in f64 arithmetic (plain multiplies and adds, no FMA, so the AVX2
//! and the fallback path give the same bits), and rounds once to f32. The result is therefore
//! within 0.5 ulp + ~1e-5 ulp of the exact value (the unit tests measure ≤ 1 ulp against f64
//! references). Composite activations (Gelu, Silu, Mish) are evaluated entirely in f64 and rounded
//! once, which is more accurate than composing f32 libm calls (torch's formula).
//!
//! Building blocks:
//! - `exp`: Cody-Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, Taylor polynomial of degree 10 for
//!   `e^r − 1`, and `2^n` built from the bits of `n` (the argument is clamped to ±200: f32 results
//!   overflow to inf or underflow to 0 there; NaN propagates through `r`).
//! - `expm1`: the same reduction, `scale·(e^r − 1) + (scale − 1)`: exact structure near 0.
//! - `erf`: `x·P(x²)` for `|x| < 1`, `1 − e^(−x²)·erfcx(|x|)` above, with erfcx a polynomial in
//!   `1/|x|` over `[1, 10.5]` (Chebyshev interpolants converted to monomials, max relative error
//!   2e-14 and 5e-13).
//! - `tanh(x) = expm1(2x) / (expm1(2x) + 2)`; Mish uses `tanh(log1p(u)) = u(u + 2) / (u(u + 2) + 2)`
//!   with `u = e^x` (no cancellation anywhere).

/// `erf(√t)/√t` on `t ∈ [0, 1]` as a polynomial in `u = 2t − 1`.
const ERF_SMALL: [f64; 10] = [
    0.9654687386698861,
    -0.1405360890227178,
    0.019852496688069144,
    -0.0022854855611628365,
    0.00021751716328619606,
    -1.7537169451919966e-05,
    1.223362551883156e-06,
    -7.511530029091774e-08,
    4.138802012221276e-09,
    -2.0426398350537055e-10,
];

/// `erfcx(a) = e^(a²)·erfc(a)` on `a ∈ [1, 10.5]` as a polynomial in `u = K1/a − K0`
/// (`s = 1/a ∈ [1/10.5, 1]` mapped to `[−1, 1]`).
const ERFCX_LARGE: [f64; 21] = [
    0.2753199404114359,
    0.18533944170393715,
    -0.037138518554147314,
    0.003082779162182861,
    0.0019194031818994643,
    -0.0013325409527023733,
    0.00048693740951869354,
    -8.730434134457135e-05,
    -2.871953090078874e-05,
    3.686500765953142e-05,
    -2.1058430630002283e-05,
    7.987628088184942e-06,
    -1.4322697406923693e-06,
    -7.369524980948057e-07,
    8.758560820102244e-07,
    -5.573711762605984e-07,
    3.682829347304678e-07,
    -1.762454130151863e-07,
    -3.305523846176495e-08,
    8.056589909496584e-08,
    -2.535004265761624e-08,
];
const ERFCX_K1: f64 = 2.0 / (1.0 - 1.0 / 10.5);
const ERFCX_K0: f64 = (1.0 / 10.5 + 1.0) / (1.0 - 1.0 / 10.5);

#[inline(always)]
fn horner<const N: usize>(c: &[f64; N], u: f64) -> f64 {
    let mut s = c[N - 1];
    let mut i = N - 1;
    while i > 0 {
        i -= 1;
        s = s * u + c[i];
    }
    s
}

/// `x` clamped to `[lo, hi]`, NaN kept (`f64::clamp` would too, but these selects vectorise).
#[inline(always)]
fn clamp_keep_nan(x: f64, lo: f64, hi: f64) -> f64 {
    let x = if x > hi { hi } else { x };
    if x < lo { lo } else { x }
}

/// `(2^n, e^r − 1)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`, for `x` clamped to ±200.
#[inline(always)]
fn exp_parts(x: f64) -> (f64, f64) {
    const SHIFT: f64 = 6755399441055744.0; // 1.5·2^52: adding it rounds to an integer in the low bits
    pub(super) const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // ln2 rounded to 32 bits: n·LN2_HI is exact
    pub(super) const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // ln2 − LN2_HI
    let x = clamp_keep_nan(x, -200.0, 200.0);
    let k = x * std::f64::consts::LOG2_E + SHIFT;
    let n = k - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r − 1 = r·(1 + r/2 + r²/6 + … + r⁹/10!), truncation error < 7e-12 relative for |r| ≤ ln2/2
    let mut h = 1.0 / 3_628_800.0;
    h = h * r + 1.0 / 362_880.0;
    h = h * r + 1.0 / 40_320.0;
    h = h * r + 1.0 / 5_040.0;
    h = h * r + 1.0 / 720.0;
    h = h * r + 1.0 / 120.0;
    h = h * r + 1.0 / 24.0;
    h = h * r + 1.0 / 6.0;
    h = h * r + 0.5;
    h = h * r + 1.0;
    let p = r * h;
    // the low bits of k hold n (|n| ≤ 289); (n + 1023) << 52 is the f64 2^n (the high bits of
    // SHIFT's pattern shift out)
    let scale = f64::from_bits((k.to_bits().wrapping_add(1023)) << 52);
    (scale, p)
}

/// `e^x` in f64 for `|x| ≤ 200`; inf above, 0 below (so that `±inf·e^x` is NaN as in f32 libm).
#[inline(always)]
fn exp64(x: f64) -> f64 {
    let (s, p) = exp_parts(x);
    let y = s + s * p;
    let y = if x > 200.0 { f64::INFINITY } else { y };
    if x < -200.0 { 0.0 } else { y }
}

/// `e^x − 1` in f64 (clamped at ±200); the sign of a zero is not kept.
#[inline(always)]
fn expm1_64(x: f64) -> f64 {
    let (s, p) = exp_parts(x);
    s * p + (s - 1.0)
}

/// `(erf(z) for |z| < 1, erfc(|z|) for |z| ≥ 1)`: the two pieces of [`erf`] and [`gelu`].
#[inline(always)]
fn erf_parts(z: f64) -> (f64, f64) {
    let t = z * z;
    let small = z * horner(&ERF_SMALL, 2.0 * t - 1.0);
    let a = clamp_keep_nan(z.abs(), 1.0, 10.5);
    let u = ERFCX_K1 / a - ERFCX_K0;
    let erfc = exp64(-t) * horner(&ERFCX_LARGE, u);
    (small, erfc)
}

/// `e^x` (≤ 1 ulp; overflow to inf above 88.72, underflow to 0 below −103.97, NaN kept).
// A tested building block, not used by the activations (yet).
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp64(x as f64) as f32
}

/// `e^x − 1` (≤ 1 ulp, accurate near 0, −1 for large negative x, ±0 kept).
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    let y = expm1_64(x as f64) as f32;
    if x == 0.0 { x } else { y }
}

/// `tanh(x)` (≤ 1 ulp, saturates at ±1, ±0 kept).
// A tested building block, not used by the activations (yet).
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = expm1_64(2.0 * x as f64);
    let y = (e / (e + 2.0)) as f32;
    if x == 0.0 { x } else { y }
}

/// `erf(x)` (≤ 1 ulp).
// A tested building block, not used by the activations (yet).
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x as f64;
    let (small, erfc) = erf_parts(z);
    let large = (1.0 - erfc).copysign(z);
    (if z.abs() < 1.0 { small } else { large }) as f32
}

/// Gelu `0.5·x·(1 + erf(x·√½))`, with `1 + erf` evaluated as erfc for negative x (no cancellation).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    let (small, erfc) = erf_parts(z);
    let large = if z > 0.0 { 2.0 - erfc } else { erfc };
    let one_plus_erf = if z.abs() < 1.0 { 1.0 + small } else { large };
    (0.5 * x * one_plus_erf) as f32
}

/// Silu `x / (1 + e^(−x))`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + exp64(-x))) as f32
}

/// Mish `x·tanh(log1p(e^x))` as `x·u(u + 2) / (u(u + 2) + 2)`, `u = e^min(x, 40)` (the factor is
/// exactly 1 in f64 beyond 40).
#[inline(always)]
pub fn mish(x: f32) -> f32 {
    let x = x as f64;
    let u = exp64(if x > 40.0 { 40.0 } else { x });
    let n = u * (u + 2.0);
    (x * n / (n + 2.0)) as f32
}

/// Elu `x > 0 ? x : e^x − 1`.
#[inline(always)]
pub fn elu(x: f32) -> f32 {
    let e = expm1(x);
    if x > 0.0 { x } else { e }
}

/// 8-lane AVX2+FMA f32 kernels: `e^x` for the softmax and Gelu, evaluated in f32 (≤ 2 ulp and ≤ 4 ulp
/// against f64 references asserted by the unit tests below; 1.01 and 3.7 ulp measured).
///
/// - `exp8` (the softmax's exp, see there) reduces the argument and evaluates the polynomial as
///   below but builds `2^n` as one factor (results under 2^-126 may be 0).
/// - Gelu's exp: `n = round(x·log2 e)`, `r = x − n·ln2` with ln2 split in two constants (Cody-Waite, exact
///   with the FMAs), `e^r ≈ 1 + r + r²·P(r)` with P of degree 5 (Cephes' minimax), and `2^n` applied
///   as two factors `2^n1·2^n2` built by integer adds on the exponent field, so that subnormal results
///   are rounded once and `n` up to 130 overflows to inf. The argument is clamped to `[−110, 90]`
///   (0 and inf there); NaN lanes are restored at the end.
/// - Gelu `0.5·x·(1 + erf(z))`, `z = x·√½`: for `|z| < ½`, `h + h·erf(z)` with `h = x/2` and
///   `erf(z) = z·P(z²)` (degree 4); above, `erfc(|z|) = e^(−x²/2)·G(q)/(1 + √2·|x|)` with
///   `q = (|x| − 2√2)/(|x| + 2√2)` and G a degree-10 Chebyshev fit of `(1 + √2·|x|)·erfcx(|z|)`
///   (relative error 8e-10 on `|x| ∈ [0.7, 14.5]`); `x²` is split into two f32s (FMA) whose low part
///   goes into the reduced exponent, and `1 + (e^r − 1)` is folded into the last FMA. Then
///   `x − h·erfc` for `x > 0`, `h·erfc` for `x < 0`. Measured: ≤ 3.7 ulp on [−10, 10], ≤ 3.4 beyond.
///   Slices go through it 4 vectors at a time, each step applied to all 4 before the next
///   (`lanes!`): the same bits as one at a time, +10% throughput (`cargo bench --bench cpu_paths --
///   fastmath/dispatched/gelu`: 234 against 212 M values/s on one Zen 1 core).
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    pub(super) const ERF_P: [f32; 5] = [std::f32::consts::FRAC_2_SQRT_PI, -0.37612608, 0.112828314, -0.026757732, 0.0047190827];
    /// `(1 + S·|x|)·erfcx(|x|·√½)` as a polynomial in `q = (|x| − K)/(|x| + K)` (S, K: √2, 2√2 in f32),
    /// fitted on `|x| ∈ [0.7, 14.5]`.
    pub(super) const ERFCX_G: [f32; 11] = [
        1.2769784,
        -0.09276382,
        -0.16603033,
        0.16405073,
        -0.054221332,
        -0.008026132,
        0.008732856,
        0.0012232467,
        -0.0014875471,
        -0.00032081464,
        0.00023612057,
    ];

    pub(super) const K: f32 = 2.828427;
    pub(super) const S: f32 = std::f32::consts::SQRT_2;
    /// `|x|` below which Gelu uses erf (`|z| < ½`).
    pub(super) const SMALL: f32 = std::f32::consts::FRAC_1_SQRT_2;

    #[inline(always)]
    fn splat(c: f32) -> __m256 {
        // SAFETY: inlined only into this module's functions, which run after AVX2 + FMA were
        // detected at run time (the dispatch checks the selected path, `cpu::isa::active`).
        unsafe { _mm256_set1_ps(c) }
    }

    /// `[f(0), f(1), .., f(N − 1)]` for an expression in `$i`: one step of a kernel applied to `N`
    /// independent vectors before the next step, so that the core overlaps their dependency chains
    /// (Gelu's is ~100 cycles long; one vector at a time left Zen 1 waiting on it).
    macro_rules! lanes {
        ($n:expr, |$i:ident| $e:expr) => {{
            let mut out = [_mm256_setzero_ps(); $n];
            for $i in 0..$n {
                out[$i] = $e;
            }
            out
        }};
    }

    /// ln2 split for the argument reduction `r = x − n·LN2_HI − n·LN2_LO` (Cody-Waite): LN2_HI =
    /// 0.693359375 has few bits, so `n·LN2_HI` is exact.
    pub(super) const LN2_HI: f32 = 0.693_359_4;
    pub(super) const LN2_LO: f32 = -0.00021219444;
    /// `e^r − 1 ≈ r + r²·P(r)`: P's coefficients, highest degree first (Cephes' minimax).
    pub(super) const EXP_P: [f32; 6] = [0.00019875691, 0.0013981999, 0.008333452, 0.041665796, 0.16666666, 0.5];

    /// `(e^r − 1, 2^n1, 2^n2)` with `e^(x + lo) = e^r·2^n1·2^n2` (`lo` tiny: added to the reduced
    /// argument; `2^n1`, `2^n2` normal), `x` clamped to `[−110, 90]`; NaN lanes come out as garbage
    /// (the callers restore them). `N` vectors at a time (see `lanes!`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp_parts<const N: usize>(x: [__m256; N], lo: [__m256; N]) -> ([__m256; N], [__m256; N], [__m256; N]) {
        let x = lanes!(N, |i| _mm256_min_ps(_mm256_max_ps(x[i], splat(-110.0)), splat(90.0)));
        let n = lanes!(N, |i| _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x[i],
            splat(std::f32::consts::LOG2_E),
        )));
        let r = lanes!(N, |i| _mm256_fnmadd_ps(n[i], splat(LN2_HI), x[i]));
        let r = lanes!(N, |i| _mm256_add_ps(_mm256_fnmadd_ps(n[i], splat(LN2_LO), r[i]), lo[i]));
        let mut p = [splat(EXP_P[0]); N];
        for &c in &EXP_P[1..] {
            p = lanes!(N, |i| _mm256_fmadd_ps(p[i], r[i], splat(c)));
        }
        let em1 = lanes!(N, |i| _mm256_fmadd_ps(p[i], _mm256_mul_ps(r[i], r[i]), r[i]));
        let bias = _mm256_set1_epi32(127);
        let mut s1 = [_mm256_setzero_ps(); N];
        let mut s2 = [_mm256_setzero_ps(); N];
        for i in 0..N {
            let ni = _mm256_cvtps_epi32(n[i]);
            let n1 = _mm256_srai_epi32::<1>(ni);
            let n2 = _mm256_sub_epi32(ni, n1);
            s1[i] = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
            s2[i] = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        }
        (em1, s1, s2)
    }

    /// `e^x` on 8 lanes for the softmax numerators (arguments `x − max ≤ 0`), NaN kept. Cheaper
    /// than [`exp_parts`] (~18 vector operations instead of ~30): `n` is rounded by adding a shifter
    /// whose low bits then hold the biased exponent of `2^n` directly, and `2^n` is one factor.
    /// The price is at the ends of the range: arguments are clamped to `[−88, 88]`, so below
    /// −87.68 the result is 0 (the true value is below 2^-126, so the absolute error is too) and
    /// above 88 it stays e^88. Between, the result is rounded once, subnormals included.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp8(x: __m256) -> __m256 {
        // 1.5·2^23 + 127: t = x·log2e + SHIFTER rounds x·log2e to an integer n in t's low bits,
        // already biased: (bits(t) << 23) is the f32 2^n (0 for n = −127)
        const SHIFTER: f32 = 12_583_039.0;
        // (max/min return their second operand when either is NaN: a NaN x passes both clamps,
        // then every step, and comes out NaN: its 2^n is 0 and NaN·0 + 0 is NaN)
        let xc = _mm256_min_ps(splat(88.0), _mm256_max_ps(splat(-88.0), x));
        let t = _mm256_fmadd_ps(xc, splat(std::f32::consts::LOG2_E), splat(SHIFTER));
        let n = _mm256_sub_ps(t, splat(SHIFTER));
        let r = _mm256_fnmadd_ps(n, splat(LN2_LO), _mm256_fnmadd_ps(n, splat(LN2_HI), xc));
        let mut p = splat(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm256_fmadd_ps(p, r, splat(c));
        }
        let em1 = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t)));
        _mm256_fmadd_ps(em1, scale, scale)
    }

    /// Gelu on `N` vectors of 8 lanes (NaN kept; −inf gives NaN, +inf inf), each step applied to
    /// all `N` before the next (see `lanes!`): the same operations, the same bits, as `N = 1`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn gelu_n<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        let h = lanes!(N, |i| _mm256_mul_ps(x[i], splat(0.5)));
        let z = lanes!(N, |i| _mm256_mul_ps(x[i], splat(std::f32::consts::FRAC_1_SQRT_2)));
        let xa = lanes!(N, |i| _mm256_andnot_ps(splat(-0.0), x[i]));
        // small: h + h·erf(z)
        let z2 = lanes!(N, |i| _mm256_mul_ps(z[i], z[i]));
        let mut pe = [splat(ERF_P[ERF_P.len() - 1]); N];
        for &c in ERF_P[..ERF_P.len() - 1].iter().rev() {
            pe = lanes!(N, |i| _mm256_fmadd_ps(pe[i], z2[i], splat(c)));
        }
        let small = lanes!(N, |i| _mm256_fmadd_ps(h[i], _mm256_mul_ps(z[i], pe[i]), h[i]));
        // large: erfc(|z|) = e^(−x²/2)·G(q)/(1 + S·|x|)
        let ac = lanes!(N, |i| _mm256_min_ps(_mm256_max_ps(xa[i], splat(SMALL)), splat(14.5)));
        let q = lanes!(N, |i| _mm256_div_ps(_mm256_sub_ps(ac[i], splat(K)), _mm256_add_ps(ac[i], splat(K))));
        let mut g = [splat(ERFCX_G[ERFCX_G.len() - 1]); N];
        for &c in ERFCX_G[..ERFCX_G.len() - 1].iter().rev() {
            g = lanes!(N, |i| _mm256_fmadd_ps(g[i], q[i], splat(c)));
        }
        let den = lanes!(N, |i| _mm256_fmadd_ps(ac[i], splat(S), splat(1.0)));
        // beyond |x| = 16 erfc is 0 in f32 (clamped so that x² stays finite)
        let xc = lanes!(N, |i| _mm256_min_ps(_mm256_max_ps(x[i], splat(-16.0)), splat(16.0)));
        let sq = lanes!(N, |i| _mm256_mul_ps(xc[i], xc[i]));
        let sq_lo = lanes!(N, |i| _mm256_fmsub_ps(xc[i], xc[i], sq[i]));
        // e^(t + t_lo), t = −x²/2, t_lo = −sq_lo/2 added to the reduced argument
        let t = lanes!(N, |i| _mm256_mul_ps(sq[i], splat(-0.5)));
        let t_lo = lanes!(N, |i| _mm256_mul_ps(sq_lo[i], splat(-0.5)));
        let (em1, s1, s) = exp_parts(t, t_lo);
        // w·(1 + em1) with w = (x/2)·2^n1·G/den: the exponential's 1 + em1 is not rounded separately
        let w = lanes!(N, |i| _mm256_div_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(xc[i], splat(0.5)), s1[i]), g[i]), den[i]));
        lanes!(N, |i| {
            let hy = _mm256_fmadd_ps(w[i], em1[i], w[i]);
            let neg = _mm256_mul_ps(hy, s[i]);
            let pos = _mm256_fnmadd_ps(hy, s[i], x[i]);
            let large = _mm256_blendv_ps(neg, pos, _mm256_cmp_ps::<_CMP_GT_OQ>(x[i], splat(0.0)));
            let r = _mm256_blendv_ps(large, small[i], _mm256_cmp_ps::<_CMP_LT_OQ>(xa[i], splat(SMALL)));
            // NaN in, NaN out; −inf gives NaN as torch's −inf·0 does (x − x is NaN in both cases)
            let nan = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_UNORD_Q>(x[i], x[i]),
                _mm256_cmp_ps::<_CMP_EQ_OQ>(x[i], splat(f32::NEG_INFINITY)),
            );
            _mm256_blendv_ps(r, _mm256_sub_ps(x[i], x[i]), nan)
        })
    }

    /// `v[i] = f(v[i] − m)` over the slice (tail through a zero-padded buffer).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn map8(v: &mut [f32], m: f32, f: impl Fn(__m256) -> __m256) {
        let mv = _mm256_set1_ps(m);
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: c holds 8 f32.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), f(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv))) };
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0f32; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: buf holds 8 f32.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), mv))) };
            rest.copy_from_slice(&buf[..rest.len()]);
        }
    }

    /// `v[i] = e^(v[i] − m)` (as [`exp8`]: for `v[i] − m ≤ 88`, results below 2^-126 may be 0);
    /// returns `Σ v[i]` summed as [`super::lane_sum`], in the same pass. (Evaluating 2 or 4
    /// vectors per step, as Gelu does, was measured no faster: this loop is bound by Zen 1's
    /// throughput, ~29 cycles per vector, not by the latency of `exp8`.)
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_sub_sum(v: &mut [f32], m: f32) -> f32 {
        let mv = _mm256_set1_ps(m);
        let mut acc = _mm256_setzero_ps();
        let mut eights = v.chunks_exact_mut(8);
        for c in &mut eights {
            // SAFETY: c holds 8 f32.
            unsafe {
                let y = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
                _mm256_storeu_ps(c.as_mut_ptr(), y);
                acc = _mm256_add_ps(acc, y);
            }
        }
        let rest = eights.into_remainder();
        map8(rest, m, |x| exp8(x));
        let mut lanes = [0f32; 8];
        // SAFETY: lanes holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
    }

    /// `v[i] = gelu(v[i])`: 4 vectors (32 values) at a time, then one, the tail zero-padded.
    #[target_feature(enable = "avx2,fma")]
    pub fn gelu(v: &mut [f32]) {
        let mut quads = v.chunks_exact_mut(32);
        for c in &mut quads {
            let p = c.as_mut_ptr();
            // SAFETY: c holds 32 f32.
            unsafe {
                let x = lanes!(4, |i| _mm256_loadu_ps(p.add(8 * i)));
                for (i, y) in gelu_n(x).into_iter().enumerate() {
                    _mm256_storeu_ps(p.add(8 * i), y);
                }
            }
        }
        map8(quads.into_remainder(), 0.0, |x| gelu_n([x])[0])
    }
}

/// Gelu on 16 lanes (AVX-512F): the operations of `avx::gelu_n`, lane for lane, on zmm registers
/// (selections by compare masks instead of `blendv`), so that every value is the AVX2 path's bits.
/// 4 vectors (64 values) per step, then one, the tail through a masked load and store.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::avx::{ERF_P, ERFCX_G, EXP_P, K, LN2_HI, LN2_LO, S, SMALL};

    #[inline(always)]
    fn splat(c: f32) -> __m512 {
        // SAFETY: inlined only into this module's functions, which run after AVX-512F was
        // detected at run time (the dispatch checks the selected path, `cpu::isa::active`).
        unsafe { _mm512_set1_ps(c) }
    }

    macro_rules! lanes {
        ($n:expr, |$i:ident| $e:expr) => {{
            let mut out = [_mm512_setzero_ps(); $n];
            for $i in 0..$n {
                out[$i] = $e;
            }
            out
        }};
    }

    /// `avx::exp8` on 16 lanes: its operations, lane for lane (the same bits).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        const SHIFTER: f32 = 12_583_039.0;
        let xc = _mm512_min_ps(splat(88.0), _mm512_max_ps(splat(-88.0), x));
        let t = _mm512_fmadd_ps(xc, splat(std::f32::consts::LOG2_E), splat(SHIFTER));
        let n = _mm512_sub_ps(t, splat(SHIFTER));
        let r = _mm512_fnmadd_ps(n, splat(LN2_LO), _mm512_fnmadd_ps(n, splat(LN2_HI), xc));
        let mut p = splat(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm512_fmadd_ps(p, r, splat(c));
        }
        let em1 = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(t)));
        _mm512_fmadd_ps(em1, scale, scale)
    }

    /// `avx::exp_sub_sum` 16 values at a time: the same values (`exp16`) and the same sum, each
    /// vector's two halves added to the 8 lane sums in order, as the AVX2 loop adds two vectors.
    #[target_feature(enable = "avx512f,avx2")]
    pub fn exp_sub_sum(v: &mut [f32], m: f32) -> f32 {
        let mv = _mm512_set1_ps(m);
        let mut acc = _mm256_setzero_ps();
        let mut sixteens = v.chunks_exact_mut(16);
        for c in &mut sixteens {
            // SAFETY: c holds 16 f32.
            unsafe {
                let y = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), mv));
                _mm512_storeu_ps(c.as_mut_ptr(), y);
                acc = _mm256_add_ps(acc, _mm512_castps512_ps256(y));
                acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(y))));
            }
        }
        let rest = sixteens.into_remainder();
        let (eight, tail) = rest.split_at_mut(if rest.len() >= 8 { 8 } else { 0 });
        let mut buf = [0f32; 16];
        // one more group of 8 (summed as the AVX2 loop sums it), then the tail (summed after)
        for (part, summed) in [(eight, true), (tail, false)] {
            if part.is_empty() {
                continue;
            }
            buf[..part.len()].copy_from_slice(part);
            // SAFETY: buf holds 16 f32.
            unsafe {
                let y = exp16(_mm512_sub_ps(_mm512_loadu_ps(buf.as_ptr()), mv));
                _mm512_storeu_ps(buf.as_mut_ptr(), y);
                if summed {
                    acc = _mm256_add_ps(acc, _mm512_castps512_ps256(y));
                }
            }
            part.copy_from_slice(&buf[..part.len()]);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: lanes holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let tail = &v[v.len() / 8 * 8..];
        lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
    }

    /// `avx::exp_parts` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_parts<const N: usize>(x: [__m512; N], lo: [__m512; N]) -> ([__m512; N], [__m512; N], [__m512; N]) {
        let x = lanes!(N, |i| _mm512_min_ps(_mm512_max_ps(x[i], splat(-110.0)), splat(90.0)));
        let n = lanes!(N, |i| _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x[i],
            splat(std::f32::consts::LOG2_E),
        )));
        let r = lanes!(N, |i| _mm512_fnmadd_ps(n[i], splat(LN2_HI), x[i]));
        let r = lanes!(N, |i| _mm512_add_ps(_mm512_fnmadd_ps(n[i], splat(LN2_LO), r[i]), lo[i]));
        let mut p = [splat(EXP_P[0]); N];
        for &c in &EXP_P[1..] {
            p = lanes!(N, |i| _mm512_fmadd_ps(p[i], r[i], splat(c)));
        }
        let em1 = lanes!(N, |i| _mm512_fmadd_ps(p[i], _mm512_mul_ps(r[i], r[i]), r[i]));
        let bias = _mm512_set1_epi32(127);
        let mut s1 = [_mm512_setzero_ps(); N];
        let mut s2 = [_mm512_setzero_ps(); N];
        for i in 0..N {
            let ni = _mm512_cvtps_epi32(n[i]);
            let n1 = _mm512_srai_epi32::<1>(ni);
            let n2 = _mm512_sub_epi32(ni, n1);
            s1[i] = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
            s2[i] = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
        }
        (em1, s1, s2)
    }

    /// `avx::gelu_n` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu_n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let h = lanes!(N, |i| _mm512_mul_ps(x[i], splat(0.5)));
        let z = lanes!(N, |i| _mm512_mul_ps(x[i], splat(std::f32::consts::FRAC_1_SQRT_2)));
        let xa = lanes!(N, |i| _mm512_abs_ps(x[i]));
        let z2 = lanes!(N, |i| _mm512_mul_ps(z[i], z[i]));
        let mut pe = [splat(ERF_P[ERF_P.len() - 1]); N];
        for &c in ERF_P[..ERF_P.len() - 1].iter().rev() {
            pe = lanes!(N, |i| _mm512_fmadd_ps(pe[i], z2[i], splat(c)));
        }
        let small = lanes!(N, |i| _mm512_fmadd_ps(h[i], _mm512_mul_ps(z[i], pe[i]), h[i]));
        let ac = lanes!(N, |i| _mm512_min_ps(_mm512_max_ps(xa[i], splat(SMALL)), splat(14.5)));
        let q = lanes!(N, |i| _mm512_div_ps(_mm512_sub_ps(ac[i], splat(K)), _mm512_add_ps(ac[i], splat(K))));
        let mut g = [splat(ERFCX_G[ERFCX_G.len() - 1]); N];
        for &c in ERFCX_G[..ERFCX_G.len() - 1].iter().rev() {
            g = lanes!(N, |i| _mm512_fmadd_ps(g[i], q[i], splat(c)));
        }
        let den = lanes!(N, |i| _mm512_fmadd_ps(ac[i], splat(S), splat(1.0)));
        let xc = lanes!(N, |i| _mm512_min_ps(_mm512_max_ps(x[i], splat(-16.0)), splat(16.0)));
        let sq = lanes!(N, |i| _mm512_mul_ps(xc[i], xc[i]));
        let sq_lo = lanes!(N, |i| _mm512_fmsub_ps(xc[i], xc[i], sq[i]));
        let t = lanes!(N, |i| _mm512_mul_ps(sq[i], splat(-0.5)));
        let t_lo = lanes!(N, |i| _mm512_mul_ps(sq_lo[i], splat(-0.5)));
        let (em1, s1, s) = exp_parts(t, t_lo);
        let w = lanes!(N, |i| _mm512_div_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(xc[i], splat(0.5)), s1[i]), g[i]), den[i]));
        lanes!(N, |i| {
            let hy = _mm512_fmadd_ps(w[i], em1[i], w[i]);
            let neg = _mm512_mul_ps(hy, s[i]);
            let pos = _mm512_fnmadd_ps(hy, s[i], x[i]);
            let large = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(x[i], splat(0.0)), neg, pos);
            let r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(xa[i], splat(SMALL)), large, small[i]);
            let nan =
                _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x[i], x[i]) | _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x[i], splat(f32::NEG_INFINITY));
            _mm512_mask_blend_ps(nan, r, _mm512_sub_ps(x[i], x[i]))
        })
    }

    /// `v[i] = gelu(v[i])`: 4 vectors (64 values) at a time, then one, the tail masked.
    #[target_feature(enable = "avx512f")]
    pub fn gelu(v: &mut [f32]) {
        let mut quads = v.chunks_exact_mut(64);
        for c in &mut quads {
            let p = c.as_mut_ptr();
            // SAFETY: c holds 64 f32.
            unsafe {
                let x = lanes!(4, |i| _mm512_loadu_ps(p.add(16 * i)));
                for (i, y) in gelu_n(x).into_iter().enumerate() {
                    _mm512_storeu_ps(p.add(16 * i), y);
                }
            }
        }
        for c in quads.into_remainder().chunks_mut(16) {
            let mask = ((1u32 << c.len()) - 1) as __mmask16;
            // SAFETY: the mask covers the chunk's c.len() ≤ 16 values.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, c.as_ptr());
                _mm512_mask_storeu_ps(c.as_mut_ptr(), mask, gelu_n([x])[0]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    super::isa::active().allows(super::isa::Isa::Avx2)
}

/// `v[i] = e^(v[i] − m)` (the softmax numerators, `v[i] ≤ m`): 8-lane AVX2+FMA f32 when the CPU
/// has it, the same operations on 16 lanes (the same bits) on AVX-512F (≤ 2 ulp where the result
/// is at least 2^-126; below, possibly 0: an absolute error under 2^-126; see `avx::exp8`),
/// `f32::exp` otherwise.
pub fn exp_sub_inplace(v: &mut [f32], m: f32) {
    exp_sub_sum_inplace(v, m);
}

/// [`exp_sub_inplace`], returning the sum of the results in the order of [`lane_sum`] (the
/// softmax's denominator, from the same pass).
pub fn exp_sub_sum_inplace(v: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::isa::active().allows(super::isa::Isa::Avx512) {
        // SAFETY: the CPU supports AVX-512F and AVX2 (the selected path is runnable).
        return unsafe { avx512::exp_sub_sum(v, m) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx::exp_sub_sum(v, m) };
    }
    for x in v.iter_mut() {
        *x = (*x - m).exp();
    }
    lane_sum(v, |x| x)
}

/// `Σ f(v[i])` in f32 over 8 interleaved lanes (lane `l` sums `i ≡ l mod 8` in order over the whole
/// groups of 8, the lanes then added left to right, then the tail): independent accumulators that
/// the compiler vectorises, where one running sum would be a chain of dependent adds.
pub(super) fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| f(x)).sum::<f32>()
}

/// An activation that [`map_inplace`] evaluates over a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gelu,
    Silu,
    Mish,
    Elu,
}

/// The loops of [`map_inplace`]: plain loops (no closures) so that everything inlines into the
/// AVX2 instance and vectorises there. `pub` only for `bench_support`.
#[inline(always)]
pub fn map_generic(kind: Kind, v: &mut [f32]) {
    match kind {
        Kind::Gelu => {
            for x in v {
                *x = gelu(*x);
            }
        }
        Kind::Silu => {
            for x in v {
                *x = silu(*x);
            }
        }
        Kind::Mish => {
            for x in v {
                *x = mish(*x);
            }
        }
        Kind::Elu => {
            for x in v {
                *x = elu(*x);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_avx2(kind: Kind, v: &mut [f32]) {
    map_generic(kind, v)
}

/// `v[i] = kind(v[i])`, vectorised: Gelu in f32 on 8 lanes when the CPU has AVX2 and FMA (≤ 4 ulp,
/// [`avx`]); otherwise the f64 functions above (AVX2 when available, bit-identical either way).
pub fn map_inplace(kind: Kind, v: &mut [f32]) {
    map_inplace_with(super::isa::active(), kind, v)
}

/// [`map_inplace`] on the path `isa`: Gelu on 16 lanes on AVX-512F (the AVX2 path's bits, lane for
/// lane), 8 on AVX2; the others as [`map_inplace`] says.
pub fn map_inplace_with(isa: super::isa::Isa, kind: Kind, v: &mut [f32]) {
    let isa = isa.runnable();
    #[cfg(target_arch = "x86_64")]
    if kind == Kind::Gelu && isa.allows(super::isa::Isa::Avx512) {
        // SAFETY: the CPU supports AVX-512F (runnable).
        unsafe { avx512::gelu(v) };
        return;
    }
    let has_avx2_fma = || isa.allows(super::isa::Isa::Avx2);
    #[cfg(target_arch = "x86_64")]
    if kind == Kind::Gelu && has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx::gelu(v) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { map_avx2(kind, v) };
        return;
    }
    map_generic(kind, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // glibc's double-precision erf (≤ 1 f64 ulp): the reference for the f32 erf.
    unsafe extern "C" {
        #[link_name = "erf"]
        safe fn erf64(x: f64) -> f64;
        #[link_name = "erfc"]
        safe fn erfc64(x: f64) -> f64;
    }

    /// |got − want| in units of the f32 ulp at `want` (`want` exact in f64; subnormal ulp below).
    fn ulps(got: f32, want: f64) -> f64 {
        if want.is_nan() {
            return if got.is_nan() { 0.0 } else { f64::INFINITY };
        }
        if (want as f32).is_infinite() || got.is_infinite() {
            return if got == want as f32 { 0.0 } else { f64::INFINITY };
        }
        let w = want.abs().max(f32::MIN_POSITIVE as f64);
        let ulp = 2f64.powi(w.log2().floor() as i32 - 23);
        (got as f64 - want).abs() / ulp
    }

    /// The f32 inputs of the sweep: ~1e7 evenly spaced points in [−20, 20], every f32 in
    /// [−2⁻¹⁰, 2⁻¹⁰]'s neighbourhood of 0 on a log grid, and special values.
    fn sweep() -> Vec<f32> {
        let n = 10_000_000;
        let mut xs: Vec<f32> = (0..=n).map(|i| (-20.0 + 40.0 * i as f64 / n as f64) as f32).collect();
        for e in -149..=7 {
            for m in 0..64 {
                let v = (2f64.powi(e) * (1.0 + m as f64 / 64.0)) as f32;
                xs.extend([v, -v]);
            }
        }
        xs.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-30,
            -1e-30,
            40.0,
            -40.0,
            88.0,
            88.72,
            88.73,
            89.0,
            -87.0,
            -103.0,
            -103.9,
            -104.0,
            -150.0,
            100.0,
            -100.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        xs
    }

    /// Max ulp error of `f` against `want` over the sweep (NaN, infinities and exact zeros checked
    /// exactly), with the argument of the worst case.
    fn max_ulps(name: &str, f: impl Fn(f32) -> f32, want: impl Fn(f64) -> f64) -> f64 {
        let (mut worst, mut at) = (0.0f64, 0.0f32);
        for x in sweep() {
            let e = ulps(f(x), want(x as f64));
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        eprintln!("{name}: max {worst:.3} ulp at x = {at:e}");
        worst
    }

    #[test]
    fn exp_within_one_ulp() {
        assert!(max_ulps("exp", exp, f64::exp) <= 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(-110.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        // the smallest subnormal and the largest finite value are reached
        assert_eq!(exp(-103.28), 2f32.powi(-149));
        assert!(exp(88.722).is_finite() && exp(88.723) == f32::INFINITY);
    }

    #[test]
    fn expm1_within_one_ulp() {
        assert!(max_ulps("expm1", expm1, f64::exp_m1) <= 1.0);
        assert_eq!(expm1(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(expm1(1e-30), 1e-30);
        assert_eq!(expm1(f32::NEG_INFINITY), -1.0);
        assert!(expm1(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_within_one_ulp() {
        assert!(max_ulps("tanh", tanh, f64::tanh) <= 1.0);
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!((tanh(f32::INFINITY), tanh(-20.0)), (1.0, -1.0));
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn erf_within_one_ulp() {
        assert!(max_ulps("erf", erf, |x| erf64(x)) <= 1.0);
        assert_eq!(erf(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!((erf(f32::INFINITY), erf(-5.0)), (1.0, -1.0));
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn activations_within_one_ulp() {
        assert!(max_ulps("gelu", gelu, gelu64) <= 1.0);
        assert!(max_ulps("silu", silu, |x| x / (1.0 + (-x).exp())) <= 1.0);
        // tanh(log1p(e^x)) without cancellation: u(u+2)/(u(u+2)+2), u = e^x (f64 libm)
        let mish64 = |x: f64| {
            if x > 40.0 {
                return x;
            }
            let u = x.exp();
            x * (u * (u + 2.0)) / (u * (u + 2.0) + 2.0)
        };
        assert!(max_ulps("mish", mish, mish64) <= 1.0);
        assert!(max_ulps("elu", elu, |x| if x > 0.0 { x } else { x.exp_m1() }) <= 1.0);
        assert_eq!(mish(100.0), 100.0);
        assert_eq!(mish(f32::INFINITY), f32::INFINITY);
        // −inf gives NaN as torch's f32 formulas do (−inf·0)
        for f in [gelu, silu, mish] {
            assert!(f(f32::NEG_INFINITY).is_nan());
        }
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        for f in [gelu, silu, mish, elu] {
            assert!(f(f32::NAN).is_nan());
        }
    }

    fn gelu64(x: f64) -> f64 {
        let z = x * std::f64::consts::FRAC_1_SQRT_2;
        0.5 * x * if z < -1.0 { erfc64(-z) } else { 1.0 + erf64(z) } // NaN at −inf, as torch
    }

    /// Max ulp error of an 8-lane slice kernel over `xs` against `want`.
    #[cfg(target_arch = "x86_64")]
    fn max_ulps_slice(name: &str, xs: &[f32], f: impl Fn(&mut [f32]), want: impl Fn(f64) -> f64) -> f64 {
        let mut v = xs.to_vec();
        f(&mut v);
        let (mut worst, mut at) = (0.0f64, 0.0f32);
        for (&x, &y) in xs.iter().zip(&v) {
            let e = ulps(y, want(x as f64));
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        eprintln!("{name}: max {worst:.3} ulp at x = {at:e}");
        worst
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_exp_within_two_ulp() {
        if !has_avx2_fma() {
            return;
        }
        // the domain of the softmax numerators: (−inf, 88]; within 2 ulp where e^x ≥ 2^-126
        let n = 20_000_000;
        let mut xs: Vec<f32> = (0..=n).map(|i| (-104.0 + 192.0 * i as f64 / n as f64) as f32).collect();
        xs.extend(sweep().into_iter().filter(|&x| x <= 88.0 || x.is_nan()));
        // SAFETY: AVX2 and FMA checked above.
        let run = |v: &mut [f32]| unsafe {
            avx::exp_sub_sum(v, 0.0);
        };
        let normal_from = (f32::MIN_POSITIVE as f64).ln() as f32;
        let (normal, tiny): (Vec<f32>, Vec<f32>) = xs.iter().partition(|&&x| x >= normal_from || x.is_nan());
        assert!(max_ulps_slice("avx exp", &normal, run, f64::exp) <= 2.0);
        // below: an absolute error under 2^-126 (0 or the rounded subnormal)
        let mut v = tiny.clone();
        run(&mut v);
        for (&x, &y) in tiny.iter().zip(&v) {
            let err = (y as f64 - (x as f64).exp()).abs();
            assert!(y >= 0.0 && err < f32::MIN_POSITIVE as f64, "exp({x}) = {y:e}");
        }
        let mut sp = [f32::NEG_INFINITY, -110.0, 0.0, f32::NAN, 88.0, -87.0, 1.0];
        run(&mut sp);
        assert_eq!(&sp[..3], &[0.0, 0.0, 1.0]);
        assert!(sp[3].is_nan());
        assert_eq!((sp[4], sp[5], sp[6]), (88f32.exp(), (-87f32).exp(), std::f32::consts::E));
        // the subtraction of the max: exp_sub_inplace(v, m) = e^(v − m)
        let mut v = vec![3.0f32; 13];
        exp_sub_inplace(&mut v, 3.0);
        assert!(v.iter().all(|&x| x == 1.0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_sub_sum_is_one_vector_at_a_time_and_the_lane_sum() {
        if !has_avx2_fma() {
            return;
        }
        let seed = crate::testing::fresh_seed();
        // every way a length splits into 4-vector groups, single vectors and a tail
        for len in (0..=75).chain([813, 814, 1000]) {
            let s = seed.wrapping_add(len as u64);
            let mut v = crate::testing::random_f32(s, len, 6.0);
            if len > 40 {
                v[37] = f32::NAN; // NaN kept in its lane, and in the sum
            }
            let m = 2.5f32;
            // one vector at a time, through a zero-padded buffer: the kernel's operations unfused
            let mut want = v.clone();
            for c in want.chunks_mut(8) {
                let mut buf = [0f32; 8];
                buf[..c.len()].copy_from_slice(c);
                // SAFETY: AVX2 and FMA checked above; buf holds 8 f32.
                unsafe {
                    use std::arch::x86_64::*;
                    let y = avx::exp8(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), _mm256_set1_ps(m)));
                    _mm256_storeu_ps(buf.as_mut_ptr(), y);
                }
                c.copy_from_slice(&buf[..c.len()]);
            }
            let sum = exp_sub_sum_inplace(&mut v, m);
            let what = format!("len {len} seed {s}");
            assert!(v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: values");
            assert_eq!(sum.to_bits(), lane_sum(&want, |x| x).to_bits(), "{what}: sum");
            assert_eq!(len > 40, sum.is_nan(), "{what}");
        }
        // lane_sum's order: lane l over i ≡ l mod 8, lanes left to right, then the tail
        let v: Vec<f32> = (0..19).map(|i| if i == 3 { 1e8 } else { 1.0 }).collect();
        // (lane 3 holds 1e8 + 1 = 1e8, the others 2 each; the tail 1 + 1 + 1)
        assert_eq!(lane_sum(&v, |x| x), (2.0f32 + 2.0 + 2.0 + 1e8 + 2.0 + 2.0 + 2.0 + 2.0) + 3.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_gelu_within_four_ulp() {
        if !has_avx2_fma() {
            return;
        }
        let mut xs = sweep();
        xs.extend((0..=1_000_000).map(|i| (-200.0 + 400.0 * i as f64 / 1e6) as f32));
        // SAFETY: AVX2 and FMA checked above.
        let run = |v: &mut [f32]| unsafe { avx::gelu(v) };
        let (core, tails): (Vec<f32>, Vec<f32>) = xs.iter().partition(|x| x.abs() <= 10.0);
        let e_core = max_ulps_slice("avx gelu [-10, 10]", &core, run, gelu64);
        let e_tails = max_ulps_slice("avx gelu tails", &tails, run, gelu64);
        assert!(e_core <= 4.0 && e_tails <= 4.0);
        // 4 vectors at a time (the body) and one at a time (the tail): the same bits
        let some: Vec<f32> = xs.iter().step_by(997).copied().collect();
        let mut body = some.clone();
        run(&mut body);
        for (&x, &y) in some.iter().zip(&body) {
            let mut one = [x];
            run(&mut one);
            assert_eq!(one[0].to_bits(), y.to_bits(), "gelu({x}) alone and in a block of 32");
        }
        let mut sp = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 100.0, -100.0];
        run(&mut sp);
        assert_eq!((sp[0], sp[2], sp[5], sp[6]), (0.0, f32::INFINITY, 100.0, 0.0));
        assert!(sp[3].is_nan() && sp[4].is_nan());
    }

    #[test]
    fn avx512_gelu_is_the_avx2_gelu_bit_for_bit() {
        let paths = crate::cpu::isa::Isa::tested_paths();
        let (a2, a5) = (crate::cpu::isa::Isa::Avx2, crate::cpu::isa::Isa::Avx512);
        if !paths.contains(&a5) {
            return;
        }
        let mut xs = sweep();
        xs.extend((0..=200_003).map(|i| (-200.0 + 400.0 * i as f64 / 2e5) as f32));
        xs.extend(crate::testing::random_f32(crate::testing::fresh_seed(), 10_007, 4.0));
        xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 100.0, -100.0]);
        // lengths off 16 and 64: the masked tail and the one-vector steps
        for len in [xs.len(), 1, 15, 17, 63, 65, 130] {
            let (mut v2, mut v5) = (xs[..len].to_vec(), xs[..len].to_vec());
            map_inplace_with(a2, Kind::Gelu, &mut v2);
            map_inplace_with(a5, Kind::Gelu, &mut v5);
            for ((x, y2), y5) in xs.iter().zip(&v2).zip(&v5) {
                assert_eq!(y2.to_bits(), y5.to_bits(), "gelu({x}): avx2 {y2}, avx512 {y5} (len {len})");
            }
        }
    }

    #[test]
    fn slices_match_scalars_on_both_paths() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).chain([f32::NAN, 95.0, -95.0]).collect();
        for (kind, f) in [(Kind::Gelu, gelu as fn(f32) -> f32), (Kind::Silu, silu), (Kind::Mish, mish), (Kind::Elu, elu)] {
            let want: Vec<u32> = xs.iter().map(|&x| f(x).to_bits()).collect();
            let mut v = xs.clone();
            map_inplace(kind, &mut v);
            #[cfg(target_arch = "x86_64")]
            if kind == Kind::Gelu && has_avx2_fma() {
                // the f32 8-lane Gelu: within 4 ulp of the f64 reference instead of the scalar's bits
                for (&x, &y) in xs.iter().zip(&v) {
                    assert!(ulps(y, gelu64(x as f64)) <= 4.0, "Gelu dispatched at {x}: {y}");
                }
                continue;
            }
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "{kind:?} dispatched");
            let mut v = xs.clone();
            map_generic(kind, &mut v);
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "{kind:?} generic");
        }
    }
}
