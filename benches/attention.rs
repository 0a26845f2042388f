//! Benchmarks of RoPE + KV-cache write and attention on every backend this build and machine have
//! (Cpu always; Emu with `--features emu`; Cuda when a GPU is usable).
//!
//! - `rope` (`rope_kv_write`) and `attention/cached` (`attention_cached*`) report bytes moved per second
//!   (GB/s): q, the live K/V rows of every row's context and the output.
//! - `attention/rope_decode` (the fused decode step: RoPE, the new K/V rows and the attention in
//!   one launch, and its split form) reports bytes moved per second as the decode attention.
//! - `attention/dense` reports floating-point operations per second (criterion prints them as
//!   "elem/s": 1 elem = 1 FLOP, counting 4·lq·lk·head_dim per batch and head; masked keys excluded).
//!
//! Run: `cargo bench --features emu --bench attention` (Emu numbers measure the CPU shim, not a GPU;
//! its shapes are smaller: the shim runs ~10 M CUDA threads/s).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::testing::{bench_devices, random_f32, random_i32};
use tts_kernels::{DType, Tensor, cpu, ops};

// T3: 16 heads × 64
const HEADS: usize = 16;
const D: usize = 64;

fn bench_rope(c: &mut Criterion) {
    let mut g = c.benchmark_group("rope");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // decode step: 64 requests × 2 CFG rows, one token each
        let (rows, n_slots, max_len) = (128usize, 128usize, 64usize);
        let act = dev.compute_dtype();
        let hd = HEADS * D;
        let qkv = Tensor::from_f32(&dev, act, &[rows, 3 * hd], &random_f32(1, rows * 3 * hd, 1.0)).unwrap();
        let pos = Tensor::from_i32(&dev, &[rows], &random_i32(2, rows, 0, max_len as i32)).unwrap();
        let slots = Tensor::from_i32(&dev, &[rows], &(0..rows as i32).collect::<Vec<_>>()).unwrap();
        let inv = Tensor::from_f32(&dev, DType::F32, &[D / 2], &cpu::llama3_inv_freq(D, 500000.0, 8.0, 1.0, 4.0, 8192)).unwrap();
        let mut q = Tensor::uninit(&dev, act, &[rows, hd]).unwrap();
        let mut kc = Tensor::zeros(&dev, act, &[n_slots, HEADS, max_len, D]).unwrap();
        let mut vc = Tensor::zeros(&dev, act, &[n_slots, HEADS, max_len, D]).unwrap();
        // read qkv, write q_out and the k, v cache rows
        let bytes = rows * hd * act.size() * 6;
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
            b.iter(|| {
                ops::rope_kv_write(qkv.view(), pos.view(), slots.view(), inv.view(), q.view_mut(), kc.view_mut(), vc.view_mut())
                    .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_decode_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention/cached");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // (rows, context), the cache sized to the context: one request (a CFG pair) and a batch
        let shapes: &[(usize, usize)] = match name {
            "emu" => &[(2, 1024), (16, 128)],
            "cpu" => &[(2, 1024), (64, 512)],
            _ => &[(2, 1024), (2, 4096), (128, 1024)],
        };
        // Cpu: the f32 cache of `cpu` and the bf16 cache of `cpu-bf16` (Device::kv_dtype)
        let kv_dtypes: &[DType] = if name == "cpu" { &[DType::F32, DType::BF16] } else { &[DType::BF16] };
        for (&(rows, ctx), &kv) in shapes.iter().flat_map(|s| kv_dtypes.iter().map(move |k| (s, k))) {
            let max_len = ctx;
            let act = dev.compute_dtype();
            let hd = HEADS * D;
            let clen = rows * hd * max_len;
            let q = Tensor::from_f32(&dev, act, &[rows, hd], &random_f32(3, rows * hd, 1.0)).unwrap();
            let kc = Tensor::from_f32(&dev, kv, &[rows, HEADS, max_len, D], &random_f32(4, clen, 1.0)).unwrap();
            let vc = Tensor::from_f32(&dev, kv, &[rows, HEADS, max_len, D], &random_f32(5, clen, 1.0)).unwrap();
            let slots = Tensor::from_i32(&dev, &[rows], &(0..rows as i32).collect::<Vec<_>>()).unwrap();
            let lens = Tensor::from_i32(&dev, &[rows], &vec![ctx as i32; rows]).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[rows, hd]).unwrap();
            let splits = ops::attention_cached_splits(rows, HEADS, max_len);
            let mut scratch = Tensor::uninit(&dev, DType::F32, &[rows, HEADS, splits, D + 2]).unwrap();
            // read q and the live K and V rows, write out
            let bytes = rows * hd * (2 * act.size() + 2 * ctx * kv.size());
            g.throughput(Throughput::Bytes(bytes as u64));
            let id = if name == "cpu" { format!("{rows}x{ctx}/{kv}-kv") } else { format!("{rows}x{ctx}") };
            g.bench_with_input(BenchmarkId::new(name, &id), &rows, |b, _| {
                b.iter(|| {
                    ops::attention_cached(q.view(), kc.view(), vc.view(), slots.view(), lens.view(), out.view_mut(), 0.125)
                        .unwrap();
                    dev.synchronize().unwrap();
                })
            });
            if splits > 1 && name != "cpu" {
                g.bench_with_input(BenchmarkId::new(format!("{name}/split{splits}"), &id), &rows, |b, _| {
                    b.iter(|| {
                        ops::attention_cached_split(
                            q.view(),
                            kc.view(),
                            vc.view(),
                            slots.view(),
                            lens.view(),
                            out.view_mut(),
                            scratch.view_mut(),
                            0.125,
                        )
                        .unwrap();
                        dev.synchronize().unwrap();
                    })
                });
            }
        }
    }
    g.finish();
}

