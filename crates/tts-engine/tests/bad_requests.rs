//! Bad requests end to end: one table of bad `tts speak` command lines (texts, stdin, files,
//! voices, every setting, batching, formats, outputs, backends), each checked for its exit code, an
//! error naming the problem, no panic, and nothing left in the output folder; and one table of bad
//! requests through `Engine::synthesize`, each in a batch beside a good request that must come out
//! as it does alone.
//!
//! Every run of `tts` is hermetic (offline, a scratch Hugging Face cache: `common::tts_command`).
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use tts_engine::speak::{Engine, SpeakOptions};
use tts_engine::synthesize::{Request, Voice};
use tts_engine::{Error, ErrorKind};
use tts_kernels::Device;
use tts_kernels::testing::fresh_seed;

mod common;

use common::{GENERATE_FIXTURE, fixture, generate_model_dir, run_tts, scratch_dir, tree, tts_command};

/// The largest `--max-new-tokens` the fixture model takes (its `max_speech_tokens`).
const MODEL_MAX_SPEECH_TOKENS: usize = 30;

/// Ten million bytes of sentences (ASCII): fifty times the 200,000 characters a text may have.
fn ten_megabytes() -> Vec<u8> {
    let sentence = b"All work and no play makes Jack a dull boy. ";
    sentence.iter().copied().cycle().take(10_000_000).collect()
}

/// One bad command line: `tts speak ARGS` (the harness adds `--model`, `--backend cpu`,
/// `--max-new-tokens 8` and `-o OUT/out.wav` unless the row gives its own), its stdin, the exit code
/// it must give and a piece of the error it must print. `{out}` in an argument is the row's own
/// (empty) output folder; `prepare` may put things there first (they must be all that is there
/// afterwards).
struct Row {
    what: &'static str,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    code: i32,
    needle: String,
    prepare: Option<fn(&Path)>,
    /// Skips the row when this says why (a condition of the machine, printed).
    skip: Option<String>,
}

fn row(what: &'static str, args: &[&str], code: i32, needle: &str) -> Row {
    Row {
        what,
        args: args.iter().map(OsString::from).collect(),
        stdin: None,
        code,
        needle: needle.into(),
        prepare: None,
        skip: None,
    }
}

impl Row {
    fn stdin(mut self, bytes: Vec<u8>) -> Row {
        self.stdin = Some(bytes);
        self
    }

    fn prepare(mut self, f: fn(&Path)) -> Row {
        self.prepare = Some(f);
        self
    }
}

/// Whether a non-root user is running: root writes into a read-only folder, so that row only tells
/// anything for others. Probed with a write into such a folder.
fn read_only_folders_refuse_writes(scratch: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch.join("read-only-probe");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let wrote = std::fs::write(dir.join("probe"), b"x").is_ok();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    !wrote
}

/// `tts speak --model MODEL ARGS`, run in `out` with `{out}` in `args` replaced by it; adds
/// `--backend cpu`, `--max-new-tokens 8` and `-o OUT/out.wav` unless `args` give their own.
fn speak(model: &Path, cache: &Path, out: &Path, args: &[OsString], stdin: Option<Vec<u8>>) -> common::TtsRun {
    let given = |flags: &[&str]| args.iter().any(|a| flags.iter().any(|f| a == *f));
    let mut all: Vec<OsString> = vec!["speak".into(), "--model".into(), model.into()];
    all.extend(args.iter().map(|a| match a.to_str() {
        Some(s) => s.replace("{out}", out.to_str().unwrap()).into(),
        None => a.clone(),
    }));
    if !given(&["--backend"]) {
        all.extend(["--backend".into(), "cpu".into()]);
    }
    if !args.iter().any(|a| a.to_str().is_some_and(|s| s.starts_with("--max-new-tokens"))) {
        all.extend(["--max-new-tokens".into(), "8".into()]);
    }
    if !given(&["-o", "--output", "--out"]) {
        all.extend(["-o".into(), out.join("out.wav").into()]);
    }
    let mut cmd = tts_command(cache);
    cmd.current_dir(out).args(&all);
    run_tts(cmd, stdin)
}

