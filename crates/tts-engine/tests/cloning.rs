//! Voice cloning through the engine and the CLI, on a tiny model that clones (tests/common:
//! `clone_model_dir`): a recording → a voice → speech; saved voices reload bit for bit and speak the
//! same; the cache computes a voice once; voice conversion; `tts voice create`, `tts speak --voice`,
//! `tts convert`.
mod common;

use std::process::Command;
use std::sync::Arc;

use common::{clone_model_dir, scratch_dir, write_speechlike_wav};
use tts_engine::speak::{Engine, SpeakOptions};
use tts_engine::voice::Conditionals;
use tts_engine::{Device, ErrorKind};
use tts_kernels::testing::{assert_close, fresh_seed};

fn opts(seed: u64) -> SpeakOptions {
    SpeakOptions { max_new_tokens: 12, seed, cfm_steps: 2, ..Default::default() }
}

fn soxr_env() {
    // the test command exports TTS_SOXR_LIB (scripts/soxr.sh); a plain `cargo test` finds a system libsoxr
    assert!(
        tts_voice::resample::soxr::loaded().is_ok(),
        "libsoxr is needed to clone voices: run `export TTS_SOXR_LIB=$(bash scripts/soxr.sh)` (scripts/test.sh does)"
    );
}

#[test]
fn a_recording_becomes_a_voice_that_saves_reloads_and_speaks_the_same() {
    soxr_env();
    let seed = fresh_seed();
    let dir = clone_model_dir();
    let scratch = scratch_dir("clone");
    let wav = scratch.join("ref.wav");
    write_speechlike_wav(&wav, 3.0, 22050, 2, 16, false, seed);
    let engine = Engine::load_dir(&dir, &Device::cpu()).unwrap();

    let v1 = engine.voice_from_file(&wav).unwrap();
    assert_eq!(v1.t3.speaker_emb.len(), engine.t3.config().speaker_embed_size);
    assert_eq!(v1.s3gen.embedding.len(), engine.s3gen.config.spk_embed_dim);
    assert_eq!(v1.s3gen.prompt_feat_frames, 3 * 50, "seed {seed}: 3 s at 50 mel frames per second");
    assert_eq!(v1.s3gen.prompt_token.len(), 75);
    assert_eq!(v1.t3.cond_prompt_speech_tokens.len(), 75, "3 s < 6 s: all of it, 25 tokens per second");
    let norm: f32 = v1.t3.speaker_emb.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "speaker_emb is L2-normalised: {norm}");
    // the same file again: the cached voice, not a new computation
    let (_, hits0, _) = engine.voice_cache_stats();
    let v2 = engine.voice_from_file(&wav).unwrap();
    assert!(Arc::ptr_eq(&v1, &v2));
    assert_eq!(engine.voice_cache_stats().1, hits0 + 1);

    // saved and reloaded: bit for bit, and it speaks exactly as the computed voice
    let (voice, meta) = engine.voice_from_bytes(&std::fs::read(&wav).unwrap(), "ref.wav").unwrap();
    assert_eq!(meta["source_sample_rate"], "22050");
    assert!(meta["resampler"].contains("soxr"), "{meta:?}");
    let saved = scratch.join("voice.safetensors");
    voice.save(&saved, &meta).unwrap();
    let (back, meta_back) = Conditionals::load_saved(&saved).unwrap();
    assert_eq!(&back, voice.as_ref());
    assert_eq!(meta_back["source_sha256"], meta["source_sha256"]);
    let from_file = engine.voice_from_file(&saved).unwrap();
    assert_eq!(from_file.as_ref(), voice.as_ref());

    let text = ["Hello there, this is a cloned voice."];
    let a = engine.speak(&text, Some(&voice), &opts(seed)).unwrap();
    let b = engine.speak(&text, Some(&back), &opts(seed)).unwrap();
    assert_eq!(a[0].speech_tokens, b[0].speech_tokens);
    assert_eq!(a[0].wav, b[0].wav, "seed {seed}: a reloaded voice speaks bit for bit the same");
    assert!(a[0].wav.iter().all(|x| x.is_finite()) && a[0].wav.iter().any(|&x| x != 0.0));
    // and differently from the built-in voice (the voice reaches the models)
    let c = engine.speak(&text, None, &opts(seed)).unwrap();
    assert_ne!(a[0].wav, c[0].wav);
}

