//! `tts speak` and `tts info` end to end, through the binary, on the tiny model of the
//! `tts_generate_a` fixture (T3 and S3Gen at small widths, its tokenizer and built-in voice; at
//! most 30 speech tokens, so every run asks for 8): texts from arguments, files and stdin to WAV
//! and raw PCM files and to stdout, seeds, long texts, `--quiet`, and the default model found in an
//! offline Hugging Face cache (or missing from it).
//!
//! Every run of `tts` is hermetic (offline, a scratch Hugging Face cache: `common::tts_command`) and
//! uses `--backend cpu`. The texts are fresh random sentences (the seed is printed).
use std::path::{Path, PathBuf};

use tts_kernels::testing::{fresh_seed, random_i32};

mod common;

use common::{TtsRun, fixture, generate_model_dir, run_tts, scratch_dir, tree, tts_command};

/// Speech tokens per segment in these tests (the fixture model takes at most 30).
const MAX_NEW_TOKENS: &str = "8";

/// Output samples per speech token (24 kHz, 25 tokens per second).
const SAMPLES_PER_TOKEN: usize = tts_engine::stream::SAMPLES_PER_TOKEN;

const WORDS: &[&str] = &[
    "the", "river", "quietly", "carried", "seven", "paper", "boats", "toward", "a", "distant", "harbor", "while", "children",
    "watched", "from", "old", "stone", "bridge", "morning", "light", "was", "soft", "and", "golden", "every", "window", "opened",
    "one", "by", "bakers", "sang", "songs", "about", "winter", "apples", "clocks", "rain", "lanterns",
];

/// Sentences of random words (5 to 9 each), at least `chars` characters in all.
fn sentences(seed: u64, chars: usize) -> String {
    let picks = random_i32(seed, 4 * chars + 16, 0, WORDS.len() as i32);
    let lens = random_i32(seed ^ 0x9e37_79b9, chars + 1, 5, 10);
    let (mut text, mut next, mut lens) = (String::new(), picks.iter(), lens.iter());
    while text.chars().count() < chars {
        let n = *lens.next().unwrap() as usize;
        let words: Vec<&str> = next.by_ref().take(n).map(|&i| WORDS[i as usize]).collect();
        let mut s = words.join(" ");
        s[..1].make_ascii_uppercase();
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&s);
        text.push('.');
    }
    text
}

/// Two random words and a full stop: one segment for the fixture model.
fn short_text(seed: u64) -> String {
    let mut t = sentences(seed, 1).split(' ').take(2).collect::<Vec<_>>().join(" ");
    t.push('.');
    t
}

/// A scratch folder to run in, the model (a scratch copy of the fixture) and an empty HF cache.
struct Bench {
    dir: PathBuf,
    model: PathBuf,
    cache: PathBuf,
}

impl Bench {
    fn new(tag: &str) -> Bench {
        Bench { dir: scratch_dir(tag), model: generate_model_dir(), cache: scratch_dir(&format!("{tag}-hf-cache")) }
    }

    /// `tts speak --model MODEL --backend cpu --max-new-tokens 8 ARGS` in the scratch folder.
    fn speak(&self, args: &[&str], stdin: Option<Vec<u8>>) -> TtsRun {
        let mut cmd = tts_command(&self.cache);
        cmd.current_dir(&self.dir).arg("speak").arg("--model").arg(&self.model);
        cmd.args(["--backend", "cpu", "--max-new-tokens", MAX_NEW_TOKENS]).args(args);
        run_tts(cmd, stdin)
    }

