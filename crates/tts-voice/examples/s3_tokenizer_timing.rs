//! Times S3Tokenizer v2 at the real model's dimensions (1280 / 20 heads / 6 layers, 123.7M
//! parameters) with synthetic random weights, on random 16 kHz audio:
//!
//! ```text
//! cargo run --release -p tts-voice --example s3_tokenizer_timing [seconds ...]
//! ```
//!
//! Prints the load time, then per length the best of three runs of each stage and of `tokenize`,
//! wall time and (on Linux) the process's CPU time: on a shared machine the CPU time is the figure
//! that does not depend on what else runs.
use std::time::Instant;

use tts_voice::s3_tokenizer::{S3Tokenizer, TokenizerConfig};

/// The process's user + system CPU time in seconds (`/proc/self/stat`, 100 ticks per second),
/// NaN where it cannot be read.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    if f.len() == 2 { (f[0] + f[1]) / 100.0 } else { f64::NAN }
}

/// The best wall time and the best CPU time of `runs` calls of `f` (ms), and its last result.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut out = None;
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds());
        let v = f();
        wall = wall.min(t.elapsed().as_secs_f64() * 1e3);
        cpu = cpu.min((cpu_seconds() - c) * 1e3);
        out = Some(v);
    }
    (wall, cpu, out.expect("runs > 0"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: Vec<f64> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let secs = if secs.is_empty() { vec![6.0, 10.0] } else { secs };
    let cfg = TokenizerConfig::default();
    let t = Instant::now();
    let tok = S3Tokenizer::synthetic(&cfg, 1)?;
    println!(
        "s3_tokenizer: full size ({} / {} heads / {} layers), synthetic weights loaded in {:.2} s; {} rayon threads",
        cfg.tokenizer_n_state,
        cfg.tokenizer_n_head,
        cfg.tokenizer_n_layer,
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    for s in secs {
        let wav = tts_kernels::testing::random_f32(7, (s * 16000.0) as usize, 0.1);
        let (mel_ms, _, mel) = best(3, || tok.log_mel(&wav));
        let mel = mel?;
        let (enc_ms, enc_cpu, hidden) = best(3, || tok.encode(&mel));
        let hidden = hidden?;
        let (fsq_ms, _, _) = best(3, || tok.fsq_pre_round(&hidden));
        let (all_ms, all_cpu, tokens) = best(3, || tok.tokenize(&wav, None));
        println!(
            "{s:5.1} s audio: {} tokens; log_mel {mel_ms:.1} ms, encode {enc_ms:.1} ms (CPU {enc_cpu:.0} ms), fsq {fsq_ms:.2} ms; \
             tokenize {all_ms:.1} ms (CPU {all_cpu:.0} ms); best of 3",
            tokens?.len()
        );
    }
    Ok(())
}
