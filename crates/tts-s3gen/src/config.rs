//! S3Gen dimensions: the real ones by default, overridden by the keys of `config.json` (the tiny
//! random models of the test fixtures; key names as in tools/reference/README.md).
//!
//! `config.json` is one flat object shared by the model's components: S3Gen's keys are those that
//! start with one of [`KEY_PREFIXES`] (the fields of [`S3GenConfig`], derived with serde,
//! `deny_unknown_fields`); the others belong to T3, the S3 tokenizer, CAMPPlus or the voice encoder,
//! which check them. An unknown S3Gen key, a value of the wrong type or out of range is an
//! [`Error::Config`] naming the file and the key.
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tts_kernels::checkpoint::config_json::{self, ConfigJsonError};

use crate::{Error, Result};

/// The prefixes of S3Gen's `config.json` keys (every field of [`S3GenConfig`] starts with one).
pub const KEY_PREFIXES: &[&str] = &["flow_", "spk_", "encoder_", "decoder_", "hift_", "f0_"];

/// Dimensions of the flow (encoder + estimator) and of the HiFT vocoder.
/// The fields are `config.json`'s keys; a key left out keeps its [`Default`] value.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3GenConfig {
    /// Rows of `flow.input_embedding` (speech-token vocabulary).
    pub flow_vocab_size: usize,
    /// x-vector size (input of `spk_embed_affine_layer`).
    pub spk_embed_dim: usize,
    /// Conformer width (= token embedding size).
    pub encoder_output_size: usize,
    /// Rel-pos attention heads of the conformer.
    pub encoder_attention_heads: usize,
    /// Conformer feed-forward width.
    pub encoder_linear_units: usize,
    /// Conformer layers before the ×2 upsampling.
    pub encoder_num_blocks: usize,
    /// Conformer layers after it.
    pub encoder_num_up_blocks: usize,
    /// Estimator UNet width C (time embedding 4C).
    pub decoder_channels: usize,
    /// Estimator attention heads.
    pub decoder_num_heads: usize,
    /// Estimator attention head size.
    pub decoder_attention_head_dim: usize,
    /// Transformer blocks per UNet block.
    pub decoder_n_blocks: usize,
    /// Mid blocks of the estimator.
    pub decoder_num_mid_blocks: usize,
    /// HiFT base channels (C, C/2, C/4, C/8 through the upsampling stages).
    pub hift_base_channels: usize,
    /// Width of the F0 predictor.
    pub f0_cond_channels: usize,
}

impl Default for S3GenConfig {
    fn default() -> Self {
        S3GenConfig {
            flow_vocab_size: 6561,
            spk_embed_dim: 192,
            encoder_output_size: 512,
            encoder_attention_heads: 8,
            encoder_linear_units: 2048,
            encoder_num_blocks: 6,
            encoder_num_up_blocks: 4,
            decoder_channels: 256,
            decoder_num_heads: 8,
            decoder_attention_head_dim: 64,
            decoder_n_blocks: 4,
            decoder_num_mid_blocks: 12,
            hift_base_channels: 512,
            f0_cond_channels: 512,
        }
    }
}

/// The largest size or count a config may set. Any product of three of them fits in a `usize`, so
/// that what the loaders derive from a config (element counts of weights, widths) cannot overflow;
/// the real model's largest is 6561 (speech-token vocabulary).
pub const MAX_DIMENSION: usize = 1 << 20;

impl S3GenConfig {
    /// The defaults overridden by `config.json` in `dir` when it exists.
    pub fn from_model_dir(dir: &Path) -> Result<S3GenConfig> {
        let path = dir.join("config.json");
        match config_json::read(&path).map_err(config_error(&path))? {
            None => Ok(S3GenConfig::default()),
            Some(v) => S3GenConfig::from_json(&path, &v),
        }
    }

    /// The defaults overridden by the S3Gen keys of `v`, a `config.json` object (`file` names it in
    /// errors); an unknown S3Gen key is an error, the other components' keys are left to them.
    pub fn from_json(file: &Path, v: &Value) -> Result<S3GenConfig> {
        let err = config_error(file);
        let own = config_json::own_keys(v, |k| KEY_PREFIXES.iter().any(|p| k.starts_with(p))).map_err(&err)?;
        let c: S3GenConfig = config_json::from_keys(own).map_err(&err)?;
        c.check().map_err(|(key, detail)| Error::Config { file: file.to_path_buf(), key: Some(key.to_string()), detail })?;
        Ok(c)
    }

