//! The machine's measured limits, for the benches to put the kernels' rates against: the
//! multiply-add peak of each vector instruction path on 1 and on several threads, and the read
//! bandwidth of a large buffer.
//!
//! Flop convention: a fused multiply-add is 2 flops per lane (an 8-lane AVX2 FMA 16, a 16-lane
//! AVX-512 FMA 32); a `vdpbf16ps` adds two bf16 products into each of its 16 f32 lanes, counted as
//! 2 multiply-adds, 4 flops per lane, 64 per instruction; an AMX `tdpbf16ps` on full tiles
//! (16 × 32 bf16 by 32 × 16) 16 × 16 × 32 multiply-adds, 16384 flops.
use std::time::Instant;

use super::isa::Isa;

/// A multiply-add instruction whose peak rate [`fma_gflops`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakKernel {
    /// `vfmadd231ps` on 8 f32 lanes (ymm).
    Avx2Fma,
    /// `vfmadd231ps` on 16 f32 lanes (zmm).
    Avx512Fma,
    /// `vdpbf16ps`: 32 bf16 pairs into 16 f32 lanes (zmm).
    Avx512Bf16Dot,
    /// AMX `tdpbf16ps` on full tiles, four output tiles in turn.
    AmxBf16Tile,
}

/// Every kernel, narrowest first.
pub const PEAK_KERNELS: [PeakKernel; 4] =
    [PeakKernel::Avx2Fma, PeakKernel::Avx512Fma, PeakKernel::Avx512Bf16Dot, PeakKernel::AmxBf16Tile];

/// Independent accumulators per loop iteration: more than latency × issue width (4 cycles × 2
/// ports on current cores), so the loop is bound by throughput.
const ACCUMULATORS: usize = 12;

impl PeakKernel {
    /// The name the bench prints: `avx2-fma-f32`, `avx512-fma-f32`, `avx512bf16-dot`, `amx-bf16-tile`.
    pub fn name(self) -> &'static str {
        match self {
            PeakKernel::Avx2Fma => "avx2-fma-f32",
            PeakKernel::Avx512Fma => "avx512-fma-f32",
            PeakKernel::Avx512Bf16Dot => "avx512bf16-dot",
            PeakKernel::AmxBf16Tile => "amx-bf16-tile",
        }
    }

    /// The instruction path the kernel needs.
    pub fn isa(self) -> Isa {
        match self {
            PeakKernel::Avx2Fma => Isa::Avx2,
            PeakKernel::Avx512Fma => Isa::Avx512,
            PeakKernel::Avx512Bf16Dot => Isa::Avx512Bf16,
            PeakKernel::AmxBf16Tile => Isa::Amx,
        }
    }

    /// Flops of one instruction (see the module's convention).
    pub fn flops_per_instruction(self) -> f64 {
        match self {
            PeakKernel::Avx2Fma => 16.0,
            PeakKernel::Avx512Fma => 32.0,
            PeakKernel::Avx512Bf16Dot => 64.0,
            PeakKernel::AmxBf16Tile => 16384.0,
        }
    }

    /// The loop iterations [`fma_gflops`] runs for `iters` asked: a tile product takes about 32
    /// times as long as an FMA, so the AMX loop runs `iters / 32` (about the same time).
    pub fn scaled_iters(self, iters: u64) -> u64 {
        match self {
            PeakKernel::AmxBf16Tile => (iters / 32).max(1),
            _ => iters,
        }
    }

    /// `iters` iterations of [`ACCUMULATORS`] independent instructions; the accumulators' sum (so
    /// that the work is not optimised away). The CPU must support [`PeakKernel::isa`].
    fn run(self, iters: u64) -> f32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the callers check that the CPU supports the kernel's path.
        unsafe {
            match self {
                PeakKernel::Avx2Fma => fma_loop_avx2(iters),
                PeakKernel::Avx512Fma => fma_loop_avx512(iters),
                PeakKernel::Avx512Bf16Dot => dot_loop_avx512bf16(iters),
                PeakKernel::AmxBf16Tile => super::amx::peak_loop(iters, ACCUMULATORS),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = iters;
            0.0
        }
    }
}

