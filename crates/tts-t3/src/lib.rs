//! T3: the Llama-520M model that turns text tokens (plus a voice) into speech tokens.
//!
//! Status: the configuration only. The model (weights, conditioning encoder, batched CFG decode
//! with a static KV cache and a replayable decode step) is the work of issue 4.

/// The dimensions and special tokens of T3. `Default` is the real English Chatterbox model
/// (t3_config.py and llama_configs.py of chatterbox-tts 0.1.7).
#[derive(Debug, Clone, PartialEq)]
pub struct T3Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub text_tokens_dict_size: usize,
    pub speech_tokens_dict_size: usize,
    pub start_text_token: u32,
    pub stop_text_token: u32,
    pub start_speech_token: u32,
    pub stop_speech_token: u32,
    pub max_text_tokens: usize,
    pub max_speech_tokens: usize,
    pub speech_cond_prompt_len: usize,
    pub speaker_embed_size: usize,
}

impl Default for T3Config {
    fn default() -> Self {
        T3Config {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 30,
            num_attention_heads: 16,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            text_tokens_dict_size: 704,
            speech_tokens_dict_size: 8194,
            start_text_token: 255,
            stop_text_token: 0,
            start_speech_token: 6561,
            stop_speech_token: 6562,
            max_text_tokens: 2048,
            max_speech_tokens: 4096,
            speech_cond_prompt_len: 150,
            speaker_embed_size: 256,
        }
    }
}

/// Whether the model is implemented. The parity harness reports its fixture cases as pending
/// while this is false, and as failures if it is true but they have no runner.
pub const IMPLEMENTED: bool = false;

#[cfg(test)]
mod tests {
    #[test]
    fn default_is_the_real_model() {
        let c = super::T3Config::default();
        assert_eq!(c.num_attention_heads * c.head_dim, c.hidden_size);
        assert_eq!(c.stop_speech_token, 6562);
    }
}
