//! A corpus of bad voice files, generated here (no committed binaries): not audio, truncated or
//! corrupt audio, empty, silent, too short, absurd rates and channel counts, non-finite samples,
//! damaged or foreign saved voices and `conds.pt` files, voices that do not fit the model. Each goes
//! through `Engine::voice_from_bytes` (what `--voice` and the server call); each must come back as a
//! typed bad-input error naming the problem, never a panic, and nothing is cached.
mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{clone_model_dir, fixture, scratch_dir, write_speechlike_wav};
use tts_engine::speak::Engine;
use tts_engine::voice::saved::VoiceMeta;
use tts_engine::{Device, ErrorKind};

/// A RIFF/WAVE file: a `fmt ` chunk (format tag, channels, rate, bits) and a `data` chunk whose
/// declared size is `data_size` (the real length of `data` unless a test lies).
fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], data_size: Option<u32>) -> Vec<u8> {
    let block = channels as u32 * bits as u32 / 8;
    let mut f = Vec::new();
    f.extend_from_slice(b"RIFF");
    f.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    f.extend_from_slice(b"WAVEfmt ");
    f.extend_from_slice(&16u32.to_le_bytes());
    f.extend_from_slice(&tag.to_le_bytes());
    f.extend_from_slice(&channels.to_le_bytes());
    f.extend_from_slice(&rate.to_le_bytes());
    f.extend_from_slice(&(rate.wrapping_mul(block)).to_le_bytes());
    f.extend_from_slice(&(block as u16).to_le_bytes());
    f.extend_from_slice(&bits.to_le_bytes());
    f.extend_from_slice(b"data");
    f.extend_from_slice(&data_size.unwrap_or(data.len() as u32).to_le_bytes());
    f.extend_from_slice(data);
    f
}

fn pcm16(samples: impl IntoIterator<Item = f32>) -> Vec<u8> {
    samples.into_iter().flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes()).collect()
}

