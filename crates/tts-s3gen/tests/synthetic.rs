//! The synthetic S3Gen (random weights at the real dimensions): its manifest names and shapes are
//! those of the official file (checked against the fixture written by the real package), and at
//! full size on Cpu its activations stay in a realistic range: no NaN/Inf, mel-like flow output,
//! voiced F0, a waveform that is neither silent nor clipped.
use std::path::PathBuf;

use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::testing::{fresh_seed, random_f32, random_i32};
use tts_s3gen::{FlowRequest, HiftRequest, MEL_BINS, S3Gen, S3GenConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/s3gen_wav_a")
}

#[test]
fn the_manifest_is_the_official_files_names_and_shapes() {
    let dir = fixture();
    let cfg = S3GenConfig::from_model_dir(&dir).unwrap();
    let file = Checkpoint::open(&dir.join("s3gen.safetensors")).unwrap();
    let manifest = tts_s3gen::synthetic::manifest(&cfg);
    let mut listed = std::collections::HashSet::new();
    for t in &manifest {
        assert_eq!(file.shape(&t.name), Some(t.shape.as_slice()), "{}: the fixture's shape differs or it is absent", t.name);
        listed.insert(t.name.as_str());
    }
    // the synthetic checkpoint loads through the same loader (which reads only listed names)
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    S3Gen::synthetic(cfg.clone(), seed, &Device::cpu()).unwrap();
    // what the file has and the manifest leaves out: nothing of what S3Gen loads
    let unlisted: Vec<&str> = file.names().into_iter().filter(|n| !listed.contains(n)).collect();
    assert!(unlisted.is_empty(), "tensors of the file not in the manifest: {unlisted:?}");
}

/// Range statistics of a set of values.
#[derive(Debug)]
struct Stats {
    non_finite: usize,
    mean: f64,
    std: f64,
    min: f32,
    max: f32,
}

fn stats(v: &[f32]) -> Stats {
    let finite: Vec<f64> = v.iter().filter(|x| x.is_finite()).map(|&x| x as f64).collect();
    let n = finite.len().max(1) as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let std = (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    Stats {
        non_finite: v.len() - finite.len(),
        mean,
        std,
        min: v.iter().copied().fold(f32::INFINITY, f32::min),
        max: v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// Asserts `v` is finite with its mean and standard deviation in the given ranges.
fn check(what: &str, v: &[f32], mean: (f64, f64), std: (f64, f64)) -> Stats {
    let s = stats(v);
    eprintln!("{what:<24} {s:?}");
    assert_eq!(s.non_finite, 0, "{what}: non-finite values");
    assert!(s.mean >= mean.0 && s.mean <= mean.1, "{what}: mean {} outside {mean:?}", s.mean);
    assert!(s.std >= std.0 && s.std <= std.1, "{what}: standard deviation {} outside {std:?}", s.std);
    s
}

fn fraction(v: &[f32], f: impl Fn(f32) -> bool) -> f64 {
    v.iter().filter(|&&x| f(x)).count() as f64 / v.len().max(1) as f64
}

/// The full-size synthetic S3Gen on Cpu, ~2 s of frames (1 s of prompt, 1 s generated) with 2 CFM
/// steps: every stage's output in a realistic range.
#[test]
fn full_size_synthetic_s3gen_stays_in_a_realistic_range() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let dev = Device::cpu();
    let cfg = S3GenConfig::default();
    let t = std::time::Instant::now();
    let model = S3Gen::synthetic(cfg.clone(), seed, &dev).unwrap();
    eprintln!("built in {:.2} s", t.elapsed().as_secs_f64());
    let vocab = cfg.flow_vocab_size as i32;
    let tok = |s: u64, n: usize| random_i32(s, n, 0, vocab).into_iter().map(|t| t as u32).collect::<Vec<u32>>();
    let (prompt_tokens, tokens) = (tok(seed ^ 1, 25), tok(seed ^ 2, 25));
    // a log-mel-like prompt (level −5, spread 2) and an x-vector
    let prompt_feat: Vec<f32> = random_f32(seed ^ 3, 50 * MEL_BINS, 2.0).iter().map(|v| v - 5.0).collect();
    let embedding = random_f32(seed ^ 4, cfg.spk_embed_dim, 1.0);
    let req = FlowRequest {
        prompt_tokens: &prompt_tokens,
        prompt_feat: &prompt_feat,
        embedding: &embedding,
        tokens: &tokens,
        noise: None,
        seed,
    };
    let t = std::time::Instant::now();
    let flow = model.flow.inference(&dev, &[req], 2).unwrap();
    eprintln!("flow in {:.2} s", t.elapsed().as_secs_f64());
    check("encoder hidden", &flow.encoder.hidden.to_f32_vec().unwrap(), (-1.0, 1.0), (0.5, 2.0));
    check("mu", &flow.encoder.mu.to_f32_vec().unwrap(), (-8.0, -2.0), (0.5, 5.0));
    // the estimator's velocity at t = 0 (the first step's), both CFG halves
    let x = &flow.x;
    let inp = model.flow.estimator_input(x, &flow.encoder.mu, &flow.spks, &flow.cond).unwrap();
    let lens = flow.encoder.lens.doubled().unwrap();
    let (v, t_emb) = model.flow.velocity(&inp, &lens, &[0.0, 0.0]).unwrap();
    check("time embedding", &t_emb.to_f32_vec().unwrap(), (-2.0, 2.0), (0.05, 5.0));
    check("velocity", &v.to_f32_vec().unwrap(), (-8.0, -2.0), (0.5, 6.0));
    let mel = &flow.mels[0];
    let m = check("generated mel", mel, (-8.0, -2.0), (1.0, 5.0));
    assert!(m.min > -20.0 && m.max < 8.0, "mel outside a log-mel's range: {m:?}");
    // not pinned: below the front-end's floor (ln 1e-5) or above ~2 only in the tails
    assert!(fraction(mel, |x| !(-11.5..=2.0).contains(&x)) < 0.05, "mel mostly outside [−11.5, 2]");

    let t = std::time::Instant::now();
    let hift = model.hift.inference(&dev, &[HiftRequest { mel, phases: None, noise: None, f0: None, seed }]).unwrap();
    eprintln!("hift in {:.2} s", t.elapsed().as_secs_f64());
    let f0 = check("f0 (Hz)", &hift.f0[0], (60.0, 350.0), (1.0, 80.0));
    assert!(fraction(&hift.f0[0], |f| (40.0..=500.0).contains(&f)) > 0.95, "F0 outside a voice's range: {f0:?}");
    let src = check("source", &hift.source[0], (-0.1, 0.1), (0.005, 0.5));
    assert!(fraction(&hift.source[0], |s| s.abs() > 0.99) < 0.001, "the source's tanh is pinned: {src:?}");
    let wav = &hift.wav[0];
    // random HiFT weights leave a DC offset that depends on the seed (|mean| up to 0.042 over 42
    // fresh seeds, 0.061 for seed 17689090342226224553, with the noise of before and after the
    // noise became position-addressed): a plausibility range for random weights, not a tolerance
    check("waveform", wav, (-0.1, 0.1), (0.01, 0.3));
    let clipped = fraction(wav, |s| s.abs() >= 0.99);
    eprintln!("clipped {clipped:.4}");
    assert!(clipped < 0.01, "{:.2}% of the waveform at the ±0.99 clamp", clipped * 100.0);
}
