//! Runners of the T3 case kinds (t3_cond_enc, t3_prefill, t3_decode_teacher_forced).
use tts_kernels::{Device, EmuOptions, Tensor};
use tts_t3::{KvCache, RowLayout, T3, Workspace};

use super::{Case, Outcome, TensorReport, Tolerance, compare_tensor};

pub(crate) fn device(backend: &str) -> Result<Device, String> {
    match backend {
        "cpu" => Ok(Device::cpu()),
        // bf16 GEMM weights and KV cache, f32 activations: held to the bf16 tolerance
        "cpu-bf16" => Ok(Device::cpu_bf16_weights()),
        "emu" => Device::emu(EmuOptions::default()).map_err(|e| e.to_string()),
        // one Cuda device for the whole run (creating one loads every kernel module)
        "cuda" => {
            static CUDA: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
            CUDA.get_or_init(|| Device::cuda(0).map_err(|e| e.to_string())).clone()
        }
        b => Err(format!("backend {b} is not one the harness runs")),
    }
}

pub(crate) fn tokens(case: &Case, name: &str) -> Result<Vec<u32>, String> {
    case.input(name)?.i64s().iter().map(|&t| u32::try_from(t).map_err(|_| format!("{name}: token {t}"))).collect()
}

pub(crate) fn f64s(t: &Tensor) -> Result<Vec<f64>, String> {
    Ok(t.to_f32_vec().map_err(|e| e.to_string())?.iter().map(|&v| v as f64).collect())
}

pub(crate) struct Runner<'a> {
    pub case: &'a Case,
    pub tol: Tolerance,
    pub reports: Vec<TensorReport>,
}

impl Runner<'_> {
    pub fn check(&mut self, name: &str, got: &[f64], shape: &[usize]) {
        self.reports.push(compare_tensor(self.case, name, got, shape, self.tol));
    }
    /// Every tensor listed in case.json must have been compared.
    pub fn finish(self) -> Result<Outcome, String> {
        for name in self.case.meta.tensors.keys() {
            if !self.reports.iter().any(|r| &r.name == name) {
                return Err(format!("{}: the runner did not compute {name}", self.case.name));
            }
        }
        Ok(if self.reports.iter().all(|r| r.ok) {
            Outcome::Passed(self.reports)
        } else {
            Outcome::Failed("mismatch".into(), self.reports)
        })
    }
}

/// A case's T3 on a backend and the conditioning embeddings of its voice.
pub(crate) struct Prepared {
    pub model: T3,
    /// `[len_cond, D]`
    pub cond: Tensor,
}

/// The case's T3 with the voice of its inputs (`speaker_emb`, `cond_prompt_speech_tokens`, `emotion_adv`).
fn prepare(case: &Case, backend: &str) -> Result<Prepared, String> {
    let spk = case.input("speaker_emb")?.f32s();
    let prompt = tokens(case, "cond_prompt_speech_tokens")?;
    let exaggeration = case.input("emotion_adv")?.f32s()[0];
    prepare_with(case, backend, &spk, &prompt, exaggeration)
}

/// The case's T3 with the given voice.
pub(crate) fn prepare_with(
    case: &Case,
    backend: &str,
    speaker_emb: &[f32],
    prompt: &[u32],
    exaggeration: f32,
) -> Result<Prepared, String> {
    let dev = device(backend)?;
    let model = T3::load(&case.dir, &dev).map_err(|e| e.to_string())?;
    let cond = model.cond_embeddings(speaker_emb, prompt, exaggeration).map_err(|e| e.to_string())?;
    Ok(Prepared { model, cond })
}

pub(crate) fn run_cond_enc(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let p = prepare(case, backend)?;
    let (d, q) = (p.model.config().hidden_size, p.model.config().perceiver_query_tokens);
    let mut r = Runner { case, tol, reports: Vec::new() };
    let prompt = tokens(case, "cond_prompt_speech_tokens")?;
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let emb = p.model.speech_input(&prompt, &positions).map_err(|e| e.to_string())?;
    r.check("cond_prompt_speech_emb", &f64s(&emb)?, &[1, prompt.len(), d]);
    let cond = f64s(&p.cond)?;
    r.check("perceiver_out", &cond[d..(1 + q) * d], &[1, q, d]);
    r.check("cond_emb", &cond, &[1, q + 2, d]);
    r.finish()
}

