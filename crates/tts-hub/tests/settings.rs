//! What `--model`/`--revision` name (ModelRef::parse) and the settings from the environment
//! (HubOptions::from_lookup, with a lookup closure instead of the process environment).
mod common;

use common::{TempDir, random_commit};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tts_hub::{Error, HubOptions, ModelRef};

enum Expect {
    Hub(&'static str, &'static str),
    Dir(PathBuf),
    /// An error about the model or the revision, whose message holds the text.
    Bad(&'static str, &'static str),
    /// A path that names no directory.
    Missing,
}

#[test]
fn model_refs() {
    let tmp = TempDir::new("parse");
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let file = tmp.path().join("weights.safetensors");
    std::fs::write(&file, b"x").unwrap();
    let missing = tmp.path().join(format!("missing-{}", random_commit()));
    let (d, f, m) = (dir.to_str().unwrap(), file.to_str().unwrap(), missing.to_str().unwrap());
    let home_missing = format!("~/tts-hub-missing-{}", random_commit());
    let dot_missing = format!("./missing-{}", random_commit());
    // tests/common exists under the package root (the tests' working directory) and is also a
    // valid owner/name: the directory wins.
    let existing_relative = Path::new("tests/common");
    assert!(existing_relative.is_dir());

    use Expect::*;
    let cases: Vec<(&str, Option<&str>, Expect)> = vec![
        ("ResembleAI/chatterbox", None, Hub("ResembleAI/chatterbox", "main")),
        ("ResembleAI/chatterbox", Some("v1.0"), Hub("ResembleAI/chatterbox", "v1.0")),
        ("o_1/n-2.x", Some("refs/pr/3"), Hub("o_1/n-2.x", "refs/pr/3")),
        ("a/b", Some("0123456789abcdef0123456789abcdef01234567"), Hub("a/b", "0123456789abcdef0123456789abcdef01234567")),
        (d, None, Dir(dir.clone())),
        ("tests/common", None, Dir(existing_relative.to_path_buf())),
        (d, Some("main"), Bad("revision", "not to the directory")),
        (f, None, Bad("model", "is a file")),
        (m, None, Missing),
        (&dot_missing, None, Missing),
        (&home_missing, None, Missing),
        ("a/b/c", None, Missing),
        ("a\\b", None, Missing),
        ("", None, Bad("model", "empty")),
        ("chatterbox", None, Bad("model", "owner/name")),
        ("a--b/c", None, Bad("model", "\"--\"")),
        ("owner/na me", None, Bad("model", "not allowed")),
        ("-owner/name", None, Bad("model", "start and end")),
        ("ResembleAI/chatterbox", Some("../../etc"), Bad("revision", "not start with '.'")),
        ("ResembleAI/chatterbox", Some(""), Bad("revision", "1 to 255")),
        ("ResembleAI/chatterbox", Some("a b"), Bad("revision", "not allowed")),
    ];
    for (model, revision, expect) in cases {
        let got = ModelRef::parse(model, revision);
        match (expect, got) {
            (Hub(repo, rev), Ok(ModelRef::Hub { repo: r, revision: v })) => assert_eq!((r.as_str(), v.as_str()), (repo, rev)),
            (Dir(path), Ok(ModelRef::Dir(p))) => assert_eq!(p, path),
            (Missing, Err(e @ Error::DirNotFound { .. })) => assert!(e.to_string().contains("no such directory"), "{e}"),
            (Bad(what, text), Err(e @ Error::BadModelRef { what: w, .. })) => {
                assert_eq!(w, what, "{model:?} {revision:?}: {e}");
                assert!(e.to_string().contains(text), "{model:?} {revision:?}: {text:?} not in {e}");
            }
            (_, got) => panic!("{model:?} {revision:?}: unexpected {got:?}"),
        }
    }
    assert_eq!(ModelRef::default_hub().to_string(), "ResembleAI/chatterbox@main");
}

/// from_lookup over a fixed map of variables.
fn options(vars: &[(&str, &str)], home: Option<&Path>) -> tts_hub::Result<HubOptions> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    HubOptions::from_lookup(|k| vars.get(k).cloned(), home)
}

