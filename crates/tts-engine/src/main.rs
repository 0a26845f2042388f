//! `tts`: the command-line tool of the Chatterbox TTS engine.
use std::process::ExitCode;

use std::time::Instant;

use clap::{Parser, Subcommand};

mod cli;

use cli::progress::Bars;
use cli::{ModelArgs, Say, check_input_file, check_output_folder, open_device, synthetic_flag};
use tts_engine::bench::{self, ModelSource, backend_label, machine_line};
use tts_engine::speak::SpeakOptions;
use tts_engine::{BackendKind, ErrorKind};

/// Messages of the commands other than `speak`: on stdout.
const SAY: Say = Say { quiet: false, to_stderr: false };

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
    /// Speaks texts (arguments, files or stdin) to audio files, batched; long texts are split and
    /// joined; `-o -` streams to stdout as the audio is produced.
    Speak(cli::speak::SpeakArgs),
    /// Serves speech over HTTP: OpenAI's POST /v1/audio/speech (WAV or PCM, whole or streamed),
    /// /health, /ready, /metrics; requests are batched on one engine thread behind a bounded queue
    /// (full: 429). Listens on loopback unless --host says otherwise; SIGTERM/SIGINT drain and stop.
    #[cfg(feature = "serve")]
    Serve(cli::serve::ServeArgs),
    /// Shows what would run: the backend and device, the CPU's instruction paths, the model (its id,
    /// revision and commit, dimensions and files) and the kernel cache. Reads the model's configs,
    /// not its weights (a Hub model is downloaded if the cache lacks it).
    Info {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "auto")]
        backend: String,
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
    /// Measures the machine's limits: the multiply-add peak of each vector instruction path the CPU
    /// supports (AVX2 FMA, AVX-512 FMA, AVX-512 BF16 dot products) on 1 and all threads, and the
    /// read bandwidth of a large buffer on 1 and all threads; medians of RUNS. Also prints
    /// `key value` lines.
    BenchPeak {
        /// Timed runs of each measurement (after one warm-up).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// MiB of the buffer the bandwidth sums.
        #[arg(long, default_value_t = 1024)]
        mib: usize,
    },
    /// Measures voice cloning: the seconds to compute a voice from a recording
    /// (`prepare_conditionals`: decoding, resampling, prompt mel, VoiceEncoder, S3Tokenizer twice,
    /// CAMPPlus), median of RUNS after a warm-up. Everything runs on the host, except the
    /// tokenizer's encoder and CAMPPlus's network with --backend cuda (or emu). With --synthetic,
    /// the full-size models at random weights (the work does not depend on the values).
    BenchVoice {
        #[command(flatten)]
        model: ModelArgs,
        /// Where the tokenizer's encoder and CAMPPlus run: cpu (the f32 parity path), cuda, emu or auto.
        #[arg(long, default_value = "cpu")]
        backend: String,
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
        /// The model whose VoiceEncoder, S3Tokenizer and CAMPPlus compute it (ve.safetensors,
        /// s3gen.safetensors; t3_cfg.safetensors for its prompt length).
        #[command(flatten)]
        model: ModelArgs,
        /// Where to save the voice.
        #[arg(long, short = 'o', default_value = "voice.safetensors")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
    },
}