    /// [`Bench::speak`], which must succeed.
    fn speak_ok(&self, args: &[&str], stdin: Option<Vec<u8>>) -> TtsRun {
        let run = self.speak(args, stdin);
        assert_eq!(run.code, Some(0), "tts speak {args:?}:\nstdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run
    }

    /// [`Bench::speak_ok`] with `--seed S`, for a fresh `S` that speaks: the fixture's random T3
    /// samples its stop token first for about one segment in thirty (`Error::NoSpeechTokens`, exit
    /// code 3: a legitimate outcome of random weights), so a seed where it does is passed over.
    /// Returns the run and the seed.
    fn speak_some_seed(&self, args: &[&str], stdin: Option<Vec<u8>>) -> (TtsRun, String) {
        for attempt in 0..30 {
            let seed = (fresh_seed() % 1_000_000_000).to_string();
            let mut with_seed = args.to_vec();
            with_seed.extend(["--seed", &seed]);
            let run = self.speak(&with_seed, stdin.clone());
            if run.code == Some(3) && run.stderr.contains("T3 produced no speech tokens") {
                eprintln!("attempt {attempt}: seed {seed}: T3 stopped a segment at once; another seed");
                continue;
            }
            assert_eq!(run.code, Some(0), "tts speak {with_seed:?}:\nstdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
            assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            eprintln!("--seed {seed}");
            return (run, seed);
        }
        panic!("tts speak {args:?}: no seed of 30 spoke every segment");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for d in [&self.dir, &self.model, &self.cache] {
            std::fs::remove_dir_all(d).ok();
        }
    }
}

/// The samples of a 16-bit WAV file, after checking that it is mono 24 kHz 16-bit PCM.
fn read_s16(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
        (1, 24_000, 16, hound::SampleFormat::Int),
        "{}",
        path.display()
    );
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// The samples of a 32-bit float WAV file (mono, 24 kHz).
fn read_f32(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
        (1, 24_000, 32, hound::SampleFormat::Float),
        "{}",
        path.display()
    );
    r.samples::<f32>().map(|s| s.unwrap()).collect()
}

/// Audio that is there: not empty, not silent (some sample past 1% of full scale), not constant.
fn assert_audible(samples: &[i16], what: &str) {
    assert!(!samples.is_empty(), "{what}: no samples");
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak > 327, "{what}: silent (peak {peak})");
    assert!(samples.iter().any(|&s| s != samples[0]), "{what}: constant");
}

/// The same request's audio in two batches: the same length, samples within 2/32767 (a batch's
/// float sums may round differently from one row's).
fn assert_same_audio(a: &[i16], b: &[i16], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a.iter().zip(b).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap_or(0);
    assert!(worst <= 2, "{what}: samples differ by up to {worst}/32767");
    if worst > 0 {
        eprintln!("{what}: samples differ by up to {worst}/32767");
    }
}

/// The value of `key=` in the `speak ...` machine line of `text`.
fn machine_field(text: &str, tag: &str, key: &str) -> String {
    let line = text.lines().find(|l| l.starts_with(&format!("{tag} "))).unwrap_or_else(|| panic!("no `{tag}` line in:\n{text}"));
    let prefix = format!("{key}=");
    line.split(' ').find_map(|f| f.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key} in {line}")).to_string()
}

#[test]
fn a_positional_text_becomes_a_16_bit_mono_24_khz_wav_and_a_summary() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-positional");
    let text = short_text(seed);
    let (run, _) = b.speak_some_seed(&[&text, "-o", "speech.wav"], None);
    let samples = read_s16(&b.path("speech.wav"));
    assert_audible(&samples, &text);
    assert!(samples.len() <= 8 * SAMPLES_PER_TOKEN, "{} samples from at most 8 tokens", samples.len());
    // the summary on stdout tells what was written
    let out = run.stdout_text();
    let seconds = samples.len() as f64 / 24_000.0;
    assert!(out.contains("speech.wav: 1 segment(s), "), "{out}");
    assert!(out.contains(&format!("{seconds:.2} s of audio")), "{out}");
    assert!(out.contains("1 text(s) in "), "{out}");
    assert_eq!(machine_field(&out, "speak", "texts"), "1");
    assert_eq!(machine_field(&out, "speak", "backend"), "cpu");
    assert_eq!(machine_field(&out, "speak", "audio_s"), format!("{seconds:.3}"));
    let tokens: usize = machine_field(&out, "speak", "speech_tokens").parse().unwrap();
    assert!((1..=8).contains(&tokens), "{out}");
    // a WAV's length is whole tokens of audio (the 20 ms fade-in is part of it)
    assert_eq!(samples.len(), tokens * SAMPLES_PER_TOKEN, "{out}");
    assert_eq!(tree(&b.dir), vec![PathBuf::from("speech.wav")], "nothing else is written (no .partial file)");
}

