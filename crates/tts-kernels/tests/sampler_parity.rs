//! Parity of the T3 sampler with the reference package (chatterbox-tts 0.1.7 + transformers 5.2.0):
//! every `tests/fixtures/t3_sampler_*` case (format: tools/reference/README.md).
//!
//! - Cpu: `cpu::sampler_stages` against every recorded stage, with the case's f32 tolerance (and the
//!   `abs_f32` override of `probs`); `-inf` (removed) positions must be identical.
//! - Every kernel backend (Emu schedules; Cuda when present): the kernel's `probs_out` against the
//!   recorded `probs`. The logits are f32 on every backend and the kernel runs the same f32
//!   operations as the Cpu reference (only the softmax normaliser is summed in another order), so the
//!   f32 tolerance applies there too; zero-probability (removed) positions must be identical. The
//!   drawn token must be the Cpu reference's draw.
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use tts_kernels::cpu::{self, Pipeline, SamplerSettings, SamplerStages};
use tts_kernels::testing::{compare, kernel_devices};
use tts_kernels::{DType, Tensor, ops};

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------ fixtures
struct Case {
    name: String,
    settings: SamplerSettings,
    cond: Vec<f32>,
    uncond: Vec<f32>,
    /// The full history row the op sees: `[BOS, generated..]`.
    history: Vec<i32>,
    /// (name, values, rel, abs)
    expected: Vec<(String, Vec<f32>, f64, f64)>,
}

fn f32_tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn i64_tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn load(dir: &Path) -> Case {
    let meta = read_json(&dir.join("case.json"));
    let config = read_json(&dir.join("config.json"));
    assert_eq!(meta.get("kind").and_then(Json::as_str), Some("t3_sampler"));
    let tol = meta.get("tolerance").and_then(|t| t.get("f32")).expect("tolerance.f32");
    let (rel, abs) = (tol.get("rel").and_then(Json::as_f64).unwrap(), tol.get("abs").and_then(Json::as_f64).unwrap());
    let params = meta.get("params").expect("params");
    let p = |k: &str, default: f64| params.get(k).and_then(Json::as_f64).unwrap_or(default);
    let pipeline = match params.get("pipeline").and_then(Json::as_str) {
        Some("english") => Pipeline::English,
        Some("turbo") => Pipeline::Turbo,
        other => panic!("{}: unknown pipeline {other:?}", dir.display()),
    };
    let settings = SamplerSettings {
        pipeline,
        temperature: p("temperature", 0.8) as f32,
        cfg_weight: p("cfg_weight", 0.5) as f32,
        repetition_penalty: p("repetition_penalty", 1.2) as f32,
        min_p: if pipeline == Pipeline::English { p("min_p", 0.05) as f32 } else { 0.0 },
        top_p: p("top_p", 1.0) as f32,
        top_k: p("top_k", 0.0) as u32,
        seed: 0x5eed_0000_0000_0000 ^ meta.get("seed").and_then(Json::as_f64).unwrap_or(0.0) as u64,
    };
    settings.validate().unwrap();
    let bos = config.get("start_speech_token").and_then(Json::as_f64).unwrap_or(6561.0) as i32;

    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let inputs = safetensors::SafeTensors::deserialize(&inputs).unwrap();
    let cond = f32_tensor(&inputs, "logits_cond");
    let uncond = f32_tensor(&inputs, "logits_uncond");
    let ids: Vec<i32> = i64_tensor(&inputs, "generated_ids").into_iter().map(|v| v as i32).collect();
    // English: generated_ids starts with the BOS. Turbo: generated_ids are the tokens after the BOS
    // (what inference_turbo penalises from the second step on).
    let history = match pipeline {
        Pipeline::English => {
            assert_eq!(ids[0], bos, "english history must start with the BOS");
            ids
        }
        Pipeline::Turbo => std::iter::once(bos).chain(ids).collect(),
    };

    let expected_bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let exp = safetensors::SafeTensors::deserialize(&expected_bytes).unwrap();
    let Some(Json::Object(tensors)) = meta.get("tensors") else { panic!("case.json has no tensors") };
    let mut expected = Vec::new();
    for (name, info) in tensors {
        assert_eq!(info.get("compare").and_then(Json::as_str), Some("allclose"), "{name}");
        let abs_t = info.get("abs_f32").and_then(Json::as_f64).unwrap_or(abs);
        expected.push((name.clone(), f32_tensor(&exp, name), rel, abs_t));
    }
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    Case { name, settings, cond, uncond, history, expected }
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("t3_sampler_"))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 5, "expected the 5 t3_sampler fixture cases, found {dirs:?}");
    dirs.iter().map(|d| load(d)).collect()
}