#[test]
fn every_bad_command_line_fails_cleanly_with_its_exit_code_and_an_error_naming_it() {
    let started = std::time::Instant::now();
    let model = generate_model_dir();
    let cache = scratch_dir("bad-requests-hf-cache");
    let inputs = scratch_dir("bad-requests-inputs");
    let outs = scratch_dir("bad-requests-outputs");
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let path = |name: &str| inputs.join(name).to_str().unwrap().to_string();

    // the inputs the rows read
    let sentence = "Hello there, how are you today?";
    std::fs::write(inputs.join("latin1.txt"), b"Caf\xe9 au lait, s'il vous pla\xeet.").unwrap();
    std::fs::write(inputs.join("ten-megabytes.txt"), ten_megabytes()).unwrap();
    // under the byte limit (4 per character), one character over the character limit
    std::fs::write(inputs.join("too-many-characters.txt"), "é".repeat(200_001)).unwrap();
    std::fs::create_dir(inputs.join("a-folder")).unwrap();
    std::fs::write(inputs.join("notes.wav"), format!("{sentence} (not audio: a text saved as .wav; seed {seed})")).unwrap();
    let missing = path("no-such-file.txt");
    let folder = path("a-folder");

    let mut rows = vec![
        // texts
        row("an empty text", &[""], 1, "empty"),
        row("whitespace only", &[" \t\n  "], 1, "empty"),
        row("punctuation only", &["...!?"], 1, "nothing to say"),
        row("a bell character (U+0007)", &["Hello\u{7} there."], 1, "U+0007"),
        row("an escape character (U+001B)", &["\u{1b}[31mRed text."], 1, "U+001B"),
        row("a good text then an empty one", &[sentence, "--text", ""], 1, "text 1"),
        row("invalid UTF-8 on stdin", &["-"], 1, "stdin: not UTF-8").stdin(b"Hello \xff\xfe there.".to_vec()),
        row("invalid UTF-8 in --file", &["--file", &path("latin1.txt")], 1, "not UTF-8 text (invalid byte at offset 3)"),
        row("10 MB of text on stdin", &["-"], 1, "stdin: bytes of text").stdin(ten_megabytes()),
        row("10 MB of text in --file", &["--file", &path("ten-megabytes.txt")], 1, "bytes of text"),
        row("200,001 characters in --file", &["--file", &path("too-many-characters.txt")], 1, "200001 is more than the 200000"),
        row("a --file that does not exist", &["--file", &missing], 1, "no-such-file.txt: cannot read"),
        row("a --file that is a folder", &["--file", &folder], 1, "a-folder: cannot read"),
        row("`-` twice", &["-", "-"], 1, "`-` (stdin) may be given once").stdin(sentence.as_bytes().to_vec()),
        row("`-` as positional and --text", &["-", "--text", "-"], 1, "may be given once").stdin(sentence.as_bytes().to_vec()),
        row("no text at all", &[], 1, "nothing to speak"),
        row("`-o -` with two texts", &[sentence, "--text", "Second.", "-o", "-"], 1, "`-o -` streams one text"),
        // voices
        row("a voice file that does not exist", &[sentence, "--voice", &missing], 1, "--voice"),
        row("a voice that is a folder", &[sentence, "--voice", &folder], 1, "--voice"),
        row("a voice that is not audio", &[sentence, "--voice", &path("notes.wav")], 1, "notes.wav"),
        // settings
        row("temperature NaN", &[sentence, "--temperature", "nan"], 1, "temperature = NaN"),
        row("temperature inf", &[sentence, "--temperature", "inf"], 1, "temperature = inf"),
        row("temperature 0", &[sentence, "--temperature", "0"], 1, "temperature = 0"),
        row("temperature -1", &[sentence, "--temperature=-1"], 1, "temperature = -1"),
        row("top_p NaN", &[sentence, "--top-p", "NaN"], 1, "top_p = NaN"),
        row("top_p 1.5", &[sentence, "--top-p", "1.5"], 1, "top_p = 1.5"),
        row("top_p 0", &[sentence, "--top-p", "0"], 1, "top_p = 0"),
        row("min_p NaN", &[sentence, "--min-p", "nan"], 1, "min_p = NaN"),
        row("min_p -0.1", &[sentence, "--min-p=-0.1"], 1, "min_p = -0.1"),
        row("min_p 1.5", &[sentence, "--min-p", "1.5"], 1, "min_p = 1.5"),
        row("repetition_penalty NaN", &[sentence, "--repetition-penalty", "nan"], 1, "repetition_penalty = NaN"),
        row("repetition_penalty 0", &[sentence, "--repetition-penalty", "0"], 1, "repetition_penalty = 0"),
        row("repetition_penalty inf", &[sentence, "--repetition-penalty", "inf"], 1, "repetition_penalty = inf"),
        row("cfg_weight NaN", &[sentence, "--cfg-weight", "nan"], 1, "cfg_weight = NaN"),
        row("cfg_weight inf", &[sentence, "--cfg-weight", "inf"], 1, "cfg_weight = inf"),
        row("cfg_weight -0.5", &[sentence, "--cfg-weight=-0.5"], 1, "cfg_weight = -0.5"),
        row("exaggeration NaN", &[sentence, "--exaggeration", "nan"], 1, "exaggeration = NaN"),
        row("exaggeration -inf", &[sentence, "--exaggeration=-inf"], 1, "exaggeration = -inf"),
        row("exaggeration -0.5", &[sentence, "--exaggeration=-0.5"], 1, "exaggeration = -0.5"),
        row("max_new_tokens 0", &[sentence, "--max-new-tokens", "0"], 1, "max_new_tokens = 0"),
        row(
            "max_new_tokens one above the model's",
            &[sentence, "--max-new-tokens", &(MODEL_MAX_SPEECH_TOKENS + 1).to_string()],
            1,
            &format!("max_new_tokens: {} is more than the {MODEL_MAX_SPEECH_TOKENS} allowed", MODEL_MAX_SPEECH_TOKENS + 1),
        ),
        row("max_new_tokens 2^40", &[sentence, "--max-new-tokens", "1099511627776"], 1, "max_new_tokens"),
        row("cfm_steps 0", &[sentence, "--cfm-steps", "0"], 1, "cfm_steps = 0"),
        // batching
        row("--max-batch 0", &[sentence, "--max-batch", "0"], 1, "max_batch = 0"),
        row("--max-segment-chars 0", &[sentence, "--max-segment-chars", "0"], 1, "max_segment_chars = 0"),
        row("--max-segment-chars 3", &[sentence, "--max-segment-chars", "3"], 1, "max_segment_chars = 3"),
        // values clap refuses before `tts` runs: bad input, exit code 1 (not clap's own 2)
        row("--format mp3", &[sentence, "--format", "mp3"], 1, "invalid value 'mp3' for '--format"),
        row("--sample-format s24", &[sentence, "--sample-format", "s24"], 1, "invalid value 's24' for '--sample-format"),
        row("a negative --max-batch", &[sentence, "--max-batch=-1"], 1, "invalid value '-1' for '--max-batch"),
        row("a --seed that is not a number", &[sentence, "--seed", "abc"], 1, "invalid value 'abc' for '--seed"),
        // outputs
        row("an output in a folder that does not exist", &[sentence, "-o", "{out}/no-such-folder/out.wav"], 1, "no-such-folder"),
        row("an output that is a folder", &[sentence, "-o", "{out}/taken.wav"], 1, "a file, not a folder")
            .prepare(|out| std::fs::create_dir(out.join("taken.wav")).unwrap()),
        // backends
        row("an unknown backend", &[sentence, "--backend", "gpu"], 1, "unknown backend \"gpu\""),
        row("a backend with a bad device number", &[sentence, "--backend", "cuda:x"], 1, "cuda:x"),
    ];
    // a text argument that is not UTF-8: clap refuses it
    let mut not_utf8 = row("a text argument that is not UTF-8", &[], 1, "invalid UTF-8");
    not_utf8.args.push(std::os::unix::ffi::OsStringExt::from_vec(b"Caf\xe9.".to_vec()));
    rows.push(not_utf8);
    // an output in a read-only folder: refused before the work (a probe write), exit code 1
    let mut read_only =
        row("an output in a read-only folder", &[sentence, "-o", "{out}/read-only/out.wav"], 1, "read-only/out.wav").prepare(
            |out| {
                use std::os::unix::fs::PermissionsExt;
                let dir = out.join("read-only");
                std::fs::create_dir(&dir).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            },
        );
    if !read_only_folders_refuse_writes(&outs) {
        read_only.skip = Some("this user writes into read-only folders (root): a probe write succeeded".into());
    }
    rows.push(read_only);
    assert!(rows.len() >= 40, "{} rows", rows.len());

    let mut failures = Vec::new();
    let mut skipped = 0;
    for (i, r) in rows.iter().enumerate() {
        if let Some(why) = &r.skip {
            eprintln!("row {i} ({}): SKIPPED: {why}", r.what);
            skipped += 1;
            continue;
        }
        let out = outs.join(format!("row-{i}"));
        std::fs::create_dir(&out).unwrap();
        if let Some(prepare) = r.prepare {
            prepare(&out);
        }
        let before = tree(&out);
        let t = std::time::Instant::now();
        let run = speak(&model, &cache, &out, &r.args, r.stdin.clone());
        let secs = t.elapsed().as_secs_f64();
        let first_line = run.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        eprintln!("row {i} ({}): exit {:?} in {secs:.2} s: {first_line}", r.what, run.code);
        let mut problems = Vec::new();
        if run.code != Some(r.code) {
            problems.push(format!("exit code {:?}, expected {}", run.code, r.code));
        }
        if run.stderr.contains("panicked") {
            problems.push("a panic".into());
        }
        if !run.stderr.contains(&r.needle) {
            problems.push(format!("the error does not say {:?}", r.needle));
        }
        if r.code == 1 && !run.stderr.contains("error: ") {
            problems.push("no `error: ` line".into());
        }
        let after = tree(&out);
        if after != before {
            problems.push(format!("the output folder holds {after:?} (before: {before:?})"));
        }
        if !problems.is_empty() {
            failures.push(format!("row {i} ({}): {}\n  stderr: {}", r.what, problems.join("; "), run.stderr.trim()));
        }
    }
    eprintln!(
        "{} rows, {} run, {skipped} skipped, {} failed, in {:.1} s",
        rows.len(),
        rows.len() - skipped,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "seed {seed}: {} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    for dir in [&model, &cache, &inputs, &outs] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Output paths that cannot be written (the `STEM_i.EXT` path of one of several texts, an empty
/// `-o`) are refused before the model is loaded, with exit code 1 and nothing written.
#[test]
fn output_paths_that_cannot_be_written_are_refused_before_the_work() {
    let model = generate_model_dir();
    let cache = scratch_dir("bad-outputs-hf-cache");
    let outs = scratch_dir("bad-outputs");
    type Case = (&'static str, &'static [&'static str], Option<fn(&Path)>);
    let cases: [Case; 3] = [
        (
            "two texts, the second's output a folder",
            &["One.", "Two.", "-o", "{out}/out.wav"],
            Some(|o: &Path| std::fs::create_dir(o.join("out_1.wav")).unwrap()),
        ),
        ("one text, -o \"\"", &["One.", "-o", ""], None),
        ("two texts, -o \"\"", &["One.", "Two.", "-o", ""], None),
    ];
    let mut failures = Vec::new();
    for (i, (what, args, prepare)) in cases.into_iter().enumerate() {
        let out = outs.join(format!("case-{i}"));
        std::fs::create_dir(&out).unwrap();
        if let Some(p) = prepare {
            p(&out);
        }
        let before = tree(&out);
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let run = speak(&model, &cache, &out, &args, None);
        let after = tree(&out);
        if run.code != Some(1) || after != before || run.stdout_text().contains("model:") {
            failures.push(format!(
                "{what}: exit {:?}, the folder holds {after:?}, the model was loaded: {}\n  stderr: {}",
                run.code,
                run.stdout_text().contains("model:"),
                run.stderr.trim()
            ));
        }
    }
    for dir in [&model, &cache, &outs] {
        std::fs::remove_dir_all(dir).ok();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One bad request of the API table: what it is, the request, and the error it must give (its
/// variant, checked by `is`, and its kind).
struct ApiRow {
    what: &'static str,
    request: Request,
    is: fn(&Error) -> bool,
    kind: ErrorKind,
}

/// Each bad request in a batch beside a good one (before it or after it): the bad one gets its own
/// typed error, the good one the audio it gets alone.
#[test]
fn a_bad_request_fails_alone_and_leaves_its_good_neighbour_as_it_is_alone() {
    let engine = Engine::load_dir(&fixture(GENERATE_FIXTURE), &Device::cpu()).unwrap();
    assert_eq!(engine.t3.config().max_speech_tokens, MODEL_MAX_SPEECH_TOKENS);
    // a seed that speaks: the fixture's random T3 samples its stop token first for about one
    // segment in thirty (`Error::NoSpeechTokens`, a legitimate outcome of random weights)
    let (seed, good, alone) = (0..30)
        .find_map(|_| {
            let seed = fresh_seed();
            let ok = SpeakOptions { seed, max_new_tokens: 8, cfm_steps: 3, ..Default::default() };
            let good = Request::new("Hello there, how are you today?").with_options(ok);
            match engine.synthesize(std::slice::from_ref(&good)).remove(0) {
                Ok(alone) => Some((seed, good, alone)),
                Err(e @ Error::NoSpeechTokens { .. }) => {
                    eprintln!("seed {seed}: {e}; another seed");
                    None
                }
                Err(e) => panic!("seed {seed}: {e}"),
            }
        })
        .expect("a seed of 30 that speaks");
    eprintln!("seed {seed}");
    let ok = good.options.clone();
    assert!(!alone.samples.is_empty() && alone.samples.iter().all(|v| v.is_finite()));

    let text = |t: &str| Request::new(t).with_options(ok.clone());
    let with = |edit: fn(&mut SpeakOptions)| {
        let mut o = ok.clone();
        edit(&mut o);
        Request::new("A perfectly good text.").with_options(o)
    };
    let voice = |v: Voice| Request::new("A perfectly good text.").with_options(ok.clone()).with_voice(v);
    let builtin = engine.voice.clone().unwrap();
    let mut short_embedding = builtin.clone();
    short_embedding.t3.speaker_emb.truncate(3);
    let mut foreign_token = builtin.clone();
    foreign_token.t3.cond_prompt_speech_tokens[1] = 9_000;
    let scratch = scratch_dir("bad-requests-api");
    let setting = |field: &'static str| -> fn(&Error) -> bool {
        match field {
            "temperature" => |e| matches!(e, Error::Setting { field: "temperature", .. }),
            "top_p" => |e| matches!(e, Error::Setting { field: "top_p", .. }),
            "min_p" => |e| matches!(e, Error::Setting { field: "min_p", .. }),
            "repetition_penalty" => |e| matches!(e, Error::Setting { field: "repetition_penalty", .. }),
            "cfg_weight" => |e| matches!(e, Error::Setting { field: "cfg_weight", .. }),
            "exaggeration" => |e| matches!(e, Error::Setting { field: "exaggeration", .. }),
            "max_new_tokens" => |e| matches!(e, Error::Setting { field: "max_new_tokens", .. }),
            "cfm_steps" => |e| matches!(e, Error::Setting { field: "cfm_steps", .. }),
            _ => unreachable!("{field}"),
        }
    };
    let is_text: fn(&Error) -> bool = |e| matches!(e, Error::Text { .. });
    let rows = vec![
        ApiRow { what: "an empty text", request: text(""), is: is_text, kind: ErrorKind::BadInput },
        ApiRow { what: "whitespace only", request: text("  \n\t"), is: is_text, kind: ErrorKind::BadInput },
        ApiRow { what: "punctuation only", request: text("...!?"), is: is_text, kind: ErrorKind::BadInput },
        ApiRow { what: "a control character", request: text("Hello\u{7} there."), is: is_text, kind: ErrorKind::BadInput },
        ApiRow {
            what: "a text of 200,001 characters",
            request: text(&"a".repeat(200_001)),
            is: |e| matches!(e, Error::TooLong { .. }),
            kind: ErrorKind::ResourceLimit,
        },
        ApiRow {
            what: "temperature NaN",
            request: with(|o| o.temperature = f32::NAN),
            is: setting("temperature"),
            kind: ErrorKind::BadInput,
        },
        ApiRow { what: "top_p 1.5", request: with(|o| o.top_p = 1.5), is: setting("top_p"), kind: ErrorKind::BadInput },
        ApiRow { what: "min_p -0.1", request: with(|o| o.min_p = -0.1), is: setting("min_p"), kind: ErrorKind::BadInput },
        ApiRow {
            what: "repetition_penalty 0",
            request: with(|o| o.repetition_penalty = 0.0),
            is: setting("repetition_penalty"),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "cfg_weight inf",
            request: with(|o| o.cfg_weight = f32::INFINITY),
            is: setting("cfg_weight"),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "exaggeration -0.5",
            request: with(|o| o.exaggeration = -0.5),
            is: setting("exaggeration"),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "max_new_tokens 0",
            request: with(|o| o.max_new_tokens = 0),
            is: setting("max_new_tokens"),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "max_new_tokens above the model's",
            request: with(|o| o.max_new_tokens = MODEL_MAX_SPEECH_TOKENS + 1),
            is: |e| matches!(e, Error::TooLong { len, max: MODEL_MAX_SPEECH_TOKENS, .. } if *len == MODEL_MAX_SPEECH_TOKENS + 1),
            kind: ErrorKind::ResourceLimit,
        },
        ApiRow { what: "cfm_steps 0", request: with(|o| o.cfm_steps = 0), is: setting("cfm_steps"), kind: ErrorKind::BadInput },
        ApiRow {
            what: "a voice file that does not exist",
            request: voice(Voice::File(scratch.join("no-such-voice.wav"))),
            is: |e| matches!(e, Error::Voice { .. }),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "a voice file that is a folder",
            request: voice(Voice::File(scratch.clone())),
            is: |e| matches!(e, Error::Voice { .. }),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "voice bytes that are not audio",
            request: voice(Voice::Bytes {
                bytes: Arc::from(format!("not audio at all, seed {seed}").into_bytes()),
                name: "upload.wav".into(),
            }),
            is: |e| matches!(e, Error::Cloning(tts_voice::Error::Audio { .. })),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "a voice with a short speaker embedding",
            request: voice(Voice::Ready(Arc::new(short_embedding))),
            is: |e| matches!(e, Error::VoiceMismatch { .. } | Error::Voice { .. }),
            kind: ErrorKind::BadInput,
        },
        ApiRow {
            what: "a voice with a prompt token outside the vocabulary",
            request: voice(Voice::Ready(Arc::new(foreign_token))),
            is: |e| matches!(e, Error::Voice { .. }),
            kind: ErrorKind::BadInput,
        },
    ];
    assert!(rows.len() >= 10);

    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        // the bad request first in even rows, second in odd ones
        let (bad_at, batch) =
            if i % 2 == 0 { (0, vec![r.request.clone(), good.clone()]) } else { (1, vec![good.clone(), r.request.clone()]) };
        let mut results = engine.synthesize(&batch);
        assert_eq!(results.len(), 2, "{}", r.what);
        let good_result = results.remove(1 - bad_at);
        let bad_result = results.remove(0);
        match &bad_result {
            Ok(_) => failures.push(format!("{}: succeeded", r.what)),
            Err(e) => {
                eprintln!("{}: {:?}: {e}", r.what, e.kind());
                if !(r.is)(e) {
                    failures.push(format!("{}: not the expected variant: {e:?}", r.what));
                }
                if e.kind() != r.kind {
                    failures.push(format!("{}: kind {:?}, expected {:?}", r.what, e.kind(), r.kind));
                }
                if let Error::Text { index, .. } = e
                    && *index != bad_at
                {
                    failures.push(format!("{}: names text {index}, it was text {bad_at}", r.what));
                }
            }
        }
        match good_result {
            Err(e) => failures.push(format!("{}: the good request failed: {e}", r.what)),
            Ok(a) if a != alone => failures.push(format!(
                "{}: the good request's audio differs from its audio alone ({} vs {} samples)",
                r.what,
                a.samples.len(),
                alone.samples.len()
            )),
            Ok(_) => {}
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    assert!(failures.is_empty(), "seed {seed}: {} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    eprintln!("{} rows: each bad request failed alone with its error", rows.len());
}
