//! CAMPPlus speed: the full-size model (random weights built in memory) on a gliding tone of the
//! given length (default 10 s), the min and median of several runs after a warm-up.
//! `tools/bench/campplus_cpu_vs_reference.sh` runs it beside the PyTorch reference.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo run --release -p tts-voice --example campplus_speed [SECONDS] [RUNS]`
use std::time::Instant;

use tts_voice::campplus::{CampPlus, CampPlusConfig, fbank};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let model = CampPlus::synthetic(&CampPlusConfig::default(), 1)?;
    let n = (secs * 16000.0) as usize;
    // a gliding tone with a little noise
    let mut s = 0x2545F4914F6CDD1Du64;
    let wav: Vec<f32> = (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let t = i as f32 / 16000.0;
            0.3 * (2.0 * std::f32::consts::PI * (150.0 + 40.0 * t) * t).sin() + 0.01 * ((s >> 40) as f32 / 16777216.0 - 0.5)
        })
        .collect();
    model.embed(&wav)?; // warm-up
    // (min, median) seconds
    let time = |f: &dyn Fn()| {
        let mut v: Vec<f64> = (0..runs.max(1))
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let fb = time(&|| {
        fbank(&wav).unwrap();
    });
    let all = time(&|| {
        model.embed(&wav).unwrap();
    });
    println!(
        "campplus {secs} s of audio, {} threads: min {:.1} ms, median {:.1} ms ({runs} runs; of which the fbank: median {:.1} ms)",
        rayon::current_num_threads(),
        all.0 * 1e3,
        all.1 * 1e3,
        fb.1 * 1e3
    );
    Ok(())
}
