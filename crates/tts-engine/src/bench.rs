//! `tts bench-t3` and `tts bench-s3gen`: T3 decode speed and S3Gen synthesis speed, per batch size,
//! on a model directory (real weights, or the full-size random models tools/reference writes) or on
//! the synthetic models (`--synthetic`: random weights at the real dimensions, built in memory).
//!
//! T3's decode speed is also put against the memory traffic a step cannot avoid: every weight the
//! step multiplies by, in its stored dtype, plus the KV cache its attention reads at the live
//! lengths, divided by the steady-state step time, against the device's measured copy bandwidth
//! ([`copy_bandwidth`]).
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use tts_kernels::ops::{self, Activation};
use tts_kernels::testing::{random_f32, random_i32};
use tts_kernels::{BackendKind, DType, Device, Tensor};
use tts_s3gen::{FlowRequest, MEL_BINS, S3Gen, S3GenConfig, SAMPLE_RATE};
use tts_t3::{Generator, Request, SamplerSettings, T3, T3Config, Voice};

use crate::{Error, Result};

/// Decode steps run before the timing starts: the first runs eagerly (it warms cuBLAS), the second
/// captures the step's graph on kernel backends.
pub const WARMUP_STEPS: usize = 2;
/// Decode steps between two polls of the done flags (as the engine polls).
pub const POLL_EVERY: usize = 8;
/// The fewest `tokens` a T3 bench accepts: the warm-up steps, then at least two timed steps.
pub const MIN_T3_TOKENS: usize = WARMUP_STEPS + 3;

/// Where the models of a bench come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A model directory with the official file names.
    Dir(PathBuf),
    /// The synthetic models of the real dimensions, random weights from a seed (noise, not speech).
    Synthetic { seed: u64 },
}

impl ModelSource {
    /// `Synthetic` when `synthetic`, else the directory (required then).
    pub fn from_args(dir: Option<PathBuf>, synthetic: bool, seed: u64) -> Result<ModelSource> {
        match (dir, synthetic) {
            (None, true) => Ok(ModelSource::Synthetic { seed }),
            (Some(d), false) => Ok(ModelSource::Dir(d)),
            (Some(_), true) => Err(Error::Usage("--model-dir and --synthetic exclude each other")),
            (None, false) => Err(Error::Usage("give --model-dir DIR, or --synthetic for random weights")),
        }
    }

    /// The synthetic seed, for a synthetic source.
    pub fn synthetic_seed(&self) -> Option<u64> {
        match self {
            ModelSource::Synthetic { seed } => Some(*seed),
            ModelSource::Dir(_) => None,
        }
    }

    /// `synthetic (seed N)` or the directory.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Synthetic { seed } => format!("synthetic (random weights at the real dimensions, seed {seed})"),
            ModelSource::Dir(d) => d.display().to_string(),
        }
    }

    pub fn load_t3(&self, dev: &Device) -> Result<T3> {
        match self {
            ModelSource::Dir(d) => T3::load(d, dev),
            ModelSource::Synthetic { seed } => T3::synthetic(T3Config::default(), *seed, dev),
        }
        .map_err(Error::from)
    }

    pub fn load_s3gen(&self, dev: &Device) -> Result<S3Gen> {
        match self {
            ModelSource::Dir(d) => S3Gen::load(d, dev),
            ModelSource::Synthetic { seed } => S3Gen::synthetic(S3GenConfig::default(), *seed, dev),
        }
        .map_err(Error::from)
    }

    fn dir(&self) -> Option<&Path> {
        match self {
            ModelSource::Dir(d) => Some(d),
            ModelSource::Synthetic { .. } => None,
        }
    }
}

/// A short name of a device's backend for machine-readable lines: `cpu`, `cpu-bf16`, `cuda`, `emu`.
pub fn backend_label(dev: &Device) -> &'static str {
    match dev.kind() {
        BackendKind::Cpu if dev.weight_dtype() == DType::BF16 => "cpu-bf16",
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
        BackendKind::Emu => "emu",
    }
}

