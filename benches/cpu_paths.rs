//! The Cpu backend's optimised paths side by side with the simple versions they replace (the
//! tests' oracles, or libm), on the Cpu only, so that one run gives each speed-up:
//!
//! - `attention/dense_cpu_crossover`: the blocked attention (`attention_dense_blocked`: AVX2 register
//!   tiles or sgemm blocks, rayon tasks) vs the scalar loop (`attention_dense_scalar`, the oracle),
//!   causal self-attention over `l` positions, at the tiny shapes around the crossover: up to
//!   `SCALAR_MAX_HEAD_WORK` = 8192 multiply-adds per (batch, head) (4096 where the register tiles
//!   run: head sizes that are multiples of 8; `work` in the id: `2·l²·head_dim`) `attention_dense`
//!   runs the scalar loop; the pairs show whether those thresholds are right.
//! - `attention/dense_cpu_s3gen`: `attention_dense` (blocked at this size: the AVX2 register tiles where
//!   the CPU has them) vs the same blocks through matrixmultiply sgemms (`blocked_sgemm`: `allow_tiles` false, the path
//!   without AVX2) vs the scalar loop at the S3Gen
//!   estimator's self-attention (CFG batch 2, T = 814 frames, 8 heads × 64, the second row 700
//!   long), non-causal. Reported in FLOP/s ("elem/s", 1 elem = 1 FLOP, `4·T·len·head_dim` per head).
//! - `attention_relpos/cpu_s3gen`: `attention_relpos` (blocked) vs its scalar loop at the conformer
//!   encoder's shape (B = 1, T = 814, 8 heads × 64). FLOP/s counting `6·T²·head_dim` per head.
//! - `linear/cpu_gemm_s3gen`: the Cpu GEMM on weights packed at load (`gemm_panels`: 6×16 AVX2 tiles, row
//!   blocks shared evenly by the threads) vs matrixmultiply's sgemm on row blocks (`linear_packed`,
//!   what runs on unpacked weights), at the S3Gen estimator's shapes: 1628 rows (CFG batch 2 ×
//!   814 frames) × the `(k, n)` of its attention projections (256 → 512), output projection
//!   (512 → 256), feed-forward (256 → 1024 → 256) and causal conv (3 taps × 256 → 256). FLOP/s.
//! - `pointwise/activation_cpu`: the whole op (`activation_inplace`, `activation`: `cpu::fastmath` slice kernels
//!   on rayon row blocks) vs per-element libm calls (torch's f32 formulas, `erff` for Gelu) split over
//!   the cores with scoped threads, on 1028 rows × 1024 values uniform in [−6, 6] (1024: the width
//!   of the S3Gen estimator's Gelu feed-forward, 4 × 256; ~1 M values, well past the caches).
//! - `fastmath`: single-threaded, 2²⁰ values in [−6, 6]: `map_inplace` (what the ops run: AVX2+FMA
//!   f32 Gelu, AVX2 f64 polynomials for the others), `map_generic` (the same f64 polynomials without
//!   AVX2) and a per-element libm loop; and the softmax numerators `exp_sub_inplace(v, max)` vs
//!   `(x − max).exp()`. Reported in elements/s.
//!
//! The two scalar attention loops take ~1 s per call at the S3Gen shapes, so their groups run 10
//! single calls (flat sampling, as do the millisecond-scale `pointwise/activation_cpu` and `fastmath`); the whole
//! bench takes ~3 minutes (~1 minute with `--quick`). The Cpu numbers move with the load of the
//! machine: compare the pairs of one run, not runs on different days.
//!
//! Group names start with the op family (docs/architecture.md, "Op families").
//!
//! Run: `cargo bench --bench cpu_paths` (Cpu only; `-- attention/dense_cpu_crossover` for one group,
//! `-- --quick` for a fast rough pass).
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tts_kernels::cpu::bench_support::{
    Kind, attention_dense_blocked, attention_dense_scalar, attention_relpos_scalar, exp_sub_inplace, map_generic, map_inplace,
};
use tts_kernels::cpu::{
    activation, activation_inplace, attention_dense, attention_relpos, gemm_panels, linear_packed, pack_gemm, packed_gemm_len,
};
use tts_kernels::ops::Activation;
use tts_kernels::testing::random_f32;

