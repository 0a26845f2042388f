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

criterion_group!(benches, bench_rmsnorm, bench_embedding, bench_linear, bench_linear_stream);
criterion_main!(benches);