/// The CPU's vector instruction sets that matter here, as found at run time (comma-separated, no
/// spaces), and the path the Cpu kernels take on it: e.g. `avx2+fma,avx512f,avx512bf16;path=avx512bf16` (`TTS_CPU_ISA` forces the path).
pub fn cpu_features() -> String {
    tts_kernels::cpu::isa::describe()
}

/// The measured bandwidth of a large copy on a device.
#[derive(Clone, Debug)]
pub struct CopyBandwidth {
    /// Bytes read plus bytes written per second, in GB/s (1e9).
    pub gbps: f64,
    /// Bytes of the copied buffer.
    pub bytes: usize,
    /// How it was measured.
    pub method: &'static str,
}

/// The copy bandwidth of `dev`: the best of 5 copies of a large f32 buffer, counting the bytes read
/// and the bytes written. On Cpu a memcpy split over rayon's threads (the threads the decode GEMV
/// uses), 256 MiB; on kernel backends the pointwise identity kernel (`ops::activation`, one element
/// per thread), device to device, 1 GiB on Cuda (16 MiB on Emu, whose figure measures the shim).
pub fn copy_bandwidth(dev: &Device) -> Result<CopyBandwidth> {
    const REPS: usize = 5;
    let mut best = f64::INFINITY;
    match dev.kind() {
        BackendKind::Cpu => {
            let n = (256 << 20) / 4;
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut dst = vec![0f32; n];
            let chunk = n.div_ceil(4 * rayon::current_num_threads());
            for rep in 0..=REPS {
                let t = Instant::now();
                dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
                // the first copy faults the destination's pages in: not timed
                if rep > 0 {
                    best = best.min(t.elapsed().as_secs_f64());
                }
            }
            std::hint::black_box(&dst);
            Ok(CopyBandwidth { gbps: 2.0 * (n * 4) as f64 / best / 1e9, bytes: n * 4, method: "host memcpy on rayon's threads" })
        }
        kind => {
            let cols = 4096;
            let rows = if kind == BackendKind::Cuda { (1 << 30) / 4 / cols } else { (16 << 20) / 4 / cols };
            let src = Tensor::zeros(dev, DType::F32, &[rows, cols])?;
            let mut dst = Tensor::zeros(dev, DType::F32, &[rows, cols])?;
            for rep in 0..=REPS {
                dev.synchronize()?;
                let t = Instant::now();
                ops::activation(src.view(), dst.view_mut(), Activation::Identity, None, None)?;
                dev.synchronize()?;
                if rep > 0 {
                    best = best.min(t.elapsed().as_secs_f64());
                }
            }
            let bytes = rows * cols * 4;
            Ok(CopyBandwidth {
                gbps: 2.0 * bytes as f64 / best / 1e9,
                bytes,
                method: "device-to-device identity kernel (pw_activation)",
            })
        }
    }
}

/// Bytes of a tensor in its stored dtype (a packed Cpu weight counted at its logical size).
fn tensor_bytes(t: &Tensor) -> u64 {
    (t.len() * t.dtype().size()) as u64
}

/// The bytes of weights one T3 decode step reads, whatever the batch: every layer's norms and
/// projections, the final norm and the speech head, in their stored dtype (the embedding rows the
/// step gathers are left out: a few KB).
pub fn t3_step_weight_bytes(model: &T3) -> u64 {
    let layers: u64 = model
        .weights()
        .layers
        .iter()
        .map(|l| [&l.input_norm, &l.qkv, &l.o, &l.post_norm, &l.gate_up, &l.down].iter().map(|t| tensor_bytes(t)).sum::<u64>())
        .sum();
    layers + tensor_bytes(&model.weights().final_norm) + tensor_bytes(&model.weights().speech_head)
}

/// The KV-cache bytes one decode step's attention reads: K and V of every layer for `rows`
/// sequences attending over `live_len` positions each, in the device's KV dtype
/// ([`Device::kv_dtype`]).
pub fn t3_step_kv_bytes(cfg: &T3Config, dev: &Device, rows: usize, live_len: f64) -> f64 {
    let per_position = 2 * cfg.num_hidden_layers * cfg.hidden_size * dev.kv_dtype().size();
    rows as f64 * live_len * per_position as f64
}