    /// Checks the dimensions fit together (as [`Self::from_json`] does), for a config built in
    /// memory; the error names the key at fault and the file `(in memory)`.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, detail)| Error::Config { file: "(in memory)".into(), key: Some(key.into()), detail })
    }

    /// Checks the dimensions fit together; an error names the key at fault.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (name, v) in [
            ("flow_vocab_size", self.flow_vocab_size),
            ("spk_embed_dim", self.spk_embed_dim),
            ("encoder_output_size", self.encoder_output_size),
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("encoder_linear_units", self.encoder_linear_units),
            ("encoder_num_blocks", self.encoder_num_blocks),
            ("encoder_num_up_blocks", self.encoder_num_up_blocks),
            ("decoder_channels", self.decoder_channels),
            ("decoder_num_heads", self.decoder_num_heads),
            ("decoder_attention_head_dim", self.decoder_attention_head_dim),
            ("decoder_n_blocks", self.decoder_n_blocks),
            ("decoder_num_mid_blocks", self.decoder_num_mid_blocks),
            ("hift_base_channels", self.hift_base_channels),
            ("f0_cond_channels", self.f0_cond_channels),
        ] {
            if v > MAX_DIMENSION {
                return Err((name, format!("{v} is larger than the {MAX_DIMENSION} supported")));
            }
        }
        let d = self.encoder_output_size;
        if self.encoder_attention_heads == 0 || !d.is_multiple_of(self.encoder_attention_heads) || !d.is_multiple_of(2) {
            return Err((
                "encoder_attention_heads",
                format!("encoder width {d} is not an even multiple of {} heads", self.encoder_attention_heads),
            ));
        }
        if !self.hift_base_channels.is_multiple_of(8) {
            return Err(("hift_base_channels", format!("{} must be a multiple of 8", self.hift_base_channels)));
        }
        for (name, v) in [
            ("flow_vocab_size", self.flow_vocab_size),
            ("spk_embed_dim", self.spk_embed_dim),
            ("encoder_linear_units", self.encoder_linear_units),
            ("decoder_channels", self.decoder_channels),
            ("decoder_num_heads", self.decoder_num_heads),
            ("decoder_attention_head_dim", self.decoder_attention_head_dim),
            ("hift_base_channels", self.hift_base_channels),
            ("f0_cond_channels", self.f0_cond_channels),
        ] {
            if v == 0 {
                return Err((name, "must not be 0".into()));
            }
        }
        Ok(())
    }
}

/// A `config.json` problem as this crate's error, with the file named.
fn config_error(file: &Path) -> impl Fn(ConfigJsonError) -> Error + '_ {
    move |e| Error::Config { file: file.to_path_buf(), key: e.key, detail: e.detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<S3GenConfig> {
        S3GenConfig::from_json(Path::new("m/config.json"), &v)
    }

    /// The key an error names (and that it is a config error of the file).
    fn key_of(e: Error) -> String {
        match e {
            Error::Config { file, key, .. } => {
                assert_eq!(file, Path::new("m/config.json"));
                key.unwrap_or_default()
            }
            e => panic!("not a config error: {e}"),
        }
    }

    #[test]
    fn defaults_are_the_real_model_and_keys_override_them() {
        let c = parse(serde_json::json!({})).unwrap();
        assert_eq!(c, S3GenConfig::default());
        assert_eq!((c.encoder_output_size, c.decoder_channels, c.hift_base_channels), (512, 256, 512));
        let c = parse(serde_json::json!({"decoder_channels": 32, "tokenizer_n_head": 1, "hidden_size": 64})).unwrap();
        assert_eq!(c.decoder_channels, 32);
        let all = serde_json::to_value(S3GenConfig::default()).unwrap();
        let keys = all.as_object().unwrap();
        assert_eq!(keys.len(), 14);
        assert!(keys.keys().all(|k| KEY_PREFIXES.iter().any(|p| k.starts_with(p))), "every field is an S3Gen key");
        assert_eq!(parse(all).unwrap(), S3GenConfig::default());
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_name_the_key() {
        let e = parse(serde_json::json!({"decoder_chanels": 32, "decoder_channels": 32})).unwrap_err();
        assert!(e.to_string().contains("m/config.json: key \"decoder_chanels\": unknown field"), "{e}");
        assert_eq!(key_of(e), "decoder_chanels");
        for (k, v) in [
            ("decoder_channels", serde_json::json!(-1)),
            ("decoder_channels", serde_json::json!("32")),
            ("hift_base_channels", serde_json::json!(32.5)),
            ("flow_vocab_size", serde_json::json!(null)),
        ] {
            let mut obj = serde_json::Map::new();
            obj.insert("encoder_output_size".into(), serde_json::json!(64));
            obj.insert(k.into(), v.clone());
            assert_eq!(key_of(parse(Value::Object(obj)).unwrap_err()), k, "{k}: {v}");
        }
        for (json, key) in [
            (serde_json::json!({"encoder_attention_heads": 3}), "encoder_attention_heads"),
            (serde_json::json!({"hift_base_channels": 36}), "hift_base_channels"),
            (serde_json::json!({"spk_embed_dim": 0}), "spk_embed_dim"),
        ] {
            assert_eq!(key_of(parse(json.clone()).unwrap_err()), key, "{json}");
        }
        assert_eq!(key_of(parse(serde_json::json!([1])).unwrap_err()), "");
    }
}