#[test]
fn several_texts_files_and_stdin_each_give_their_own_output() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-several");
    let (first, second) = (short_text(seed), sentences(seed ^ 1, 60));
    let (run, seed_arg) = b.speak_some_seed(&[&first, "--text", &second, "-o", "out.wav"], None);
    assert_eq!(tree(&b.dir), vec![PathBuf::from("out_0.wav"), PathBuf::from("out_1.wav")]);
    let out = run.stdout_text();
    assert!(out.contains("out_0.wav: 1 segment(s)") && out.contains("out_1.wav: "), "{out}");
    assert!(out.contains("2 text(s) in "), "{out}");
    let both = [read_s16(&b.path("out_0.wav")), read_s16(&b.path("out_1.wav"))];
    for (i, s) in both.iter().enumerate() {
        assert_audible(s, &format!("text {i}"));
    }
    // each text of the batch sounds as it does alone (the same seed)
    for (i, text) in [&first, &second].into_iter().enumerate() {
        let name = format!("alone_{i}.wav");
        b.speak_ok(&[text, "-o", &name, "--seed", &seed_arg], None);
        assert_same_audio(&both[i], &read_s16(&b.path(&name)), &format!("text {i}: batched vs alone"));
    }

    // a UTF-8 file (not ASCII) and stdin: the same audio as the same text given as an argument
    let text = format!("Café crème, naïve façade: {}", sentences(seed ^ 2, 10));
    std::fs::write(b.path("text.txt"), &text).unwrap();
    let (_, seed_arg) = b.speak_some_seed(&[&text, "-o", "arg.wav"], None);
    let run = b.speak_ok(&["--file", "text.txt", "-o", "file.wav", "--seed", &seed_arg], None);
    assert!(run.stdout_text().contains("file.wav: "), "{}", run.stdout_text());
    b.speak_ok(&["-", "-o", "stdin.wav", "--seed", &seed_arg], Some(text.clone().into_bytes()));
    let arg = std::fs::read(b.path("arg.wav")).unwrap();
    assert_audible(&read_s16(&b.path("arg.wav")), &text);
    assert!(std::fs::read(b.path("file.wav")).unwrap() == arg, "--file differs from the same text as an argument");
    assert!(std::fs::read(b.path("stdin.wav")).unwrap() == arg, "stdin differs from the same text as an argument");
    // a file and stdin together: two outputs, in order (texts, then files)
    let (_, s) = b.speak_some_seed(&["--file", "text.txt", "-", "-o", "mixed.wav"], Some(first.clone().into_bytes()));
    b.speak_ok(&[&first, "-o", "first.wav", "--seed", &s], None);
    b.speak_ok(&[&text, "-o", "text.wav", "--seed", &s], None);
    assert_same_audio(&read_s16(&b.path("mixed_0.wav")), &read_s16(&b.path("first.wav")), "stdin, the first output");
    assert_same_audio(&read_s16(&b.path("mixed_1.wav")), &read_s16(&b.path("text.wav")), "--file, the second output");
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_other_samples() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-seeds");
    let text = sentences(seed, 30);
    let (_, s) = b.speak_some_seed(&[&text, "-o", "a.wav"], None);
    b.speak_ok(&[&text, "-o", "b.wav", "--seed", &s], None);
    let (_, other) = b.speak_some_seed(&[&text, "-o", "c.wav"], None);
    assert_ne!(s, other);
    let bytes = |name: &str| std::fs::read(b.path(name)).unwrap();
    let (a, c) = (bytes("a.wav"), bytes("c.wav"));
    assert!(a == bytes("b.wav"), "seed {s}: two runs differ");
    let (sa, sc) = (read_s16(&b.path("a.wav")), read_s16(&b.path("c.wav")));
    assert_audible(&sc, "another seed");
    let n = sa.len().min(sc.len());
    assert!(sa.len() != sc.len() || sa[..n] != sc[..n], "seeds {s} and {other} give the same samples");
    assert!(a != c);
}

