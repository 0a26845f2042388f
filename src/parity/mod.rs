//! The parity harness: runs the engine on every fixture case recorded by the real chatterbox
//! package (`tools/reference/`) and compares what it computes, tensor by tensor.
//!
//! Cases are directories under `tests/fixtures/` and under every directory listed in
//! `TTS_EXTRA_FIXTURES` (colon-separated). A case is `case.json` (kind, tolerances, expected tensor
//! list), `config.json`, model files in the official names, `inputs.safetensors` and
//! `expected.safetensors` (format: `tools/reference/README.md`). A malformed case is an error,
//! never a skip. A case whose engine part does not exist yet is *pending*, by name; it becomes a
//! failure as soon as that part declares itself implemented.
mod campplus;
mod clone;
mod cond_mel;
mod generate;
mod logmel;
mod runners;
mod s3_tokenizer;
mod s3gen;
mod t3;
mod voice_encoder;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use runners::{KINDS, Kind};

/// The Cuda device the harness runs cases on (GPU 0, created once), or why there is none.
pub fn cuda_device() -> Result<tts_kernels::Device, String> {
    t3::device("cuda")
}

/// A tolerance: `|got - want| <= abs + rel · |want|`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
    /// Which of the case's tolerances this is (set by the harness, not read from case.json).
    #[serde(skip)]
    pub bf16: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tolerances {
    pub f32: Tolerance,
    pub bf16: Tolerance,
}

/// How one expected tensor is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Element-wise within the tolerance.
    Allclose,
    /// ‖got − want‖₂ / ‖want‖₂ within the tolerance's `rel`.
    RelL2,
    /// Bit-exact (integers: token ids, code points).
    Exact,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    pub compare: Compare,
    #[serde(default)]
    pub note: String,
    /// A tighter absolute floor for this tensor on f32 backends (e.g. probabilities).
    #[serde(default)]
    pub abs_f32: Option<f64>,
}

/// `case.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseMeta {
    pub format: u32,
    pub kind: String,
    #[serde(default)]
    pub description: String,
    pub tolerance: Tolerances,
    pub tensors: BTreeMap<String, TensorSpec>,
    #[serde(default)]
    pub params: serde_json::Value,
}

/// A tensor read from a safetensors file, widened to f64 for comparison (integers are exact).
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    pub integer: bool,
}

impl HostTensor {
    pub fn f32s(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
}

/// A loaded, validated case.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub meta: CaseMeta,
    pub inputs: HashMap<String, HostTensor>,
    pub expected: HashMap<String, HostTensor>,
}

impl Case {
    pub fn input(&self, name: &str) -> Result<&HostTensor, String> {
        self.inputs.get(name).ok_or_else(|| format!("{}: inputs.safetensors has no tensor {name:?}", self.name))
    }
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.meta.params.get(key).and_then(|v| v.as_str())
    }
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, HostTensor>, String> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let (data, integer): (Vec<f64>, bool) = match view.dtype() {
            Dtype::F32 => (raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(), false),
            Dtype::F64 => (raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(), false),
            Dtype::I32 => (raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(), true),
            Dtype::I64 => (raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(), true),
            d => return Err(format!("{}: tensor {name} has unsupported dtype {d:?}", path.display())),
        };
        out.insert(name.to_string(), HostTensor { shape: view.shape().to_vec(), data, integer });
    }
    Ok(out)
}