/// One measured T3 batch size.
#[derive(Debug, Clone)]
pub struct T3Speed {
    pub batch: usize,
    /// Speech tokens generated per request (the mean; a request may stop early).
    pub tokens_per_request: f64,
    /// Decode steps run (warm-up included).
    pub decode_steps: usize,
    /// Wall time of the whole batch: prefill and every decode step.
    pub seconds: f64,
    /// Wall time of the prefill of every request (conditioning, prefill pass, first token).
    pub prefill_seconds: f64,
    /// Decode steps in the steady-state timing (after [`WARMUP_STEPS`]).
    pub timed_steps: usize,
    /// Steady-state milliseconds per decode step (every slot of the batch advances one token).
    pub ms_per_step: f64,
    /// Generated tokens of all requests per second, prefill included in the time (the figure the
    /// CPU benches against the reference compare).
    pub tokens_per_second: f64,
    /// Tokens per second of the steady-state decode: `batch / step time`.
    pub decode_tokens_per_second: f64,
    /// Weight bytes a step reads ([`t3_step_weight_bytes`]).
    pub weight_bytes: u64,
    /// KV-cache bytes a step reads, the mean over the timed steps ([`t3_step_kv_bytes`]).
    pub kv_bytes: f64,
    /// `(weight_bytes + kv_bytes) / step time`, GB/s.
    pub gbps: f64,
}

/// `inputs.safetensors` of a reference case in `dir` (its path and bytes), when there is one.
fn case_inputs(dir: &Path) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let inputs = dir.join("inputs.safetensors");
    if !inputs.exists() {
        return Ok(None);
    }
    match std::fs::read(&inputs) {
        Ok(bytes) => Ok(Some((inputs, bytes))),
        Err(e) => Err(Error::ModelFile { path: inputs, detail: format!("cannot read: {e}") }),
    }
}

/// The tensors of a case's `inputs.safetensors`; errors name the file and the tensor.
struct CaseInputs<'a> {
    path: &'a Path,
    st: safetensors::SafeTensors<'a>,
}

impl<'a> CaseInputs<'a> {
    fn parse(path: &'a Path, bytes: &'a [u8]) -> Result<CaseInputs<'a>> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::ModelFile { path: path.to_path_buf(), detail: e.to_string() })?;
        Ok(CaseInputs { path, st })
    }

    fn tensor(&self, name: &str, dtype: safetensors::Dtype) -> Result<safetensors::tensor::TensorView<'a>> {
        let bad = |detail: String| Error::ModelFile { path: self.path.to_path_buf(), detail: format!("tensor {name}: {detail}") };
        let t = self.st.tensor(name).map_err(|e| bad(e.to_string()))?;
        if t.dtype() != dtype {
            return Err(bad(format!("dtype {:?}, expected {dtype:?}", t.dtype())));
        }
        Ok(t)
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name, safetensors::Dtype::F32)?;
        Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// int64 token ids (negative or huge ones wrap: the models refuse ids outside their vocabularies).
    fn tokens(&self, name: &str) -> Result<Vec<u32>> {
        let t = self.tensor(name, safetensors::Dtype::I64)?;
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as u32)
            .collect())
    }
}

/// 60 seeded random text tokens between SOT and EOT.
fn random_text(cfg: &T3Config) -> Vec<u32> {
    let mut text: Vec<u32> = random_i32(3, 60, 3, cfg.text_tokens_dict_size as i32)
        .into_iter()
        .map(|t| t as u32)
        .filter(|&t| t != cfg.start_text_token)
        .collect();
    text.insert(0, cfg.start_text_token);
    text.push(cfg.stop_text_token);
    text
}