#[test]
fn voice_conversion_speaks_the_source_in_the_target_voice() {
    soxr_env();
    let seed = fresh_seed();
    let dir = clone_model_dir();
    let scratch = scratch_dir("convert");
    let (src, tgt) = (scratch.join("src.wav"), scratch.join("tgt.wav"));
    write_speechlike_wav(&src, 2.0, 16000, 1, 16, false, seed);
    write_speechlike_wav(&tgt, 3.0, 48000, 1, 32, true, seed ^ 1);
    let engine = Engine::load_dir(&dir, &Device::cpu()).unwrap();
    let source = tts_voice::audio::load(&src).unwrap();
    let target = engine.voice_from_file(&tgt).unwrap();
    let out = engine.convert(&source, &target, seed, 2).unwrap();
    // 2 s of source → 50 tokens → 100 mel frames → 2 s at 24 kHz
    assert_eq!(out.len(), 2 * 24000, "seed {seed}");
    assert!(out.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
    let again = engine.convert(&source, &target, seed, 2).unwrap();
    assert_eq!(out, again, "same seed, same audio");
    let other = engine.voice_from_file(&src).unwrap();
    assert_ne!(engine.convert(&source, &other, seed, 2).unwrap(), out, "the target voice matters");
    let e = engine.convert(&source, &target, seed, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
}

#[test]
fn the_cli_creates_a_voice_speaks_with_it_and_converts() {
    soxr_env();
    let dir = clone_model_dir();
    let scratch = scratch_dir("cli-clone");
    let wav = scratch.join("ref.wav");
    write_speechlike_wav(&wav, 2.5, 44100, 2, 32, true, fresh_seed());
    let tts = env!("CARGO_BIN_EXE_tts");
    let run = |args: &[&str]| {
        let out = Command::new(tts).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (d, w, s) = (dir.to_str().unwrap(), wav.to_str().unwrap(), scratch.to_str().unwrap());
    let voice = format!("{s}/voice.safetensors");
    let (code, text) = run(&["voice", "create", w, "--model-dir", d, "-o", &voice, "--backend", "cpu"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("source_sha256"), "{text}");
    let (saved, _) = Conditionals::load_saved(std::path::Path::new(&voice)).unwrap();

    for (v, out) in [(w, "a.wav"), (voice.as_str(), "b.wav")] {
        let out = format!("{s}/{out}");
        let args = ["speak", "--model-dir", d, "--voice", v, "--text", "Cloned.", "--max-new-tokens", "8", "--out", &out];
        let (code, text) = run(&[&args[..], &["--backend", "cpu", "--seed", "3"]].concat());
        assert_eq!(code, Some(0), "{text}");
    }
    // `speak` writes 16-bit PCM by default, `convert` 32-bit float
    let read = |p: &str| {
        let mut r = hound::WavReader::open(format!("{s}/{p}")).unwrap();
        match r.spec().sample_format {
            hound::SampleFormat::Int => r.samples::<i16>().map(|x| x.unwrap() as f32 / 32767.0).collect::<Vec<f32>>(),
            hound::SampleFormat::Float => r.samples::<f32>().map(|x| x.unwrap()).collect::<Vec<f32>>(),
        }
    };
    assert_eq!(read("a.wav"), read("b.wav"), "the recording and its saved voice speak the same");
    assert!(!read("a.wav").is_empty());

    let conv = format!("{s}/conv.wav");
    let (code, text) = run(&["convert", "--model-dir", d, "--source", w, "--voice", &voice, "-o", &conv, "--backend", "cpu"]);
    assert_eq!(code, Some(0), "{text}");
    // 2.5 s → 63 source tokens; S3Gen's output is 2·(Tp + Ts) − F mel frames (s3gen.py: F = the prompt
    // mel's frames, which may differ from 2·Tp by one), 480 samples each
    let ts = (2.5f64 * 25.0).ceil() as usize;
    let frames = 2 * (saved.s3gen.prompt_token_len + ts) - saved.s3gen.prompt_feat_frames;
    assert_eq!(read("conv.wav").len(), frames * 480, "{text}");
    // bad input: exit code 1, the file named, nothing written
    let (code, text) = run(&["voice", "create", d, "--model-dir", d, "-o", &format!("{s}/x.safetensors")]);
    assert_eq!(code, Some(1), "a directory is not a recording: {text}");
    std::fs::write(scratch.join("notes.txt"), "not audio at all").unwrap();
    let bad = format!("{s}/notes.txt");
    let (code, text) =
        run(&["speak", "--model-dir", d, "--voice", &bad, "--text", "x", "--out", &format!("{s}/y.wav"), "--backend", "cpu"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("notes.txt"), "{text}");
    assert!(!scratch.join("y.wav").exists());
    assert_eq!(saved.t3.emotion_adv, tts_t3::DEFAULT_EXAGGERATION);
}

/// On a kernel backend (Emu here; Cuda on a GPU) the engine computes a voice with the S3Tokenizer's
/// encoder (bf16) and CAMPPlus's network (f32) on its device and the rest on the host: the
/// host-computed parts (VoiceEncoder, prompt mel) are the Cpu engine's bit for bit, the x-vector
/// within f32 rounding of it, the token counts are the same, and the voice speaks.
#[test]
fn on_a_kernel_backend_the_tokenizer_and_campplus_run_on_the_device_and_the_rest_on_the_host() {
    soxr_env();
    let Some((label, dev)) = tts_kernels::testing::kernel_devices().into_iter().next() else {
        println!("skipped: no kernel backend in this build (the emu feature) and no GPU");
        return;
    };
    let seed = fresh_seed();
    let dir = clone_model_dir();
    let wav = scratch_dir("clone-device").join("ref.wav");
    write_speechlike_wav(&wav, 2.0, 16000, 1, 16, false, seed);
    let on_dev = Engine::load_dir(&dir, &dev).unwrap();
    let on_cpu = Engine::load_dir(&dir, &Device::cpu()).unwrap();
    assert_eq!(on_dev.voice_models().unwrap().tokenizer.encoder_backend(), dev.kind(), "{label}");
    assert_eq!(on_cpu.voice_models().unwrap().tokenizer.encoder_backend(), tts_engine::BackendKind::Cpu);
    assert_eq!(on_dev.voice_models().unwrap().campplus.backend(), dev.kind(), "{label}");
    assert_eq!(on_cpu.voice_models().unwrap().campplus.backend(), tts_engine::BackendKind::Cpu);
    let (a, b) = (on_dev.voice_from_file(&wav).unwrap(), on_cpu.voice_from_file(&wav).unwrap());
    assert_eq!(a.t3.speaker_emb, b.t3.speaker_emb, "{label} (seed {seed})");
    assert_close(&format!("{label}: x-vector (seed {seed})"), &a.s3gen.embedding, &b.s3gen.embedding, 1e-4, 1e-5);
    assert_eq!(a.s3gen.prompt_feat, b.s3gen.prompt_feat, "{label} (seed {seed})");
    assert_eq!(a.s3gen.prompt_token.len(), b.s3gen.prompt_token.len());
    assert_eq!(a.t3.cond_prompt_speech_tokens.len(), b.t3.cond_prompt_speech_tokens.len());
    let same = a.s3gen.prompt_token.iter().zip(&b.s3gen.prompt_token).filter(|(x, y)| x == y).count();
    println!("{label}: {same} of {} prompt tokens the Cpu engine's (seed {seed})", b.s3gen.prompt_token.len());
    let out = on_dev.speak(&["A voice computed on the device."], Some(&a), &opts(seed)).unwrap();
    assert!(out[0].wav.iter().all(|x| x.is_finite()) && out[0].wav.iter().any(|&x| x != 0.0), "{label} (seed {seed})");
}