// The C library's erff (std has no f32 erf): the libm Gelu.
unsafe extern "C" {
    safe fn erff(x: f32) -> f32;
}

/// Values uniform in [−6, 6] (a deterministic scramble of `0..n`).
fn spread(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * 12.0).collect()
}

fn bench_crossover(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention/dense_cpu_crossover");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for (batch, l, heads, dh) in [
        (1usize, 2usize, 1usize, 64usize),
        (1, 4, 1, 64),
        (1, 8, 1, 64),
        (1, 16, 1, 64),
        (1, 32, 1, 64),
        (1, 64, 1, 64),
        (1, 4, 16, 64),
        (1, 8, 16, 64),
        (1, 16, 16, 64),
        (1, 32, 16, 64),
        (2, 8, 8, 64),
        (1, 7, 3, 37),
    ] {
        let n = batch * l * heads * dh;
        let (q, k, v) = (random_f32(1, n, 1.0), random_f32(2, n, 1.0), random_f32(3, n, 1.0));
        let mut out = vec![0f32; n];
        let id = format!("b{batch}_l{l}_{heads}x{dh}_work{}", 2 * l * l * dh);
        g.bench_function(BenchmarkId::new("scalar", &id), |b| {
            b.iter(|| attention_dense_scalar(&q, &k, &v, None, &mut out, batch, heads, dh, 0.125, true))
        });
        g.bench_function(BenchmarkId::new("blocked", &id), |b| {
            b.iter(|| attention_dense_blocked(&q, &k, &v, None, &mut out, batch, heads, dh, 0.125, true, true))
        });
    }
    g.finish();
}

/// Settings of the groups whose oracle takes about a second per call.
fn slow_group(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));
}

fn bench_dense_s3gen(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention/dense_cpu_s3gen");
    slow_group(&mut g);
    let (batch, t, heads, dh) = (2usize, 814usize, 8usize, 64usize);
    let n = batch * t * heads * dh;
    let (q, k, v) = (random_f32(1, n, 1.0), random_f32(2, n, 1.0), random_f32(3, n, 1.0));
    let lens = [t as i32, 700];
    let mut out = vec![0f32; n];
    let keys: usize = lens.iter().map(|&l| l as usize).sum();
    g.throughput(Throughput::Elements((4 * heads * t * keys * dh) as u64));
    let id = format!("{batch}x{t}x{heads}x{dh}");
    g.bench_function(BenchmarkId::new("blocked", &id), |b| {
        b.iter(|| attention_dense(&q, &k, &v, Some(&lens), &mut out, batch, heads, dh, 0.125, false).unwrap())
    });
    g.bench_function(BenchmarkId::new("blocked_sgemm", &id), |b| {
        b.iter(|| attention_dense_blocked(&q, &k, &v, Some(&lens), &mut out, batch, heads, dh, 0.125, false, false))
    });
    g.bench_function(BenchmarkId::new("scalar", &id), |b| {
        b.iter(|| attention_dense_scalar(&q, &k, &v, Some(&lens), &mut out, batch, heads, dh, 0.125, false))
    });
    g.finish();
}

fn bench_relpos_s3gen(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_relpos/cpu_s3gen");
    slow_group(&mut g);
    let (batch, t, heads, dh) = (1usize, 814usize, 8usize, 64usize);
    let hd = heads * dh;
    let n = batch * t * hd;
    let (q, k, v) = (random_f32(1, n, 1.0), random_f32(2, n, 1.0), random_f32(3, n, 1.0));
    let pos = random_f32(4, (2 * t - 1) * hd, 1.0);
    let (bu, bv) = (random_f32(5, hd, 0.5), random_f32(6, hd, 0.5));
    let lens = [t as i32];
    let mut out = vec![0f32; n];
    g.throughput(Throughput::Elements((6 * batch * heads * t * t * dh) as u64));
    let id = format!("{batch}x{t}x{heads}x{dh}");
    g.bench_function(BenchmarkId::new("blocked", &id), |b| {
        b.iter(|| attention_relpos(&q, &k, &v, &pos, &bu, &bv, Some(&lens), &mut out, batch, heads, dh, 0.125).unwrap())
    });
    g.bench_function(BenchmarkId::new("scalar", &id), |b| {
        b.iter(|| attention_relpos_scalar(&q, &k, &v, &pos, &bu, &bv, Some(&lens), &mut out, batch, heads, dh, 0.125))
    });
    g.finish();
}