#[test]
fn raw_f32_pcm_is_the_f32_wav_samples_and_s16_is_their_rounding() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-formats");
    let text = sentences(seed, 40);
    let (_, s) = b.speak_some_seed(&[&text, "-o", "f32.wav", "--sample-format", "f32"], None);
    b.speak_ok(&[&text, "-o", "f32.pcm", "--format", "pcm", "--sample-format", "f32", "--seed", &s], None);
    b.speak_ok(&[&text, "-o", "s16.wav", "--sample-format", "s16", "--seed", &s], None);
    b.speak_ok(&[&text, "-o", "s16.pcm", "--format", "pcm", "--seed", &s], None);
    let wav = read_f32(&b.path("f32.wav"));
    assert!(!wav.is_empty() && wav.iter().all(|v| v.is_finite() && v.abs() <= 1.0), "finite samples in [−1, 1]");
    let pcm = std::fs::read(b.path("f32.pcm")).unwrap();
    assert_eq!(pcm.len(), 4 * wav.len(), "raw f32: 4 bytes a sample, no header");
    let raw: Vec<f32> = pcm.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(raw.iter().zip(&wav).all(|(a, b)| a.to_bits() == b.to_bits()), "raw f32 differs from the f32 WAV");
    let s16 = read_s16(&b.path("s16.wav"));
    let want: Vec<i16> = wav.iter().map(|v| (v.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect();
    assert_eq!(s16.len(), want.len());
    let bad = s16.iter().zip(&want).position(|(a, b)| a != b);
    assert!(bad.is_none(), "s16 sample {bad:?} is not round(clamp(f32, −1, 1)·32767)");
    assert_audible(&s16, &text);
    // raw s16: the WAV's data alone
    let raw16 = std::fs::read(b.path("s16.pcm")).unwrap();
    assert_eq!(raw16, s16.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
}

#[test]
fn streaming_to_stdout_gives_a_wav_of_unknown_length_with_the_file_s_length() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-stream");
    // several segments (the model takes 28 text tokens at most), so several chunks
    let text = sentences(seed, 160);
    let (file_run, s) = b.speak_some_seed(&[&text, "-o", "file.wav"], None);
    let run = b.speak_ok(&[&text, "-o", "-", "--seed", &s], None);
    let file = read_s16(&b.path("file.wav"));
    let segments: usize =
        file_run.stdout_text().split("file.wav: ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(segments >= 2, "{}", file_run.stdout_text());

    let out = &run.stdout;
    assert!(out.len() >= 44, "{} bytes on stdout", out.len());
    let u32_at = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
    let u16_at = |i: usize| u16::from_le_bytes(out[i..i + 2].try_into().unwrap());
    assert_eq!((&out[0..4], &out[8..16], &out[36..40]), (&b"RIFF"[..], &b"WAVEfmt "[..], &b"data"[..]));
    assert_eq!((u32_at(4), u32_at(40)), (0xFFFF_FFFF, 0xFFFF_FFFF), "a streamed WAV's sizes are unknown");
    assert_eq!((u32_at(16), u16_at(20), u16_at(22), u32_at(24)), (16, 1, 1, 24_000), "PCM, mono, 24 kHz");
    assert_eq!((u32_at(28), u16_at(32), u16_at(34)), (48_000, 2, 16), "16-bit");
    // nothing but the samples after the header: every message went to stderr
    let data = &out[44..];
    assert_eq!(data.len() % 2, 0);
    let streamed: Vec<i16> = data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(streamed.len(), file.len(), "chunking changed the length: streamed vs file samples");
    assert_audible(&streamed, "stdout");
    assert!(!run.stdout_text().contains("backend") && !run.stdout_text().contains("model:"), "a message on stdout");
    assert!(run.stderr.contains("backend: cpu") && run.stderr.contains("stdout: "), "{}", run.stderr);
    let chunks: usize = machine_field(&run.stderr, "speak-stream", "chunks").parse().unwrap();
    assert!(chunks >= segments, "{} chunks for {segments} segments", chunks);
    assert_eq!(machine_field(&run.stderr, "speak-stream", "audio_s"), format!("{:.3}", file.len() as f64 / 24_000.0));
    assert_eq!(tree(&b.dir), vec![PathBuf::from("file.wav")], "streaming wrote no file");
}

#[test]
fn a_long_text_is_split_into_segments_and_joined() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-long");
    let text = sentences(seed, 600);
    let t = std::time::Instant::now();
    let (run, _) = b.speak_some_seed(&[&text, "-o", "long.wav", "--cfm-steps", "4"], None);
    eprintln!("{} characters in {:.1} s", text.chars().count(), t.elapsed().as_secs_f64());
    let out = run.stdout_text();
    let segments: usize = out.split("long.wav: ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    // a segment holds at most 28 text tokens of this model: 600 characters take ten segments or more
    assert!(segments >= 600 / 60, "{segments} segments for 600 characters: {out}");
    let samples = read_s16(&b.path("long.wav"));
    assert_audible(&samples, "a long text");
    let one_segment = 8 * SAMPLES_PER_TOKEN;
    assert!(samples.len() > 2 * one_segment, "{} samples, one segment has at most {one_segment}", samples.len());
    let tokens: usize = machine_field(&out, "speak", "speech_tokens").parse().unwrap();
    // every segment's audio (whole tokens), joined: overlaps of 10 ms (240 samples) at most where a
    // clause was cut, and a pause after each of the text's sentences
    let spoken = tokens * SAMPLES_PER_TOKEN;
    assert!(samples.len() >= spoken - (segments - 1) * 240, "{} samples for {spoken} spoken: {out}", samples.len());
    assert!(samples.len() > spoken, "no pauses: {} samples for {spoken} spoken", samples.len());
}

#[test]
fn quiet_prints_nothing_on_success() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let b = Bench::new("cli-quiet");
    let text = sentences(seed, 30);
    // a seed that speaks (a failure prints its error)
    let (_, s) = b.speak_some_seed(&[&text, "-o", "loud.wav"], None);
    for quiet in ["--quiet", "-q"] {
        let name = format!("{}.wav", quiet.trim_start_matches('-'));
        let run = b.speak_ok(&[&text, "-o", &name, quiet, "--seed", &s], None);
        assert!(run.stdout.is_empty(), "{quiet}: stdout {:?}", run.stdout_text());
        assert!(run.stderr.is_empty(), "{quiet}: stderr {:?}", run.stderr);
        assert_audible(&read_s16(&b.path(&name)), quiet);
    }
    // streamed: the audio alone on stdout, nothing on stderr
    let run = b.speak_ok(&[&text, "-o", "-", "--quiet", "--seed", &s], None);
    assert!(run.stderr.is_empty(), "stderr {:?}", run.stderr);
    assert_eq!(run.stdout.len(), std::fs::read(b.path("quiet.wav")).unwrap().len());
}

/// A random 40-hex-digit commit id.
fn commit_id(seed: u64) -> String {
    random_i32(seed, 40, 0, 16).iter().map(|&d| char::from_digit(d as u32, 16).unwrap()).collect()
}

/// The files of the default model's snapshot: the five required ones (`ve.safetensors` from a
/// fixture with a VoiceEncoder) and `config.json`, as (name, source).
fn snapshot_files() -> Vec<(&'static str, PathBuf)> {
    let generate = fixture(common::GENERATE_FIXTURE);
    let mut files: Vec<(&str, PathBuf)> = tts_engine::hub::REQUIRED_FILES
        .iter()
        .chain(tts_engine::hub::OPTIONAL_FILES)
        .map(|&f| match f {
            "ve.safetensors" => (f, fixture("prepare_conditionals_8k_mono_pcm16_14s").join(f)),
            _ => (f, generate.join(f)),
        })
        .collect();
    files.sort();
    files
}

/// A Hugging Face cache holding the default model at `commit` as `huggingface_hub` lays it out:
/// `refs/main`, the files as blobs named by their SHA-256, and the snapshot's entries as relative
/// symlinks to them.
fn cache_with_default_model(cache: &Path, commit: &str) {
    use sha2::Digest;
    let repo = cache.join("models--ResembleAI--chatterbox");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for (name, from) in snapshot_files() {
        let bytes = std::fs::read(&from).unwrap();
        let blob: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(repo.join("blobs").join(&blob), &bytes).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snapshot.join(name)).unwrap();
    }
}

