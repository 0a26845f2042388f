//! `Conditionals::load` against the fixtures: the values read from every `conds.pt` equal, bit for
//! bit, the tensors its case mirrors into `inputs.safetensors`; broken files give errors naming the
//! file and the problem.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tts_engine::Error;
use tts_engine::voice::{Conditionals, MEL_BINS};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The case directories with both `conds.pt` and `inputs.safetensors` (the full-size reference case
/// too, when it is present).
fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/fixtures"))
        .expect("tests/fixtures")
        .map(|e| e.unwrap().path())
        .chain([workspace().join("tools/reference/full-size/s3gen_bench")])
        .filter(|d| d.join("conds.pt").is_file() && d.join("inputs.safetensors").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

fn i64s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    (t.shape().to_vec(), t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())
}

/// Asserts `got == want` element for element, reporting the first difference (not the whole vectors).
fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: element {i} is {:?}, expected {:?}", got[i], want[i]);
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn widen(v: &[u32]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

#[test]
fn conds_match_mirrored_inputs() {
    let (mut t3_cases, mut s3gen_cases) = (0, 0);
    for dir in cases() {
        let voice = Conditionals::load(&dir.join("conds.pt")).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(dir.join("inputs.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().cloned().collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        let case = dir.display();

        if has("speaker_emb") {
            t3_cases += 1;
            let t3 = &voice.t3;
            let (shape, v) = f32s(&st, "speaker_emb");
            assert_eq!(shape, [1, t3.speaker_emb.len()], "{case}: speaker_emb");
            same(&bits(&t3.speaker_emb), &bits(&v), &format!("{case}: speaker_emb"));
            let (shape, v) = i64s(&st, "cond_prompt_speech_tokens");
            assert_eq!(shape, [1, t3.cond_prompt_speech_tokens.len()], "{case}: cond_prompt_speech_tokens");
            same(&widen(&t3.cond_prompt_speech_tokens), &v, &format!("{case}: cond_prompt_speech_tokens"));
            let (shape, v) = f32s(&st, "emotion_adv");
            assert_eq!(shape, [1, 1, 1], "{case}: emotion_adv");
            // a tts_generate case records what `generate(exaggeration=...)` fed T3, which replaces
            // the file's emotion_adv (tts.py); other cases mirror the file
            let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
            let want = match (json["kind"].as_str(), json["params"]["exaggeration"].as_f64()) {
                (Some("tts_generate"), Some(x)) => x as f32,
                _ => t3.emotion_adv,
            };
            assert_eq!(want.to_bits(), v[0].to_bits(), "{case}: emotion_adv");
        }
        if has("prompt_feat") {
            s3gen_cases += 1;
            let g = &voice.s3gen;
            let (shape, v) = i64s(&st, "prompt_token");
            assert_eq!(shape, [1, g.prompt_token.len()], "{case}: prompt_token");
            same(&widen(&g.prompt_token), &v, &format!("{case}: prompt_token"));
            let (_, v) = i64s(&st, "prompt_token_len");
            assert_eq!([g.prompt_token_len as i64], v[..], "{case}: prompt_token_len");
            let (shape, v) = f32s(&st, "prompt_feat");
            assert_eq!(shape, [1, g.prompt_feat_frames, MEL_BINS], "{case}: prompt_feat");
            assert_eq!(g.prompt_feat.len(), g.prompt_feat_frames * MEL_BINS, "{case}: prompt_feat");
            same(&bits(&g.prompt_feat), &bits(&v), &format!("{case}: prompt_feat"));
            let (shape, v) = f32s(&st, "embedding");
            assert_eq!(shape, [1, g.embedding.len()], "{case}: embedding");
            same(&bits(&g.embedding), &bits(&v), &format!("{case}: embedding"));
        }
        // The half a case does not mirror is random data of the documented shapes.
        assert!(!voice.t3.speaker_emb.is_empty() && !voice.s3gen.embedding.is_empty(), "{case}");
        assert_eq!(voice.s3gen.prompt_feat.len(), voice.s3gen.prompt_feat_frames * MEL_BINS, "{case}");
    }
    // tests/fixtures: 6 T3 cases (t3_cond_enc_*, t3_prefill_*, t3_decode_teacher_forced_*) and 4 S3Gen
    // cases (s3gen_encoder_a, s3gen_estimator_a, s3gen_cfm_a, s3gen_wav_a) mirror their half.
    assert!(t3_cases >= 6 && s3gen_cases >= 4, "only {t3_cases} T3 and {s3gen_cases} S3Gen cases compared");
}

/// The full-size reference case holds the real built-in voice's shapes (skipped when absent: it is
/// not part of the repository).
#[test]
fn real_voice_shapes() {
    let path = workspace().join("tools/reference/full-size/s3gen_bench/conds.pt");
    if !path.is_file() {
        eprintln!("skipped: {} is absent", path.display());
        return;
    }
    let v = Conditionals::load(&path).unwrap();
    assert_eq!(v.t3.speaker_emb.len(), 256);
    assert_eq!(v.t3.cond_prompt_speech_tokens.len(), 150);
    assert_eq!((v.s3gen.prompt_token.len(), v.s3gen.prompt_token_len), (157, 157));
    assert_eq!((v.s3gen.prompt_feat_frames, v.s3gen.prompt_feat.len()), (314, 314 * MEL_BINS));
    assert_eq!(v.s3gen.embedding.len(), 192);
}

fn fixture() -> PathBuf {
    workspace().join("tests/fixtures/t3_cond_enc_a/conds.pt")
}

/// A fresh path under the test's scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("voice-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The entries of a zip file, in order.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().unwrap().to_string(), b)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)], method: zip::CompressionMethod) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
}

/// Rewrites the fixture with `edit` applied to its entries and loads the result.
fn load_edited(name: &str, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> (PathBuf, Result<Conditionals, Error>) {
    let mut e = entries(&fixture());
    edit(&mut e);
    let path = scratch(name);
    write_zip(&path, &e, zip::CompressionMethod::Stored);
    let r = Conditionals::load(&path);
    (path, r)
}

/// The error message, checked to be an `Error::Voice` naming `path` and containing every `want`.
fn expect_err(path: &Path, r: Result<Conditionals, Error>, want: &[&str]) -> String {
    let e = r.expect_err("loading should fail");
    assert!(matches!(&e, Error::Voice { path: p, .. } if p == path), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    for w in want {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
    eprintln!("{msg}");
    msg
}

fn pkl(e: &mut [(String, Vec<u8>)]) -> &mut Vec<u8> {
    &mut e.iter_mut().find(|(n, _)| n.ends_with("/data.pkl")).unwrap().1
}

fn replace(b: &mut Vec<u8>, from: &[u8], to: &[u8]) {
    let i = b.windows(from.len()).position(|w| w == from).unwrap_or_else(|| panic!("{from:?} not found"));
    b.splice(i..i + from.len(), to.iter().copied());
}

#[test]
fn rezipped_with_deflate_loads_the_same() {
    let original = Conditionals::load(&fixture()).unwrap();
    let path = scratch("deflated.pt");
    write_zip(&path, &entries(&fixture()), zip::CompressionMethod::Deflated);
    assert_eq!(Conditionals::load(&path).unwrap(), original);
}

#[test]
fn missing_file() {
    let path = scratch("does-not-exist.pt");
    expect_err(&path, Conditionals::load(&path), &["cannot read"]);
}

#[test]
fn truncated_file() {
    let bytes = std::fs::read(fixture()).unwrap();
    for (i, keep) in [bytes.len() / 2, bytes.len() - 30, 100].into_iter().enumerate() {
        let path = scratch(&format!("truncated-{i}.pt"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        expect_err(&path, Conditionals::load(&path), &["not a torch.save zip archive"]);
    }
}

#[test]
fn not_a_zip() {
    let path = scratch("not-a-zip.pt");
    std::fs::write(&path, b"\x80\x02}q\x00.").unwrap();
    expect_err(&path, Conditionals::load(&path), &["not a torch.save zip archive"]);
}

#[test]
fn zip_without_data_pkl() {
    let (path, r) = load_edited("no-pkl.pt", |e| e.retain(|(n, _)| !n.ends_with("data.pkl")));
    expect_err(&path, r, &["no <archive>/data.pkl", "conds/byteorder"]);
}

#[test]
fn unsupported_opcode() {
    // `\x93` (STACK_GLOBAL, protocol 4) in place of the first `c` (GLOBAL) at byte 37.
    let (path, r) = load_edited("opcode.pt", |e| {
        let p = pkl(e);
        assert_eq!(p[37], b'c');
        p[37] = 0x93;
    });
    expect_err(&path, r, &["unsupported pickle opcode STACK_GLOBAL (0x93) at byte 37"]);
    // A pickle that is no pickle at all.
    let (path, r) = load_edited("garbage.pt", |e| *pkl(e) = b"\x80\x02\x00".to_vec());
    expect_err(&path, r, &["invalid pickle opcode 0x00 at byte 2"]);
}

#[test]
fn unsupported_global() {
    let (path, r) = load_edited("global.pt", |e| replace(pkl(e), b"collections\nOrderedDict", b"os\nsystem"));
    expect_err(&path, r, &["unsupported global 'os.system'"]);
}

#[test]
fn truncated_storage() {
    // data/5 is gen.prompt_feat (1, 16, 80) f32: 5120 bytes.
    let (path, r) = load_edited("short-storage.pt", |e| {
        let s = &mut e.iter_mut().find(|(n, _)| n == "conds/data/5").unwrap().1;
        assert_eq!(s.len(), 5120);
        s.truncate(5000);
    });
    expect_err(&path, r, &["gen.prompt_feat", "storage conds/data/5 is truncated: 5000 bytes", "5120"]);
    let (path, r) = load_edited("long-storage.pt", |e| e.iter_mut().find(|(n, _)| n == "conds/data/6").unwrap().1.push(0));
    expect_err(&path, r, &["gen.embedding", "storage conds/data/6 is too long: 769 bytes", "768"]);
    let (path, r) = load_edited("no-storage.pt", |e| e.retain(|(n, _)| n != "conds/data/0"));
    expect_err(&path, r, &["t3.speaker_emb", "conds/data/0"]);
}

#[test]
fn corrupted_storage() {
    // One flipped byte in the payload of data/0 (speaker_emb): the zip CRC no longer matches.
    let bytes = std::fs::read(fixture()).unwrap();
    let data0 = entries(&fixture()).into_iter().find(|(n, _)| n == "conds/data/0").unwrap().1;
    let at = bytes.windows(data0.len()).position(|w| w == data0).unwrap();
    let mut bad = bytes.clone();
    bad[at + 100] ^= 0x40;
    let path = scratch("corrupted.pt");
    std::fs::write(&path, &bad).unwrap();
    expect_err(&path, Conditionals::load(&path), &["t3.speaker_emb", "zip entry conds/data/0"]);
}

#[test]
fn missing_key() {
    let (path, r) = load_edited("key.pt", |e| replace(pkl(e), b"speaker_emb", b"speaker_emX"));
    expect_err(&path, r, &["missing key 'speaker_emb' in t3", "'speaker_emX'"]);
}

#[test]
fn wrong_dtype() {
    // speaker_emb's storage (the first GLOBAL of a storage class) as float64.
    let (path, r) = load_edited("dtype.pt", |e| replace(pkl(e), b"torch\nFloatStorage", b"torch\nDoubleStorage"));
    expect_err(&path, r, &["t3.speaker_emb", "expected a float32 tensor", "torch.DoubleStorage (float64)"]);
}

#[test]
fn wrong_shape() {
    // prompt_feat's size (1, 16, 80) -> (1, 16, 40) (BININT1 80 then TUPLE3, right after its BINPERSID).
    let (path, r) = load_edited("shape.pt", |e| {
        let p = pkl(e);
        let at = p.windows(11).position(|w| w == b"prompt_feat").unwrap();
        let rel = p[at..].windows(3).position(|w| w == b"KP\x87").unwrap();
        p[at + rel + 1] = 40;
    });
    expect_err(&path, r, &["gen.prompt_feat", "expected shape (1, frames, 80)", "[1, 16, 40]"]);
    // A view reaching past its storage: speaker_emb's size (1, 256) -> (1, 257).
    let (path, r) = load_edited("view.pt", |e| replace(pkl(e), b"K\x01M\x00\x01\x86", b"K\x01M\x01\x01\x86"));
    expect_err(&path, r, &["t3.speaker_emb", "reaches element 256 of a storage of 256 elements"]);
    // A broadcast (stride 0) view of absurd size: speaker_emb's size (1, 256) -> (1, 2**31 - 1), stride (256, 0).
    let (path, r) = load_edited("huge.pt", |e| {
        let p = pkl(e);
        replace(p, b"K\x01M\x00\x01\x86", b"K\x01J\xff\xff\xff\x7f\x86");
        replace(p, b"M\x00\x01K\x01\x86", b"M\x00\x01K\x00\x86");
    });
    expect_err(&path, r, &["t3.speaker_emb", "2147483647 elements, more than the 4194304 accepted"]);
}
