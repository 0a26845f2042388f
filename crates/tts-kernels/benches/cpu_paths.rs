//! The Cpu panel GEMM (S3Gen's shapes) on every instruction path this CPU has, one core, against
//! the measured multiply-add peak of the same core and path: `cargo bench -p tts-kernels --bench
//! cpu_paths`. Prints the CPU's features and, per path and shape, GFLOP/s and the fraction of peak.
//!
//! Peak: a loop of 16 independent accumulator chains `acc = a·b + acc` (FMA: `vfmadd231ps`; bf16:
//! `vdpbf16ps`, 2 multiply-adds per f32 lane), its operands hidden from the optimiser.
use std::time::Instant;

use tts_kernels::cpu::isa::Isa;
use tts_kernels::cpu::{self, gemm_panels_with};
use tts_kernels::testing::random_f32;

/// S3Gen's GEMM shapes `(m, k, n)` (10 s of audio: 814 frames per CFG half).
const SHAPES: [(usize, usize, usize); 4] = [(814, 256, 512), (814, 256, 1024), (814, 1024, 256), (814, 768, 256)];

fn main() {
    println!("cpu: {}", cpu::isa::describe());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    pool.install(|| {
        for isa in Isa::tested_paths() {
            let peak = peak_gflops(isa);
            println!("path {isa}: f32 multiply-add peak {peak:.1} GFLOP/s per core");
            let bf16_peak = if isa == Isa::Avx512Bf16 { bf16_peak_gflops() } else { f64::NAN };
            if isa == Isa::Avx512Bf16 {
                println!("path {isa}: vdpbf16ps peak {bf16_peak:.1} GFLOP/s per core");
            }
            for (m, k, n) in SHAPES {
                let x = random_f32(1, m * k, 1.0);
                let w = random_f32(2, n * k, 0.5);
                let mut p = vec![0f32; cpu::packed_gemm_len(n, k)];
                cpu::pack_gemm(&w, n, k, &mut p);
                let mut out = vec![0f32; m * n];
                let secs = best_of(|| gemm_panels_with(isa, &x, &p, None, &mut out, m, n, k));
                let gf = 2.0 * (m * n * k) as f64 / secs / 1e9;
                println!("path {isa}: gemm_panels [{m},{k}]x[{n},{k}]: {gf:.1} GFLOP/s ({:.0}% of peak)", 100.0 * gf / peak);
                if isa == Isa::Avx512Bf16 {
                    let mut pb = vec![half::bf16::ZERO; cpu::packed_gemm_bf16_len(n, k)];
                    cpu::pack_gemm_bf16(&w, n, k, &mut pb);
                    let secs = best_of(|| cpu::gemm_bf16_panels_with(isa, &x, &pb, None, &mut out, m, n, k));
                    let gf = 2.0 * (m * n * k) as f64 / secs / 1e9;
                    println!(
                        "path {isa}: gemm_bf16_panels [{m},{k}]x[{n},{k}]: {gf:.1} GFLOP/s ({:.0}% of the vdpbf16ps peak)",
                        100.0 * gf / bf16_peak
                    );
                }
            }
        }
    });
}

/// The fastest of repeated runs of `f` (at least 0.3 s in all), in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    f();
    let (start, mut best, mut runs) = (Instant::now(), f64::INFINITY, 0);
    while runs < 5 || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// Independent accumulator chains of the peak loops (FMA latency 4 × 2 ports, with room).
const CHAINS: usize = 16;

/// The f32 multiply-add peak of one core on `isa`'s widest FMA, GFLOP/s (2 per lane and FMA).
fn peak_gflops(isa: Isa) -> f64 {
    const ITERS: usize = 20_000_000;
    let lanes = match isa {
        Isa::Portable => return scalar_peak(),
        Isa::Avx2 => 8,
        _ => 16,
    };
    let secs = best_of(|| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path is supported (tested_paths), so its instructions are present.
        unsafe {
            std::hint::black_box(if lanes == 8 { fma_loop::avx2(ITERS) } else { fma_loop::avx512(ITERS) });
        }
    });
    (ITERS * CHAINS * lanes * 2) as f64 / secs / 1e9
}

fn scalar_peak() -> f64 {
    const ITERS: usize = 20_000_000;
    let secs = best_of(|| {
        let mut a = [1f32; CHAINS];
        for _ in 0..ITERS {
            for v in a.iter_mut() {
                *v = std::hint::black_box(*v) * 0.999_999 + 1e-7;
            }
        }
        std::hint::black_box(a);
    });
    (ITERS * CHAINS * 2) as f64 / secs / 1e9
}

fn bf16_peak_gflops() -> f64 {
    const ITERS: usize = 20_000_000;
    let secs = best_of(|| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only called on the avx512bf16 path, which tested_paths found supported.
        unsafe {
            std::hint::black_box(fma_loop::dpbf16(ITERS));
        }
    });
    (ITERS * CHAINS * 32 * 2) as f64 / secs / 1e9
}

#[cfg(target_arch = "x86_64")]
mod fma_loop {
    use super::CHAINS;
    use std::arch::x86_64::*;
    use std::hint::black_box;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(black_box(1e-3)), _mm256_set1_ps(black_box(1e-3)));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(a, b, *v);
            }
        }
        let s = acc.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
        _mm256_cvtss_f32(s)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(black_box(1e-3)), _mm512_set1_ps(black_box(1e-3)));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(a, b, *v);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v)))
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: usize) -> f32 {
        let v = _mm512_set1_ps(black_box(1e-3));
        let (x, y) = (_mm512_cvtne2ps_pbh(v, v), _mm512_cvtne2ps_pbh(v, v));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, x, y);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v)))
    }
}
