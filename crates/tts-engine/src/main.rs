//! `tts`: the command-line tool of the Chatterbox TTS engine.
use std::process::ExitCode;

use std::time::Instant;

use clap::{Parser, Subcommand};
use tts_engine::bench::{self, ModelSource, backend_label, machine_line};
use tts_engine::speak::SpeakOptions;
use tts_engine::{BackendKind, ErrorKind};
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

#[derive(Parser)]
#[command(name = "tts", version, about = "Chatterbox TTS inference engine (Rust + CUDA)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows which backend would run and why, and checks the core ops on it against the Cpu reference.
    SelfCheck {
        /// auto (Cuda if usable, else Cpu), cpu, cuda, cuda:N, or emu (builds with the `emu` feature).
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Seed of the random inputs (default: fresh).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Speaks texts to 24 kHz WAV files with the model in a directory (T3 + S3Gen, batched).
    Speak {
        #[command(flatten)]
        model: ModelArgs,
        /// A text to speak; repeat for a batch.
        #[arg(long, required = true)]
        text: Vec<String>,
        /// Output WAV; with several texts, `NAME_0.wav`, `NAME_1.wav`, ...
        #[arg(long, default_value = "out.wav")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
        #[arg(long, default_value_t = SpeakOptions::default().seed)]
        seed: u64,
        #[arg(long, default_value_t = SpeakOptions::default().exaggeration)]
        exaggeration: f32,
        #[arg(long, default_value_t = SpeakOptions::default().cfg_weight)]
        cfg_weight: f32,
        #[arg(long, default_value_t = SpeakOptions::default().temperature)]
        temperature: f32,
        /// Speech tokens at most per text (25 per second) [default: 1000; with --synthetic, the
        /// length a real voice would take for the longest text, ~15 characters per second].
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// The voice: a reference recording (WAV, FLAC, MP3; its first 10 s are used), a saved voice
        /// (`tts voice create`) or a `conds.pt` [default: the model's built-in voice].
        #[arg(long)]
        voice: Option<std::path::PathBuf>,
    },
    /// Voices: compute one from a recording and save it, to speak with it later.
    Voice {
        #[command(subcommand)]
        command: VoiceCommand,
    },
    /// Voice conversion: re-speaks a recording in another voice (S3 tokens of the source → S3Gen with
    /// the target voice), to a 24 kHz WAV.
    Convert {
        #[command(flatten)]
        model: ModelArgs,
        /// The speech to convert (WAV, FLAC, MP3).
        #[arg(long)]
        source: std::path::PathBuf,
        /// The target voice: a recording, a saved voice or a `conds.pt` [default: the built-in voice].
        #[arg(long)]
        voice: Option<std::path::PathBuf>,
        /// Output WAV.
        #[arg(long, short = 'o', default_value = "out.wav")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
        #[arg(long, default_value_t = SpeakOptions::default().seed)]
        seed: u64,
    },
    /// Measures T3 decode speed per batch size: ms per step, tokens/s, and the GB/s of the bytes a
    /// step reads (weights + KV cache) against the device's copy bandwidth.
    BenchT3 {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Comma-separated batch sizes (requests; each is two CFG rows).
        #[arg(long, default_value = "1", value_delimiter = ',')]
        batch: Vec<usize>,
        /// New tokens per request (at least 5: 2 warm-up steps, then the timed ones).
        #[arg(long, default_value_t = 50)]
        tokens: usize,
    },
    /// Measures voice cloning: the seconds to compute a voice from a recording
    /// (`prepare_conditionals`: decoding, resampling, prompt mel, VoiceEncoder, S3Tokenizer twice,
    /// CAMPPlus), median of RUNS after a warm-up, on the Cpu. With --synthetic, the full-size models
    /// at random weights (the work does not depend on the values).
    BenchVoice {
        #[command(flatten)]
        model: ModelArgs,
        /// The recording (WAV, FLAC, MP3).
        #[arg(long)]
        input: std::path::PathBuf,
        /// Timed runs (after one warm-up).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Measures S3Gen synthesis speed (seconds per second of audio) per batch size.
    BenchS3gen {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Comma-separated batch sizes (requests).
        #[arg(long, default_value = "1", value_delimiter = ',')]
        batch: Vec<usize>,
        /// Speech tokens per request (25 per second of audio).
        #[arg(long, default_value_t = 250)]
        tokens: usize,
        /// Euler steps of the flow matching.
        #[arg(long, default_value_t = tts_s3gen::DEFAULT_CFM_STEPS)]
        steps: usize,
    },
}

#[derive(Subcommand)]
enum VoiceCommand {
    /// Computes a voice from a reference recording, as the reference's `prepare_conditionals` does,
    /// and saves it as a safetensors file (layout: docs/voices.md).
    Create {
        /// The reference recording (WAV, FLAC, MP3); 6–10 s of clean speech is best.
        input: std::path::PathBuf,
        /// The model directory whose VoiceEncoder, S3Tokenizer and CAMPPlus compute it
        /// (ve.safetensors, s3gen.safetensors; t3_cfg.safetensors for its prompt length).
        #[arg(long)]
        model_dir: std::path::PathBuf,
        /// Where to save the voice.
        #[arg(long, short = 'o', default_value = "voice.safetensors")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
    },
}

/// Where the models come from: a directory of the official files, or `--synthetic`.
#[derive(clap::Args)]
struct ModelArgs {
    /// Directory with the official Chatterbox files the command needs (t3_cfg.safetensors,
    /// s3gen.safetensors, tokenizer.json, conds.pt), config.json for non-default dimensions, and
    /// for the benches a reference case's inputs.safetensors when present.
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    model_dir: Option<std::path::PathBuf>,
    /// Random weights at the real dimensions, built in memory from a seed (no files), with a
    /// synthetic voice and a character tokenizer: for speed measurements; THE OUTPUT IS NOISE.
    #[arg(long)]
    synthetic: bool,
    /// Seed of the synthetic weights and voice [default: 1].
    #[arg(long)]
    synthetic_seed: Option<u64>,
}

impl ModelArgs {
    fn source(self) -> tts_engine::Result<ModelSource> {
        if self.synthetic_seed.is_some() && !self.synthetic {
            return Err(tts_engine::Error::Usage("--synthetic-seed needs --synthetic"));
        }
        let seed = self.synthetic_seed.unwrap_or(tts_engine::synthetic::DEFAULT_SEED);
        ModelSource::from_args(self.model_dir, self.synthetic, seed)
    }
}

/// Exit codes: 0 success; 1 a failed check or an internal error; 2 bad input (arguments, settings,
/// text, voice); 3 a bad model directory or file; 4 a resource limit (too long, out of memory).
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            // the causes the message does not already include
            let mut shown = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let msg = c.to_string();
                if !shown.contains(&msg) {
                    eprintln!("  caused by: {msg}");
                    shown = msg;
                }
                cause = c.source();
            }
            ExitCode::from(match e.kind() {
                ErrorKind::BadInput => 2,
                ErrorKind::BadModel => 3,
                ErrorKind::ResourceLimit => 4,
                ErrorKind::Internal => 1,
            })
        }
    }
}