/// Prefill of one request (2 CFG rows in slots 0 and 1): (inputs_embeds, logits [2·L0, V], cache).
fn prefill(p: &Prepared, text: &[u32], max_len: usize) -> Result<(Vec<f64>, Vec<f32>, KvCache, usize), String> {
    let m = &p.model;
    let mut h = m.prefill_embeddings(&p.cond, text).map_err(|e| e.to_string())?;
    let embeds = f64s(&h)?;
    let l0 = h.shape()[0] / 2;
    let rows: Vec<(usize, usize)> = (0..2).flat_map(|s| (0..l0).map(move |i| (s, i))).collect();
    let layout = RowLayout::causal(m.device(), &rows).map_err(|e| e.to_string())?;
    let mut cache = KvCache::new(m.config(), m.device(), 2, max_len).map_err(|e| e.to_string())?;
    let mut ws = Workspace::new(m.config(), m.device(), 2 * l0).map_err(|e| e.to_string())?;
    m.forward(&mut h, &layout, &mut cache, &mut ws, 2 * l0).map_err(|e| e.to_string())?;
    Ok((embeds, ws.logits.to_f32_vec().map_err(|e| e.to_string())?, cache, l0))
}

fn text_row(case: &Case) -> Result<Vec<u32>, String> {
    let all = tokens(case, "text_tokens")?;
    let shape = &case.input("text_tokens")?.shape;
    let t = *shape.last().ok_or("text_tokens has no shape")?;
    if all.len() == 2 * t && all[..t] != all[t..] {
        return Err("the two CFG rows of text_tokens differ".into());
    }
    Ok(all[..t].to_vec())
}

pub(crate) fn run_prefill(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let p = prepare(case, backend)?;
    let (d, v) = (p.model.config().hidden_size, p.model.config().speech_tokens_dict_size);
    let text = text_row(case)?;
    let (embeds, logits, _, l0) = prefill(&p, &text, p.model.config().len_cond() + text.len() + 2)?;
    let mut r = Runner { case, tol, reports: Vec::new() };
    r.check("cond_emb", &f64s(&p.cond)?, &[1, p.model.config().len_cond(), d]);
    r.check("inputs_embeds", &embeds, &[2, l0, d]);
    let lg: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    r.check("prefill_logits", &lg, &[2, l0, v]);
    r.check("logits_cond", &lg[(l0 - 1) * v..l0 * v], &[1, v]);
    r.check("logits_uncond", &lg[(2 * l0 - 1) * v..2 * l0 * v], &[1, v]);
    r.finish()
}

/// A teacher-forced decode: what [`teacher_forced`] computed.
pub(crate) struct TeacherForced {
    /// The prefill's input, `[2, L0, D]` (both CFG rows).
    pub prefill_embeds: Vec<f64>,
    /// Prefill length per row.
    pub l0: usize,
    /// The decode steps' inputs, `[fed, 2, D]`.
    pub decode_embeds: Vec<f64>,
    /// The logits of both CFG rows (`[2·V]`: conditional row, then unconditional) at the prefill's
    /// last position, then after each fed token: `1 + fed` entries.
    pub steps: Vec<Vec<f32>>,
}

/// The prefill of `text` (`[SOT] ids [EOT]`, one CFG row pair), then one decode step per token of
/// `fed` (the same token in both rows, speech position k + 1), as `T3.inference` runs them.
pub(crate) fn teacher_forced(p: &Prepared, text: &[u32], fed: &[u32]) -> Result<TeacherForced, String> {
    let m = &p.model;
    let v = m.config().speech_tokens_dict_size;
    let max_len = m.config().kv_positions(text.len(), fed.len().max(1));
    let (prefill_embeds, logits, mut cache, l0) = prefill(p, text, max_len)?;
    let last = |row: usize| -> Vec<f32> { logits[row * l0 * v + (l0 - 1) * v..(row * l0 + l0) * v].to_vec() };
    let mut steps: Vec<Vec<f32>> = vec![[last(0), last(1)].concat()];
    let mut decode_embeds = Vec::new();
    let mut ws = Workspace::new(m.config(), m.device(), 2).map_err(|e| e.to_string())?;
    for (k, &tok) in fed.iter().enumerate() {
        let e = m.speech_input(&[tok, tok], &[k as u32 + 1, k as u32 + 1]).map_err(|e| e.to_string())?;
        decode_embeds.extend(f64s(&e)?);
        let mut h = e;
        let layout = RowLayout::causal(m.device(), &[(0, l0 + k), (1, l0 + k)]).map_err(|e| e.to_string())?;
        m.forward(&mut h, &layout, &mut cache, &mut ws, 2).map_err(|e| e.to_string())?;
        steps.push(ws.logits.view().narrow_rows(0, 2).and_then(|v| v.to_f32_vec()).map_err(|e| e.to_string())?);
    }
    Ok(TeacherForced { prefill_embeds, l0, decode_embeds, steps })
}

