//! Nothing panics across tts-engine's public API: every entry point is fed bad input (missing,
//! empty and corrupt model directories and files, empty and huge texts, NaN / infinite / negative
//! settings, bad voices and voice files, bad backend names, bad bench arguments) and must return an
//! error of the right kind ([`ErrorKind`]). Each call runs under `catch_unwind`, so a panic is
//! reported as a failure with its message and the other cases still run; all failures are listed
//! at the end.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;

use tts_engine::bench::{self, ModelSource};
use tts_engine::speak::{Engine, SpeakOptions, write_wav};
use tts_engine::text::TextTokenizer;
use tts_engine::voice::Conditionals;
use tts_engine::{Error, ErrorKind, ErrorKind::*};
use tts_kernels::Device;
use tts_kernels::testing::{fresh_seed, random_i32};
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

mod common;

use common::{fixture, scratch_dir, tiny_model_dir, tiny_voice};

/// Runs the cases and collects what went wrong.
#[derive(Default)]
struct Cases {
    failures: Vec<String>,
    run: usize,
}

impl Cases {
    /// Runs `f`, which must fail with an error of kind `want` (and, when `check` is given, pass it).
    fn expect<T>(&mut self, what: &str, want: ErrorKind, f: impl FnOnce() -> tts_engine::Result<T>) -> Option<Error> {
        self.run += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures.push(format!("{what}: PANICKED: {msg}"));
                None
            }
            Ok(Ok(_)) => {
                self.failures.push(format!("{what}: succeeded, expected a {want:?} error"));
                None
            }
            Ok(Err(e)) if e.kind() != want => {
                self.failures.push(format!("{what}: {e} is {:?}, expected {want:?}", e.kind()));
                None
            }
            Ok(Err(e)) => {
                eprintln!("{what}: {:?}: {e}", e.kind());
                Some(e)
            }
        }
    }

    /// [`Cases::expect`] a bad-input error that is the `Error::Setting` of `field`.
    fn setting<T>(&mut self, what: &str, field: &str, f: impl FnOnce() -> tts_engine::Result<T>) {
        if let Some(e) = self.expect(what, BadInput, f)
            && !matches!(&e, Error::Setting { field: got, .. } if *got == field)
        {
            self.failures.push(format!("{what}: {e:?} is not the setting {field}"));
        }
    }

    fn finish(self) {
        assert!(self.failures.is_empty(), "{} of {} cases failed:\n{}", self.failures.len(), self.run, self.failures.join("\n"));
        eprintln!("{} cases, all gave an error of the expected kind", self.run);
    }
}

/// A copy of the tiny model directory with `edit` applied.
fn edited_dir(edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let dir = tiny_model_dir();
    edit(&dir);
    dir
}

fn truncate(path: &Path, keep: f64) {
    let b = std::fs::read(path).unwrap();
    std::fs::write(path, &b[..(b.len() as f64 * keep) as usize]).unwrap();
}

/// Pseudo-random garbage bytes.
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    random_i32(seed, n, 0, 256).into_iter().map(|v| v as u8).collect()
}

fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let p = dir.join("config.json");
    let mut cfg: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg.insert(key.into(), value);
    std::fs::write(p, serde_json::Value::Object(cfg).to_string()).unwrap();
}

