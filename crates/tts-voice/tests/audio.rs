//! Decoding reference audio: every WAV sample format and several channel counts (written here with
//! hound, 64-bit float by hand), FLAC and MP3 (written by soundfile, tools/reference/audio_ref.py),
//! each read back as `librosa.load(path, sr=None)` gives it; and a table of bad inputs, each an
//! `Error::Audio` naming the input, none panicking.
mod common;

use std::io::Cursor;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tts_voice::Error;
use tts_voice::audio::{Audio, decode, load};

/// A WAV file from its parts: `fmt ` with `tag` (1 PCM, 3 IEEE float), then `data`. `data_size`
/// overrides the data chunk's size field.
fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], data_size: Option<u32>) -> Vec<u8> {
    let block = channels as u32 * bits as u32 / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * block).to_le_bytes());
    v.extend_from_slice(&(block as u16).to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_size.unwrap_or(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// `v` with its RIFF size field set to cover a data chunk of `data_size` bytes (a WAV whose header
/// announces more than the file holds, as a cut-off download has).
fn riff_for(mut v: Vec<u8>, data_size: u32) -> Vec<u8> {
    v[4..8].copy_from_slice(&(36 + data_size).to_le_bytes());
    v
}

fn f32_wav(samples: &[f32], channels: u16, rate: u32) -> Vec<u8> {
    wav(3, channels, rate, 32, &samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>(), None)
}

/// soundfile's float32 mean over channels of interleaved float32 values.
fn mono_of(interleaved: &[f32], channels: usize) -> Vec<f32> {
    interleaved
        .chunks_exact(channels)
        .map(|f| {
            let s = f[1..].iter().fold(f[0], |a, &b| a + b);
            if channels > 1 { s / channels as f32 } else { s }
        })
        .collect()
}

/// A decoding result in a line (not the samples).
fn outcome(r: &tts_voice::Result<Audio>) -> String {
    match r {
        Ok(a) => format!("Ok({} samples at {} Hz)", a.samples.len(), a.sample_rate),
        Err(e) => format!("{e:?}"),
    }
}

/// A random signal of `frames` × `channels` in [-0.9, 0.9].
fn signal(rng: &mut StdRng, frames: usize, channels: usize) -> Vec<f64> {
    (0..frames * channels).map(|_| rng.random_range(-0.9..0.9)).collect()
}

#[test]
fn every_wav_sample_format_and_channel_count_reads_as_soundfile_does() {
    let seed = tts_kernels::testing::fresh_seed();
    println!("seed {seed} (TTS_TEST_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checked = 0;
    for channels in [1u16, 2, 3, 6] {
        let rate = [8000u32, 16000, 22050, 44100, 48000][rng.random_range(0..5)];
        let frames = rng.random_range(100..3000);
        let x = signal(&mut rng, frames, channels as usize);
        // (format, integer PCM bits or 0 for float32) through hound; expected = soundfile's float32
        for bits in [8u16, 16, 24, 32, 0] {
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: if bits == 0 { 32 } else { bits },
                sample_format: if bits == 0 { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
            };
            let mut bytes = Vec::new();
            let mut want = Vec::with_capacity(x.len());
            {
                let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
                for &v in &x {
                    match bits {
                        0 => {
                            w.write_sample(v as f32).unwrap();
                            want.push(v as f32);
                        }
                        8 => {
                            let q = (v * 127.0).round() as i8;
                            w.write_sample(q).unwrap();
                            want.push(q as f32 / 128.0);
                        }
                        16 => {
                            let q = (v * 32767.0).round() as i16;
                            w.write_sample(q).unwrap();
                            want.push(q as f32 / 32768.0);
                        }
                        24 => {
                            let q = (v * 8_388_607.0).round() as i32;
                            w.write_sample(q).unwrap();
                            want.push(q as f32 / 8_388_608.0);
                        }
                        _ => {
                            let q = (v * 2_147_483_647.0).round() as i32;
                            w.write_sample(q).unwrap();
                            want.push(q as f32 / 2_147_483_648.0);
                        }
                    }
                }
                w.finalize().unwrap();
            }
            let got = decode(&bytes, "test.wav").unwrap_or_else(|e| panic!("{channels} ch, {bits} bits: {e}"));
            assert_eq!(
                got,
                Audio { samples: mono_of(&want, channels as usize), sample_rate: rate },
                "{channels} ch, {bits} bits"
            );
            checked += 1;
        }
        // 64-bit float (hound cannot write it): rounded to float32 as soundfile does
        let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = decode(&wav(3, channels, rate, 64, &data, None), "f64.wav").unwrap();
        let want: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        assert_eq!(got, Audio { samples: mono_of(&want, channels as usize), sample_rate: rate }, "{channels} ch, float64");
        checked += 1;
    }
    println!("{checked} WAV formats read back exactly");
}

#[test]
fn load_reads_a_file_by_path() {
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.03).sin() * 0.5).collect();
    let path = std::env::temp_dir().join(format!("tts-voice-audio-{}.wav", std::process::id()));
    std::fs::write(&path, f32_wav(&x, 1, 16000)).unwrap();
    let got = load(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(got.unwrap(), Audio { samples: x, sample_rate: 16000 });
}

/// A fmt chunk that straddles the end of the part `load` checks before decoding (64 KiB; after a
/// chunk the decoder skips) is left to the decoder, not taken for a truncated header.
#[test]
fn a_late_fmt_chunk_is_read() {
    let x: Vec<f32> = (0..500).map(|i| (i as f32 * 0.07).sin() * 0.5).collect();
    let plain = f32_wav(&x, 1, 16000);
    let junk = vec![0u8; 65_506]; // the fmt chunk starts at byte 65,526
    let mut v = plain[..12].to_vec();
    v.extend_from_slice(b"JUNK");
    v.extend_from_slice(&(junk.len() as u32).to_le_bytes());
    v.extend_from_slice(&junk);
    v.extend_from_slice(&plain[12..]);
    let riff = (v.len() - 8) as u32;
    v[4..8].copy_from_slice(&riff.to_le_bytes());
    let path = std::env::temp_dir().join(format!("tts-voice-late-fmt-{}.wav", std::process::id()));
    std::fs::write(&path, &v).unwrap();
    let got = load(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(got.unwrap(), Audio { samples: x.clone(), sample_rate: 16000 });
    assert_eq!(decode(&v, "late.wav").unwrap(), Audio { samples: x, sample_rate: 16000 });
}

/// Files soundfile wrote, against `librosa.load(path, sr=None)` of them.
#[test]
fn flac_mp3_and_multichannel_wav_read_as_librosa_load() {
    let r = common::reference();
    for (file, rate, max_abs, max_rel_l2) in [
        ("flac16_stereo.flac", 22050, 0.0, 0.0),
        ("flac24_stereo.flac", 22050, 0.0, 0.0),
        ("wav24_3ch.wav", 22050, 6e-8, 1e-7),
        // a different MP3 decoder (symphonia, not mpg123): agreement to the decoders' precision
        // (6.7e-8 measured on the first); MPEG-1 at 22.05 (stereo), 44.1 and 48 kHz, MPEG-2 at
        // 16 kHz, MPEG-2.5 at 8 kHz
        ("mp3_stereo.mp3", 22050, 1e-6, 1e-5),
        ("mp3_mono_44k.mp3", 44100, 1e-6, 1e-5),
        ("mp3_stereo_48k.mp3", 48000, 1e-6, 1e-5),
        ("mp3_mono_16k.mp3", 16000, 1e-6, 1e-5),
        ("mp3_mono_8k.mp3", 8000, 1e-6, 1e-5),
    ] {
        let got = load(&common::data_dir().join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.sample_rate, rate, "{file}");
        let stem = file.split('.').next().unwrap();
        let want = &r[&format!("load_{stem}")];
        let (max, rel) = common::errors(&got.samples, want);
        println!("{file}: {} samples, max abs err {max:.2e}, rel L2 {rel:.2e}", got.samples.len());
        assert!(max <= max_abs && rel <= max_rel_l2, "{file}: max abs err {max:.3e}, rel L2 {rel:.3e}");
    }
}

/// Damaged copies of real files (random bytes overwritten, fresh seed): each decodes or is an
/// `Error::Audio`; none panics or hangs.
#[test]
fn damaged_files_decode_or_fail_cleanly() {
    let seed = tts_kernels::testing::fresh_seed();
    println!("seed {seed} (TTS_TEST_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut ok, mut refused) = (0, 0);
    for file in ["flac16_stereo.flac", "mp3_stereo.mp3", "mp3_stereo_48k.mp3", "mp3_mono_8k.mp3", "wav24_3ch.wav"] {
        let orig = std::fs::read(common::data_dir().join(file)).unwrap();
        for _ in 0..60 {
            let mut b = orig.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            if rng.random_bool(0.3) {
                b.truncate(rng.random_range(1..b.len()));
            }
            match std::panic::catch_unwind(|| decode(&b, file)).unwrap_or_else(|_| panic!("{file}: panicked")) {
                Ok(a) => {
                    assert!(!a.samples.is_empty() && a.samples.iter().all(|v| v.is_finite()));
                    ok += 1;
                }
                Err(Error::Audio { what, .. }) => {
                    assert_eq!(what, file);
                    refused += 1;
                }
                Err(e) => panic!("{file}: {e:?} is not Error::Audio"),
            }
        }
    }
    println!("{ok} damaged files decoded, {refused} refused");
}

/// Every bad input is an `Error::Audio` that names it; none panics.
#[test]
fn bad_inputs_are_audio_errors() {
    let seed = tts_kernels::testing::fresh_seed();
    println!("seed {seed} (TTS_TEST_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tone: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    let good = f32_wav(&tone, 1, 16000);
    let pcm16: Vec<u8> = tone.iter().flat_map(|&v| ((v * 32767.0) as i16).to_le_bytes()).collect();
    let flac = std::fs::read(common::data_dir().join("flac16_stereo.flac")).unwrap();
    let mut corrupt_flac = flac.clone();
    for b in &mut corrupt_flac[flac.len() / 2..flac.len() / 2 + 64] {
        *b ^= 0x5a;
    }
    let mut nan = tone.clone();
    nan[1234] = f32::NAN;
    let mut inf = tone.clone();
    inf[7] = f32::NEG_INFINITY;
    let quiet: Vec<f32> = (0..4000).map(|_| rng.random_range(-5e-5..5e-5)).collect();
    let mut fmt_short = good.clone();
    fmt_short[16..20].copy_from_slice(&8u32.to_le_bytes());
    let mut unknown_tag = good.clone();
    unknown_tag[20..22].copy_from_slice(&0x1234u16.to_le_bytes());
    let random: Vec<u8> = (0..rng.random_range(1..5000)).map(|_| rng.random()).collect();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", vec![], "empty"),
        ("random bytes", random, ""),
        ("a text file", b"Hello, this is not audio at all.\n".repeat(20), ""),
        ("truncated header", good[..20].to_vec(), "truncated"),
        ("header cut inside fmt", good[..30].to_vec(), "truncated"),
        ("truncated data", good[..good.len() / 2].to_vec(), "truncated"),
        ("fmt chunk size 8", fmt_short, ""),
        ("data chunk larger than the RIFF chunk", wav(1, 1, 16000, 16, &pcm16, Some(pcm16.len() as u32 * 3)), "chunk length"),
        (
            "data chunk larger than the file",
            riff_for(wav(1, 1, 16000, 16, &pcm16, Some(pcm16.len() as u32 * 3)), pcm16.len() as u32 * 3),
            "truncated",
        ),
        ("zero samples", wav(1, 1, 16000, 16, &[], None), "no samples"),
        ("0 Hz", wav(1, 1, 0, 16, &pcm16, None), "sample rate 0"),
        ("10 MHz", wav(1, 1, 10_000_000, 16, &pcm16, None), "sample rate 10000000"),
        ("999 Hz", wav(1, 1, 999, 16, &pcm16, None), "sample rate 999"),
        ("300 channels", wav(1, 300, 16000, 16, &pcm16[..600 * 2], None), "300 channels"),
        ("0 channels", wav(1, 0, 16000, 16, &pcm16, None), "0 channels"),
        ("NaN float WAV", f32_wav(&nan, 1, 16000), "sample 1234 is NaN"),
        ("infinite float WAV", f32_wav(&inf, 1, 16000), "sample 7 is -inf"),
        ("all zeros", f32_wav(&[0.0; 4000], 1, 16000), "silent"),
        ("noise below -80 dBFS", f32_wav(&quiet, 1, 16000), "silent"),
        ("an unknown WAV format tag", unknown_tag, ""),
        (
            "11 minutes announced",
            riff_for(wav(1, 1, 8000, 16, &pcm16, Some(660 * 8000 * 2)), 660 * 8000 * 2),
            "longer than 600 s",
        ),
        (
            "5 minutes at 384 kHz announced",
            riff_for(wav(1, 1, 384_000, 16, &pcm16, Some(300 * 384_000 * 2)), 300 * 384_000 * 2),
            "57600000 samples",
        ),
        ("truncated FLAC", flac[..flac.len() / 2].to_vec(), ""),
        ("corrupt FLAC", corrupt_flac, ""),
        ("a FLAC header only", flac[..42].to_vec(), ""),
    ];
    assert!(cases.len() >= 15);
    for (name, bytes, needle) in cases {
        let what = format!("{name}.bin");
        let r = std::panic::catch_unwind(|| decode(&bytes, &what));
        let r = r.unwrap_or_else(|_| panic!("{name}: panicked"));
        match r {
            Err(Error::Audio { what: w, detail }) => {
                println!("{name}: {detail}");
                assert_eq!(w, what, "{name}: the error names the input");
                assert!(detail.contains(needle), "{name}: {detail:?} does not say {needle:?}");
            }
            other => panic!("{name}: expected Error::Audio, got {}", outcome(&other)),
        }
    }
    // by path: a missing file and a directory
    for p in [std::path::PathBuf::from("/nonexistent/voice.wav"), std::env::temp_dir()] {
        match load(&p) {
            Err(Error::Audio { what, .. }) => assert_eq!(what, p.display().to_string()),
            other => panic!("{}: expected Error::Audio, got {}", p.display(), outcome(&other)),
        }
    }
}
