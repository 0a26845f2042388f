//! Benchmark of the T3 sampler (`ops::sample_tokens`: one decode step of a batch of requests) on every
//! backend this build and machine have (Cpu always; Emu with `--features emu`; Cuda when a GPU is
//! usable). Vocabulary 8194 (the real speech vocab); throughput in requests per second.
//!
//! Run: `cargo bench --features emu --bench sampling` (Emu numbers measure the CPU shim, not a GPU).
//! Each iteration re-uploads the [n_req, 4] state (a few hundred bytes) so that the requests never
//! finish; that copy is part of the measured time.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::ops::{SamplerSettings, SamplerState};
use tts_kernels::testing::bench_devices;
use tts_kernels::testing::random_f32;
use tts_kernels::{DType, Tensor, ops};

fn bench_sampler(c: &mut Criterion) {
    let vocab = 8194usize;
    let hist_len = 200usize;
    let max_hist = 1024usize;
    let configs = [
        ("english_default", SamplerSettings::ENGLISH_DEFAULT),
        ("english_top_p0.95_top_k50", SamplerSettings { top_p: 0.95, top_k: 50, ..SamplerSettings::ENGLISH_DEFAULT }),
    ];
    for (cfg_name, settings) in configs {
        let mut g = c.benchmark_group(format!("sampling/{cfg_name}"));
        g.sample_size(10);
        for (name, dev) in bench_devices() {
            // T3 decode batch of 64 requests; Emu runs ~10 M CUDA threads/s: keep it short
            let n_req = if name == "emu" { 4 } else { 64 };
            let mut logits = random_f32(1, 2 * n_req * vocab, 2.5);
            for q in 0..n_req {
                for k in 0..12 {
                    logits[2 * q * vocab + (q * 131 + k * 677) % vocab] += 3.0 + k as f32 * 0.4; // a few peaks
                }
            }
            let lt = Tensor::from_f32(&dev, DType::F32, &[2 * n_req, vocab], &logits).unwrap();
            let sf: Vec<f32> = (0..n_req).flat_map(|_| settings.f32_row()).collect();
            let si: Vec<i32> = (0..n_req).flat_map(|q| SamplerSettings { seed: q as u64, ..settings }.i32_row()).collect();
            let sft = Tensor::from_f32(&dev, DType::F32, &[n_req, 8], &sf).unwrap();
            let sit = Tensor::from_i32(&dev, &[n_req, 4], &si).unwrap();
            let hist: Vec<i32> = (0..n_req * max_hist).map(|i| ((i * 7919) % 6561) as i32).collect();
            let mut ht = Tensor::from_i32(&dev, &[n_req, max_hist], &hist).unwrap();
            let st0: Vec<i32> = (0..n_req)
                .flat_map(|_| SamplerState { hist_len: hist_len as i32, ..SamplerState::new(100_000, -1) }.row())
                .collect();
            let mut state = Tensor::from_i32(&dev, &[n_req, 4], &st0).unwrap();
            let mut next = Tensor::zeros(&dev, DType::I32, &[n_req]).unwrap();
            g.throughput(Throughput::Elements(n_req as u64));
            g.bench_with_input(BenchmarkId::new(name, n_req), &n_req, |b, _| {
                b.iter(|| {
                    state.copy_from_i32(&st0).unwrap();
                    ops::sample_tokens(lt.view(), sft.view(), sit.view(), ht.view_mut(), state.view_mut(), next.view_mut(), None)
                        .unwrap();
                    dev.synchronize().unwrap();
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_sampler);
criterion_main!(benches);
