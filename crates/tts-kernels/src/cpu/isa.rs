//! Which vector instruction path the Cpu kernels take: chosen once, at first use, from what the CPU
//! has (the best of [`Isa::Amx`], [`Isa::Avx512Bf16`], [`Isa::Avx512`], [`Isa::Avx2`],
//! [`Isa::Portable`]), or forced with the environment variable
//! `TTS_CPU_ISA=amx|avx512bf16|avx512|avx2|portable` (for tests and side-by-side comparisons).
//!
//! The paths nest: a CPU with AVX-512 BF16 also runs the AVX-512F, AVX2+FMA and portable code, and
//! every kernel takes the widest code it has that the selected path allows ([`Isa::allows`]).
//! `avx512` means AVX-512F (with the BW/VL/DQ parts every AVX-512 CPU since Skylake-SP has) and
//! FMA; `avx512bf16` adds `vdpbf16ps` (bf16 pair dot products accumulated in f32), which only the
//! bf16-weight kernels (`cpu-bf16`) use: the f32 `cpu` backend never rounds to bf16. `amx` adds
//! Intel AMX's bf16 tile products (`tdpbf16ps`, [`super::amx`]), which the `cpu-bf16` GEMMs and
//! convolutions take; like `avx512bf16`, the f32 kernels are unchanged on it.
//!
//! Kernels read the path through [`active`]; their tests run each path the machine supports
//! ([`Isa::supported_paths`]) through the kernels' `*_with(isa, ...)` forms, so the choice never
//! hides in global state during a test.
use std::sync::OnceLock;

/// The environment variable that forces a path.
pub const ISA_ENV: &str = "TTS_CPU_ISA";

/// A vector instruction path of the Cpu kernels, from the narrowest to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no explicit vector instructions (any CPU).
    Portable,
    /// AVX2 with FMA, 8 f32 lanes.
    Avx2,
    /// AVX-512F (+BW, VL, DQ) with FMA, 16 f32 lanes.
    Avx512,
    /// [`Isa::Avx512`] plus AVX-512 BF16's `vdpbf16ps`.
    Avx512Bf16,
    /// [`Isa::Avx512Bf16`] plus AMX-TILE and AMX-BF16, usable by this process ([`super::amx::available`]).
    Amx,
}

/// Every path, narrowest first.
pub const ALL_ISAS: [Isa; 5] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx];

/// Why the path could not be chosen: `TTS_CPU_ISA` names no path, or one this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("{ISA_ENV}={0:?} names no Cpu instruction path: expected amx, avx512bf16, avx512, avx2 or portable")]
    Unknown(String),
    #[error("{ISA_ENV}={name}: this CPU lacks {missing} (it supports: {supported})")]
    Unsupported { name: &'static str, missing: &'static str, supported: String },
}

impl Isa {
    /// The name `TTS_CPU_ISA` and the benches use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// The path named `s` (case-insensitive, surrounding spaces ignored).
    pub fn parse(s: &str) -> Option<Isa> {
        let s = s.trim().to_ascii_lowercase();
        ALL_ISAS.into_iter().find(|i| i.name() == s)
    }

