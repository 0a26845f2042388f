//! `tts bench-peak`: the machine's measured limits that the T3 and S3Gen benches are put against:
//! the multiply-add peak of each vector instruction path the CPU supports (one thread and all of
//! rayon's threads), and the read bandwidth of a large buffer (one thread and all threads). The
//! measurements are [`tts_kernels::cpu::peak`]'s; flops count a fused multiply-add as 2 per lane and
//! a `vdpbf16ps` as 2 multiply-adds (4 flops) per f32 lane.
use tts_kernels::cpu::peak::{self, PEAK_KERNELS};

/// Iterations of the peak loops per thread and run (12 instructions each: ~0.1 s on 1 core).
const PEAK_ITERS: u64 = 20_000_000;

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct PeakFigure {
    /// The `key` of its machine-readable line, e.g. `peak_gflops_avx512bf16-dot_1t`.
    pub key: String,
    /// The value (GFLOP/s or GB/s, 1e9).
    pub value: f64,
    /// What it is, in words.
    pub what: String,
}

/// The peak of every kernel the CPU supports on 1 and on `threads` threads, then the read
/// bandwidth of a `buffer_bytes` buffer on 1 and `threads` threads; medians of `runs` runs each.
/// Kernels the CPU lacks are listed in the second value, with the feature missing.
pub fn measure(threads: usize, buffer_bytes: usize, runs: usize) -> (Vec<PeakFigure>, Vec<String>) {
    let mut figures = Vec::new();
    let mut skipped = Vec::new();
    let thread_counts = if threads > 1 { vec![1, threads] } else { vec![1] };
    for kernel in PEAK_KERNELS {
        if let Some(missing) = kernel.isa().missing_feature() {
            skipped.push(format!("{}: this CPU lacks {missing}", kernel.name()));
            continue;
        }
        for &t in &thread_counts {
            if let Some(g) = peak::fma_gflops(kernel, t, PEAK_ITERS, runs) {
                figures.push(PeakFigure {
                    key: format!("peak_gflops_{}_{}t", kernel.name(), t),
                    value: g,
                    what: format!("{} peak, {t} thread(s), GFLOP/s", kernel.name()),
                });
            }
        }
    }
    let buf = peak::bandwidth_buffer(buffer_bytes);
    for &t in &thread_counts {
        figures.push(PeakFigure {
            key: format!("read_gbps_{t}t"),
            value: peak::read_gbps(&buf, t, runs),
            what: format!("read bandwidth, {} MiB summed, {t} thread(s), GB/s", buffer_bytes >> 20),
        });
    }
    (figures, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_kernel_and_both_bandwidths_are_measured_once_per_thread_count() {
        let (figures, skipped) = measure(2, 4 << 20, 1);
        let kernels = PEAK_KERNELS.iter().filter(|k| k.isa().supported()).count();
        assert_eq!(figures.len(), 2 * kernels + 2, "{figures:?}");
        assert_eq!(skipped.len(), PEAK_KERNELS.len() - kernels);
        assert!(figures.iter().all(|f| f.value.is_finite() && f.value > 0.0 && !f.key.contains(' ')), "{figures:?}");
        assert!(figures.iter().any(|f| f.key == "read_gbps_2t"));
    }
}
