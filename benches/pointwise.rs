//! Benchmarks of the pointwise family (`kernels/pointwise.cu`), of GroupNorm
//! (`kernels/groupnorm.cu`), BatchNorm (`kernels/batchnorm.cu`), the poolings (`kernels/pooling.cu`)
//! and of the relative-position attention (`kernels/attention_relpos.cu`)
//! on every backend this build and machine have (Cpu always; Emu with `--features emu`; Cuda when a
//! GPU is usable).
//!
//! - `pointwise/activation` (Mish: the S3Gen decoder's ResNet blocks, [2 CFG rows, 814 frames, 256 channels];
//!   Snake: HiFT, [1, 24000 samples, 64 channels]) and `pointwise/cfm_euler_cfg` (one flow-matching step of
//!   80 mel channels, writing the next estimator input of 320 channels), `pointwise/add_batch_bias`,
//!   `pointwise/add_scaled` and `pointwise/write_cols` report bytes moved per second (GB/s).
//! - `groupnorm` (S3Gen's decoder widths: [2 CFG rows, 814 frames, 256 channels], 8 groups, the
//!   second row 17 frames shorter) reports the bytes of one read of x (f32) and one write of out
//!   (compute dtype) per second (GB/s); the kernel reads x three times, mostly from cache.
//! - `batchnorm` (CAMPPlus's densest BatchNorm + ReLU: 976 of a dense block's columns over 500
//!   frames, f32) and `pooling/segment_mean`, `pooling/segment_gate`, `pooling/stats_pool` (CAMPPlus's
//!   CAM layer over [500 frames, 128 channels] in 100-frame segments, statistics pooling over
//!   [500, 512]) report the bytes read and written per second (GB/s).
//! - `attention_relpos` (the conformer encoder: B = 1, T = 400, 8 heads × 64) reports floating-point
//!   operations per second (criterion prints them as "elem/s": 1 elem = 1 FLOP, counting
//!   6·T²·head_dim per head: two score dot products and the weighted sum).
//!
//! Run: `cargo bench --features emu --bench pointwise` (Emu numbers measure the CPU shim, not a GPU;
//! it runs ~10 M CUDA threads/s, so the Emu runs take the smaller shapes).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::ops::Activation;
use tts_kernels::testing::{bench_devices, random_f32};
use tts_kernels::{DType, Tensor, ops};