/// The voice and text of the T3 bench: `inputs.safetensors` of a reference case when the directory
/// has one (so both engines do the same work); the synthetic voice and 60 random text tokens for
/// the synthetic model; else seeded random ones. Each request may make `tokens` new tokens.
pub fn t3_bench_request(source: &ModelSource, model: &T3, tokens: usize) -> Result<Request> {
    let cfg = &model.config();
    let inputs = match source.dir() {
        Some(d) => case_inputs(d)?,
        None => None,
    };
    let (speaker_emb, prompt, text) = if let Some((path, bytes)) = inputs {
        let case = CaseInputs::parse(&path, &bytes)?;
        let text = case.tokens("text_tokens")?;
        let t = text.len() / 2;
        (case.f32s("speaker_emb")?, case.tokens("cond_prompt_speech_tokens")?, text[..t].to_vec())
    } else if let Some(seed) = source.synthetic_seed() {
        let v = crate::synthetic::voice(seed, cfg, &S3GenConfig::default());
        (v.t3.speaker_emb, v.t3.cond_prompt_speech_tokens, random_text(cfg))
    } else {
        let prompt =
            random_i32(2, cfg.speech_cond_prompt_len, 0, cfg.start_speech_token as i32).into_iter().map(|t| t as u32).collect();
        (random_f32(1, cfg.speaker_embed_size, 0.1), prompt, random_text(cfg))
    };
    Ok(Request {
        text_tokens: text,
        voice: Voice { speaker_emb, prompt_tokens: prompt },
        exaggeration: tts_t3::DEFAULT_EXAGGERATION,
        settings: SamplerSettings { max_new_tokens: tokens, ..SamplerSettings::default() },
    })
}

/// Memory available to new allocations on the host (`MemAvailable` of /proc/meminfo), if known.
fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The bytes a T3 generator of `batch` requests and `max_len` positions allocates: the KV cache,
/// the decode workspace and the logits.
pub fn t3_generator_bytes(cfg: &T3Config, dev: &Device, batch: usize, max_len: usize) -> u64 {
    let rows = (2 * batch) as u64;
    let es = dev.compute_dtype().size() as u64;
    let (d, i, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.speech_tokens_dict_size as u64);
    let kv = 2 * cfg.num_hidden_layers as u64 * rows * max_len as u64 * d * dev.kv_dtype().size() as u64;
    let ws = rows * (7 * d + 3 * i) * es + rows * (v * 4 + d * 4);
    kv + ws
}

