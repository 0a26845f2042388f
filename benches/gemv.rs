//! The fused decode GEMVs of a T3 layer next to the unfused op pairs they replace, on every backend
//! this build and machine have (Cpu always; Emu with `--features emu`; Cuda when a GPU is usable).
//! Throughput is bytes of weights read per second (GB/s): what bounds a decode step's projections.
//!
//! - `rmsnorm_linear` (input norm → QKV, K = 1024, N = 3072; and N = 4096) vs `add_rmsnorm` +
//!   `linear`;
//! - `rmsnorm_linear_f32` (final norm → speech head, K = 1024, N = 8194, f32 logits) vs
//!   `add_rmsnorm` + `linear`;
//! - `rmsnorm_linear_swiglu` (post-attention norm → gate/up → SwiGLU, K = 1024, inner = 4096) vs
//!   `add_rmsnorm` + `linear` + `swiglu`;
//! - `linear_add_residual` (attention output, K = 1024, N = 1024; down, K = 4096, N = 1024) vs
//!   `linear` + `add_residual`;
//!
//! each at m = 2 (one request with CFG) and 16 rows, in groups `gemv/<op>/k<K>_n<N>`. Weights are
//! prepared as T3 prepares them (`ops::pack_linear_weight`: the packed Cpu GEMV layout on Cpu, as
//! is on kernel backends).
//!
//! Run: `cargo bench --bench gemv` (add `--features emu` for the Emu backend: it measures the CPU
//! shim, not a GPU, and runs m = 2 only).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tts_kernels::testing::{bench_devices, random_f32};
use tts_kernels::{DType, Device, Tensor, ops};

const EPS: f32 = 1e-5;

#[derive(Clone, Copy)]
enum Op {
    RmsNormLinear,
    /// with an f32 output (T3's final norm + speech head: logits for the sampler)
    RmsNormLinearF32,
    RmsNormLinearSwiglu,
    LinearAddResidual,
}

/// One projection of a T3 layer on one device with its inputs, outputs and the unfused chain's
/// intermediates.
struct Case {
    dev: Device,
    op: Op,
    h: Tensor,
    norm_w: Tensor,
    w: Tensor,
    x: Tensor,
    out: Tensor,
    /// the unfused chain's activation / GEMM output
    a: Tensor,
    y: Tensor,
}

impl Case {
    /// `n`: output columns (inner for SwiGLU).
    fn new(dev: &Device, op: Op, m: usize, k: usize, n: usize) -> Case {
        let (act, wt) = (dev.compute_dtype(), dev.weight_dtype());
        let wn = if let Op::RmsNormLinearSwiglu = op { 2 * n } else { n };
        let t = |dt: DType, shape: &[usize], seed: u64, scale: f32| {
            Tensor::from_f32(dev, dt, shape, &random_f32(seed, shape.iter().product(), scale)).unwrap()
        };
        let w = ops::pack_linear_weight(t(wt, &[wn, k], 3, 1.0 / (k as f32).sqrt())).unwrap();
        let out_dt = if let Op::LinearAddResidual | Op::RmsNormLinearF32 = op { DType::F32 } else { act };
        Case {
            dev: dev.clone(),
            op,
            h: t(DType::F32, &[m, k], 1, 1.0),
            norm_w: t(act, &[k], 2, 1.0),
            w,
            x: t(act, &[m, k], 4, 1.0),
            out: t(out_dt, &[m, n], 5, 1.0),
            a: Tensor::zeros(dev, act, &[m, k]).unwrap(),
            y: Tensor::zeros(dev, act, &[m, wn]).unwrap(),
        }
    }

    fn weight_bytes(&self) -> u64 {
        (self.w.len() * self.dev.weight_dtype().size()) as u64
    }

    fn fused(&mut self) {
        let c = self;
        match c.op {
            Op::RmsNormLinear | Op::RmsNormLinearF32 => {
                ops::rmsnorm_linear(c.h.view(), c.norm_w.view(), EPS, c.w.view(), c.out.view_mut())
            }
            Op::RmsNormLinearSwiglu => ops::rmsnorm_linear_swiglu(c.h.view(), c.norm_w.view(), EPS, c.w.view(), c.out.view_mut()),
            Op::LinearAddResidual => ops::linear_add_residual(c.x.view(), c.w.view(), c.out.view_mut()),
        }
        .unwrap();
        c.dev.synchronize().unwrap();
    }

    fn unfused(&mut self) {
        let c = self;
        match c.op {
            Op::RmsNormLinear | Op::RmsNormLinearF32 => {
                ops::add_rmsnorm(None, c.h.view_mut(), c.norm_w.view(), c.a.view_mut(), EPS).unwrap();
                ops::linear(c.a.view(), c.w.view(), None, c.out.view_mut()).unwrap();
            }
            Op::RmsNormLinearSwiglu => {
                ops::add_rmsnorm(None, c.h.view_mut(), c.norm_w.view(), c.a.view_mut(), EPS).unwrap();
                ops::linear(c.a.view(), c.w.view(), None, c.y.view_mut()).unwrap();
                ops::swiglu(c.y.view(), c.out.view_mut()).unwrap();
            }
            Op::LinearAddResidual => {
                ops::linear(c.x.view(), c.w.view(), None, c.y.view_mut()).unwrap();
                ops::add_residual(c.out.view_mut(), c.y.view(), None).unwrap();
            }
        }
        c.dev.synchronize().unwrap();
    }
}

fn bench_decode_gemv(c: &mut Criterion) {
    // (group, op, k, n): T3's layer projections
    let shapes = [
        ("rmsnorm_linear", Op::RmsNormLinear, 1024, 3072),
        ("rmsnorm_linear", Op::RmsNormLinear, 1024, 4096),
        ("rmsnorm_linear_f32", Op::RmsNormLinearF32, 1024, 8194),
        ("rmsnorm_linear_swiglu", Op::RmsNormLinearSwiglu, 1024, 4096),
        ("linear_add_residual", Op::LinearAddResidual, 1024, 1024),
        ("linear_add_residual", Op::LinearAddResidual, 4096, 1024),
    ];
    let devices = bench_devices();
    for (group, op, k, n) in shapes {
        let mut g = c.benchmark_group(format!("gemv/{group}/k{k}_n{n}"));
        g.sample_size(10);
        for (name, dev) in &devices {
            for m in [2usize, 16] {
                if *name == "emu" && m > 2 {
                    continue; // the shim runs ~10 M CUDA threads/s: keep its runs short
                }
                let mut case = Case::new(dev, op, m, k, n);
                g.throughput(Throughput::Bytes(case.weight_bytes()));
                g.bench_function(BenchmarkId::new(format!("{name}/fused"), m), |b| b.iter(|| case.fused()));
                g.bench_function(BenchmarkId::new(format!("{name}/unfused"), m), |b| b.iter(|| case.unfused()));
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench_decode_gemv);
criterion_main!(benches);
