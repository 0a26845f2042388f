//! The parity harness itself: malformed cases are errors, and a wrong result fails.
use std::path::{Path, PathBuf};

use tts_suite::parity::{KINDS, Outcome, load_case};

fn copy_case(name: &str, tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("parity-{tag}-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn malformed_cases_are_errors() {
    let d = copy_case("text_a", "missing");
    std::fs::remove_file(d.join("expected.safetensors")).unwrap();
    assert!(load_case(&d).unwrap_err().contains("expected.safetensors"));

    let d = copy_case("text_a", "kind");
    edit_json(&d.join("case.json"), |v| v["kind"] = "t4_magic".into());
    assert!(load_case(&d).unwrap_err().contains("unknown case kind"));

    let d = copy_case("text_a", "format");
    edit_json(&d.join("case.json"), |v| v["format"] = 2.into());
    assert!(load_case(&d).unwrap_err().contains("format 2"));

    let d = copy_case("text_a", "listed");
    edit_json(&d.join("case.json"), |v| {
        v["tensors"]["not_recorded"] = serde_json::json!({"compare": "allclose"});
    });
    assert!(load_case(&d).unwrap_err().contains("not_recorded"));

    let d = copy_case("text_a", "garbage");
    std::fs::write(d.join("inputs.safetensors"), b"not a safetensors file").unwrap();
    assert!(load_case(&d).is_err());
}

#[test]
fn a_wrong_result_fails() {
    let d = copy_case("text_a", "wrong");
    // expect a different tokenization: swap the token-id file for one with the ids shifted by one
    let path = d.join("expected.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    for (n, _, _, data) in owned.iter_mut() {
        if n == "token_ids_02" {
            data[0] = data[0].wrapping_add(1);
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, &None, &path).unwrap();

    let case = load_case(&d).unwrap();
    let kind = KINDS.iter().find(|k| k.name == "text").unwrap();
    match (kind.run.unwrap())(&case, "host", case.meta.tolerance.f32).unwrap() {
        Outcome::Failed(_, r) => {
            let bad: Vec<_> = r.iter().filter(|t| !t.ok).map(|t| t.name.as_str()).collect();
            assert_eq!(bad, ["token_ids_02"]);
        }
        o => panic!("expected a failure, got {o:?}"),
    }
}
