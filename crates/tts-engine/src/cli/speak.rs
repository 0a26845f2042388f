//! `tts speak`: texts (arguments, files or stdin) → audio files, or one text streamed to stdout.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tts_engine::bench::{ModelSource, backend_label, machine_line};
use tts_engine::output::{AudioFormat, Container, SampleFormat, StreamWriter, write_audio};
use tts_engine::speak::{Engine, SpeakOptions};
use tts_engine::stream::StreamOptions;
use tts_engine::synthesize::{Progress, Request, Voice, check_text};
use tts_engine::{Error, Result};

use super::progress::Bars;
use super::{ModelArgs, Say};

/// Where the texts come from and where the audio goes.
#[derive(clap::Args)]
pub struct SpeakArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to speak, each its own output; `-` reads one text from stdin. Any length: long texts
    /// are split into segments and joined.
    pub texts: Vec<String>,
    /// A text to speak (repeatable; the same as a positional text).
    #[arg(long = "text")]
    pub text_flag: Vec<String>,
    /// A UTF-8 text file to speak (repeatable; each file its own output).
    #[arg(long)]
    pub file: Vec<PathBuf>,
    /// The output file; `-` streams to stdout as the audio is produced (one text only). With
    /// several texts, `NAME_0.EXT`, `NAME_1.EXT`, ...
    #[arg(long, short = 'o', visible_alias = "out", default_value = "out.wav")]
    pub output: String,
    /// wav (RIFF/WAVE) or pcm (raw little-endian samples, no header).
    #[arg(long, value_enum, default_value = "wav")]
    pub format: FormatArg,
    /// s16 (16-bit integers, what players expect) or f32 (32-bit floats, the samples as produced).
    #[arg(long, value_enum, default_value = "s16")]
    pub sample_format: SampleFormatArg,
    /// auto (Cuda if usable, else Cpu), cpu, cuda, cuda:N, or emu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// The voice: a reference recording (WAV, FLAC, MP3; its first 10 s are used), a saved voice
    /// (`tts voice create`) or a `conds.pt` [default: the model's built-in voice].
    #[arg(long)]
    pub voice: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Requests (segments) decoded at once.
    #[arg(long, default_value_t = tts_engine::synthesize::BatchOptions::default().max_batch)]
    pub max_batch: usize,
    /// The character budget of a segment of a long text.
    #[arg(long, default_value_t = tts_engine::segment::DEFAULT_MAX_CHARS)]
    pub max_segment_chars: usize,
    /// No progress bars and no messages but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Every generation setting of a request (the reference's `generate()` defaults).
#[derive(clap::Args)]
pub struct SettingsArgs {
    #[arg(long, default_value_t = SpeakOptions::default().seed)]
    pub seed: u64,
    #[arg(long, default_value_t = SpeakOptions::default().exaggeration)]
    pub exaggeration: f32,
    #[arg(long, default_value_t = SpeakOptions::default().cfg_weight)]
    pub cfg_weight: f32,
    #[arg(long, default_value_t = SpeakOptions::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = SpeakOptions::default().min_p)]
    pub min_p: f32,
    #[arg(long, default_value_t = SpeakOptions::default().top_p)]
    pub top_p: f32,
    #[arg(long, default_value_t = SpeakOptions::default().repetition_penalty)]
    pub repetition_penalty: f32,
    /// Speech tokens at most per segment (25 per second) [default: 1000; with --synthetic, the
    /// length a real voice would take for the longest segment, ~15 characters per second].
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Euler steps of S3Gen's flow matching.
    #[arg(long, default_value_t = SpeakOptions::default().cfm_steps)]
    pub cfm_steps: usize,
}