#[test]
fn loading_bad_model_directories_gives_bad_model_errors() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let dev = Device::cpu();
    let mut c = Cases::default();
    let load = |dir: &Path| Engine::load_dir(dir, &Device::cpu());
    let scratch = scratch_dir("bad-model");

    c.expect("missing directory", BadModel, || load(&scratch.join("no-such-dir")));
    std::fs::write(scratch.join("a-file"), b"x").unwrap();
    c.expect("a file as the directory", BadModel, || load(&scratch.join("a-file")));
    std::fs::create_dir_all(scratch.join("empty")).unwrap();
    c.expect("empty directory", BadModel, || load(&scratch.join("empty")));

    let mut dirs = Vec::new();
    let mut case = |c: &mut Cases, what: &str, edit: &dyn Fn(&Path)| {
        let dir = edited_dir(edit);
        c.expect(what, BadModel, || Engine::load_dir(&dir, &dev));
        dirs.push(dir);
    };
    for file in ["t3_cfg.safetensors", "s3gen.safetensors"] {
        case(&mut c, &format!("{file} missing"), &|d| std::fs::remove_file(d.join(file)).unwrap());
        case(&mut c, &format!("{file} empty"), &|d| std::fs::write(d.join(file), b"").unwrap());
        for keep in [0.001, 0.5, 0.999] {
            case(&mut c, &format!("{file} truncated to {keep}"), &|d| truncate(&d.join(file), keep));
        }
        case(&mut c, &format!("{file} garbage"), &|d| std::fs::write(d.join(file), garbage(seed, 5000)).unwrap());
        case(&mut c, &format!("{file} a huge header length"), &|d| {
            let mut b = std::fs::read(d.join(file)).unwrap();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            std::fs::write(d.join(file), b).unwrap();
        });
    }
    case(&mut c, "the checkpoints swapped", &|d| {
        std::fs::rename(d.join("t3_cfg.safetensors"), d.join("tmp")).unwrap();
        std::fs::rename(d.join("s3gen.safetensors"), d.join("t3_cfg.safetensors")).unwrap();
        std::fs::rename(d.join("tmp"), d.join("s3gen.safetensors")).unwrap();
    });
    case(&mut c, "config.json garbage", &|d| std::fs::write(d.join("config.json"), garbage(seed + 1, 300)).unwrap());
    case(&mut c, "config.json not an object", &|d| std::fs::write(d.join("config.json"), "[1, 2]").unwrap());
    case(&mut c, "config.json unknown T3 key", &|d| set_config(d, "hidden_sise", 128.into()));
    case(&mut c, "config.json unknown S3Gen key", &|d| set_config(d, "decoder_chanels", 32.into()));
    case(&mut c, "config.json wrong type", &|d| set_config(d, "hidden_size", "128".into()));
    case(&mut c, "config.json negative", &|d| set_config(d, "encoder_linear_units", (-1).into()));
    case(&mut c, "config.json zero heads", &|d| set_config(d, "num_attention_heads", 0.into()));
    case(&mut c, "config.json other dimensions than the checkpoint", &|d| set_config(d, "hidden_size", 256.into()));
    case(&mut c, "config.json other vocabulary than the checkpoint", &|d| set_config(d, "flow_vocab_size", 301.into()));
    case(&mut c, "tokenizer.json garbage", &|d| std::fs::write(d.join("tokenizer.json"), garbage(seed + 2, 300)).unwrap());
    case(&mut c, "tokenizer.json truncated", &|d| {
        std::fs::copy(fixture("text_a").join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
        truncate(&d.join("tokenizer.json"), 0.5);
    });
    case(&mut c, "conds.pt garbage", &|d| std::fs::write(d.join("conds.pt"), garbage(seed + 3, 3000)).unwrap());
    case(&mut c, "conds.pt empty", &|d| std::fs::write(d.join("conds.pt"), b"").unwrap());
    case(&mut c, "conds.pt truncated", &|d| {
        std::fs::copy(fixture("s3gen_wav_a").join("conds.pt"), d.join("conds.pt")).unwrap();
        truncate(&d.join("conds.pt"), 0.6);
    });
    // the bench's case inputs
    let dir = edited_dir(|d| std::fs::write(d.join("inputs.safetensors"), garbage(seed + 4, 100)).unwrap());
    let engine = Engine::load_dir(&dir, &dev).unwrap();
    let source = ModelSource::Dir(dir.clone());
    c.expect("bench-t3 inputs.safetensors garbage", BadModel, || bench::t3_bench_request(&source, &engine.t3, 10));
    c.expect("bench-s3gen inputs.safetensors garbage", BadModel, || bench::s3gen_bench_inputs(&source, &engine.s3gen, 10));
    std::fs::copy(fixture("s3gen_wav_a").join("inputs.safetensors"), dir.join("inputs.safetensors")).unwrap();
    c.expect("bench-t3 inputs.safetensors without T3 inputs", BadModel, || bench::t3_bench_request(&source, &engine.t3, 10));
    dirs.push(dir);
    c.expect("a tokenizer file that is garbage", BadModel, || {
        let p = scratch.join("tokenizer.json");
        std::fs::write(&p, garbage(seed + 5, 100)).unwrap();
        TextTokenizer::from_file(&p)
    });

    for d in dirs.into_iter().chain([scratch]) {
        std::fs::remove_dir_all(d).ok();
    }
    c.finish();
}

