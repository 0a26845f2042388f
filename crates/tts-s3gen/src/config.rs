//! S3Gen dimensions: the real ones by default, overridden by the keys of `config.json` (the tiny
//! random models of the test fixtures; key names as in tools/reference/README.md).
use std::path::Path;

use crate::{Error, Result};

/// Dimensions of the flow (encoder + estimator) and of the HiFT vocoder.
#[derive(Clone, Debug, PartialEq)]
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

/// Keys of config.json that belong to other components and are ignored here.
fn is_other_component(key: &str) -> bool {
    ["tokenizer_", "campplus_", "ve_", "voice_encoder"].iter().any(|p| key.starts_with(p)) || T3_KEYS.contains(&key)
}

const T3_KEYS: &[&str] = &[
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
    "text_tokens_dict_size",
    "speech_tokens_dict_size",
    "start_text_token",
    "stop_text_token",
    "start_speech_token",
    "stop_speech_token",
    "max_text_tokens",
    "max_speech_tokens",
    "speech_cond_prompt_len",
    "speaker_embed_size",
    "perceiver_query_tokens",
    "perceiver_num_heads",
];

impl S3GenConfig {
    /// The defaults overridden by `config.json` in `dir` when it exists.
    pub fn from_model_dir(dir: &Path) -> Result<S3GenConfig> {
        let path = dir.join("config.json");
        if !path.exists() {
            return Ok(S3GenConfig::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        S3GenConfig::from_json(&v).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The defaults overridden by the keys of a JSON object; an unknown key is an error.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<S3GenConfig, String> {
        let obj = v.as_object().ok_or("config.json is not a JSON object")?;
        let mut c = S3GenConfig::default();
        for (k, val) in obj {
            let uint = || val.as_u64().map(|x| x as usize).ok_or(format!("{k} must be a non-negative integer, got {val}"));
            match k.as_str() {
                "flow_vocab_size" => c.flow_vocab_size = uint()?,
                "spk_embed_dim" => c.spk_embed_dim = uint()?,
                "encoder_output_size" => c.encoder_output_size = uint()?,
                "encoder_attention_heads" => c.encoder_attention_heads = uint()?,
                "encoder_linear_units" => c.encoder_linear_units = uint()?,
                "encoder_num_blocks" => c.encoder_num_blocks = uint()?,
                "encoder_num_up_blocks" => c.encoder_num_up_blocks = uint()?,
                "decoder_channels" => c.decoder_channels = uint()?,
                "decoder_num_heads" => c.decoder_num_heads = uint()?,
                "decoder_attention_head_dim" => c.decoder_attention_head_dim = uint()?,
                "decoder_n_blocks" => c.decoder_n_blocks = uint()?,
                "decoder_num_mid_blocks" => c.decoder_num_mid_blocks = uint()?,
                "hift_base_channels" => c.hift_base_channels = uint()?,
                "f0_cond_channels" => c.f0_cond_channels = uint()?,
                other if is_other_component(other) => {}
                other => return Err(format!("unknown S3Gen config key {other:?}")),
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> std::result::Result<(), String> {
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
                return Err(format!("{name} {v} is larger than the {MAX_DIMENSION} supported"));
            }
        }
        let d = self.encoder_output_size;
        if self.encoder_attention_heads == 0 || !d.is_multiple_of(self.encoder_attention_heads) || !d.is_multiple_of(2) {
            return Err(format!("encoder width {d} is not an even multiple of {} heads", self.encoder_attention_heads));
        }
        if !self.hift_base_channels.is_multiple_of(8) {
            return Err(format!("hift_base_channels {} must be a multiple of 8", self.hift_base_channels));
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
                return Err(format!("{name} must not be 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_model_and_keys_override_them() {
        let c = S3GenConfig::from_json(&serde_json::json!({})).unwrap();
        assert_eq!(c, S3GenConfig::default());
        assert_eq!((c.encoder_output_size, c.decoder_channels, c.hift_base_channels), (512, 256, 512));
        let c = S3GenConfig::from_json(&serde_json::json!({"decoder_channels": 32, "tokenizer_n_head": 1, "hidden_size": 64}))
            .unwrap();
        assert_eq!(c.decoder_channels, 32);
    }

    #[test]
    fn unknown_or_bad_keys_are_errors() {
        assert!(S3GenConfig::from_json(&serde_json::json!({"decoder_chanels": 32})).unwrap_err().contains("decoder_chanels"));
        assert!(S3GenConfig::from_json(&serde_json::json!({"decoder_channels": -1})).is_err());
        assert!(S3GenConfig::from_json(&serde_json::json!({"encoder_attention_heads": 3})).is_err());
        assert!(S3GenConfig::from_json(&serde_json::json!([1])).is_err());
    }
}
