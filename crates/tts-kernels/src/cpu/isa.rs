//! Which vector instruction path the Cpu kernels take: chosen once, at first use, from what the CPU
//! has (the best of [`Isa::Avx512Bf16`], [`Isa::Avx512`], [`Isa::Avx2`], [`Isa::Portable`]), or
//! forced with the environment variable `TTS_CPU_ISA=avx512bf16|avx512|avx2|portable` (for tests
//! and side-by-side comparisons).
//!
//! The paths nest: a CPU with AVX-512 BF16 also runs the AVX-512F, AVX2+FMA and portable code, and
//! every kernel takes the widest code it has that the selected path allows ([`Isa::allows`]).
//! `avx512` means AVX-512F (with the BW/VL/DQ parts every AVX-512 CPU since Skylake-SP has) and
//! FMA; `avx512bf16` adds `vdpbf16ps` (bf16 pair dot products accumulated in f32), which only the
//! bf16-weight kernels (`cpu-bf16`) use: the f32 `cpu` backend never rounds to bf16.
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
}

/// Every path, narrowest first.
pub const ALL_ISAS: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];

/// Why the path could not be chosen: `TTS_CPU_ISA` names no path, or one this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("{ISA_ENV}={0:?} names no Cpu instruction path: expected avx512bf16, avx512, avx2 or portable")]
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
        }
    }

    /// The path named `s` (case-insensitive, surrounding spaces ignored).
    pub fn parse(s: &str) -> Option<Isa> {
        let s = s.trim().to_ascii_lowercase();
        ALL_ISAS.into_iter().find(|i| i.name() == s)
    }

    /// The CPU features the path needs, as `is_x86_feature_detected!` names them.
    pub fn required_features(self) -> &'static [&'static str] {
        match self {
            Isa::Portable => &[],
            Isa::Avx2 => &["avx2", "fma"],
            Isa::Avx512 => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"],
            Isa::Avx512Bf16 => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512bf16"],
        }
    }

    /// The first feature of [`Isa::required_features`] this CPU lacks.
    fn missing_feature(self) -> Option<&'static str> {
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

/// What the CPU has and the path taken, for bench and `tts info` output: e.g.
/// `avx2+fma,avx512f,avx512bf16;path=avx512bf16`.
pub fn describe() -> String {
    let have: Vec<&str> = [(Isa::Avx2, "avx2+fma"), (Isa::Avx512, "avx512f"), (Isa::Avx512Bf16, "avx512bf16")]
        .into_iter()
        .filter(|(i, _)| i.supported())
        .map(|(_, n)| n)
        .collect();
    let have = if have.is_empty() { std::env::consts::ARCH.to_string() } else { have.join(",") };
    match selected() {
        Ok(isa) => format!("{have};path={isa}"),
        Err(e) => format!("{have};path=invalid ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
