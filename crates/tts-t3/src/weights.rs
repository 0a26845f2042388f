//! `t3_cfg.safetensors` with its official tensor names (chatterbox-tts 0.1.7, spec §3.11), memory-
//! mapped and uploaded once: f32 on Cpu, bf16 on Cuda and Emu. The Q/K/V projections of a layer are
//! stacked into one [3·D, D] weight and gate/up into one [2·I, D] weight, so that each is one GEMM.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::{DType, Device, Tensor, ops};

use crate::Result;
use crate::config::T3Config;

/// One Llama decoder layer.
pub struct LayerWeights {
    pub input_norm: Tensor,
    /// [3·D, D]: q, k, v projections stacked.
    pub qkv: Tensor,
    pub o: Tensor,
    pub post_norm: Tensor,
    /// [2·I, D]: gate and up projections stacked.
    pub gate_up: Tensor,
    pub down: Tensor,
}

/// The perceiver resampler of the conditioning encoder (one attention block applied twice).
pub struct PerceiverWeights {
    /// [Q, D] f32: the learned queries (a residual stream).
    pub query: Tensor,
    pub norm_w: Tensor,
    pub norm_b: Tensor,
    pub to_q: (Tensor, Tensor),
    pub to_k: (Tensor, Tensor),
    pub to_v: (Tensor, Tensor),
    pub proj_out: (Tensor, Tensor),
}

pub struct T3Weights {
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    pub text_emb: Tensor,
    pub text_pos: Tensor,
    pub speech_emb: Tensor,
    pub speech_pos: Tensor,
    pub speech_head: Tensor,
    pub spkr_w: Tensor,
    pub spkr_b: Tensor,
    /// [D] f32 on the host: `emotion_adv_fc.weight[:, 0]` (the emotion token is exaggeration · this).
    pub emotion_w: Vec<f32>,
    pub perceiver: PerceiverWeights,
}

impl T3Weights {
    pub fn load(ck: &Checkpoint, cfg: &T3Config, dev: &Device) -> Result<T3Weights> {
        let act = dev.compute_dtype();
        // GEMM weights: bf16 on Cuda/Emu, and on the Cpu backend with bf16 weights
        let wd = dev.weight_dtype();
        // the weights every decode step streams: packed for the Cpu decode GEMV (as they are on Cuda/Emu)
        let pack = ops::pack_linear_weight;
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("tfmr.layers.{l}.{s}");
            let (q, k, v) = (n("self_attn.q_proj.weight"), n("self_attn.k_proj.weight"), n("self_attn.v_proj.weight"));
            let (g, u) = (n("mlp.gate_proj.weight"), n("mlp.up_proj.weight"));
            layers.push(LayerWeights {
                input_norm: ck.upload(dev, act, &n("input_layernorm.weight"), &[d])?,
                qkv: pack(ck.upload_stacked(dev, wd, &[(&q, &[d, d]), (&k, &[d, d]), (&v, &[d, d])])?)?,
                o: pack(ck.upload(dev, wd, &n("self_attn.o_proj.weight"), &[d, d])?)?,
                post_norm: ck.upload(dev, act, &n("post_attention_layernorm.weight"), &[d])?,
                gate_up: pack(ck.upload_stacked(dev, wd, &[(&g, &[i, d]), (&u, &[i, d])])?)?,
                down: pack(ck.upload(dev, wd, &n("mlp.down_proj.weight"), &[d, i])?)?,
            });
        }
        let pq = cfg.perceiver_query_tokens;
        let lin = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                ck.upload(dev, wd, &format!("cond_enc.perceiver.attn.{name}.weight"), &[d, d])?,
                ck.upload(dev, act, &format!("cond_enc.perceiver.attn.{name}.bias"), &[d])?,
            ))
        };
        let query = ck.f32("cond_enc.perceiver.pre_attention_query", &[1, pq, d])?;
        Ok(T3Weights {
            layers,
            final_norm: ck.upload(dev, act, "tfmr.norm.weight", &[d])?,
            text_emb: ck.upload(dev, act, "text_emb.weight", &[cfg.text_tokens_dict_size, d])?,
            text_pos: ck.upload(dev, act, "text_pos_emb.emb.weight", &[cfg.text_positions(), d])?,
            speech_emb: ck.upload(dev, act, "speech_emb.weight", &[cfg.speech_tokens_dict_size, d])?,
            speech_pos: ck.upload(dev, act, "speech_pos_emb.emb.weight", &[cfg.speech_positions(), d])?,
            speech_head: pack(ck.upload(dev, wd, "speech_head.weight", &[cfg.speech_tokens_dict_size, d])?)?,
            spkr_w: ck.upload(dev, wd, "cond_enc.spkr_enc.weight", &[d, cfg.speaker_embed_size])?,
            spkr_b: ck.upload(dev, act, "cond_enc.spkr_enc.bias", &[d])?,
            emotion_w: ck.f32("cond_enc.emotion_adv_fc.weight", &[d, 1])?,
            perceiver: PerceiverWeights {
                query: Tensor::from_f32(dev, DType::F32, &[pq, d], &query)?,
                norm_w: ck.upload(dev, act, "cond_enc.perceiver.attn.norm.weight", &[d])?,
                norm_b: ck.upload(dev, act, "cond_enc.perceiver.attn.norm.bias", &[d])?,
                to_q: lin("to_q")?,
                to_k: lin("to_k")?,
                to_v: lin("to_v")?,
                proj_out: lin("proj_out")?,
            },
        })
    }
}
