//! Microbenchmarks of the kernel families on every backend this build and machine have
//! (Cpu always; Emu with `--features emu`; Cuda when a GPU is usable). Throughput is reported in
//! bytes moved per second (GB/s), the figure of merit of these memory-bound ops.
//!
//! Run: `cargo bench --features emu --bench kernels` (Emu numbers measure the CPU shim, not a GPU).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::testing::{bench_devices, random_f32, random_i32};
use tts_kernels::{DType, Device, Tensor, ops};

fn bench_rmsnorm(c: &mut Criterion) {
    let mut g = c.benchmark_group("rmsnorm");
    for (name, dev) in bench_devices() {
        // T3 decode (64 requests x 2 CFG rows) and prefill-sized shapes at hidden 1024
        for rows in [128usize, 1024] {
            let cols = 1024;
            if name == "emu" && rows > 128 {
                continue; // the shim runs ~10 M CUDA threads/s: keep its runs short
            }
            let act = dev.compute_dtype();
            let x = Tensor::from_f32(&dev, act, &[rows, cols], &random_f32(1, rows * cols, 1.0)).unwrap();
            let mut res = Tensor::from_f32(&dev, DType::F32, &[rows, cols], &random_f32(2, rows * cols, 1.0)).unwrap();
            let w = Tensor::from_f32(&dev, act, &[cols], &random_f32(3, cols, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[rows, cols]).unwrap();
            // bytes: read x and residual, write residual and out, read weight
            let bytes = rows * cols * (act.size() * 2 + 8) + cols * act.size();
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| {
                    ops::add_rmsnorm(Some(x.view()), res.view_mut(), w.view(), out.view_mut(), 1e-5).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn bench_embedding(c: &mut Criterion) {
    let mut g = c.benchmark_group("embedding");
    for (name, dev) in bench_devices() {
        let (vocab, n_pos, dim) = (8194usize, 4100usize, 1024usize);
        for rows in [128usize, 512] {
            if name == "emu" && rows > 128 {
                continue;
            }
            let act = dev.compute_dtype();
            let table = Tensor::from_f32(&dev, act, &[vocab, dim], &random_f32(4, vocab * dim, 1.0)).unwrap();
            let pos_table = Tensor::from_f32(&dev, act, &[n_pos, dim], &random_f32(5, n_pos * dim, 1.0)).unwrap();
            let ids = Tensor::from_i32(&dev, &[rows], &random_i32(6, rows, 0, vocab as i32)).unwrap();
            let pos = Tensor::from_i32(&dev, &[rows], &random_i32(7, rows, 0, n_pos as i32)).unwrap();
            let mut out = Tensor::uninit(&dev, DType::F32, &[rows, dim]).unwrap();
            let bytes = rows * dim * (2 * act.size() + 4);
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| {
                    ops::embed_pos(ids.view(), Some((pos.view(), pos_table.view())), table.view(), out.view_mut()).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    for (name, dev) in bench_devices() {
        if name == "emu" {
            continue; // Emu's GEMM is the Cpu one on widened bf16 inputs: nothing new to measure
        }
        // T3 decode GEMMs (1 and 8 requests with CFG) and a prefill-sized one: [m, 1024] x [4096, 1024]^T
        for m in [2usize, 16, 256] {
            let (n, k) = (4096usize, 1024usize);
            let act = dev.compute_dtype();
            let x = Tensor::from_f32(&dev, act, &[m, k], &random_f32(8, m * k, 1.0)).unwrap();
            let w = Tensor::from_f32(&dev, act, &[n, k], &random_f32(9, n * k, 0.03)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[m, n]).unwrap();
            // bytes of the weight: what bounds decode-sized GEMMs
            g.throughput(Throughput::Bytes((n * k * act.size()) as u64));
            g.bench_with_input(BenchmarkId::new(name, m), &m, |b, _| {
                b.iter(|| {
                    ops::linear(x.view(), w.view(), None, out.view_mut()).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// The decode GEMV as a decode step meets it: a chain of weights larger than the last-level cache
/// (16 × [4096, 1024], 128 MB in bf16), each read from memory, for the Cpu backends with row-major
/// weights against the same weights packed by `ops::pack_linear_weight`, side by side. Throughput
/// is weight bytes per second (the bound of a decode step: memory bandwidth).
fn bench_linear_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear/stream");
    g.sample_size(10);
    let (n, k, count) = (4096usize, 1024usize, 16usize);
    for (name, dev) in [("cpu", Device::cpu()), ("cpu-bf16", Device::cpu_bf16_weights())] {
        let wd = dev.weight_dtype();
        let row_major: Vec<Tensor> =
            (0..count).map(|i| Tensor::from_f32(&dev, wd, &[n, k], &random_f32(20 + i as u64, n * k, 0.03)).unwrap()).collect();
        let packed: Vec<Tensor> = row_major
            .iter()
            .map(|w| ops::pack_linear_weight(Tensor::from_f32(&dev, wd, &[n, k], &w.to_f32_vec().unwrap()).unwrap()).unwrap())
            .collect();
        g.throughput(Throughput::Bytes((count * n * k * wd.size()) as u64));
        for m in [2usize, 16, 256] {
            let x = Tensor::from_f32(&dev, DType::F32, &[m, k], &random_f32(8, m * k, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, DType::F32, &[m, n]).unwrap();
            for (layout, ws) in [("row-major", &row_major), ("packed", &packed)] {
                g.bench_with_input(BenchmarkId::new(format!("{name}/{layout}"), m), &m, |b, _| {
                    b.iter(|| {
                        for w in ws.iter() {
                            ops::linear(x.view(), w.view(), None, out.view_mut()).unwrap();
                        }
                    })
                });
            }
        }
    }
    g.finish();
}

/// S3Gen's LayerNorm (conformer and estimator blocks: 256 and 512 channels, CFG batch 2 × 814
/// frames), f32 in, the compute dtype out.
fn bench_layernorm(c: &mut Criterion) {
    let mut g = c.benchmark_group("layernorm");
    for (name, dev) in bench_devices() {
        for cols in [256usize, 512] {
            let rows = if name == "emu" { 64 } else { 1628 };
            let act = dev.compute_dtype();
            let x = Tensor::from_f32(&dev, DType::F32, &[rows, cols], &random_f32(30, rows * cols, 1.0)).unwrap();
            let w = Tensor::from_f32(&dev, act, &[cols], &random_f32(31, cols, 1.0)).unwrap();
            let b = Tensor::from_f32(&dev, act, &[cols], &random_f32(32, cols, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[rows, cols]).unwrap();
            // read x, write out
            g.throughput(Throughput::Bytes((rows * cols * (4 + act.size())) as u64));
            g.bench_with_input(BenchmarkId::new(name, format!("{rows}x{cols}")), &cols, |bch, _| {
                bch.iter(|| {
                    ops::layer_norm(x.view(), w.view(), Some(b.view()), out.view_mut(), 1e-5).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// The Llama MLP gate of T3 (inner 4096): `[rows, 2·4096]` in, `[rows, 4096]` out.
fn bench_swiglu(c: &mut Criterion) {
    let mut g = c.benchmark_group("swiglu");
    for (name, dev) in bench_devices() {
        for rows in [2usize, 128] {
            if name == "emu" && rows > 2 {
                continue;
            }
            let inner = 4096;
            let act = dev.compute_dtype();
            let gu = Tensor::from_f32(&dev, act, &[rows, 2 * inner], &random_f32(33, rows * 2 * inner, 2.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[rows, inner]).unwrap();
            g.throughput(Throughput::Bytes((rows * inner * 3 * act.size()) as u64));
            g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| {
                    ops::swiglu(gu.view(), out.view_mut()).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// The residual add of T3's unfused layers (`add_residual`: f32 residual += x + bias) and a bias
/// add in the compute dtype (`add_bias`), at hidden 1024.
fn bench_elementwise(c: &mut Criterion) {
    for op in ["add_residual", "add_bias"] {
        let mut g = c.benchmark_group(format!("elementwise/{op}"));
        for (name, dev) in bench_devices() {
            for rows in [128usize, 1024] {
                if name == "emu" && rows > 128 {
                    continue;
                }
                let cols = 1024;
                let act = dev.compute_dtype();
                let x = Tensor::from_f32(&dev, act, &[rows, cols], &random_f32(34, rows * cols, 1.0)).unwrap();
                let bias = Tensor::from_f32(&dev, act, &[cols], &random_f32(35, cols, 1.0)).unwrap();
                let mut res = Tensor::from_f32(&dev, DType::F32, &[rows, cols], &random_f32(36, rows * cols, 1.0)).unwrap();
                let mut y = Tensor::from_f32(&dev, act, &[rows, cols], &random_f32(37, rows * cols, 1.0)).unwrap();
                // add_residual: read x and the residual, write the residual; add_bias: read and write y
                let bytes = if op == "add_residual" { rows * cols * (act.size() + 8) } else { rows * cols * 2 * act.size() };
                g.throughput(Throughput::Bytes(bytes as u64));
                g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                    b.iter(|| {
                        if op == "add_residual" {
                            ops::add_residual(res.view_mut(), x.view(), Some(bias.view())).unwrap();
                        } else {
                            ops::add_bias(y.view_mut(), bias.view()).unwrap();
                        }
                        dev.synchronize().unwrap();
                    })
                });
            }
        }
        g.finish();
    }
}

/// A linear layer with a bias on the kernel backends: the bias is written into the output first
/// (`fill_rows_*` of `kernels/elementwise.cu`) and the GEMM accumulates onto it. Three output
/// kinds: the compute dtype, f32, and the precise all-f32 GEMM (HiFT's F0 predictor).
fn bench_linear_bias(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear/bias");
    for (name, dev) in bench_devices() {
        let (m, n, k) = if name == "emu" { (16usize, 256usize, 64usize) } else { (1628, 1024, 256) };
        let act = dev.compute_dtype();
        for (kind, x_dt, w_dt, out_dt) in [
            ("act", act, dev.weight_dtype(), act),
            ("f32-out", act, dev.weight_dtype(), DType::F32),
            ("precise", DType::F32, DType::F32, DType::F32),
        ] {
            let b_dt = if kind == "precise" { DType::F32 } else { act };
            let x = Tensor::from_f32(&dev, x_dt, &[m, k], &random_f32(38, m * k, 1.0)).unwrap();
            let w = Tensor::from_f32(&dev, w_dt, &[n, k], &random_f32(39, n * k, 0.06)).unwrap();
            let b = Tensor::from_f32(&dev, b_dt, &[n], &random_f32(40, n, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, out_dt, &[m, n]).unwrap();
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            g.bench_with_input(BenchmarkId::new(format!("{name}/{kind}"), format!("{m}x{n}x{k}")), &m, |bch, _| {
                bch.iter(|| {
                    ops::linear(x.view(), w.view(), Some(b.view()), out.view_mut()).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// T3's per-step state update after the sampler (`advance_decode_state`), 1 and 64 requests.
fn bench_decode_state(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_state");
    for (name, dev) in bench_devices() {
        for n in [1usize, 64] {
            let next = Tensor::from_i32(&dev, &[n], &random_i32(41, n, 0, 8194)).unwrap();
            let state = Tensor::from_i32(&dev, &[n, 4], &vec![0; n * 4]).unwrap();
            let mut tokens = Tensor::from_i32(&dev, &[2 * n], &random_i32(42, 2 * n, 0, 8194)).unwrap();
            let mut positions = Tensor::from_i32(&dev, &[2 * n], &random_i32(43, 2 * n, 40, 900)).unwrap();
            let mut speech_pos = Tensor::from_i32(&dev, &[2 * n], &random_i32(44, 2 * n, 0, 500)).unwrap();
            let mut lens = Tensor::from_i32(&dev, &[2 * n], &random_i32(45, 2 * n, 41, 901)).unwrap();
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    ops::advance_decode_state(
                        next.view(),
                        state.view(),
                        tokens.view_mut(),
                        positions.view_mut(),
                        speech_pos.view_mut(),
                        lens.view_mut(),
                    )
                    .unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_rmsnorm,
    bench_layernorm,
    bench_embedding,
    bench_linear,
    bench_linear_bias,
    bench_linear_stream,
    bench_swiglu,
    bench_elementwise,
    bench_decode_state
);
criterion_main!(benches);
