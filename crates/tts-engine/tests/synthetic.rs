//! The synthetic engine and the benches built on it: end to end on small dimensions (same code as
//! the full size, whose activation ranges tts-t3 and tts-s3gen check), the T3 bench's figures and
//! batch limits (up to 128 requests on Emu: 256 rows through the unfused decode stack), and the
//! command line's labelling and machine-readable lines.
mod common;

use common::{small_s3gen, small_t3};
use std::process::Command;

use tts_engine::bench::{self, ModelSource};
use tts_engine::speak::{Engine, SpeakOptions, write_wav_with_comment};
use tts_kernels::Device;
use tts_kernels::testing::fresh_seed;
use tts_s3gen::S3GenConfig;
use tts_t3::{Request, SamplerSettings, T3, T3Config, Voice};

#[test]
fn the_synthetic_engine_speaks_text_to_a_labelled_wav() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let engine = Engine::synthetic(small_t3(), small_s3gen(), seed, &Device::cpu()).unwrap();
    assert_eq!(engine.synthetic_seed, Some(seed));
    let opts = SpeakOptions { max_new_tokens: 12, cfm_steps: 2, seed, ..Default::default() };
    let (spoken, timings) = engine.speak_timed(&["Hello there.", "A second text, a little longer."], None, &opts).unwrap();
    assert_eq!(spoken.len(), 2);
    assert!(timings.t3_seconds > 0.0 && timings.s3gen_seconds > 0.0, "{timings:?}");
    for s in &spoken {
        // random weights: no stop token, so 12 tokens less those the flow does not know (≥ 6561)
        assert!(!s.speech_tokens.is_empty() && s.speech_tokens.len() <= 12, "{:?}", s.speech_tokens);
        assert!(!s.wav.is_empty() && s.wav.iter().all(|v| v.is_finite() && v.abs() <= 0.99));
        assert!(s.wav.iter().any(|&v| v != 0.0), "silence");
    }
    // the WAV says what it is, and readers that skip LIST chunks read the samples back
    let dir = std::env::temp_dir().join(format!("tts-synthetic-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.wav");
    let comment = tts_engine::synthetic::warning(seed);
    write_wav_with_comment(&path, &spoken[0].wav, Some(&comment)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize, bytes.len() - 8, "RIFF size");
    let at = bytes.windows(4).position(|w| w == b"LIST").expect("a LIST chunk");
    assert_eq!(&bytes[at + 8..at + 16], b"INFOICMT");
    assert!(String::from_utf8_lossy(&bytes[at..]).contains("noise, not speech"));
    let back: Vec<f32> = hound::WavReader::open(&path).unwrap().samples::<f32>().map(|s| s.unwrap()).collect();
    assert_eq!(back, spoken[0].wav);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A short request for a small T3 (5 text tokens, 10 prompt tokens).
fn short_request(cfg: &T3Config, seed: u64) -> Request {
    let v = tts_engine::synthetic::voice(seed, cfg, &S3GenConfig::default());
    Request {
        text_tokens: vec![cfg.start_text_token, 11, 12, 13, cfg.stop_text_token],
        voice: Voice { speaker_emb: v.t3.speaker_emb, prompt_tokens: v.t3.cond_prompt_speech_tokens[..10].to_vec() },
        exaggeration: 0.5,
        settings: SamplerSettings::default(),
    }
}

fn check_speed(model: &T3, s: &bench::T3Speed, batch: usize, tokens: usize) {
    assert_eq!(s.batch, batch);
    // the synthetic T3 never samples its stop token: every request makes `tokens` tokens
    let steps = s.decode_steps;
    assert_eq!((s.tokens_per_request, steps), (tokens as f64, tokens - 1), "{s:?}");
    assert_eq!(s.timed_steps, steps - bench::WARMUP_STEPS, "{s:?}");
    assert!(s.ms_per_step > 0.0 && s.prefill_seconds > 0.0 && s.seconds > s.prefill_seconds, "{s:?}");
    assert_eq!(s.weight_bytes, bench::t3_step_weight_bytes(model));
    // the timed steps attend over l0 + 3 ..= l0 + steps positions (l0 = 34 + 5 + 2)
    let mean_len = 41.0 + (3 + steps) as f64 / 2.0;
    assert_eq!(s.kv_bytes, bench::t3_step_kv_bytes(model.config(), model.device(), 2 * batch, mean_len));
    let want_gbps = (s.weight_bytes as f64 + s.kv_bytes) / (s.ms_per_step / 1e3) / 1e9;
    assert!((s.gbps / want_gbps - 1.0).abs() < 1e-9, "{s:?}");
}

#[test]
fn the_t3_bench_measures_steady_decode_steps() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let model = T3::synthetic(small_t3(), seed, &Device::cpu()).unwrap();
    // the weights a step reads: 2 layers of norms and projections and the head, f32 on Cpu
    let (d, i, v) = (128u64, 192u64, 8194u64);
    assert_eq!(bench::t3_step_weight_bytes(&model), 4 * (2 * (2 * d + 4 * d * d + 3 * i * d) + d + v * d));
    let base = short_request(model.config(), seed);
    for batch in [1, 3, 9] {
        let s = bench::bench_t3_batch(&model, &base, batch, 7).unwrap();
        check_speed(&model, &s, batch, 7);
    }
    let e = bench::bench_t3_batch(&model, &base, 1, bench::MIN_T3_TOKENS - 1).unwrap_err().to_string();
    assert!(e.contains("at least"), "{e}");
    assert!(bench::bench_t3_batch(&model, &base, 0, 7).is_err());
    // the synthetic source's bench request: the synthetic voice, 60 text tokens between SOT and EOT
    let r = bench::t3_bench_request(&ModelSource::Synthetic { seed }, &model, 9).unwrap();
    assert_eq!(r.voice.prompt_tokens.len(), 150);
    assert_eq!((r.text_tokens[0], *r.text_tokens.last().unwrap()), (255, 0));
    assert_eq!(r.settings.max_new_tokens, 9);
}