#[test]
fn cache_directory_precedence() {
    let tmp = TempDir::new("cache-dirs");
    let home = tmp.path().join("home");
    let h = Some(home.as_path());
    let cache = |vars: &[(&str, &str)]| options(vars, h).unwrap().cache_dir;
    assert_eq!(cache(&[]), home.join(".cache/huggingface/hub"));
    assert_eq!(cache(&[("XDG_CACHE_HOME", "/xdg")]), Path::new("/xdg/huggingface/hub"));
    assert_eq!(cache(&[("XDG_CACHE_HOME", "/xdg"), ("HF_HOME", "/hf")]), Path::new("/hf/hub"));
    assert_eq!(cache(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]), Path::new("/c"));
    assert_eq!(cache(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]), Path::new("/legacy"));
    assert_eq!(cache(&[("HF_HOME", "~/hf")]), home.join("hf/hub"));
    assert_eq!(cache(&[("HF_HOME", "")]), home.join(".cache/huggingface/hub"), "empty counts as unset");
    let err = options(&[], None).unwrap_err();
    assert!(matches!(err, Error::BadSetting { .. }) && err.to_string().contains("HF_HUB_CACHE"), "{err}");
    assert_eq!(options(&[("HF_HUB_CACHE", "/c")], None).unwrap().cache_dir, Path::new("/c"));
}

#[test]
fn endpoint_and_offline() {
    let home = Some(Path::new("/nonexistent-home"));
    assert_eq!(options(&[], home).unwrap().endpoint, "https://huggingface.co");
    assert_eq!(options(&[("HF_ENDPOINT", "https://hf-mirror.com/")], home).unwrap().endpoint, "https://hf-mirror.com");
    assert_eq!(options(&[("HF_ENDPOINT", "http://127.0.0.1:8080")], home).unwrap().endpoint, "http://127.0.0.1:8080");
    for bad in ["hf-mirror.com", "ftp://x", "https://", "https://a b"] {
        let err = options(&[("HF_ENDPOINT", bad)], home).unwrap_err();
        assert!(matches!(&err, Error::BadSetting { var: "HF_ENDPOINT", value, .. } if value == bad), "{bad}: {err:?}");
    }
    for (value, offline) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("On", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("OFF", false),
        ("", false),
    ] {
        assert_eq!(options(&[("HF_HUB_OFFLINE", value)], home).unwrap().offline, offline, "{value:?}");
    }
    assert!(options(&[("TRANSFORMERS_OFFLINE", "1")], home).unwrap().offline);
    let err = options(&[("HF_HUB_OFFLINE", "maybe")], home).unwrap_err();
    assert!(matches!(err, Error::BadSetting { var: "HF_HUB_OFFLINE", .. }), "{err:?}");
}

#[test]
fn token_precedence_and_the_token_file() {
    let tmp = TempDir::new("tokens");
    let hf_home = tmp.path().join("hf");
    std::fs::create_dir_all(&hf_home).unwrap();
    let file_token = format!("hf_{}", random_commit());
    std::fs::write(hf_home.join("token"), format!("  {file_token} \n")).unwrap();
    let hf = hf_home.to_str().unwrap();
    let token = |vars: &[(&str, &str)]| options(vars, None).unwrap().token;

    assert_eq!(token(&[("HF_HOME", hf)]), Some(file_token.clone()));
    assert_eq!(token(&[("HF_HOME", hf), ("HF_TOKEN", "hf_env")]), Some("hf_env".into()));
    assert_eq!(token(&[("HF_HOME", hf), ("HUGGING_FACE_HUB_TOKEN", "hf_legacy")]), Some("hf_legacy".into()));
    assert_eq!(token(&[("HF_HOME", hf), ("HF_TOKEN", "  ")]), Some(file_token.clone()), "blank counts as unset");
    // HF_HUB_CACHE elsewhere does not move the token file (hf-hub alone would look next to the cache).
    assert_eq!(token(&[("HF_HOME", hf), ("HF_HUB_CACHE", "/elsewhere/hub")]), Some(file_token.clone()));
    let other = tmp.path().join("other-token");
    std::fs::write(&other, "hf_other").unwrap();
    assert_eq!(token(&[("HF_HOME", hf), ("HF_TOKEN_PATH", other.to_str().unwrap())]), Some("hf_other".into()));
    std::fs::write(hf_home.join("token"), "\n").unwrap();
    assert_eq!(token(&[("HF_HOME", hf)]), None);
    assert_eq!(token(&[("HF_HOME", tmp.path().join("no-such").to_str().unwrap())]), None);

    let opts = options(&[("HF_HOME", hf), ("HF_TOKEN", &file_token)], None).unwrap();
    let shown = format!("{opts:?}");
    assert!(!shown.contains(&file_token) && shown.contains("<set>"), "{shown}");
}