/// The median GFLOP/s of `runs` timed runs of `kernel` on `threads` threads at once (each thread
/// `iters` iterations), after one untimed run; `None` when the CPU lacks the kernel's path.
pub fn fma_gflops(kernel: PeakKernel, threads: usize, iters: u64, runs: usize) -> Option<f64> {
    if !kernel.isa().supported() {
        return None;
    }
    let threads = threads.max(1);
    let iters = kernel.scaled_iters(iters);
    let flops = threads as f64 * iters as f64 * ACCUMULATORS as f64 * kernel.flops_per_instruction();
    let mut rates: Vec<f64> = (0..=runs.max(1))
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel.run(iters))).collect();
                for h in handles {
                    std::hint::black_box(h.join().unwrap_or(0.0));
                }
            });
            flops / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.remove(0); // the warm-up (clock ramp, thread start)
    Some(median(&mut rates))
}

/// A buffer of `bytes` (rounded down to whole 64-byte lines), its pages touched, for
/// [`read_gbps`].
pub fn bandwidth_buffer(bytes: usize) -> Vec<u64> {
    let words = bytes / 64 * 8;
    (0..words as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect()
}

/// The median read bandwidth, GB/s (1e9 bytes), of `runs` timed sums of the whole `buf` split into
/// `threads` contiguous parts summed at once, after one untimed sum.
pub fn read_gbps(buf: &[u64], threads: usize, runs: usize) -> f64 {
    let threads = threads.max(1);
    let part = buf.len().div_ceil(threads).div_ceil(8) * 8;
    let mut rates: Vec<f64> = (0..=runs.max(1))
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                let handles: Vec<_> = buf.chunks(part.max(8)).map(|p| s.spawn(move || sum_words(p))).collect();
                for h in handles {
                    std::hint::black_box(h.join().unwrap_or(0));
                }
            });
            std::mem::size_of_val(buf) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.remove(0);
    median(&mut rates)
}

/// Bytes ahead of the current line that [`sum_words`] prefetches: the decode GEMV's distance, so
/// that the figure is the bandwidth a streaming kernel with software prefetch can reach.
const PREFETCH_BYTES: usize = 1024;

/// The wrapping sum of `words`, 8 independent lanes (vectorised by the compiler), one 64-byte line
/// at a time with a software prefetch [`PREFETCH_BYTES`] ahead.
fn sum_words(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>((c.as_ptr() as *const i8).wrapping_add(PREFETCH_BYTES));
        }
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(v);
        }
    }
    chunks.remainder().iter().chain(&lanes).fold(0u64, |a, &v| a.wrapping_add(v))
}

/// The median of `v` (the mean of the middle two for an even count); 0 for none.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let h = v.len() / 2;
    if v.len() % 2 == 1 { v[h] } else { (v[h - 1] + v[h]) / 2.0 }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let acc = std::hint::black_box(acc);
    let s = acc.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    _mm256_cvtss_f32(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm512_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let acc = std::hint::black_box(acc);
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dot_loop_avx512bf16(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(std::hint::black_box(1e-3)), _mm512_set1_ps(std::hint::black_box(-1e-3)));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(std::hint::black_box(0.5)), _mm512_set1_ps(std::hint::black_box(0.5)));
    let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, a, b);
        }
    }
    let acc = std::hint::black_box(acc);
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_reads_every_word_and_the_median_is_the_middle() {
        let seed = crate::testing::fresh_seed();
        let words: Vec<u64> = (0..1003u64).map(|i| i.wrapping_mul(seed | 1)).collect();
        assert_eq!(sum_words(&words), words.iter().fold(0u64, |a, &v| a.wrapping_add(v)), "seed {seed}");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn each_supported_kernel_gives_a_positive_rate_and_the_others_none() {
        for kernel in PEAK_KERNELS {
            match (kernel.isa().missing_feature(), fma_gflops(kernel, 1, 1000, 1)) {
                (None, Some(r)) => assert!(r.is_finite() && r > 0.0, "{}: {r}", kernel.name()),
                (Some(f), None) => println!("skipped {}: this CPU lacks {f}", kernel.name()),
                (m, r) => panic!("{}: missing {m:?} but rate {r:?}", kernel.name()),
            }
        }
        let buf = bandwidth_buffer(1 << 20);
        assert_eq!(buf.len(), (1 << 20) / 8);
        assert!(read_gbps(&buf, 2, 1) > 0.0);
    }
}
