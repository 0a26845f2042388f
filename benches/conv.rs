//! Microbenchmarks of the conv kernel family (im2col, col2im_transpose) and of HiFT's signal stages
//! (hift_source, hift_istft) on every backend this build and machine have (Cpu always; Emu with
//! `--features emu`; Cuda when a GPU is usable). Throughput is bytes moved per second (GB/s):
//! these ops are memory-bound copies / gathers, except hift_source (9 sincos per sample).
//!
//! `conv1d_cpu`: a whole Cpu convolution, im2col + GEMM (`ops::im2col`, `ops::linear` on the packed
//! weight) against `ops::conv1d_packed` (straight from the input, tap-major packed weight), side by
//! side at the same shapes. FLOP/s (`2·rows·C_out·K·C_in`).
//!
//! Run: `cargo bench --features emu --bench conv` (Emu numbers measure the CPU shim, not a GPU; its
//! shapes are cut to a tenth: the shim runs ~10 M CUDA threads/s).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::ops::{Im2col, PadMode};
use tts_kernels::testing::{bench_devices, random_f32};
use tts_kernels::{DType, Device, Tensor, cpu, ops};

/// Time steps of a shape on a backend: the full size, or a tenth on Emu.
fn steps(name: &str, full: usize) -> usize {
    if name == "emu" { full.div_ceil(10) } else { full }
}