fn bench_gemm_s3gen(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear/cpu_gemm_s3gen");
    g.sample_size(20);
    let m = 2 * 814;
    for (k, n) in [(256usize, 512usize), (512, 256), (256, 1024), (1024, 256), (768, 256)] {
        let x = random_f32(11, m * k, 1.0);
        let w = random_f32(12, n * k, 0.05);
        let mut panels = vec![0f32; packed_gemm_len(n, k)];
        pack_gemm(&w, n, k, &mut panels);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let id = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("panels", &id), |b| b.iter(|| gemm_panels(&x, &panels, None, &mut out, m, n, k)));
        g.bench_function(BenchmarkId::new("sgemm", &id), |b| b.iter(|| linear_packed(&x, &w, &mut out, m, n, k)));
    }
    g.finish();
}

/// `act(x)` in f32 through libm, as torch writes it.
fn libm_act(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::Mish => x * x.exp().ln_1p().tanh(),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
        _ => unimplemented!("{act:?}"),
    }
}

fn bench_activation(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise/activation_cpu");
    // flat sampling: the libm Mish takes up to ~60 ms a call
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (rows, cols) = (1028usize, 1024usize);
    let x = spread(rows * cols);
    let mut y = vec![0f32; x.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    g.throughput(Throughput::Elements(x.len() as u64));
    for (name, act) in
        [("gelu", Activation::Gelu), ("mish", Activation::Mish), ("silu", Activation::Silu), ("elu", Activation::Elu)]
    {
        let id = format!("{name}/{rows}x{cols}");
        g.bench_function(BenchmarkId::new("libm", &id), |b| {
            b.iter_batched_ref(
                || x.clone(),
                |v| {
                    let chunk = v.len().div_ceil(threads);
                    std::thread::scope(|s| {
                        for part in v.chunks_mut(chunk) {
                            s.spawn(move || part.iter_mut().for_each(|e| *e = libm_act(act, *e)));
                        }
                    })
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function(BenchmarkId::new("inplace", &id), |b| {
            b.iter_batched_ref(|| x.clone(), |v| activation_inplace(v, cols, act, None, None), BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("out_of_place", &id), |b| b.iter(|| activation(&x, &mut y, cols, act, None, None)));
    }
    g.finish();
}

fn bench_fastmath(c: &mut Criterion) {
    let mut g = c.benchmark_group("fastmath");
    // flat sampling: the libm Mish takes up to ~60 ms a call
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let x = spread(1 << 20);
    g.throughput(Throughput::Elements(x.len() as u64));
    let n = format!("{}", x.len());
    // the softmax numerators: arguments x − max in [−12, 0]
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    g.bench_function(BenchmarkId::new("libm", format!("exp_sub/{n}")), |b| {
        b.iter_batched_ref(|| x.clone(), |v| v.iter_mut().for_each(|e| *e = (*e - max).exp()), BatchSize::LargeInput)
    });
    g.bench_function(BenchmarkId::new("fast", format!("exp_sub/{n}")), |b| {
        b.iter_batched_ref(|| x.clone(), |v| exp_sub_inplace(v, max), BatchSize::LargeInput)
    });
    for (name, kind, act) in [
        ("gelu", Kind::Gelu, Activation::Gelu),
        ("mish", Kind::Mish, Activation::Mish),
        ("silu", Kind::Silu, Activation::Silu),
        ("elu", Kind::Elu, Activation::Elu),
    ] {
        let id = format!("{name}/{n}");
        g.bench_function(BenchmarkId::new("libm", &id), |b| {
            b.iter_batched_ref(|| x.clone(), |v| v.iter_mut().for_each(|e| *e = libm_act(act, *e)), BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("generic", &id), |b| {
            b.iter_batched_ref(|| x.clone(), |v| map_generic(kind, v), BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("dispatched", &id), |b| {
            b.iter_batched_ref(|| x.clone(), |v| map_inplace(kind, v), BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_crossover,
    bench_dense_s3gen,
    bench_relpos_s3gen,
    bench_gemm_s3gen,
    bench_activation,
    bench_fastmath
);
criterion_main!(benches);
