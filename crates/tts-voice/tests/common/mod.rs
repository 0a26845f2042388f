//! Shared by the integration tests: the recorded reference values of `tests/data/`
//! (tools/reference/audio_ref.py).
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Every tensor of tests/data/resample_ref.safetensors, as f32.
pub fn reference() -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(data_dir().join("resample_ref.safetensors")).expect("tests/data/resample_ref.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
            (name.to_string(), v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
        })
        .collect()
}

/// (max |got − want|, ‖got − want‖₂ / ‖want‖₂)
pub fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "length");
    let (mut max, mut num, mut den) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let e = (g as f64 - w as f64).abs();
        max = max.max(e);
        num += e * e;
        den += (w as f64) * (w as f64);
    }
    (max, (num / den).sqrt())
}
