//! CAMPPlus speed: the full-size model (random weights built in memory) on a waveform of the given
//! length (default 10 s), the median of several runs.
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
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn()| {
        median(
            (0..runs)
                .map(|_| {
                    let t0 = Instant::now();
                    f();
                    t0.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let fb = time(&|| {
        fbank(&wav).unwrap();
    });
    let all = time(&|| {
        model.embed(&wav).unwrap();
    });
    println!(
        "campplus {secs} s of audio, {} threads: fbank {:.1} ms, embed (fbank + network) {:.1} ms (median of {runs})",
        rayon::current_num_threads(),
        fb * 1e3,
        all * 1e3
    );
    Ok(())
}