/// The case directories: every subdirectory of `tests/fixtures` and of each `TTS_EXTRA_FIXTURES` entry.
pub fn discover(fixtures: &Path) -> Result<Vec<PathBuf>, String> {
    let mut roots = vec![fixtures.to_path_buf()];
    if let Ok(extra) = std::env::var("TTS_EXTRA_FIXTURES") {
        roots.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    let mut cases = Vec::new();
    for root in roots {
        let entries = std::fs::read_dir(&root).map_err(|e| format!("fixture directory {}: {e}", root.display()))?;
        for e in entries {
            let p = e.map_err(|e| format!("{}: {e}", root.display()))?.path();
            if p.is_dir() {
                cases.push(p);
            }
        }
    }
    cases.sort();
    Ok(cases)
}

/// Loads and validates one case. Anything missing or inconsistent is an error.
pub fn load_case(dir: &Path) -> Result<Case, String> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let meta_path = dir.join("case.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| format!("{name}: case.json: {e}"))?;
    let meta: CaseMeta = serde_json::from_str(&text).map_err(|e| format!("{name}: case.json: {e}"))?;
    if meta.format != 1 {
        return Err(format!("{name}: case.json format {} (this harness reads format 1)", meta.format));
    }
    if !KINDS.iter().any(|k| k.name == meta.kind) {
        return Err(format!("{name}: unknown case kind {:?}", meta.kind));
    }
    for t in [meta.tolerance.f32, meta.tolerance.bf16] {
        if !(t.rel.is_finite() && t.abs.is_finite() && t.rel >= 0.0 && t.abs >= 0.0) {
            return Err(format!("{name}: invalid tolerance {t:?}"));
        }
    }
    if meta.tensors.is_empty() {
        return Err(format!("{name}: case.json lists no expected tensors"));
    }
    let config = dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&config).map_err(|e| format!("{name}: config.json: {e}"))?;
    serde_json::from_str::<serde_json::Value>(&cfg_text).map_err(|e| format!("{name}: config.json: {e}"))?;
    let inputs = read_safetensors(&dir.join("inputs.safetensors")).map_err(|e| format!("{name}: {e}"))?;
    let expected = read_safetensors(&dir.join("expected.safetensors")).map_err(|e| format!("{name}: {e}"))?;
    for (t, spec) in &meta.tensors {
        let e = expected.get(t).ok_or_else(|| format!("{name}: expected.safetensors lacks {t:?} listed in case.json"))?;
        if spec.compare == Compare::Exact && !e.integer {
            return Err(format!("{name}: {t} is compared exactly but is not an integer tensor"));
        }
    }
    Ok(Case { name, dir: dir.to_path_buf(), meta, inputs, expected })
}

/// The comparison of one tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub compare: Compare,
    pub max_abs: f64,
    pub max_rel: f64,
    /// ‖got − want‖₂ / ‖want‖₂
    pub rel_l2: f64,
    pub ok: bool,
    pub detail: String,
}

/// Token ids as the f64 values the expected tensors hold.
pub(crate) fn ids(x: &[u32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `(identical, compared)`: how many of `got`'s ids equal the expected ones, out of the longer length.
pub(crate) fn agreement(got: &[u32], want: &[f64]) -> (usize, usize) {
    let same = got.iter().zip(want).filter(|(g, w)| **g as f64 == **w).count();
    (same, want.len().max(got.len()))
}

/// Compares `got` with the expected tensor `name` of the case.
pub fn compare_tensor(case: &Case, name: &str, got: &[f64], got_shape: &[usize], tol: Tolerance) -> TensorReport {
    let spec = &case.meta.tensors[name];
    let mut tol = tol;
    if let (false, Some(a)) = (tol.bf16, spec.abs_f32) {
        tol.abs = a;
    }
    let want = &case.expected[name];
    let mut r = TensorReport {
        name: name.to_string(),
        compare: spec.compare,
        max_abs: 0.0,
        max_rel: 0.0,
        rel_l2: 0.0,
        ok: true,
        detail: String::new(),
    };
    let want_n: usize = want.shape.iter().product();
    let got_n: usize = got_shape.iter().product();
    if want_n != got_n || got.len() != got_n {
        r.ok = false;
        r.detail = format!("shape {got_shape:?} vs expected {:?}", want.shape);
        return r;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut first_bad = None;
    for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
        // equal values (the same infinity, e.g. -inf for a filtered logit) are exact
        let err = if g == w { 0.0 } else { (g - w).abs() };
        num += err * err;
        den += w * w;
        if err.is_nan() {
            r.max_abs = f64::NAN;
        } else if !r.max_abs.is_nan() {
            r.max_abs = r.max_abs.max(err);
        }
        if w.abs() > tol.abs {
            r.max_rel = r.max_rel.max(err / w.abs());
        }
        let within = match spec.compare {
            Compare::Exact => g == w,
            Compare::Allclose => err <= tol.abs + tol.rel * w.abs(),
            Compare::RelL2 => true,
        };
        if !within && first_bad.is_none() {
            first_bad = Some((i, g, w));
        }
    }
    r.rel_l2 = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    match spec.compare {
        Compare::RelL2 => {
            r.ok = r.rel_l2 <= tol.rel;
            if !r.ok {
                r.detail = format!("relative L2 error {:.3e} > {:.1e}", r.rel_l2, tol.rel);
            }
        }
        _ => {
            if let Some((i, g, w)) = first_bad {
                r.ok = false;
                r.detail = format!("first mismatch at [{i}]: got {g}, want {w}");
            }
        }
    }
    r
}

/// The outcome of one case on one backend.
#[derive(Debug)]
pub enum Outcome {
    Passed(Vec<TensorReport>),
    Failed(String, Vec<TensorReport>),
    /// The engine part this case needs does not exist yet (its name).
    Pending(&'static str),
}
