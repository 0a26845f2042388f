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
    /// Shows which backend would run and why, and checks every kernel on it against the Cpu reference.
    SelfCheck {
        /// auto (Cuda if usable, else Cpu), cpu, cuda, cuda:N, or emu (builds with the `emu` feature).
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Seed of the random inputs (default: fresh).
        #[arg(long)]
        seed: Option<u64>,
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
            let (dev, note) = tts_engine::select_device(&backend)?;
            println!("backend: {}", dev.describe());
            if let Some(n) = note {
                println!("note: {n}");
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
    }
}
