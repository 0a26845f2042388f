//! What several test files of tts-engine share: the fixtures, a tiny model directory assembled from
//! them, and its voice.
#![allow(dead_code)] // each test file uses a part

pub mod spawned;

use std::path::{Path, PathBuf};

use tts_engine::voice::Conditionals;
use tts_kernels::testing::fresh_seed;
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// A fresh empty directory under the system's temporary folder (`tag` and a fresh seed in its name),
/// removed with everything in it when the test process exits, whether its tests passed or failed
/// (not when it is killed).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tts-{tag}-{}-{}", std::process::id(), fresh_seed()));
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(dir.clone());
    dir
}

/// The scratch directories of this process, removed by [`remove_scratch`] at exit.
static SCRATCH: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" {
    /// C's `atexit`: the test harness leaves through `exit`, which runs it (so do the statics that
    /// hold scratch models for a whole test binary).
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn remove_scratch() {
    let dirs = std::mem::take(&mut *SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn remove_at_exit(dir: PathBuf) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: `remove_scratch` is a plain function that neither unwinds nor calls `exit`.
    REGISTER.call_once(|| assert_eq!(unsafe { atexit(remove_scratch) }, 0, "atexit"));
    SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(dir);
}

/// A model directory with both models (T3 of t3_decode_teacher_forced_a, S3Gen of s3gen_wav_a)
/// and one config.json holding both sets of keys.
pub fn tiny_model_dir() -> PathBuf {
    let dir = scratch_dir("model");
    let (t3, s3) = (fixture("t3_decode_teacher_forced_a"), fixture("s3gen_wav_a"));
    std::fs::copy(t3.join("t3_cfg.safetensors"), dir.join("t3_cfg.safetensors")).unwrap();
    std::fs::copy(s3.join("s3gen.safetensors"), dir.join("s3gen.safetensors")).unwrap();
    let read = |p: &Path| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap()
    };
    let mut cfg = read(&t3);
    for (k, v) in read(&s3) {
        cfg.entry(k).or_insert(v);
    }
    std::fs::write(dir.join("config.json"), serde_json::Value::Object(cfg).to_string()).unwrap();
    dir
}

/// The voice of [`tiny_model_dir`]'s models: the T3 half of the T3 fixture's, the S3Gen half of the
/// S3Gen fixture's.
pub fn tiny_voice() -> Conditionals {
    let t3 = Conditionals::load(&fixture("t3_decode_teacher_forced_a").join("conds.pt")).unwrap();
    let s3 = Conditionals::load(&fixture("s3gen_wav_a").join("conds.pt")).unwrap();
    Conditionals { t3: t3.t3, s3gen: s3.s3gen }
}

/// T3 at small widths with the real vocabularies and special tokens.
pub fn small_t3() -> T3Config {
    T3Config {
        hidden_size: 128,
        intermediate_size: 192,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        head_dim: 64,
        ..T3Config::default()
    }
}

/// S3Gen at small widths with the real speech-token vocabulary.
pub fn small_s3gen() -> S3GenConfig {
    S3GenConfig {
        spk_embed_dim: 192,
        encoder_output_size: 64,
        encoder_attention_heads: 2,
        encoder_linear_units: 128,
        encoder_num_blocks: 1,
        encoder_num_up_blocks: 1,
        decoder_channels: 32,
        decoder_num_heads: 2,
        decoder_attention_head_dim: 16,
        decoder_n_blocks: 1,
        decoder_num_mid_blocks: 1,
        hift_base_channels: 32,
        f0_cond_channels: 32,
        ..S3GenConfig::default()
    }
}