#[test]
fn the_default_model_comes_from_an_offline_hf_cache_or_its_missing_files_are_listed() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let work = scratch_dir("cli-default-model");
    let cache = scratch_dir("cli-default-model-hf-cache");
    let commit = commit_id(seed);
    cache_with_default_model(&cache, &commit);
    let speak = |cache: &Path| {
        let mut cmd = tts_command(cache);
        cmd.current_dir(&work).args(["speak", "Hello.", "-o", "hello.wav"]);
        cmd.args(["--backend", "cpu", "--max-new-tokens", MAX_NEW_TOKENS]);
        run_tts(cmd, None)
    };

    let run = speak(&cache);
    assert_eq!(run.code, Some(0), "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    assert_audible(&read_s16(&work.join("hello.wav")), "the default model");
    let snapshot = cache.join("models--ResembleAI--chatterbox/snapshots").join(&commit);
    assert!(run.stdout_text().contains(snapshot.to_str().unwrap()), "the model named: {}", run.stdout_text());

    let mut cmd = tts_command(&cache);
    cmd.current_dir(&work).args(["info", "--backend", "cpu"]);
    let info = run_tts(cmd, None);
    let text = info.stdout_text();
    assert_eq!(info.code, Some(0), "stdout: {text}\nstderr: {}", info.stderr);
    assert!(text.lines().any(|l| l == "model: ResembleAI/chatterbox"), "{text}");
    assert!(text.lines().any(|l| l == format!("revision: main (commit {commit})")), "{text}");
    assert!(text.contains("backend: cpu"), "{text}");
    for (name, from) in snapshot_files() {
        let size = std::fs::metadata(&from).unwrap().len();
        let listed = text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 3 && f[0] == name && f[1] == size.to_string() && f[2] == "bytes"
        });
        assert!(listed, "{name} ({size} bytes) is not listed:\n{text}");
    }
    // the dimensions come from the snapshot's config.json
    assert!(text.contains("at most 30 tokens"), "{text}");
    std::fs::remove_file(work.join("hello.wav")).unwrap();

    // an empty cache: exit code 2, the missing files and how to get them, no output
    let empty = scratch_dir("cli-default-model-empty-hf-cache");
    let run = speak(&empty);
    assert_eq!(run.code, Some(2), "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for f in tts_engine::hub::REQUIRED_FILES {
        assert!(run.stderr.contains(f), "{f} is not listed: {}", run.stderr);
    }
    for hint in ["ResembleAI/chatterbox", "huggingface-cli download ResembleAI/chatterbox", "--model DIR", "HF_HUB_OFFLINE"] {
        assert!(run.stderr.contains(hint), "no {hint:?}: {}", run.stderr);
    }
    assert!(tree(&work).is_empty(), "left behind: {:?}", tree(&work));
    assert!(tree(&empty).is_empty(), "the empty cache was written to: {:?}", tree(&empty));
    for d in [&work, &cache, &empty] {
        std::fs::remove_dir_all(d).ok();
    }
}