fn bench_im2col(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv/im2col");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // (label, batch, time, channels, geometry): the S3Gen estimator's K=3 convs (CFG pair of
        // 814 mel frames at 256 channels) and a HiFT ResBlock conv over 1 s of audio (K=11, dil. 5)
        let shapes = [
            (
                "s3gen_k3",
                2usize,
                814usize,
                256usize,
                Im2col { kernel: 3, stride: 1, dilation: 1, pad_left: 1, upsample: 1, pad: PadMode::Zero },
            ),
            (
                "hift_k11_d5",
                1,
                24000,
                64,
                Im2col { kernel: 11, stride: 1, dilation: 5, pad_left: 25, upsample: 1, pad: PadMode::Zero },
            ),
        ];
        for (label, batch, full, ch, p) in shapes {
            let t = steps(name, full);
            let act = dev.compute_dtype();
            let x = Tensor::from_f32(&dev, act, &[batch, t, ch], &random_f32(1, batch * t * ch, 1.0)).unwrap();
            let mut out = Tensor::uninit(&dev, act, &[batch, t, ch * p.kernel]).unwrap();
            // read x once (cached across taps), write K copies
            let bytes = batch * t * ch * act.size() * (1 + p.kernel);
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::new(name, format!("{label}/{batch}x{t}x{ch}")), &t, |b, _| {
                b.iter(|| {
                    ops::im2col(x.view(), None, out.view_mut(), p).unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn bench_col2im(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv/col2im_transpose");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // HiFT's first upsampling ConvTranspose1d (512 -> 256, K=16, stride 8, padding 4) over the
        // 50 mel frames of 1 s: cols [1, 50, 256·16] -> out [1, 400, 256]
        let (k, stride, pad, ch) = (16usize, 8usize, 4usize, 256usize);
        let l_in = steps(name, 50);
        let l_out = (l_in - 1) * stride + k - 2 * pad;
        let act = dev.compute_dtype();
        let cols = Tensor::from_f32(&dev, DType::F32, &[1, l_in, ch * k], &random_f32(2, l_in * ch * k, 1.0)).unwrap();
        let bias = Tensor::from_f32(&dev, act, &[ch], &random_f32(3, ch, 1.0)).unwrap();
        let mut out = Tensor::uninit(&dev, DType::F32, &[1, l_out, ch]).unwrap();
        let bytes = l_in * ch * k * 4 + l_out * ch * 4;
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("k16s8/{l_in}x{ch}")), &l_in, |b, _| {
            b.iter(|| {
                ops::col2im_transpose(cols.view(), None, Some(bias.view()), out.view_mut(), k, stride, pad).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_hift(c: &mut Criterion) {
    let mut g = c.benchmark_group("hift");
    g.sample_size(10);
    for (name, dev) in bench_devices() {
        // 1 s of 24 kHz audio (0.1 s on Emu): 50 mel frames × 480 samples; 6001 STFT frames
        let n_frames = steps(name, 50);
        let up = 480usize;
        let n = n_frames * up;
        let f0v: Vec<f32> = random_f32(4, n_frames, 60.0).iter().map(|v| v.abs() + 80.0).collect();
        let f0 = Tensor::from_f32(&dev, DType::F32, &[1, n_frames], &f0v).unwrap();
        let phases = Tensor::from_f32(&dev, DType::F32, &[1, 9], &random_f32(5, 9, 1.8)).unwrap();
        let noise = Tensor::from_f32(&dev, DType::F32, &[1, 9, n], &random_f32(6, 9 * n, 1.0)).unwrap();
        let w = Tensor::from_f32(&dev, DType::F32, &[9], &random_f32(7, 9, 0.3)).unwrap();
        let bias = Tensor::from_f32(&dev, DType::F32, &[1], &[0.01]).unwrap();
        let mut src = Tensor::uninit(&dev, DType::F32, &[1, n]).unwrap();
        g.throughput(Throughput::Bytes((n * 4 * 10) as u64)); // noise and the output
        g.bench_with_input(BenchmarkId::new(name, format!("source/{n}")), &n, |b, _| {
            b.iter(|| {
                ops::hift_source(
                    f0.view(),
                    None,
                    phases.view(),
                    noise.view(),
                    w.view(),
                    bias.view(),
                    src.view_mut(),
                    up,
                    24000.0,
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });

        let frames = n / 4 + 1;
        let spec = Tensor::from_f32(&dev, DType::F32, &[1, frames, 18], &random_f32(8, frames * 18, 1.0)).unwrap();
        let mut audio = Tensor::uninit(&dev, DType::F32, &[1, (frames - 1) * 4]).unwrap();
        g.throughput(Throughput::Bytes((frames * 18 * 4 + n * 4) as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("istft/{n}")), &n, |b, _| {
            b.iter(|| {
                ops::hift_istft(spec.view(), None, audio.view_mut(), 0.99).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

fn bench_conv1d_cpu(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv/conv1d_packed_cpu");
    g.sample_size(10);
    let dev = Device::cpu();
    // the estimator's causal K=3 conv (CFG pair × 814 frames, 256 channels) and HiFT's last-stage
    // ResBlock conv over 1 s of audio (24000 samples, 64 channels, K=11, dilation 5)
    for (label, batch, t, ch, k, dil, pad) in
        [("s3gen_k3", 2usize, 814usize, 256usize, 3usize, 1usize, 2usize), ("hift_k11_d5", 1, 24000, 64, 11, 5, 25)]
    {
        let x = Tensor::from_f32(&dev, DType::F32, &[batch, t, ch], &random_f32(1, batch * t * ch, 1.0)).unwrap();
        let w = random_f32(2, ch * ch * k, 0.05);
        let bias = Tensor::from_f32(&dev, DType::F32, &[ch], &random_f32(3, ch, 0.1)).unwrap();
        let w_im2col = ops::pack_gemm_weight(Tensor::from_f32(&dev, DType::F32, &[ch, ch * k], &w).unwrap()).unwrap();
        let w_direct =
            ops::pack_gemm_weight(Tensor::from_f32(&dev, DType::F32, &[ch, ch * k], &cpu::tap_major(&w, ch, ch, k)).unwrap())
                .unwrap();
        let p = Im2col { kernel: k, stride: 1, dilation: dil, pad_left: pad, upsample: 1, pad: PadMode::Zero };
        let mut out = Tensor::uninit(&dev, DType::F32, &[batch, t, ch]).unwrap();
        g.throughput(Throughput::Elements((2 * batch * t * ch * k * ch) as u64));
        let id = format!("{label}/{batch}x{t}x{ch}");
        g.bench_function(BenchmarkId::new("im2col_gemm", &id), |b| {
            b.iter(|| {
                let mut cols = Tensor::uninit(&dev, DType::F32, &[batch, t, ch * k]).unwrap();
                ops::im2col(x.view(), None, cols.view_mut(), p).unwrap();
                ops::linear(cols.view(), w_im2col.view(), Some(bias.view()), out.view_mut()).unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("direct", &id), |b| {
            b.iter(|| {
                ops::conv1d_packed(x.view(), None, w_direct.view(), Some(bias.view()), out.view_mut(), k, dil, pad).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_im2col, bench_col2im, bench_hift, bench_conv1d_cpu);
criterion_main!(benches);