    /// The CPU features the path needs, as `is_x86_feature_detected!` names them (`amx`: AMX-TILE
    /// and AMX-BF16 with the OS's tile state granted to this process).
    pub fn required_features(self) -> &'static [&'static str] {
        match self {
            Isa::Portable => &[],
            Isa::Avx2 => &["avx2", "fma"],
            Isa::Avx512 => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"],
            Isa::Avx512Bf16 => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512bf16"],
            Isa::Amx => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512bf16", "amx"],
        }
    }

    /// The first feature of [`Isa::required_features`] this CPU lacks.
    pub fn missing_feature(self) -> Option<&'static str> {
        self.required_features().iter().copied().find(|f| !cpu_has(f))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        self.missing_feature().is_none()
    }

    /// Every path this CPU can run, narrowest first.
    pub fn supported_paths() -> Vec<Isa> {
        ALL_ISAS.into_iter().filter(|i| i.supported()).collect()
    }

    /// The paths a test runs: [`Isa::supported_paths`], after printing `skipped <path>: this CPU
    /// lacks <feature>` for each of the others (so that a run on a narrower CPU says what it left
    /// out, by name).
    pub fn tested_paths() -> Vec<Isa> {
        for isa in ALL_ISAS {
            if let Some(missing) = isa.missing_feature() {
                eprintln!("skipped {isa}: this CPU lacks {missing}");
            }
        }
        Isa::supported_paths()
    }

    /// The widest path this CPU can run.
    pub fn best() -> Isa {
        ALL_ISAS.into_iter().rev().find(|i| i.supported()).unwrap_or(Isa::Portable)
    }

    /// The path a kernel asked for `self` runs: `self` when this CPU supports it, else the widest path
    /// this CPU has (paths nest), so that a kernel's `*_with(isa, ...)` form never runs instructions
    /// the CPU lacks.
    pub fn runnable(self) -> Isa {
        self.min(Isa::best())
    }

    /// Whether code written for `needed` may run when `self` is the selected path (paths nest).
    pub fn allows(self, needed: Isa) -> bool {
        self >= needed
    }

    /// The path `TTS_CPU_ISA` names (`None` when unset or empty), checked against this CPU.
    pub fn from_env_value(value: Option<&str>) -> Result<Isa, IsaError> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Isa::best());
        };
        let isa = Isa::parse(v).ok_or_else(|| IsaError::Unknown(v.to_string()))?;
        match isa.missing_feature() {
            None => Ok(isa),
            Some(missing) => Err(IsaError::Unsupported {
                name: isa.name(),
                missing,
                supported: Isa::supported_paths().iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
        "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
        "amx" => super::amx::available(),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has(_feature: &str) -> bool {
    false
}

static SELECTED: OnceLock<Result<Isa, IsaError>> = OnceLock::new();

/// The path of this process: `TTS_CPU_ISA`'s when set, the widest the CPU supports otherwise; read
/// once. An engine calls this at start-up so that a bad `TTS_CPU_ISA` is a clear error before any
/// work.
pub fn selected() -> Result<Isa, IsaError> {
    SELECTED.get_or_init(|| Isa::from_env_value(std::env::var(ISA_ENV).ok().as_deref())).clone()
}

/// The path the kernels take ([`selected`]).
///
/// # Panics
/// When `TTS_CPU_ISA` is invalid: a process-wide misconfiguration that [`selected`] reports as an
/// error, and that the engine and the benches check before any kernel runs.
pub fn active() -> Isa {
    match selected() {
        Ok(isa) => isa,
        Err(e) => panic!("{e}"),
    }
}

/// Whether the bf16-weight GEMMs (`cpu-bf16`) should take `vdpbf16ps` on this CPU: the path is
/// [`Isa::Avx512Bf16`] and the instruction's multiply-adds per second exceed 1.25× those of the
/// f32 AVX-512 FMA, measured once (about a millisecond) at first use. Why: the instruction's
/// throughput differs by CPU. Measured with `cargo bench --bench cpu_paths`: on an AMD EPYC (Zen 4)
/// `vdpbf16ps` gives 167 GFLOP/s per core against 77 for the FMA (issue 17); on this project's
/// Sapphire Rapids machine 115 against 226-240 (one `vdpbf16ps` per cycle, two FMAs), where the
/// bf16 GEMM ran at 113-116 GFLOP/s and the f32 panel GEMM at 166-185: there, `cpu-bf16` keeps the
/// f32 panels of the widened weight.
pub fn bf16_dot_pays() -> bool {
    static PAYS: OnceLock<bool> = OnceLock::new();
    *PAYS.get_or_init(|| active() == Isa::Avx512Bf16 && dot_over_fma_rate() > 1.25)
}

/// Whether the `cpu-bf16` many-row GEMMs and convolutions keep a bf16 weight as bf16 panels
/// (`cpu::gemm_bf16_panels`, `cpu::conv1d_bf16_panels_with`) rather than widening it to the f32
/// panels: on the [`Isa::Amx`] path (tile products; also T3's decode weights, see
/// `ops::pack_linear_weight`), or where `vdpbf16ps` pays ([`bf16_dot_pays`]).
pub fn bf16_panels_pay() -> bool {
    active() == Isa::Amx || bf16_dot_pays()
}

/// Multiply-adds per second of `vdpbf16ps` over those of the AVX-512 FMA on this core (best of 5
/// short runs each, interleaved); 0 without AVX-512 BF16.
fn dot_over_fma_rate() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512Bf16.supported() {
        const ITERS: usize = 4096;
        let (mut dot, mut fma) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let t = std::time::Instant::now();
            // SAFETY: AVX-512F and AVX-512 BF16 are present (checked above).
            std::hint::black_box(unsafe { peak_loops::dot(ITERS) });
            dot = dot.min(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            // SAFETY: as above.
            std::hint::black_box(unsafe { peak_loops::fma(ITERS) });
            fma = fma.min(t.elapsed().as_secs_f64());
        }
        // a vdpbf16ps does 32 multiply-adds, an FMA 16
        return (32.0 / dot) / (16.0 / fma.max(1e-12));
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
mod peak_loops {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulator chains (latency 4-5 × 2 ports, with room).
    const CHAINS: usize = 16;

    /// `iters` rounds of `CHAINS` independent `vdpbf16ps`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) fn dot(iters: usize) -> f32 {
        let v = _mm512_set1_ps(black_box(1e-3));
        let x = _mm512_cvtne2ps_pbh(v, v);
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, x, x);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v)))
    }

    /// `iters` rounds of `CHAINS` independent f32 FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma(iters: usize) -> f32 {
        let a = _mm512_set1_ps(black_box(1e-3));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(a, a, *v);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v)))
    }
}