fn bench_dense_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention/dense");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // (label, batch, lq, lk, heads, head_dim): an S3Gen estimator block (CFG batch 2, 8 × 64)
        // and the T3 Perceiver's cross-attention (4 × 256, 32 queries over a 150-token prompt)
        let s3_len = if name == "cuda" { 1600 } else { 256 };
        for (label, batch, lq, lk, heads, dh) in
            [("s3gen", 2usize, s3_len, s3_len, 8usize, 64usize), ("perceiver", 2, 32, 150, 4, 256)]
        {
            let act = dev.compute_dtype();
            let w = heads * dh;
            let q = Tensor::from_f32(&dev, act, &[batch, lq, w], &random_f32(6, batch * lq * w, 1.0)).unwrap();
            let k = Tensor::from_f32(&dev, act, &[batch, lk, w], &random_f32(7, batch * lk * w, 1.0)).unwrap();
            let v = Tensor::from_f32(&dev, act, &[batch, lk, w], &random_f32(8, batch * lk * w, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[batch, lq, w]).unwrap();
            let flops = 4 * batch * heads * lq * lk * dh;
            g.throughput(Throughput::Elements(flops as u64));
            let id = format!("{label}/{batch}x{lq}x{lk}x{heads}x{dh}");
            g.bench_with_input(BenchmarkId::new(name, &id), &lq, |b, _| {
                b.iter(|| {
                    ops::attention_dense(
                        q.view(),
                        k.view(),
                        v.view(),
                        None,
                        out.view_mut(),
                        heads,
                        1.0 / (dh as f32).sqrt(),
                        false,
                    )
                    .unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// The fused decode step of T3's layers (`ops::rope_attention_decode`: RoPE + KV-cache write +
/// attention in one launch, `rope_attention_decode_d64_bf16`) and its split form
/// (`ops::rope_attention_decode_split` with the slices `ops::decode_attention_splits` picks for
/// the device: `rope_attention_decode_d64_bf16` over slices + `attention_cached_combine_bf16`).
fn bench_rope_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention/rope_decode");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // (rows, context): one request (a CFG pair) and a batch, each row's new token at ctx - 1
        let shapes: &[(usize, usize)] = match name {
            "emu" => &[(2, 1024), (16, 128)],
            "cpu" => &[(2, 1024), (64, 512)],
            _ => &[(2, 1024), (2, 4096), (128, 1024)],
        };
        for &(rows, ctx) in shapes {
            let max_len = ctx;
            let act = dev.compute_dtype();
            let hd = HEADS * D;
            let clen = rows * hd * max_len;
            let qkv = Tensor::from_f32(&dev, act, &[rows, 3 * hd], &random_f32(9, rows * 3 * hd, 1.0)).unwrap();
            let pos = Tensor::from_i32(&dev, &[rows], &vec![ctx as i32 - 1; rows]).unwrap();
            let slots = Tensor::from_i32(&dev, &[rows], &(0..rows as i32).collect::<Vec<_>>()).unwrap();
            let lens = Tensor::from_i32(&dev, &[rows], &vec![ctx as i32; rows]).unwrap();
            let inv =
                Tensor::from_f32(&dev, DType::F32, &[D / 2], &cpu::llama3_inv_freq(D, 500000.0, 8.0, 1.0, 4.0, 8192)).unwrap();
            let mut kc = Tensor::from_f32(&dev, act, &[rows, HEADS, max_len, D], &random_f32(10, clen, 1.0)).unwrap();
            let mut vc = Tensor::from_f32(&dev, act, &[rows, HEADS, max_len, D], &random_f32(11, clen, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[rows, hd]).unwrap();
            let splits = ops::decode_attention_splits(rows, HEADS, dev.multiprocessor_count().unwrap());
            let mut scratch = Tensor::uninit(&dev, DType::F32, &[rows, HEADS, splits, D + 2]).unwrap();
            // read qkv and the live K and V rows, write the new K and V rows and out
            let bytes = rows * hd * act.size() * (3 + 2 * ctx + 2 + 1);
            g.throughput(Throughput::Bytes(bytes as u64));
            let id = format!("{rows}x{ctx}");
            g.bench_with_input(BenchmarkId::new(name, &id), &rows, |b, _| {
                b.iter(|| {
                    ops::rope_attention_decode(
                        qkv.view(),
                        pos.view(),
                        slots.view(),
                        inv.view(),
                        kc.view_mut(),
                        vc.view_mut(),
                        lens.view(),
                        out.view_mut(),
                        0.125,
                    )
                    .unwrap();
                    dev.synchronize().unwrap();
                })
            });
            if splits > 1 {
                g.bench_with_input(BenchmarkId::new(format!("{name}/split{splits}"), &id), &rows, |b, _| {
                    b.iter(|| {
                        ops::rope_attention_decode_split(
                            qkv.view(),
                            pos.view(),
                            slots.view(),
                            inv.view(),
                            kc.view_mut(),
                            vc.view_mut(),
                            lens.view(),
                            out.view_mut(),
                            scratch.view_mut(),
                            0.125,
                        )
                        .unwrap();
                        dev.synchronize().unwrap();
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_rope, bench_decode_attention, bench_rope_decode, bench_dense_attention);
criterion_main!(benches);