/// Batches up to 128 requests go through the launch code a GPU runs: 256 rows through the
/// unfused stack, the sampler and the state advance, captured and replayed.
#[cfg(feature = "emu")]
#[test]
fn the_t3_bench_runs_batch_128_on_emu() {
    let dev = Device::emu(tts_kernels::EmuOptions::default()).unwrap();
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let cfg = small_t3();
    let model = T3::synthetic(cfg, seed, &dev).unwrap();
    let base = short_request(model.config(), seed);
    for batch in [1, 128] {
        let t = std::time::Instant::now();
        let s = bench::bench_t3_batch(&model, &base, batch, 5).unwrap();
        eprintln!("batch {batch}: {:.1} s", t.elapsed().as_secs_f64());
        check_speed(&model, &s, batch, 5);
    }
}

#[test]
fn the_copy_bandwidth_is_measured() {
    let c = bench::copy_bandwidth(&Device::cpu()).unwrap();
    assert!(c.gbps > 0.1 && c.gbps.is_finite() && c.bytes == 256 << 20, "{c:?}");
}

/// Runs `tts` offline with an empty Hugging Face cache of its own (no test reaches the network).
fn tts(args: &[&str]) -> (bool, String, String) {
    let cache = std::env::temp_dir().join(format!("tts-empty-hf-cache-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tts"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The full-size synthetic S3Gen through the command line: labelled on stderr and stdout, one
/// machine-readable line per batch.
#[test]
fn bench_s3gen_synthetic_is_labelled_and_prints_machine_lines() {
    let (ok, out, err) = tts(&[
        "bench-s3gen",
        "--synthetic",
        "--synthetic-seed",
        "5",
        "--backend",
        "cpu",
        "--batch",
        "1,2",
        "--tokens",
        "3",
        "--steps",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("WARNING: SYNTHETIC MODEL (--synthetic, seed 5)") && err.contains("noise, not speech"), "{err}");
    assert!(out.starts_with("# SYNTHETIC MODEL (--synthetic, seed 5)"), "{out}");
    for b in [1, 2] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("bench-s3gen backend=cpu batch={b} ")))
            .unwrap_or_else(|| panic!("{out}"));
        let field =
            |k: &str| line.split(' ').find_map(|f| f.strip_prefix(&format!("{k}="))).unwrap_or_else(|| panic!("{k}: {line}"));
        assert_eq!((field("tokens"), field("steps"), field("synthetic")), ("3", "1", "1"));
        let rtf: f64 = field("rtf").parse().unwrap();
        let audio: f64 = field("audio_s_per_request").parse().unwrap();
        assert!(rtf > 0.0 && (audio - 0.12).abs() < 1e-9, "{line}");
    }
}

#[test]
fn bad_model_arguments_fail_before_any_work() {
    for (args, want) in [
        (vec!["bench-t3", "--synthetic-seed", "3", "--model-dir", "x"], "--synthetic-seed needs --synthetic"),
        (vec!["bench-t3", "--synthetic", "--model-dir", "x"], "cannot be used with"),
        // no model named: the default one, which an empty cache offline does not have
        (
            vec!["bench-s3gen"],
            "ResembleAI/chatterbox@main: t3_cfg.safetensors, s3gen.safetensors, ve.safetensors, tokenizer.json and conds.pt not in the Hugging Face cache",
        ),
        (vec!["bench-t3", "--synthetic", "--tokens", "4"], "at least 5"),
        (vec!["speak", "--synthetic", "--text", "hi", "--out", "/nonexistent-folder-of-tts/x.wav"], "no folder"),
    ] {
        let t = std::time::Instant::now();
        let (ok, out, err) = tts(&args);
        assert!(!ok && err.contains(want), "{args:?}: {out}\n{err}");
        assert!(t.elapsed().as_secs_f64() < 5.0, "{args:?} loaded a model before failing");
    }
}