/// Measures one batch size: `batch` copies of `base` (seeds 1..=batch), prefilled, then decoded to
/// `tokens` new tokens each; the step time is taken after [`WARMUP_STEPS`]. On backends that use
/// host memory (Cpu, Emu) a batch whose KV cache and workspace do not fit in the available memory
/// is refused up front with an error naming the sizes.
pub fn bench_t3_batch(model: &T3, base: &Request, batch: usize, tokens: usize) -> Result<T3Speed> {
    if tokens < MIN_T3_TOKENS {
        return Err(Error::Setting {
            field: "--tokens",
            value: tokens.to_string(),
            expected: format!("at least {MIN_T3_TOKENS} for the T3 bench"),
        });
    }
    if batch == 0 {
        return Err(Error::Setting { field: "--batch", value: "0".into(), expected: "at least 1".into() });
    }
    let (cfg, dev) = (&model.config(), &model.device());
    let l0 = cfg.prefill_positions(base.text_tokens.len());
    let max_len = cfg.kv_positions(base.text_tokens.len(), tokens);
    let need = t3_generator_bytes(cfg, dev, batch, max_len);
    if dev.kind() != BackendKind::Cuda
        && let Some(avail) = host_available_bytes()
        && need > avail
    {
        return Err(Error::OutOfMemory {
            what: format!(
                "batch {batch}: the KV cache and workspace for {max_len} positions (use a smaller --batch or --tokens)"
            ),
            need_bytes: need,
            available_bytes: avail,
        });
    }
    let reqs: Vec<Request> = (0..batch)
        .map(|i| {
            let mut r = base.clone();
            r.settings.seed = i as u64 + 1;
            r.settings.max_new_tokens = tokens;
            r
        })
        .collect();
    let mut g = Generator::new(model, batch, max_len, tokens)?;
    let start = Instant::now();
    for r in &reqs {
        g.add(r)?;
    }
    dev.synchronize()?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    // the prefill drew each request's first token: tokens − 1 decode steps remain
    let total = tokens - 1;
    let mut finished = Vec::new();
    for _ in 0..WARMUP_STEPS {
        g.step()?;
    }
    dev.synchronize()?;
    let timed_start = Instant::now();
    let mut done = WARMUP_STEPS;
    while done < total && g.active() > 0 {
        let k = POLL_EVERY.min(total - done);
        for _ in 0..k {
            g.step()?;
        }
        done += k;
        finished.extend(g.poll()?);
    }
    dev.synchronize()?;
    let timed_seconds = timed_start.elapsed().as_secs_f64();
    let seconds = start.elapsed().as_secs_f64();
    finished.extend(g.poll()?);
    let generated: usize = finished.iter().map(|f| f.raw.len()).sum();
    let timed_steps = done - WARMUP_STEPS;
    if timed_steps == 0 {
        return Err(Error::NothingTimed { batch, warmup: WARMUP_STEPS });
    }
    let step_seconds = timed_seconds / timed_steps.max(1) as f64;
    // decode step j attends over l0 + j positions in each of the 2·batch rows
    let mean_len = l0 as f64 + (WARMUP_STEPS + 1 + done) as f64 / 2.0;
    let weight_bytes = t3_step_weight_bytes(model);
    let kv_bytes = t3_step_kv_bytes(cfg, dev, 2 * batch, mean_len);
    Ok(T3Speed {
        batch,
        tokens_per_request: generated as f64 / batch as f64,
        decode_steps: g.steps,
        seconds,
        prefill_seconds,
        timed_steps,
        ms_per_step: step_seconds * 1e3,
        tokens_per_second: generated as f64 / seconds,
        decode_tokens_per_second: batch as f64 / step_seconds,
        weight_bytes,
        kv_bytes,
        gbps: (weight_bytes as f64 + kv_bytes) / step_seconds / 1e9,
    })
}

/// One measured S3Gen batch size.
#[derive(Debug, Clone)]
pub struct S3GenSpeed {
    pub batch: usize,
    /// Audio generated per request, in seconds.
    pub audio_seconds: f64,
    /// Wall time of the whole batch (flow + vocoder), in seconds.
    pub seconds: f64,
    /// Wall seconds per second of audio of all requests (the real-time factor; lower is faster).
    pub rtf: f64,
}

/// The built-in voice's prompt size (spec §5.1): 157 prompt tokens, 314 mel frames.
const BUILTIN_PROMPT_TOKENS: usize = 157;

/// What every request of the S3Gen bench synthesises.
#[derive(Clone, Debug)]
pub struct S3GenInputs {
    pub prompt_tokens: Vec<u32>,
    /// `[frames, 80]`.
    pub prompt_feat: Vec<f32>,
    pub embedding: Vec<f32>,
    pub speech: Vec<u32>,
}

/// The S3Gen bench's request: the prompt of the case's `inputs.safetensors` when the directory has
/// one, the synthetic voice's for the synthetic model, else a random one of the built-in voice's
/// size; exactly `tokens` speech tokens (the case's, repeated or cut, else random).
pub fn s3gen_bench_inputs(source: &ModelSource, model: &S3Gen, tokens: usize) -> Result<S3GenInputs> {
    let cfg = &model.config;
    let vocab = cfg.flow_vocab_size as i32;
    let inputs = match source.dir() {
        Some(d) => case_inputs(d)?,
        None => None,
    };
    let (prompt_tokens, prompt_feat, embedding, mut speech) = match inputs {
        Some((path, bytes)) => {
            let case = CaseInputs::parse(&path, &bytes)?;
            (case.tokens("prompt_token")?, case.f32s("prompt_feat")?, case.f32s("embedding")?, case.tokens("speech_tokens")?)
        }
        None => match source.synthetic_seed() {
            Some(seed) => {
                let v = crate::synthetic::voice(seed, &T3Config::default(), cfg).s3gen;
                (v.prompt_token, v.prompt_feat, v.embedding, Vec::new())
            }
            None => (
                random_i32(1, BUILTIN_PROMPT_TOKENS, 0, vocab).into_iter().map(|t| t as u32).collect(),
                random_f32(2, 2 * BUILTIN_PROMPT_TOKENS * MEL_BINS, 2.0).iter().map(|v| v - 6.0).collect(),
                random_f32(3, cfg.spk_embed_dim, 1.0),
                Vec::new(),
            ),
        },
    };
    if speech.is_empty() {
        speech = random_i32(4, tokens, 0, vocab).into_iter().map(|t| t as u32).collect();
    }
    let speech = speech.iter().cycle().take(tokens).copied().collect();
    Ok(S3GenInputs { prompt_tokens, prompt_feat, embedding, speech })
}