impl SettingsArgs {
    pub fn options(&self) -> SpeakOptions {
        SpeakOptions {
            seed: self.seed,
            exaggeration: self.exaggeration,
            cfg_weight: self.cfg_weight,
            temperature: self.temperature,
            min_p: self.min_p,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens.unwrap_or(tts_t3::DEFAULT_MAX_NEW_TOKENS),
            cfm_steps: self.cfm_steps,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Wav,
    Pcm,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SampleFormatArg {
    S16,
    F32,
}

/// The texts of the arguments, in order: positional and `--text` ones, then files. Each is read
/// and checked (UTF-8, something to say, no control characters, not too long) before any model
/// is loaded; errors name the input.
fn read_texts(args: &SpeakArgs, max_chars: usize) -> Result<Vec<(String, String)>> {
    let mut texts = Vec::new();
    let mut stdin_used = false;
    for t in args.texts.iter().chain(&args.text_flag) {
        if t == "-" {
            if stdin_used {
                return Err(Error::Usage("`-` (stdin) may be given once"));
            }
            stdin_used = true;
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(4 * max_chars as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::Input { what: "stdin".into(), problem: format!("cannot read: {e}") })?;
            texts.push(("stdin".to_string(), utf8("stdin", bytes, max_chars)?));
        } else {
            texts.push((format!("text {}", texts.len()), t.clone()));
        }
    }
    for f in &args.file {
        let what = f.display().to_string();
        let file =
            std::fs::File::open(f).map_err(|e| Error::Input { what: what.clone(), problem: format!("cannot read: {e}") })?;
        let mut bytes = Vec::new();
        file.take(4 * max_chars as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Input { what: what.clone(), problem: format!("cannot read: {e}") })?;
        texts.push((what.clone(), utf8(&what, bytes, max_chars)?));
    }
    if texts.is_empty() {
        return Err(Error::Usage("nothing to speak: give a text, `--file FILE`, or `-` for stdin"));
    }
    for (i, (what, t)) in texts.iter().enumerate() {
        check_text(i, t, max_chars).map_err(|e| match e {
            Error::Text { problem, .. } => Error::Input { what: what.clone(), problem },
            Error::TooLong { len, max, .. } => Error::TooLong { what: format!("{what}: characters"), len, max },
            e => e,
        })?;
    }
    Ok(texts)
}

/// `bytes` as UTF-8 text, or an error naming `what` and the first bad byte.
fn utf8(what: &str, bytes: Vec<u8>, max_chars: usize) -> Result<String> {
    if bytes.len() > 4 * max_chars {
        // the read stops one byte past the limit: the length is "more than", not the input's
        return Err(Error::TooLong {
            what: format!("{what}: bytes of text (read until past the limit)"),
            len: bytes.len(),
            max: 4 * max_chars,
        });
    }
    String::from_utf8(bytes).map_err(|e| Error::Input {
        what: what.into(),
        problem: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

/// Output path `i` of `n`: the path itself for one text, `STEM_i.EXT` for several.
fn output_path(out: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().map_or("out".into(), |s| s.to_string_lossy().into_owned());
    let name = match out.extension() {
        Some(ext) => format!("{stem}_{i}.{}", ext.to_string_lossy()),
        None => format!("{stem}_{i}"),
    };
    out.with_file_name(name)
}

pub fn run(args: SpeakArgs) -> Result<bool> {
    let to_stdout = args.output == "-";
    let say = Say { quiet: args.quiet, to_stderr: to_stdout };
    // everything the user typed is checked before the model is resolved or loaded
    let mut opts = args.settings.options();
    opts.validate()?;
    let batching = tts_engine::synthesize::BatchOptions {
        max_batch: args.max_batch,
        max_segment_chars: args.max_segment_chars,
        ..Default::default()
    };
    batching.validate()?;
    let texts = read_texts(&args, batching.max_text_chars)?;
    if let Some(v) = &args.voice {
        super::check_input_file("--voice", v)?;
    }
    let format = AudioFormat {
        container: match args.format {
            FormatArg::Wav => Container::Wav,
            FormatArg::Pcm => Container::Pcm,
        },
        sample: match args.sample_format {
            SampleFormatArg::S16 => SampleFormat::S16,
            SampleFormatArg::F32 => SampleFormat::F32,
        },
    };
    let out = PathBuf::from(&args.output);
    if to_stdout {
        if texts.len() != 1 {
            return Err(Error::Usage("`-o -` streams one text: give one"));
        }
    } else {
        // every output can be written, before any work (`-o ""` names no file, one text or many)
        if out.as_os_str().is_empty() {
            return Err(Error::Setting { field: "--output", value: String::new(), expected: "a file name, or `-`".into() });
        }
        for i in 0..texts.len() {
            super::check_output_file("--output", &output_path(&out, i, texts.len()))?;
        }
    }
    let (dev, note) = tts_engine::select_device(&args.backend)?;
    let bars = Bars::new(args.quiet);
    let source = args.model.resolve(&bars)?;
    super::announce_device(&dev, note, &source, &say);
    let t = Instant::now();
    let spinner = bars.spinner("loading the model");
    let mut engine = match &source {
        ModelSource::Dir(d) => Engine::load_dir(d, &dev)?,
        ModelSource::Synthetic { seed } => {
            Engine::synthetic(tts_t3::T3Config::default(), tts_s3gen::S3GenConfig::default(), *seed, &dev)?
        }
    };
    spinner.finish_and_clear();
    engine.batching = batching;
    let load_s = t.elapsed().as_secs_f64();
    say.line(format_args!("model: {} (loaded in {load_s:.2} s)", source.describe()));
    // without --max-new-tokens: DEFAULT_MAX_NEW_TOKENS (or, synthetic, the length of the longest
    // segment), at most what the model's speech positions allow
    let model_max = engine.t3.config().max_speech_tokens;
    opts.max_new_tokens = match (args.settings.max_new_tokens, &source) {
        (Some(n), _) => n,
        (None, ModelSource::Synthetic { .. }) => {
            let longest = texts.iter().map(|(_, t)| t.chars().count().min(engine.batching.max_segment_chars)).max().unwrap_or(1);
            let n = tts_engine::synthetic::speech_tokens_for(&"x".repeat(longest)).min(model_max);
            say.line(format_args!(
                "note: the synthetic T3 never samples its stop token: each segment runs to {n} speech tokens \
                 (the longest segment at ~15 characters per second; --max-new-tokens overrides)"
            ));
            n
        }
        (None, ModelSource::Dir(_)) => tts_t3::DEFAULT_MAX_NEW_TOKENS.min(model_max),
    };
    let voice = match &args.voice {
        Some(v) => {
            let t = Instant::now();
            let spinner = bars.spinner("computing the voice");
            let voice = engine.voice_from_file(v)?;
            spinner.finish_and_clear();
            say.line(format_args!("voice: {} ({:.2} s)", v.display(), t.elapsed().as_secs_f64()));
            Voice::Ready(voice)
        }
        None => Voice::Builtin,
    };
    let comment = source.synthetic_seed().map(tts_engine::synthetic::warning);
    let requests: Vec<Request> =
        texts.iter().map(|(_, t)| Request { text: t.clone(), voice: voice.clone(), options: opts.clone() }).collect();

    if to_stdout {
        let t = Instant::now();
        let stream = engine.synthesize_stream(requests.into_iter().next().expect("one text"), StreamOptions::default())?;
        let mut w = StreamWriter::new(std::io::stdout().lock(), tts_s3gen::SAMPLE_RATE, format);
        let (mut first, mut chunks) = (None, 0usize);
        let bar = bars.spinner("speaking");
        for chunk in stream {
            let chunk = chunk?;
            chunks += 1;
            first.get_or_insert(t.elapsed().as_secs_f64());
            if !w.write(&chunk.samples, Path::new("stdout"))? {
                bar.finish_and_clear();
                say.line(format_args!("stdout: closed by its reader after {chunks} chunks: stopped"));
                return Ok(true);
            }
            bar.set_message(format!("speaking: {:.1} s of audio", w.samples as f64 / tts_s3gen::SAMPLE_RATE as f64));
        }
        bar.finish_and_clear();
        let samples = w.samples;
        drop(w.finish(Path::new("stdout"))?);
        let secs = t.elapsed().as_secs_f64();
        let audio = samples as f64 / tts_s3gen::SAMPLE_RATE as f64;
        let ttfa = first.unwrap_or(secs);
        say.line(format_args!(
            "stdout: {audio:.2} s of audio streamed in {secs:.2} s ({chunks} chunks; first audio after {ttfa:.2} s)"
        ));
        say.line(format_args!(
            "{}",
            machine_line(
                "speak-stream",
                &[
                    ("backend", backend_label(&dev).into()),
                    ("chunks", chunks.to_string()),
                    ("audio_s", format!("{audio:.3}")),
                    ("ttfa_s", format!("{ttfa:.3}")),
                    ("wall_s", format!("{secs:.3}")),
                    ("rtf", format!("{:.4}", secs / f64::max(audio, 1e-9))),
                    ("load_s", format!("{load_s:.2}")),
                    ("synthetic", super::synthetic_flag(&source)),
                ]
            )
        ));
        return Ok(true);
    }

    let t = Instant::now();
    let mut observe = bars.synthesis();
    let (results, timings) = engine.synthesize_observed(&requests, &mut |p: Progress| observe(p));
    drop(observe);
    bars.clear();
    let secs = t.elapsed().as_secs_f64();
    let n = results.len();
    let (mut audio_s, mut tokens, mut first_error) = (0.0, 0usize, None);
    for (i, (r, (what, _))) in results.into_iter().zip(&texts).enumerate() {
        let path = output_path(&out, i, n);
        match r.and_then(|a| write_audio(&path, &a.samples, a.sample_rate, format, comment.as_deref()).map(|_| a)) {
            Ok(a) => {
                audio_s += a.seconds();
                let toks: usize = a.segments.iter().map(|s| s.speech_tokens.len()).sum();
                tokens += toks;
                say.line(format_args!(
                    "{}: {} segment(s), {toks} speech tokens, {:.2} s of audio{}",
                    path.display(),
                    a.segments.len(),
                    a.seconds(),
                    if comment.is_some() { " (synthetic: noise, not speech)" } else { "" }
                ));
            }
            Err(e) => {
                // with one text, main prints the error; with several, each failed one is named
                if n > 1 {
                    eprintln!("error: {} not written ({what}): {e}", path.display());
                }
                first_error.get_or_insert(e);
            }
        }
    }
    if audio_s == 0.0 {
        return Err(first_error.unwrap_or(Error::Internal("no text was spoken and none failed".into())));
    }
    say.line(format_args!("{n} text(s) in {secs:.2} s"));
    say.line(format_args!(
        "{}",
        machine_line(
            "speak",
            &[
                ("backend", backend_label(&dev).into()),
                ("texts", n.to_string()),
                ("speech_tokens", tokens.to_string()),
                ("audio_s", format!("{audio_s:.3}")),
                ("wall_s", format!("{secs:.3}")),
                ("t3_s", format!("{:.3}", timings.t3_seconds)),
                ("s3gen_s", format!("{:.3}", timings.s3gen_seconds)),
                ("rtf", format!("{:.4}", secs / f64::max(audio_s, 1e-9))),
                ("load_s", format!("{load_s:.2}")),
                ("synthetic", super::synthetic_flag(&source)),
            ]
        )
    ));
    match first_error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}
