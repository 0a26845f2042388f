//! `tts`: the command-line tool of the Chatterbox TTS engine.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Directory with t3_cfg.safetensors, s3gen.safetensors, tokenizer.json and conds.pt (the
        /// official Chatterbox files), and config.json for non-default dimensions.
        #[arg(long)]
        model_dir: std::path::PathBuf,
        /// A text to speak; repeat for a batch.
        #[arg(long, required = true)]
        text: Vec<String>,
        /// Output WAV; with several texts, `NAME_0.wav`, `NAME_1.wav`, ...
        #[arg(long, default_value = "out.wav")]
        out: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0.5)]
        exaggeration: f32,
        #[arg(long, default_value_t = 0.5)]
        cfg_weight: f32,
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        #[arg(long, default_value_t = 1000)]
        max_new_tokens: usize,
    },
    /// Measures T3 decode speed (tokens/s, ms per step) on a model directory, per batch size.
    BenchT3 {
        /// Directory with t3_cfg.safetensors (and config.json, inputs.safetensors when present).
        #[arg(long)]
        model_dir: std::path::PathBuf,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Comma-separated batch sizes (requests; each is two CFG rows).
        #[arg(long, default_value = "1", value_delimiter = ',')]
        batch: Vec<usize>,
        /// New tokens per request.
        #[arg(long, default_value_t = 50)]
        tokens: usize,
    },
    /// Measures S3Gen synthesis speed (seconds per second of audio) on a model directory, per batch size.
    BenchS3gen {
        /// Directory with s3gen.safetensors (and config.json, inputs.safetensors when present).
        #[arg(long)]
        model_dir: std::path::PathBuf,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
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
        Command::Speak { model_dir, text, out, backend, seed, exaggeration, cfg_weight, temperature, max_new_tokens } => {
            let (dev, note) = tts_engine::select_device(&backend)?;
            println!("backend: {}", dev.describe());
            if let Some(n) = note {
                println!("note: {n}");
            }
            let engine = tts_engine::speak::Engine::load(&model_dir, &dev)?;
            let opts = tts_engine::speak::SpeakOptions {
                seed,
                exaggeration,
                cfg_weight,
                temperature,
                max_new_tokens,
                ..Default::default()
            };
            let texts: Vec<&str> = text.iter().map(|t| t.as_str()).collect();
            let t = std::time::Instant::now();
            let spoken = engine.speak(&texts, None, &opts)?;
            let secs = t.elapsed().as_secs_f64();
            for (i, s) in spoken.iter().enumerate() {
                let path = if spoken.len() == 1 {
                    out.clone()
                } else {
                    let stem = out.file_stem().map_or("out".into(), |s| s.to_string_lossy().into_owned());
                    out.with_file_name(format!("{stem}_{i}.wav"))
                };
                tts_engine::speak::write_wav(&path, &s.wav)?;
                println!(
                    "{}: {} speech tokens, {:.2} s of audio",
                    path.display(),
                    s.speech_tokens.len(),
                    s.wav.len() as f64 / tts_s3gen::SAMPLE_RATE as f64
                );
            }
            println!("{} text(s) in {secs:.2} s", spoken.len());
            Ok(true)
        }
        Command::BenchT3 { model_dir, backend, batch, tokens } => {
            let (dev, note) = tts_engine::select_device(&backend)?;
            println!("backend: {}", dev.describe());
            if let Some(n) = note {
                println!("note: {n}");
            }
            println!("{:>6} {:>10} {:>8} {:>10} {:>11} {:>10}", "batch", "tok/req", "steps", "seconds", "ms/step", "tokens/s");
            for s in tts_engine::bench::bench_t3(&model_dir, &dev, &batch, tokens)? {
                println!(
                    "{:>6} {:>10.1} {:>8} {:>10.3} {:>11.2} {:>10.2}",
                    s.batch, s.tokens_per_request, s.decode_steps, s.seconds, s.ms_per_step, s.tokens_per_second
                );
            }
            Ok(true)
        }
        Command::BenchS3gen { model_dir, backend, batch, tokens, steps } => {
            let (dev, note) = tts_engine::select_device(&backend)?;
            println!("backend: {}", dev.describe());
            if let Some(n) = note {
                println!("note: {n}");
            }
            println!("{:>6} {:>14} {:>10} {:>10} {:>16}", "batch", "audio s/req", "seconds", "rtf", "ms per audio s");
            for s in tts_engine::bench::bench_s3gen(&model_dir, &dev, &batch, tokens, steps)? {
                println!("{:>6} {:>14.2} {:>10.3} {:>10.4} {:>16.1}", s.batch, s.audio_seconds, s.seconds, s.rtf, s.rtf * 1e3);
            }
            Ok(true)
        }
    }
}