/// An input file that must exist (checked before any model is loaded).
fn check_input_file(flag: &'static str, path: &std::path::Path) -> tts_engine::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(tts_engine::Error::Setting { field: flag, value: path.display().to_string(), expected: "an existing file".into() })
}

/// An output file whose folder must exist (checked before any work).
fn check_output_folder(flag: &'static str, out: &std::path::Path) -> tts_engine::Result<()> {
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if folder.is_dir() {
        return Ok(());
    }
    Err(tts_engine::Error::Setting {
        field: flag,
        value: out.display().to_string(),
        expected: format!("a file in an existing folder (there is no folder {})", folder.display()),
    })
}

/// A list of batch sizes, each at least 1.
fn check_batches(batch: &[usize]) -> tts_engine::Result<()> {
    if batch.contains(&0) {
        return Err(tts_engine::Error::Setting { field: "--batch", value: "0".into(), expected: "at least 1".into() });
    }
    Ok(())
}

fn run(cmd: Command) -> tts_engine::Result<bool> {
    match cmd {
        Command::SelfCheck { backend, seed } => {
            let (dev, _) = tts_engine::select_device(&backend)?;
            println!("backend: {}", dev.describe());
            let libs = tts_engine::cuda_library_report();
            if libs.is_empty() {
                println!("CUDA libraries loaded: none");
            }
            for l in libs {
                println!("CUDA library: {l}");
            }
            let (seed, checks) = tts_engine::selfcheck::run(&dev, seed)?;
            println!("inputs: seed {seed}");
            println!("{:<12} {:<22} {:>11} {:>11} {:>9}  result", "op", "shape", "max abs", "max rel", "ms");
            let mut all_ok = true;
            for c in &checks {
                all_ok &= c.ok;
                println!(
                    "{:<12} {:<22} {:>11.3e} {:>11.3e} {:>9.3}  {}",
                    c.op,
                    c.shape,
                    c.max_abs,
                    c.max_rel,
                    c.millis,
                    if c.ok { "ok" } else { "MISMATCH" }
                );
            }
            println!("{}", if all_ok { "self-check passed" } else { "self-check FAILED" });
            Ok(all_ok)
        }
        Command::Speak { model, text, out, backend, seed, exaggeration, cfg_weight, temperature, max_new_tokens, voice } => {
            let source = model.source()?;
            // every setting is checked before the device is opened and the model loaded
            let mut opts = SpeakOptions {
                seed,
                exaggeration,
                cfg_weight,
                temperature,
                max_new_tokens: max_new_tokens.unwrap_or(tts_t3::DEFAULT_MAX_NEW_TOKENS),
                ..Default::default()
            };
            opts.validate()?;
            if let Some(v) = &voice {
                check_input_file("--voice", v)?;
            }
            if let Some(index) = text.iter().position(|t| t.trim().is_empty()) {
                return Err(tts_engine::Error::Text { index, problem: "empty (or only whitespace)" });
            }
            // a missing output folder fails now, not after minutes of synthesis
            let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if !folder.is_dir() {
                return Err(tts_engine::Error::Setting {
                    field: "--out",
                    value: out.display().to_string(),
                    expected: format!("a file in an existing folder (there is no folder {})", folder.display()),
                });
            }
            let dev = open_device(&backend, &source)?;
            let t = Instant::now();
            let engine = match &source {
                ModelSource::Dir(d) => tts_engine::speak::Engine::load(d, &dev)?,
                ModelSource::Synthetic { seed } => {
                    tts_engine::speak::Engine::synthetic(T3Config::default(), S3GenConfig::default(), *seed, &dev)?
                }
            };
            let load_s = t.elapsed().as_secs_f64();
            println!("model: {} (loaded in {load_s:.2} s)", source.describe());
            // without --max-new-tokens: DEFAULT_MAX_NEW_TOKENS (or, synthetic, the length of the longest text), at most
            // what the model's speech positions allow
            let model_max = engine.t3.config().max_speech_tokens;
            opts.max_new_tokens = match (max_new_tokens, &source) {
                (Some(n), _) => n,
                (None, ModelSource::Synthetic { .. }) => {
                    let n = text.iter().map(|t| tts_engine::synthetic::speech_tokens_for(t)).max().unwrap_or(25).min(model_max);
                    println!(
                        "note: the synthetic T3 never samples its stop token: each text runs to {n} speech tokens \
                         (the longest text at ~15 characters per second; --max-new-tokens overrides)"
                    );
                    n
                }
                (None, ModelSource::Dir(_)) => tts_t3::DEFAULT_MAX_NEW_TOKENS.min(model_max),
            };
            let voice = match &voice {
                Some(v) => {
                    let t = Instant::now();
                    let voice = engine.voice_from_file(v)?;
                    println!("voice: {} ({:.2} s)", v.display(), t.elapsed().as_secs_f64());
                    Some(voice)
                }
                None => None,
            };
            let texts: Vec<&str> = text.iter().map(|t| t.as_str()).collect();
            let t = Instant::now();
            let (spoken, timings) = engine.speak_timed(&texts, voice.as_deref(), &opts)?;
            let secs = t.elapsed().as_secs_f64();
            let comment = source.synthetic_seed().map(tts_engine::synthetic::warning);
            for (i, s) in spoken.iter().enumerate() {
                let path = if spoken.len() == 1 {
                    out.clone()
                } else {
                    let stem = out.file_stem().map_or("out".into(), |s| s.to_string_lossy().into_owned());
                    out.with_file_name(format!("{stem}_{i}.wav"))
                };
                tts_engine::speak::write_wav_with_comment(&path, &s.wav, comment.as_deref())?;
                println!(
                    "{}: {} speech tokens, {:.2} s of audio{}",
                    path.display(),
                    s.speech_tokens.len(),
                    s.wav.len() as f64 / tts_s3gen::SAMPLE_RATE as f64,
                    if comment.is_some() { " (synthetic: noise, not speech)" } else { "" }
                );
            }
            let audio: f64 = spoken.iter().map(|s| s.wav.len() as f64).sum::<f64>() / tts_s3gen::SAMPLE_RATE as f64;
            println!("{} text(s) in {secs:.2} s", spoken.len());
            println!(
                "{}",
                machine_line(
                    "speak",
                    &[
                        ("backend", backend_label(&dev).into()),
                        ("texts", spoken.len().to_string()),
                        ("speech_tokens", spoken.iter().map(|s| s.speech_tokens.len()).sum::<usize>().to_string()),
                        ("audio_s", format!("{audio:.3}")),
                        ("wall_s", format!("{secs:.3}")),
                        ("t3_s", format!("{:.3}", timings.t3_seconds)),
                        ("s3gen_s", format!("{:.3}", timings.s3gen_seconds)),
                        ("rtf", format!("{:.4}", secs / audio.max(1e-9))),
                        ("load_s", format!("{load_s:.2}")),
                        ("synthetic", synthetic_flag(&source)),
                    ]
                )
            );
            Ok(true)
        }
        Command::Voice { command: VoiceCommand::Create { input, model_dir, out, backend } } => {
            check_input_file("INPUT", &input)?;
            check_output_folder("--out", &out)?;
            let dev = tts_engine::select_device(&backend)?.0;
            let engine = tts_engine::speak::Engine::load(&model_dir, &dev)?;
            let t = Instant::now();
            let bytes = std::fs::read(&input)
                .map_err(|e| tts_engine::Error::Voice { path: input.clone(), msg: format!("cannot read: {e}") })?;
            let (voice, meta) = engine.voice_from_bytes(&bytes, &input.display().to_string())?;
            let secs = t.elapsed().as_secs_f64();
            voice.save(&out, &meta)?;
            println!(
                "{}: voice of {} ({} T3 prompt tokens, {} S3Gen prompt tokens, {} prompt mel frames) in {secs:.2} s",
                out.display(),
                input.display(),
                voice.t3.cond_prompt_speech_tokens.len(),
                voice.s3gen.prompt_token_len,
                voice.s3gen.prompt_feat_frames
            );
            for (k, v) in meta.iter() {
                println!("  {k}: {v}");
            }
            Ok(true)
        }
        Command::Convert { model, source, voice, out, backend, seed } => {
            let model_source = model.source()?;
            check_input_file("--source", &source)?;
            if let Some(v) = &voice {
                check_input_file("--voice", v)?;
            }
            check_output_folder("--out", &out)?;
            let ModelSource::Dir(dir) = &model_source else {
                return Err(tts_engine::Error::NoCloning);
            };
            let dev = open_device(&backend, &model_source)?;
            let engine = tts_engine::speak::Engine::load(dir, &dev)?;
            let target = match &voice {
                Some(v) => engine.voice_from_file(v)?,
                None => std::sync::Arc::new(engine.voice.clone().ok_or(tts_engine::Error::NoVoice)?),
            };
            let src = tts_voice::audio::load(&source)?;
            tts_voice::prepare::check_duration(&src, &source.display().to_string())?;
            let t = Instant::now();
            let wav = engine.convert(&src, &target, seed, tts_s3gen::DEFAULT_CFM_STEPS)?;
            let secs = t.elapsed().as_secs_f64();
            tts_engine::speak::write_wav(&out, &wav)?;
            println!(
                "{}: {:.2} s of audio from {} ({:.2} s) in {secs:.2} s",
                out.display(),
                wav.len() as f64 / tts_s3gen::SAMPLE_RATE as f64,
                source.display(),
                src.samples.len() as f64 / src.sample_rate as f64
            );
            Ok(true)
        }
        Command::BenchVoice { model, input, runs } => {
            let source = model.source()?;
            check_input_file("--input", &input)?;
            if runs == 0 {
                return Err(tts_engine::Error::Setting { field: "--runs", value: "0".into(), expected: "at least 1".into() });
            }
            let t = Instant::now();
            let models = match &source {
                ModelSource::Dir(d) => tts_voice::prepare::VoiceModels::load(d)?,
                ModelSource::Synthetic { seed } => tts_voice::prepare::VoiceModels::synthetic(*seed)?,
            };
            let load_s = t.elapsed().as_secs_f64();
            let bytes = std::fs::read(&input)
                .map_err(|e| tts_engine::Error::Voice { path: input.clone(), msg: format!("cannot read: {e}") })?;
            let name = input.display().to_string();
            let probe = tts_voice::audio::decode(&bytes, &name)?;
            let audio_s = probe.samples.len() as f64 / probe.sample_rate as f64;
            println!("model: {} (voice models loaded in {load_s:.2} s)", source.describe());
            println!("input: {name}: {audio_s:.2} s at {} Hz", probe.sample_rate);
            let mut times = Vec::with_capacity(runs);
            for i in 0..=runs {
                let t = Instant::now();
                let audio = tts_voice::audio::decode(&bytes, &name)?;
                let voice = models.prepare_conditionals(&audio, tts_t3::T3Config::default().speech_cond_prompt_len)?;
                let secs = t.elapsed().as_secs_f64();
                std::hint::black_box(voice);
                if i > 0 {
                    println!("run {i}: {secs:.3} s");
                    times.push(secs);
                }
            }
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            let median = if runs % 2 == 1 { sorted[runs / 2] } else { 0.5 * (sorted[runs / 2 - 1] + sorted[runs / 2]) };
            println!(
                "{}",
                machine_line(
                    "bench-voice",
                    &[
                        ("backend", "cpu".into()),
                        ("cpu", bench::cpu_features()),
                        ("threads", rayon::current_num_threads().to_string()),
                        ("audio_s", format!("{audio_s:.2}")),
                        ("runs", runs.to_string()),
                        ("min_s", format!("{:.4}", sorted[0])),
                        ("median_s", format!("{median:.4}")),
                        ("load_s", format!("{load_s:.2}")),
                        ("synthetic", synthetic_flag(&source)),
                    ]
                )
            );
            Ok(true)
        }
        Command::BenchT3 { model, backend, batch, tokens } => {
            let source = model.source()?;
            if tokens < bench::MIN_T3_TOKENS {
                return Err(tts_engine::Error::Setting {
                    field: "--tokens",
                    value: tokens.to_string(),
                    expected: format!("at least {} for the T3 bench", bench::MIN_T3_TOKENS),
                });
            }
            check_batches(&batch)?;
            let dev = open_device(&backend, &source)?;
            let label = backend_label(&dev);
            let t = Instant::now();
            let t3 = source.load_t3(&dev)?;
            let load_s = t.elapsed().as_secs_f64();
            let copy = bench::copy_bandwidth(&dev)?;
            let weights = bench::t3_step_weight_bytes(&t3);
            println!(
                "model: {} (T3 loaded in {load_s:.2} s; a decode step reads {:.3} GB of weights)",
                source.describe(),
                weights as f64 / 1e9
            );
            println!("copy bandwidth: {:.1} GB/s (read + write bytes; {}, {} MiB)", copy.gbps, copy.method, copy.bytes >> 20);
            println!(
                "{}",
                machine_line(
                    "bench-t3-setup",
                    &[
                        ("backend", label.into()),
                        ("load_s", format!("{load_s:.2}")),
                        ("weights_bytes", weights.to_string()),
                        ("copy_gbps", format!("{:.2}", copy.gbps)),
                        ("tokens", tokens.to_string()),
                        ("synthetic", synthetic_flag(&source)),
                    ]
                )
            );
            let base = bench::t3_bench_request(&source, &t3, tokens)?;
            println!(
                "{:>6} {:>10} {:>8} {:>10} {:>11} {:>10} {:>10} {:>9} {:>7}",
                "batch", "tok/req", "steps", "seconds", "ms/step", "tokens/s", "prefill s", "GB/s", "frac"
            );
            let mut all_ok = true;
            for &b in &batch {
                match bench::bench_t3_batch(&t3, &base, b, tokens) {
                    Ok(s) => {
                        let frac = s.gbps / copy.gbps;
                        println!(
                            "{:>6} {:>10.1} {:>8} {:>10.3} {:>11.2} {:>10.2} {:>10.3} {:>9.2} {:>7.3}",
                            s.batch,
                            s.tokens_per_request,
                            s.decode_steps,
                            s.seconds,
                            s.ms_per_step,
                            s.tokens_per_second,
                            s.prefill_seconds,
                            s.gbps,
                            frac
                        );
                        println!(
                            "{}",
                            machine_line(
                                "bench-t3",
                                &[
                                    ("backend", label.into()),
                                    ("batch", s.batch.to_string()),
                                    ("tokens_per_request", format!("{:.1}", s.tokens_per_request)),
                                    ("steps", s.decode_steps.to_string()),
                                    ("timed_steps", s.timed_steps.to_string()),
                                    ("prefill_s", format!("{:.3}", s.prefill_seconds)),
                                    ("ms_per_step", format!("{:.3}", s.ms_per_step)),
                                    ("tokens_per_s", format!("{:.2}", s.tokens_per_second)),
                                    ("decode_tokens_per_s", format!("{:.2}", s.decode_tokens_per_second)),
                                    ("weights_bytes", s.weight_bytes.to_string()),
                                    ("kv_bytes", format!("{:.0}", s.kv_bytes)),
                                    ("gbps", format!("{:.2}", s.gbps)),
                                    ("copy_gbps", format!("{:.2}", copy.gbps)),
                                    ("frac", format!("{frac:.3}")),
                                    ("synthetic", synthetic_flag(&source)),
                                ]
                            )
                        );
                    }
                    Err(e) => {
                        all_ok = false;
                        eprintln!("error: bench-t3 batch {b}: {e}");
                        println!(
                            "{}",
                            machine_line(
                                "bench-t3",
                                &[("backend", label.into()), ("batch", b.to_string()), ("error", e.to_string())]
                            )
                        );
                    }
                }
            }
            Ok(all_ok)
        }
        Command::BenchS3gen { model, backend, batch, tokens, steps } => {
            let source = model.source()?;
            check_batches(&batch)?;
            if tokens == 0 {
                return Err(tts_engine::Error::Setting { field: "--tokens", value: "0".into(), expected: "at least 1".into() });
            }
            let dev = open_device(&backend, &source)?;
            let label = backend_label(&dev);
            let t = Instant::now();
            let s3 = source.load_s3gen(&dev)?;
            let load_s = t.elapsed().as_secs_f64();
            println!("model: {} (S3Gen loaded in {load_s:.2} s)", source.describe());
            let inputs = bench::s3gen_bench_inputs(&source, &s3, tokens)?;
            if dev.kind() == BackendKind::Cuda {
                // the first synthesis on a GPU pays one-time costs (cuBLAS handles, algorithm choices)
                let warm = bench::S3GenInputs { speech: inputs.speech[..inputs.speech.len().min(25)].to_vec(), ..inputs.clone() };
                bench::bench_s3gen_batch(&s3, &warm, 1, 1)?;
            }
            println!("{:>6} {:>14} {:>10} {:>10} {:>16}", "batch", "audio s/req", "seconds", "rtf", "ms per audio s");
            let mut all_ok = true;
            for &b in &batch {
                match bench::bench_s3gen_batch(&s3, &inputs, b, steps) {
                    Ok(s) => {
                        println!(
                            "{:>6} {:>14.2} {:>10.3} {:>10.4} {:>16.1}",
                            s.batch,
                            s.audio_seconds,
                            s.seconds,
                            s.rtf,
                            s.rtf * 1e3
                        );
                        println!(
                            "{}",
                            machine_line(
                                "bench-s3gen",
                                &[
                                    ("backend", label.into()),
                                    ("batch", s.batch.to_string()),
                                    ("tokens", tokens.to_string()),
                                    ("steps", steps.to_string()),
                                    ("audio_s_per_request", format!("{:.3}", s.audio_seconds)),
                                    ("seconds", format!("{:.3}", s.seconds)),
                                    ("rtf", format!("{:.5}", s.rtf)),
                                    ("synthetic", synthetic_flag(&source)),
                                ]
                            )
                        );
                    }
                    Err(e) => {
                        all_ok = false;
                        eprintln!("error: bench-s3gen batch {b}: {e}");
                        println!(
                            "{}",
                            machine_line(
                                "bench-s3gen",
                                &[("backend", label.into()), ("batch", b.to_string()), ("error", e.to_string())]
                            )
                        );
                    }
                }
            }
            Ok(all_ok)
        }
    }
}

/// Opens the device named by `backend` and prints it (and, for the synthetic model, the warning
/// that the output is noise, to stderr and stdout).
fn open_device(backend: &str, source: &ModelSource) -> tts_engine::Result<tts_engine::Device> {
    if let Some(seed) = source.synthetic_seed() {
        let w = tts_engine::synthetic::warning(seed);
        eprintln!("WARNING: {w}");
        println!("# {w}");
    }
    let (dev, note) = tts_engine::select_device(backend)?;
    println!("backend: {}", dev.describe());
    if let Some(n) = note {
        println!("note: {n}");
    }
    Ok(dev)
}

fn synthetic_flag(source: &ModelSource) -> String {
    if source.synthetic_seed().is_some() { "1" } else { "0" }.into()
}