/// Teacher-forced decode: replays the tokens the reference sampled and compares every step's
/// logits, then the sampler chain of every step.
pub(crate) fn run_decode(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    let p = prepare(case, backend)?;
    let m = &p.model;
    let (d, v) = (m.config().hidden_size, m.config().speech_tokens_dict_size);
    let text = text_row(case)?;
    let speech = tokens(case, "speech_tokens")?;
    let n = speech.len();
    let tf = teacher_forced(&p, &text, &speech)?;
    let (l0, steps) = (tf.l0, &tf.steps);
    let mut r = Runner { case, tol, reports: Vec::new() };
    r.check("cond_emb", &f64s(&p.cond)?, &[1, m.config().len_cond(), d]);
    r.check("inputs_embeds", &tf.prefill_embeds, &[2, l0, d]);
    r.check("logits_cond", &steps[0][..v].iter().map(|&x| x as f64).collect::<Vec<_>>(), &[1, v]);
    r.check("logits_uncond", &steps[0][v..].iter().map(|&x| x as f64).collect::<Vec<_>>(), &[1, v]);
    r.check("decode_inputs_embeds", &tf.decode_embeds, &[n, 2, d]);
    let all: Vec<f64> = steps.iter().flatten().map(|&x| x as f64).collect();
    r.check("step_logits", &all, &[n + 1, 2, v]);
    let w = case.meta.params.get("cfg_weight").and_then(|x| x.as_f64()).ok_or("params.cfg_weight missing")? as f32;
    let cfg: Vec<f64> = steps[..n].iter().flat_map(|s| (0..v).map(move |i| (s[i] + w * (s[i] - s[v + i])) as f64)).collect();
    r.check("logits_cfg", &cfg, &[n, v]);
    // the sampler chain of every step (history = BOS + the tokens fed so far)
    let settings = sampler_settings(case)?;
    let (mut processed, mut probs) = (Vec::new(), Vec::new());
    let mut history = vec![m.config().start_speech_token as i32];
    for (k, s) in steps[..n].iter().enumerate() {
        let st = tts_kernels::cpu::sampler_stages(&s[..v], &s[v..], &history, &settings);
        processed.extend(st.processed.iter().map(|&x| x as f64));
        probs.extend(st.probs.iter().map(|&x| x as f64));
        history.push(speech[k] as i32);
    }
    if backend == "cpu" {
        r.check("logits_processed", &processed, &[n, v]);
    } else {
        // bf16: a token whose reference logit sits within the tolerance of the min_p cut-off may be
        // kept on one side and removed on the other. Such borderline positions (and only those) are
        // excused; everywhere else the filtered sets must agree and the values match.
        let want = &case.expected["step_logits"].data;
        // a logit error of tol.abs grows through CFG (c + w(c - u): up to 1 + 2|w|), the repetition
        // penalty (up to max(p, 1)) and the temperature (1 / T)
        let s = &settings;
        let margin =
            tol.abs * (1.0 + 2.0 * s.cfg_weight.abs() as f64) * (s.repetition_penalty.max(1.0) as f64) / s.temperature as f64;
        let (excused, report) =
            borderline_min_p(want, &processed, &speech, &settings, m.config().start_speech_token, v, n, margin);
        if let Some(bad) = report {
            return Err(format!("{}: logits_processed: {bad}", case.name));
        }
        let fixed: Vec<f64> = processed
            .iter()
            .enumerate()
            .map(|(i, &x)| if excused[i] { case.expected["logits_processed"].data[i] } else { x })
            .collect();
        r.check("logits_processed", &fixed, &[n, v]);
    }
    r.check("probs", &probs, &[n, v]);
    r.finish()
}

/// The English sampler settings of a case's params.
pub(crate) fn sampler_settings(case: &Case) -> Result<tts_kernels::cpu::SamplerSettings, String> {
    let p = &case.meta.params;
    let f = |k: &str| p.get(k).and_then(|x| x.as_f64()).map(|x| x as f32).ok_or(format!("params.{k} missing"));
    Ok(tts_kernels::cpu::SamplerSettings {
        temperature: f("temperature")?,
        cfg_weight: f("cfg_weight")?,
        repetition_penalty: f("repetition_penalty")?,
        min_p: f("min_p")?,
        top_p: f("top_p")?,
        ..tts_kernels::cpu::SamplerSettings::ENGLISH_DEFAULT
    })
}

/// For each step, the positions where this backend's filtered set differs from the reference's, all
/// of which must be borderline: the reference's `(x − max) − ln(min_p)` (after the repetition
/// penalty and temperature) within `margin`. Returns the excused positions, or what was not.
#[allow(clippy::too_many_arguments)]
fn borderline_min_p(
    ref_steps: &[f64],
    ours: &[f64],
    speech: &[u32],
    settings: &tts_kernels::cpu::SamplerSettings,
    bos: u32,
    v: usize,
    n: usize,
    margin: f64,
) -> (Vec<bool>, Option<String>) {
    let mut excused = vec![false; n * v];
    let mut history = vec![bos as i32];
    let cut = (settings.min_p as f64).ln();
    for k in 0..n {
        let row: Vec<f32> = ref_steps[k * 2 * v..(k + 1) * 2 * v].iter().map(|&x| x as f32).collect();
        let st = tts_kernels::cpu::sampler_stages(&row[..v], &row[v..], &history, settings);
        let max = st.temp.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        for i in 0..v {
            let (a, b) = (st.processed[i].is_finite(), ours[k * v + i].is_finite());
            if a != b {
                let dist = ((st.temp[i] as f64 - max) - cut).abs();
                if dist > margin {
                    return (
                        excused,
                        Some(format!("step {k} token {i}: kept on one side only, {dist:.3} from the min_p cut-off")),
                    );
                }
                excused[k * v + i] = true;
            }
        }
        history.push(speech[k] as i32);
    }
    (excused, None)
}

