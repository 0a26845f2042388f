//! A synthetic S3 tokenizer: deterministic random weights at the dimensions of a
//! [`TokenizerConfig`] (the real model by default), built in memory from a seed and loaded through
//! the same code as `s3gen.safetensors` ([`S3Tokenizer::load`]): the same names and shapes. It
//! exists to run and time the tokenizer where the real weights are not available; its tokens mean
//! nothing.
//!
//! Scales by role: norm gains around 1, small biases, projections and convolutions with standard
//! deviation gain/√fan_in, the FSMN taps small (its memory adds to the residual stream), and
//! `project_down` with gain 2 so that `tanh` spreads over the three digits.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};

use super::block::FSMN_KERNEL;
use super::encoder::CONV_KERNEL;
use super::fsq::FSQ_DIMS;
use super::mel::N_MELS;
use super::{PREFIX, S3Tokenizer, TokenizerConfig};
use crate::Result;

const GAIN: Init = Init::around(1.0, 0.1);
const BIAS: Init = Init::spread(0.02);

/// Every tensor [`S3Tokenizer::load`] reads for `cfg`, with its official name (`tokenizer.*`).
pub fn manifest(cfg: &TokenizerConfig) -> Vec<SynthTensor> {
    let d = cfg.tokenizer_n_state;
    let mut m = Vec::new();
    let mut t = |name: String, shape: &[usize], init: Init| m.push(SynthTensor::new(name, shape, init));
    let e = format!("{PREFIX}encoder.");
    t(format!("{e}conv1.weight"), &[d, N_MELS, CONV_KERNEL], Init::fan_in(N_MELS * CONV_KERNEL, 1.0));
    t(format!("{e}conv1.bias"), &[d], BIAS);
    t(format!("{e}conv2.weight"), &[d, d, CONV_KERNEL], Init::fan_in(d * CONV_KERNEL, 1.0));
    t(format!("{e}conv2.bias"), &[d], BIAS);
    for i in 0..cfg.tokenizer_n_layer {
        let b = format!("{e}blocks.{i}.");
        for ln in ["attn_ln", "mlp_ln"] {
            t(format!("{b}{ln}.weight"), &[d], GAIN);
            t(format!("{b}{ln}.bias"), &[d], BIAS);
        }
        for p in ["query", "key", "value", "out"] {
            t(format!("{b}attn.{p}.weight"), &[d, d], Init::fan_in(d, 1.0));
            if p != "key" {
                t(format!("{b}attn.{p}.bias"), &[d], BIAS);
            }
        }
        t(format!("{b}attn.fsmn_block.weight"), &[d, 1, FSMN_KERNEL], Init::fan_in(FSMN_KERNEL, 0.3));
        t(format!("{b}mlp.0.weight"), &[4 * d, d], Init::fan_in(d, 1.0));
        t(format!("{b}mlp.0.bias"), &[4 * d], BIAS);
        t(format!("{b}mlp.2.weight"), &[d, 4 * d], Init::fan_in(4 * d, 0.5));
        t(format!("{b}mlp.2.bias"), &[d], BIAS);
    }
    let q = format!("{PREFIX}quantizer._codebook.project_down");
    t(format!("{q}.weight"), &[FSQ_DIMS, d], Init::fan_in(d, 2.0));
    t(format!("{q}.bias"), &[FSQ_DIMS], BIAS);
    m
}

/// The synthetic checkpoint of `cfg` under `seed` (values are drawn when the loader reads them).
pub fn checkpoint(cfg: &TokenizerConfig, seed: u64) -> Result<Checkpoint> {
    Ok(Checkpoint::synthetic(&format!("synthetic S3 tokenizer (random weights, seed {seed})"), seed, manifest(cfg))?)
}

impl S3Tokenizer {
    /// A tokenizer of dimensions `cfg` with synthetic random weights (see [`self`](super::synthetic)).
    pub fn synthetic(cfg: &TokenizerConfig, seed: u64) -> Result<S3Tokenizer> {
        S3Tokenizer::load(&checkpoint(cfg, seed)?, cfg)
    }
}