/// Exit codes: 0 success; 1 bad input (arguments, settings, text, voice, a limit passed); 2 a model
/// or setup problem (a missing or bad model file, no network for a download); 3 an internal error
/// or a failed check.
fn main() -> ExitCode {
    // clap's own exit code for a bad argument is 2, ours for a model or setup problem: bad
    // arguments exit with 1 like every other bad input (help and version with 0)
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
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
                ErrorKind::BadInput | ErrorKind::ResourceLimit => 1,
                ErrorKind::BadModel => 2,
                ErrorKind::Internal => 3,
            })
        }
    }
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
        Command::Speak(args) => cli::speak::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => cli::serve::run(args),
        Command::Info { model, backend } => cli::info::run(&model, &backend),
        Command::Voice { command: VoiceCommand::Create { input, model, out, backend } } => {
            check_input_file("INPUT", &input)?;
            check_output_folder("--out", &out)?;
            if model.synthetic {
                return Err(tts_engine::Error::NoCloning);
            }
            let ModelSource::Dir(model_dir) = model.resolve(&Bars::new(false))? else {
                return Err(tts_engine::Error::NoCloning);
            };
            let dev = tts_engine::select_device(&backend)?.0;
            let engine = tts_engine::speak::Engine::load_dir(&model_dir, &dev)?;
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
            let model_source = model.resolve(&Bars::new(false))?;
            check_input_file("--source", &source)?;
            if let Some(v) = &voice {
                check_input_file("--voice", v)?;
            }
            check_output_folder("--out", &out)?;
            let ModelSource::Dir(dir) = &model_source else {
                return Err(tts_engine::Error::NoCloning);
            };
            let dev = open_device(&backend, &model_source, &SAY)?;
            let engine = tts_engine::speak::Engine::load_dir(dir, &dev)?;
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
        Command::BenchVoice { model, backend, input, runs } => {
            let source = model.resolve(&Bars::new(false))?;
            check_input_file("--input", &input)?;
            if runs == 0 {
                return Err(tts_engine::Error::Setting { field: "--runs", value: "0".into(), expected: "at least 1".into() });
            }
            let dev = open_device(&backend, &source, &SAY)?;
            let t = Instant::now();
            let models = match &source {
                ModelSource::Dir(d) => tts_voice::prepare::VoiceModels::load_on(d, &dev)?,
                ModelSource::Synthetic { seed } => tts_voice::prepare::VoiceModels::synthetic_on(*seed, &dev)?,
            };
            let load_s = t.elapsed().as_secs_f64();
            // the tokenizer's encoder and CAMPPlus's network run on the device, everything else on the
            // host (cpu-bf16 is the host's f32 here)
            let tokenizer_backend = match models.tokenizer.encoder_backend() {
                tts_engine::BackendKind::Cpu => "cpu",
                _ => backend_label(&dev),
            };
            debug_assert_eq!(models.tokenizer.encoder_backend(), models.campplus.backend());
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
                        ("backend", tokenizer_backend.into()),
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
        Command::BenchPeak { runs, mib } => {
            let threads = rayon::current_num_threads();
            println!("cpu: {} ({threads} threads)", bench::cpu_features());
            println!("flops: a fused multiply-add is 2 per f32 lane; vdpbf16ps 4 per f32 lane (2 bf16 products added)");
            let (figures, skipped) = tts_engine::peak::measure(threads, mib << 20, runs.max(1));
            for s in &skipped {
                println!("skipped {s}");
            }
            for f in &figures {
                println!("{:>58}: {:8.1}", f.what, f.value);
            }
            println!("cpu_path {}", tts_kernels::cpu::isa::active());
            println!("threads {threads}");
            for f in &figures {
                println!("{} {:.2}", f.key, f.value);
            }
            Ok(true)
        }
        Command::BenchT3 { model, backend, batch, tokens } => {
            let source = model.resolve(&Bars::new(false))?;
            if tokens < bench::MIN_T3_TOKENS {
                return Err(tts_engine::Error::Setting {
                    field: "--tokens",
                    value: tokens.to_string(),
                    expected: format!("at least {} for the T3 bench", bench::MIN_T3_TOKENS),
                });
            }
            check_batches(&batch)?;
            let dev = open_device(&backend, &source, &SAY)?;
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
            let cpu = bench::cpu_features();
            println!("cpu: {cpu} ({} threads)", rayon::current_num_threads());
            println!(
                "{}",
                machine_line(
                    "bench-t3-setup",
                    &[
                        ("backend", label.into()),
                        ("cpu", cpu.clone()),
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
                                    ("cpu", cpu.clone()),
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
            let source = model.resolve(&Bars::new(false))?;
            check_batches(&batch)?;
            if tokens == 0 {
                return Err(tts_engine::Error::Setting { field: "--tokens", value: "0".into(), expected: "at least 1".into() });
            }
            let dev = open_device(&backend, &source, &SAY)?;
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