/// T3 and S3Gen at small widths with the real vocabularies.
fn small_engine(seed: u64) -> Engine {
    Engine::synthetic(common::small_t3(), common::small_s3gen(), seed, &Device::cpu()).unwrap()
}

#[test]
fn bad_requests_give_bad_input_or_resource_limit_errors() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let engine = small_engine(seed);
    let mut c = Cases::default();
    let ok = SpeakOptions { max_new_tokens: 4, cfm_steps: 1, seed, ..Default::default() };
    let speak = |texts: &[&str], opts: &SpeakOptions| engine.speak(texts, None, opts);

    // settings: every one, NaN, infinite, negative, zero, out of range
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    type Edit = fn(&mut SpeakOptions, f32);
    let float_settings: [(&str, Edit, &[f32]); 6] = [
        ("temperature", |o, v| o.temperature = v, &[nan, inf, -inf, -1.0, 0.0]),
        ("top_p", |o, v| o.top_p = v, &[nan, inf, -0.5, 0.0, 1.5]),
        ("min_p", |o, v| o.min_p = v, &[nan, inf, -0.1, 1.01]),
        ("repetition_penalty", |o, v| o.repetition_penalty = v, &[nan, inf, -1.2, 0.0]),
        ("cfg_weight", |o, v| o.cfg_weight = v, &[nan, inf, -inf, -0.5]),
        ("exaggeration", |o, v| o.exaggeration = v, &[nan, inf, -0.5]),
    ];
    for (field, edit, values) in float_settings {
        for &v in values {
            let mut o = ok.clone();
            edit(&mut o, v);
            c.setting(&format!("{field} {v}: validate"), field, || o.validate());
            c.setting(&format!("{field} {v}: speak"), field, || speak(&["Hello."], &o));
            c.setting(&format!("{field} {v}: speak_tokens"), field, || engine.speak_tokens(&[vec![255, 40, 0]], None, &o));
        }
    }
    let zero_tokens = SpeakOptions { max_new_tokens: 0, ..ok.clone() };
    c.setting("max_new_tokens 0", "max_new_tokens", || speak(&["Hello."], &zero_tokens));
    let zero_steps = SpeakOptions { cfm_steps: 0, ..ok.clone() };
    c.setting("cfm_steps 0", "cfm_steps", || speak(&["Hello."], &zero_steps));
    for n in [4097, 1 << 40, usize::MAX] {
        let o = SpeakOptions { max_new_tokens: n, ..ok.clone() };
        c.expect(&format!("max_new_tokens {n}"), ResourceLimit, || speak(&["Hello."], &o));
    }

    // texts
    c.expect("empty text", BadInput, || speak(&[""], &ok));
    c.expect("whitespace text", BadInput, || speak(&[" \n\t "], &ok));
    c.expect("one empty text among good ones", BadInput, || speak(&["Hello.", ""], &ok));
    let huge = "All work and no play. ".repeat(5000);
    c.expect("a huge text", ResourceLimit, || speak(&[huge.as_str()], &ok));
    c.expect("huge text tokens", ResourceLimit, || engine.text_tokens(&huge));
    c.expect("no text tokens", BadInput, || engine.speak_tokens(&[vec![]], None, &ok));
    c.expect("a text token outside the vocabulary", BadInput, || engine.speak_tokens(&[vec![255, 704, 0]], None, &ok));
    c.expect("a text token u32::MAX", BadInput, || engine.speak_tokens(&[vec![255, u32::MAX, 0]], None, &ok));
    c.expect("too many text tokens", ResourceLimit, || engine.speak_tokens(&[vec![7; 5000]], None, &ok));

    // voices
    let good = engine.voice.clone().unwrap();
    type VoiceEdit = fn(&mut Conditionals);
    let voices: [(&str, VoiceEdit); 11] = [
        ("a short speaker embedding", |v| v.t3.speaker_emb.truncate(10)),
        ("no speaker embedding", |v| v.t3.speaker_emb.clear()),
        ("a NaN speaker embedding", |v| v.t3.speaker_emb[3] = f32::NAN),
        ("no prompt tokens", |v| v.t3.cond_prompt_speech_tokens.clear()),
        ("a prompt token outside the vocabulary", |v| v.t3.cond_prompt_speech_tokens[0] = 9000),
        ("a huge prompt", |v| v.t3.cond_prompt_speech_tokens = vec![1; 10_000]),
        ("a long x-vector", |v| v.s3gen.embedding.push(0.0)),
        ("a NaN prompt mel", |v| v.s3gen.prompt_feat[7] = f32::NAN),
        ("a prompt mel of a partial frame", |v| {
            v.s3gen.prompt_feat.pop();
        }),
        ("an S3Gen prompt token outside the vocabulary", |v| v.s3gen.prompt_token[2] = 7000),
        ("an infinite exaggeration in the voice", |v| v.t3.emotion_adv = f32::INFINITY),
    ];
    for (what, edit) in voices {
        let mut v = good.clone();
        edit(&mut v);
        if what.contains("exaggeration") {
            // the voice's emotion_adv is not used by speak (the options' exaggeration is): it must work
            let r = catch_unwind(AssertUnwindSafe(|| engine.speak_tokens(&[vec![255, 40, 0]], Some(&v), &ok)));
            assert!(matches!(r, Ok(Ok(_)) | Ok(Err(Error::NoSpeechTokens { .. }))), "{what}: {r:?}");
            continue;
        }
        // a prompt past the model's speech positions is too long, like a text
        let want = if what == "a huge prompt" { ResourceLimit } else { BadInput };
        c.expect(what, want, || engine.speak_tokens(&[vec![255, 40, 0]], Some(&v), &ok));
    }
    let scratch = scratch_dir("bad-voice");
    let conds = std::fs::read(fixture("s3gen_wav_a").join("conds.pt")).unwrap();
    let files: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("garbage", garbage(seed, 4000)),
        ("truncated zip", conds[..conds.len() * 2 / 3].to_vec()),
        ("zip with its end cut", conds[..conds.len() - 10].to_vec()),
        ("zip with its middle zeroed", {
            let mut b = conds.clone();
            let n = b.len();
            b[n / 3..n / 2].fill(0);
            b
        }),
    ];
    c.expect("a missing voice file", BadInput, || Conditionals::load(&scratch.join("missing.pt")));
    c.expect("a directory as voice file", BadInput, || Conditionals::load(&scratch));
    for (what, bytes) in files {
        let p = scratch.join(format!("{}.pt", what.replace(' ', "-")));
        std::fs::write(&p, bytes).unwrap();
        c.expect(&format!("a voice file: {what}"), BadInput, || Conditionals::load(&p));
    }

    // an engine without tokenizer and voice
    let dir = tiny_model_dir();
    let bare = Engine::load_dir(&dir, &Device::cpu()).unwrap();
    c.expect("text on a model without tokenizer.json", BadModel, || bare.speak(&["Hello."], Some(&tiny_voice()), &ok));
    c.expect("no voice anywhere", BadInput, || bare.speak_tokens(&[vec![255, 3, 0]], None, &ok));
    c.expect("a voice of another model", BadInput, || bare.speak_tokens(&[vec![255, 3, 0]], Some(&good), &ok));

    // backends, the synthetic engine's dimensions, benches, output
    for name in ["gpu", "", "cuda:x", "cuda:-1", "cpu,emu"] {
        c.expect(&format!("backend {name:?}"), BadInput, || tts_engine::select_device(name));
    }
    // (tts-kernels' own feature decides: the engine's `emu` feature only forwards to it)
    if matches!(Device::emu(tts_engine::EmuOptions::default()), Err(tts_kernels::Error::EmuUnavailable)) {
        c.expect("backend emu without the feature", BadInput, || tts_engine::select_device("emu"));
    }
    let bad_t3 = T3Config { num_attention_heads: 0, ..T3Config::default() };
    c.expect("synthetic T3 with no heads", BadModel, || Engine::synthetic(bad_t3, S3GenConfig::default(), 1, &Device::cpu()));
    let bad_s3 = S3GenConfig { hift_base_channels: 12, ..S3GenConfig::default() };
    c.expect("synthetic S3Gen with bad channels", BadModel, || Engine::synthetic(T3Config::default(), bad_s3, 1, &Device::cpu()));
    let tiny_vocab = T3Config { text_tokens_dict_size: 2, start_text_token: 1, stop_text_token: 0, ..T3Config::default() };
    c.expect("a character tokenizer without room", BadInput, || {
        TextTokenizer::characters(tiny_vocab.text_tokens_dict_size, &[0, 1])
    });
    c.expect("no model source", BadInput, || ModelSource::from_args(None, false, 1));
    c.expect("two model sources", BadInput, || ModelSource::from_args(Some(dir.clone()), true, 1));
    let source = ModelSource::Synthetic { seed };
    let req = bench::t3_bench_request(&source, &engine.t3, 8).unwrap();
    c.expect("bench-t3 batch 0", BadInput, || bench::bench_t3_batch(&engine.t3, &req, 0, 8));
    c.expect("bench-t3 too few tokens", BadInput, || bench::bench_t3_batch(&engine.t3, &req, 1, 2));
    c.expect("bench-t3 more tokens than the model takes", ResourceLimit, || bench::bench_t3_batch(&engine.t3, &req, 1, 5000));
    let inputs = bench::s3gen_bench_inputs(&source, &engine.s3gen, 4).unwrap();
    c.expect("bench-s3gen batch 0", BadInput, || bench::bench_s3gen_batch(&engine.s3gen, &inputs, 0, 1));
    let no_speech = bench::S3GenInputs { speech: Vec::new(), ..inputs.clone() };
    c.expect("bench-s3gen no tokens", BadInput, || bench::bench_s3gen_batch(&engine.s3gen, &no_speech, 1, 1));
    c.expect("a WAV into a missing folder", BadInput, || write_wav(&scratch.join("no/such/a.wav"), &[0.0; 10]));

    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&scratch).ok();
    c.finish();
}

