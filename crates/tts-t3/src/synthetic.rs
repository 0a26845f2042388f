//! A synthetic T3: deterministic random weights at the dimensions of a [`T3Config`] (the real
//! Llama-520M by default), built in memory from a seed and loaded through the same code as
//! `t3_cfg.safetensors` ([`T3::from_checkpoint`]): the same tensor names, shapes, stacking and
//! packing. It exists to run and time the model where the real weights are not available (a GPU
//! machine that cannot receive them); what it generates is noise, not speech.
//!
//! Scales by role keep activations in a realistic range (checked by `tests/synthetic.rs`): norm
//! gains around 1, projections with standard deviation 1/√fan_in (attention scores of order 1,
//! neither uniform nor one-hot; each layer adds an update of order 1 to the residual stream), token
//! embeddings of unit scale, learned positions at 0.3, small biases, and a speech head giving
//! logits of standard deviation ~2, so that min_p keeps tens of candidates. The stop token's head
//! row is zero, so min_p never keeps it: a synthetic T3 decodes to `max_new_tokens` (a fixed
//! workload for benchmarks).
use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};

use crate::Result;
use crate::config::T3Config;
use crate::model::T3;

/// Norm gains: around 1 (not exactly 1, so that a loader ignoring a gain would show).
const GAIN: Init = Init::around(1.0, 0.1);
/// Norm and projection biases.
const BIAS: Init = Init::spread(0.02);

/// Every tensor T3 loads from `t3_cfg.safetensors`, with its official name, its shape under `cfg`
/// and the role-chosen spread of its synthetic values. (`text_head` and `tfmr.embed_tokens`, which
/// T3's speech generation never reads, are not listed.)
pub fn manifest(cfg: &T3Config) -> Vec<SynthTensor> {
    let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut m = Vec::new();
    let mut t = |name: String, shape: &[usize], init: Init| m.push(SynthTensor::new(name, shape, init));
    for l in 0..cfg.num_hidden_layers {
        let n = |s: &str| format!("tfmr.layers.{l}.{s}");
        t(n("input_layernorm.weight"), &[d], GAIN);
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            t(n(&format!("self_attn.{p}.weight")), &[d, d], Init::fan_in(d, 1.0));
        }
        t(n("post_attention_layernorm.weight"), &[d], GAIN);
        t(n("mlp.gate_proj.weight"), &[i, d], Init::fan_in(d, 1.0));
        t(n("mlp.up_proj.weight"), &[i, d], Init::fan_in(d, 1.0));
        t(n("mlp.down_proj.weight"), &[d, i], Init::fan_in(i, 1.0));
    }
    t("tfmr.norm.weight".into(), &[d], GAIN);
    t("text_emb.weight".into(), &[cfg.text_tokens_dict_size, d], Init::spread(1.0));
    t("text_pos_emb.emb.weight".into(), &[cfg.text_positions(), d], Init::spread(0.3));
    t("speech_emb.weight".into(), &[cfg.speech_tokens_dict_size, d], Init::spread(1.0));
    t("speech_pos_emb.emb.weight".into(), &[cfg.speech_positions(), d], Init::spread(0.3));
    t("cond_enc.spkr_enc.weight".into(), &[d, cfg.speaker_embed_size], Init::fan_in(cfg.speaker_embed_size, 1.0));
    t("cond_enc.spkr_enc.bias".into(), &[d], BIAS);
    t("cond_enc.emotion_adv_fc.weight".into(), &[d, 1], Init::spread(1.0));
    t("cond_enc.perceiver.pre_attention_query".into(), &[1, cfg.perceiver_query_tokens, d], Init::spread(1.0));
    t("cond_enc.perceiver.attn.norm.weight".into(), &[d], GAIN);
    t("cond_enc.perceiver.attn.norm.bias".into(), &[d], BIAS);
    for p in ["to_q", "to_k", "to_v", "proj_out"] {
        t(format!("cond_enc.perceiver.attn.{p}.weight"), &[d, d], Init::fan_in(d, 1.0));
        t(format!("cond_enc.perceiver.attn.{p}.bias"), &[d], BIAS);
    }
    // the stop token's row is zero: its logit is exactly 0 among logits spread ±2, so min_p never
    // keeps it and generation runs to max_new_tokens (a fixed workload; random weights have no
    // notion of the end of speech)
    let head = SynthTensor::new("speech_head.weight", &[cfg.speech_tokens_dict_size, d], Init::fan_in(d, 2.0));
    m.push(head.with_row(cfg.stop_speech_token as usize, Init::constant(0.0)));
    m
}

/// The synthetic checkpoint of `cfg` under `seed` (values are drawn when the loader reads them).
pub fn checkpoint(cfg: &T3Config, seed: u64) -> Result<Checkpoint> {
    Ok(Checkpoint::synthetic(&format!("synthetic T3 (random weights, seed {seed})"), seed, manifest(cfg))?)
}

impl T3 {
    /// A T3 of dimensions `cfg` with synthetic random weights (see [`crate::synthetic`]): it runs
    /// exactly as a real one does, and generates noise.
    pub fn synthetic(cfg: T3Config, seed: u64, dev: &Device) -> Result<T3> {
        let ck = checkpoint(&cfg, seed)?;
        T3::from_checkpoint(cfg, &ck, dev)
    }
}