/// `t3_sampler`: the sampler chain on recorded logits. Cpu: every stage of `cpu::sampler_stages`.
/// Emu: the sampler kernel's probabilities (`probs_out`) and its draw; the intermediate stages exist
/// only in the Cpu chain (the kernel never stores them), so they are compared from there.
pub(crate) fn run_sampler(case: &Case, backend: &str, tol: Tolerance) -> Result<Outcome, String> {
    use tts_kernels::cpu::{Pipeline, SamplerSettings};
    let p = &case.meta.params;
    let f = |k: &str, d: f32| p.get(k).and_then(|x| x.as_f64()).map_or(d, |x| x as f32);
    let pipeline = match case.param_str("pipeline") {
        Some("english") => Pipeline::English,
        Some("turbo") => Pipeline::Turbo,
        other => return Err(format!("{}: params.pipeline {other:?}", case.name)),
    };
    let settings = SamplerSettings {
        pipeline,
        temperature: f("temperature", 1.0),
        cfg_weight: f("cfg_weight", 0.0),
        repetition_penalty: f("repetition_penalty", 1.0),
        min_p: f("min_p", 0.0),
        top_p: f("top_p", 1.0),
        top_k: p.get("top_k").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
        seed: 0,
    };
    let cond = case.input("logits_cond")?.f32s();
    let uncond = case.input("logits_uncond")?.f32s();
    let history: Vec<i32> = case.input("generated_ids")?.i64s().iter().map(|&t| t as i32).collect();
    let v = cond.len();
    let st = tts_kernels::cpu::sampler_stages(&cond, &uncond, &history, &settings);
    let mut r = Runner { case, tol, reports: Vec::new() };
    let as64 = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<_>>();
    for (name, stage) in [
        ("logits_cfg", &st.cfg),
        ("logits_rep", &st.rep),
        ("logits_temp", &st.temp),
        ("logits_min_p", &st.min_p),
        ("logits_processed", &st.processed),
    ] {
        if case.meta.tensors.contains_key(name) {
            r.check(name, &as64(stage), &[1, v]);
        }
    }
    let probs = if backend == "cpu" {
        st.probs.clone()
    } else {
        let dev = device(backend)?;
        let e = |e: tts_kernels::Error| e.to_string();
        let logits =
            Tensor::from_f32(&dev, tts_kernels::DType::F32, &[2, v], &[cond.clone(), uncond.clone()].concat()).map_err(e)?;
        let sf = Tensor::from_f32(&dev, tts_kernels::DType::F32, &[1, 8], &settings.f32_row()).map_err(e)?;
        let si = Tensor::from_i32(&dev, &[1, 4], &settings.i32_row()).map_err(e)?;
        let mut hist = history.clone();
        hist.push(0);
        let mut ht = Tensor::from_i32(&dev, &[1, hist.len()], &hist).map_err(e)?;
        let state = tts_kernels::cpu::SamplerState::new(i32::MAX, -1);
        let mut stt =
            Tensor::from_i32(&dev, &[1, 4], &[history.len() as i32, state.done, state.max_new_tokens, state.stop_token])
                .map_err(e)?;
        let mut nt = Tensor::zeros(&dev, tts_kernels::DType::I32, &[1]).map_err(e)?;
        let mut pt = Tensor::uninit(&dev, tts_kernels::DType::F32, &[1, v]).map_err(e)?;
        tts_kernels::ops::sample_tokens(
            logits.view(),
            sf.view(),
            si.view(),
            ht.view_mut(),
            stt.view_mut(),
            nt.view_mut(),
            Some(pt.view_mut()),
        )
        .map_err(e)?;
        let drawn = nt.to_i32_vec().map_err(e)?[0];
        let want = tts_kernels::cpu::draw_token(&st.processed, settings.seed, (history.len() - 1) as u32, 0);
        if want.map(|t| t as i32) != Some(drawn) {
            return Err(format!("{}: the kernel drew {drawn}, the Cpu chain {want:?}", case.name));
        }
        pt.to_f32_vec().map_err(e)?
    };
    r.check("probs", &as64(&probs), &[1, v]);
    r.finish()
}
