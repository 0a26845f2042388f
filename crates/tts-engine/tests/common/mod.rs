//! What several test files of tts-engine share: the fixtures, a tiny model directory assembled from
//! them, and its voice.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};

use tts_engine::voice::Conditionals;
use tts_kernels::testing::fresh_seed;
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// A fresh empty directory under the system's temporary folder (`tag` and a fresh seed in its name).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tts-{tag}-{}-{}", std::process::id(), fresh_seed()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A model directory with both models (T3 of t3_decode_teacher_forced_a, S3Gen of s3gen_wav_a)
/// and one config.json holding both sets of keys.
pub fn tiny_model_dir() -> PathBuf {
    let dir = scratch_dir("model");
    let (t3, s3) = (fixture("t3_decode_teacher_forced_a"), fixture("s3gen_wav_a"));
    std::fs::copy(t3.join("t3_cfg.safetensors"), dir.join("t3_cfg.safetensors")).unwrap();
    std::fs::copy(s3.join("s3gen.safetensors"), dir.join("s3gen.safetensors")).unwrap();
    let read = |p: &Path| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap()
    };
    let mut cfg = read(&t3);
    for (k, v) in read(&s3) {
        cfg.entry(k).or_insert(v);
    }
    std::fs::write(dir.join("config.json"), serde_json::Value::Object(cfg).to_string()).unwrap();
    dir
}

/// The voice of [`tiny_model_dir`]'s models: the T3 half of the T3 fixture's, the S3Gen half of the
/// S3Gen fixture's.
pub fn tiny_voice() -> Conditionals {
    let t3 = Conditionals::load(&fixture("t3_decode_teacher_forced_a").join("conds.pt")).unwrap();
    let s3 = Conditionals::load(&fixture("s3gen_wav_a").join("conds.pt")).unwrap();
    Conditionals { t3: t3.t3, s3gen: s3.s3gen }
}

/// T3 at small widths with the real vocabularies and special tokens.
pub fn small_t3() -> T3Config {
    T3Config {
        hidden_size: 128,
        intermediate_size: 192,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        head_dim: 64,
        ..T3Config::default()
    }
}

/// S3Gen at small widths with the real speech-token vocabulary.
pub fn small_s3gen() -> S3GenConfig {
    S3GenConfig {
        spk_embed_dim: 192,
        encoder_output_size: 64,
        encoder_attention_heads: 2,
        encoder_linear_units: 128,
        encoder_num_blocks: 1,
        encoder_num_up_blocks: 1,
        decoder_channels: 32,
        decoder_num_heads: 2,
        decoder_attention_head_dim: 16,
        decoder_n_blocks: 1,
        decoder_num_mid_blocks: 1,
        hift_base_channels: 32,
        f0_cond_channels: 32,
        ..S3GenConfig::default()
    }
}