/// A model directory that clones voices: a synthetic T3 of [`small_t3`] (the real speech vocabulary,
/// which the tokenizer's codes need; written as `t3_cfg.safetensors` from the synthetic manifest),
/// S3Gen with every part from `voice_conversion_a` (flow, HiFT, tokenizer, CAMPPlus), the
/// VoiceEncoder of a `prepare_conditionals` case, `tokenizer.json` of `text_a` and a built-in
/// `conds.pt`; one config.json with every component's keys.
pub fn clone_model_dir() -> PathBuf {
    let dir = scratch_dir("clone-model");
    let t3 = small_t3();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = tts_t3::synthetic::manifest(&t3)
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.values(7).iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("t3_cfg.safetensors")).unwrap();
    let (vc, pc) = (fixture("voice_conversion_a"), fixture("prepare_conditionals_8k_mono_pcm16_14s"));
    let tok = fixture("s3_tokenizer_a"); // its conds.pt fits these dimensions
    for (from, name) in [(&vc, "s3gen.safetensors"), (&tok, "conds.pt"), (&pc, "ve.safetensors")] {
        std::fs::copy(from.join(name), dir.join(name)).unwrap();
    }
    std::fs::copy(fixture("text_a").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let read = |p: &Path| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap()
    };
    let mut cfg = serde_json::to_value(&t3).unwrap().as_object().unwrap().clone();
    cfg.extend(read(&vc));
    cfg.insert("ve_hidden_size".into(), read(&pc)["ve_hidden_size"].clone());
    std::fs::write(dir.join("config.json"), serde_json::Value::Object(cfg).to_string()).unwrap();
    dir
}

/// A speech-like test signal (a gliding harmonic tone with a pause and a little noise), `seconds`
/// at `rate`, written as a WAV of `channels` channels in `format`.
pub fn write_speechlike_wav(path: &Path, seconds: f64, rate: u32, channels: u16, bits: u16, float: bool, seed: u64) {
    let n = (seconds * rate as f64) as usize;
    let mut x = seed | 1;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f64 / (1u64 << 24) as f64 - 0.5
    };
    let mut phase = 0.0f64;
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
        phase += 2.0 * std::f64::consts::PI * f0 / rate as f64;
        let env = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * t / seconds).cos());
        let pause = if (t / seconds - 0.5).abs() < 0.05 { 0.1 } else { 1.0 };
        let mut v: f64 = [1.0, 0.5, 0.35, 0.2].iter().enumerate().map(|(k, a)| a * ((k + 1) as f64 * phase).sin()).sum();
        v = 0.25 * v * env * pause + 0.01 * noise();
        for c in 0..channels {
            let s = v * (1.0 - 0.2 * c as f64);
            if float {
                w.write_sample(s as f32).unwrap();
            } else {
                let max = ((1i64 << (bits - 1)) - 1) as f64;
                w.write_sample((s * max).round() as i32).unwrap();
            }
        }
    }
    w.finalize().unwrap();
}

/// The fixture model that speaks text end to end (T3, S3Gen, `tokenizer.json`, the built-in
/// `conds.pt`, `config.json`; no `ve.safetensors`): at most 30 text and 30 speech tokens.
pub const GENERATE_FIXTURE: &str = "tts_generate_a";

/// The files of [`GENERATE_FIXTURE`].
pub const GENERATE_FILES: [&str; 5] = ["t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt", "config.json"];

/// A scratch copy of [`GENERATE_FIXTURE`]'s model files (tests write next to it, never next to the
/// fixture).
pub fn generate_model_dir() -> PathBuf {
    let dir = scratch_dir("generate-model");
    for f in GENERATE_FILES {
        std::fs::copy(fixture(GENERATE_FIXTURE).join(f), dir.join(f)).unwrap();
    }
    dir
}

/// The `tts` binary run hermetically: offline (`HF_HUB_OFFLINE=1`), with `hf_cache` as its Hugging
/// Face cache and home (no token file of the user's is read) and `hf_cache/voices` as the server's
/// voice directory, and every other Hub setting of the environment removed.
pub fn tts_command(hf_cache: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tts"));
    for var in
        ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"]
    {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_OFFLINE", "1").env("HF_HUB_CACHE", hf_cache).env("HF_HOME", hf_cache);
    // `tts serve` keeps uploaded voices there (not in the user's data directory)
    cmd.env("TTS_VOICES_DIR", hf_cache.join("voices"));
    cmd
}

/// What one run of `tts` did.
pub struct TtsRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl TtsRun {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` with `stdin` (or an empty stdin), from a thread so that a process that stops reading
/// early (a length limit) does not block the test; a write it refuses (a closed pipe) is ignored.
pub fn run_tts(mut cmd: std::process::Command, stdin: Option<Vec<u8>>) -> TtsRun {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        if let Some(bytes) = stdin {
            let _ = pipe.write_all(&bytes);
        }
        // dropped: end of input
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    TtsRun { code: out.status.code(), stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// Every path under `dir` (files and folders, recursively), relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