fn float32(samples: impl IntoIterator<Item = f32>) -> Vec<u8> {
    samples.into_iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn tone(n: usize) -> impl Iterator<Item = f32> {
    (0..n).map(|i| 0.3 * (i as f32 * 0.05).sin())
}

#[test]
fn every_bad_voice_file_is_a_typed_bad_input_error_and_none_panics() {
    let dir = clone_model_dir();
    let engine = Engine::load_dir(&dir, &Device::cpu()).unwrap();
    let scratch = scratch_dir("bad-voices");

    // a good recording and a good saved voice, to damage
    let good_wav_path = scratch.join("good.wav");
    write_speechlike_wav(&good_wav_path, 2.0, 16000, 1, 16, false, 5);
    let good_wav = std::fs::read(&good_wav_path).unwrap();
    let good_voice = engine.voice_from_file(&good_wav_path).unwrap();
    let saved = good_voice.to_safetensors(&VoiceMeta::new()).unwrap();
    let conds = std::fs::read(fixture("s3_tokenizer_a").join("conds.pt")).unwrap();
    let sr = 16000u32;

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("an empty file", vec![]),
        ("a text file", b"This is a note, not a recording.\n".repeat(20)),
        ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("a RIFF header alone", b"RIFF\x04\x00\x00\x00WAVE".to_vec()),
        ("a WAV with no data chunk", wav(1, 1, sr, 16, &[], None)[..36].to_vec()),
        ("a WAV with zero samples", wav(1, 1, sr, 16, &[], None)),
        ("a WAV at 0 Hz", wav(1, 1, 0, 16, &pcm16(tone(8000)), None)),
        ("a WAV at 999 Hz", wav(1, 1, 999, 16, &pcm16(tone(8000)), None)),
        ("a WAV at 10 MHz", wav(1, 1, 10_000_000, 16, &pcm16(tone(8000)), None)),
        ("a WAV of 0 channels", wav(1, 0, sr, 16, &pcm16(tone(8000)), None)),
        ("a WAV of 300 channels", wav(1, 300, sr, 16, &pcm16(tone(300 * 40)), None)),
        ("a WAV of 12-bit samples", wav(1, 1, sr, 12, &pcm16(tone(8000)), None)),
        ("an MP3-in-WAV (format tag 0x55)", wav(0x55, 1, sr, 16, &pcm16(tone(8000)), None)),
        ("a WAV of an unknown format tag", wav(0x1234, 1, sr, 16, &pcm16(tone(8000)), None)),
        (
            "a float WAV with a NaN",
            wav(3, 1, sr, 32, &float32(tone(16000).enumerate().map(|(i, s)| if i == 777 { f32::NAN } else { s })), None),
        ),
        (
            "a float WAV with +inf",
            wav(3, 1, sr, 32, &float32(tone(16000).enumerate().map(|(i, s)| if i == 5 { f32::INFINITY } else { s })), None),
        ),
        (
            "a stereo float WAV, NaN in one channel",
            wav(3, 2, sr, 32, &float32(tone(32000).enumerate().map(|(i, s)| if i % 2 == 1 { f32::NAN } else { s })), None),
        ),
        ("an all-zero recording", wav(1, 1, sr, 16, &vec![0u8; 2 * 48000], None)),
        ("a recording below -80 dBFS", wav(3, 1, sr, 32, &float32((0..48000).map(|i| 1e-5 * (i as f32 * 0.1).sin())), None)),
        ("an 8-bit silent recording (all 128)", wav(1, 1, sr, 8, &vec![128u8; 32000], None)),
        ("a single sample", wav(1, 1, sr, 16, &pcm16([0.5]), None)),
        ("6 ms of sound", wav(1, 1, sr, 16, &pcm16(tone(100)), None)),
        ("a 24-bit WAV cut mid-sample", {
            let mut w = wav(1, 1, sr, 24, &vec![7u8; 3 * 100], None);
            w.truncate(w.len() - 299);
            w
        }),
        ("a WAV whose data chunk claims 4 GB", wav(1, 1, sr, 16, &pcm16(tone(1000)), Some(u32::MAX))),
        ("a good WAV cut in its header", good_wav[..30].to_vec()),
        ("FLAC magic then garbage", [b"fLaC".as_slice(), &[0x80, 0, 0, 0x22], &[0xAB; 200]].concat()),
        ("an ID3 tag then garbage", [b"ID3\x04\x00\x00\x00\x00\x00\x10".as_slice(), &[0x5A; 300]].concat()),
        ("MP3 frame syncs with garbage", [0xFFu8, 0xFB, 0x90, 0x00].repeat(200)),
        ("an Ogg page header then garbage", [b"OggS\x00\x02".as_slice(), &[0x11; 300]].concat()),
        ("a conds.pt cut in half", conds[..conds.len() / 2].to_vec()),
        ("a zip that is not a conds.pt", b"PK\x03\x04\x14\x00\x00\x00\x00\x00garbage-garbage-garbage".to_vec()),
        ("a saved voice cut short", saved[..saved.len() - 100].to_vec()),
        ("a model checkpoint given as a voice", std::fs::read(dir.join("ve.safetensors")).unwrap()),
    ];
    // a saved voice of the wrong version, and one with a NaN in its x-vector
    let mut other = saved.clone();
    let at = other.windows(13).position(|w| w == b"\"version\":\"1\"").unwrap();
    other[at + 11] = b'7';
    cases.push(("a saved voice of version 7", other));
    let mut v = saved.clone();
    let first = good_voice.s3gen.embedding[0].to_le_bytes();
    let pos = v.windows(4).position(|w| w == first).unwrap();
    v[pos..pos + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    cases.push(("a saved voice with a NaN", v));
    // voices that are well-formed but do not fit this model
    let mut narrow = good_voice.as_ref().clone();
    narrow.t3.speaker_emb.pop();
    cases.push(("a voice with a 255-wide speaker embedding", narrow.to_safetensors(&VoiceMeta::new()).unwrap()));
    let mut wide = good_voice.as_ref().clone();
    wide.s3gen.embedding.push(0.5);
    cases.push(("a voice with a 65-wide x-vector", wide.to_safetensors(&VoiceMeta::new()).unwrap()));
    let mut token = good_voice.as_ref().clone();
    token.s3gen.prompt_token[0] = 7000;
    cases.push(("a voice with a prompt token outside S3Gen's vocabulary", token.to_safetensors(&VoiceMeta::new()).unwrap()));
    let mut t3token = good_voice.as_ref().clone();
    t3token.t3.cond_prompt_speech_tokens[0] = 9000;
    cases.push(("a voice with a T3 prompt token outside T3's vocabulary", t3token.to_safetensors(&VoiceMeta::new()).unwrap()));
    assert!(cases.len() >= 30, "the corpus has {} files", cases.len());

    let (cached_before, _, _) = engine.voice_cache_stats();
    let mut failures = Vec::new();
    for (what, bytes) in &cases {
        let name = format!("{}.bin", what.replace(' ', "_"));
        match catch_unwind(AssertUnwindSafe(|| engine.voice_from_bytes(bytes, &name))) {
            Err(_) => failures.push(format!("{what}: PANICKED")),
            Ok(Ok(_)) => failures.push(format!("{what}: accepted")),
            Ok(Err(e)) => {
                let msg = e.to_string();
                if e.kind() != ErrorKind::BadInput {
                    failures.push(format!("{what}: kind {:?} ({msg})", e.kind()));
                } else if !msg.contains(&name) && !msg.contains("voice") {
                    failures.push(format!("{what}: the message names neither the file nor the voice: {msg}"));
                }
                println!("{what:<55} -> {msg}");
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(engine.voice_cache_stats().0, cached_before, "a refused voice is not cached");
    // a directory, and a missing file
    for p in [scratch.clone(), scratch.join("missing.wav")] {
        let e = engine.voice_from_file(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{}: {e}", p.display());
    }
}