/// What the CPU has and the path taken, for bench and `tts info` output: e.g.
/// `avx2+fma,avx512f,avx512bf16;path=avx512bf16;bf16_dot=false` (`bf16_dot`: [`bf16_dot_pays`]).
pub fn describe() -> String {
    let have: Vec<&str> = [(Isa::Avx2, "avx2+fma"), (Isa::Avx512, "avx512f"), (Isa::Avx512Bf16, "avx512bf16"), (Isa::Amx, "amx")]
        .into_iter()
        .filter(|(i, _)| i.supported())
        .map(|(_, n)| n)
        .collect();
    let have = if have.is_empty() { std::env::consts::ARCH.to_string() } else { have.join(",") };
    match selected() {
        Ok(isa) if isa == Isa::Avx512Bf16 => format!("{have};path={isa};bf16_dot={}", bf16_dot_pays()),
        Ok(isa) => format!("{have};path={isa}"),
        Err(e) => format!("{have};path=invalid ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bf16_dot_product_is_taken_only_on_its_path_and_where_it_outpaces_the_fma() {
        let rate = dot_over_fma_rate();
        eprintln!("vdpbf16ps / FMA multiply-add rate on this core: {rate:.2}");
        assert_eq!(rate > 0.0, Isa::Avx512Bf16.supported());
        if bf16_dot_pays() {
            assert_eq!(active(), Isa::Avx512Bf16);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for isa in ALL_ISAS {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
            assert_eq!(Isa::parse(&format!("  {}  ", isa.name().to_uppercase())), Some(isa));
        }
        assert_eq!(Isa::parse("avx1024"), None);
        let e = Isa::from_env_value(Some("sse9")).unwrap_err();
        assert!(e.to_string().contains("sse9") && e.to_string().contains("avx512bf16"), "{e}");
    }

    #[test]
    fn unset_or_empty_gives_the_best_and_the_paths_nest() {
        assert_eq!(Isa::from_env_value(None), Ok(Isa::best()));
        assert_eq!(Isa::from_env_value(Some("  ")), Ok(Isa::best()));
        assert!(Isa::Portable.supported());
        let paths = Isa::supported_paths();
        // a supported path's narrower paths are supported too
        for w in ALL_ISAS.windows(2) {
            assert!(!paths.contains(&w[1]) || paths.contains(&w[0]), "{paths:?}");
        }
        assert!(Isa::Avx512Bf16.allows(Isa::Avx2) && !Isa::Avx2.allows(Isa::Avx512));
    }

    #[test]
    fn a_forced_path_the_cpu_lacks_is_refused_by_name_and_a_supported_one_is_taken() {
        for isa in ALL_ISAS {
            match Isa::from_env_value(Some(isa.name())) {
                Ok(got) => assert!(isa.supported() && got == isa),
                Err(IsaError::Unsupported { name, missing, .. }) => {
                    assert!(!isa.supported());
                    assert_eq!(name, isa.name());
                    assert!(isa.required_features().contains(&missing));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