/// Measures synthesis of `batch` copies of `inputs` (seeds 1..=batch) with `steps` CFM steps.
pub fn bench_s3gen_batch(model: &S3Gen, inputs: &S3GenInputs, batch: usize, steps: usize) -> Result<S3GenSpeed> {
    if batch == 0 {
        return Err(Error::Setting { field: "--batch", value: "0".into(), expected: "at least 1".into() });
    }
    if inputs.speech.is_empty() {
        return Err(Error::Setting { field: "--tokens", value: "0".into(), expected: "at least 1".into() });
    }
    let reqs: Vec<tts_s3gen::Request<'_>> = (0..batch)
        .map(|i| tts_s3gen::Request {
            flow: FlowRequest {
                prompt_tokens: &inputs.prompt_tokens,
                prompt_feat: &inputs.prompt_feat,
                embedding: &inputs.embedding,
                tokens: &inputs.speech,
                noise: None,
                seed: i as u64 + 1,
            },
            source_phases: None,
            source_noise: None,
        })
        .collect();
    let dev = model.device();
    dev.synchronize()?;
    let t = Instant::now();
    let wavs = model.synthesize(&reqs, steps)?;
    dev.synchronize()?;
    let seconds = t.elapsed().as_secs_f64();
    let audio: f64 = wavs.iter().map(|w| w.len() as f64 / SAMPLE_RATE as f64).sum();
    Ok(S3GenSpeed { batch, audio_seconds: audio / batch as f64, seconds, rtf: seconds / audio })
}

/// One `key=value` line for scripts: `tag key=value key=value ...` (values without spaces).
pub fn machine_line(tag: &str, fields: &[(&str, String)]) -> String {
    let mut s = tag.to_string();
    for (k, v) in fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(&v.replace(char::is_whitespace, "_"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_from_arguments() {
        assert_eq!(ModelSource::from_args(None, true, 7).unwrap(), ModelSource::Synthetic { seed: 7 });
        assert_eq!(ModelSource::from_args(Some("d".into()), false, 7).unwrap(), ModelSource::Dir("d".into()));
        assert!(ModelSource::from_args(Some("d".into()), true, 7).is_err());
        assert!(ModelSource::from_args(None, false, 7).unwrap_err().to_string().contains("--synthetic"));
    }

    #[test]
    fn machine_lines_have_no_spaces_in_values() {
        let l = machine_line("bench-t3", &[("batch", "4".into()), ("error", "out of memory".into())]);
        assert_eq!(l, "bench-t3 batch=4 error=out_of_memory");
    }

    #[test]
    fn the_kv_bytes_of_a_step_follow_rows_and_length() {
        let cfg = T3Config::default();
        let dev = Device::cpu();
        // f32 on Cpu: 2 (K, V) × 30 layers × 1024 × 4 bytes per position and row
        assert_eq!(t3_step_kv_bytes(&cfg, &dev, 2, 100.0), 2.0 * 100.0 * (2 * 30 * 1024 * 4) as f64);
        // cpu-bf16 keeps a bf16 cache: half the bytes
        let bf = Device::cpu_bf16_weights();
        assert_eq!(t3_step_kv_bytes(&cfg, &bf, 2, 100.0), 2.0 * 100.0 * (2 * 30 * 1024 * 2) as f64);
    }
}