fn stage<'a>(s: &'a SamplerStages, name: &str) -> &'a [f32] {
    match name {
        "logits_cfg" => &s.cfg,
        "logits_rep" => &s.rep,
        "logits_temp" => &s.temp,
        "logits_min_p" => &s.min_p,
        "logits_processed" => &s.processed,
        "probs" => &s.probs,
        other => panic!("unknown stage {other}: the parity test must learn it"),
    }
}

fn removed_positions(v: &[f32], removed: impl Fn(f32) -> bool) -> Vec<usize> {
    v.iter().enumerate().filter(|(_, x)| removed(**x)).map(|(i, _)| i).collect()
}

#[test]
fn cpu_sampler_stages_match_every_fixture_stage() {
    for case in cases() {
        let st = cpu::sampler_stages(&case.cond, &case.uncond, &case.history, &case.settings);
        for (name, want, rel, abs) in &case.expected {
            let got = stage(&st, name);
            let what = format!("{} {name}", case.name);
            let inf = |x: f32| x == f32::NEG_INFINITY;
            assert_eq!(removed_positions(got, inf), removed_positions(want, inf), "{what}: -inf positions differ");
            let c = compare(got, want, *rel, *abs);
            assert!(c.ok(), "{what}: {} of {} out of tolerance (rel {rel:e}, abs {abs:e}): {c:?}", c.failures, c.len);
            eprintln!(
                "{what}: ok, max abs {:.2e}, max rel {:.2e}, {} removed",
                c.max_abs,
                c.max_rel,
                removed_positions(want, inf).len()
            );
        }
    }
}

#[test]
fn kernel_probs_match_every_fixture() {
    for (label, dev) in kernel_devices() {
        for case in cases() {
            let v = case.cond.len();
            let h = case.history.len();
            let logits: Vec<f32> = case.cond.iter().chain(&case.uncond).copied().collect();
            let lt = Tensor::from_f32(&dev, DType::F32, &[2, v], &logits).unwrap();
            let sf = Tensor::from_f32(&dev, DType::F32, &[1, 8], &case.settings.f32_row()).unwrap();
            let si = Tensor::from_i32(&dev, &[1, 4], &case.settings.i32_row()).unwrap();
            let mut hist_row = case.history.clone();
            hist_row.push(-7); // room for the drawn token
            let mut ht = Tensor::from_i32(&dev, &[1, h + 1], &hist_row).unwrap();
            let mut state = Tensor::from_i32(&dev, &[1, 4], &[h as i32, 0, 1000, -1]).unwrap();
            let mut next = Tensor::uninit(&dev, DType::I32, &[1]).unwrap();
            let mut probs = Tensor::uninit(&dev, DType::F32, &[1, v]).unwrap();
            ops::sample_tokens(
                lt.view(),
                sf.view(),
                si.view(),
                ht.view_mut(),
                state.view_mut(),
                next.view_mut(),
                Some(probs.view_mut()),
            )
            .unwrap();
            let got = probs.to_f32_vec().unwrap();
            let (_, want, rel, abs) = case.expected.iter().find(|(n, ..)| n == "probs").expect("probs");
            let what = format!("{label}: {} probs_out", case.name);
            let zero = |x: f32| x == 0.0;
            assert_eq!(removed_positions(&got, zero), removed_positions(want, zero), "{what}: zero positions differ");
            let c = compare(&got, want, *rel, *abs);
            assert!(c.ok(), "{what}: {} of {} out of tolerance: {c:?}", c.failures, c.len);

            let st = cpu::sampler_stages(&case.cond, &case.uncond, &case.history, &case.settings);
            let want_tok = cpu::draw_token(&st.processed, case.settings.seed, (h - 1) as u32, 0).unwrap() as i32;
            let tok = next.to_i32_vec().unwrap()[0];
            assert_eq!(tok, want_tok, "{what}: drawn token");
            assert!(want[tok as usize] > 0.0, "{what}: drew a removed token");
            assert_eq!(ht.to_i32_vec().unwrap()[h], tok, "{what}: history");
            assert_eq!(state.to_i32_vec().unwrap(), [h as i32 + 1, 0, 1000, -1], "{what}: state");
            eprintln!("{what}: ok, max abs {:.2e}, max rel {:.2e}, token {tok}", c.max_abs, c.max_rel);
        }
    }
}