/// The same request through good settings runs (the cases above fail for their bad value, not for
/// something else they share).
#[test]
fn the_good_request_of_those_cases_speaks() {
    let seed = fresh_seed();
    let engine = small_engine(seed);
    let ok = SpeakOptions { max_new_tokens: 4, cfm_steps: 1, seed, ..Default::default() };
    let spoken = engine.speak(&["Hello.", "A second one."], None, &ok).unwrap();
    assert_eq!(spoken.len(), 2);
    let voice = engine.voice.clone().unwrap();
    engine.speak_tokens(&[vec![255, 40, 0]], Some(&voice), &ok).unwrap();
}

fn tts(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tts")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Settings are checked before any model file is read: with a model directory that does not exist,
/// `--temperature nan` is reported as the temperature error (exit code 1, bad input), and so are a
/// bad backend name and an output folder that does not exist; good settings then get the model
/// directory's error (exit code 2, a model or setup problem).
#[test]
fn the_command_line_checks_settings_before_the_model() {
    let missing = std::env::temp_dir().join(format!("tts-no-such-model-{}", fresh_seed()));
    let m = missing.to_str().unwrap();
    let speak = |extra: &[&str]| {
        let mut args = vec!["speak", "--model-dir", m, "--text", "Hello."];
        args.extend_from_slice(extra);
        if !extra.contains(&"--backend") {
            args.extend(["--backend", "cpu"]);
        }
        tts(&args)
    };
    for (extra, want) in [
        (&["--temperature", "nan"][..], "temperature = NaN"),
        (&["--temperature=-1"][..], "temperature = -1"),
        (&["--cfg-weight", "inf"][..], "cfg_weight = inf"),
        (&["--exaggeration=-0.5"][..], "exaggeration = -0.5"),
        (&["--max-new-tokens", "0"][..], "max_new_tokens = 0"),
        (&["--out", "/no-such-folder-of-tts/a.wav"][..], "--output = /no-such-folder-of-tts/a.wav"),
        (&["--backend", "gpu"][..], "unknown backend \"gpu\""),
        (&["--text", " "][..], "text 1: empty"),
    ] {
        let (code, err) = speak(extra);
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(err.contains(want) && !err.contains(m), "{extra:?}: {err}");
    }
    let (code, err) = speak(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(m) && err.contains("model directory"), "{err}");
    // the same through the library: the settings are checked without a model, the directory fails to load
    let opts = SpeakOptions { temperature: f32::NAN, ..Default::default() };
    assert!(matches!(opts.validate(), Err(Error::Setting { field: "temperature", .. })));
    let e = Engine::load_dir(&missing, &Device::cpu()).err().unwrap();
    assert_eq!(e.kind(), BadModel, "{e}");
    // a bad config key names the file and the key, exit code 2
    let dir = tiny_model_dir();
    set_config(&dir, "hidden_sise", 1.into());
    let (code, err) = tts(&["speak", "--model-dir", dir.to_str().unwrap(), "--text", "Hello.", "--backend", "cpu"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("config.json: key \"hidden_sise\": unknown field"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `config.json` is shared: every T3 key is left alone by S3Gen and every S3Gen key by T3 (a value
/// of the wrong type under the other's key is not the other's error), and one file holding both
/// full configs parses to both.
#[test]
fn every_config_key_belongs_to_one_model() {
    let file = Path::new("config.json");
    let t3 = serde_json::to_value(T3Config::default()).unwrap();
    let s3 = serde_json::to_value(S3GenConfig::default()).unwrap();
    let mut both = t3.as_object().unwrap().clone();
    for (k, v) in s3.as_object().unwrap() {
        assert!(both.insert(k.clone(), v.clone()).is_none(), "{k} is a key of both");
    }
    let both = serde_json::Value::Object(both);
    assert_eq!(T3Config::from_json(file, &both).unwrap(), T3Config::default());
    assert_eq!(S3GenConfig::from_json(file, &both).unwrap(), S3GenConfig::default());
    for k in t3.as_object().unwrap().keys() {
        let bad = serde_json::json!({ k.as_str(): "not a number" });
        assert!(S3GenConfig::from_json(file, &bad).is_ok(), "S3Gen checks T3's {k}");
        assert!(matches!(T3Config::from_json(file, &bad), Err(tts_t3::Error::Config { key: Some(got), .. }) if got == *k));
    }
    for k in s3.as_object().unwrap().keys() {
        let bad = serde_json::json!({ k.as_str(): "not a number" });
        assert!(T3Config::from_json(file, &bad).is_ok(), "T3 checks S3Gen's {k}");
        assert!(matches!(S3GenConfig::from_json(file, &bad), Err(tts_s3gen::Error::Config { key: Some(got), .. }) if got == *k));
    }
}