fn bench_activation(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise/activation");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let act = dev.compute_dtype();
        for (label, shape, a) in [
            ("mish", [2usize, 814, 256], Activation::Mish),
            ("snake", [2, 814, 256], Activation::Snake),
            ("mish", [1, 24000, 64], Activation::Mish),
            ("snake", [1, 24000, 64], Activation::Snake),
        ] {
            let len: usize = shape.iter().product();
            if name == "emu" && len > 500_000 {
                continue; // keep the shim's runs short
            }
            let x = Tensor::from_f32(&dev, act, &shape, &random_f32(1, len, 2.0)).unwrap();
            let alpha: Vec<f32> = random_f32(2, shape[2], 1.0).iter().map(|v| v.abs() + 0.2).collect();
            let alpha = Tensor::from_f32(&dev, DType::F32, &[shape[2]], &alpha).unwrap();
            // the decoder's padding mask: the second CFG row shorter
            let lens = Tensor::from_i32(&dev, &[shape[0]], &vec![shape[1] as i32 - 17; shape[0]]).unwrap();
            let mut out = Tensor::uninit(&dev, act, &shape).unwrap();
            g.throughput(Throughput::Bytes((len * 2 * act.size()) as u64));
            let id = format!("{label}/{}x{}x{}", shape[0], shape[1], shape[2]);
            g.bench_with_input(BenchmarkId::new(name, id), &len, |b, _| {
                b.iter(|| {
                    let alpha = (a == Activation::Snake).then(|| alpha.view());
                    ops::activation(x.view(), out.view_mut(), a, alpha, Some(lens.view())).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn bench_euler(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise/cfm_euler_cfg");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let (b, n, ch, c_in) = (1usize, 814usize, 80usize, 320usize);
        let act = dev.compute_dtype();
        let mut x = Tensor::from_f32(&dev, DType::F32, &[b, n, ch], &random_f32(3, b * n * ch, 1.0)).unwrap();
        let v = Tensor::from_f32(&dev, DType::F32, &[2 * b, n, ch], &random_f32(4, 2 * b * n * ch, 1.0)).unwrap();
        let mut est = Tensor::zeros(&dev, act, &[2 * b, n, c_in]).unwrap();
        // read and write x, read both halves of v, write two est rows per x row
        let bytes = b * n * ch * (8 + 8 + 2 * act.size());
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("{b}x{n}x{ch}")), &n, |bch, _| {
            bch.iter(|| {
                // dt 0: x stays bounded over the iterations (the cost does not depend on the values)
                ops::cfm_euler_cfg(x.view_mut(), v.view(), Some(est.view_mut()), 0.0, 0.7).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_group_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("groupnorm");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let (b, t, ch, groups) = (2usize, 814usize, 256usize, 8usize);
        let len = b * t * ch;
        let act = dev.compute_dtype();
        let x: Vec<f32> = random_f32(11, len, 2.0).iter().map(|v| v + 1.0).collect();
        let x = Tensor::from_f32(&dev, DType::F32, &[b, t, ch], &x).unwrap();
        let w = Tensor::from_f32(&dev, act, &[ch], &random_f32(12, ch, 1.0)).unwrap();
        let bias = Tensor::from_f32(&dev, act, &[ch], &random_f32(13, ch, 1.0)).unwrap();
        let lens = Tensor::from_i32(&dev, &[b], &[t as i32, t as i32 - 17]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[b, t, ch]).unwrap();
        g.throughput(Throughput::Bytes((len * (4 + act.size())) as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("{b}x{t}x{ch}/g{groups}")), &len, |bch, _| {
            bch.iter(|| {
                ops::group_norm(x.view(), w.view(), Some(bias.view()), Some(lens.view()), groups, out.view_mut(), 1e-5).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_batch_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("batchnorm");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let (rows, row, ch) = (500usize, 1024usize, 976usize);
        let f = DType::F32;
        let x = Tensor::from_f32(&dev, f, &[rows, row], &random_f32(21, rows * row, 2.0)).unwrap();
        let scale = Tensor::from_f32(&dev, f, &[ch], &random_f32(22, ch, 1.0)).unwrap();
        let shift = Tensor::from_f32(&dev, f, &[ch], &random_f32(23, ch, 1.0)).unwrap();
        let mut out = Tensor::uninit(&dev, f, &[rows, ch]).unwrap();
        g.throughput(Throughput::Bytes((rows * ch * 8) as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("{rows}x{ch}_of_{row}/relu")), &rows, |bch, _| {
            bch.iter(|| {
                let p = ops::BatchNormCols { col_offset: 0, relu: true };
                ops::batch_norm(x.view(), scale.view(), shift.view(), None, out.view_mut(), p).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_pooling(c: &mut Criterion) {
    let mut g = c.benchmark_group("pooling");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let (t, ch, seg, wide) = (500usize, 128usize, 100usize, 512usize);
        let f = DType::F32;
        let x = Tensor::from_f32(&dev, f, &[t, ch], &random_f32(31, t * ch, 1.0)).unwrap();
        let mut ctx = Tensor::uninit(&dev, f, &[t.div_ceil(seg), ch]).unwrap();
        g.throughput(Throughput::Bytes((2 * t * ch * 4) as u64));
        g.bench_with_input(BenchmarkId::new(format!("segment_mean/{name}"), format!("{t}x{ch}/{seg}")), &t, |bch, _| {
            bch.iter(|| {
                ops::segment_mean(x.view(), ctx.view_mut(), seg).unwrap();
                dev.synchronize().unwrap();
            })
        });
        let mut y = Tensor::from_f32(&dev, f, &[t, ch], &random_f32(32, t * ch, 1.0)).unwrap();
        let z = Tensor::from_f32(&dev, f, &[t.div_ceil(seg), ch], &random_f32(33, t.div_ceil(seg) * ch, 1.0)).unwrap();
        g.bench_with_input(BenchmarkId::new(format!("segment_gate/{name}"), format!("{t}x{ch}/{seg}")), &t, |bch, _| {
            bch.iter(|| {
                ops::segment_gate(y.view_mut(), z.view(), seg).unwrap();
                dev.synchronize().unwrap();
            })
        });
        let xs = Tensor::from_f32(&dev, f, &[t, wide], &random_f32(34, t * wide, 1.0)).unwrap();
        let mut stats = Tensor::uninit(&dev, f, &[2 * wide]).unwrap();
        g.throughput(Throughput::Bytes((2 * t * wide * 4) as u64));
        g.bench_with_input(BenchmarkId::new(format!("stats_pool/{name}"), format!("{t}x{wide}")), &t, |bch, _| {
            bch.iter(|| {
                ops::stats_pool(xs.view(), stats.view_mut()).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_relpos(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_relpos");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        let (b, t, heads, d) = (1usize, 400usize, 8usize, 64usize);
        let w = heads * d;
        let act = dev.compute_dtype();
        let q = Tensor::from_f32(&dev, act, &[b, t, w], &random_f32(5, b * t * w, 1.0)).unwrap();
        let k = Tensor::from_f32(&dev, act, &[b, t, w], &random_f32(6, b * t * w, 1.0)).unwrap();
        let v = Tensor::from_f32(&dev, act, &[b, t, w], &random_f32(7, b * t * w, 1.0)).unwrap();
        let pos = Tensor::from_f32(&dev, act, &[2 * t - 1, w], &random_f32(8, (2 * t - 1) * w, 1.0)).unwrap();
        let bu = Tensor::from_f32(&dev, DType::F32, &[heads, d], &random_f32(9, w, 0.1)).unwrap();
        let bv = Tensor::from_f32(&dev, DType::F32, &[heads, d], &random_f32(10, w, 0.1)).unwrap();
        let lens = Tensor::from_i32(&dev, &[b], &[t as i32]).unwrap();
        let mut out = Tensor::uninit(&dev, act, &[b, t, w]).unwrap();
        g.throughput(Throughput::Elements((6 * b * heads * t * t * d) as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("{b}x{t}x{heads}x{d}")), &t, |bch, _| {
            bch.iter(|| {
                ops::attention_relpos(
                    q.view(),
                    k.view(),
                    v.view(),
                    pos.view(),
                    bu.view(),
                    bv.view(),
                    Some(lens.view()),
                    out.view_mut(),
                    heads,
                    0.125,
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

/// The S3Gen estimator's other pointwise ops at its shapes (CFG batch 2 × 814 frames, 256
/// channels; the input concatenation of 320): `add_batch_bias` (a ResNet block's time embedding),
/// `add_scaled` (y += s·x on f32 streams) and `write_cols` (80 mel channels into the input).
fn bench_pointwise_small(c: &mut Criterion) {
    for op in ["add_batch_bias", "add_scaled", "write_cols"] {
        let mut g = c.benchmark_group(format!("pointwise/{op}"));
        g.sample_size(10);
        for (name, dev) in bench_devices() {
            let (b, n, ch) = (2usize, if name == "emu" { 64 } else { 814 }, 256usize);
            let act = dev.compute_dtype();
            let mut y = Tensor::from_f32(&dev, DType::F32, &[b, n, ch], &random_f32(20, b * n * ch, 1.0)).unwrap();
            let v = Tensor::from_f32(&dev, DType::F32, &[b, ch], &random_f32(21, b * ch, 1.0)).unwrap();
            let x = Tensor::from_f32(&dev, act, &[b, n, ch], &random_f32(22, b * n * ch, 1.0)).unwrap();
            let mel = Tensor::from_f32(&dev, DType::F32, &[b, n, 80], &random_f32(23, b * n * 80, 1.0)).unwrap();
            let mut est = Tensor::zeros(&dev, act, &[b, n, 320]).unwrap();
            let bytes = match op {
                "add_batch_bias" => b * n * ch * 8,
                "add_scaled" => b * n * ch * (8 + act.size()),
                _ => b * n * 80 * (4 + act.size()),
            };
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::new(name, format!("{b}x{n}x{ch}")), &n, |bch, _| {
                bch.iter(|| {
                    match op {
                        "add_batch_bias" => ops::add_batch_bias(y.view_mut(), v.view()),
                        "add_scaled" => ops::add_scaled(y.view_mut(), x.view(), 0.5),
                        _ => ops::write_cols(mel.view(), est.view_mut(), 80),
                    }
                    .unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    bench_activation,
    bench_euler,
    bench_pointwise_small,
    bench_group_norm,
    bench_batch_norm,
    bench_pooling,
    bench_relpos
);
criterion_main!(benches);
