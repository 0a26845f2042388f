//! The whole pipeline (T3 → post-processing → S3Gen) on a tiny random model assembled from the
//! fixtures (T3 of t3_decode_teacher_forced_a, S3Gen of s3gen_wav_a; the voice's T3 half from the
//! first and its S3Gen half from the second), plus the WAV writer.
use tts_engine::speak::{Engine, SpeakOptions, write_wav};
use tts_kernels::Device;
use tts_kernels::testing::{fresh_seed, random_i32, rel_l2};

mod common;

use common::{tiny_model_dir, tiny_voice as voice};

#[test]
fn tokens_to_speech_through_both_models_batched() {
    let dir = tiny_model_dir();
    let dev = Device::cpu();
    let engine = Engine::load_dir(&dir, &dev).unwrap();
    let voice = voice();
    let seed = fresh_seed();
    let cfg = &engine.t3.config();
    let texts: Vec<Vec<u32>> = [5usize, 9, 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let ids = random_i32(seed.wrapping_add(i as u64), n, 1, cfg.start_text_token as i32);
            std::iter::once(cfg.start_text_token).chain(ids.iter().map(|&t| t as u32)).chain([cfg.stop_text_token]).collect()
        })
        .collect();
    let opts = SpeakOptions { max_new_tokens: 12, seed, cfm_steps: 3, ..Default::default() };
    let batched = match engine.speak_tokens(&texts, Some(&voice), &opts) {
        Ok(s) => s,
        Err(e @ tts_engine::Error::NoSpeechTokens { .. }) => {
            // a legitimate outcome of a random model (never seen in practice): nothing more to check
            eprintln!("seed {seed}: a request stopped at once ({e}); skipped");
            return;
        }
        Err(e) => panic!("seed {seed}: {e}"),
    };
    let g = &voice.s3gen;
    for (i, s) in batched.iter().enumerate() {
        assert!(!s.speech_tokens.is_empty() && s.speech_tokens.len() <= opts.max_new_tokens);
        assert!(s.speech_tokens.iter().all(|&t| (t as usize) < engine.s3gen.config.flow_vocab_size));
        let frames = 2 * (g.prompt_token.len() + s.speech_tokens.len()) - g.prompt_feat_frames;
        assert_eq!(s.wav.len(), 480 * frames, "text {i}");
        assert!(s.wav.iter().all(|v| v.is_finite() && v.abs() <= 0.99));
        assert!(s.wav[..480].iter().all(|&v| v == 0.0), "the first 20 ms are silenced");
        // alone, with the seed request i had in the batch: the same tokens, the same audio
        let alone = engine
            .speak_tokens(&texts[i..=i], Some(&voice), &SpeakOptions { seed: seed.wrapping_add(i as u64), ..opts.clone() })
            .unwrap();
        assert_eq!(alone[0].speech_tokens, s.speech_tokens, "seed {seed} text {i}");
        let e = rel_l2(&s.wav, &alone[0].wav);
        assert!(e < 1e-4, "seed {seed} text {i}: batched vs alone waveform rel L2 {e:e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_pieces_and_bad_text_are_errors() {
    let dir = tiny_model_dir();
    let engine = Engine::load_dir(&dir, &Device::cpu()).unwrap();
    let e = engine.speak(&["hello"], None, &SpeakOptions::default()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = engine.speak_tokens(&[vec![255, 3, 0]], None, &SpeakOptions::default()).unwrap_err().to_string();
    assert!(e.contains("conds.pt"), "{e}");
    std::fs::remove_file(dir.join("s3gen.safetensors")).unwrap();
    let e = Engine::load_dir(&dir, &Device::cpu()).err().unwrap().to_string();
    assert!(e.contains("s3gen.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wav_files_round_trip_and_failures_leave_nothing() {
    let dir = std::env::temp_dir().join(format!("tts-wav-test-{}", fresh_seed()));
    std::fs::create_dir_all(&dir).unwrap();
    let samples: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
    let path = dir.join("a.wav");
    write_wav(&path, &samples).unwrap();
    let mut r = hound::WavReader::open(&path).unwrap();
    assert_eq!((r.spec().sample_rate, r.spec().channels), (24_000, 1));
    let back: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
    assert_eq!(back, samples);
    let bad = dir.join("no/such/dir/b.wav");
    assert!(write_wav(&bad, &samples).unwrap_err().to_string().contains("b.wav"));
    assert!(!dir.join("no").exists());
    std::fs::remove_dir_all(&dir).ok();
}
